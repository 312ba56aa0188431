// C++ backend of the LDP noise op, compiled once per instruction set
// (NF_ISA_NAMESPACE is set by CMake; the raw Philox words op is in
// philox_kernels.cpp). The Philox words come from the hand-vectorized
// generator in philox_simd.h (AVX-512 / AVX2 / SSE2), a block at a time; the
// float transforms are plain C++
// over the shared per-element math, vectorized by the compiler (`omp simd`).
// Files are compiled with -ffp-contract=off so no FMA changes the float results.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "cpu_kernels.h"
#include "noiseforge/ldp_noise.h"
#include "noiseforge/philox.h"
#include "noiseforge/philox_simd.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef NF_ISA_NAMESPACE
#error "NF_ISA_NAMESPACE must be defined by the build"
#endif

namespace noiseforge::NF_ISA_NAMESPACE {
namespace {

// Elements per parallel work item: large enough to amortise scheduling, small
// enough to balance 2-64 threads on the benchmark shapes.
constexpr int64_t kChunk = 8192;

// Elements per block: the Philox words of a block are generated first, into
// small stack arrays that stay in L1, and the transform loop then reads them.
// Generating the words separately lets them use the integer-friendly layout of
// philox_simd.h, which the compiler's vectorization of the fused loop cannot.
constexpr int kBlock = 256;
static_assert(kBlock % kPhiloxBatch == 0, "philox_words_split fills whole batches");
static_assert(kBlock % 4 == 0, "a block of elements starts on a counter");

// Walks the flat (N, K, D) output of one parallel chunk as runs of elements of
// one input: body(input, l, len) for its elements l .. l + len - 1 (l = k * D + d).
template <typename Body>
inline void for_input_runs(int64_t e, int64_t end, int64_t kd, Body&& body) {
  while (e < end) {
    const int64_t input = e / kd;
    const int64_t l = e - input * kd;
    const int64_t len = std::min(kd - l, end - e);
    body(input, l, len);
    e += len;
  }
}

// laplace and gaussian: four elements per counter (ldp_noise.h), each reading
// one word, so a block of kBlock elements costs kBlock / 4 (+ 1) Philox calls.
template <Mechanism M, bool kClamp, typename TIn, typename TOut>
void ldp_noise_words4(const LdpNoiseArgs& a, int num_threads) {
  const TIn* x = static_cast<const TIn*>(a.x);
  TOut* out = static_cast<TOut*>(a.out);
  const int64_t D = a.d;
  const int64_t KD = a.copies * D;
  const int64_t per_input = (KD + 3) / 4;  // counters of one input
  const int64_t total = a.n * KD;
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  const float* lower = a.lower;
  const float* upper = a.upper;
  const float* scale = a.scale;
  const PhiloxKeySchedule call_keys(a.seed);
  const uint64_t* row_keys = a.row_keys;
  const uint64_t offset = a.offset;
  // a block's first element may sit at any word of its first counter
  constexpr int kCounters = kBlock / 4 + kPhiloxBatch;

#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t c = 0; c < chunks; ++c) {
    alignas(64) uint32_t words[4 * kCounters];
    alignas(64) float unit[kBlock];
    alignas(64) float ts[kBlock];  // gaussian: 2u - 1
    for_input_runs(c * kChunk, std::min(total, (c + 1) * kChunk), KD,
                   [&](int64_t input, int64_t l, int64_t len) {
      // The input's counters: from offset + input * per_input in the call's
      // stream, or from offset in its own (a key schedule per run is 20 adds).
      const PhiloxKeySchedule keys = row_keys ? PhiloxKeySchedule(row_keys[input]) : call_keys;
      const uint64_t base = offset + static_cast<uint64_t>(row_keys ? 0 : input * per_input);
      const TIn* xin = x + input * D;
      TOut* oin = out + input * KD;
      for (int64_t b = 0; b < len; b += kBlock) {
        const int n = static_cast<int>(std::min<int64_t>(kBlock, len - b));
        const int64_t lb = l + b;
        const int skip = static_cast<int>(lb & 3);  // the word of lb in its counter
        philox_words4_batches(base + static_cast<uint64_t>(lb >> 2), (skip + n + 3) >> 2, keys,
                              words);
        const uint32_t* w = words + skip;  // element lb + i takes w[i]
        // Gaussian's unit draws in passes over the block: its transform is one long
        // chain of dependent float operations (a log, two polynomials, a root),
        // and a loop body of the whole chain leaves the core waiting on latency;
        // short passes let it overlap many elements (134 -> 93 ms on one thread
        // here). Same operations, so the same results as gaussian_unit. Laplace's
        // one log stays in the output loop (as fast as a pass of its own).
        if constexpr (M == Mechanism::kGaussian) {
#pragma omp simd
          for (int i = 0; i < n; ++i) ts[i] = gaussian_t(w[i]);
#pragma omp simd
          for (int i = 0; i < n; ++i) unit[i] = erfinv_w(ts[i]);
#pragma omp simd
          for (int i = 0; i < n; ++i) unit[i] = gaussian_from_t(ts[i], unit[i]);
        }
        // The block's elements as runs of one copy row (features d .. d + seg - 1).
        int i = 0;
        int64_t d = lb % D;
        while (i < n) {
          const int seg = static_cast<int>(std::min<int64_t>(D - d, n - i));
          const float* u = unit + i;
          const uint32_t* wr = w + i;
          const TIn* xr = xin + d;
          const float* lo = lower + d;
          const float* hi = upper + d;
          const float* sc = scale + d;
          TOut* o = oin + lb + i;
#pragma omp simd
          for (int t = 0; t < seg; ++t) {
            // laplace's transform (one log) is short enough to fuse into this loop
            const float un = M == Mechanism::kLaplace ? laplace_unit(wr[t]) : u[t];
            const float y = noised_from_unit<kClamp>(DTypeIO<TIn>::load(xr[t]), lo[t], hi[t],
                                                     sc[t], un);
            o[t] = DTypeIO<TOut>::store(y);
          }
          i += seg;
          d = 0;
        }
      }
    });
  }
}

// A faster, exact geometric_magnitude for large calls. The magnitude is a
// non-increasing step function of the 64-bit uniform U, and its thresholds are
// (close to) geometric, so on a log scale of U they are evenly spread. Buckets
// of U by the binary exponent and next 7 bits of V = U >> 12 (relative width
// 1/128) each hold few thresholds: per bucket, the magnitudes at its two ends
// bound every magnitude inside it, and a search from the lower bound over
// `steps` steps (2^steps - 1 >= the widest bucket's spread) finds the exact
// count. For geometric tables of up to 4096 levels that is 1-2 steps instead
// of 12-13. V has 52 bits, so it converts to a double exactly (with AVX2 by
// the 2^52 bit trick), and the bucket is read off the double's bits (instead of
// a bit scan, slow on some CPUs). U < 2^12 (V = 0, probability 2^-52) is
// searched directly.
class MagnitudeBuckets {
 public:
  static constexpr int kMantissaBits = 7;
  static constexpr int kDropped = 12;  // U >> 12 has 52 bits: exact as a double
  static constexpr int kBuckets = (64 - kDropped) * (1 << kMantissaBits) + 1;  // + V = 0
  static constexpr uint64_t kDirectBelow = uint64_t{1} << kDropped;

