// Input checks done natively for the C++ backend, so that validating a large
// CPU tensor runs on the same OpenMP pool as the kernel that follows (a torch
// op here would leave torch's own pool spinning on the cores the kernel needs).
#include <algorithm>
#include <cstdint>

#include "cpu_kernels.h"

namespace noiseforge::cpu {
namespace {

// Exponent-field masks: a value is NaN or inf exactly when all its exponent bits are set.
template <typename Bits>
int64_t first_nonfinite_bits(const Bits* x, int64_t n, Bits mask, int num_threads) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  int64_t first = n;
#pragma omp parallel for schedule(static) num_threads(num_threads) reduction(min : first)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kChunk);
    int64_t found = n;
    for (int64_t i = c * kChunk; i < end; ++i) {
      if ((x[i] & mask) == mask) {
        found = i;
        break;
      }
    }
    first = std::min(first, found);
  }
  return first == n ? -1 : first;
}

}  // namespace

int64_t first_nonfinite(const void* x, int64_t n, DType dtype, int num_threads) {
  switch (dtype) {
    case DType::kFloat32:
      return first_nonfinite_bits(static_cast<const uint32_t*>(x), n, uint32_t{0x7f800000u},
                                  num_threads);
    case DType::kFloat16:
      return first_nonfinite_bits(static_cast<const uint16_t*>(x), n, uint16_t{0x7c00u},
                                  num_threads);
    case DType::kBFloat16:
      return first_nonfinite_bits(static_cast<const uint16_t*>(x), n, uint16_t{0x7f80u},
                                  num_threads);
    case DType::kUInt8:
      return -1;
  }
  return -1;
}

}  // namespace noiseforge::cpu
