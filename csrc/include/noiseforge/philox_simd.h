// Hand-vectorized Philox4x32-10 (Salmon et al., SC 2011) for the C++ backend.
//
// Host only. The results are bit-identical to the scalar `philox4x32_10` in
// philox.h, which stays the single definition of the generator; this header
// only computes the same integer operations many counters at a time.
//
// Why by hand: compilers vectorize the scalar rounds with 32-bit lanes, and
// every 32x32->64 product then costs two widening multiplies plus shuffles to
// split even and odd lanes and to put the high and low halves back together.
// Here each counter instead lives in its own 64-bit lane for all ten rounds:
//   * `pmuludq` multiplies the low 32 bits of each 64-bit lane into a full
//     64-bit product, so lo(p) is the product itself (its low half) and hi(p)
//     is one in-lane swap of the two halves;
//   * every consumer of a state word only looks at its low 32 bits (the next
//     multiply, lane-wise xor, the final truncating store), so the upper
//     halves may carry garbage and are never cleaned up.
// One round is then two multiplies, two swaps and two 3-way xors per register
// (one `vpternlogq` each on AVX-512), with no lane-crossing shuffles. The words
// are narrowed to 32 bits once, when they are stored.
//
// The file is compiled once per instruction set (see CMakeLists.txt): with
// __AVX512F__ a register holds 8 counters, with __AVX2__ 4, in the x86-64
// baseline build (SSE2) 2, and elsewhere the scalar generator is used.
#pragma once

#include <cstdint>

#include "noiseforge/philox.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

// Everything below is compiled differently per instruction set but linked into
// one module, so it lives in an inline namespace named after the ISA: each
// build gets its own symbols (no One Definition Rule clash where the linker
// could keep, say, the AVX-512 copy for the baseline code), and callers still
// write noiseforge::philox_words_split.
#if defined(__AVX512F__)
#define NF_PHILOX_ISA_NS philox_avx512
#elif defined(__AVX2__)
#define NF_PHILOX_ISA_NS philox_avx2
#elif defined(__SSE2__)
#define NF_PHILOX_ISA_NS philox_sse2
#else
#define NF_PHILOX_ISA_NS philox_scalar
#endif

namespace noiseforge {
inline namespace NF_PHILOX_ISA_NS {

// The ten round keys of one seed, computed once per call instead of once per
// element (round r uses seed + r * (kPhiloxKeyA, kPhiloxKeyB), mod 2^32).
struct PhiloxKeySchedule {
  uint64_t seed;
  uint32_t k0[10];
  uint32_t k1[10];

  explicit PhiloxKeySchedule(uint64_t s) : seed(s) {
    uint32_t a = static_cast<uint32_t>(s);
    uint32_t b = static_cast<uint32_t>(s >> 32);
    for (int r = 0; r < 10; ++r) {
      k0[r] = a;
      k1[r] = b;
      a += kPhiloxKeyA;
      b += kPhiloxKeyB;
    }
  }
};

namespace philox_simd_detail {

#if defined(__AVX512F__)
#define NF_PHILOX_SIMD 1
struct Vec {
  using T = __m512i;
  static constexpr int kLanes = 8;  // one counter per 64-bit lane

  // Counters first, first + 1, ..., first + 7 as full 64-bit integers.
  static T counters(uint64_t first) {
    return _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first)),
                            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
  }
  static T zero() { return _mm512_setzero_si512(); }
  // 64-bit product of the low 32 bits of each lane and m.
  static T mul(T a, uint32_t m) { return _mm512_mul_epu32(a, _mm512_set1_epi64(m)); }
  // hi(a) in the low half of each lane, by swapping the halves: a shuffle
  // (port 5) instead of a 64-bit shift, which would compete with the
  // multiplies for port 0.
  static T high(T a) { return _mm512_shuffle_epi32(a, _MM_PERM_CDAB); }
  // a ^ b ^ k (0x96 is the truth table of a 3-input xor).
  static T xor3(T a, T b, uint32_t k) {
    return _mm512_ternarylogic_epi64(a, b, _mm512_set1_epi32(static_cast<int>(k)), 0x96);
  }
  static T xor2(T a, uint32_t k) { return _mm512_xor_si512(a, _mm512_set1_epi32(static_cast<int>(k))); }
  // Stores the low 32 bits of the lanes of a (counters 0..7) then b (8..15).
  static void store_low32(uint32_t* dst, T a, T b) {
    const T even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi32(a, even, b));
  }
  // Stores (w0, w1, w2, w3) of counters 0..7, interleaved as in philox_words.
  static void store_interleaved(uint32_t* dst, T c0, T c1, T c2, T c3) {
    // Pairs (w0, w1) and (w2, w3) of each counter in one 64-bit lane each ...
    const T w01 = _mm512_mask_blend_epi32(0xAAAA, c0, _mm512_slli_epi64(c1, 32));
    const T w23 = _mm512_mask_blend_epi32(0xAAAA, c2, _mm512_slli_epi64(c3, 32));
    // ... then the two pairs of counters 0..3 and of 4..7, in order.
    const T lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const T hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi64(w01, lo, w23));
    _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi64(w01, hi, w23));
  }
};
#elif defined(__AVX2__)
#define NF_PHILOX_SIMD 1
struct Vec {
  using T = __m256i;
  static constexpr int kLanes = 4;

