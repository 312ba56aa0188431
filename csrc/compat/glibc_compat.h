// Force-included into every C++ translation unit of a portable (wheel) build
// (NOISEFORGE_PORTABLE=ON), so that the extension needs no glibc symbol newer than
// the manylinux policy its wheel claims, even when it is compiled on a newer system.
//
// glibc 2.29 gave exp, exp2, log, log2 and pow new symbol versions (faster, same
// results within their documented error bounds); the older versions remain in every
// later glibc. Binding the references to the older versions keeps the module loadable
// on glibc 2.17 (x86_64) / 2.17 (aarch64) and newer. Only the index's level
// multiplier (1 / log M) calls one of them; no numerical contract depends on it.
#pragma once
#if defined(__linux__)
#include <features.h>  // defines __GLIBC__ (every libc header includes it first anyway)
#endif
#if defined(__linux__) && defined(__GLIBC__)
#if defined(__x86_64__)
#define NF_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define NF_GLIBC_BASE "GLIBC_2.17"
#endif
#ifdef NF_GLIBC_BASE
__asm__(".symver exp,exp@" NF_GLIBC_BASE);
__asm__(".symver exp2,exp2@" NF_GLIBC_BASE);
__asm__(".symver log,log@" NF_GLIBC_BASE);
__asm__(".symver log2,log2@" NF_GLIBC_BASE);
__asm__(".symver pow,pow@" NF_GLIBC_BASE);
#endif
#endif