  // The bucket of U: 0 for V = 0, else 1 + exponent(V) * 128 + the 7 bits
  // below V's leading one.
  static int bucket(uint64_t u) {
    const double v = static_cast<double>(static_cast<int64_t>(u >> kDropped));
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const int64_t k = static_cast<int64_t>(bits >> (52 - kMantissaBits)) -
                      (int64_t{1023} << kMantissaBits) + 1;
    return k < 1 ? 0 : static_cast<int>(k);
  }

  MagnitudeBuckets(const uint64_t* table, int table_len, int table_bits)
      : table_(table), table_len_(table_len), table_bits_(table_bits) {
    int spread = 0;
    const auto mag = [&](uint64_t u) {
      return geometric_magnitude(static_cast<uint32_t>(u), static_cast<uint32_t>(u >> 32), table,
                                 table_len, table_bits);
    };
    // bucket k holds V in [first, last], i.e. U in [first << 12, (last << 12) + 4095]
    const auto cover = [&](int k, uint64_t first, uint64_t last) {
      const int top_mag = mag(first << kDropped);  // the magnitude falls as U grows
      const int low_mag = mag((last << kDropped) | (kDirectBelow - 1));
      lower_[k] = static_cast<uint16_t>(low_mag);
      spread = std::max(spread, top_mag - low_mag);
    };
    lower_[0] = 0;  // V = 0 is searched directly
    lower_[kBuckets] = 0;
    for (int e = 0; e < 64 - kDropped; ++e) {
      for (int t = 0; t < (1 << kMantissaBits); ++t) {
        const int k = e * (1 << kMantissaBits) + t + 1;
        lower_[k] = 0;
        if (e < kMantissaBits) {
          // V < 128: few values, each its own bucket or none
          const int shift = kMantissaBits - e;
          if (t % (1 << shift) != 0) continue;  // no V lands here
          const uint64_t v = (uint64_t{1} << e) + (static_cast<uint64_t>(t) >> shift);
          cover(k, v, v);
        } else {
          const int shift = e - kMantissaBits;
          const uint64_t first = ((uint64_t{1} << kMantissaBits) + t) << shift;
          cover(k, first, first + ((uint64_t{1} << shift) - 1));
        }
      }
    }
    steps_ = 0;
    while ((1 << steps_) - 1 < spread) ++steps_;
  }

