// tests/support/crash.hpp — ways for a test's child to die that no sanitizer intercepts.
#pragma once

#include <cstdint>

namespace mproc_test {

/// A real invalid memory write (not through a null pointer, which UBSan would report
/// first): the kernel delivers SIGSEGV. Under ASan the tests run with handle_segv=0.
[[noreturn]] inline void segfault() {
  volatile std::uintptr_t address = 16;
  *reinterpret_cast<volatile int*>(address) = 1;
  __builtin_trap();
}

}  // namespace mproc_test
