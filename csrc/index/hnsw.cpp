// HNSW index: see hnsw.h. Insertion follows the paper's Algorithms 1, 2 and 4
// (greedy descent through the upper layers, beam search with ef_construction,
// neighbor selection by the diversity heuristic, bidirectional links with
// heuristic shrinking); search is Algorithm 5 with an exclusion filter.
#include "hnsw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <queue>
#include <stdexcept>
#include <string>

#include "distance.h"
#include "noiseforge/philox.h"

namespace noiseforge::hnsw {
namespace {

void normalize(float* v, int n) {
  const float norm = std::sqrt(dot(v, v, n));
  if (norm > 0.0f)
    for (int i = 0; i < n; ++i) v[i] /= norm;
}

// Heap orders by distance only: which of two equally distant candidates a beam
// keeps does not matter, and results are sorted by (distance, id) at the end.
struct Closer {  // min-heap
  template <typename C>
  bool operator()(const C& a, const C& b) const {
    return a.dist > b.dist;
  }
};
struct Farther {  // max-heap
  template <typename C>
  bool operator()(const C& a, const C& b) const {
    return a.dist < b.dist;
  }
};

constexpr char kMagic[8] = {'N', 'F', 'H', 'N', 'S', 'W', '0', '1'};
// Version 2 added the quantization mode and its per-dimension range; version 1
// files (float32 walk) are still read.
constexpr uint32_t kVersion = 2;

uint64_t fnv1a(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

// Visited marks with an epoch counter, one per thread, sized to the index.
// 16-bit epochs keep the marks of 100k nodes in 200 KB (L2-resident).
class Index::Visited {
 public:
  void reset(size_t n) {
    if (marks_.size() < n) marks_.resize(n, 0);
    if (++epoch_ == 0) {
      std::fill(marks_.begin(), marks_.end(), 0);
      epoch_ = 1;
    }
  }
  bool test_and_set(uint32_t id) {
    if (marks_[id] == epoch_) return true;
    marks_[id] = epoch_;
    return false;
  }
  const void* address(uint32_t id) const { return marks_.data() + id; }

 private:
  std::vector<uint16_t> marks_;
  uint16_t epoch_ = 0;
};

Index::Index(int dim, Metric metric, int m, int ef_construction, uint64_t seed,
             Quantization quantization)
    : dim_(dim), metric_(metric), l2_metric_(metric == Metric::kL2), m_(m),
      ef_construction_(ef_construction), seed_(seed), quant_(quantization),
      level_mult_(1.0 / std::log(static_cast<double>(std::max(m, 2)))),
      node_locks_(new std::mutex[kLockStripes]) {
  if (dim < 1) throw std::invalid_argument("dim must be >= 1");
  if (m < 2 || m > 256) throw std::invalid_argument("M must be in [2, 256]");
  if (ef_construction < 1) throw std::invalid_argument("ef_construction must be >= 1");
  if (quantization != Quantization::kNone && quantization != Quantization::kSQ8)
    throw std::invalid_argument("unknown quantization mode");
  // record = links (padded to 64 bytes) + the walk vector (padded to 64 bytes)
  node_words_ = links0_stride() + (payload_bytes() + 63) / 64 * 16;
  if (quant_ == Quantization::kSQ8) {
    lo_.assign(static_cast<size_t>(dim_), 0.0f);
    scale_.assign(static_cast<size_t>(dim_), 0.0f);
    // int32 sums of 127 * 255 per dimension stay exact up to 66k dimensions
    integer_walk_ = !l2_metric_ && has_u8s8_dot() && dim_ <= 65536;
  }
}

size_t Index::payload_bytes() const {
  return static_cast<size_t>(dim_) * (quant_ == Quantization::kSQ8 ? 1 : sizeof(float));
}

float Index::distance(const float* a, const float* b) const {
  // the metric's sign is applied here: smaller is closer
  return l2_metric_ ? l2_squared(a, b, dim_) : -dot(a, b, dim_);
}

void Index::prepare(const float* x, Query& q) const {
  q.x = x;
  if (quant_ != Quantization::kSQ8) return;
  q.coef.resize(static_cast<size_t>(dim_));
  if (l2_metric_) {
    for (int i = 0; i < dim_; ++i) q.coef[i] = x[i] - lo_[i];
  } else {
    double bias = 0.0;
    for (int i = 0; i < dim_; ++i) {
      q.coef[i] = x[i] * scale_[i];
      bias += static_cast<double>(x[i]) * lo_[i];
    }
    q.bias = static_cast<float>(bias);
    if (integer_walk_) {
      float top = 0.0f;
      for (int i = 0; i < dim_; ++i) top = std::max(top, std::fabs(q.coef[i]));
      q.qscale = top > 0.0f ? top / 127.0f : 1.0f;
      q.qcoef.assign((static_cast<size_t>(dim_) + 63) / 64 * 64, 0);
      for (int i = 0; i < dim_; ++i)
        q.qcoef[i] = static_cast<int8_t>(std::nearbyint(q.coef[i] / q.qscale));
    }
  }
}

void Index::rescore(const Query& q, std::vector<Candidate>& found) const {
  if (quant_ == Quantization::kSQ8)
    for (Candidate& c : found) c.dist = distance(q.x, vec(c.id));
}

float Index::walk_distance(const Query& q, uint32_t id) const {
  if (quant_ != Quantization::kSQ8) return distance(q.x, vec(id));
  if (l2_metric_) return sq8_l2(q.coef.data(), scale_.data(), codes(id), dim_);
  if (integer_walk_)
    return -(q.bias + q.qscale * static_cast<float>(u8s8_dot(q.qcoef.data(), codes(id),
                                                               static_cast<int>(q.qcoef.size()))));
  return -(q.bias + sq8_dot(q.coef.data(), codes(id), dim_));
}

void Index::encode(uint32_t id) {
  const float* x = vec(id);
  uint8_t* c = const_cast<uint8_t*>(codes(id));
  for (int i = 0; i < dim_; ++i) {
    const float s = scale_[i];
    const double t = s > 0.0f ? std::nearbyint((static_cast<double>(x[i]) - lo_[i]) / s) : 0.0;
    c[i] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, t)));
  }
}

