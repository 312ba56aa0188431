// C++ backend of the label-aggregation ops (vote histograms, weighted and
// soft-label sums), OpenMP-parallel and deterministic.
//
// Weights and probabilities are read once first: they must be finite and >= 0,
// and their maximum fixes the fixed-point shift.
// Grouped path (answers of an input adjacent, as LDPKiT produces them): the
// answers are cut into one range per thread at input boundaries; each thread
// owns a disjoint block of output rows and streams its answers, summing the
// current input's votes in a small local row and writing every output row
// exactly once (no zeroing pass, no atomics, no scratch table). An answer out
// of order or outside the thread's rows aborts this path.
// General path: validate the index, zero the table, add with relaxed atomics
// (integers: the result does not depend on the order), convert sums.
// Labels are checked inline in both paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"
#include "memory.h"
#include "noiseforge/aggregate.h"
#include "noiseforge/fixed_point.h"

namespace noiseforge::cpu {
namespace {

constexpr int64_t kChunk = 1 << 15;

template <typename T>
inline void add_atomic(T* p, T v) {
  __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// Whether a weight is legal (finite and >= 0), and the running maximum: the
// definition every path uses. Float comparisons, so that in a thread that reads
// denormals as zero (DAZ) a tiny negative weight counts as -0 everywhere, as it
// does for torch's checks in that thread.
inline bool legal_weight(float w) { return w >= 0.0f && w <= std::numeric_limits<float>::max(); }

// The largest of n values and whether all are legal -- when no float mode is in
// play (integer work on the bit patterns, which the compiler vectorises:
// non-negative finite floats order like their bits read as int32, -0 taken as
// +0). false means "search the chunk with legal_weight".
inline bool chunk_max_bits(const float* v, int64_t n, float* max_out) {
  int32_t m = 0, bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    int32_t bits;
    std::memcpy(&bits, v + j, sizeof bits);
    bits = bits == std::numeric_limits<int32_t>::min() ? 0 : bits;
    bad |= (bits < 0) | (bits > 0x7F7FFFFF);  // negative, or inf / NaN
    m = m > bits ? m : bits;
  }
  std::memcpy(max_out, &m, sizeof m);
  return bad == 0;
}

// First illegal value (or -1) and the largest value. A chunk the bit scan
// flags is searched with legal_weight, which may still accept it (a negative
// subnormal read as -0 under DAZ): its maximum is then taken by float compares.
void scan_values(const float* values, int64_t count, int nt, int64_t* bad, float* max_out) {
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  int64_t first = count;
  float max_value = 0.0f;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : first) \
    reduction(max : max_value)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t lo = ch * kChunk, hi = std::min(count, lo + kChunk);
    float m = 0.0f;
    if (chunk_max_bits(values + lo, hi - lo, &m)) {
      max_value = std::max(max_value, m);
      continue;
    }
    for (int64_t j = lo; j < hi; ++j) {
      const float w = values[j];
      if (!legal_weight(w)) {
        first = std::min(first, j);
        break;
      }
      max_value = std::max(max_value, w);
    }
  }
  *bad = first == count ? -1 : first;
  *max_out = max_value;
}

// Whether the first answers (up to 4096) are in input order: a cheap probe
// that an index is not grouped at all.
template <typename TI>
bool prefix_sorted(const TI* index, int64_t m) {
  const int64_t n = std::min<int64_t>(m, 4096);
  for (int64_t i = 1; i < n; ++i)
    if (index[i] < index[i - 1]) return false;
  return true;
}

template <typename TI>
int64_t scan_index(const TI* index, int64_t m, int64_t n, int nt) {
  const int64_t chunks = (m + kChunk - 1) / kChunk;
  int64_t first = m;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : first)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t hi = std::min(m, (ch + 1) * kChunk);
    for (int64_t i = ch * kChunk; i < hi; ++i) {
      const int64_t v = static_cast<int64_t>(index[i]);
      if ((v < 0 || v >= n) && i < first) first = i;
    }
  }
  return first == m ? -1 : first;
}

// Writes table rows as counts (TOut integer) or fixed-point sums (TOut float).
template <typename TOut>
struct RowWriter {
  TOut* out;
  int64_t c;
  double inv_scale;
  void row(int64_t r, const int64_t* acc) const {
    TOut* o = out + r * c;
    for (int64_t j = 0; j < c; ++j) {
      if constexpr (std::is_same_v<TOut, float>)
        o[j] = fixed_point_value(acc[j], inv_scale);
      else
        o[j] = static_cast<TOut>(acc[j]);
    }
  }
  void zeros(int64_t r0, int64_t r1) const {
    if (r1 > r0) std::fill(out + r0 * c, out + r1 * c, TOut{0});
  }
};

