// src/launch/reap.cpp — the child reaper: turns a child that has ended (its pidfd is
// readable) into an exit code the way Python reports it: the exit() status, or -N when
// signal N ended it. Direct children are reaped with waitid(P_PIDFD); children of a
// forkserver or zygote get their wait status from the server's status socket.
#include <poll.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstring>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"

namespace mproc::detail {

int exit_code_from_wait_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return lost_exit_code;
}

int reap_child(LaunchedChild& child) {
  if (child.direct_child) {
    siginfo_t info{};
    int rc = retry_eintr([&] { return ::waitid(P_PIDFD, child.pidfd.get(), &info, WEXITED); });
    if (rc != 0) return lost_exit_code;  // reaped elsewhere (SIGCHLD set to SIG_IGN)
    return info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  }
  // The server reaps it and reports right after the pidfd turns readable; a server that
  // died took the status with it.
  Frame frame;
  bool got = false;
  try {
    got = poll_one(child.status.get(), POLLIN, 10'000) && recv_frame(child.status.get(), frame);
  } catch (const std::exception&) {
  }
  if (!got || frame.bytes.size() != sizeof(std::int32_t)) return lost_exit_code;
  std::int32_t status;
  std::memcpy(&status, frame.bytes.data(), sizeof status);
  return exit_code_from_wait_status(status);
}

}  // namespace mproc::detail