void Index::quantize_rows(size_t first, size_t end) {
  if (first >= end) return;
  // The range of the new rows; the first batch sets it exactly. A later batch
  // outside it widens it by a quarter of its width beyond what is needed (so a
  // stream of small adds re-encodes rarely) and re-encodes every older node.
  std::vector<float> lo(vec(static_cast<uint32_t>(first)), vec(static_cast<uint32_t>(first)) + dim_);
  std::vector<float> hi(lo);
  for (size_t r = first + 1; r < end; ++r) {
    const float* x = vec(static_cast<uint32_t>(r));
    for (int i = 0; i < dim_; ++i) {
      lo[i] = std::min(lo[i], x[i]);
      hi[i] = std::max(hi[i], x[i]);
    }
  }
  // In double: a range of float32 extremes overflows float32.
  bool widened = false;
  for (int i = 0; i < dim_; ++i) {
    if (first == 0) {
      lo_[i] = lo[i];
      scale_[i] = static_cast<float>((static_cast<double>(hi[i]) - lo[i]) / 255.0);
      continue;
    }
    // values within half a step of the range round onto its end codes
    const double half = 0.5 * scale_[i];
    double old_lo = lo_[i], old_hi = lo_[i] + 255.0 * static_cast<double>(scale_[i]);
    if (lo[i] >= old_lo - half && hi[i] <= old_hi + half) continue;
    const double new_lo = std::min<double>(lo[i], old_lo), new_hi = std::max<double>(hi[i], old_hi);
    const double margin = 0.25 * (new_hi - new_lo);
    if (new_lo < old_lo) old_lo = new_lo - margin;
    if (new_hi > old_hi) old_hi = new_hi + margin;
    lo_[i] = static_cast<float>(old_lo);
    scale_[i] = static_cast<float>((old_hi - old_lo) / 255.0);
    widened = true;
  }
  const size_t from = widened ? 0 : first;
  for (size_t r = from; r < end; ++r) encode(static_cast<uint32_t>(r));
}

uint32_t* Index::links(uint32_t id, int level) {
  if (level == 0) return nodes_.data() + static_cast<size_t>(id) * node_words_;
  return upper_[id].data() + static_cast<size_t>(level - 1) * (m_ + 1);
}
const uint32_t* Index::links(uint32_t id, int level) const {
  return const_cast<Index*>(this)->links(id, level);
}

