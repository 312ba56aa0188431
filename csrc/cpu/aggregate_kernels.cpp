// C++ backend of the label-aggregation ops (vote histograms, weighted and
// soft-label sums), OpenMP-parallel and deterministic.
//
// Weights and probabilities are read once first: they must be finite and >= 0,
// and their maximum fixes the fixed-point shift.
// Grouped path (answers of an input adjacent, as LDPKiT produces them): the
// answers are cut into one range per thread at input boundaries; each thread
// owns a disjoint block of output rows and streams its answers, summing a tile
// of rows at a time in a small local table and writing every output row
// exactly once (no zeroing pass, no atomics). An answer out of order or
// outside the thread's rows aborts this path.
// Partitioned path (any order): the answers radix-sorted by blocks of rows,
// each block summed in cache and written once (see partitioned_pass).
// General path (past the partition's limits): validate the index, zero the
// table, add with relaxed atomics (integers: the result does not depend on the
// order), convert sums. Labels are checked inline in every path.
// Fused top-1 (a Top1Writer instead of a RowWriter): the same paths write each
// row's winner instead of the row.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
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

// The leaf loops -- the bit scan of a chunk of weights, the quantised rows of
// an input's soft labels, fixed-point sums to float32 and the soft-label
// segments of pass C -- are compiled per instruction set (aggregate_loops.cpp)
// and chosen once with the other kernels (dispatch.cpp).
const AggregateLoopKernels& kLoops = aggregate_loop_kernels();

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
    if (kLoops.chunk_max_bits(values + lo, hi - lo, &m)) {
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
  static constexpr bool kFused = false;
  TOut* out;
  int64_t c;
  double inv_scale;
  // rows [r0, r1) from the accumulators acc[(r - r0) * c + j]
  void rows(int64_t r0, int64_t r1, const int64_t* __restrict acc) const {
    TOut* __restrict o = out + r0 * c;
    const int64_t cells = (r1 - r0) * c;
    if constexpr (std::is_same_v<TOut, float>) {
      kLoops.sums_to_float(acc, o, cells, inv_scale);
    } else {
      for (int64_t j = 0; j < cells; ++j) o[j] = static_cast<TOut>(acc[j]);
    }
  }
  void zeros(int64_t r0, int64_t r1) const {
    if (r1 > r0) std::fill(out + r0 * c, out + r1 * c, TOut{0});
  }
};

// The fused aggregate: writes each row's winner instead of the row -- the
// label (the lowest class id among the largest values; -1 for an empty row),
// the winner's value, its share of the row total and its margin over the
// runner-up (the second largest value, equal to the winner on a tie), both as
// fractions of the total. Values are the row's counts or its fixed-point sums
// read as float32; a sum row's total is float32(hi * 2^(31-k) + lo * 2^-k) in
// double, hi and lo being the exact sums of the cells' bits above and below
// bit 31 (a row of soft labels can total more than int64 holds). The torch
// backend (top1_from_sums) computes the same bits.
template <bool kSums>
struct Top1Writer {
  static constexpr bool kFused = true;
  using V = std::conditional_t<kSums, float, int64_t>;
  int64_t* label;
  V* top;
  float* share;
  float* margin;
  int64_t c;
  double inv_scale;

  void rows(int64_t r0, int64_t r1, const int64_t* __restrict acc) const {
    for (int64_t r = r0; r < r1; ++r) row(r, acc + (r - r0) * c);
  }
  void zeros(int64_t r0, int64_t r1) const {
    for (int64_t r = r0; r < r1; ++r) empty(r, V{0});
  }

