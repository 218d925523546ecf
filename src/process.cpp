// src/process.cpp — Process: starts a child through the chosen launcher, watches it
// through its pidfd and turns its end into an exit code as Python does.
#include "mproc/process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstring>

#include "fd_passing.hpp"
#include "process_state.hpp"
#include "syscall.hpp"

namespace mproc {
namespace detail {

[[noreturn]] void refuse_target(StartMethod method, const std::string& function_name,
                                const std::string& reason) {
  throw std::invalid_argument(std::string("mproc::Process: cannot start ") + function_name +
                              " with start method " + to_string(method) + ": " + reason);
}

ProcessState::ProcessState(const ProcessOptions& opts, TargetSpec target)
    : options(opts), spec(std::move(target)), identity(next_child_identity(opts)) {}

namespace {

int milliseconds_for_poll(std::chrono::nanoseconds timeout) {
  if (timeout <= std::chrono::nanoseconds::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

}  // namespace

void ProcessState::reap_locked() const {
  auto& self = const_cast<ProcessState&>(*this);
  exitcode = reap_child(self.child);
  // The pidfd stays open (it is the sentinel) until the Process is destroyed.
  for (UniqueFd* fd : {&self.child.control, &self.child.status}) {
    if (*fd) untrack_parent_only_fd(fd->get());
    fd->reset();
  }
}

bool ProcessState::wait_locked(int timeout_ms) const {
  if (!started) throw std::logic_error("mproc::Process: cannot join a process that was not started");
  if (exitcode) return true;
  if (!poll_one(child.pidfd.get(), POLLIN, timeout_ms)) return false;
  reap_locked();
  return true;
}

void ProcessState::signal_locked(int signo) const {
  if (!started || exitcode) return;
  pidfd_send_signal(child.pidfd.get(), signo);
}

}  // namespace detail

const char* to_string(StartMethod method) noexcept {
  switch (method) {
    case StartMethod::fork: return "fork";
    case StartMethod::forkserver: return "forkserver";
    case StartMethod::spawn: return "spawn";
  }
  return "unknown";
}

Process::Process(const ProcessOptions& options, detail::TargetSpec spec)
    : state_(std::make_unique<detail::ProcessState>(options, std::move(spec))) {}

Process::Process(Process&&) noexcept = default;

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Process doomed(std::move(*this));  // joins (or terminates) what this object ran
    state_ = std::move(other.state_);
  }
  return *this;
}

Process::~Process() {
  if (!state_) return;
  try {
    std::unique_lock lock(state_->mutex);
    if (state_->started && !state_->exitcode) {
      if (state_->options.daemon) {
        state_->signal_locked(SIGTERM);
        if (!state_->wait_locked(2000)) state_->signal_locked(SIGKILL);
      }
      state_->wait_locked(-1);
    }
  } catch (...) {
    // Destructors never throw; the exit handler reaps what could not be reaped here.
  }
  detail::untrack_child(state_.get());
  for (detail::UniqueFd* fd : {&state_->child.control, &state_->child.pidfd, &state_->child.status})
    if (*fd) detail::untrack_parent_only_fd(fd->get());
}

void Process::start() {
  detail::ProcessState& s = *state_;
  std::lock_guard lock(s.mutex);
  if (s.started) throw std::logic_error("mproc::Process: cannot start a process twice (" + s.identity.name + ")");
  switch (s.options.start_method) {
    case StartMethod::fork:
      s.child = detail::launch_fork(s.identity, *s.spec.fork_target);
      // The child has its copy; this process lets go of the arguments (a Connection
      // moved into the child must close here, or its peer never sees EOF).
      s.spec.fork_target.reset();
      break;
    case StartMethod::spawn:
    case StartMethod::forkserver: {
      const auto& target = *s.spec.spawn_target;
      std::span<const int> fds;
      if (target.fds) fds = target.fds->fds();
      s.child = s.options.start_method == StartMethod::spawn ? detail::launch_spawn(s.identity, target, fds)
                                                             : detail::launch_forkserver(s.identity, target, fds);
      break;
    }
  }
  s.started = true;
  for (detail::UniqueFd* fd : {&s.child.control, &s.child.pidfd, &s.child.status})
    if (*fd) detail::track_parent_only_fd(fd->get());
  detail::track_child(&s);
}

void Process::join() {
  std::lock_guard lock(state_->mutex);
  state_->wait_locked(-1);
}

bool Process::join_for(std::chrono::nanoseconds timeout) {
  std::lock_guard lock(state_->mutex);
  return state_->wait_locked(detail::milliseconds_for_poll(timeout));
}

void Process::terminate() {
  std::lock_guard lock(state_->mutex);
  state_->signal_locked(SIGTERM);
}

void Process::kill() {
  std::lock_guard lock(state_->mutex);
  state_->signal_locked(SIGKILL);
}

bool Process::is_alive() const {
  std::lock_guard lock(state_->mutex);
  return state_->started && !state_->wait_locked(0);
}

std::optional<int> Process::exitcode() const {
  std::lock_guard lock(state_->mutex);
  if (state_->started) state_->wait_locked(0);
  return state_->exitcode;
}

pid_t Process::pid() const noexcept { return state_->started ? state_->child.pid : 0; }
const std::string& Process::name() const noexcept { return state_->identity.name; }
bool Process::daemon() const noexcept { return state_->options.daemon; }
StartMethod Process::start_method() const noexcept { return state_->options.start_method; }
int Process::sentinel() const noexcept { return state_->started ? state_->child.pidfd.get() : -1; }

}  // namespace mproc
