// src/launch/launcher.hpp — the start methods as interchangeable launchers: each turns a
// target and a child identity into a running child. Process never knows which one ran.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <vector>

#include "mproc/process.hpp"
#include "process_registry.hpp"
#include "syscall.hpp"

namespace mproc::detail {

/// A started child as its parent sees it.
struct LaunchedChild {
  pid_t pid = 0;
  UniqueFd pidfd;     ///< readable once the child has ended
  UniqueFd control;   ///< the parent's end of the control channel; its close kills the child
  UniqueFd status;    ///< forkserver children only: the forkserver reports the wait status here
  bool direct_child = true;  ///< false when another process (the forkserver) is its parent
};

/// What a spawned program does when it enters mproc's hook before main().
enum class BootRole : std::uint8_t { process = 1, forkserver = 2 };

/// Everything a spawn or forkserver child needs; sent as one frame on its control channel.
struct BootRecord {
  BootRole role = BootRole::process;
  ChildIdentity identity;
  SpawnTarget target;
  /// PR_SET_PDEATHSIG follows the thread that created the child: set only when that is
  /// the parent's main thread, whose end is the parent's end.
  bool set_parent_death_signal = false;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(role, identity, target.entry, target.payload, set_parent_death_signal);
  }
};

LaunchedChild launch_fork(const ChildIdentity& identity, ForkTarget& target);

/// fork() with mproc's hygiene (after libuv): standard streams flushed so nothing prints
/// twice, every signal blocked across fork() so no handler runs in the child before it is
/// set up, the registry lock held so the child's copy is consistent; in the child the
/// parent's private descriptors are closed and `child_main(control_fd, context)` runs
/// (it must not return; the child exits with 127 if it does). The parent gets the child with its pidfd and `parent_end`.
LaunchedChild fork_with_hygiene(UniqueFd& parent_end, UniqueFd& child_end,
                                void (*child_main)(int control_fd, void* context),
                                void* context);
/// A pidfd for a child just started; kills and reaps it when none can be had.
UniqueFd pidfd_or_kill(pid_t pid);
/// `extra_fds` reach the child through SCM_RIGHTS; it claims them with take_inherited_fds().
LaunchedChild launch_spawn(const ChildIdentity& identity, const SpawnTarget& target,
                           std::span<const int> extra_fds = {});
LaunchedChild launch_forkserver(const ChildIdentity& identity, const SpawnTarget& target,
                                std::span<const int> extra_fds = {});

/// fork+exec of this program with `boot` waiting on the child's control channel.
LaunchedChild spawn_program(const BootRecord& boot, std::span<const int> extra_fds = {});

/// A zygote: a fork of this process, made while it is still a plain copy, that runs the
/// forkserver loop. A pool forks its workers from one so that it never has to fork
/// itself once it has threads.
LaunchedChild start_zygote();
/// How long a forkserver or zygote may take to answer a launch, or to exit when told to;
/// one that does not (SIGSTOPped, hung) is then killed.
inline constexpr int helper_reply_timeout_ms = 5'000;
/// Asks a forkserver or zygote (`server`) for a child running `target`. Throws
/// std::system_error when the server is dead, or did not answer (it is then killed).
LaunchedChild launch_from_server(LaunchedChild& server, const ChildIdentity& identity,
                                 const SpawnTarget& target, std::span<const int> extra_fds);
/// Closes a server's control socket (it exits) and reaps it; kills it first when it does not
/// exit within helper_reply_timeout_ms.
void stop_server(LaunchedChild& server) noexcept;

/// The exit code reported when a child's status cannot be known (its forkserver died).
inline constexpr int lost_exit_code = 255;
/// Reaps `child`, which has ended (its pidfd is readable): the exit() status, or -N for
/// signal N, or lost_exit_code.
int reap_child(LaunchedChild& child);
int exit_code_from_wait_status(int status);

/// Descriptors a launcher handed to this child beyond its control channel.
void set_inherited_fds(std::vector<UniqueFd> fds);
std::vector<UniqueFd> take_inherited_fds();

/// Forgets the parent's forkserver in a forked child (it will start its own).
void reset_forkserver_in_forked_child() noexcept;
/// Pids of mproc's own helper processes (the forkserver), which are not user children.
std::vector<pid_t> helper_pids();
/// Stops the forkserver, if any, and reaps it.
void stop_forkserver() noexcept;

/// The body of every child: sets up its identity and parent-death watch, runs `body`,
/// prints an escaping exception as Python does, flushes the standard streams and exits.
/// `watch_parent_thread`: also set PR_SET_PDEATHSIG (only when the creating thread is
/// the one whose death should end the child).
[[noreturn]] void run_child(const ChildIdentity& identity, int control_fd,
                            bool set_parent_death_signal, void (*body)(void*), void* context);

/// Runs a spawn target (entry resolved by FunctionId) in this process.
void run_spawn_target(const SpawnTarget& target);

/// The forkserver's request loop; never returns.
[[noreturn]] void forkserver_main(int control_fd);

/// Flushes stdio and the C++ standard streams (before fork and before a child exits).
void flush_std_streams() noexcept;

}  // namespace mproc::detail
