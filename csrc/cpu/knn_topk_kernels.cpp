// C++ backend of exact k-nearest-neighbour search with per-query exclusions.
//
// Scores follow the reference contract: computed in double, rounded to float;
// better score first (higher for ip/cosine, lower for l2), equal scores by lower
// corpus id. Queries are processed in blocks and the corpus in tiles; 4 x 4
// register tiles of (query, row) sums load each value once per four
// multiply-adds. Each query keeps its best k in a bounded heap.
//
// Two passes make the double contract cost about as much as float32 work:
// 1. a float32 pass scores every pair and brackets its double score with a
//    rigorous rounding-error bound (lo, hi); each query tracks the k-th largest
//    lo so far (T) and keeps as candidates the rows whose hi reaches T;
// 2. the candidates still reaching the final T are rescored in double and
//    ranked by the contract. A row outside them is provably worse, after
//    rounding to float32, than k admissible rows, so the result is the same as
//    scoring everything in double.
// Vectors so large that float32 sums could overflow, very long vectors and a
// thread that flushes subnormals to zero take the double path.
//
// Compiled once per instruction set (NF_ISA_NAMESPACE is set by CMake) and
// chosen at run time by dispatch.cpp; with -ffp-contract=fast, as the float32
// bound holds for any use of FMAs and the double scores are the contract's
// arithmetic in any order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "cpu_kernels.h"

#ifndef NF_ISA_NAMESPACE
#error "NF_ISA_NAMESPACE must be defined by the build"
#endif

namespace noiseforge::NF_ISA_NAMESPACE {
namespace {

// Containers with an allocator of this file's own (internal linkage), so that
// the std:: code instantiated for them is private to each instruction set's
// object: a shared instantiation (of std::vector<double>, say) compiled for
// AVX-512 could otherwise be the one the linker keeps for every CPU.
template <typename T>
struct Allocator : std::allocator<T> {
  using value_type = T;
  Allocator() = default;
  template <typename U>
  Allocator(const Allocator<U>&) {}  // NOLINT: rebinding copies nothing
  template <typename U>
  struct rebind {
    using other = Allocator<U>;
  };
};
template <typename T>
using Vec = std::vector<T, Allocator<T>>;

constexpr int kQueryBlock = 32;      // queries scored together (their rows stay in cache)
constexpr int64_t kCorpusTile = 32;  // corpus rows scored per pass over the query block

struct Hit {
  float key;  // smaller is better (l2 distance, or negated similarity)
  int64_t id;
};
inline bool better(const Hit& a, const Hit& b) {
  return a.key < b.key || (a.key == b.key && a.id < b.id);
}

// Offers a hit to the bounded max-heap (worst on top) of a query's k best.
inline void offer(Vec<Hit>& h, int k, const Hit& hit) {
  if (static_cast<int>(h.size()) < k) {
    h.push_back(hit);
    std::push_heap(h.begin(), h.end(), better);
  } else if (better(hit, h.front())) {
    std::pop_heap(h.begin(), h.end(), better);
    h.back() = hit;
    std::push_heap(h.begin(), h.end(), better);
  }
}

// The contract's key (smaller is better) of a pair's double score.
inline float contract_key(int metric, double raw, double qn, double cn) {
  if (metric == 0) return static_cast<float>(raw);
  if (metric == 1) return -static_cast<float>(raw);
  return -static_cast<float>(raw / (qn * cn));
}

// One pair, four queries x one row, four queries x four rows: sums of q . c,
// or of (q - c)^2 for l2. Queries are rows q + r * d, corpus rows c + s * d.
#define NF_ACC16(X) \
  X(0, 0) X(0, 1) X(0, 2) X(0, 3) X(1, 0) X(1, 1) X(1, 2) X(1, 3) \
  X(2, 0) X(2, 1) X(2, 2) X(2, 3) X(3, 0) X(3, 1) X(3, 2) X(3, 3)
#define NF_DECL(R, S) T s##R##S = 0;
#define NF_STORE(R, S) out[(R) * ld + (S)] = s##R##S;
#define NF_DOT(R, S) s##R##S += q##R * c##S;
#define NF_L2(R, S)          \
  {                          \
    const T t = q##R - c##S; \
    s##R##S += t * t;        \
  }

template <typename T>
T dot_pair(const T* a, const T* b, int64_t d) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
T l2_pair(const T* a, const T* b, int64_t d) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) {
    const T t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

// Queries q + r * d (r < 4) against the corpus row c: out[r * ld].
template <typename T>
void tile4x1(bool l2, const T* q, const T* c, int64_t d, T* out, int64_t ld) {
  T s00 = 0, s10 = 0, s20 = 0, s30 = 0;
  if (l2) {
#pragma omp simd reduction(+ : s00, s10, s20, s30)
    for (int64_t i = 0; i < d; ++i) {
      const T q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i], c0 = c[i];
      NF_L2(0, 0) NF_L2(1, 0) NF_L2(2, 0) NF_L2(3, 0)
    }
  } else {
#pragma omp simd reduction(+ : s00, s10, s20, s30)
    for (int64_t i = 0; i < d; ++i) {
      const T q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i], c0 = c[i];
      NF_DOT(0, 0) NF_DOT(1, 0) NF_DOT(2, 0) NF_DOT(3, 0)
    }
  }
  out[0] = s00;
  out[ld] = s10;
  out[2 * ld] = s20;
  out[3 * ld] = s30;
}