  // The magnitudes of elements 0 .. n - 1 (n <= kBlock) of a block: the bucket
  // bounds first, then each search step over the whole block, so that the
  // elements' short dependent chains (bucket, load, compare) overlap.
  void magnitudes(const uint32_t* w0, const uint32_t* w1, int n, int32_t* mag) const {
    int i = 0;
    bool direct = false;
#if defined(__AVX2__)
    for (; i + 4 <= n; i += 4) direct |= magnitudes4(w0 + i, w1 + i, mag + i);
#endif
    alignas(64) uint64_t u[kBlock];
    const int start = i;
    for (; i < n; ++i) {
      u[i] = (static_cast<uint64_t>(w1[i]) << 32) | w0[i];
      mag[i] = lower_[bucket(u[i])];
      direct |= u[i] < kDirectBelow;
    }
    const uint64_t* table = table_;
    const int table_len = table_len_;
    for (int bit = steps_ - 1; bit >= 0; --bit) {
      const int step = 1 << bit;
      for (int j = start; j < n; ++j) {
        const int cand = mag[j] + step;
        const bool inside = cand <= table_len;
        const uint64_t t = table[(inside ? cand : table_len) - 1];  // cand >= 1
        mag[j] = inside && u[j] < t ? cand : mag[j];
      }
    }
    if (direct) {
      for (int j = 0; j < n; ++j) {
        const uint64_t uj = (static_cast<uint64_t>(w1[j]) << 32) | w0[j];
        if (uj < kDirectBelow)
          mag[j] = geometric_magnitude(w0[j], w1[j], table, table_len, table_bits_);
      }
    }
  }

