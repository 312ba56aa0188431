// Distance kernels of the HNSW index: float32 dot product and squared L2, and
// the asymmetric 8-bit scalar-quantized (SQ8) versions that compare a float32
// query with a vector stored as one byte per dimension. Torch-free. No
// cross-backend numerical contract applies to the index, so these use FMA.
#pragma once

#include <cstdint>

namespace noiseforge::hnsw {

// Each function pointer is resolved once per process from the CPU's features
// (AVX-512, AVX2+FMA, or a portable loop), at the instruction set that
// noiseforge/isa.h chooses for every CPU kernel ($NOISEFORGE_CPU_ISA caps it).
float dot(const float* a, const float* b, int n);
float l2_squared(const float* a, const float* b, int n);

// SQ8: x_i ~ lo_i + scale_i * c_i with c_i in [0, 255].
// sq8_dot(a, c, n) = sum_i a_i * c_i (callers pass a_i = q_i * scale_i and add
// sum_i q_i * lo_i); sq8_l2(r, s, c, n) = sum_i (r_i - s_i * c_i)^2 (callers
// pass r_i = q_i - lo_i, s_i = scale_i).
float sq8_dot(const float* a, const uint8_t* c, int n);
float sq8_l2(const float* r, const float* s, const uint8_t* c, int n);

// sum_i q_i * c_i over n bytes (n a multiple of 64, both arrays zero-padded)
// with AVX-512 VNNI (vpdpbusd). Only callable when has_u8s8_dot() is true (the
// index then uses it; without VNNI it walks with sq8_dot instead).
int32_t u8s8_dot(const int8_t* q, const uint8_t* c, int n);
bool has_u8s8_dot();

// The name of the kernel family chosen at run time ("avx512", "avx2", "portable").
const char* distance_isa();

}  // namespace noiseforge::hnsw