// Queries q + r * d against corpus rows c + s * d (r, s < 4): out[r * ld + s].
template <typename T>
void tile4x4(bool l2, const T* q, const T* c, int64_t d, T* out, int64_t ld) {
  NF_ACC16(NF_DECL)
  if (l2) {
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, \
                               s31, s32, s33)
    for (int64_t i = 0; i < d; ++i) {
      const T q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i];
      const T c0 = c[i], c1 = c[d + i], c2 = c[2 * d + i], c3 = c[3 * d + i];
      NF_ACC16(NF_L2)
    }
  } else {
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, \
                               s31, s32, s33)
    for (int64_t i = 0; i < d; ++i) {
      const T q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i];
      const T c0 = c[i], c1 = c[d + i], c2 = c[2 * d + i], c3 = c[3 * d + i];
      NF_ACC16(NF_DOT)
    }
  }
  NF_ACC16(NF_STORE)
}

#undef NF_L2
#undef NF_DOT
#undef NF_STORE
#undef NF_DECL
#undef NF_ACC16

// Scores of the block's rows (queries, row-major (rows, d)) against a tile of
// nb corpus rows (c, (nb, d)): out[r * kCorpusTile + t].
template <typename T>
void score_tile(bool l2, const T* q, int64_t rows, const T* c, int64_t nb, int64_t d, T* out) {
  for (int64_t b4 = 0; b4 < rows; b4 += 4) {
    const T* qq = q + b4 * d;
    T* o = out + b4 * kCorpusTile;
    if (rows - b4 < 4) {  // the block's last one to three queries
      for (int64_t r = 0; r < rows - b4; ++r)
        for (int64_t t = 0; t < nb; ++t)
          o[r * kCorpusTile + t] =
              l2 ? l2_pair(qq + r * d, c + t * d, d) : dot_pair(qq + r * d, c + t * d, d);
      continue;
    }
    int64_t t4 = 0;
    for (; t4 + 4 <= nb; t4 += 4) tile4x4(l2, qq, c + t4 * d, d, o + t4, kCorpusTile);
    for (; t4 < nb; ++t4) tile4x1(l2, qq, c + t4 * d, d, o + t4, kCorpusTile);  // last 1-3 rows
  }
}

double norm_f64(const float* a, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  return std::sqrt(s);
}

// The exact double score of one pair (the contract's arithmetic, any order).
double exact_score(int metric, const double* qd, const float* c, int64_t d) {
  double s = 0.0;
  if (metric == 0) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) {
      const double t = qd[i] - static_cast<double>(c[i]);
      s += t * t;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) s += qd[i] * static_cast<double>(c[i]);
  }
  return s;
}

struct Block {
  int64_t q0, rows;
  Vec<Vec<Hit>> heaps;    // the k best of each query (exact keys)
  Vec<Vec<int64_t>> excl; // sorted exclusions of each query
  Vec<size_t> cursor;             // position in excl while rows ascend
  Vec<double> qnorm;

  // Whether query b excludes corpus row j (rows must be asked in ascending order).
  bool excluded(size_t b, int64_t j) {
    const Vec<int64_t>& ex = excl[b];
    while (cursor[b] < ex.size() && ex[cursor[b]] < j) ++cursor[b];
    return cursor[b] < ex.size() && ex[cursor[b]] == j;
  }
};

// Everything in double: queries and each corpus tile widened once.
void exact_pass(Block& blk, const float* queries, const float* corpus, int64_t n, int64_t d,
                int k, int metric, const Vec<double>& cnorm) {
  const int64_t rows = blk.rows;
  Vec<double> qd(static_cast<size_t>(rows * d));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < d; ++i) qd[r * d + i] = static_cast<double>(queries[(blk.q0 + r) * d + i]);
  Vec<double> cd(static_cast<size_t>(kCorpusTile * d));
  Vec<double> raw(static_cast<size_t>(rows * kCorpusTile));
  for (int64_t j0 = 0; j0 < n; j0 += kCorpusTile) {
    const int64_t nb = std::min(kCorpusTile, n - j0);
    for (int64_t t = 0; t < nb * d; ++t) cd[t] = static_cast<double>(corpus[j0 * d + t]);
    score_tile<double>(metric == 0, qd.data(), rows, cd.data(), nb, d, raw.data());
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t t = 0; t < nb; ++t) {
        const int64_t j = j0 + t;
        if (blk.excluded(static_cast<size_t>(b), j)) continue;
        const double cn = metric == 2 ? cnorm[j] : 1.0;
        offer(blk.heaps[b], k, Hit{contract_key(metric, raw[b * kCorpusTile + t], blk.qnorm[b], cn), j});
      }
  }
}