  // Row r from its touched cells only -- the distinct classes l[0..n) of the
  // row a, in any order -- every other cell being 0: the same result as row().
  void row_sparse(int64_t r, const int64_t* a, const int64_t* l, int64_t n) const {
    if (n == 0) return empty(r, V{0});
    int64_t arg = l[0];
    V best = value(a, arg);
    for (int64_t k = 1; k < n; ++k) {
      const V v = value(a, l[k]);
      if (v > best || (v == best && l[k] < arg)) {
        best = v;
        arg = l[k];
      }
    }
    if (!(best > V{0})) arg = 0;  // every cell is 0: the lowest class wins the tie
    V second = n < c ? V{0} : std::numeric_limits<V>::lowest();
    for (int64_t k = 0; k < n; ++k)
      if (l[k] != arg) second = std::max(second, value(a, l[k]));
    if (c == 1) second = V{0};
    finish(r, best, second, arg, total_of(a, l, n));
  }

 private:
  V value(const int64_t* a, int64_t j) const {
    if constexpr (kSums)
      return fixed_point_value(a[j], inv_scale);
    else
      return a[j];
  }
  void empty(int64_t r, V best) const {
    label[r] = -1;
    top[r] = best;
    share[r] = 0.0f;
    margin[r] = 0.0f;
  }
  void row(int64_t r, const int64_t* a) const {
    V best = value(a, 0);
    V second = c > 1 ? std::numeric_limits<V>::lowest() : V{0};
    int64_t arg = 0;
    for (int64_t j = 1; j < c; ++j) {
      const V v = value(a, j);
      if (v > best) {
        second = best;
        best = v;
        arg = j;
      } else if (v > second) {
        second = v;
      }
    }
    finish(r, best, second, arg, total_of(a, nullptr, c));
  }
  // The row total (see above) of cells l[0..n), or of cells 0..n-1 when l is null.
  float total_of(const int64_t* a, const int64_t* l, int64_t n) const {
    if constexpr (kSums) {
      int64_t hi = 0, lo = 0;
      for (int64_t k = 0; k < n; ++k) {
        const int64_t v = a[l != nullptr ? l[k] : k];
        hi += v >> 31;
        lo += v & 0x7fffffff;
      }
      return static_cast<float>(static_cast<double>(hi) * (inv_scale * 2147483648.0) +
                                static_cast<double>(lo) * inv_scale);
    } else {
      int64_t t = 0;
      for (int64_t k = 0; k < n; ++k) t += a[l != nullptr ? l[k] : k];
      return static_cast<float>(t);
    }
  }
  void finish(int64_t r, V best, V second, int64_t arg, float total) const {
    if (!(total > 0.0f)) return empty(r, best);
    label[r] = arg;
    top[r] = best;
    share[r] = static_cast<float>(best) / total;
    margin[r] = static_cast<float>(best - second) / total;
  }
};

// Accumulator cells of one tile of rows (int64): small enough for L1.
constexpr int64_t kTileCells = 2048;

// From this many classes on, the fused top-1 of hard answers reduces only the
// cells that answers touched (a row costs its answers, not C).
constexpr int64_t kSparseClasses = 512;

template <typename W>
constexpr bool sparse_top1(AggregateMode mode, int64_t C) {
  return W::kFused && mode != AggregateMode::kSoft && C >= kSparseClasses;
}

// f(std::integral_constant<AggregateMode, mode>{}): a run-time mode as a template argument.
template <typename F>
decltype(auto) with_mode(AggregateMode mode, F&& f) {
  switch (mode) {
    case AggregateMode::kCounts:
      return f(std::integral_constant<AggregateMode, AggregateMode::kCounts>{});
    case AggregateMode::kWeighted:
      return f(std::integral_constant<AggregateMode, AggregateMode::kWeighted>{});
    default:
      return f(std::integral_constant<AggregateMode, AggregateMode::kSoft>{});
  }
}

// Marks of the touched cells of a table region, and their list: a cell enters
// the list once, however many answers add to it.
struct Touched {
  std::vector<uint8_t> mark;
  std::vector<int64_t> cells;
  explicit Touched(int64_t n) : mark(static_cast<size_t>(n), 0) { cells.reserve(256); }
  void add(int64_t cell) {
    if (mark[cell]) return;
    mark[cell] = 1;
    cells.push_back(cell);
  }
  // zero the touched cells of acc and forget them
  void reset(int64_t* acc) {
    for (const int64_t cell : cells) {
      acc[cell] = 0;
      mark[cell] = 0;
    }
    cells.clear();
  }
};

