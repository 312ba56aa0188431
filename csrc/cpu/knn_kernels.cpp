// C++ backend of exact k-nearest-neighbour search with per-query exclusions.
//
// Scores follow the reference contract: computed in double, rounded to float;
// better score first (higher for ip/cosine, lower for l2), equal scores by lower
// corpus id. Queries are processed in blocks and the corpus in tiles, both
// widened to double once and kept in cache; 4 x 4 register tiles of
// (query, row) sums load each value once per four multiply-adds. Each query
// keeps its best k in a bounded heap.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu_kernels.h"

namespace noiseforge::cpu {
namespace {

constexpr int kQueryBlock = 32;  // amortises widening each corpus row to double
constexpr int64_t kCorpusTile = 32;  // corpus rows scored per pass over the query block

struct Hit {
  float key;  // smaller is better (l2 distance, or negated similarity)
  int64_t id;
};
inline bool better(const Hit& a, const Hit& b) {
  return a.key < b.key || (a.key == b.key && a.id < b.id);
}

// Cloned per instruction set and chosen at load time (portable builds stay fast).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NF_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NF_TARGET_CLONES
#endif

NF_TARGET_CLONES double dot_f64(const double* a, const double* b, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

NF_TARGET_CLONES double l2_f64(const double* a, const double* b, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) {
    const double t = a[i] - b[i];
    s += t * t;
  }
  return s;
}

// Four queries (rows q, q + d, q + 2d, q + 3d) against one corpus row: the
// corpus value is loaded once for four multiply-adds.
NF_TARGET_CLONES void dot4_f64(const double* q, const double* c, int64_t d, double* out) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < d; ++i) {
    const double ci = c[i];
    s0 += q[i] * ci;
    s1 += q[d + i] * ci;
    s2 += q[2 * d + i] * ci;
    s3 += q[3 * d + i] * ci;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

NF_TARGET_CLONES void l2x4_f64(const double* q, const double* c, int64_t d, double* out) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < d; ++i) {
    const double ci = c[i];
    const double t0 = q[i] - ci, t1 = q[d + i] - ci, t2 = q[2 * d + i] - ci, t3 = q[3 * d + i] - ci;
    s0 += t0 * t0;
    s1 += t1 * t1;
    s2 += t2 * t2;
    s3 += t3 * t3;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// Four queries (rows q + r * d) against four corpus rows (c + s * d): every
// loaded value feeds four multiply-adds, and the sixteen sums stay in registers.
#define NF_ACC16(X) X(0, 0) X(0, 1) X(0, 2) X(0, 3) X(1, 0) X(1, 1) X(1, 2) X(1, 3) \
  X(2, 0) X(2, 1) X(2, 2) X(2, 3) X(3, 0) X(3, 1) X(3, 2) X(3, 3)
#define NF_DECL(R, S) double s##R##S = 0.0;
#define NF_STORE(R, S) out[(R) * ld + (S)] = s##R##S;

NF_TARGET_CLONES void dot4x4_f64(const double* q, const double* c, int64_t d, double* out,
                                 int64_t ld) {
  NF_ACC16(NF_DECL)
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, \
                               s31, s32, s33)
  for (int64_t i = 0; i < d; ++i) {
    const double q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i];
    const double c0 = c[i], c1 = c[d + i], c2 = c[2 * d + i], c3 = c[3 * d + i];
#define NF_DOT(R, S) s##R##S += q##R * c##S;
    NF_ACC16(NF_DOT)
#undef NF_DOT
  }
  NF_ACC16(NF_STORE)
}

NF_TARGET_CLONES void l2x4x4_f64(const double* q, const double* c, int64_t d, double* out,
                                 int64_t ld) {
  NF_ACC16(NF_DECL)
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, \
                               s31, s32, s33)
  for (int64_t i = 0; i < d; ++i) {
    const double q0 = q[i], q1 = q[d + i], q2 = q[2 * d + i], q3 = q[3 * d + i];
    const double c0 = c[i], c1 = c[d + i], c2 = c[2 * d + i], c3 = c[3 * d + i];
#define NF_L2(R, S)             \
  {                             \
    const double t = q##R - c##S; \
    s##R##S += t * t;           \
  }
    NF_ACC16(NF_L2)
#undef NF_L2
  }
  NF_ACC16(NF_STORE)
}
#undef NF_DECL
#undef NF_STORE
#undef NF_ACC16

double norm_f64(const float* a, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * static_cast<double>(a[i]);
  return std::sqrt(s);
}

}  // namespace

