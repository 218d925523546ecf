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

UniqueFd pidfd_or_kill(pid_t pid) {
  try {
    return UniqueFd(pidfd_open(pid));
  } catch (...) {
    // Without a pidfd the child cannot be watched: better no child than an unwatched one.
    ::kill(pid, SIGKILL);
    retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
    throw;
  }
}

LaunchedChild fork_with_hygiene(UniqueFd& parent_end, UniqueFd& child_end,
                                void (*child_main)(int control_fd, void* context),
                                void* context) {
  flush_std_streams();
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  lock_registry_for_fork();
  pid_t pid = ::fork();
  if (pid == 0) {
    reset_registry_in_forked_child();
    parent_end.reset();
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    child_main(child_end.release(), context);  // does not return
    ::_exit(127);
  }
  int fork_errno = errno;
  unlock_registry_after_fork_in_parent();
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw_errno(fork_errno, "cannot fork a child process");
  child_end.reset();
  LaunchedChild child;
  child.pid = pid;
  child.pidfd = pidfd_or_kill(pid);
  child.control = std::move(parent_end);
  return child;
}

namespace {
struct ForkedProcess {
  const ChildIdentity* identity;
  ForkTarget* target;
  bool forked_by_main_thread;
};
}  // namespace

LaunchedChild launch_fork(const ChildIdentity& identity, ForkTarget& target) {
  auto [parent_end, child_end] = make_socketpair();
  // PR_SET_PDEATHSIG fires when the *thread* that forked dies. Only the main thread's
  // death means the parent is gone, so other threads rely on the control channel alone.
  ForkedProcess process{&identity, &target, ::gettid() == ::getpid()};
  return fork_with_hygiene(parent_end, child_end, [](int control_fd, void* context) {
    auto* p = static_cast<ForkedProcess*>(context);
    run_child(*p->identity, control_fd, p->forked_by_main_thread,
              [](void* target) { static_cast<ForkTarget*>(target)->run(); }, p->target);
  }, &process);
}

}  // namespace mproc::detail