// grouped_range for the fused top-1 of hard answers with many classes: one row
// at a time, only its touched cells summed, reduced and zeroed.
template <AggregateMode kMode, typename TI, typename TL, typename W>
bool grouped_range_sparse(const TI* __restrict index, const TL* __restrict labels,
                          const float* __restrict values, int64_t f0, int64_t f1, int64_t r0,
                          int64_t r1, int64_t C, double scale, const W& w, int64_t* bad_label) {
  std::vector<int64_t> acc(static_cast<size_t>(C), 0);
  Touched touched(C);
  int64_t next = r0;  // first row not yet written
  int64_t bad = *bad_label;
  int64_t i = f0;
  while (i < f1) {
    const int64_t r = static_cast<int64_t>(index[i]);
    if (r < next || r >= r1) return false;
    w.zeros(next, r);
    for (; i < f1 && static_cast<int64_t>(index[i]) == r; ++i) {
      const int64_t l = static_cast<int64_t>(labels[i]);
      if (static_cast<uint64_t>(l) >= static_cast<uint64_t>(C)) {
        bad = std::min(bad, i);
        continue;
      }
      touched.add(l);
      acc[l] += kMode == AggregateMode::kCounts ? 1 : fixed_point_quantize(values[i], scale);
    }
    w.row_sparse(r, acc.data(), touched.cells.data(), static_cast<int64_t>(touched.cells.size()));
    touched.reset(acc.data());
    next = r + 1;
  }
  w.zeros(next, r1);
  *bad_label = bad;
  return true;
}

// One thread's share of the grouped path: answers [f0, f1), output rows [r0, r1).
// The rows are summed a tile at a time (up to kTileCells cells) in a local
// int64 table -- zeroed, filled by the answers whose rows fall in the tile,
// written out once -- so the answer loop has no per-row work. Rows without
// answers between tiles are zeroed directly. Returns false at the first answer
// that is out of order or outside [r0, r1) (every invalid index is one of those).
template <AggregateMode kMode, typename TI, typename TL, typename W>
bool grouped_range(const TI* __restrict index, const TL* __restrict labels,
                   const float* __restrict values, int64_t f0, int64_t f1, int64_t r0, int64_t r1,
                   int64_t C, double scale, const W& w, int64_t* bad_label) {
  if (f0 == f1) {  // no answers: no table needed
    w.zeros(r0, r1);
    return true;
  }
  if constexpr (W::kFused && kMode != AggregateMode::kSoft) {  // (only a Top1Writer has row_sparse)
    if (sparse_top1<W>(kMode, C))
      return grouped_range_sparse<kMode>(index, labels, values, f0, f1, r0, r1, C, scale, w,
                                         bad_label);
  }
  const int64_t tile_rows = std::max<int64_t>(1, kTileCells / C);
  std::unique_ptr<int64_t[]> tile(new int64_t[static_cast<size_t>(tile_rows * C)]);
  int64_t* __restrict acc = tile.get();
  int64_t next = r0;  // first row not yet written
  int64_t bad = *bad_label;
  int64_t i = f0;
  while (i < f1) {
    const int64_t ra = static_cast<int64_t>(index[i]);
    if (ra < next || ra >= r1) return false;
    w.zeros(next, ra);
    const int64_t rb = std::min(r1, ra + tile_rows);
    std::fill(acc, acc + (rb - ra) * C, int64_t{0});
    int64_t prev = ra;
    for (; i < f1; ++i) {
      const int64_t r = static_cast<int64_t>(index[i]);
      if (r >= rb) break;
      if (r < prev) return false;
      prev = r;
      int64_t* __restrict cell = acc + (r - ra) * C;
      if constexpr (kMode == AggregateMode::kSoft) {
        int64_t end = i + 1;  // this input's run of answers
        while (end < f1 && static_cast<int64_t>(index[end]) == r) ++end;
        kLoops.add_quantized_rows(cell, values + i * C, end - i, C, scale);
        i = end - 1;
      } else {
        const int64_t l = static_cast<int64_t>(labels[i]);
        if (static_cast<uint64_t>(l) >= static_cast<uint64_t>(C)) {
          bad = std::min(bad, i);
          continue;
        }
        if constexpr (kMode == AggregateMode::kCounts)
          cell[l] += 1;
        else
          cell[l] += fixed_point_quantize(values[i], scale);
      }
    }
    w.rows(ra, prev + 1, acc);
    next = prev + 1;
  }
  w.zeros(next, r1);
  *bad_label = bad;
  return true;
}