// The grouped path; returns false (output incomplete) when some answer is out of
// order or outside its thread's rows, which includes every invalid index.
template <typename TI, typename TL, typename TOut>
bool grouped_pass(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                  const RowWriter<TOut>& w, int nt, int64_t* bad_label_out) {
  const int64_t M = a.m, N = a.n, C = a.c;
  const bool soft = a.mode == AggregateMode::kSoft;
  const bool counts = a.mode == AggregateMode::kCounts;
  // Split points at input boundaries and the rows each thread owns (monotone, in [0, N]).
  std::vector<int64_t> first(nt + 1), row(nt + 1);
  for (int t = 0; t <= nt; ++t) {
    int64_t i = t == 0 ? 0 : (t == nt ? M : M * t / nt);
    while (i > 0 && i < M && index[i] == index[i - 1]) ++i;
    first[t] = std::max(i, t > 0 ? first[t - 1] : int64_t{0});
  }
  row[0] = 0;
  for (int t = 1; t < nt; ++t) {
    const int64_t r = first[t] < M ? static_cast<int64_t>(index[first[t]]) : N;
    row[t] = std::min(N, std::max(row[t - 1], r));
  }
  row[nt] = N;
  int violation = 0;
  int64_t bad_label = M;
#pragma omp parallel for schedule(static, 1) num_threads(nt) reduction(| : violation) \
    reduction(min : bad_label)
  for (int t = 0; t < nt; ++t) {
    const int64_t r0 = row[t], r1 = row[t + 1];
    std::vector<int64_t> acc(static_cast<size_t>(C), 0);
    int64_t cur = -1;        // row being summed (-1: none yet)
    int64_t next = r0;       // first row not yet written
    for (int64_t i = first[t]; i < first[t + 1]; ++i) {
      const int64_t r = static_cast<int64_t>(index[i]);
      if (r != cur || i == first[t]) {  // the first answer too: its index may be -1
        if (r < next || r >= r1) {  // out of order, or not this thread's row
          violation = 1;
          break;
        }
        if (cur >= 0) {
          w.row(cur, acc.data());
          std::fill(acc.begin(), acc.end(), 0);
        }
        w.zeros(cur >= 0 ? cur + 1 : next, r);
        cur = r;
        next = r + 1;
      }
      if (soft) {
        const float* p = a.values + i * C;
        for (int64_t j = 0; j < C; ++j) acc[j] += fixed_point_quantize(p[j], scale);
        continue;
      }
      const int64_t l = static_cast<int64_t>(labels[i]);
      if (l < 0 || l >= C) {
        if (i < bad_label) bad_label = i;
        continue;
      }
      acc[l] += counts ? 1 : fixed_point_quantize(a.values[i], scale);
    }
    if (!violation) {
      if (cur >= 0) w.row(cur, acc.data());
      w.zeros(next, r1);
    }
  }
  *bad_label_out = bad_label == M ? -1 : bad_label;
  return violation == 0;
}

// The general path: any order, relaxed atomics on an integer table.
template <typename TI, typename TL, typename TAcc>
int64_t atomic_pass(const AggregateArgs& a, const TI* index, const TL* labels, TAcc* acc,
                    double scale, int nt) {
  const int64_t M = a.m, C = a.c, cells = a.n * a.c;
  const bool soft = a.mode == AggregateMode::kSoft;
  const bool counts = a.mode == AggregateMode::kCounts;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t j = 0; j < cells; ++j) acc[j] = TAcc{0};
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  int64_t bad_label = M;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : bad_label)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t hi = std::min(M, (ch + 1) * kChunk);
    for (int64_t i = ch * kChunk; i < hi; ++i) {
      TAcc* r = acc + static_cast<int64_t>(index[i]) * C;
      if (soft) {
        const float* p = a.values + i * C;
        for (int64_t j = 0; j < C; ++j)
          add_atomic(r + j, static_cast<TAcc>(fixed_point_quantize(p[j], scale)));
        continue;
      }
      const int64_t l = static_cast<int64_t>(labels[i]);
      if (l < 0 || l >= C) {
        if (i < bad_label) bad_label = i;
        continue;
      }
      add_atomic(r + l, counts ? TAcc{1} : static_cast<TAcc>(fixed_point_quantize(a.values[i], scale)));
    }
  }
  return bad_label == M ? -1 : bad_label;
}

