// mproc/process.hpp — Process (a function run in a child process), the start methods,
// and what a process knows about itself: current_process(), parent_process(),
// active_children(), cpu_count().
//
//   mproc::Process worker([](int n) { std::printf("%d\n", n); }, 42);
//   worker.start();
//   worker.join();                 // worker.exitcode() == 0
//
// A Process is started by one of three start methods (see docs/process.md):
//   fork        the child is a copy of this process: any callable, any arguments.
//   forkserver  a clean single-threaded helper process forks the child: safe in
//               programs with threads. The target must be stateless and the
//               arguments serializable.
//   spawn       fork + exec of this same program, entered before main():
//               the cleanest child, the slowest start. Same rules as forkserver.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/detail/function_identity.hpp"
#include "mproc/errors.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

/// How a child process is created. See docs/process.md for what each costs.
enum class StartMethod { fork, forkserver, spawn };

/// "fork", "forkserver" or "spawn".
const char* to_string(StartMethod method) noexcept;

/// Options of a Process; use designated initializers:
/// `Process(ProcessOptions{.name = "loader", .daemon = true}, load, path)`.
struct ProcessOptions {
  std::string name;  ///< empty: "Process-N" (children of children: "Process-N:M")
  bool daemon = false;  ///< daemons are terminated, not waited for, when their Process is destroyed
  StartMethod start_method = StartMethod::fork;
};

/// Who a process is: its pid and name. Returned by current_process() and friends.
class ProcessInfo {
 public:
  ProcessInfo(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  pid_t pid() const noexcept { return pid_; }
  const std::string& name() const noexcept { return name_; }

 private:
  pid_t pid_;
  std::string name_;
};

/// This process: "MainProcess" in the program's first process, the Process's name in a child.
ProcessInfo current_process();
/// The process that started this one, or nullopt in the main process.
std::optional<ProcessInfo> parent_process();
/// The children this process started that are still running (finished ones are reaped).
std::vector<ProcessInfo> active_children();
/// CPUs this process may use: its affinity mask, capped by a cgroup CPU quota. At least 1.
unsigned cpu_count();

namespace detail {

/// A target run in a forked child (a copy of this process's memory).
class ForkTarget {
 public:
  virtual ~ForkTarget() = default;
  virtual void run() = 0;
};

template <class F, class Tuple>
class ForkTargetImpl final : public ForkTarget {
 public:
  ForkTargetImpl(F f, Tuple args) : f_(std::move(f)), args_(std::move(args)) {}
  void run() override { std::apply(std::move(f_), std::move(args_)); }