// The grouped path; returns false (output incomplete) when some answer is out of
// order or outside its thread's rows, which includes every invalid index.
template <typename TI, typename TL, typename W>
bool grouped_pass(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                  const W& w, int nt, int64_t* bad_label_out) {
  const int64_t M = a.m, N = a.n, C = a.c;
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
  std::atomic<bool> out_of_memory{false};
#pragma omp parallel for schedule(static, 1) num_threads(nt) reduction(| : violation) \
    reduction(min : bad_label)
  for (int t = 0; t < nt; ++t) {
    int64_t bad = M;
    bool ok = false;
    try {  // an exception must not leave an OpenMP region: a failed allocation is rethrown below
      ok = with_mode(a.mode, [&](auto mode) {
        return grouped_range<decltype(mode)::value>(index, labels, a.values, first[t],
                                                    first[t + 1], row[t], row[t + 1], C, scale,
                                                    w, &bad);
      });
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
    if (!ok) violation = 1;
    bad_label = std::min(bad_label, bad);
  }
  if (out_of_memory) throw std::bad_alloc();
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

// Pass A of the partition: answers per row block in [i0, i1) added to h (one
// counter per block); returns the first invalid index or i1.
template <typename TI>
int64_t count_blocks(const TI* __restrict index, int64_t i0, int64_t i1, int64_t N, int shift,
                     int64_t* __restrict h) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t r = static_cast<int64_t>(index[i]);
    if (static_cast<uint64_t>(r) >= static_cast<uint64_t>(N)) return i;
    ++h[r >> shift];
  }
  return i1;
}

// What pass B found in one thread's answers.
struct ScatterFound {
  int64_t bad_label, bad_value;  // first offending answer, or the range's end
  float max_value;               // largest weight (meaningful when all are legal)
};

// Pass B: each answer's cell within its block -- and its weight, or for soft
// labels its position (the probability row is read where it is summed) -- go
// to the block's next slot (p: the next slot of every block). A soft-label cell
// is the first cell of the answer's row. kCheck: the weights have not been
// scanned, check each one and find the largest. An answer with a bad label
// gets cell 0: its error is raised and the sums are never read.
template <AggregateMode kMode, bool kCheck, typename TCell, typename TI, typename TL>
ScatterFound scatter_answers(const TI* __restrict index, const TL* __restrict labels,
                             const float* __restrict values, int64_t i0, int64_t i1, int64_t C,
                             int shift, int64_t* __restrict p, TCell* __restrict cells,
                             float* __restrict wv, uint32_t* __restrict ids) {
  ScatterFound f{i1, i1, 0.0f};
  const int64_t row_mask = (int64_t{1} << shift) - 1;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t r = static_cast<int64_t>(index[i]);
    const int64_t slot = p[r >> shift]++;
    if constexpr (kMode == AggregateMode::kSoft) {
      ids[slot] = static_cast<uint32_t>(i);
      cells[slot] = static_cast<TCell>((r & row_mask) * C);
      continue;
    }
    int64_t l = static_cast<int64_t>(labels[i]);
    if constexpr (kMode == AggregateMode::kWeighted) {
      const float v = values[i];
      wv[slot] = v;
      if (kCheck) {
        if (!legal_weight(v) && i < f.bad_value) f.bad_value = i;
        f.max_value = std::max(f.max_value, v);
      }
    }
    if (static_cast<uint64_t>(l) >= static_cast<uint64_t>(C)) {
      if (i < f.bad_label) f.bad_label = i;
      l = 0;
    }
    cells[slot] = static_cast<TCell>((r & row_mask) * C + l);
  }
  return f;
}

