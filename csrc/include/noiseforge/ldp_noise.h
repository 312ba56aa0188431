// The fused LDP noise op: the contract for one output element.
//
// Output element (n, k, d) of the (N, K, D) result is element l = k * D + d of
// input n. Its random words come from Philox counters of input n, E elements
// per counter (kElementsPerCounter: 4 for laplace and gaussian, 1 for
// discrete_laplace, which needs 65 random bits per element):
//   counter  c = base(n) + l / E,  and, for E = 4, word w = words(c)[l % 4]
//   base(n)  = offset + n * ceil(K * D / E)   one stream `seed` for the call
//            = offset                        with per-input keys: the stream row_keys[n]
// so the words of one counter never serve two inputs (an input's noise is the
// same whichever batch or shard it is drawn in, given its counters), and a call
// uses N * ceil(K * D / E) counters. Then
//   xc = clip(x[n, d], lower[d], upper[d])
//   laplace          y = xc + laplace_unit(w) * scale[d]
//   gaussian         y = xc + gaussian_unit(w) * scale[d]
//   (both)           y = clip(y, lower[d], upper[d]) when clamp is set
//   discrete_laplace q = floor((xc - lower[d]) / scale[d] + 1/2) on the grid
//                    {0 .. levels - 1} (scale[d] is the grid step),
//                    z = +-geometric_magnitude(w0, w1) with the sign from w2
//                    (the words of counter c),
//                    y = lower[d] + clip(q + z, 0, levels - 1) * scale[d]
// and y is rounded to the output dtype (round to nearest even).
// (Up to noiseforge 0.1 every element had a counter of its own: a seeded
// laplace or gaussian stream replayed from then gives different noise now.)
#pragma once

#include <cstdint>

#include "noiseforge/float_bits.h"
#include "noiseforge/noise_math.h"
#include "noiseforge/philox.h"

namespace noiseforge {

enum class Mechanism : int { kLaplace = 0, kGaussian = 1, kDiscreteLaplace = 2 };
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kUInt8 = 3 };

struct LdpNoiseArgs {
  const void* x;        // (N, D) contiguous, dtype in_dtype
  void* out;            // (N, K, D) contiguous, dtype out_dtype
  int64_t n;            // number of inputs N
  int64_t d;            // features per input D
  int64_t copies;       // K
  DType in_dtype;
  DType out_dtype;
  const float* lower;   // (D,)
  const float* upper;   // (D,)
  const float* scale;   // (D,): noise scale, or the grid step for discrete_laplace
  const uint64_t* table;  // (table_len,) thresholds for discrete_laplace, else null
  int table_len;        // levels - 1
  int table_bits;       // bit length of table_len
  Mechanism mechanism;
  bool clamp;
  uint64_t seed;
  uint64_t offset;
  const uint64_t* row_keys;  // (N,) per-input keys, or null for the one stream `seed`
};

// Elements that share the four words of one Philox counter.
constexpr int elements_per_counter(Mechanism m) { return m == Mechanism::kDiscreteLaplace ? 1 : 4; }

inline namespace NF_ISA_TAG {

template <typename T>
struct DTypeIO;

template <>
struct DTypeIO<float> {
  NF_HD static float load(float v) { return v; }
  NF_HD static float store(float v) { return v; }
};
template <>
struct DTypeIO<uint8_t> {
  NF_HD static float load(uint8_t v) { return static_cast<float>(v); }
  // Only discrete_laplace writes uint8, and its values are exact integers.
  NF_HD static uint8_t store(float v) { return static_cast<uint8_t>(v); }
};

// Half and bfloat16 travel as raw 16-bit patterns, tagged by these types.
struct Half16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};
template <>
struct DTypeIO<Half16> {
  NF_HD static float load(Half16 v) { return half_bits_to_float(v.bits); }
  NF_HD static Half16 store(float v) { return Half16{float_to_half_bits(v)}; }
};
template <>
struct DTypeIO<BFloat16> {
  NF_HD static float load(BFloat16 v) { return bfloat16_bits_to_float(v.bits); }
  NF_HD static BFloat16 store(float v) { return BFloat16{float_to_bfloat16_bits(v)}; }
};

NF_HD float clip_f32(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// discrete_laplace after the draw: the clipped input's grid point q moved by
// the signed magnitude (sign from the low bit of w2), clipped to the grid.
NF_HD float discrete_from_magnitude(float xc, float lo, float scale, int mag, uint32_t w2,
                                    int table_len) {
  const float v = (xc - lo) / scale + 0.5f;
  int q = static_cast<int>(v);  // v >= 0, so truncation is floor
  q = q > table_len ? table_len : q;
  int y = (w2 & 1u) ? q - mag : q + mag;
  y = y < 0 ? 0 : (y > table_len ? table_len : y);
  return lo + static_cast<float>(y) * scale;
}

// laplace and gaussian from the element's unit draw: clip, add, clip again if
// kClamp (the last steps of ldp_noise_from_words).
template <bool kClamp>
NF_HD float noised_from_unit(float x, float lo, float hi, float scale, float unit) {
  const float y = clip_f32(x, lo, hi) + unit * scale;
  if constexpr (kClamp) return clip_f32(y, lo, hi);
  return y;
}

// One output element of the op, in float32, before rounding to the output dtype,
// from its Philox words: w0 alone for laplace and gaussian (the element's word of
// its counter), (w0, w1, w2) of its counter for discrete_laplace. This is the
// single definition of the per-element math, called by every native backend.
// kClamp is a template parameter so that loops stay branch-free and vectorize.
template <Mechanism M, bool kClamp>
NF_HD float ldp_noise_from_words(float x, float lo, float hi, float scale, uint32_t w0,
                                 uint32_t w1, uint32_t w2, const uint64_t* table, int table_len,
                                 int table_bits) {
  if constexpr (M == Mechanism::kDiscreteLaplace) {
    const int mag = geometric_magnitude(w0, w1, table, table_len, table_bits);
    return discrete_from_magnitude(clip_f32(x, lo, hi), lo, scale, mag, w2, table_len);
  } else {
    const float unit = M == Mechanism::kLaplace ? laplace_unit(w0) : gaussian_unit(w0);
    return noised_from_unit<kClamp>(x, lo, hi, scale, unit);
  }
}

}  // namespace NF_ISA_TAG
}  // namespace noiseforge
