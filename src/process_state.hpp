// src/process_state.hpp — the state behind a Process object: its target, its launched
// child and how that child's end is observed and reaped.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>

#include "launch/launcher.hpp"
#include "mproc/process.hpp"
#include "process_registry.hpp"

namespace mproc::detail {

class ProcessState {
 public:
  ProcessState(const ProcessOptions& options, TargetSpec spec);

  ProcessOptions options;
  TargetSpec spec;
  ChildIdentity identity;

  mutable std::mutex mutex;
  bool started = false;
  LaunchedChild child;
  mutable std::optional<int> exitcode;

  /// Waits up to timeout_ms (-1: forever) for the child to end and reaps it. Caller holds mutex.
  bool wait_locked(int timeout_ms) const;
  /// Sends `signo` unless the child has ended. Caller holds mutex.
  void signal_locked(int signo) const;

 private:
  void reap_locked() const;
};

}  // namespace mproc::detail
