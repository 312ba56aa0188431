// Entry points of the C++ backend. Each kernel source is compiled once per
// instruction set (base x86-64, AVX2, AVX-512) into its own namespace;
// dispatch.cpp picks the widest one the running CPU supports.
#pragma once

#include <cstdint>

#include "noiseforge/aggregate.h"
#include "noiseforge/ldp_noise.h"

// Leaf loops in the files compiled once (aggregation, exact top-k) are cloned
// per instruction set instead and chosen at load time, so portable builds stay
// fast. Only functions that call nothing but other inlined code may carry it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NF_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
// x86-64-v4 adds AVX-512DQ (int64 <-> double conversions) to avx512f; GCC
// accepts arch= levels in target_clones from version 12 on
#if __GNUC__ >= 12
#define NF_TARGET_CLONES_V4 \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NF_TARGET_CLONES_V4 NF_TARGET_CLONES
#endif
#else
#define NF_TARGET_CLONES
#define NF_TARGET_CLONES_V4
#endif

#define NF_DECLARE_CPU_KERNELS(ns)                                                      \
  namespace noiseforge::ns {                                                            \
  void ldp_noise(const LdpNoiseArgs& args, int num_threads);                            \
  void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset,       \
                    int num_threads);                                                   \
  }

NF_DECLARE_CPU_KERNELS(cpu_base)
NF_DECLARE_CPU_KERNELS(cpu_avx2)
NF_DECLARE_CPU_KERNELS(cpu_avx512)

namespace noiseforge::cpu {
// Name of the instruction set the dispatcher uses on this CPU ("avx512", "avx2", "base").
const char* active_isa();
void ldp_noise(const LdpNoiseArgs& args, int num_threads);
void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads);
// Index of the first NaN or inf among n values of a floating dtype, or -1.
int64_t first_nonfinite(const void* x, int64_t n, DType dtype, int num_threads);
// Vote histograms and weighted / soft-label sums (see noiseforge/aggregate.h).
AggregateStatus aggregate(const AggregateArgs& args, int num_threads);
// Exact top-k with exclusions (metric 0 = l2, 1 = ip, 2 = cosine); see knn_kernels.cpp.
void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d, int k,
              int metric, const int64_t* offsets, const int64_t* excluded, int64_t* out_ids,
              float* out_scores, int num_threads);
}  // namespace noiseforge::cpu
