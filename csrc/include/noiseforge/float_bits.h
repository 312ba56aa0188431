// Bit-exact float helpers shared by the C++ and CUDA backends: bit casts and
// round-to-nearest-even conversions between float32 and float16 / bfloat16.
// Written out with integer operations so that every backend (and the torch
// reference, which uses IEEE conversions) gives the same bits.
#pragma once

#include <cstdint>
#include <cstring>

#include "noiseforge/philox.h"

namespace noiseforge {
inline namespace NF_ISA_TAG {

NF_HD uint32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_bit_cast(uint32_t, f);  // keeps element loops vectorizable
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

NF_HD float bits_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_bit_cast(float, u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// float32 -> IEEE binary16 bits, round to nearest, ties to even.
NF_HD uint16_t float_to_half_bits(float f) {
  uint32_t x = float_as_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (x < 0x38800000u) {  // below 2^-14: a half subnormal or zero
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);  // below 2^-25 rounds to 0
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (x - 0x38000000u) >> 13;  // rebias the exponent from 127 to 15
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

// IEEE binary16 bits -> float32 (exact).
NF_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return bits_as_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    // subnormal: m * 2^-24, exact in float32
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> bfloat16 bits, round to nearest, ties to even.
NF_HD uint16_t float_to_bfloat16_bits(float f) {
  uint32_t x = float_as_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

NF_HD float bfloat16_bits_to_float(uint16_t b) {
  return bits_as_float(static_cast<uint32_t>(b) << 16);
}

}  // namespace NF_ISA_TAG
}  // namespace noiseforge