// Pass C for soft labels: the probability rows of the answers in slots
// [j0, j1) added to their rows of the block's table acc (aggregate_loops.cpp).
inline void sum_soft_segment(const uint16_t* cells, const uint32_t* ids, const float* values,
                             int64_t C, int64_t j0, int64_t j1, double scale, int64_t* acc) {
  kLoops.sum_soft_segment_u16(cells, ids, values, C, j0, j1, scale, acc);
}
inline void sum_soft_segment(const uint32_t* cells, const uint32_t* ids, const float* values,
                             int64_t C, int64_t j0, int64_t j1, double scale, int64_t* acc) {
  kLoops.sum_soft_segment_u32(cells, ids, values, C, j0, j1, scale, acc);
}

// Pass C: the answers in slots [j0, j1) (all of one block) added to its table acc.
template <AggregateMode kMode, typename TCell>
void sum_segment(const TCell* __restrict cells, const float* __restrict values,
                 const float* __restrict wv, const uint32_t* __restrict ids, int64_t C,
                 int64_t j0, int64_t j1, double scale, int64_t* __restrict acc) {
  if constexpr (kMode == AggregateMode::kSoft) {
    sum_soft_segment(cells, ids, values, C, j0, j1, scale, acc);
    return;
  }
  for (int64_t j = j0; j < j1; ++j) {
    if constexpr (kMode == AggregateMode::kCounts)
      acc[cells[j]] += 1;
    else
      acc[cells[j]] += fixed_point_quantize(wv[j], scale);
  }
}

// Answers per partition chunk: a chunk's index, labels and scattered cells
// stay in L2 between passes A and B.
constexpr int64_t kPartChunk = int64_t{1} << 19;

