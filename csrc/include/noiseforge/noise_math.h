// Per-element noise transforms shared by every backend.
//
// The torch reference (python/noiseforge/reference/ldp_noise.py) and the Triton
// kernel (kernels/ldp_noise.py) spell out the same float32 operations in the
// same order. Nothing here uses a library transcendental: log is a fixed
// polynomial and the Gaussian uses an erfinv polynomial plus IEEE sqrt, so a
// backend that performs each float32 operation with IEEE rounding (and does
// not contract a*b+c into an FMA) reproduces these results bit for bit.
#pragma once

#include <cstdint>

#include "noiseforge/float_bits.h"
#include "noiseforge/philox.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace noiseforge {
inline namespace NF_ISA_TAG {

// A 32-bit word -> a float32 uniform on the open interval (0, 1):
// u = (2 * (w >> 9) + 1) * 2^-24. The numerator is odd and below 2^24, so u is
// exact, never 0 or 1, and the grid is symmetric about 1/2.
NF_HD float uniform_open01(uint32_t w) {
  return static_cast<float>(((w >> 9) << 1) | 1u) * 5.9604644775390625e-08f;
}

// Natural log of a positive normal float32. Range reduction x = m * 2^e with
// m in [sqrt(1/2), sqrt(2)), then the degree-9 minimax polynomial of the
// Cephes single-precision logarithm in f = m - 1 (about 1 ulp), with ln 2
// split in two parts. Written branch-free so that loops vectorize.
NF_HD float log_f32(float x) {
  const uint32_t bits = float_as_bits(x);
  int e = static_cast<int>((bits >> 23) & 0xffu) - 126;
  float m = bits_as_float((bits & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m : m;
  const float f = m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f + -1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f + -1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f + -1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f + -2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float fe = static_cast<float>(e);
  float y = f * z;
  y = y * p;
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = f + y;
  r = r + fe * 0.693359375f;
  return r;
}

NF_HD float sqrt_f32(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);
#else
  return std::sqrt(x);  // IEEE correctly rounded
#endif
}

// Inverse error function for x in (-1, 1): the single-precision
// approximation of M. Giles, "Approximating the erfinv function" (GPU
// Computing Gems, 2011). Both branches are evaluated and one is selected.
// In two steps, so that a kernel may run them as separate passes over a block
// (shorter dependency chains per loop iteration; the same operations):
// w = erfinv_w(x), then erfinv_from_w(x, w).
NF_HD float erfinv_w(float x) { return -log_f32((1.0f - x) * (1.0f + x)); }

NF_HD float erfinv_from_w(float x, float w) {
  const float a = w - 2.5f;
  float p = 2.81022636e-08f;
  p = 3.43273939e-07f + p * a;
  p = -3.5233877e-06f + p * a;
  p = -4.39150654e-06f + p * a;
  p = 0.00021858087f + p * a;
  p = -0.00125372503f + p * a;
  p = -0.00417768164f + p * a;
  p = 0.246640727f + p * a;
  p = 1.50140941f + p * a;
  const float b = sqrt_f32(w) - 3.0f;
  float q = -0.000200214257f;
  q = 0.000100950558f + q * b;
  q = 0.00134934322f + q * b;
  q = -0.00367342844f + q * b;
  q = 0.00573950773f + q * b;
  q = -0.0076224613f + q * b;
  q = 0.00943887047f + q * b;
  q = 1.00167406f + q * b;
  q = 2.83297682f + q * b;
  const float r = w < 5.0f ? p : q;
  return r * x;
}

NF_HD float erfinv_f32(float x) { return erfinv_from_w(x, erfinv_w(x)); }

// Standard Laplace(0, 1) from one word: magnitude -log(u) (an Exp(1) draw)
// with u from the top 23 bits of w (uniform_open01) and the sign from its low
// bit -- disjoint bits of one word, so magnitude and sign are independent.
NF_HD float laplace_magnitude(uint32_t w) { return -log_f32(uniform_open01(w)); }

NF_HD float signed_by_low_bit(float mag, uint32_t w) { return (w & 1u) ? -mag : mag; }

NF_HD float laplace_unit(uint32_t w) { return signed_by_low_bit(laplace_magnitude(w), w); }

// Standard normal N(0, 1) by inversion: sqrt(2) * erfinv(2u - 1), u from w.
NF_HD float gaussian_t(uint32_t w) { return uniform_open01(w) * 2.0f - 1.0f; }  // exact

NF_HD float gaussian_from_t(float t, float w) {
  return 1.41421356237309505f * erfinv_from_w(t, w);
}

NF_HD float gaussian_unit(uint32_t w) {
  const float t = gaussian_t(w);
  return gaussian_from_t(t, erfinv_w(t));
}

// Magnitude of a two-sided geometric draw, capped at table_len, by inversion
// with integers only: a 64-bit uniform U = (w1 << 32) | w0 is compared with the
// non-increasing thresholds table[m - 1] = round(2^64 * P(|Z| >= m)), and the
// result is the number of thresholds above U (a prefix, found by a fixed-step
// binary search of table_bits steps, table_bits = bit length of table_len).
NF_HD int geometric_magnitude(uint32_t w0, uint32_t w1, const uint64_t* table,
                              int table_len, int table_bits) {
  const uint64_t u = (static_cast<uint64_t>(w1) << 32) | w0;
  int m = 0;
  for (int bit = table_bits - 1; bit >= 0; --bit) {
    const int cand = m + (1 << bit);
    if (cand <= table_len && u < table[cand - 1]) m = cand;
  }
  return m;
}

}  // namespace NF_ISA_TAG
}  // namespace noiseforge