 private:
#if defined(__AVX2__)
  // Four elements at once, the same steps as the scalar loop above in 64-bit
  // lanes (table loads as gathers); returns whether one needs the direct search.
  bool magnitudes4(const uint32_t* w0, const uint32_t* w1, int32_t* mag) const {
    const __m256i lo = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w0)));
    const __m256i hi = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w1)));
    const __m256i u = _mm256_or_si256(_mm256_slli_epi64(hi, 32), lo);
    // V = U >> 12 < 2^52 as a double: its bits ORed into 2^52's mantissa, minus 2^52
    const __m256i v = _mm256_srli_epi64(u, kDropped);
    const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
    const __m256d vd = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(v, _mm256_castpd_si256(two52))), two52);
    __m256i k = _mm256_add_epi64(_mm256_srli_epi64(_mm256_castpd_si256(vd), 52 - kMantissaBits),
                                 _mm256_set1_epi64x(1 - (int64_t{1023} << kMantissaBits)));
    const __m256i zero_v = _mm256_cmpeq_epi64(v, _mm256_setzero_si256());
    k = _mm256_andnot_si256(zero_v, k);  // V = 0: bucket 0
    // lower_[k]: 32 bits at 2-byte steps, the low 16 kept
    const __m128i low16 = _mm_and_si128(
        _mm256_i64gather_epi32(reinterpret_cast<const int*>(lower_), k, 2), _mm_set1_epi32(0xFFFF));
    __m256i m = _mm256_cvtepi32_epi64(low16);
    const __m256i flip = _mm256_set1_epi64x(static_cast<long long>(uint64_t{1} << 63));
    const __m256i us = _mm256_xor_si256(u, flip);  // signed order = unsigned order of u
    const __m256i len = _mm256_set1_epi64x(table_len_);
    const __m256i one = _mm256_set1_epi64x(1);
    for (int bit = steps_ - 1; bit >= 0; --bit) {
      const __m256i cand = _mm256_add_epi64(m, _mm256_set1_epi64x(int64_t{1} << bit));
      const __m256i outside = _mm256_cmpgt_epi64(cand, len);
      const __m256i idx = _mm256_sub_epi64(_mm256_blendv_epi8(cand, len, outside), one);
      const __m256i t = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(table_), idx, 8);
      const __m256i below = _mm256_cmpgt_epi64(_mm256_xor_si256(t, flip), us);  // u < t
      m = _mm256_blendv_epi8(m, cand, _mm256_andnot_si256(outside, below));
    }
    // the low 32 bits of each lane, in order
    const __m256i packed = _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mag), _mm256_castsi256_si128(packed));
    return _mm256_movemask_epi8(zero_v) != 0;
  }
#endif

  const uint64_t* table_;
  int table_len_;
  int table_bits_;
  int steps_ = 0;
  uint16_t lower_[kBuckets + 1];  // + 1: the AVX2 path loads 32 bits at 16-bit entries
};

// Calls with at least this many elements build the buckets (~0.2 ms): smaller
// ones search the table directly (the same magnitudes).
constexpr int64_t kBucketsFrom = int64_t{1} << 16;

// discrete_laplace: one counter per element (words w0, w1 make the 64-bit
// uniform, w2 the sign); magnitudes from MagnitudeBuckets in large calls.
template <typename TIn, typename TOut>
void ldp_noise_discrete(const LdpNoiseArgs& a, int num_threads) {
  const TIn* x = static_cast<const TIn*>(a.x);
  TOut* out = static_cast<TOut*>(a.out);
  const int64_t D = a.d;
  const int64_t KD = a.copies * D;
  const int64_t total = a.n * KD;
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  const float* lower = a.lower;
  const float* upper = a.upper;
  const float* scale = a.scale;
  const uint64_t* table = a.table;
  const int table_len = a.table_len;
  const int table_bits = a.table_bits;
  const PhiloxKeySchedule call_keys(a.seed);
  const uint64_t* row_keys = a.row_keys;
  const uint64_t offset = a.offset;
  std::unique_ptr<MagnitudeBuckets> buckets;
  if (total >= kBucketsFrom && table_len < (1 << 16))
    buckets = std::make_unique<MagnitudeBuckets>(table, table_len, table_bits);
  const MagnitudeBuckets* bk = buckets.get();

#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t c = 0; c < chunks; ++c) {
    alignas(64) uint32_t w0[kBlock];
    alignas(64) uint32_t w1[kBlock];
    alignas(64) uint32_t w2[kBlock];
    alignas(64) int32_t mag[kBlock];
    for_input_runs(c * kChunk, std::min(total, (c + 1) * kChunk), KD,
                   [&](int64_t input, int64_t l, int64_t len) {
      const PhiloxKeySchedule keys = row_keys ? PhiloxKeySchedule(row_keys[input]) : call_keys;
      const uint64_t base = offset + static_cast<uint64_t>(row_keys ? 0 : input * KD);
      const TIn* xin = x + input * D;
      TOut* oin = out + input * KD;
      for (int64_t b = 0; b < len; b += kBlock) {
        const int n = static_cast<int>(std::min<int64_t>(kBlock, len - b));
        const int64_t lb = l + b;
        philox_words_split<3>(base + static_cast<uint64_t>(lb), n, keys, w0, w1, w2);
        if (bk) {
          bk->magnitudes(w0, w1, n, mag);
        } else {
          for (int i = 0; i < n; ++i)
            mag[i] = geometric_magnitude(w0[i], w1[i], table, table_len, table_bits);
        }
        int i = 0;
        int64_t d = lb % D;
        while (i < n) {
          const int seg = static_cast<int>(std::min<int64_t>(D - d, n - i));
          const TIn* xr = xin + d;
          const float* lo = lower + d;
          const float* sc = scale + d;
          const float* hi = upper + d;
          TOut* o = oin + lb + i;
#pragma omp simd
          for (int t = 0; t < seg; ++t) {
            const float xc = clip_f32(DTypeIO<TIn>::load(xr[t]), lo[t], hi[t]);
            const float y = discrete_from_magnitude(xc, lo[t], sc[t], mag[i + t], w2[i + t],
                                                    table_len);
            o[t] = DTypeIO<TOut>::store(y);
          }
          i += seg;
          d = 0;
        }
      }
    });
  }
}

