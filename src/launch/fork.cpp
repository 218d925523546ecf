// src/launch/fork.cpp — the fork start method: the child is a copy of this process and
// runs the target straight from memory, so any callable and any arguments work.
//
// Hygiene (after libuv's process.c): every signal is blocked across fork() so no handler
// runs in the child before it is set up; the registry lock is held so the child's copy
// of it is consistent; the standard streams are flushed first so buffered output is not
// printed twice.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch/launcher.hpp"
#include "syscall.hpp"

namespace mproc::detail {

LaunchedChild launch_fork(const ChildIdentity& identity, ForkTarget& target) {
  auto [parent_end, child_end] = make_socketpair();
  flush_std_streams();
  // PR_SET_PDEATHSIG fires when the *thread* that forked dies. Only the main thread's
  // death means the parent is gone, so other threads rely on the control channel alone.
  const bool forked_by_main_thread = ::gettid() == ::getpid();

  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  lock_registry_for_fork();
  pid_t pid = ::fork();
  if (pid == 0) {
    reset_registry_in_forked_child();
    parent_end.reset();
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    run_child(identity, child_end.release(), forked_by_main_thread,
              [](void* context) { static_cast<ForkTarget*>(context)->run(); }, &target);
  }
  int fork_errno = errno;
  unlock_registry_after_fork_in_parent();
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw_errno(fork_errno, "cannot fork a child process");
  child_end.reset();

  LaunchedChild child;
  child.pid = pid;
  try {
    child.pidfd = UniqueFd(pidfd_open(pid));
  } catch (...) {
    ::kill(pid, SIGKILL);
    retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
    throw;
  }
  child.control = std::move(parent_end);
  return child;
}

}  // namespace mproc::detail
