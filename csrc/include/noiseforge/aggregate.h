// Label aggregation: per-input vote histograms, weighted and soft-label sums.
//
// Answer i belongs to private input index[i]. The ops fill an (N, C) table:
//   counts    out[index[i], labels[i]] += 1
//   weighted  out[index[i], labels[i]] += weights[i]
//   soft      out[index[i], c]         += probs[i, c]   for every class c
// Counts are integers; weighted and soft sums use the fixed-point contract of
// fixed_point.h, so every backend returns the same bits.
#pragma once

#include <cstdint>

namespace noiseforge {

enum class AggregateMode : int { kCounts = 0, kWeighted = 1, kSoft = 2 };
enum class IntType : int { kInt32 = 0, kInt64 = 1 };

// The fused aggregate's outputs, one entry per input (see Top1Writer in
// csrc/cpu/aggregate_kernels.cpp): no (N, C) table is written.
struct AggregateTop1 {
  int64_t* label;  // winning class, -1 for an input without votes
  void* top;       // the winner's value: int64 counts, or float32 sums
  float* share;    // top / row total
  float* margin;   // (top - runner-up) / row total
};

struct AggregateArgs {
  const void* index;   // (M,) int32 or int64
  IntType index_type;
  const void* labels;  // (M,) int32 or int64; unused for kSoft
  IntType label_type;
  const float* values;  // weights (M,) or probs (M, C), float32; null for kCounts
  int64_t m;            // answers
  int64_t n;            // inputs
  int64_t c;            // classes
  AggregateMode mode;
  void* out;            // (N, C): int64 or int32 counts (count_type), float32 sums
  IntType count_type;
  const AggregateTop1* top1 = nullptr;  // set: the fused aggregate (out unused)
};

// What the native pass found. Positions are the first offending answer (or -1);
// for kSoft, bad_value is the flat position i * C + c in probs.
struct AggregateStatus {
  int64_t bad_index = -1;
  int64_t bad_label = -1;
  int64_t bad_value = -1;
  bool sorted = false;  // index was non-decreasing (the owner-computes path ran)
};

}  // namespace noiseforge
