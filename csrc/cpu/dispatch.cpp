// Run-time choice of the widest compiled instruction set the CPU supports, so
// that one portable wheel is still fast on AVX2 and AVX-512 machines.
#include <cstdlib>
#include <cstring>

#include "cpu_kernels.h"
#include "memory.h"

namespace noiseforge::cpu {
namespace {

enum class Isa { kBase, kAvx2, kAvx512 };

Isa detect() {
#if defined(NF_HAVE_X86_VARIANTS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

// $NOISEFORGE_CPU_ISA=base|avx2|avx512 caps the choice (tests use it to run every
// compiled variant on one machine); it never selects an ISA the CPU lacks.
Isa capped(Isa best) {
  const char* cap = std::getenv("NOISEFORGE_CPU_ISA");
  if (cap == nullptr) return best;
  Isa want = best;
  if (std::strcmp(cap, "base") == 0) want = Isa::kBase;
  if (std::strcmp(cap, "avx2") == 0) want = Isa::kAvx2;
  return static_cast<int>(want) < static_cast<int>(best) ? want : best;
}

Isa isa() {
  static const Isa chosen = capped(detect());
  return chosen;
}

}  // namespace

const char* active_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "base";
  }
}

void ldp_noise(const LdpNoiseArgs& args, int num_threads) {
  static constexpr size_t kOutBytes[] = {4, 2, 2, 1};  // by DType
  advise_huge_pages(args.out, static_cast<size_t>(args.n * args.copies * args.d) *
                                  kOutBytes[static_cast<int>(args.out_dtype)]);
  switch (isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512: return cpu_avx512::ldp_noise(args, num_threads);
    case Isa::kAvx2: return cpu_avx2::ldp_noise(args, num_threads);
#endif
    default: return cpu_base::ldp_noise(args, num_threads);
  }
}

void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads) {
  switch (isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512: return cpu_avx512::philox_words(out, count, seed, offset, num_threads);
    case Isa::kAvx2: return cpu_avx2::philox_words(out, count, seed, offset, num_threads);
#endif
    default: return cpu_base::philox_words(out, count, seed, offset, num_threads);
  }
}

}  // namespace noiseforge::cpu
