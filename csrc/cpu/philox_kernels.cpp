// C++ backend of the raw Philox words op, compiled once per instruction set
// (NF_ISA_NAMESPACE is set by CMake) like ldp_noise_kernels.cpp, whose noise
// draws its words from the same generator: philox_simd.h (AVX-512 / AVX2 /
// SSE2), four words per counter, interleaved as the op returns them.
#include <algorithm>
#include <cstdint>

#include "cpu_kernels.h"
#include "noiseforge/philox.h"
#include "noiseforge/philox_simd.h"

#ifndef NF_ISA_NAMESPACE
#error "NF_ISA_NAMESPACE must be defined by the build"
#endif

namespace noiseforge::NF_ISA_NAMESPACE {
namespace {

// Counters per parallel work item (the noise kernels' chunk, in counters).
constexpr int64_t kChunk = 8192;

}  // namespace

void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads) {
  const PhiloxKeySchedule keys(seed);
  const int64_t chunks = (count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(num_threads)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kChunk;
    const int64_t n = std::min(count - first, kChunk);
    philox_words4_interleaved(offset + static_cast<uint64_t>(first), n, keys, out + 4 * first);
  }
}

}  // namespace noiseforge::NF_ISA_NAMESPACE