  static T counters(uint64_t first) {
    return _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(first)),
                            _mm256_set_epi64x(3, 2, 1, 0));
  }
  static T zero() { return _mm256_setzero_si256(); }
  static T mul(T a, uint32_t m) { return _mm256_mul_epu32(a, _mm256_set1_epi64x(m)); }
  static T high(T a) { return _mm256_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)); }
  static T xor3(T a, T b, uint32_t k) {
    return _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_set1_epi32(static_cast<int>(k)));
  }
  static T xor2(T a, uint32_t k) { return _mm256_xor_si256(a, _mm256_set1_epi32(static_cast<int>(k))); }
  static void store_low32(uint32_t* dst, T a, T b) {
    // shuffle_ps picks the even 32-bit words within each 128-bit half:
    // (a0 a1 b0 b1 | a2 a3 b2 b3); the 64-bit permute restores the order.
    const __m256 ab = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b),
                                        _MM_SHUFFLE(2, 0, 2, 0));
    const T ordered = _mm256_permute4x64_epi64(_mm256_castps_si256(ab), _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), ordered);
  }
  static void store_interleaved(uint32_t* dst, T c0, T c1, T c2, T c3) {
    const T w01 = _mm256_blend_epi32(c0, _mm256_slli_epi64(c1, 32), 0xAA);
    const T w23 = _mm256_blend_epi32(c2, _mm256_slli_epi64(c3, 32), 0xAA);
    // (counter 0, counter 1) and (counter 2, counter 3) as 128-bit halves.
    const T lo = _mm256_unpacklo_epi64(w01, w23);  // counters 0 | 2
    const T hi = _mm256_unpackhi_epi64(w01, w23);  // counters 1 | 3
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
  }
};
#elif defined(__SSE2__)
// The x86-64 baseline: SSE2 already has the 32x32->64 multiply.
#define NF_PHILOX_SIMD 1
struct Vec {
  using T = __m128i;
  static constexpr int kLanes = 2;

