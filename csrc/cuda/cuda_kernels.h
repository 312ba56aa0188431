// Entry points of the CUDA backend (compiled only when nvcc is found).
#pragma once

#include <cstdint>

#include "noiseforge/ldp_noise.h"

namespace noiseforge::cuda {
// All pointers in `args` are device pointers; `stream` is a cudaStream_t.
void ldp_noise(const LdpNoiseArgs& args, void* stream);
void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, void* stream);
// Number of visible devices, or -1 with the driver's message when the runtime fails.
int device_count(const char** error_message);
const char* runtime_version();
}  // namespace noiseforge::cuda
