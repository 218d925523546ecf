// src/errors.cpp — messages of the exception hierarchy and the crash report.
#include "mproc/errors.hpp"

#include <signal.h>
#include <string.h>

#include <string>

namespace mproc {

std::string signal_name(int signo) {
  if (const char* abbrev = sigabbrev_np(signo)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(signo);
}

std::string CrashReport::describe() const {
  std::string text = "worker " + std::to_string(pid);
  if (signal) {
    text += " was killed by " + (signal_name.empty() ? mproc::signal_name(*signal) : signal_name);
    if (oom_killed) text += " (the kernel's OOM killer)";
  } else if (exit_code) {
    text += " exited with status " + std::to_string(*exit_code);
  } else {
    text += " died";
  }
  if (!function.empty()) text += " while running " + function;
  if (item) text += " on item " + std::to_string(*item);
  if (!stderr_tail.empty()) {
    text += "\n--- tail of the worker's stderr ---\n" + stderr_tail;
    if (text.back() != '\n') text += '\n';
  }
  return text;
}

WorkerCrashed::WorkerCrashed(CrashReport report)
    : Error(report.describe()), report_(std::move(report)) {}

WorkerCrashed::WorkerCrashed(const std::string& what, CrashReport report)
    : Error(what), report_(std::move(report)) {}

TaskTimeout::TaskTimeout(std::chrono::nanoseconds limit, CrashReport report)
    : Error("task " + (report.function.empty() ? std::string() : report.function + " ") +
            "ran past its time limit of " +
            std::to_string(std::chrono::duration<double>(limit).count()) + " s; worker " +
            std::to_string(report.pid) + " was killed"),
      limit_(limit),
      report_(std::move(report)) {}

MemoryLimitExceeded::MemoryLimitExceeded(std::size_t limit_bytes, CrashReport report)
    : Error("task " + (report.function.empty() ? std::string() : report.function + " ") +
            "went over the memory limit of " + std::to_string(limit_bytes) + " bytes in worker " +
            std::to_string(report.pid)),
      limit_bytes_(limit_bytes),
      report_(std::move(report)) {}

RemoteError::RemoteError(std::string type_name, std::string remote_what,
                         std::string remote_traceback)
    : Error(type_name + ": " + remote_what),
      type_name_(std::move(type_name)),
      remote_what_(std::move(remote_what)),
      remote_traceback_(std::move(remote_traceback)) {}

}  // namespace mproc