int Index::random_level(uint32_t id) const {
  // Level ~ floor(-ln(U) * mL) with U from Philox(seed, id): reproducible per seed.
  const PhiloxWords w = philox4x32_10(static_cast<uint64_t>(id), seed_);
  const double u = (static_cast<double>(w.w0 >> 5) * 67108864.0 + (w.w1 >> 6) + 0.5) /
                   9007199254740992.0;  // 53-bit uniform in (0, 1)
  return static_cast<int>(-std::log(u) * level_mult_);
}

size_t Index::memory_bytes() const {
  size_t bytes = nodes_.capacity() * sizeof(uint32_t) + labels_.capacity() * sizeof(int64_t) +
                 levels_.capacity() * sizeof(int32_t) +
                 label_index_.size() * (sizeof(int64_t) + sizeof(uint32_t) + 2 * sizeof(void*));
  for (const auto& u : upper_) bytes += u.capacity() * sizeof(uint32_t) + sizeof(u);
  bytes += (floats_.capacity() + lo_.capacity() + scale_.capacity()) * sizeof(float);
  return bytes;
}

std::vector<Index::Candidate> Index::search_layer(const Query& q, uint32_t entry, int ef,
                                                  int level,
                                                  const std::vector<uint32_t>* excluded,
                                                  Visited& visited, bool locked) const {
  auto is_excluded = [excluded](uint32_t id) {
    return excluded != nullptr && !excluded->empty() &&
           std::binary_search(excluded->begin(), excluded->end(), id);
  };
  std::vector<Candidate> storage;
  storage.reserve(static_cast<size_t>(ef) + 1);
  std::priority_queue<Candidate, std::vector<Candidate>, Farther> best(Farther{}, std::move(storage));
  std::vector<Candidate> fstorage;
  fstorage.reserve(static_cast<size_t>(ef) * 2);
  std::priority_queue<Candidate, std::vector<Candidate>, Closer> frontier(Closer{}, std::move(fstorage));
  visited.reset(labels_.size());
  const float d0 = walk_distance(q, entry);
  visited.test_and_set(entry);
  frontier.push({d0, entry});
  if (!is_excluded(entry)) best.push({d0, entry});
  uint32_t neighbors[kMaxLinks];
  const size_t row_bytes = payload_bytes();
  while (!frontier.empty()) {
    const Candidate c = frontier.top();
    if (static_cast<int>(best.size()) >= ef && c.dist > best.top().dist) break;
    frontier.pop();
    uint32_t count;
    {
      std::unique_lock<std::mutex> guard(lock_of(c.id), std::defer_lock);
      if (locked) guard.lock();
      const uint32_t* l = links(c.id, level);
      count = l[0];
      std::copy(l + 1, l + 1 + count, neighbors);
    }
    // Prefetch the neighbors' marks and vectors: the walk is bound by memory latency.
    for (uint32_t j = 0; j < count; ++j) {
      __builtin_prefetch(visited.address(neighbors[j]));
      const char* p = payload(neighbors[j]);
      __builtin_prefetch(p);
      if (row_bytes > 64) __builtin_prefetch(p + 64);
    }
    for (uint32_t j = 0; j < count; ++j) {
      const uint32_t n = neighbors[j];
      if (visited.test_and_set(n)) continue;
      if (j + 1 < count) {  // the rest of the next vector while this one is compared
        const char* p = payload(neighbors[j + 1]);
        for (size_t off = 128; off < row_bytes; off += 64) __builtin_prefetch(p + off);
      }
      const float d = walk_distance(q, n);
      if (static_cast<int>(best.size()) < ef || d < best.top().dist) {
        frontier.push({d, n});
        if (!is_excluded(n)) {
          best.push({d, n});
          if (static_cast<int>(best.size()) > ef) best.pop();
        }
      }
    }
  }
  std::vector<Candidate> out;
  out.reserve(best.size());
  while (!best.empty()) {
    out.push_back(best.top());
    best.pop();
  }
  std::reverse(out.begin(), out.end());  // closest first
  return out;
}

