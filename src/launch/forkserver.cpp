// src/launch/forkserver.cpp — the forkserver start method. A helper process, spawned
// (fork+exec) on first use and therefore single-threaded and clean, forks every child.
// Programs with threads use it so that no child is forked from a multi-threaded process.
//
//   parent ── request frame {BootRecord; fds: child's control end, status end} ──▶ forkserver
//   forkserver ── fork() ──▶ child (runs the target; its control channel is the parent's)
//   forkserver ── reply on the status socket {pid; fd: pidfd} ──▶ parent
//   forkserver ── on SIGCHLD: reap, send {wait status} on the status socket, close it ──▶ parent
//
// The child is the forkserver's, so the parent watches it through the pidfd the
// forkserver sends (race-free: opened before the child can be reaped) and learns its
// exit status from the status socket. The child dies with the *parent* (its control
// channel), not with the forkserver: a forkserver that dies is restarted on next use.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <system_error>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"
#include "mproc/serialize.hpp"
#include "syscall.hpp"

namespace mproc::detail {
namespace {

// ---------------------------------------------------------------- the parent's side

struct ForkserverClient {
  std::mutex mutex;
  pid_t owner = 0;  // the process these fields belong to (a forked child starts afresh)
  LaunchedChild server;
};

ForkserverClient& client() {
  static ForkserverClient* c = new ForkserverClient();  // never destroyed: used at exit
  return *c;
}

void stop_locked(ForkserverClient& c) noexcept {
  if (!c.server.pidfd) return;
  untrack_parent_only_fd(c.server.control.get());
  untrack_parent_only_fd(c.server.pidfd.get());
  c.server.control.reset();  // EOF: the forkserver leaves its loop and exits
  siginfo_t info{};
  retry_eintr([&] { return ::waitid(P_PIDFD, c.server.pidfd.get(), &info, WEXITED); });
  c.server = LaunchedChild{};
}

void ensure_started_locked(ForkserverClient& c) {
  if (c.owner != ::getpid()) {
    c.server = LaunchedChild{};
    c.owner = ::getpid();
  }
  if (c.server.pidfd && !poll_one(c.server.pidfd.get(), POLLIN, 0)) return;  // alive
  if (c.server.pidfd) stop_locked(c);  // it died: reap it and start another
  BootRecord boot;
  boot.role = BootRole::forkserver;
  boot.identity.name = "mproc-forkserver";
  boot.identity.parent_pid = ::getpid();
  c.server = spawn_program(boot);
  track_parent_only_fd(c.server.control.get());
  track_parent_only_fd(c.server.pidfd.get());
}

}  // namespace

LaunchedChild launch_from_server(LaunchedChild& server, const ChildIdentity& identity,
                                 const SpawnTarget& target, std::span<const int> extra_fds) {
  BootRecord boot;
  boot.role = BootRole::process;
  boot.identity = identity;
  boot.target = target;
  std::vector<std::byte> record = serialize(boot);
  auto [control_parent, control_child] = make_socketpair();
  auto [status_parent, status_child] = make_socketpair();
  std::vector<int> fds = {control_child.get(), status_child.get()};
  fds.insert(fds.end(), extra_fds.begin(), extra_fds.end());
  send_frame(server.control.get(), record, fds);
  control_child.reset();
  status_child.reset();
  // A server that does not answer (SIGSTOPped, or wedged) must not freeze the caller — a
  // pool's supervisor replacing a worker holds the pool's launch path meanwhile. It is killed
  // and reported like a dead one, which every caller already handles (restart, fall back).
  if (!poll_one(status_parent.get(), POLLIN, helper_reply_timeout_ms)) {
    if (server.pidfd) pidfd_send_signal(server.pidfd.get(), SIGKILL);
    throw std::system_error(std::make_error_code(std::errc::timed_out),
                            "the forkserver did not answer within " + std::to_string(helper_reply_timeout_ms / 1000) +
                                " s (stopped or hung); it was killed");
  }
  Frame reply;
  if (!recv_frame(status_parent.get(), reply) || reply.fds.size() != 1 ||
      reply.bytes.size() != sizeof(std::int32_t))
    throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                            "the forkserver died while starting a child");
  std::int32_t pid;
  std::memcpy(&pid, reply.bytes.data(), sizeof pid);
  LaunchedChild child;
  child.pid = pid;
  child.pidfd = std::move(reply.fds[0]);
  child.control = std::move(control_parent);
  child.status = std::move(status_parent);
  child.direct_child = false;
  return child;
}

LaunchedChild launch_forkserver(const ChildIdentity& identity, const SpawnTarget& target,
                                std::span<const int> extra_fds) {
  // A forkserver killed from outside (the OOM killer, a stray kill) between two launches or
  // during one is restarted, a few times in a row: a fresh one can be killed too while a
  // pool is replacing a worker, and the pool breaks when a worker cannot be started. The
  // bound keeps a forkserver that cannot boot at all an error rather than a loop.
  constexpr int max_restarts = 4;
  ForkserverClient& c = client();
  std::lock_guard lock(c.mutex);
  for (int attempt = 0;; ++attempt) {
    ensure_started_locked(c);
    try {
      return launch_from_server(c.server, identity, target, extra_fds);
    } catch (const std::system_error&) {
      // After the first restart, only a death is retried. The socket breaks in
      // exit_files(), a moment before the pidfd becomes readable in exit_notify(): allow it.
      if (attempt >= max_restarts || (attempt > 0 && !poll_one(c.server.pidfd.get(), POLLIN, 1000))) throw;
      stop_locked(c);
    }
  }
}

