// A native HNSW index (Malkov & Yashunin, "Efficient and robust approximate
// nearest neighbor search using Hierarchical Navigable Small World graphs",
// TPAMI 2018): multithreaded insertion, batched search with per-query exclusion
// lists, and a versioned, checksummed binary format. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace noiseforge::hnsw {

enum class Metric : int { kL2 = 0, kIP = 1, kCosine = 2 };

// How the graph walk reads vectors. kNone: float32. kSQ8: one byte per
// dimension (per-dimension affine scalar quantization, x_i ~ lo_i + scale_i * c_i),
// a quarter of the memory traffic; the final candidates (the whole beam) are
// re-ranked with the float32 vectors, so returned scores are exact.
enum class Quantization : int { kNone = 0, kSQ8 = 1 };

class Index {
 public:
  Index(int dim, Metric metric, int m, int ef_construction, uint64_t seed,
        Quantization quantization = Quantization::kNone);

  // Adds n vectors (row-major, dim floats each) with user ids; throws
  // std::invalid_argument naming a duplicate id. Uses num_threads threads.
  // Concurrent add() calls are serialised; search() must not run during add().
  void add(const float* vectors, const int64_t* ids, int64_t n, int num_threads);

  // k nearest non-excluded vectors of each query, best first (ties: lower id).
  // Exclusions are CSR: query q excludes ids[offsets[q] .. offsets[q + 1]);
  // offsets may be null (no exclusions). When the graph search returns fewer
  // than k results although k non-excluded vectors exist, ef is widened (x4)
  // and finally an exact scan is used. Rows are padded with id -1 (score NaN)
  // only when fewer than k non-excluded vectors exist at all.
  // Scores: squared L2 distance (l2), inner product (ip), cosine similarity.
  void search(const float* queries, int64_t nq, int k, int ef, const int64_t* excl_offsets,
              const int64_t* excl_ids, int64_t* out_ids, float* out_scores,
              int num_threads) const;

  std::string serialize() const;
  static std::unique_ptr<Index> deserialize(const std::string& bytes);

  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  int dim() const { return dim_; }
  Metric metric() const { return metric_; }
  int m() const { return m_; }
  int ef_construction() const { return ef_construction_; }
  uint64_t seed() const { return seed_; }
  Quantization quantization() const { return quant_; }
  int max_level() const { return max_level_; }
  size_t memory_bytes() const;

 private:
  struct Candidate {
    float dist;
    uint32_t id;
  };
  class Visited;
  // A query prepared for the graph walk: the float32 vector and, under SQ8,
  // its per-dimension coefficients against the codes (see distance.h).
  struct Query {
    const float* x;
    std::vector<float> coef;  // ip/cosine: q_i * scale_i; l2: q_i - lo_i
    float bias = 0.0f;        // ip/cosine: sum_i q_i * lo_i
    std::vector<int8_t> qcoef;  // integer walk: coef_i / qscale, rounded (zero-padded)
    float qscale = 0.0f;
  };

  float distance(const float* a, const float* b) const;  // exact, float32
  void prepare(const float* x, Query& q) const;
  float walk_distance(const Query& q, uint32_t id) const;  // SQ8 when quantized
  // SQ8: replace the walk's distances of a beam by exact float32 ones (no-op otherwise)
  void rescore(const Query& q, std::vector<Candidate>& found) const;
  size_t payload_bytes() const;  // bytes of a node's walk vector (float32 or codes)
  const char* payload(uint32_t id) const {
    return reinterpret_cast<const char*>(nodes_.data() + static_cast<size_t>(id) * node_words_ +
                                         links0_stride());
  }
  const uint8_t* codes(uint32_t id) const { return reinterpret_cast<const uint8_t*>(payload(id)); }
  void encode(uint32_t id);
  // Widens the quantization range to cover rows [first, end) (re-encoding every
  // older node when it changes) and encodes them.
  void quantize_rows(size_t first, size_t end);
  // Node records interleave the bottom-layer links and the vector, so that
  // expanding a node touches one contiguous block (as hnswlib lays them out).
  size_t links0_words() const { return static_cast<size_t>(2 * m_ + 1); }
  // the vector starts on a 64-byte boundary of the record
  size_t links0_stride() const { return (links0_words() + 15) / 16 * 16; }
  size_t node_words() const { return node_words_; }
  // the float32 vector: in the node record, or (SQ8) in floats_
  const float* vec(uint32_t id) const {
    if (quant_ == Quantization::kSQ8) return floats_.data() + static_cast<size_t>(id) * dim_;
    return reinterpret_cast<const float*>(payload(id));
  }
  float* vec_mut(uint32_t id) { return const_cast<float*>(vec(id)); }
  void grow(size_t total);
  int max_links(int level) const { return level == 0 ? 2 * m_ : m_; }
  uint32_t* links(uint32_t id, int level);
  const uint32_t* links(uint32_t id, int level) const;
  std::mutex& lock_of(uint32_t id) const { return node_locks_[id % kLockStripes]; }
  int random_level(uint32_t id) const;
  uint32_t greedy_descent(const Query& q, uint32_t cur, int from_level, int to_level,
                          bool locked) const;
  void insert(uint32_t id, Visited& visited);
  // `locked`: take node locks (needed only while add() runs concurrently).
  std::vector<Candidate> search_layer(const Query& q, uint32_t entry, int ef, int level,
                                      const std::vector<uint32_t>* excluded, Visited& visited,
                                      bool locked) const;
  std::vector<Candidate> select_neighbors(const float* base, std::vector<Candidate> candidates,
                                          int count) const;
  void connect(uint32_t from, uint32_t to, float dist, int level);
  void search_one(const Query& q, int k, int ef, const std::vector<uint32_t>& excluded,
                  int64_t available, int64_t* out_ids, float* out_scores, Visited& visited) const;

  static constexpr size_t kLockStripes = 4096;
  static constexpr int kMaxLinks = 2 * 256;  // bottom-layer links for M <= 256

  int dim_;
  Metric metric_;
  bool l2_metric_;
  int m_;
  int ef_construction_;
  uint64_t seed_;
  Quantization quant_;
  // SQ8 with ip/cosine on a CPU with AVX-512 VNNI: the walk also rounds the
  // query's coefficients to int8 and takes byte dot products (vpdpbusd).
  bool integer_walk_ = false;
  double level_mult_;
  size_t node_words_;                   // 32-bit words per node record (16-aligned)
  std::vector<int64_t> labels_;         // internal id -> user id
  std::unordered_map<int64_t, uint32_t> label_index_;
  std::vector<int32_t> levels_;         // top level of each node
  std::vector<uint32_t> nodes_;         // size * node_words: [count, links.., walk vector]
  std::vector<float> floats_;           // SQ8 only: size * dim float32 vectors
  std::vector<float> lo_, scale_;       // SQ8 only: per-dimension range
  std::vector<std::vector<uint32_t>> upper_;  // per node: levels * (M + 1)
  int64_t entry_ = -1;
  int max_level_ = -1;
  mutable std::unique_ptr<std::mutex[]> node_locks_;
  mutable std::mutex global_lock_;
  std::mutex add_lock_;  // concurrent add() calls run one after the other
};

}  // namespace noiseforge::hnsw
