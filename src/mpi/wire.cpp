// src/mpi/wire.cpp — failures across machines: an agent encodes the exception its local pool
// failed a task with; the driver rebuilds the same type with the same fields.
#include "mpi/wire.hpp"

namespace mproc::mpi::detail {
namespace {

void take_report(WireError& wire, const CrashReport& report) {
  wire.pid = report.pid;
  wire.exit_code = report.exit_code;
  wire.signal = report.signal;
  wire.signal_name = report.signal_name;
  wire.stderr_tail = report.stderr_tail;
  wire.oom_killed = report.oom_killed;
}

}  // namespace

WireError WireError::from(std::exception_ptr error) {
  WireError wire;
  try {
    std::rethrow_exception(error);
  } catch (const WorkerCrashed& e) {
    wire.kind = crashed;
    take_report(wire, e.report());
  } catch (const TaskTimeout& e) {
    wire.kind = timed_out;
    wire.limit = e.limit().count();
    take_report(wire, e.report());
  } catch (const MemoryLimitExceeded& e) {
    wire.kind = memory;
    wire.limit = static_cast<std::int64_t>(e.limit_bytes());
    take_report(wire, e.report());
  } catch (const RemoteError& e) {
    wire.kind = remote_error;
    wire.remote.type_name = e.type_name();
    wire.remote.what = e.remote_what();
    wire.remote.traceback = e.remote_traceback();
  } catch (const PoolBroken& e) {
    wire.kind = broken;
    wire.what = e.what();
  } catch (const PoolTerminated& e) {
    wire.kind = terminated;
    wire.what = e.what();
  } catch (const SerializationError& e) {
    wire.kind = serialization;
    wire.what = e.what();
  } catch (...) {
    // A std type or a registered one (the local pool rebuilt it from its type id): its
    // dynamic type id lets the driver, which runs the same program, rebuild it again.
    wire.kind = rebuilt;
    wire.remote = mproc::detail::capture_current_exception(false);
  }
  return wire;
}

CrashReport WireError::report() const {
  CrashReport report;
  report.pid = static_cast<pid_t>(pid);
  report.exit_code = exit_code;
  report.signal = signal;
  report.signal_name = signal_name;
  report.stderr_tail = stderr_tail;
  report.oom_killed = oom_killed;
  return report;
}

std::exception_ptr rebuild(const WireError& error, const std::string& function, std::optional<std::size_t> item,
                           const std::string& where) {
  CrashReport report = error.report();
  report.function = function;
  report.item = item;
  switch (error.kind) {
    case WireError::crashed: {
      // "worker 123 was killed by SIGSEGV while running f on item 4, on rank 2 (host)"
      // followed by the tail of its stderr.
      std::string what = report.describe();
      const auto line_end = what.find('\n');
      what.insert(line_end == std::string::npos ? what.size() : line_end, ", on " + where);
      return std::make_exception_ptr(WorkerCrashed(what, std::move(report)));
    }
    case WireError::timed_out:
      return std::make_exception_ptr(TaskTimeout(std::chrono::nanoseconds(error.limit), std::move(report)));
    case WireError::memory:
      return std::make_exception_ptr(MemoryLimitExceeded(static_cast<std::size_t>(error.limit), std::move(report)));
    case WireError::remote_error:
      return std::make_exception_ptr(RemoteError(error.remote.type_name, error.remote.what, error.remote.traceback));
    case WireError::rebuilt: return mproc::detail::rebuild_exception(error.remote);
    case WireError::broken: return std::make_exception_ptr(PoolBroken(error.what + " (on " + where + ")"));
    case WireError::terminated: return std::make_exception_ptr(PoolTerminated(error.what));
    case WireError::serialization: return std::make_exception_ptr(SerializationError(error.what));
    default: return std::make_exception_ptr(RemoteError("unknown exception", error.what, {}));
  }
}

}  // namespace mproc::mpi::detail
