// Deterministic sums of float weights by fixed-point integer accumulation.
//
// The label-aggregation ops promise bit-identical float sums on every run and
// every backend, whatever the order in which answers are added (threads, GPU
// atomics). Each weight w (float32, >= 0) becomes the integer
//   q = rint(w * 2^k)          (exact product in double, round half to even)
// the integers are summed exactly in int64 (any order gives the same sum), and
// the sum S is returned as
//   float32(double(S) * 2^-k)  (two IEEE roundings, the same everywhere).
// The shift k = 62 - e - bitlen(M), with max|w| <= 2^e and M answers, keeps
// every bin below 2^62 + M/2, so nothing overflows; the quantisation error of a
// sum is at most (number of terms) * 2^-(k+1), far below float32 resolution.
#pragma once

#include <cstdint>

#include "noiseforge/philox.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace noiseforge {
inline namespace NF_ISA_TAG {

NF_HD int64_t fixed_point_quantize(float w, double scale) {
#if defined(__CUDA_ARCH__)
  return __double2ll_rn(static_cast<double>(w) * scale);
#else
  return std::llrint(static_cast<double>(w) * scale);
#endif
}

NF_HD float fixed_point_value(int64_t sum, double inv_scale) {
#if defined(__CUDA_ARCH__)
  return __double2float_rn(__ll2double_rn(sum) * inv_scale);
#else
  return static_cast<float>(static_cast<double>(sum) * inv_scale);
#endif
}

#if !defined(__CUDA_ARCH__)
// The shift k for weights with maximum max_abs over m answers (0 when all are 0).
inline int fixed_point_shift(double max_abs, int64_t m) {
  if (max_abs <= 0.0 || m <= 0) return 0;
  int e = 0;
  std::frexp(max_abs, &e);  // max_abs = f * 2^e with f in [0.5, 1): max_abs <= 2^e
  int bits = 0;
  for (uint64_t v = static_cast<uint64_t>(m); v != 0; v >>= 1) ++bits;
  return 62 - e - bits;
}
#endif

}  // namespace NF_ISA_TAG
}  // namespace noiseforge
