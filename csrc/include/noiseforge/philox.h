// Philox4x32-10 counter-based random numbers (Salmon, Moraes, Dror, Shaw,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// This header is the single definition of the generator for the C++ and CUDA
// backends. It follows the convention of Triton's `tl.randint4x(seed, offset)`
// so that the Triton kernel can use the library generator directly:
//   key     (k0, k1)         = (seed low 32 bits, seed high 32 bits)
//   counter (c0, c1, c2, c3) = (offset low 32 bits, offset high 32 bits, 0, 0)
// and each of the 10 rounds computes the two 32x32->64 products
//   p0 = 0xD2511F53 * c0, p1 = 0xCD9E8D57 * c2,
//   (c0, c1, c2, c3) = (hi(p1) ^ c1 ^ k0, lo(p1), hi(p0) ^ c3 ^ k1, lo(p0)),
// then bumps the key by the Weyl constants.
// It is torch-free and usable from host and device code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NF_HD __host__ __device__ __forceinline__
#else
#define NF_HD inline
#endif

// Full unrolling of short fixed loops, so that host compilers can vectorize the
// element loops that call these functions.
#if defined(__CUDACC__) || defined(__clang__)
#define NF_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define NF_UNROLL _Pragma("GCC unroll 16")
#else
#define NF_UNROLL
#endif

// The C++ kernels are compiled once per instruction set and linked into one
// module. The inline functions of these shared headers therefore live in an
// inline namespace named after the ISA, so that each build keeps its own copies
// (the linker may not merge, say, the AVX-512 copy into the baseline build).
// Callers still write noiseforge::philox4x32_10.
#if defined(__CUDACC__)
#define NF_ISA_TAG isa_cuda
#elif defined(__AVX512F__)
#define NF_ISA_TAG isa_avx512
#elif defined(__AVX2__)
#define NF_ISA_TAG isa_avx2
#else
#define NF_ISA_TAG isa_base
#endif

namespace noiseforge {
inline namespace NF_ISA_TAG {

struct PhiloxWords {
  uint32_t w0, w1, w2, w3;
};

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;

// The four 32-bit words of Philox4x32-10 for one 64-bit counter.
NF_HD PhiloxWords philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter);
  uint32_t c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0u;
  uint32_t c3 = 0u;
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  NF_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxRoundA) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxRoundB) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return PhiloxWords{c0, c1, c2, c3};
}

}  // namespace NF_ISA_TAG
}  // namespace noiseforge