// The paper's Algorithm 4: keep a candidate only if it is closer to the base
// than to every neighbor kept so far (diverse directions), closest first.
std::vector<Index::Candidate> Index::select_neighbors(const float* base,
                                                      std::vector<Candidate> candidates,
                                                      int count) const {
  (void)base;
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
  });
  if (static_cast<int>(candidates.size()) <= count) return candidates;
  std::vector<Candidate> kept;
  kept.reserve(count);
  for (const Candidate& c : candidates) {
    bool diverse = true;
    for (const Candidate& k : kept) {
      if (distance(vec(c.id), vec(k.id)) < c.dist) {
        diverse = false;
        break;
      }
    }
    if (diverse) kept.push_back(c);
    if (static_cast<int>(kept.size()) >= count) break;
  }
  return kept;
}

void Index::connect(uint32_t from, uint32_t to, float dist, int level) {
  std::lock_guard<std::mutex> guard(lock_of(from));
  uint32_t* l = links(from, level);
  const int limit = max_links(level);
  for (uint32_t i = 1; i <= l[0]; ++i)
    if (l[i] == to) return;
  if (static_cast<int>(l[0]) < limit) {
    l[1 + l[0]] = to;
    ++l[0];
    return;
  }
  std::vector<Candidate> cands;
  cands.reserve(limit + 1);
  cands.push_back({dist, to});
  for (uint32_t i = 1; i <= l[0]; ++i) cands.push_back({distance(vec(from), vec(l[i])), l[i]});
  const std::vector<Candidate> kept = select_neighbors(vec(from), std::move(cands), limit);
  l[0] = static_cast<uint32_t>(kept.size());
  for (size_t i = 0; i < kept.size(); ++i) l[1 + i] = kept[i].id;
}

// Layers from_level down to to_level + 1: move to the closest neighbor while
// that improves (the paper's search with ef = 1).
uint32_t Index::greedy_descent(const Query& q, uint32_t cur, int from_level, int to_level,
                               bool locked) const {
  float cur_dist = walk_distance(q, cur);
  for (int lev = from_level; lev > to_level; --lev) {
    bool changed = true;
    while (changed) {
      changed = false;
      std::unique_lock<std::mutex> guard(lock_of(cur), std::defer_lock);
      if (locked) guard.lock();
      const uint32_t* l = links(cur, lev);
      for (uint32_t i = 1; i <= l[0]; ++i) {
        const float d = walk_distance(q, l[i]);
        if (d < cur_dist) {
          cur_dist = d;
          cur = l[i];
          changed = true;
        }
      }
    }
  }
  return cur;
}

void Index::insert(uint32_t id, Visited& visited) {
  const int level = levels_[id];
  std::unique_lock<std::mutex> global(global_lock_);
  const int64_t entry = entry_;
  const int top = max_level_;
  if (entry < 0) {
    entry_ = id;
    max_level_ = level;
    return;
  }
  if (level <= top) global.unlock();  // keep it only while this node may become the entry
  Query q;
  prepare(vec(id), q);
  uint32_t cur = greedy_descent(q, static_cast<uint32_t>(entry), top, level, /*locked=*/true);
  for (int lev = std::min(level, top); lev >= 0; --lev) {
    std::vector<Candidate> found =
        search_layer(q, cur, ef_construction_, lev, nullptr, visited, /*locked=*/true);
    // The neighbor selection compares candidates with exact distances between
    // stored vectors; give it exact distances to the new node as well.
    rescore(q, found);
    const std::vector<Candidate> chosen = select_neighbors(q.x, found, m_);
    {
      std::lock_guard<std::mutex> guard(lock_of(id));
      uint32_t* l = links(id, lev);
      l[0] = static_cast<uint32_t>(chosen.size());
      for (size_t i = 0; i < chosen.size(); ++i) l[1 + i] = chosen[i].id;
    }
    for (const Candidate& c : chosen) connect(c.id, id, c.dist, lev);
    if (!found.empty()) cur = found.front().id;
  }
  if (level > top) {
    entry_ = id;
    max_level_ = level;
  }
}

void Index::grow(size_t total) {
  nodes_.resize(total * node_words_, 0);
  if (quant_ == Quantization::kSQ8) floats_.resize(total * static_cast<size_t>(dim_), 0.0f);
}

