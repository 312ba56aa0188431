// Portable CUDA builds only (NOISEFORGE_PORTABLE=ON with the CUDA backend): the static CUDA
// runtime's references to the glibc functions listed in cudart_glibc_wraps.def are wrapped
// (-Wl,--wrap=NAME) by a trampoline __wrap_NAME that jumps to NAME at its original symbol
// version. The jump passes every argument register and the stack unchanged, so the wrappers
// need no prototypes; the functions themselves are the same code under both versions.
// On glibc < 2.34 the original versions live in libpthread.so.0, libdl.so.2 and librt.so.1,
// which the portable CUDA link names as NEEDED (CMakeLists.txt).
#if defined(__x86_64__)
#define NF_PICK(x86_64_version, aarch64_version) x86_64_version
#define NF_JUMP(target) "jmp " target "@PLT"
#elif defined(__aarch64__)
#define NF_PICK(x86_64_version, aarch64_version) aarch64_version
#define NF_JUMP(target) "b " target
#else
#error "portable CUDA builds support x86_64 and aarch64 Linux"
#endif
#define NF_WRAP(name, x86_64_version, aarch64_version)                                      \
  __asm__(".symver nf_old_" #name "," #name "@" NF_PICK(x86_64_version, aarch64_version) "\n" \
          ".text\n.globl __wrap_" #name "\n.hidden __wrap_" #name "\n"                      \
          ".type __wrap_" #name ",%function\n"                                              \
          "__wrap_" #name ":\n\t" NF_JUMP("nf_old_" #name) "\n"                             \
          ".size __wrap_" #name ",.-__wrap_" #name "\n");
#include "cudart_glibc_wraps.def"