// The partitioned path for unordered answers (counts and weighted votes): a
// radix partition of the answers by blocks of output rows small enough to stay
// in L2 (pass A counts answers per block and thread, pass B scatters each
// answer's cell -- and weight -- into its block), then every block
// is summed in a thread-local table with plain adds and written out once.
// Random updates thus hit cache instead of memory, with no atomics.
// Writes nothing when an index is invalid (st->bad_index names the first).
// check_values: the weights have not been scanned yet, so pass B checks each
// weight as it copies it (a bad one: nothing written, st->bad_value names the
// first) and finds their maximum, which fixes the fixed-point scale.
template <typename TCell, typename TI, typename TL, typename TOut>
void partitioned_pass(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                      RowWriter<TOut> w, bool check_values, int nt, int shift,
                      AggregateStatus* st) {
  const int64_t M = a.m, N = a.n, C = a.c;
  const bool counts = a.mode == AggregateMode::kCounts;
  const int64_t blocks = (N >> shift) + 1;
  std::vector<int64_t> first(nt + 1);
  for (int t = 0; t <= nt; ++t) first[t] = M * t / nt;
  std::vector<int64_t> hist(static_cast<size_t>(nt * blocks), 0);
  int64_t bad_index = M;
#pragma omp parallel for schedule(static, 1) num_threads(nt) reduction(min : bad_index)
  for (int t = 0; t < nt; ++t) {
    int64_t* h = hist.data() + t * blocks;
    for (int64_t i = first[t]; i < first[t + 1]; ++i) {
      const int64_t r = static_cast<int64_t>(index[i]);
      if (r < 0 || r >= N) {
        if (i < bad_index) bad_index = i;
        continue;
      }
      ++h[r >> shift];
    }
  }
  if (bad_index < M) {
    st->bad_index = bad_index;
    return;
  }
  // Exclusive prefix sums, block-major: block b of thread t starts at pos[t][b].
  std::vector<int64_t> pos(hist.size()), block_start(static_cast<size_t>(blocks + 1));
  int64_t running = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    block_start[b] = running;
    for (int t = 0; t < nt; ++t) {
      pos[t * blocks + b] = running;
      running += hist[t * blocks + b];
    }
  }
  block_start[blocks] = running;
  // the slot of an answer with an invalid label (cells of a block stay below it)
  constexpr TCell kSkip = std::numeric_limits<TCell>::max();
  std::unique_ptr<TCell[]> cells(new TCell[static_cast<size_t>(M)]);
  // Weights travel as float32 (half the traffic of quantised int64) and are
  // quantised where they are summed; quantisation is per weight, so the sums agree.
  std::unique_ptr<float[]> wv(counts ? nullptr : new float[static_cast<size_t>(M)]);
  int64_t bad_label = M, bad_value = M;
  float max_value = 0.0f;
#pragma omp parallel for schedule(static, 1) num_threads(nt) reduction(min : bad_label, bad_value) \
    reduction(max : max_value)
  for (int t = 0; t < nt; ++t) {
    int64_t* p = pos.data() + t * blocks;
    for (int64_t i = first[t]; i < first[t + 1]; ++i) {
      const int64_t r = static_cast<int64_t>(index[i]);
      const int64_t l = static_cast<int64_t>(labels[i]);
      const int64_t slot = p[r >> shift]++;
      if (!counts) {
        const float v = a.values[i];
        wv[slot] = v;
        if (check_values) {
          if (!legal_weight(v) && i < bad_value) bad_value = i;
          max_value = std::max(max_value, v);  // used only when every weight is legal
        }
      }
      if (l < 0 || l >= C) {
        if (i < bad_label) bad_label = i;
        cells[slot] = kSkip;
        continue;
      }
      cells[slot] = static_cast<TCell>((r & ((int64_t{1} << shift) - 1)) * C + l);
    }
  }
  if (check_values) {
    if (bad_value < M) {
      st->bad_value = bad_value;  // reported before any label error
      return;
    }
    const int k = fixed_point_shift(static_cast<double>(max_value), M);
    scale = std::ldexp(1.0, k);
    w.inv_scale = std::ldexp(1.0, -k);
  }
  const int64_t block_cells = (int64_t{1} << shift) * C;
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> acc(static_cast<size_t>(block_cells));
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b << shift;
      const int64_t r1 = std::min(N, r0 + (int64_t{1} << shift));
      if (r1 <= r0) continue;
      std::fill(acc.begin(), acc.begin() + (r1 - r0) * C, 0);
      for (int64_t j = block_start[b]; j < block_start[b + 1]; ++j) {
        const TCell cell = cells[j];
        if (cell == kSkip) continue;
        acc[cell] += counts ? 1 : fixed_point_quantize(wv[j], scale);
      }
      for (int64_t r = r0; r < r1; ++r) w.row(r, acc.data() + (r - r0) * C);
    }
  }
  st->bad_label = bad_label == M ? -1 : bad_label;
}