// The partitioned path for unordered answers (counts, weighted votes, soft labels): a
// radix partition of the answers by blocks of output rows small enough to stay
// in L2, then every block is summed in a thread-local table with plain adds and
// written out once. Random updates thus hit cache instead of memory, with no
// atomics. The partition works on chunks of kPartChunk answers, each in place
// (its answers' cells -- and weights -- reordered by block within the chunk's
// own range of the scratch arrays): pass A counts the chunk's answers per block,
// pass B scatters them while the chunk is still in cache; the summing pass reads
// block b's segment of every chunk.
// Writes nothing when an index is invalid (st->bad_index names the first).
// kCheck: the weights have not been scanned yet, so pass B checks each
// weight as it copies it (a bad one: nothing written, st->bad_value names the
// first) and finds their maximum, which fixes the fixed-point scale.
template <AggregateMode kMode, bool kCheck, typename TCell, typename TI, typename TL, typename W>
void partitioned_pass(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                      W w, int nt, int shift, AggregateStatus* st) {
  const int64_t M = a.m, N = a.n, C = a.c;
  const int64_t blocks = (N >> shift) + 1;
  // at most kPartChunk answers a chunk, and a chunk for every thread
  const int64_t chunk = std::min(kPartChunk, std::max<int64_t>(4096, (M + nt - 1) / nt));
  const int64_t chunks = (M + chunk - 1) / chunk;
  // seg[ch * (blocks + 1) + b]: first slot of block b in chunk ch; [... + blocks]: chunk end
  std::vector<int64_t> seg(static_cast<size_t>(chunks * (blocks + 1)));
  ScratchArray<TCell> cells(static_cast<size_t>(M));
  // Weights travel as float32 (half the traffic of quantised int64) and are
  // quantised where they are summed; quantisation is per weight, so the sums agree.
  ScratchArray<float> wv(kMode == AggregateMode::kWeighted ? static_cast<size_t>(M) : 0);
  ScratchArray<uint32_t> ids(kMode == AggregateMode::kSoft ? static_cast<size_t>(M) : 0);
  int64_t bad_index = M, bad_label = M, bad_value = M;
  float max_value = 0.0f;
  // Exceptions must not leave an OpenMP region (and every thread must reach
  // its worksharing loop): a failed allocation is noted and rethrown after.
  std::atomic<bool> out_of_memory{false};
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> next;
    try {
      next.resize(static_cast<size_t>(blocks));
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
    // contiguous chunks per thread: after an invalid index the thread's later
    // chunks cannot hold an earlier one (the private minimum starts at INT64_MAX)
#pragma omp for schedule(static) reduction(min : bad_index, bad_label, bad_value) \
    reduction(max : max_value)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      if (bad_index < M || out_of_memory) continue;
      const int64_t i0 = ch * chunk, i1 = std::min(M, i0 + chunk);
      int64_t* s = seg.data() + ch * (blocks + 1);
      std::fill(s, s + blocks + 1, int64_t{0});
      // block b's count goes to s[b + 1]
      const int64_t bad = count_blocks(index, i0, i1, N, shift, s + 1);
      if (bad < i1) {
        bad_index = std::min(bad_index, bad);
        continue;
      }
      s[0] = i0;
      for (int64_t b = 1; b <= blocks; ++b) s[b] += s[b - 1];
      std::copy(s, s + blocks, next.begin());
      const ScatterFound f = scatter_answers<kMode, kCheck>(
          index, labels, a.values, i0, i1, C, shift, next.data(), cells.get(), wv.get(), ids.get());
      if (f.bad_label < i1) bad_label = std::min(bad_label, f.bad_label);
      if (f.bad_value < i1) bad_value = std::min(bad_value, f.bad_value);
      max_value = std::max(max_value, f.max_value);
    }
  }
  if (out_of_memory) throw std::bad_alloc();
  if (bad_index < M) {
    st->bad_index = bad_index;
    return;
  }
  if (kCheck && bad_value < M) {
    st->bad_value = bad_value;  // reported before any label error
    return;
  }
  if (bad_label < M) {
    st->bad_label = bad_label;
    return;
  }
  if (kCheck) {
    const int k = fixed_point_shift(static_cast<double>(max_value), M);
    scale = std::ldexp(1.0, k);
    w.inv_scale = std::ldexp(1.0, -k);
  }
  // the fused top-1 of hard answers with many classes reduces touched cells only
  const bool sparse = sparse_top1<W>(kMode, C);
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> acc;
    std::unique_ptr<Touched> touched;
    std::vector<int64_t> classes;  // the sparse path: one row's touched classes
    try {
      acc.assign(static_cast<size_t>((int64_t{1} << shift) * C), 0);
      if (sparse) touched.reset(new Touched((int64_t{1} << shift) * C));
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
    // block b's answers (its segment of every chunk) summed and its rows written
    auto sum_block = [&](int64_t b) {
      const int64_t r0 = b << shift;
      const int64_t r1 = std::min(N, r0 + (int64_t{1} << shift));
      if (r1 <= r0) return;
      if (!sparse) std::fill(acc.begin(), acc.begin() + (r1 - r0) * C, int64_t{0});
      for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t* s = seg.data() + ch * (blocks + 1);
        sum_segment<kMode>(cells.get(), a.values, wv.get(), ids.get(), C, s[b], s[b + 1], scale,
                           acc.data());
        if (sparse)
          for (int64_t j = s[b]; j < s[b + 1]; ++j)
            touched->add(static_cast<int64_t>(cells.get()[j]));
      }
      if (!sparse) {
        w.rows(r0, r1, acc.data());
        return;
      }
      if constexpr (W::kFused) {
        // touched cells sorted: each row's classes are one run, in class order
        std::vector<int64_t>& t = touched->cells;
        std::sort(t.begin(), t.end());
        int64_t done = r0;  // rows before it are written
        for (size_t k = 0; k < t.size();) {
          const int64_t row = t[k] / C;
          classes.clear();
          for (; k < t.size() && t[k] / C == row; ++k) classes.push_back(t[k] - row * C);
          w.zeros(done, r0 + row);
          w.row_sparse(r0 + row, acc.data() + row * C, classes.data(),
                       static_cast<int64_t>(classes.size()));
          done = r0 + row + 1;
        }
        w.zeros(done, r1);
        touched->reset(acc.data());
      }
    };
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < blocks; ++b) {
      if (out_of_memory) continue;
      try {
        sum_block(b);
      } catch (const std::bad_alloc&) {
        out_of_memory = true;
      }
    }
  }
  if (out_of_memory) throw std::bad_alloc();
}

