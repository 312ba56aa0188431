// CUDA backend of the LDP noise op: one thread per output element of a
// grid-stride loop, using the same per-element math as the C++ backend
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
// otherwise -- the two divisions per element are emulated on the GPU, and a
// 64-bit division costs several times a 32-bit one.
template <Mechanism M, bool kClamp, typename TIn, typename TOut, typename TIdx>
__global__ void ldp_noise_kernel(const TIn* __restrict__ x, TOut* __restrict__ out, TIdx total,
                                 TIdx D, TIdx K, const float* __restrict__ lower,
                                 const float* __restrict__ upper, const float* __restrict__ scale,
                                 const uint64_t* __restrict__ table, int table_len, int table_bits,
                                 uint64_t seed, uint64_t offset,
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
    const float xv = DTypeIO<TIn>::load(x[input * D + d]);
    const float y = ldp_noise_element<M, kClamp>(xv, lower[d], upper[d], scale[d],
                                                 offset + static_cast<uint64_t>(within), key,
                                                 table, table_len, table_bits);
    out[e] = DTypeIO<TOut>::store(y);
  }
}

template <Mechanism M, bool kClamp, typename TIn, typename TOut>
void launch_clamped(const LdpNoiseArgs& a, cudaStream_t stream) {
  const int64_t total = a.n * a.copies * a.d;
  if (total == 0) return;
  const unsigned grid = grid_for(total);
  const int64_t stride = static_cast<int64_t>(grid) * kThreads;
  if (total + stride < (int64_t{1} << 31)) {
    ldp_noise_kernel<M, kClamp, TIn, TOut, int32_t><<<grid, kThreads, 0, stream>>>(
        static_cast<const TIn*>(a.x), static_cast<TOut*>(a.out), static_cast<int32_t>(total),
        static_cast<int32_t>(a.d), static_cast<int32_t>(a.copies), a.lower, a.upper, a.scale,
        a.table, a.table_len, a.table_bits, a.seed, a.offset, a.row_keys);
  } else {
    ldp_noise_kernel<M, kClamp, TIn, TOut, int64_t><<<grid, kThreads, 0, stream>>>(
        static_cast<const TIn*>(a.x), static_cast<TOut*>(a.out), total, a.d, a.copies, a.lower,
        a.upper, a.scale, a.table, a.table_len, a.table_bits, a.seed, a.offset, a.row_keys);
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