 private:
  F f_;
  Tuple args_;
};

/// What a spawn or forkserver child runs: an entry point named by FunctionId that
/// decodes its serialized arguments and calls the target.
using SpawnEntry = void (*)(std::span<const std::byte> payload);
struct SpawnTarget {
  FunctionId entry;
  std::vector<std::byte> payload;
  /// Descriptors of shareable arguments (queues, locks, ...): they travel beside the
  /// payload with SCM_RIGHTS. Not part of the serialized record.
  std::shared_ptr<FdSink> fds;
};

/// The descriptors that travelled beside this child's payload (spawn/forkserver children).
std::vector<int> take_inherited_fd_numbers();

/// Decodes `payload` as T with the descriptors this child inherited at hand.
template <class T>
T deserialize_with_inherited_fds(std::span<const std::byte> payload) {
  FdSource source(take_inherited_fd_numbers());
  ScopedFdSource use(source);
  return deserialize<T>(payload);
}

/// How an argument is stored until the child runs: string literals become std::string,
/// so they can be serialized under spawn and outlive the caller's buffer.
template <class T>
using stored_arg_t =
    std::conditional_t<std::is_same_v<std::decay_t<T>, const char*> || std::is_same_v<std::decay_t<T>, char*>,
                       std::string, std::decay_t<T>>;

/// A target that needs no state of this process: a captureless lambda, an empty
/// functor, or a plain function pointer.
template <class F>
inline constexpr bool is_stateless_target_v =
    (std::is_empty_v<F> && std::is_default_constructible_v<F>) ||
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>);

template <class F, class Tuple>
void spawn_entry(std::span<const std::byte> payload) {
  if constexpr (std::is_pointer_v<F>) {
    auto [function, args] = deserialize_with_inherited_fds<std::pair<FunctionId, Tuple>>(payload);
    auto target = reinterpret_cast<F>(resolve_function(function));
    std::apply(target, std::move(args));
  } else {
    std::apply(F{}, deserialize_with_inherited_fds<Tuple>(payload));
  }
}

/// Everything a Process needs to know about its target, with the types erased.
struct TargetSpec {
  std::unique_ptr<ForkTarget> fork_target;  // fork
  std::optional<SpawnTarget> spawn_target;  // spawn and forkserver
  std::string function_name;
};

[[noreturn]] void refuse_target(StartMethod method, const std::string& function_name,
                                const std::string& reason);

template <class F, class... Args>
TargetSpec make_target_spec(StartMethod method, F&& target, Args&&... args) {
  using Fn = std::decay_t<F>;
  using Tuple = std::tuple<stored_arg_t<Args>...>;
  TargetSpec spec;
  // Naming a function pointer reads debug information: only done to refuse a target.
  auto name = [&] {
    if constexpr (std::is_pointer_v<Fn>)
      return function_name_at(reinterpret_cast<const void*>(target));
    else
      return demangled_type_name<Fn>();
  };
  if constexpr (!std::is_pointer_v<Fn>) spec.function_name = demangled_type_name<Fn>();
  if (method == StartMethod::fork) {
    spec.fork_target = std::make_unique<ForkTargetImpl<Fn, Tuple>>(
        Fn(std::forward<F>(target)), Tuple(std::forward<Args>(args)...));
    return spec;
  }
  if constexpr (!is_stateless_target_v<Fn>) {
    refuse_target(method, name(),
                  "the target has state (a lambda with captures, std::function or a functor "
                  "with members); only function pointers, captureless lambdas and empty "
                  "functors can be re-created in a process that does not share this one's "
                  "memory. Use StartMethod::fork, or pass the state as arguments");
  } else if constexpr (!Serializable<Tuple>) {
    refuse_target(method, name(),
                  "an argument type cannot be serialized (" + demangled_type_name<Tuple>() +
                      "); give it a serialize(Archive&) function or use StartMethod::fork");
  } else {
    SpawnTarget spawn;
    spawn.entry = function_id_of(reinterpret_cast<const void*>(&spawn_entry<Fn, Tuple>));
    spawn.fds = std::make_shared<FdSink>();
    ScopedFdSink collect_fds(*spawn.fds);
    if constexpr (std::is_pointer_v<Fn>)
      spawn.payload = serialize(std::pair<FunctionId, Tuple>(
          function_id_of(reinterpret_cast<const void*>(target)), Tuple(std::forward<Args>(args)...)));
    else
      spawn.payload = serialize(Tuple(std::forward<Args>(args)...));
    spec.spawn_target = std::move(spawn);
    return spec;
  }
}

class ProcessState;

}  // namespace detail

/// A function run in a child process, like Python's multiprocessing.Process.
///
/// Throws (constructor): std::invalid_argument when the start method cannot carry the
/// target (a stateful target or unserializable arguments under spawn/forkserver).
/// Thread-safety: one Process object must not be used from two threads at once;
/// different Process objects are independent.
/// Destruction: a started, unjoined process is joined; a daemon is terminated first.
class Process {
 public:
  template <class F, class... Args>
    requires(!std::same_as<std::remove_cvref_t<F>, ProcessOptions> &&
             std::invocable<std::decay_t<F>, detail::stored_arg_t<Args>...>)
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  template <class F, class... Args>
    requires std::invocable<std::decay_t<F>, detail::stored_arg_t<Args>...>
  Process(const ProcessOptions& options, F&& target, Args&&... args)
      : Process(options, detail::make_target_spec(options.start_method, std::forward<F>(target),
                                                  std::forward<Args>(args)...)) {}

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  /// Starts the child. Throws std::logic_error when called twice, std::system_error
  /// when the operating system refuses (e.g. out of processes).
  void start();
  /// Waits for the child to end. Throws std::logic_error when not started.
  void join();
  /// Waits at most `timeout`; true when the child has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  /// Sends SIGTERM (no effect once the child has ended).
  void terminate();
  /// Sends SIGKILL (no effect once the child has ended).
  void kill();
  /// True between start() and the child's end.
  bool is_alive() const;
  /// nullopt while running or before start; 0 when the target returned, the status of
  /// exit(), -N when signal N ended it, 1 when the target threw.
  std::optional<int> exitcode() const;
  /// The child's pid, 0 before start().
  pid_t pid() const noexcept;
  const std::string& name() const noexcept;
  bool daemon() const noexcept;
  StartMethod start_method() const noexcept;
  /// A pidfd of the child (readable once it has ended), -1 before start().
  int sentinel() const noexcept;

 private:
  Process(const ProcessOptions& options, detail::TargetSpec spec);
  bool join_for(std::chrono::nanoseconds timeout);

  std::unique_ptr<detail::ProcessState> state_;
};

}  // namespace mproc
