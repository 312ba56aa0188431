// See distance.h. AVX-512 and AVX2+FMA versions are written with intrinsics
// (two accumulators to hide the FMA latency) and chosen once at run time, by
// the instruction set noiseforge/isa.h chooses for every CPU kernel.
#include "distance.h"

#include "noiseforge/isa.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace noiseforge::hnsw {
namespace {

float dot_portable(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float l2_portable(const float* a, const float* b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) {
    const float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

float sq8_dot_portable(const float* a, const uint8_t* c, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * static_cast<float>(c[i]);
  return s;
}

float sq8_l2_portable(const float* r, const float* sc, const uint8_t* c, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) {
    const float d = r[i] - sc[i] * static_cast<float>(c[i]);
    s += d * d;
  }
  return s;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NF_HAVE_X86_DISTANCES 1
// 64 byte products per instruction, two accumulators
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t u8s8_dot_vnni(const int8_t* q,
                                                                          const uint8_t* c, int n) {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  int i = 0;
  for (; i + 128 <= n; i += 128) {
    s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(c + i), _mm512_loadu_si512(q + i));
    s1 = _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(c + i + 64), _mm512_loadu_si512(q + i + 64));
  }
  if (i < n) s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(c + i), _mm512_loadu_si512(q + i));
  return _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
}

#define NF_AVX512 __attribute__((target("avx512f")))
#define NF_AVX2 __attribute__((target("avx2,fma")))

NF_AVX512 float dot_avx512(const float* a, const float* b, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

NF_AVX512 float l2_avx512(const float* a, const float* b, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) {
    const float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

// 16 codes widened to float32 (zero-extend to int32, convert: exact for 0..255)
NF_AVX512 inline __m512 codes16(const uint8_t* c) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
}

NF_AVX512 float sq8_dot_avx512(const float* a, const uint8_t* c, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), codes16(c + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), codes16(c + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), codes16(c + i), s0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * static_cast<float>(c[i]);
  return s;
}

NF_AVX512 float sq8_l2_avx512(const float* r, const float* sc, const uint8_t* c, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 d0 = _mm512_fnmadd_ps(_mm512_loadu_ps(sc + i), codes16(c + i), _mm512_loadu_ps(r + i));
    const __m512 d1 =
        _mm512_fnmadd_ps(_mm512_loadu_ps(sc + i + 16), codes16(c + i + 16), _mm512_loadu_ps(r + i + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; i + 16 <= n; i += 16) {
    const __m512 d0 = _mm512_fnmadd_ps(_mm512_loadu_ps(sc + i), codes16(c + i), _mm512_loadu_ps(r + i));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) {
    const float d = r[i] - sc[i] * static_cast<float>(c[i]);
    s += d * d;
  }
  return s;
}

NF_AVX2 float hsum256(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v);
  const __m128 hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

NF_AVX2 float dot_avx2(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

NF_AVX2 float l2_avx2(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) {
    const float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

NF_AVX2 inline __m256 codes8(const uint8_t* c) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c))));
}

NF_AVX2 float sq8_dot_avx2(const float* a, const uint8_t* c, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), codes8(c + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), codes8(c + i + 8), s1);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * static_cast<float>(c[i]);
  return s;
}

NF_AVX2 float sq8_l2_avx2(const float* r, const float* sc, const uint8_t* c, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 d0 = _mm256_fnmadd_ps(_mm256_loadu_ps(sc + i), codes8(c + i), _mm256_loadu_ps(r + i));
    const __m256 d1 =
        _mm256_fnmadd_ps(_mm256_loadu_ps(sc + i + 8), codes8(c + i + 8), _mm256_loadu_ps(r + i + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) {
    const float d = r[i] - sc[i] * static_cast<float>(c[i]);
    s += d * d;
  }
  return s;
}
#endif

// The instruction set every CPU kernel family uses (noiseforge/isa.h, with the
// $NOISEFORGE_CPU_ISA cap); its base level runs the portable loops here.
const Isa kIsa = detect_isa();
const bool kVnni = isa_has_avx512_vnni();

template <typename Fn>
Fn choose(Fn portable, Fn avx2, Fn avx512) {
  (void)avx2;
  (void)avx512;
#if defined(NF_HAVE_X86_DISTANCES)
  if (kIsa == Isa::kAvx512) return avx512;
  if (kIsa == Isa::kAvx2) return avx2;
#endif
  return portable;
}

#if defined(NF_HAVE_X86_DISTANCES)
#define NF_PICK(name) choose(name##_portable, name##_avx2, name##_avx512)
#else
#define NF_PICK(name) choose(name##_portable, name##_portable, name##_portable)
#endif

using FloatFn = float (*)(const float*, const float*, int);
using CodeDotFn = float (*)(const float*, const uint8_t*, int);
using CodeL2Fn = float (*)(const float*, const float*, const uint8_t*, int);

const FloatFn kDot = NF_PICK(dot);
const FloatFn kL2 = NF_PICK(l2);
const CodeDotFn kSq8Dot = NF_PICK(sq8_dot);
const CodeL2Fn kSq8L2 = NF_PICK(sq8_l2);
#if defined(NF_HAVE_X86_DISTANCES)
int32_t (*const kU8s8)(const int8_t*, const uint8_t*, int) = kVnni ? u8s8_dot_vnni : nullptr;
#else
int32_t (*const kU8s8)(const int8_t*, const uint8_t*, int) = nullptr;
#endif

}  // namespace

float dot(const float* a, const float* b, int n) { return kDot(a, b, n); }
float l2_squared(const float* a, const float* b, int n) { return kL2(a, b, n); }
float sq8_dot(const float* a, const uint8_t* c, int n) { return kSq8Dot(a, c, n); }
float sq8_l2(const float* r, const float* s, const uint8_t* c, int n) { return kSq8L2(r, s, c, n); }

int32_t u8s8_dot(const int8_t* q, const uint8_t* c, int n) { return kU8s8(q, c, n); }
bool has_u8s8_dot() { return kVnni; }

const char* distance_isa() {
  return kIsa == Isa::kBase ? "portable" : isa_name(kIsa);
}

}  // namespace noiseforge::hnsw
