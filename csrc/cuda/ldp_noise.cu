// CUDA backend of the LDP noise op: grid-stride loops of one thread per Philox
// counter (four elements, laplace and gaussian) or per element
// (discrete_laplace), using the same per-element math as the C++ backend
// (noiseforge/ldp_noise.h). Compiled with --fmad=false so that no a*b+c is
// contracted into an FMA and the results match the other backends.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include "cuda_kernels.h"
#include "launch.h"
#include "noiseforge/ldp_noise.h"

namespace noiseforge::cuda {
namespace {

// TIdx: int32_t when every index (and index + grid stride) fits, int64_t
// otherwise -- the divisions are emulated on the GPU, and a 64-bit division
// costs several times a 32-bit one.
//
// laplace and gaussian: one thread per counter lane g = input * per_input + c,
// whose four words are elements l = 4 c .. 4 c + 3 (l = k * D + d) of that input.
template <Mechanism M, bool kClamp, typename TIn, typename TOut, typename TIdx>
__global__ void ldp_noise_words4_kernel(const TIn* __restrict__ x, TOut* __restrict__ out,
                                        TIdx lanes, TIdx D, TIdx KD, TIdx per_input,
                                        const float* __restrict__ lower,
                                        const float* __restrict__ upper,
                                        const float* __restrict__ scale, uint64_t seed,
                                        uint64_t offset, const uint64_t* __restrict__ row_keys) {
  const TIdx stride = static_cast<TIdx>(gridDim.x) * static_cast<TIdx>(blockDim.x);
  for (TIdx g = static_cast<TIdx>(blockIdx.x) * static_cast<TIdx>(blockDim.x) + threadIdx.x;
       g < lanes; g += stride) {
    const TIdx input = g / per_input;
    const TIdx c = g - input * per_input;
    // one stream for the call (input n from counter offset + n * per_input,
    // i.e. offset + g), or the input's own from counter offset
    const uint64_t key = row_keys ? row_keys[input] : seed;
    const PhiloxWords w = philox4x32_10(offset + static_cast<uint64_t>(row_keys ? c : g), key);
    const uint32_t words[4] = {w.w0, w.w1, w.w2, w.w3};
    const TIdx l0 = 4 * c;
    TIdx d = l0 % D;
    const TIn* xin = x + static_cast<int64_t>(input) * D;
    TOut* o = out + static_cast<int64_t>(input) * KD + l0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (l0 + j < KD) {
        const float y = ldp_noise_from_words<M, kClamp>(DTypeIO<TIn>::load(xin[d]), lower[d],
                                                        upper[d], scale[d], words[j], 0u, 0u,
                                                        nullptr, 0, 0);
        o[j] = DTypeIO<TOut>::store(y);
      }
      d = d + 1 == D ? 0 : d + 1;
    }
  }
}

// discrete_laplace: one thread per output element e, counter base(input) + l.
template <typename TIn, typename TOut, typename TIdx>
__global__ void ldp_noise_discrete_kernel(const TIn* __restrict__ x, TOut* __restrict__ out,
                                          TIdx total, TIdx D, TIdx K,
                                          const float* __restrict__ lower,
                                          const float* __restrict__ upper,
                                          const float* __restrict__ scale,
                                          const uint64_t* __restrict__ table, int table_len,
                                          int table_bits, uint64_t seed, uint64_t offset,
                                          const uint64_t* __restrict__ row_keys) {
  const TIdx stride = static_cast<TIdx>(gridDim.x) * static_cast<TIdx>(blockDim.x);
  for (TIdx e = static_cast<TIdx>(blockIdx.x) * static_cast<TIdx>(blockDim.x) + threadIdx.x;
       e < total; e += stride) {
    const TIdx row = e / D;
    const TIdx d = e - row * D;
    const TIdx input = row / K;
    // one stream for the call, or the input's own (counter k * D + d within it)
    const uint64_t key = row_keys ? row_keys[input] : seed;
    const TIdx within = row_keys ? e - input * K * D : e;
    const PhiloxWords w = philox4x32_10(offset + static_cast<uint64_t>(within), key);
    const float y = ldp_noise_from_words<Mechanism::kDiscreteLaplace, true>(
        DTypeIO<TIn>::load(x[input * D + d]), lower[d], upper[d], scale[d], w.w0, w.w1, w.w2,
        table, table_len, table_bits);
    out[e] = DTypeIO<TOut>::store(y);
  }
}

template <Mechanism M, bool kClamp, typename TIn, typename TOut, typename TIdx>
void launch_typed(const LdpNoiseArgs& a, int64_t lanes, unsigned grid, cudaStream_t stream) {
  const TIdx KD = static_cast<TIdx>(a.copies * a.d);
  if constexpr (M == Mechanism::kDiscreteLaplace) {
    ldp_noise_discrete_kernel<TIn, TOut, TIdx><<<grid, kThreads, 0, stream>>>(
        static_cast<const TIn*>(a.x), static_cast<TOut*>(a.out), static_cast<TIdx>(lanes),
        static_cast<TIdx>(a.d), static_cast<TIdx>(a.copies), a.lower, a.upper, a.scale, a.table,
        a.table_len, a.table_bits, a.seed, a.offset, a.row_keys);
  } else {
    ldp_noise_words4_kernel<M, kClamp, TIn, TOut, TIdx><<<grid, kThreads, 0, stream>>>(
        static_cast<const TIn*>(a.x), static_cast<TOut*>(a.out), static_cast<TIdx>(lanes),
        static_cast<TIdx>(a.d), KD, static_cast<TIdx>((a.copies * a.d + 3) / 4), a.lower,
        a.upper, a.scale, a.seed, a.offset, a.row_keys);
  }
}

template <Mechanism M, bool kClamp, typename TIn, typename TOut>
void launch_clamped(const LdpNoiseArgs& a, cudaStream_t stream) {
  const int64_t total = a.n * a.copies * a.d;
  if (total == 0) return;
  // lanes: an element each for discrete_laplace, a counter each otherwise
  const int64_t per_input = (a.copies * a.d + elements_per_counter(M) - 1) / elements_per_counter(M);
  const int64_t lanes = a.n * per_input;
  const unsigned grid = grid_for(lanes);
  const int64_t stride = static_cast<int64_t>(grid) * kThreads;
  if (total + 4 * stride < (int64_t{1} << 31)) {
    launch_typed<M, kClamp, TIn, TOut, int32_t>(a, lanes, grid, stream);
  } else {
    launch_typed<M, kClamp, TIn, TOut, int64_t>(a, lanes, grid, stream);
  }
  check(cudaGetLastError(), "ldp_noise kernel launch");
}

template <Mechanism M, typename TIn, typename TOut>
void launch(const LdpNoiseArgs& a, cudaStream_t stream) {
  if (a.clamp) return launch_clamped<M, true, TIn, TOut>(a, stream);
  if constexpr (M != Mechanism::kDiscreteLaplace) return launch_clamped<M, false, TIn, TOut>(a, stream);
  throw std::invalid_argument("ldp_noise: discrete_laplace always clamps");
}

template <Mechanism M, typename TIn>
void dispatch_out(const LdpNoiseArgs& a, cudaStream_t s) {
  switch (a.out_dtype) {
    case DType::kFloat32: return launch<M, TIn, float>(a, s);
    case DType::kFloat16: return launch<M, TIn, Half16>(a, s);
    case DType::kBFloat16: return launch<M, TIn, BFloat16>(a, s);
    case DType::kUInt8:
      if constexpr (M == Mechanism::kDiscreteLaplace) return launch<M, TIn, uint8_t>(a, s);
      break;
  }
  throw std::invalid_argument("ldp_noise: unsupported output dtype for this mechanism");
}

template <Mechanism M>
void dispatch_in(const LdpNoiseArgs& a, cudaStream_t s) {
  switch (a.in_dtype) {
    case DType::kFloat32: return dispatch_out<M, float>(a, s);
    case DType::kFloat16: return dispatch_out<M, Half16>(a, s);
    case DType::kBFloat16: return dispatch_out<M, BFloat16>(a, s);
    case DType::kUInt8: return dispatch_out<M, uint8_t>(a, s);
  }
  throw std::invalid_argument("ldp_noise: unsupported input dtype");
}

}  // namespace

void ldp_noise(const LdpNoiseArgs& a, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (a.mechanism) {
    case Mechanism::kLaplace: return dispatch_in<Mechanism::kLaplace>(a, s);
    case Mechanism::kGaussian: return dispatch_in<Mechanism::kGaussian>(a, s);
    case Mechanism::kDiscreteLaplace: return dispatch_in<Mechanism::kDiscreteLaplace>(a, s);
  }
  throw std::invalid_argument("ldp_noise: unknown mechanism");
}

int device_count(const char** error_message) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    *error_message = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls are not poisoned
    return -1;
  }
  return n;
}

const char* runtime_version() {
  static char buf[32];
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return "unknown";
  std::snprintf(buf, sizeof(buf), "%d.%d", v / 1000, (v % 1000) / 10);
  return buf;
}

}  // namespace noiseforge::cuda