template <typename TCell, typename TI, typename TL, typename W>
void partitioned_cells(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                       const W& w, bool check_values, int nt, int shift,
                       AggregateStatus* st) {
  // only unscanned weights are checked in the partition
  with_mode(a.mode, [&](auto mode) {
    constexpr AggregateMode kMode = decltype(mode)::value;
    if (kMode == AggregateMode::kWeighted && check_values)
      partitioned_pass<kMode, true, TCell>(a, index, labels, scale, w, nt, shift, st);
    else
      partitioned_pass<kMode, false, TCell>(a, index, labels, scale, w, nt, shift, st);
  });
}

// Rows per partition block (2^shift): as many as keep the block's table in L2
// (kBlockBytes), fewer blocks meaning fewer scatter streams; cells travel as
// 16-bit ids when a block has fewer than 2^16 - 1 cells (half the traffic).
template <typename TI, typename TL, typename W>
void partitioned(const AggregateArgs& a, const TI* index, const TL* labels, double scale,
                 const W& w, bool check_values, int nt, AggregateStatus* st) {
  constexpr int64_t kBlockBytes = 512 * 1024;
  const int64_t C = a.c, N = a.n;
  int shift = 0;
  while ((int64_t{2} << shift) * C * 8 <= kBlockBytes && (int64_t{1} << shift) < N) ++shift;
  // The sparse top-1 only visits touched cells, so its blocks need not fit L2:
  // at most 2^16 of them keeps the per-chunk block offsets small for huge N
  // (cell ids stay below 2^32).
  if (sparse_top1<W>(a.mode, C))
    while ((N >> shift) > (int64_t{1} << 16) && (int64_t{2} << shift) * C < (int64_t{1} << 32))
      ++shift;
  int shift16 = 0;
  while ((int64_t{2} << shift16) * C < 0xffff && (int64_t{2} << shift16) * C * 8 <= kBlockBytes &&
         (int64_t{1} << shift16) < N)
    ++shift16;
  if ((int64_t{1} << shift16) * C < 0xffff && shift16 + 2 >= shift)
    partitioned_cells<uint16_t>(a, index, labels, scale, w, check_values, nt, shift16, st);
  else
    partitioned_cells<uint32_t>(a, index, labels, scale, w, check_values, nt, shift, st);
}

// The writer for a shift k: the table's rows (TOut) or, fused, their winners.
template <typename W>
W make_writer(const AggregateArgs& a, int k) {
  const double inv_scale = std::ldexp(1.0, -k);
  if constexpr (W::kFused) {
    const AggregateTop1& t = *a.top1;
    return W{t.label, static_cast<typename W::V*>(t.top), t.share, t.margin, a.c, inv_scale};
  } else {
    return W{static_cast<decltype(W::out)>(a.out), a.c, inv_scale};
  }
}