  static T counters(uint64_t first) {
    return _mm_add_epi64(_mm_set1_epi64x(static_cast<long long>(first)), _mm_set_epi64x(1, 0));
  }
  static T zero() { return _mm_setzero_si128(); }
  static T mul(T a, uint32_t m) { return _mm_mul_epu32(a, _mm_set1_epi64x(m)); }
  static T high(T a) { return _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)); }
  static T xor3(T a, T b, uint32_t k) {
    return _mm_xor_si128(_mm_xor_si128(a, b), _mm_set1_epi32(static_cast<int>(k)));
  }
  static T xor2(T a, uint32_t k) { return _mm_xor_si128(a, _mm_set1_epi32(static_cast<int>(k))); }
  static void store_low32(uint32_t* dst, T a, T b) {
    const __m128 ab = _mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_castps_si128(ab));
  }
  static void store_interleaved(uint32_t* dst, T c0, T c1, T c2, T c3) {
    // Words 0 and 2 of each register are the low halves of counters 0 and 1.
    const T w01_0 = _mm_unpacklo_epi32(c0, c1);  // (w0, w1) of counter 0 in the low 64 bits
    const T w23_0 = _mm_unpacklo_epi32(c2, c3);
    const T w01_1 = _mm_unpackhi_epi32(c0, c1);  // ... of counter 1
    const T w23_1 = _mm_unpackhi_epi32(c2, c3);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(w01_0, w23_0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4), _mm_unpacklo_epi64(w01_1, w23_1));
  }
};
#endif

#if defined(NF_PHILOX_SIMD)
// The ten rounds for Vec::kLanes consecutive counters; c0..c3 receive the
// state (valid in the low 32 bits of each lane), i.e. the words w0..w3.
inline void philox_rounds(Vec::T counter, const PhiloxKeySchedule& ks, Vec::T& c0, Vec::T& c1,
                          Vec::T& c2, Vec::T& c3) {
  // Round 1 starts from (c0, c1, c2, c3) = (counter lo, counter hi, 0, 0), so
  // p1 = 0 and that multiply is skipped. The multiply only reads the low half
  // of `counter`, which is c0.
  const Vec::T p = Vec::mul(counter, kPhiloxRoundA);
  c0 = Vec::xor2(Vec::high(counter), ks.k0[0]);
  c1 = Vec::zero();
  c2 = Vec::xor2(Vec::high(p), ks.k1[0]);
  c3 = p;
  NF_UNROLL
  for (int r = 1; r < 10; ++r) {
    const Vec::T p0 = Vec::mul(c0, kPhiloxRoundA);
    const Vec::T p1 = Vec::mul(c2, kPhiloxRoundB);
    c0 = Vec::xor3(Vec::high(p1), c1, ks.k0[r]);
    c2 = Vec::xor3(Vec::high(p0), c3, ks.k1[r]);
    c1 = p1;  // lo(p1) in the low half
    c3 = p0;  // lo(p0) in the low half
  }
}
#endif

}  // namespace philox_simd_detail

// Counters per step of the functions below: two registers, so that two
// independent multiply chains overlap.
#if defined(NF_PHILOX_SIMD)
constexpr int kPhiloxBatch = 2 * philox_simd_detail::Vec::kLanes;
#else
constexpr int kPhiloxBatch = 1;
#endif

#if defined(NF_PHILOX_SIMD)
namespace philox_simd_detail {
// The four words of the kPhiloxBatch counters first .. first + kPhiloxBatch - 1,
// interleaved (out[4 i + j] = w_j of counter first + i).
inline void batch_interleaved(uint64_t first, const PhiloxKeySchedule& ks, uint32_t* out) {
  Vec::T a0, a1, a2, a3, b0, b1, b2, b3;
  philox_rounds(Vec::counters(first), ks, a0, a1, a2, a3);
  philox_rounds(Vec::counters(first + Vec::kLanes), ks, b0, b1, b2, b3);
  Vec::store_interleaved(out, a0, a1, a2, a3);
  Vec::store_interleaved(out + 4 * Vec::kLanes, b0, b1, b2, b3);
}
}  // namespace philox_simd_detail
#endif

