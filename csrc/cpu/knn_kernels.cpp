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

constexpr int kQueryBlock = 8;

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
  const int64_t blocks = (nq + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t q0 = blk * kQueryBlock;
    const int64_t q1 = std::min(nq, q0 + kQueryBlock);
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
      for (int64_t q = q0; q < q1; ++q) {
        const size_t b = static_cast<size_t>(q - q0);
        std::vector<int64_t>& ex = excl[b];
        while (cursor[b] < ex.size() && ex[cursor[b]] < j) ++cursor[b];
        if (cursor[b] < ex.size() && ex[cursor[b]] == j) continue;
        const double* qq = qd.data() + b * d;
        float key;
        if (metric == 0) {
          key = static_cast<float>(l2_f64(qq, cd.data(), d));
        } else if (metric == 1) {
          key = -static_cast<float>(dot_f64(qq, cd.data(), d));
        } else {
          key = -static_cast<float>(dot_f64(qq, cd.data(), d) / (qnorm[b] * cnorm[j]));
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
