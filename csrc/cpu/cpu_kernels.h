// Entry points of the C++ backend. The per-ISA kernel sources
// (ldp_noise_kernels.cpp, philox_kernels.cpp, knn_topk_kernels.cpp and the leaf
// loops of aggregation in aggregate_loops.cpp) are compiled once per
// instruction set (base x86-64, AVX2, AVX-512) into their own namespace;
// dispatch.cpp picks the one noiseforge/isa.h chooses.
#pragma once

#include <cstdint>

#include "noiseforge/aggregate.h"
#include "noiseforge/ldp_noise.h"

namespace noiseforge::cpu {

// The leaf loops of aggregation (aggregate_loops.cpp; see aggregate_kernels.cpp
// for what each computes).
struct AggregateLoopKernels {
  bool (*chunk_max_bits)(const float* v, int64_t n, float* max_out);
  void (*add_quantized_rows)(int64_t* acc, const float* probs, int64_t n, int64_t C, double scale);
  void (*sums_to_float)(const int64_t* acc, float* out, int64_t n, double inv_scale);
  void (*sum_soft_segment_u16)(const uint16_t* cells, const uint32_t* ids, const float* values,
                               int64_t C, int64_t j0, int64_t j1, double scale, int64_t* acc);
  void (*sum_soft_segment_u32)(const uint32_t* cells, const uint32_t* ids, const float* values,
                               int64_t C, int64_t j0, int64_t j1, double scale, int64_t* acc);
};

}  // namespace noiseforge::cpu

#define NF_DECLARE_CPU_KERNELS(ns)                                                            \
  namespace noiseforge::ns {                                                                  \
  void ldp_noise(const LdpNoiseArgs& args, int num_threads);                                  \
  void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset,             \
                    int num_threads);                                                         \
  void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d,  \
                int k, int metric, const int64_t* offsets, const int64_t* excluded,           \
                int64_t* out_ids, float* out_scores, int num_threads);                        \
  extern const cpu::AggregateLoopKernels aggregate_loop_kernels;                              \
  }

NF_DECLARE_CPU_KERNELS(cpu_base)
NF_DECLARE_CPU_KERNELS(cpu_avx2)
NF_DECLARE_CPU_KERNELS(cpu_avx512)

namespace noiseforge::cpu {
// Name of the instruction set the dispatcher uses on this CPU ("avx512", "avx2", "base").
const char* active_isa();
void ldp_noise(const LdpNoiseArgs& args, int num_threads);
void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads);
// The leaf loops of aggregation compiled for the instruction set the dispatcher uses.
const AggregateLoopKernels& aggregate_loop_kernels();
// Index of the first NaN or inf among n values of a floating dtype, or -1.
int64_t first_nonfinite(const void* x, int64_t n, DType dtype, int num_threads);
// Vote histograms and weighted / soft-label sums (see noiseforge/aggregate.h).
AggregateStatus aggregate(const AggregateArgs& args, int num_threads);
// Exact top-k with exclusions (metric 0 = l2, 1 = ip, 2 = cosine); see knn_topk_kernels.cpp.
void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d, int k,
              int metric, const int64_t* offsets, const int64_t* excluded, int64_t* out_ids,
              float* out_scores, int num_threads);
}  // namespace noiseforge::cpu