// The first kWords (1 to 3) of the words w0, w1, w2 of counters
// first .. first + n - 1 (mod 2^64) into separate arrays, for the element loops
// that consume them; the arrays of the other words are not touched. Whole
// batches are computed: the arrays must have room for n rounded up to a
// multiple of kPhiloxBatch, and the entries past n hold the words of the
// following counters. Asking for fewer words is cheaper than it looks: w0 and
// w1 only need the last round's p1, so without w2 the compiler drops that
// round's p0 multiply as dead code.
template <int kWords>
inline void philox_words_split(uint64_t first, int n, const PhiloxKeySchedule& ks, uint32_t* w0,
                               uint32_t* w1, uint32_t* w2) {
  static_assert(kWords >= 1 && kWords <= 3, "philox_words_split stores w0 .. w2");
#if defined(NF_PHILOX_SIMD)
  using philox_simd_detail::Vec;
  for (int i = 0; i < n; i += kPhiloxBatch) {
    const uint64_t c = first + static_cast<uint64_t>(i);
    Vec::T a0, a1, a2, a3, b0, b1, b2, b3;
    philox_simd_detail::philox_rounds(Vec::counters(c), ks, a0, a1, a2, a3);
    philox_simd_detail::philox_rounds(Vec::counters(c + Vec::kLanes), ks, b0, b1, b2, b3);
    Vec::store_low32(w0 + i, a0, b0);
    if constexpr (kWords >= 2) Vec::store_low32(w1 + i, a1, b1);
    if constexpr (kWords >= 3) Vec::store_low32(w2 + i, a2, b2);
  }
#else
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    const PhiloxWords w = philox4x32_10(first + static_cast<uint64_t>(i), ks.seed);
    w0[i] = w.w0;
    if constexpr (kWords >= 2) w1[i] = w.w1;
    if constexpr (kWords >= 3) w2[i] = w.w2;
  }
#endif
}

// All four words of counters first .. first + n - 1, interleaved as in
// philox_words4_interleaved, computed in whole batches: `out` must have room
// for 4 * (n rounded up to a multiple of kPhiloxBatch) words, and the words past
// 4 n are those of the following counters. For element loops that consume the
// words of a block of counters, four elements per counter.
inline void philox_words4_batches(uint64_t first, int n, const PhiloxKeySchedule& ks,
                                  uint32_t* out) {
#if defined(NF_PHILOX_SIMD)
  for (int i = 0; i < n; i += kPhiloxBatch)
    philox_simd_detail::batch_interleaved(first + static_cast<uint64_t>(i), ks, out + 4 * i);
#else
  for (int i = 0; i < n; ++i) {
    const PhiloxWords w = philox4x32_10(first + static_cast<uint64_t>(i), ks.seed);
    out[4 * i + 0] = w.w0;
    out[4 * i + 1] = w.w1;
    out[4 * i + 2] = w.w2;
    out[4 * i + 3] = w.w3;
  }
#endif
}

// All four words of counters first .. first + n - 1, interleaved
// (out[4 i + j] = w_j of counter first + i). Writes exactly 4 n words: the
// last n % kPhiloxBatch counters use the scalar generator.
inline void philox_words4_interleaved(uint64_t first, int64_t n, const PhiloxKeySchedule& ks,
                                      uint32_t* out) {
  int64_t done = 0;
#if defined(NF_PHILOX_SIMD)
  for (; done + kPhiloxBatch <= n; done += kPhiloxBatch)
    philox_simd_detail::batch_interleaved(first + static_cast<uint64_t>(done), ks, out + 4 * done);
#endif
  // The tail, and the whole range in the baseline build.
#pragma omp simd
  for (int64_t i = done; i < n; ++i) {
    const PhiloxWords w = philox4x32_10(first + static_cast<uint64_t>(i), ks.seed);
    out[4 * i + 0] = w.w0;
    out[4 * i + 1] = w.w1;
    out[4 * i + 2] = w.w2;
    out[4 * i + 3] = w.w3;
  }
}

}  // inline namespace NF_PHILOX_ISA_NS
}  // namespace noiseforge