// Rows per partition block (2^shift): as many as keep the block's table in L2
// (kBlockBytes), fewer blocks meaning fewer scatter streams; cells travel as
// 16-bit ids when a block has fewer than 2^16 - 1 cells (half the traffic).
template <typename TI, typename TL, typename TOut>
void partitioned(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                 const RowWriter<TOut>& w, bool check_values, int nt, AggregateStatus* st) {
  constexpr int64_t kBlockBytes = 512 * 1024;
  const int64_t C = a.c, N = a.n;
  int shift = 0;
  while ((int64_t{2} << shift) * C * 8 <= kBlockBytes && (int64_t{1} << shift) < N) ++shift;
  int shift16 = 0;
  while ((int64_t{2} << shift16) * C < 0xffff && (int64_t{2} << shift16) * C * 8 <= kBlockBytes &&
         (int64_t{1} << shift16) < N)
    ++shift16;
  if ((int64_t{1} << shift16) * C < 0xffff && shift16 + 2 >= shift)
    partitioned_pass<uint16_t>(a, index, labels, scale, w, check_values, nt, shift16, st);
  else
    partitioned_pass<uint32_t>(a, index, labels, scale, w, check_values, nt, shift, st);
}

template <typename TI, typename TL, typename TOut>
AggregateStatus run(const AggregateArgs& a, int nt) {
  const TI* index = static_cast<const TI*>(a.index);
  const TL* labels = static_cast<const TL*>(a.labels);
  const int64_t M = a.m, N = a.n, C = a.c;
  const bool counts = a.mode == AggregateMode::kCounts;
  AggregateStatus st;
  // The partition needs cell ids below 2^32 within a block.
  const bool partition =
      a.mode != AggregateMode::kSoft && M >= (int64_t{1} << 16) && C < (int64_t{1} << 24);
  // Weighted votes whose index is visibly unordered go straight to the
  // partition, which checks the weights on its way (one pass over them fewer).
  const bool unordered = partition && !counts && !prefix_sorted(index, M);
  float max_value = 0.0f;
  if (!counts && !unordered) {
    const int64_t count = a.mode == AggregateMode::kSoft ? M * C : M;
    scan_values(a.values, count, nt, &st.bad_value, &max_value);
    if (st.bad_value >= 0) {
      st.bad_index = scan_index(index, M, N, nt);  // an index error is reported first
      return st;
    }
  }
  const int k = counts ? 0 : fixed_point_shift(static_cast<double>(max_value), M);
  const double scale = std::ldexp(1.0, k);
  const RowWriter<TOut> writer{static_cast<TOut*>(a.out), C, std::ldexp(1.0, -k)};
  advise_huge_pages(a.out, static_cast<size_t>(N * C) * sizeof(TOut));
  if (!unordered &&
      grouped_pass<TI, TL, TOut>(a, index, labels, scale, writer, nt, &st.bad_label)) {
    st.sorted = true;
    return st;
  }
  if (partition) {
    // On an invalid index (or weight) it writes nothing and st names the first one.
    partitioned<TI, TL, TOut>(a, index, labels, scale, writer, unordered, nt, &st);
    return st;
  }
  st.bad_index = scan_index(index, M, N, nt);
  if (st.bad_index >= 0) return st;
  if constexpr (std::is_same_v<TOut, float>) {
    std::unique_ptr<int64_t[]> acc(new int64_t[static_cast<size_t>(N * C)]);
    st.bad_label = atomic_pass<TI, TL, int64_t>(a, index, labels, acc.get(), scale, nt);
    float* out = static_cast<float*>(a.out);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t j = 0; j < N * C; ++j) out[j] = fixed_point_value(acc[j], writer.inv_scale);
  } else {
    st.bad_label = atomic_pass<TI, TL, TOut>(a, index, labels, static_cast<TOut*>(a.out), scale, nt);
  }
  return st;
}

template <typename TI, typename TL>
AggregateStatus dispatch_out(const AggregateArgs& a, int nt) {
  if (a.mode != AggregateMode::kCounts) return run<TI, TL, float>(a, nt);
  if (a.count_type == IntType::kInt32) return run<TI, TL, int32_t>(a, nt);
  return run<TI, TL, int64_t>(a, nt);
}

template <typename TI>
AggregateStatus dispatch_labels(const AggregateArgs& a, int nt) {
  if (a.mode == AggregateMode::kSoft || a.label_type == IntType::kInt64)
    return dispatch_out<TI, int64_t>(a, nt);
  return dispatch_out<TI, int32_t>(a, nt);
}

}  // namespace

AggregateStatus aggregate(const AggregateArgs& a, int num_threads) {
  if (num_threads < 1) num_threads = 1;
  if (a.index_type == IntType::kInt64) return dispatch_labels<int64_t>(a, num_threads);
  return dispatch_labels<int32_t>(a, num_threads);
}

}  // namespace noiseforge::cpu