// Whether this thread's float32 arithmetic keeps subnormals (no flush-to-zero
// of results, no denormals-are-zero on inputs): the error bound counts on
// gradual underflow. Another library may have switched either on (per thread).
bool gradual_underflow() {
  volatile float tiny = 0x1p-70f, subnormal = 0x1p-140f;
  const float product = tiny * tiny;     // 2^-140: flushed under FTZ
  const float same = subnormal * 1.0f;   // read as 0 under DAZ
  return product != 0.0f && same != 0.0f;
}

// The float32 pass and the double rescoring of its candidates (see the top).
void filtered_pass(Block& blk, const float* queries, const float* corpus, int64_t n, int64_t d,
                   int k, int metric, const Vec<double>& cnorm) {
  const int64_t rows = blk.rows;
  const float* q = queries + blk.q0 * d;
  // |float32 sum - exact| <= gamma * (sum of |terms|) for any order and any
  // use of FMAs (gamma_n = n u / (1 - n u), u = 2^-24; terms: d products, or
  // d squares of rounded differences for l2), plus the double score's own
  // error and d * 2^-148 for products that underflow. Doubled, plus two
  // float32 ulps of the magnitude: a row whose hi stays below another's lo is
  // then strictly worse after the contract's rounding to float32.
  const double u = std::ldexp(1.0, -24);
  const double nd = static_cast<double>(d) + 3.0;
  const double gamma = nd * u / (1.0 - nd * u) + nd * std::ldexp(1.0, -52);
  const double tiny = nd * std::ldexp(1.0, -148);
  const double ulp2 = std::ldexp(1.0, -22);
  // T of a query: its k-th largest lower bound so far (-inf until it has k)
  const auto threshold_of = [k](const Vec<double>& low) {
    return static_cast<int>(low.size()) < k ? -std::numeric_limits<double>::infinity()
                                            : low.front();
  };
  // per query: the k largest lower bounds (a min-heap: T on top) and the candidates (hi, id)
  Vec<Vec<double>> lows(static_cast<size_t>(rows));
  Vec<Vec<std::pair<double, int64_t>>> cand(static_cast<size_t>(rows));
  Vec<float> raw(static_cast<size_t>(rows * kCorpusTile));
  // The block's queries in double, for rescoring.
  Vec<double> qd(static_cast<size_t>(rows * d));
  for (int64_t i = 0; i < rows * d; ++i) qd[i] = static_cast<double>(q[i]);
  const auto rescore = [&](int64_t b, int64_t j) {
    const double cn = metric == 2 ? cnorm[j] : 1.0;
    const double s = exact_score(metric, qd.data() + b * d, corpus + j * d, d);
    offer(blk.heaps[b], k, Hit{contract_key(metric, s, blk.qnorm[b], cn), j});
  };
  // A candidate list is compacted when it reaches `cap`; rows that still cannot
  // be ruled out (ties within the bound: duplicates, a zero query) are then
  // rescored at once, so a list never holds more than `cap` rows. Offering a
  // row to the exact heap early never changes the result.
  const size_t cap = static_cast<size_t>(4 * k + 256);
  for (int64_t j0 = 0; j0 < n; j0 += kCorpusTile) {
    const int64_t nb = std::min(kCorpusTile, n - j0);
    score_tile<float>(metric == 0, q, rows, corpus + j0 * d, nb, d, raw.data());
    for (int64_t b = 0; b < rows; ++b) {
      Vec<double>& low = lows[b];
      Vec<std::pair<double, int64_t>>& cs = cand[b];
      const double qn = blk.qnorm[b];
      for (int64_t t = 0; t < nb; ++t) {
        const int64_t j = j0 + t;
        if (blk.excluded(static_cast<size_t>(b), j)) continue;
        const double s = static_cast<double>(raw[b * kCorpusTile + t]);
        double good, err;  // goodness (higher is better) and its error bound
        if (metric == 0) {
          good = -s;
          err = gamma * s / (1.0 - gamma) + tiny;
        } else {
          const double scale = qn * cnorm[j];  // >= sum |q_i c_i|
          err = gamma * scale + tiny;
          good = s;
          if (metric == 2) {
            good = s / scale;
            err = err / scale;
          }
        }
        err = 2.0 * err + ulp2 * (std::fabs(good) + err);
        const double lo = good - err, hi = good + err;
        if (!(hi >= threshold_of(low))) continue;  // cannot reach the k best
        cs.emplace_back(hi, j);
        if (static_cast<int>(low.size()) < k) {
          low.push_back(lo);
          std::push_heap(low.begin(), low.end(), std::greater<>());
        } else if (lo > low.front()) {
          std::pop_heap(low.begin(), low.end(), std::greater<>());
          low.back() = lo;
          std::push_heap(low.begin(), low.end(), std::greater<>());
        }
        if (cs.size() >= cap) {  // drop candidates the risen T rules out
          const double th = threshold_of(low);
          cs.erase(std::remove_if(cs.begin(), cs.end(), [th](const auto& c) { return c.first < th; }),
                   cs.end());
          if (cs.size() > cap / 2) {
            for (const auto& c : cs) rescore(b, c.second);
            cs.clear();
          }
        }
      }
    }
  }
  for (int64_t b = 0; b < rows; ++b) {
    const double th = threshold_of(lows[b]);
    for (const auto& [hi, j] : cand[b])
      if (hi >= th) rescore(b, j);
  }
}

}  // namespace

