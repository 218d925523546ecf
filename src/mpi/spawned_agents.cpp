// src/mpi/spawned_agents.cpp — the driver's watch over the agents it spawned (see the header).
#include "mpi/spawned_agents.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace mproc::mpi::detail {

SpawnedAgentsWatch::SpawnedAgentsWatch(const std::vector<long>& pids) : pids_(pids) {
  for (long pid : pids_) pidfds_.emplace_back(mproc::detail::pidfd_open(static_cast<pid_t>(pid)));
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!stop_) throw std::system_error(errno, std::generic_category(), "eventfd");
  thread_ = std::thread([this] { watch(); });
}

SpawnedAgentsWatch::~SpawnedAgentsWatch() {
  const std::uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void SpawnedAgentsWatch::watch() {
  std::vector<pollfd> fds;
  fds.push_back({stop_.get(), POLLIN, 0});
  for (const auto& pidfd : pidfds_) fds.push_back({pidfd.get(), POLLIN, 0});
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;  // cannot watch: the job then behaves as without the watch
    }
    if (fds[0].revents) return;
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      std::fprintf(stderr,
                   "mproc::mpi: agent rank %zu (pid %ld) died; ending the job (spawn mode: its other "
                   "agents are killed too)\n",
                   i, pids_[i - 1]);
      for (const auto& pidfd : pidfds_) mproc::detail::pidfd_send_signal(pidfd.get(), SIGKILL);
      std::fflush(nullptr);
      std::_Exit(1);
    }
  }
}

}  // namespace mproc::mpi::detail
