// Output buffers of the CPU kernels are large and freshly allocated: faulting
// them in 4 KiB pages costs more than the kernels' own work. Where the kernel
// offers transparent huge pages on request (THP "madvise" mode), ask for them
// on the 2 MiB-aligned middle of the buffer before its first touch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace noiseforge::cpu {

// $NOISEFORGE_HUGE_PAGES=0 turns the hint off (where the kernel's direct
// compaction for huge pages stalls more than the small-page faults it saves).
inline bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("NOISEFORGE_HUGE_PAGES");
    return v == nullptr || v[0] != '0';
  }();
  return wanted;
}

inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!huge_pages_wanted()) return;
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint only
#else
  (void)p;
  (void)bytes;
#endif
}

// A scratch array of trivially constructible T (left uninitialised), 64-byte
// aligned; from 2 MiB on, 2 MiB-aligned so that all of it can take huge pages.
template <typename T>
class ScratchArray {
 public:
  explicit ScratchArray(size_t count) {
    if (count == 0) return;
    if (count > (SIZE_MAX >> 22) / sizeof(T)) throw std::bad_alloc();  // the size would wrap
    constexpr size_t kHuge = size_t{1} << 21;
    const size_t align = count * sizeof(T) >= kHuge ? kHuge : 64;
    const size_t bytes = (count * sizeof(T) + align - 1) & ~(align - 1);
    data_ = static_cast<T*>(std::aligned_alloc(align, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    if (align == kHuge) advise_huge_pages(data_, bytes);
  }
  ~ScratchArray() { std::free(data_); }
  ScratchArray(const ScratchArray&) = delete;
  ScratchArray& operator=(const ScratchArray&) = delete;
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
};

}  // namespace noiseforge::cpu
