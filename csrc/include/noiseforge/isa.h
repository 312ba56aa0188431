// The one run-time choice of CPU instruction set, shared by every kernel family:
// the per-ISA objects of csrc/cpu (dispatch.cpp) and the index's distance
// kernels (index/distance.cpp). Host code only.
#pragma once

namespace noiseforge {

enum class Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest instruction set this build has kernels for and the CPU supports
// (AVX2: with FMA and F16C; AVX-512: F, BW, DQ and VL besides), capped by
// $NOISEFORGE_CPU_ISA=base|avx2|avx512 (tests use it to run every compiled
// variant on one machine; it never selects an ISA the CPU lacks). Decided once
// per process, when the native module is loaded (static initialisers of the
// kernel tables call it): set the variable before importing noiseforge.
Isa detect_isa();

// "base", "avx2" or "avx512".
const char* isa_name(Isa isa);

// Whether the CPU has AVX-512 VNNI (8-bit dot products) and detect_isa() chose AVX-512.
bool isa_has_avx512_vnni();

}  // namespace noiseforge
