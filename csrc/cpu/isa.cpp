// See noiseforge/isa.h: CPU feature detection and the $NOISEFORGE_CPU_ISA cap.
#include "noiseforge/isa.h"

#include <cstdlib>
#include <cstring>

namespace noiseforge {
namespace {

Isa supported() {
#if defined(NF_HAVE_X86_VARIANTS)
  __builtin_cpu_init();
  // both wide variants are compiled with -mf16c (half-precision conversions) and FMA
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (avx2) return Isa::kAvx2;
#endif
  return Isa::kBase;
}

Isa capped(Isa best) {
  const char* cap = std::getenv("NOISEFORGE_CPU_ISA");
  if (cap == nullptr) return best;
  Isa want = best;
  if (std::strcmp(cap, "base") == 0) want = Isa::kBase;
  if (std::strcmp(cap, "avx2") == 0) want = Isa::kAvx2;
  return static_cast<int>(want) < static_cast<int>(best) ? want : best;
}

}  // namespace

Isa detect_isa() {
  static const Isa chosen = capped(supported());
  return chosen;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "base";
  }
}

bool isa_has_avx512_vnni() {
#if defined(NF_HAVE_X86_VARIANTS)
  static const bool vnni = detect_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni");
  return vnni;
#else
  return false;
#endif
}

}  // namespace noiseforge