void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d, int k,
              int metric, const int64_t* offsets, const int64_t* excluded, int64_t* out_ids,
              float* out_scores, int num_threads) {
  // metric: 0 = l2, 1 = ip, 2 = cosine
  Vec<double> cnorm(static_cast<size_t>(n)), qnorm(static_cast<size_t>(nq));
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t j = 0; j < n; ++j) cnorm[j] = norm_f64(corpus + j * d, d);
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t q = 0; q < nq; ++q) qnorm[q] = norm_f64(queries + q * d, d);
  // float32 sums stay finite when every |sum| <= (|q| + |c|)^2 is far below FLT_MAX
  const double qmax = nq ? *std::max_element(qnorm.begin(), qnorm.end()) : 0.0;
  const double cmax = n ? *std::max_element(cnorm.begin(), cnorm.end()) : 0.0;
  const bool float_safe = (qmax + cmax) * (qmax + cmax) < 1e36;
  // Up to kQueryBlock queries per block, but enough blocks to keep every thread busy.
  int64_t qb = (nq + 2 * num_threads - 1) / (2 * static_cast<int64_t>(num_threads));
  qb = std::max<int64_t>(4, std::min<int64_t>(kQueryBlock, (qb + 3) / 4 * 4));
  const int64_t blocks = (nq + qb - 1) / qb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t bi = 0; bi < blocks; ++bi) {
    Block blk;
    blk.q0 = bi * qb;
    blk.rows = std::min(nq, blk.q0 + qb) - blk.q0;
    const size_t rows = static_cast<size_t>(blk.rows);
    blk.heaps.resize(rows);
    blk.excl.resize(rows);
    blk.cursor.assign(rows, 0);
    blk.qnorm.assign(qnorm.begin() + blk.q0, qnorm.begin() + blk.q0 + blk.rows);
    for (size_t b = 0; b < rows; ++b) {
      blk.heaps[b].reserve(static_cast<size_t>(k) + 1);
      if (offsets != nullptr) {
        const int64_t q = blk.q0 + static_cast<int64_t>(b);
        blk.excl[b].assign(excluded + offsets[q], excluded + offsets[q + 1]);
        std::sort(blk.excl[b].begin(), blk.excl[b].end());
      }
    }
    // The filter needs float32 sums that cannot overflow, a bound that stays
    // small (nd u < 1e-2, i.e. d below ~167k) and gradual underflow.
    if (float_safe && (static_cast<double>(d) + 3.0) * std::ldexp(1.0, -24) < 1e-2 &&
        gradual_underflow())
      filtered_pass(blk, queries, corpus, n, d, k, metric, cnorm);
    else
      exact_pass(blk, queries, corpus, n, d, k, metric, cnorm);
    for (int64_t b = 0; b < blk.rows; ++b) {
      Vec<Hit>& h = blk.heaps[b];
      std::sort(h.begin(), h.end(), better);
      const int64_t q = blk.q0 + b;
      for (int i = 0; i < k; ++i) {
        if (i < static_cast<int>(h.size())) {
          out_ids[q * k + i] = h[i].id;
          out_scores[q * k + i] = metric == 0 ? h[i].key : -h[i].key;
        } else {
          out_ids[q * k + i] = -1;
          out_scores[q * k + i] = std::numeric_limits<float>::quiet_NaN();
        }
      }
    }
  }
}

}  // namespace noiseforge::NF_ISA_NAMESPACE
