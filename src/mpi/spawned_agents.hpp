// src/mpi/spawned_agents.hpp — spawn mode (a plain ./app that started its agents with
// MPI_Comm_spawn): the driver watches its agents' processes, because no mpirun does.
#pragma once

#include <thread>
#include <vector>

#include "syscall.hpp"

namespace mproc::mpi::detail {

using mproc::detail::UniqueFd;

/// Watches the agents of a spawn-mode job (all on this host). When one dies, it prints which
/// rank and pid, kills the others and ends this process with status 1: the job ends, as
/// mpirun ends a job whose rank died, instead of waiting for an answer that cannot come.
class SpawnedAgentsWatch {
 public:
  /// `pids[i]` is the process of agent rank i + 1.
  explicit SpawnedAgentsWatch(const std::vector<long>& pids);
  /// Stops watching (before the agents are told to exit).
  ~SpawnedAgentsWatch();
  SpawnedAgentsWatch(const SpawnedAgentsWatch&) = delete;
  SpawnedAgentsWatch& operator=(const SpawnedAgentsWatch&) = delete;

 private:
  void watch();

  std::vector<long> pids_;
  std::vector<UniqueFd> pidfds_;
  UniqueFd stop_;
  std::thread thread_;
};

}  // namespace mproc::mpi::detail