void Index::add(const float* vectors, const int64_t* ids, int64_t n, int num_threads) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> one_add_at_a_time(add_lock_);
  for (int64_t i = 0; i < n; ++i) {  // validate ids before changing anything
    if (label_index_.count(ids[i]))
      throw std::invalid_argument("id " + std::to_string(ids[i]) + " (row " + std::to_string(i) +
                                  ") is already in the index");
  }
  {
    std::unordered_map<int64_t, int64_t> seen;
    seen.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto [it, fresh] = seen.emplace(ids[i], i);
      if (!fresh)
        throw std::invalid_argument("id " + std::to_string(ids[i]) + " appears twice (rows " +
                                    std::to_string(it->second) + " and " + std::to_string(i) +
                                    ")");
    }
  }
  const size_t old = labels_.size();
  if (old + static_cast<size_t>(n) >= std::numeric_limits<uint32_t>::max())
    throw std::invalid_argument("an index holds at most 2^32 - 2 vectors");
  const size_t total = old + static_cast<size_t>(n);
  grow(total);
  for (size_t i = old; i < total; ++i) {
    float* v = vec_mut(static_cast<uint32_t>(i));
    std::memcpy(v, vectors + (i - old) * dim_, static_cast<size_t>(dim_) * sizeof(float));
    if (metric_ == Metric::kCosine) normalize(v, dim_);
  }
  if (quant_ == Quantization::kSQ8) quantize_rows(old, total);
  labels_.insert(labels_.end(), ids, ids + n);
  for (size_t i = old; i < total; ++i) label_index_.emplace(labels_[i], static_cast<uint32_t>(i));
  levels_.resize(total);
  upper_.resize(total);
  for (size_t i = old; i < total; ++i) {
    levels_[i] = random_level(static_cast<uint32_t>(i));
    upper_[i].assign(static_cast<size_t>(levels_[i]) * (m_ + 1), 0);
  }
  size_t start = old;
  if (entry_ < 0) {  // the first node needs no search
    Visited v;
    insert(static_cast<uint32_t>(start), v);
    ++start;
  }
#pragma omp parallel num_threads(num_threads)
  {
    Visited visited;
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = static_cast<int64_t>(start); i < static_cast<int64_t>(total); ++i)
      insert(static_cast<uint32_t>(i), visited);
  }
}

void Index::search_one(const Query& q, int k, int ef, const std::vector<uint32_t>& excluded,
                       int64_t available, int64_t* out_ids, float* out_scores,
                       Visited& visited) const {
  std::vector<Candidate> found;
  const int64_t n = size();
  if (entry_ >= 0) {
    const uint32_t cur =
        greedy_descent(q, static_cast<uint32_t>(entry_), max_level_, 0, /*locked=*/false);
    const int64_t want = std::min<int64_t>(k, available);
    int64_t width = std::max(ef, k);
    for (;;) {
      found = search_layer(q, cur, static_cast<int>(std::min<int64_t>(width, n)), 0, &excluded,
                           visited, /*locked=*/false);
      if (static_cast<int64_t>(found.size()) >= want || width >= n) break;
      width *= 4;  // restrictive exclusions: widen the beam
    }
    if (static_cast<int64_t>(found.size()) < want) {  // still short: exact scan
      found.clear();
      for (uint32_t id = 0; id < static_cast<uint32_t>(n); ++id)
        if (!std::binary_search(excluded.begin(), excluded.end(), id))
          found.push_back({distance(q.x, vec(id)), id});
    } else {
      rescore(q, found);  // re-rank the beam with the float32 vectors
    }
  }
  // best first; among equal distances the lower user id first
  std::sort(found.begin(), found.end(), [this](const Candidate& a, const Candidate& b) {
    return a.dist < b.dist || (a.dist == b.dist && labels_[a.id] < labels_[b.id]);
  });
  const float sign = metric_ == Metric::kL2 ? 1.0f : -1.0f;
  for (int j = 0; j < k; ++j) {
    if (j < static_cast<int>(found.size())) {
      out_ids[j] = labels_[found[j].id];
      out_scores[j] = sign * found[j].dist;
    } else {
      out_ids[j] = -1;
      out_scores[j] = std::numeric_limits<float>::quiet_NaN();
    }
  }
}

