// src/pool/throw_trace_store.cpp — the stack recorded at the last throw of each thread.
#include <boost/stacktrace.hpp>
#include <optional>
#include <sstream>
#include <string>

namespace mproc::detail {
namespace {
thread_local std::optional<boost::stacktrace::stacktrace> last_throw;
}

void record_throw_trace() {
  // Skip the interposed __cxa_throw and this function: the trace starts at the thrower.
  last_throw.emplace(2, static_cast<std::size_t>(-1));
}

/// The trace of the last throw on this thread, formatted (empty when none), and forgets it.
std::string take_throw_trace() {
  if (!last_throw) return {};
  std::ostringstream text;
  text << *last_throw;
  last_throw.reset();
  return text.str();
}

}  // namespace mproc::detail