void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d, int k,
              int metric, const int64_t* offsets, const int64_t* excluded, int64_t* out_ids,
              float* out_scores, int num_threads) {
  // metric: 0 = l2, 1 = ip, 2 = cosine
  std::vector<double> cnorm;
  if (metric == 2) {
    cnorm.resize(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t j = 0; j < n; ++j) cnorm[j] = norm_f64(corpus + j * d, d);
  }
  // Up to kQueryBlock queries per block, but enough blocks to keep every thread busy.
  int64_t qb = (nq + 2 * num_threads - 1) / (2 * static_cast<int64_t>(num_threads));
  qb = std::max<int64_t>(4, std::min<int64_t>(kQueryBlock, (qb + 3) / 4 * 4));
  const int64_t blocks = (nq + qb - 1) / qb;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t q0 = blk * qb;
    const int64_t q1 = std::min(nq, q0 + qb);
    std::vector<std::vector<Hit>> heaps(static_cast<size_t>(q1 - q0));
    std::vector<std::vector<int64_t>> excl(static_cast<size_t>(q1 - q0));
    std::vector<size_t> cursor(static_cast<size_t>(q1 - q0), 0);
    double qnorm[kQueryBlock] = {};
    for (int64_t q = q0; q < q1; ++q) {
      heaps[q - q0].reserve(static_cast<size_t>(k) + 1);
      if (offsets != nullptr) {
        excl[q - q0].assign(excluded + offsets[q], excluded + offsets[q + 1]);
        std::sort(excl[q - q0].begin(), excl[q - q0].end());
      }
      if (metric == 2) qnorm[q - q0] = norm_f64(queries + q * d, d);
    }
    // The block's queries and the current tile of corpus rows, widened to double
    // once, so that the inner loops are pure double multiply-adds over cached rows.
    const int64_t rows = q1 - q0;
    std::vector<double> qd(static_cast<size_t>(rows * d));
    for (int64_t q = q0; q < q1; ++q)
      for (int64_t i = 0; i < d; ++i) qd[(q - q0) * d + i] = static_cast<double>(queries[q * d + i]);
    std::vector<double> cd(static_cast<size_t>(kCorpusTile * d));
    std::vector<double> raw(static_cast<size_t>(rows * kCorpusTile));
    for (int64_t j0 = 0; j0 < n; j0 += kCorpusTile) {
      const int64_t nb = std::min(kCorpusTile, n - j0);
      for (int64_t t = 0; t < nb; ++t) {
        const float* c = corpus + (j0 + t) * d;
        for (int64_t i = 0; i < d; ++i) cd[t * d + i] = static_cast<double>(c[i]);
      }
      for (int64_t b4 = 0; b4 < rows; b4 += 4) {
        const double* qq = qd.data() + b4 * d;
        double* out = raw.data() + b4 * kCorpusTile;
        if (rows - b4 < 4) {  // the block's last one to three queries
          for (int64_t r = 0; r < rows - b4; ++r)
            for (int64_t t = 0; t < nb; ++t)
              out[r * kCorpusTile + t] = metric == 0 ? l2_f64(qq + r * d, cd.data() + t * d, d)
                                                     : dot_f64(qq + r * d, cd.data() + t * d, d);
          continue;
        }
        int64_t t4 = 0;
        for (; t4 + 4 <= nb; t4 += 4) {
          if (metric == 0)
            l2x4x4_f64(qq, cd.data() + t4 * d, d, out + t4, kCorpusTile);
          else
            dot4x4_f64(qq, cd.data() + t4 * d, d, out + t4, kCorpusTile);
        }
        for (; t4 < nb; ++t4) {  // the tile's last one to three rows
          double four[4];
          if (metric == 0)
            l2x4_f64(qq, cd.data() + t4 * d, d, four);
          else
            dot4_f64(qq, cd.data() + t4 * d, d, four);
          for (int r = 0; r < 4; ++r) out[r * kCorpusTile + t4] = four[r];
        }
      }
      for (int64_t q = q0; q < q1; ++q) {
        const size_t b = static_cast<size_t>(q - q0);
        std::vector<int64_t>& ex = excl[b];
        std::vector<Hit>& h = heaps[b];
        for (int64_t t = 0; t < nb; ++t) {
          const int64_t j = j0 + t;
          while (cursor[b] < ex.size() && ex[cursor[b]] < j) ++cursor[b];
          if (cursor[b] < ex.size() && ex[cursor[b]] == j) continue;
          const double r = raw[b * kCorpusTile + t];
          float key;
          if (metric == 0) {
            key = static_cast<float>(r);
          } else if (metric == 1) {
            key = -static_cast<float>(r);
          } else {
            key = -static_cast<float>(r / (qnorm[b] * cnorm[j]));
          }
          const Hit hit{key, j};
          if (static_cast<int>(h.size()) < k) {
            h.push_back(hit);
            std::push_heap(h.begin(), h.end(), better);  // max-heap: worst on top
          } else if (better(hit, h.front())) {
            std::pop_heap(h.begin(), h.end(), better);
            h.back() = hit;
            std::push_heap(h.begin(), h.end(), better);
          }
        }
      }
    }
    for (int64_t q = q0; q < q1; ++q) {
      std::vector<Hit>& h = heaps[q - q0];
      std::sort(h.begin(), h.end(), better);
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

}  // namespace noiseforge::cpu
