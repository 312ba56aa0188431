// C++ backend of exact k-nearest-neighbour search with per-query exclusions.
//
// Scores follow the reference contract: computed in double, rounded to float;
// better score first (higher for ip/cosine, lower for l2), equal scores by lower
// corpus id. Queries are processed in blocks so that each corpus row, once
// loaded, is scored against several queries while it is in cache; each query
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
    // The block's queries and the current corpus row, widened to double once, so
    // that the inner loop is pure double multiply-adds over L1-resident rows.
    std::vector<double> qd(static_cast<size_t>((q1 - q0) * d));
    for (int64_t q = q0; q < q1; ++q)
      for (int64_t i = 0; i < d; ++i) qd[(q - q0) * d + i] = static_cast<double>(queries[q * d + i]);
    std::vector<double> cd(static_cast<size_t>(d));
    for (int64_t j = 0; j < n; ++j) {
      const float* c = corpus + j * d;
      for (int64_t i = 0; i < d; ++i) cd[i] = static_cast<double>(c[i]);
      double raw[kQueryBlock];
      const int64_t rows = q1 - q0;
      int64_t b4 = 0;
      for (; b4 + 4 <= rows; b4 += 4) {
        if (metric == 0)
          l2x4_f64(qd.data() + b4 * d, cd.data(), d, raw + b4);
        else
          dot4_f64(qd.data() + b4 * d, cd.data(), d, raw + b4);
      }
      for (; b4 < rows; ++b4) {
        const double* qq = qd.data() + b4 * d;
        raw[b4] = metric == 0 ? l2_f64(qq, cd.data(), d) : dot_f64(qq, cd.data(), d);
      }
      for (int64_t q = q0; q < q1; ++q) {
        const size_t b = static_cast<size_t>(q - q0);
        std::vector<int64_t>& ex = excl[b];
        while (cursor[b] < ex.size() && ex[cursor[b]] < j) ++cursor[b];
        if (cursor[b] < ex.size() && ex[cursor[b]] == j) continue;
        float key;
        if (metric == 0) {
          key = static_cast<float>(raw[b]);
        } else if (metric == 1) {
          key = -static_cast<float>(raw[b]);
        } else {
          key = -static_cast<float>(raw[b] / (qnorm[b] * cnorm[j]));
        }
        std::vector<Hit>& h = heaps[b];
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
