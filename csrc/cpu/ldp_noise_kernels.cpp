// C++ backend of the LDP noise op and of the raw Philox words, compiled once per
// instruction set (NF_ISA_NAMESPACE is set by CMake). The loops are plain C++
// over the shared per-element math; `omp simd` lets the compiler vectorize the
// Philox rounds and the polynomial transforms for the target ISA. Files are
// compiled with -ffp-contract=off so no FMA changes the float results.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "cpu_kernels.h"
#include "noiseforge/ldp_noise.h"
#include "noiseforge/philox.h"

#ifndef NF_ISA_NAMESPACE
#error "NF_ISA_NAMESPACE must be defined by the build"
#endif

namespace noiseforge::NF_ISA_NAMESPACE {
namespace {

// Elements per parallel work item: large enough to amortise scheduling, small
// enough to balance 2-64 threads on the benchmark shapes.
constexpr int64_t kChunk = 8192;

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
  const uint64_t seed = a.seed;
  const uint64_t offset = a.offset;

#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t e = c * kChunk;
    const int64_t end = std::min(total, e + kChunk);
    int64_t row = e / D;
    int64_t d0 = e - row * D;
    while (e < end) {
      const int64_t len = std::min(D - d0, end - e);
      const TIn* xr = x + (row / K) * D + d0;
      TOut* orow = out + e;
      const float* lo = lower + d0;
      const float* hi = upper + d0;
      const float* sc = scale + d0;
      const uint64_t base = offset + static_cast<uint64_t>(e);
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        // All loads happen unconditionally before the math, which keeps the loop
        // free of conditional memory access and lets GCC vectorize it.
        const float xv = DTypeIO<TIn>::load(xr[i]);
        const float l = lo[i];
        const float h = hi[i];
        const float s = sc[i];
        const float y = ldp_noise_element<M, kClamp>(xv, l, h, s, base + static_cast<uint64_t>(i),
                                                     seed, table, table_len, table_bits);
        orow[i] = DTypeIO<TOut>::store(y);
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

void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads) {
#pragma omp parallel for simd schedule(static) num_threads(num_threads)
  for (int64_t i = 0; i < count; ++i) {
    const PhiloxWords w = philox4x32_10(offset + static_cast<uint64_t>(i), seed);
    out[4 * i + 0] = w.w0;
    out[4 * i + 1] = w.w1;
    out[4 * i + 2] = w.w2;
    out[4 * i + 3] = w.w3;
  }
}

}  // namespace noiseforge::NF_ISA_NAMESPACE
