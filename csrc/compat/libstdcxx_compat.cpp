// Portable (wheel) builds only (NOISEFORGE_PORTABLE=ON, libstdc++ linked in statically):
// a private definition of a glibc symbol that GCC >= 11's libstdc++ imports when it is
// built on glibc >= 2.32, so the module does not need GLIBC_2.32.

extern "C" {
// libstdc++ reads this glibc flag to skip atomic reference counting while a process
// has one thread (GLIBC_2.32). This hidden copy is always 0 -- "more than one thread
// may run" -- so every count is updated atomically, as on any glibc before 2.32.
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}

// libstdc++.a's std::random_device (linked in through the COW-string instantiations,
// never called by noiseforge) imports arc4random (GLIBC_2.36) and log (GLIBC_2.29).
// The link wraps both (-Wl,--wrap=...): arc4random draws from getentropy (GLIBC_2.25),
// log is the pre-2.29 libm entry point.
#include <cstdint>
#include <cstdlib>
#include <unistd.h>

extern "C" {
double nf_glibc_old_log(double);
__asm__(".symver nf_glibc_old_log,log@" NF_GLIBC_BASE);

__attribute__((visibility("hidden"))) double __wrap_log(double x) { return nf_glibc_old_log(x); }

__attribute__((visibility("hidden"))) uint32_t __wrap_arc4random(void) {
  uint32_t value;
  if (getentropy(&value, sizeof value) != 0) abort();
  return value;
}
}
