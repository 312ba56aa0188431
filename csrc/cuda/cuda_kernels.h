// Entry points of the CUDA backend (compiled only when nvcc is found).
#pragma once

#include <cstdint>

#include "noiseforge/ldp_noise.h"

namespace noiseforge::cuda {
// All pointers in `args` are device pointers; `stream` is a cudaStream_t.
void ldp_noise(const LdpNoiseArgs& args, void* stream);
void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, void* stream);
// acc[index[i] * c + labels[i]] += values[i] (or 1 when values is null); acc is
// int64 (acc64) or int32, zeroed by the caller; values are quantised int64.
void scatter_add(const void* index, bool index64, const void* labels, bool labels64,
                 const int64_t* values, void* acc, bool acc64, int64_t m, int64_t c, void* stream);
// acc[index[i] * c + j] += values[i * c + j] for j < c.
void scatter_rows(const void* index, bool index64, const int64_t* values, int64_t* acc, int64_t m,
                  int64_t c, void* stream);
// Number of visible devices, or -1 with the driver's message when the runtime fails.
int device_count(const char** error_message);
const char* runtime_version();
}  // namespace noiseforge::cuda
