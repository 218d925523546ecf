// src/pool/throw_trace.cpp — where was it thrown? A worker reports an exception after the
// stack has unwound, so the trace is taken at the throw: this file interposes
// __cxa_throw (the C++ runtime's throw entry point), records the thrower's stack when
// traces are enabled (in pool workers only), and hands over to the real __cxa_throw.
//
// This file declares no C++ runtime headers: <cxxabi.h> declares __cxa_throw with
// attributes that a definition here would have to match exactly.
#include <dlfcn.h>

#include <atomic>

namespace std {
class type_info;
}

namespace mproc::detail {
void record_throw_trace();  // throw_trace_store.cpp

namespace {
std::atomic<bool> traces_enabled{false};
thread_local bool recording = false;
}  // namespace

void enable_throw_traces() { traces_enabled.store(true, std::memory_order_relaxed); }
bool throw_traces_enabled() { return traces_enabled.load(std::memory_order_relaxed); }

}  // namespace mproc::detail

extern "C" [[noreturn]] void __cxa_throw(void* object, std::type_info* type, void (*destructor)(void*)) {
  using Throw = void (*)(void*, std::type_info*, void (*)(void*));
  static const Throw real = reinterpret_cast<Throw>(dlsym(RTLD_NEXT, "__cxa_throw"));
  if (mproc::detail::throw_traces_enabled() && !mproc::detail::recording) {
    mproc::detail::recording = true;  // a throw while recording is not recorded again
    try {
      mproc::detail::record_throw_trace();
    } catch (...) {
    }
    mproc::detail::recording = false;
  }
  real(object, type, destructor);
  __builtin_unreachable();
}