void Index::search(const float* queries, int64_t nq, int k, int ef, const int64_t* excl_offsets,
                   const int64_t* excl_ids, int64_t* out_ids, float* out_scores,
                   int num_threads) const {
#pragma omp parallel num_threads(num_threads)
  {
    Visited visited;
    std::vector<float> qbuf(static_cast<size_t>(dim_));
    Query query;
    std::vector<uint32_t> excluded;
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < nq; ++i) {
      const float* q = queries + i * dim_;
      if (metric_ == Metric::kCosine) {
        std::copy(q, q + dim_, qbuf.begin());
        normalize(qbuf.data(), dim_);
        q = qbuf.data();
      }
      excluded.clear();
      if (excl_offsets != nullptr) {
        for (int64_t j = excl_offsets[i]; j < excl_offsets[i + 1]; ++j) {
          const auto it = label_index_.find(excl_ids[j]);
          if (it != label_index_.end()) excluded.push_back(it->second);
        }
        std::sort(excluded.begin(), excluded.end());
        excluded.erase(std::unique(excluded.begin(), excluded.end()), excluded.end());
      }
      const int64_t available = size() - static_cast<int64_t>(excluded.size());
      prepare(q, query);
      search_one(query, k, ef, excluded, available, out_ids + i * k, out_scores + i * k, visited);
    }
  }
}

// ---------------------------------------------------------------- serialization

