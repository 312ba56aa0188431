// C++ backend of the LDP noise op, compiled once per instruction set
// (NF_ISA_NAMESPACE is set by CMake; the raw Philox words op is in
// philox_kernels.cpp). The Philox words come from the hand-vectorized
// generator in philox_simd.h (AVX-512 / AVX2 / SSE2), a block at a time; the
// float transforms are plain C++
// over the shared per-element math, vectorized by the compiler (`omp simd`).
// Files are compiled with -ffp-contract=off so no FMA changes the float results.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "cpu_kernels.h"
#include "noiseforge/ldp_noise.h"
#include "noiseforge/philox.h"
#include "noiseforge/philox_simd.h"

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

// Philox words each mechanism reads: Laplace (w0, w1), Gaussian (w0), discrete
// Laplace (w0, w1, w2). Words that are not needed are not generated.
template <Mechanism M>
constexpr int kWordsUsed = M == Mechanism::kDiscreteLaplace ? 3 : (M == Mechanism::kLaplace ? 2 : 1);

template <Mechanism M, bool kClamp, typename TIn, typename TOut>
void ldp_noise_typed(const LdpNoiseArgs& a, int num_threads) {
  const TIn* x = static_cast<const TIn*>(a.x);
  TOut* out = static_cast<TOut*>(a.out);
  const int64_t D = a.d;
  const int64_t K = a.copies;
  const int64_t total = a.n * K * D;
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
  constexpr int kWords = kWordsUsed<M>;

#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t c = 0; c < chunks; ++c) {
    alignas(64) uint32_t w0[kBlock];
    alignas(64) uint32_t w1[kBlock];
    alignas(64) uint32_t w2[kBlock];
    int64_t e = c * kChunk;
    const int64_t end = std::min(total, e + kChunk);
    int64_t row = e / D;
    int64_t d0 = e - row * D;
    while (e < end) {
      // Outputs e .. e + len - 1 are features d0 .. d0 + len - 1 of one row.
      const int64_t len = std::min(D - d0, end - e);
      const int64_t input = row / K;
      // One stream for the call (counter offset + e), or the input's own stream
      // (counter offset + k * D + d); a key schedule per row is 20 adds.
      const PhiloxKeySchedule keys = row_keys ? PhiloxKeySchedule(row_keys[input]) : call_keys;
      const uint64_t first = offset + static_cast<uint64_t>(row_keys ? e - input * K * D : e);
      for (int64_t b = 0; b < len; b += kBlock) {
        const int n = static_cast<int>(std::min<int64_t>(kBlock, len - b));
        const TIn* xr = x + input * D + d0 + b;
        TOut* orow = out + e + b;
        const float* lo = lower + d0 + b;
        const float* hi = upper + d0 + b;
        const float* sc = scale + d0 + b;
        philox_words_split<kWords>(first + static_cast<uint64_t>(b), n, keys, w0, w1, w2);
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          // All loads happen unconditionally before the math, which keeps the
          // loop free of conditional memory access and lets GCC vectorize it.
          // Words that were not generated are passed as 0 (and not read).
          const float xv = DTypeIO<TIn>::load(xr[i]);
          const uint32_t v1 = kWords >= 2 ? w1[i] : 0u;
          const uint32_t v2 = kWords >= 3 ? w2[i] : 0u;
          const float y = ldp_noise_from_words<M, kClamp>(xv, lo[i], hi[i], sc[i], w0[i], v1, v2,
                                                          table, table_len, table_bits);
          orow[i] = DTypeIO<TOut>::store(y);
        }
      }
      e += len;
      ++row;
      d0 = 0;
    }
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
