// Run-time choice among the per-ISA kernel objects, so that one portable wheel
// is still fast on AVX2 and AVX-512 machines: noiseforge/isa.h decides (once,
// with the $NOISEFORGE_CPU_ISA cap), every entry point here follows it.
#include "noiseforge/isa.h"

#include "cpu_kernels.h"
#include "memory.h"

namespace noiseforge::cpu {

const char* active_isa() { return isa_name(detect_isa()); }

void ldp_noise(const LdpNoiseArgs& args, int num_threads) {
  static constexpr size_t kOutBytes[] = {4, 2, 2, 1};  // by DType
  advise_huge_pages(args.out, static_cast<size_t>(args.n * args.copies * args.d) *
                                  kOutBytes[static_cast<int>(args.out_dtype)]);
  switch (detect_isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512: return cpu_avx512::ldp_noise(args, num_threads);
    case Isa::kAvx2: return cpu_avx2::ldp_noise(args, num_threads);
#endif
    default: return cpu_base::ldp_noise(args, num_threads);
  }
}

void philox_words(uint32_t* out, int64_t count, uint64_t seed, uint64_t offset, int num_threads) {
  switch (detect_isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512: return cpu_avx512::philox_words(out, count, seed, offset, num_threads);
    case Isa::kAvx2: return cpu_avx2::philox_words(out, count, seed, offset, num_threads);
#endif
    default: return cpu_base::philox_words(out, count, seed, offset, num_threads);
  }
}

void knn_topk(const float* queries, int64_t nq, const float* corpus, int64_t n, int64_t d, int k,
              int metric, const int64_t* offsets, const int64_t* excluded, int64_t* out_ids,
              float* out_scores, int num_threads) {
  switch (detect_isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512:
      return cpu_avx512::knn_topk(queries, nq, corpus, n, d, k, metric, offsets, excluded,
                                  out_ids, out_scores, num_threads);
    case Isa::kAvx2:
      return cpu_avx2::knn_topk(queries, nq, corpus, n, d, k, metric, offsets, excluded, out_ids,
                                out_scores, num_threads);
#endif
    default:
      return cpu_base::knn_topk(queries, nq, corpus, n, d, k, metric, offsets, excluded, out_ids,
                                out_scores, num_threads);
  }
}

const AggregateLoopKernels& aggregate_loop_kernels() {
  switch (detect_isa()) {
#if defined(NF_HAVE_X86_VARIANTS)
    case Isa::kAvx512: return cpu_avx512::aggregate_loop_kernels;
    case Isa::kAvx2: return cpu_avx2::aggregate_loop_kernels;
#endif
    default: return cpu_base::aggregate_loop_kernels;
  }
}

}  // namespace noiseforge::cpu
