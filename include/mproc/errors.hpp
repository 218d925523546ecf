// mproc/errors.hpp — the exception hierarchy every mproc module throws.
//
//   std::runtime_error
//   └── Error                      root of everything mproc throws itself
//       ├── TimeoutError           a wait with a timeout ran out (the work may still finish)
//       ├── WorkerCrashed          the worker running a task died (signal, exit, OOM kill)
//       ├── TaskTimeout            a task ran past its time limit; its worker was killed
//       ├── MemoryLimitExceeded    a task went over max_memory_per_child
//       ├── RemoteError            a task threw an exception type mproc cannot rebuild
//       ├── PoolClosed             work submitted after close()
//       ├── PoolTerminated         the pool was terminated while the task was pending
//       ├── PoolBroken             the pool cannot run work (e.g. initializer crash loop)
//       ├── SerializationError     a value could not be encoded or bytes could not be decoded
//       ├── EOFError               the other end of a Connection closed
//       ├── Empty / Full           a queue had nothing to get / no room to put
//       ├── BrokenBarrier          a Barrier broke (a party died, timed out or called abort)
//       └── CancelledError         the result of a cancelled task was asked for
//
// Operating-system failures are std::system_error; misuse of an argument is
// std::invalid_argument; calling a method in the wrong state is std::logic_error.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace mproc {

/// Root of every exception mproc throws itself.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A blocking call with a timeout ran out of time. The awaited work is not cancelled.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

/// What is known about a worker that died while it ran a task.
struct CrashReport {
  pid_t pid = 0;                    ///< the worker's pid
  std::optional<int> exit_code;     ///< set when the worker called exit()
  std::optional<int> signal;        ///< set when a signal ended it
  std::string signal_name;          ///< "SIGSEGV", ... (empty when no signal)
  std::string function;             ///< the task's function name
  std::optional<std::size_t> item;  ///< index of the item within its map/imap input
  std::string stderr_tail;          ///< the last lines the worker wrote to stderr
  bool oom_killed = false;          ///< the kernel's OOM killer ended it

  /// One line (plus the stderr tail) for an exception message or a log.
  std::string describe() const;
};

/// The worker process that was running a task died before the task finished.
class WorkerCrashed : public Error {
 public:
  explicit WorkerCrashed(CrashReport report);
  WorkerCrashed(const std::string& what, CrashReport report);
  const CrashReport& report() const noexcept { return report_; }

 private:
  CrashReport report_;
};

/// A task ran longer than its time limit; its worker was killed and replaced.
class TaskTimeout : public Error {
 public:
  TaskTimeout(std::chrono::nanoseconds limit, CrashReport report);
  std::chrono::nanoseconds limit() const noexcept { return limit_; }
  const CrashReport& report() const noexcept { return report_; }

 private:
  std::chrono::nanoseconds limit_;
  CrashReport report_;
};

/// A task's worker went over max_memory_per_child (the kernel enforced the limit).
class MemoryLimitExceeded : public Error {
 public:
  MemoryLimitExceeded(std::size_t limit_bytes, CrashReport report);
  std::size_t limit_bytes() const noexcept { return limit_bytes_; }
  const CrashReport& report() const noexcept { return report_; }

 private:
  std::size_t limit_bytes_;
  CrashReport report_;
};

/// A task threw an exception whose type mproc cannot rebuild in this process.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string remote_what, std::string remote_traceback);
  const std::string& type_name() const noexcept { return type_name_; }
  const std::string& remote_what() const noexcept { return remote_what_; }
  const std::string& remote_traceback() const noexcept { return remote_traceback_; }

 private:
  std::string type_name_;
  std::string remote_what_;
  std::string remote_traceback_;
};

/// Work was submitted to a pool after close() or terminate().
class PoolClosed : public Error {
 public:
  using Error::Error;
};

/// The pool was terminated while this task was pending or running.
class PoolTerminated : public Error {
 public:
  using Error::Error;
};

/// The pool cannot run work any more (e.g. its workers die in the initializer).
class PoolBroken : public Error {
 public:
  using Error::Error;
};

/// A value could not be serialized, or received bytes are corrupt or truncated.
class SerializationError : public Error {
 public:
  using Error::Error;
};

/// The other end of a Connection closed (Python's EOFError from Connection.recv).
class EOFError : public Error {
 public:
  using Error::Error;
};

/// Queue::get with a timeout found nothing to get.
class Empty : public Error {
 public:
  using Error::Error;
};

/// Queue::put with a timeout found no room.
class Full : public Error {
 public:
  using Error::Error;
};

/// A Barrier broke: a party died, a wait timed out, or abort() was called.
class BrokenBarrier : public Error {
 public:
  using Error::Error;
};

/// The result of a cancelled task was asked for.
class CancelledError : public Error {
 public:
  using Error::Error;
};

/// The name of a signal ("SIGSEGV"), or "signal N" for one without a name.
std::string signal_name(int signo);

}  // namespace mproc