namespace {
template <typename T>
void put(std::string& s, const T& v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void put_array(std::string& s, const T* p, size_t n) {
  s.append(reinterpret_cast<const char*>(p), n * sizeof(T));
}

class Reader {
 public:
  Reader(const std::string& s, size_t end) : s_(s), end_(end) {}
  template <typename T>
  T get(const char* what) {
    T v;
    get_array(&v, 1, what);
    return v;
  }
  template <typename T>
  void get_array(T* out, size_t n, const char* what) {
    const size_t bytes = n * sizeof(T);
    if (n != 0 && bytes / n != sizeof(T)) throw std::runtime_error(std::string("bad size of ") + what);
    if (pos_ + bytes > end_)
      throw std::runtime_error(std::string("the file is truncated (while reading ") + what + ")");
    std::memcpy(out, s_.data() + pos_, bytes);
    pos_ += bytes;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& s_;
  size_t end_;
  size_t pos_ = 0;
};
}  // namespace

std::string Index::serialize() const {
  std::string s;
  s.append(kMagic, sizeof(kMagic));
  put(s, kVersion);
  put(s, static_cast<uint32_t>(dim_));
  put(s, static_cast<uint32_t>(metric_));
  put(s, static_cast<uint32_t>(m_));
  put(s, static_cast<uint32_t>(ef_construction_));
  put(s, static_cast<uint32_t>(quant_));
  put(s, seed_);
  put(s, static_cast<uint64_t>(labels_.size()));
  put(s, entry_);
  put(s, static_cast<int32_t>(max_level_));
  put_array(s, lo_.data(), lo_.size());  // SQ8 range (empty otherwise)
  put_array(s, scale_.data(), scale_.size());
  const size_t count = labels_.size();
  for (size_t i = 0; i < count; ++i) put_array(s, vec(static_cast<uint32_t>(i)), dim_);
  put_array(s, labels_.data(), labels_.size());
  put_array(s, levels_.data(), levels_.size());
  for (size_t i = 0; i < count; ++i) put_array(s, links(static_cast<uint32_t>(i), 0), links0_words());
  for (const auto& u : upper_) put_array(s, u.data(), u.size());
  put(s, fnv1a(s.data(), s.size()));
  return s;
}

std::unique_ptr<Index> Index::deserialize(const std::string& bytes) {
  if (bytes.size() < sizeof(kMagic) + sizeof(uint64_t) ||
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    throw std::runtime_error("not a noiseforge HNSW index (bad magic bytes)");
  const size_t body = bytes.size() - sizeof(uint64_t);
  uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + body, sizeof(stored));
  Reader r(bytes, body);
  char magic[8];
  r.get_array(magic, 8, "magic");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != 1 && version != kVersion)
    throw std::runtime_error("unsupported index format version " + std::to_string(version) +
                             " (this build reads versions 1 to " + std::to_string(kVersion) + ")");
  if (fnv1a(bytes.data(), body) != stored)
    throw std::runtime_error("checksum mismatch: the file is corrupted or truncated");
  const uint32_t dim = r.get<uint32_t>("dim");
  const uint32_t metric = r.get<uint32_t>("metric");
  const uint32_t m = r.get<uint32_t>("M");
  const uint32_t efc = r.get<uint32_t>("ef_construction");
  const uint32_t quant = version >= 2 ? r.get<uint32_t>("quantization") : 0;
  const uint64_t seed = r.get<uint64_t>("seed");
  const uint64_t count = r.get<uint64_t>("count");
  // The checksum catches accidents, not crafted files: check every value the
  // search relies on before allocating or trusting it.
  if (metric > 2 || quant > 1 || dim == 0 || dim > (1u << 20) || m < 2 || m > 256 || efc < 1 ||
      efc > (1u << 20) || count >= std::numeric_limits<uint32_t>::max())
    throw std::runtime_error("invalid header values");
  const uint64_t per_node_min = static_cast<uint64_t>(dim) * 4 + 8 + 4 + (2ull * m + 1) * 4;
  if (count > (body - r.pos()) / per_node_min)
    throw std::runtime_error("the file is truncated (header announces more vectors than it holds)");
  auto index = std::make_unique<Index>(static_cast<int>(dim), static_cast<Metric>(metric),
                                       static_cast<int>(m), static_cast<int>(efc), seed,
                                       static_cast<Quantization>(quant));
  index->entry_ = r.get<int64_t>("entry point");
  index->max_level_ = r.get<int32_t>("max level");
  if (index->max_level_ < -1 || index->max_level_ > 64) throw std::runtime_error("invalid max level");
  r.get_array(index->lo_.data(), index->lo_.size(), "quantization range");
  r.get_array(index->scale_.data(), index->scale_.size(), "quantization range");
  for (size_t i = 0; i < index->lo_.size(); ++i)
    // the walk computes scale * code in float32: 255 * scale must stay finite
    if (!std::isfinite(index->lo_[i]) || !(index->scale_[i] >= 0) ||
        !std::isfinite(static_cast<float>(255.0 * static_cast<double>(index->scale_[i]))))
      throw std::runtime_error("invalid quantization range");
  index->grow(count);
  for (uint64_t i = 0; i < count; ++i)
    r.get_array(index->vec_mut(static_cast<uint32_t>(i)), dim, "vectors");
  if (index->quant_ == Quantization::kSQ8)  // codes follow from the vectors and the range
    for (uint64_t i = 0; i < count; ++i) index->encode(static_cast<uint32_t>(i));
  index->labels_.resize(count);
  r.get_array(index->labels_.data(), count, "ids");
  index->levels_.resize(count);
  r.get_array(index->levels_.data(), count, "levels");
  for (uint64_t i = 0; i < count; ++i)
    r.get_array(index->links(static_cast<uint32_t>(i), 0), 2 * m + 1, "level-0 links");
  index->upper_.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (index->levels_[i] < 0 || index->levels_[i] > index->max_level_)
      throw std::runtime_error("invalid node level");
    index->upper_[i].resize(static_cast<size_t>(index->levels_[i]) * (m + 1));
    r.get_array(index->upper_[i].data(), index->upper_[i].size(), "upper links");
  }
  if (r.pos() != body) throw std::runtime_error("unexpected trailing bytes");
  for (uint64_t i = 0; i < count; ++i) {
    if (!index->label_index_.emplace(index->labels_[i], static_cast<uint32_t>(i)).second)
      throw std::runtime_error("duplicate id in file");
  }
  if ((count == 0) != (index->entry_ < 0) || index->entry_ >= static_cast<int64_t>(count) ||
      (count > 0 && index->levels_[index->entry_] != index->max_level_))
    throw std::runtime_error("invalid entry point");
  // every link must point inside the index, to a node that has that layer
  const Index& idx = *index;
  auto check = [&idx, count](const uint32_t* l, uint32_t limit, int lev) {
    if (l[0] > limit) throw std::runtime_error("invalid link count");
    for (uint32_t j = 1; j <= l[0]; ++j)
      if (l[j] >= count || idx.levels_[l[j]] < lev) throw std::runtime_error("invalid link");
  };
  for (uint64_t i = 0; i < count; ++i) {
    check(index->links(static_cast<uint32_t>(i), 0), 2 * m, 0);
    for (int lev = 1; lev <= index->levels_[i]; ++lev)
      check(index->links(static_cast<uint32_t>(i), lev), m, lev);
  }
  return index;
}

}  // namespace noiseforge::hnsw
