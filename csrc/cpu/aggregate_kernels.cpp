// C++ backend of the label-aggregation ops (vote histograms, weighted and
// soft-label sums), OpenMP-parallel and deterministic.
//
// Pass 1 reads the index (and values): is it sorted, is every index in range,
// are the values finite and >= 0, and their maximum (for the fixed-point shift).
// Pass 2, when the index is sorted (answers grouped by input, the usual case):
// the answers are cut into one range per thread at input boundaries, so each
// thread owns a disjoint block of output rows, zeroes it and accumulates with
// plain adds (no atomics, first touch by the owner). Otherwise the table is
// zeroed and threads add with relaxed atomics; integers make the result
// independent of the order. Labels are checked inline in pass 2.
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "cpu_kernels.h"
#include "noiseforge/aggregate.h"
#include "noiseforge/fixed_point.h"

namespace noiseforge::cpu {
namespace {

constexpr int64_t kChunk = 1 << 15;

#if defined(_OPENMP)
inline int team_size() { return omp_get_num_threads(); }
inline int team_rank() { return omp_get_thread_num(); }
#else
inline int team_size() { return 1; }
inline int team_rank() { return 0; }
#endif

template <typename T>
inline void add_plain(T* p, T v) {
  *p += v;
}
template <typename T>
inline void add_atomic(T* p, T v) {
  __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

struct Pass1 {
  bool sorted = true;
  int64_t bad_index = -1;
  int64_t bad_value = -1;
  float max_value = 0.0f;
};

template <typename TI>
Pass1 scan(const TI* index, const float* values, int64_t m, int64_t n, int64_t values_per_answer,
           int nt) {
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  int64_t bad_index = m;
  int64_t bad_value = m * values_per_answer;
  int unsorted = 0;
  float max_value = 0.0f;
#pragma omp parallel for schedule(static) num_threads(nt) \
    reduction(min : bad_index, bad_value) reduction(| : unsorted) reduction(max : max_value)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t lo = ch * kChunk;
    const int64_t hi = std::min(m, lo + kChunk);
    int64_t prev = lo > 0 ? static_cast<int64_t>(index[lo - 1]) : std::numeric_limits<int64_t>::min();
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t v = static_cast<int64_t>(index[i]);
      unsorted |= v < prev;
      prev = v;
      if ((v < 0 || v >= n) && i < bad_index) bad_index = i;
    }
    if (values != nullptr) {
      const int64_t vlo = lo * values_per_answer;
      const int64_t vhi = hi * values_per_answer;
      for (int64_t j = vlo; j < vhi; ++j) {
        const float w = values[j];
        if (!(w >= 0.0f && w <= std::numeric_limits<float>::max())) {  // NaN, inf or < 0
          if (j < bad_value) bad_value = j;
        } else if (w > max_value) {
          max_value = w;
        }
      }
    }
  }
  Pass1 r;
  r.sorted = unsorted == 0;
  r.bad_index = bad_index == m ? -1 : bad_index;
  r.bad_value = bad_value == m * values_per_answer ? -1 : bad_value;
  r.max_value = max_value;
  return r;
}

// Accumulate answers [a0, a1) into acc (rows already zeroed); returns the first bad label or -1.
template <typename TI, typename TL, typename TAcc, void (*Add)(TAcc*, TAcc)>
int64_t accumulate(const AggregateArgs& a, const TI* index, const TL* labels, TAcc* acc,
                   double scale, int64_t a0, int64_t a1) {
  const int64_t C = a.c;
  int64_t bad = -1;
  if (a.mode == AggregateMode::kSoft) {
    for (int64_t i = a0; i < a1; ++i) {
      TAcc* row = acc + static_cast<int64_t>(index[i]) * C;
      const float* p = a.values + i * C;
      for (int64_t c = 0; c < C; ++c)
        Add(row + c, static_cast<TAcc>(fixed_point_quantize(p[c], scale)));
    }
    return bad;
  }
  for (int64_t i = a0; i < a1; ++i) {
    const int64_t l = static_cast<int64_t>(labels[i]);
    if (l < 0 || l >= C) {
      if (bad < 0) bad = i;
      continue;
    }
    const TAcc v = a.mode == AggregateMode::kCounts
                       ? TAcc{1}
                       : static_cast<TAcc>(fixed_point_quantize(a.values[i], scale));
    Add(acc + static_cast<int64_t>(index[i]) * C + l, v);
  }
  return bad;
}

template <typename TAcc>
void convert_rows(const TAcc* acc, float* out, int64_t first, int64_t last, double inv_scale) {
  for (int64_t j = first; j < last; ++j) out[j] = fixed_point_value(static_cast<int64_t>(acc[j]), inv_scale);
}

template <typename TI, typename TL, typename TAcc>
AggregateStatus run(const AggregateArgs& a, int nt) {
  const TI* index = static_cast<const TI*>(a.index);
  const TL* labels = static_cast<const TL*>(a.labels);
  const int64_t M = a.m, N = a.n, C = a.c;
  const int64_t per_answer = a.mode == AggregateMode::kSoft ? C : 1;
  const Pass1 p1 = scan(index, a.mode == AggregateMode::kCounts ? nullptr : a.values, M, N,
                        per_answer, nt);
  AggregateStatus st;
  st.sorted = p1.sorted;
  st.bad_index = p1.bad_index;
  st.bad_value = p1.bad_value;
  if (st.bad_index >= 0 || st.bad_value >= 0) return st;

  const bool counts = a.mode == AggregateMode::kCounts;
  const int k = counts ? 0 : fixed_point_shift(static_cast<double>(p1.max_value), M);
  const double scale = std::ldexp(1.0, k);
  const double inv_scale = std::ldexp(1.0, -k);
  // Counts accumulate in the output itself; sums in an int64 scratch table.
  std::unique_ptr<int64_t[]> scratch;
  TAcc* acc = static_cast<TAcc*>(a.out);
  if (!counts) {
    scratch.reset(new int64_t[static_cast<size_t>(N * C)]);
    acc = reinterpret_cast<TAcc*>(scratch.get());
  }
  float* out_f = static_cast<float*>(a.out);
  int64_t bad_label = M;

  if (p1.sorted) {
#pragma omp parallel num_threads(nt) reduction(min : bad_label)
    {
      const int T = team_size();
      const int t = team_rank();
      auto start = [&](int s) -> int64_t {  // first answer of thread s, at an input boundary
        if (s <= 0) return 0;
        if (s >= T) return M;
        int64_t i = M * s / T;
        while (i > 0 && i < M && index[i] == index[i - 1]) ++i;
        return i;
      };
      auto first_row = [&](int s) -> int64_t {
        if (s <= 0) return 0;
        const int64_t i = start(s);
        return i >= M ? N : static_cast<int64_t>(index[i]);
      };
      const int64_t a0 = start(t), a1 = start(t + 1);
      const int64_t r0 = first_row(t), r1 = t + 1 >= T ? N : first_row(t + 1);
      std::fill(acc + r0 * C, acc + r1 * C, TAcc{0});
      const int64_t bad = accumulate<TI, TL, TAcc, add_plain<TAcc>>(a, index, labels, acc, scale, a0, a1);
      if (bad >= 0) bad_label = bad;
      if (!counts) convert_rows(acc, out_f, r0 * C, r1 * C, inv_scale);
    }
  } else {
    const int64_t cells = N * C;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t j = 0; j < cells; ++j) acc[j] = TAcc{0};
    const int64_t chunks = (M + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : bad_label)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t lo = ch * kChunk;
      const int64_t bad = accumulate<TI, TL, TAcc, add_atomic<TAcc>>(a, index, labels, acc, scale,
                                                                     lo, std::min(M, lo + kChunk));
      if (bad >= 0 && bad < bad_label) bad_label = bad;
    }
    if (!counts) {
#pragma omp parallel for schedule(static) num_threads(nt)
      for (int64_t j = 0; j < cells; ++j) out_f[j] = fixed_point_value(acc[j], inv_scale);
    }
  }
  st.bad_label = bad_label == M ? -1 : bad_label;
  return st;
}

template <typename TI, typename TL>
AggregateStatus dispatch_acc(const AggregateArgs& a, int nt) {
  if (a.mode == AggregateMode::kCounts && a.count_type == IntType::kInt32)
    return run<TI, TL, int32_t>(a, nt);
  return run<TI, TL, int64_t>(a, nt);
}

template <typename TI>
AggregateStatus dispatch_labels(const AggregateArgs& a, int nt) {
  if (a.mode == AggregateMode::kSoft || a.label_type == IntType::kInt64)
    return dispatch_acc<TI, int64_t>(a, nt);
  return dispatch_acc<TI, int32_t>(a, nt);
}

}  // namespace

AggregateStatus aggregate(const AggregateArgs& a, int num_threads) {
  if (a.index_type == IntType::kInt64) return dispatch_labels<int64_t>(a, num_threads);
  return dispatch_labels<int32_t>(a, num_threads);
}

}  // namespace noiseforge::cpu
