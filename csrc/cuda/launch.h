// Launch helpers shared by the CUDA kernels: error checks and grid sizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace noiseforge::cuda {

constexpr int kThreads = 256;  // threads per block of every kernel

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("noiseforge CUDA backend: ") + what + ": " +
                             cudaGetErrorString(err));
  }
}

// Blocks for a grid-stride loop over `total` items: enough to fill the card
// (32 per SM), never more than the items need.
inline unsigned grid_for(int64_t total) {
  int device = 0;
  int sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  const int64_t needed = (total + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms) * 32;
  return static_cast<unsigned>(needed < cap ? needed : cap);
}

}  // namespace noiseforge::cuda