void stop_server(LaunchedChild& server) noexcept {
  if (!server.pidfd) return;
  server.control.reset();  // EOF: the server leaves its loop and exits
  try {
    // A stopped (or hung) server never reads the EOF: it is killed after a while.
    if (!poll_one(server.pidfd.get(), POLLIN, helper_reply_timeout_ms)) pidfd_send_signal(server.pidfd.get(), SIGKILL);
  } catch (...) {
    pidfd_send_signal(server.pidfd.get(), SIGKILL);
  }
  siginfo_t info{};
  retry_eintr([&] { return ::waitid(P_PIDFD, server.pidfd.get(), &info, WEXITED); });
  server = LaunchedChild{};
}

LaunchedChild start_zygote() {
  auto [parent_end, child_end] = make_socketpair();
  return fork_with_hygiene(parent_end, child_end, [](int control_fd, void*) {
    // The zygote lives exactly as long as its pool: it leaves its loop on EOF.
    ChildIdentity identity;
    identity.name = "mproc-zygote";
    identity.parent_pid = ::getppid();
    become_child(identity);
    forkserver_main(control_fd);
  }, nullptr);
}

std::vector<pid_t> helper_pids() {
  ForkserverClient& c = client();
  std::lock_guard lock(c.mutex);
  if (c.owner != ::getpid() || !c.server.pidfd) return {};
  return {c.server.pid};
}

void stop_forkserver() noexcept {
  ForkserverClient& c = client();
  std::lock_guard lock(c.mutex);
  if (c.owner == ::getpid()) stop_locked(c);
}

void reset_forkserver_in_forked_child() noexcept {
  // Only the forking thread exists; the mutex may have been held by another thread
  // of the parent, so it is re-created. The descriptors were closed with the other
  // parent-only descriptors.
  ForkserverClient& c = client();
  new (&c.mutex) std::mutex();
  c.server.control.release();
  c.server.pidfd.release();
  c.server.status.release();
  c.server = LaunchedChild{};
  c.owner = 0;
}

// ---------------------------------------------------------------- the forkserver's side

namespace {

struct ServerState {
  int control_fd;
  int signal_fd;
  std::map<pid_t, UniqueFd> status_fds;  // live children → where their status goes
};

void reap_children(ServerState& server) {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = server.status_fds.find(pid);
    if (it == server.status_fds.end()) continue;
    std::int32_t wire = status;
    try {
      send_frame(it->second.get(), std::as_bytes(std::span(&wire, 1)));
    } catch (const std::system_error&) {
      // The parent stopped caring (its Process is gone): nothing to report to.
    }
    server.status_fds.erase(it);
  }
}

void start_child(ServerState& server, Frame& request, const sigset_t& original_mask) {
  if (request.fds.size() < 2) return;  // a malformed request: ignore it, the parent sees EOF
  BootRecord boot;
  try {
    boot = deserialize<BootRecord>(request.bytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc forkserver: bad request: %s\n", e.what());
    return;
  }
  UniqueFd child_control = std::move(request.fds[0]);
  UniqueFd status = std::move(request.fds[1]);
  std::vector<UniqueFd> extra;
  for (std::size_t i = 2; i < request.fds.size(); ++i) extra.push_back(std::move(request.fds[i]));
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(server.control_fd);
    ::close(server.signal_fd);
    for (auto& [_, fd] : server.status_fds) ::close(fd.release());
    status.reset();
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    pthread_sigmask(SIG_SETMASK, &original_mask, nullptr);
    set_inherited_fds(std::move(extra));
    run_child(
        boot.identity, child_control.release(), /*set_parent_death_signal=*/false,
        [](void* context) { run_spawn_target(static_cast<BootRecord*>(context)->target); }, &boot);
  }
  if (pid < 0) {
    std::perror("mproc forkserver: fork");
    return;  // the parent sees EOF on the status socket and reports the failure
  }
  child_control.reset();
  extra.clear();
  try {
    UniqueFd pidfd(pidfd_open(pid));
    std::int32_t wire = pid;
    const int fds[] = {pidfd.get()};
    send_frame(status.get(), std::as_bytes(std::span(&wire, 1)), fds);
  } catch (const std::system_error&) {
    ::kill(pid, SIGKILL);  // the parent is gone; the reaper below collects it
  }
  server.status_fds.emplace(pid, std::move(status));
}

}  // namespace

[[noreturn]] void forkserver_main(int control_fd) {
  // The forkserver ends when the parent's end of its control socket closes; its children
  // end with the parent through their own control channels.
  sigset_t original_mask, child_signal;
  sigemptyset(&child_signal);
  sigaddset(&child_signal, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &child_signal, &original_mask);
  ::signal(SIGPIPE, SIG_IGN);
  // Ctrl-C is for the program; the server leaves when the program's end of its socket closes.
  ::signal(SIGINT, SIG_IGN);
  ServerState server{control_fd, ::signalfd(-1, &child_signal, SFD_CLOEXEC | SFD_NONBLOCK), {}};
  if (server.signal_fd < 0) {
    std::perror("mproc forkserver: signalfd");
    ::_exit(1);
  }
  for (;;) {
    pollfd fds[2] = {{server.control_fd, POLLIN, 0}, {server.signal_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    if (fds[1].revents) {
      signalfd_siginfo info;
      while (::read(server.signal_fd, &info, sizeof info) == sizeof info) {
      }
      reap_children(server);
    }
    if (fds[0].revents) {
      Frame request;
      bool got = false;
      try {
        got = recv_frame(server.control_fd, request);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "mproc forkserver: %s\n", e.what());
      }
      if (!got) ::_exit(0);
      start_child(server, request, original_mask);
    }
  }
}

}  // namespace mproc::detail