template <typename TI, typename TL, typename W>
AggregateStatus run(const AggregateArgs& a, int nt) {
  const TI* index = static_cast<const TI*>(a.index);
  const TL* labels = static_cast<const TL*>(a.labels);
  const int64_t M = a.m, N = a.n, C = a.c;
  const bool counts = a.mode == AggregateMode::kCounts;
  constexpr bool kFused = W::kFused;
  AggregateStatus st;
  // The partition needs cell ids below 2^32 within a block, and for soft
  // labels answer positions below 2^32. For a table it needs enough answers to
  // pay off and (soft labels) rows of at most 4096 classes (at least 16 rows
  // per block, or the scatter fans out too widely); fused, it always runs,
  // since the alternative materialises the whole table (with 2^24 classes or
  // more a block is one row, and its cells are the classes).
  const bool soft = a.mode == AggregateMode::kSoft;
  const bool partition =
      (!soft || M <= int64_t{0xffffffff}) &&
      (kFused ? C < (int64_t{1} << 32)
             : (C < (int64_t{1} << 24) && M >= (int64_t{1} << 16) && (!soft || C <= 4096)));
  // Weighted votes whose index is visibly unordered go straight to the
  // partition, which checks the weights on its way (one pass over them fewer).
  const bool unordered =
      partition && a.mode == AggregateMode::kWeighted && M > 0 && !prefix_sorted(index, M);
  float max_value = 0.0f;
  if (!counts && !unordered) {
    const int64_t count = soft ? M * C : M;
    scan_values(a.values, count, nt, &st.bad_value, &max_value);
    if (st.bad_value >= 0) {
      st.bad_index = scan_index(index, M, N, nt);  // an index error is reported first
      return st;
    }
  }
  const int k = counts ? 0 : fixed_point_shift(static_cast<double>(max_value), M);
  const double scale = std::ldexp(1.0, k);
  const W writer = make_writer<W>(a, k);
  if constexpr (!kFused) advise_huge_pages(a.out, static_cast<size_t>(N * C) * sizeof(*writer.out));
  if (!unordered && grouped_pass<TI, TL, W>(a, index, labels, scale, writer, nt, &st.bad_label)) {
    st.sorted = true;
    return st;
  }
  if (partition) {
    // On an invalid index (or weight) it writes nothing and st names the first one.
    partitioned<TI, TL, W>(a, index, labels, scale, writer, unordered, nt, &st);
    return st;
  }
  st.bad_index = scan_index(index, M, N, nt);
  if (st.bad_index >= 0) return st;
  if constexpr (std::is_same_v<W, RowWriter<int32_t>> || std::is_same_v<W, RowWriter<int64_t>>) {
    st.bad_label = atomic_pass<TI, TL>(a, index, labels, writer.out, scale, nt);
  } else {  // float sums, or (past the partition's limits) the fused winners
    ScratchArray<int64_t> acc(static_cast<size_t>(N * C));
    st.bad_label = atomic_pass<TI, TL, int64_t>(a, index, labels, acc.get(), scale, nt);
    if (st.bad_label >= 0) return st;
    const int64_t chunks = (N + 4095) / 4096;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t ch = 0; ch < chunks; ++ch)
      writer.rows(ch * 4096, std::min(N, (ch + 1) * 4096), acc.get() + ch * 4096 * C);
  }
  return st;
}

template <typename TI, typename TL>
AggregateStatus dispatch_out(const AggregateArgs& a, int nt) {
  if (a.top1 != nullptr) {
    if (a.mode == AggregateMode::kCounts) return run<TI, TL, Top1Writer<false>>(a, nt);
    return run<TI, TL, Top1Writer<true>>(a, nt);
  }
  if (a.mode != AggregateMode::kCounts) return run<TI, TL, RowWriter<float>>(a, nt);
  if (a.count_type == IntType::kInt32) return run<TI, TL, RowWriter<int32_t>>(a, nt);
  return run<TI, TL, RowWriter<int64_t>>(a, nt);
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