template <Mechanism M, bool kClamp, typename TIn, typename TOut>
void ldp_noise_typed(const LdpNoiseArgs& a, int num_threads) {
  if constexpr (M == Mechanism::kDiscreteLaplace) {
    ldp_noise_discrete<TIn, TOut>(a, num_threads);
  } else {
    ldp_noise_words4<M, kClamp, TIn, TOut>(a, num_threads);
  }
}

template <Mechanism M, typename TIn, typename TOut>
void dispatch_clamp(const LdpNoiseArgs& a, int nt) {
  if (a.clamp) return ldp_noise_typed<M, true, TIn, TOut>(a, nt);
  if constexpr (M != Mechanism::kDiscreteLaplace) return ldp_noise_typed<M, false, TIn, TOut>(a, nt);
  throw std::invalid_argument("ldp_noise: discrete_laplace always clamps");
}

template <Mechanism M, typename TIn>
void dispatch_out(const LdpNoiseArgs& a, int nt) {
  switch (a.out_dtype) {
    case DType::kFloat32: return dispatch_clamp<M, TIn, float>(a, nt);
    case DType::kFloat16: return dispatch_clamp<M, TIn, Half16>(a, nt);
    case DType::kBFloat16: return dispatch_clamp<M, TIn, BFloat16>(a, nt);
    case DType::kUInt8:
      if constexpr (M == Mechanism::kDiscreteLaplace) return dispatch_clamp<M, TIn, uint8_t>(a, nt);
      break;
  }
  throw std::invalid_argument("ldp_noise: unsupported output dtype for this mechanism");
}

template <Mechanism M>
void dispatch_in(const LdpNoiseArgs& a, int nt) {
  switch (a.in_dtype) {
    case DType::kFloat32: return dispatch_out<M, float>(a, nt);
    case DType::kFloat16: return dispatch_out<M, Half16>(a, nt);
    case DType::kBFloat16: return dispatch_out<M, BFloat16>(a, nt);
    case DType::kUInt8: return dispatch_out<M, uint8_t>(a, nt);
  }
  throw std::invalid_argument("ldp_noise: unsupported input dtype");
}

}  // namespace

void ldp_noise(const LdpNoiseArgs& a, int num_threads) {
  switch (a.mechanism) {
    case Mechanism::kLaplace: return dispatch_in<Mechanism::kLaplace>(a, num_threads);
    case Mechanism::kGaussian: return dispatch_in<Mechanism::kGaussian>(a, num_threads);
    case Mechanism::kDiscreteLaplace:
      return dispatch_in<Mechanism::kDiscreteLaplace>(a, num_threads);
  }
  throw std::invalid_argument("ldp_noise: unknown mechanism");
}

}  // namespace noiseforge::NF_ISA_NAMESPACE
