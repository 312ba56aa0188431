// The leaf loops of the aggregation kernels (aggregate_kernels.cpp), compiled
// once per instruction set (NF_ISA_NAMESPACE is set by CMake) and chosen at run
// time by dispatch.cpp. Integer work and exact conversions only (and
// -ffp-contract=off), so every variant gives the same bits.
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu_kernels.h"
#include "noiseforge/fixed_point.h"

#ifndef NF_ISA_NAMESPACE
#error "NF_ISA_NAMESPACE must be defined by the build"
#endif

namespace noiseforge::NF_ISA_NAMESPACE {
namespace {

// The largest of n values and whether all are legal -- when no float mode is in
// play (integer work on the bit patterns, which the compiler vectorises:
// non-negative finite floats order like their bits read as int32, -0 taken as
// +0). false means "search the chunk with legal_weight".
bool chunk_max_bits(const float* v, int64_t n, float* max_out) {
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

// acc[c] += the quantised probs[k * C + c] of n consecutive rows (one input's
// soft labels), vectorised across classes where the CPU converts in SIMD.
void add_quantized_rows(int64_t* __restrict acc, const float* __restrict probs, int64_t n,
                        int64_t C, double scale) {
  for (int64_t k = 0; k < n; ++k)
    for (int64_t c = 0; c < C; ++c) acc[c] += fixed_point_quantize(probs[k * C + c], scale);
}

// Fixed-point sums -> float32 (vectorised int64 -> double conversions where the
// CPU has them; every variant rounds the same way).
void sums_to_float(const int64_t* __restrict acc, float* __restrict out, int64_t n,
                   double inv_scale) {
  for (int64_t j = 0; j < n; ++j) out[j] = fixed_point_value(acc[j], inv_scale);
}

// Pass C for soft labels: the probability rows of the answers in slots
// [j0, j1) added to their rows of the block's table acc. One function per cell
// type (the classes loop vectorised where the CPU converts in SIMD).
template <typename TCell>
__attribute__((always_inline)) inline void soft_segment(const TCell* __restrict cells,
                                                        const uint32_t* __restrict ids,
                                                        const float* __restrict values, int64_t C,
                                                        int64_t j0, int64_t j1, double scale,
                                                        int64_t* __restrict acc) {
  constexpr int64_t kAhead = 64;  // the rows are gathered from anywhere: prefetch them
  for (int64_t j = j0; j < j1; ++j) {
    if (j + kAhead < j1) {
      const float* ahead = values + static_cast<int64_t>(ids[j + kAhead]) * C;
      __builtin_prefetch(ahead);
      __builtin_prefetch(ahead + C - 1);
    }
    int64_t* __restrict row = acc + cells[j];
    const float* __restrict probs = values + static_cast<int64_t>(ids[j]) * C;
    for (int64_t c = 0; c < C; ++c) row[c] += fixed_point_quantize(probs[c], scale);
  }
}

void sum_soft_segment(const uint16_t* cells, const uint32_t* ids, const float* values, int64_t C,
                      int64_t j0, int64_t j1, double scale, int64_t* acc) {
  soft_segment(cells, ids, values, C, j0, j1, scale, acc);
}
void sum_soft_segment(const uint32_t* cells, const uint32_t* ids, const float* values, int64_t C,
                      int64_t j0, int64_t j1, double scale, int64_t* acc) {
  soft_segment(cells, ids, values, C, j0, j1, scale, acc);
}

}  // namespace

extern const cpu::AggregateLoopKernels aggregate_loop_kernels{
    &chunk_max_bits, &add_quantized_rows, &sums_to_float, &sum_soft_segment, &sum_soft_segment};

}  // namespace noiseforge::NF_ISA_NAMESPACE
