// CUDA backend of the philox_words op: raw Philox4x32-10 words of consecutive
// counters, one thread per counter of a grid-stride loop (noiseforge/philox.h).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_kernels.h"
#include "launch.h"
#include "noiseforge/philox.h"

namespace noiseforge::cuda {
namespace {

__global__ void philox_words_kernel(uint32_t* __restrict__ out, int64_t count, uint64_t seed,
                                    uint64_t offset) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const PhiloxWords w = philox4x32_10(offset + static_cast<uint64_t>(i), seed);
    reinterpret_cast<uint4*>(out)[i] = make_uint4(w.w0, w.w1, w.w2, w.w3);
  }
}

}  // namespace

void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, void* stream) {
  if (count == 0) return;
  philox_words_kernel<<<grid_for(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      out, count, seed, offset);
  check(cudaGetLastError(), "philox_words kernel launch");
}

}  // namespace noiseforge::cuda
