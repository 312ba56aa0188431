// CUDA backend of the label-aggregation ops: integer scatter-adds with global
// atomics. Inputs are validated and float values quantised to int64 (the
// fixed-point contract of noiseforge/fixed_point.h) before the launch, so the
// sums are exact and identical whatever the order of the atomics.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "launch.h"

namespace noiseforge::cuda {
namespace {

__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  // Two's-complement addition is the same operation on unsigned 64-bit words.
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
__device__ __forceinline__ void atomic_add(int32_t* p, int32_t v) { atomicAdd(p, v); }

template <typename TI, typename TL, typename TAcc>
__global__ void scatter_add_kernel(const TI* __restrict__ index, const TL* __restrict__ labels,
                                   const int64_t* __restrict__ values, TAcc* acc, int64_t m,
                                   int64_t c) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < m;
       i += stride) {
    const TAcc v = values == nullptr ? TAcc{1} : static_cast<TAcc>(values[i]);
    atomic_add(acc + static_cast<int64_t>(index[i]) * c + static_cast<int64_t>(labels[i]), v);
  }
}

template <typename TI>
__global__ void scatter_rows_kernel(const TI* __restrict__ index, const int64_t* __restrict__ values,
                                    int64_t* acc, int64_t m, int64_t c) {
  const int64_t total = m * c;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < total;
       j += stride) {
    const int64_t i = j / c;
    atomic_add(acc + static_cast<int64_t>(index[i]) * c + (j - i * c), values[j]);
  }
}

unsigned blocks_for(int64_t work) {
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 16 ? b : 65535 * 16);
}

template <typename TI, typename TL>
void launch_add(const void* index, const void* labels, const int64_t* values, void* acc,
                bool acc64, int64_t m, int64_t c, cudaStream_t s) {
  if (acc64)
    scatter_add_kernel<TI, TL, int64_t><<<blocks_for(m), kThreads, 0, s>>>(
        static_cast<const TI*>(index), static_cast<const TL*>(labels), values,
        static_cast<int64_t*>(acc), m, c);
  else
    scatter_add_kernel<TI, TL, int32_t><<<blocks_for(m), kThreads, 0, s>>>(
        static_cast<const TI*>(index), static_cast<const TL*>(labels), values,
        static_cast<int32_t*>(acc), m, c);
}

}  // namespace

void scatter_add(const void* index, bool index64, const void* labels, bool labels64,
                 const int64_t* values, void* acc, bool acc64, int64_t m, int64_t c,
                 void* stream) {
  if (m == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (index64 && labels64) launch_add<int64_t, int64_t>(index, labels, values, acc, acc64, m, c, s);
  if (index64 && !labels64) launch_add<int64_t, int32_t>(index, labels, values, acc, acc64, m, c, s);
  if (!index64 && labels64) launch_add<int32_t, int64_t>(index, labels, values, acc, acc64, m, c, s);
  if (!index64 && !labels64) launch_add<int32_t, int32_t>(index, labels, values, acc, acc64, m, c, s);
  check(cudaGetLastError(), "scatter_add kernel launch");
}

void scatter_rows(const void* index, bool index64, const int64_t* values, int64_t* acc, int64_t m,
                  int64_t c, void* stream) {
  if (m == 0 || c == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (index64)
    scatter_rows_kernel<int64_t><<<blocks_for(m * c), kThreads, 0, s>>>(
        static_cast<const int64_t*>(index), values, acc, m, c);
  else
    scatter_rows_kernel<int32_t><<<blocks_for(m * c), kThreads, 0, s>>>(
        static_cast<const int32_t*>(index), values, acc, m, c);
  check(cudaGetLastError(), "scatter_rows kernel launch");
}

}  // namespace noiseforge::cuda
