// mproc/mpi.hpp — the MPI backend of Pool (target mproc::mpi): the same Pool API, with its
// workers spread over the ranks of an MPI job, on one machine or many.
//
//   int square(int x) { return x * x; }
//
//   int main(int argc, char** argv) {
//     mproc::mpi::init(argc, argv);   // ranks ≥ 1 become agents here and never return
//     mproc::mpi::Pool pool;          // every agent's workers (one per core by default)
//     auto squares = pool.map(square, std::vector{1, 2, 3, 4, 5});
//   }                                 // MPI is finalized at exit
//
//   $ mpirun -np 3 ./app              # rank 0 runs main; ranks 1 and 2 run the tasks
//
// Rank 0 (the driver) runs the program. Every other rank is an agent: it runs no user code
// itself but keeps a local crash-isolating worker pool (workers forked from a zygote made
// before MPI_Init), so a task that segfaults, aborts, hangs or is OOM-killed on any rank fails
// that task only, exactly as with mproc::Pool. An agent rank that dies ends the MPI job
// (Open MPI has no fault tolerance in its default builds): mpirun names the rank. See
// docs/mpi.md.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mproc/pool.hpp"

namespace mproc::mpi {

/// Starts MPI for mproc. Call it first thing in main(), before any thread exists and before
/// anything else calls MPI. On rank 0 it returns; on every other rank it never returns: the
/// rank serves mproc::mpi::Pool tasks until rank 0 finalizes MPI, then exits with status 0.
/// MPI_Init_thread(MPI_THREAD_SERIALIZED) is called here (argc/argv may be rewritten by MPI).
/// MPI is finalized by finalize() or, if it was not called, when rank 0 exits normally
/// (std::atexit). Without mpirun the program is a job of one rank and a Pool has no agents.
///
/// Throws std::logic_error when called twice or after MPI was initialised by someone else,
/// std::runtime_error when MPI cannot start or lacks MPI_THREAD_SERIALIZED.
void init(int& argc, char**& argv);

/// As init(argc, argv), and when the program was started without mpirun (a job of one rank),
/// it spawns `spawn_agents` agents on this host with MPI_Comm_spawn: copies of this program,
/// with the same arguments, that become ranks 1..spawn_agents (their own call of init never
/// returns). Under mpirun (more than one rank), `spawn_agents` is ignored.
///
///   mproc::mpi::init(argc, argv, 2);   // ./app: a driver and 2 agents; mpirun -np 5 ./app: 4
void init(int& argc, char**& argv, unsigned spawn_agents);

/// Tells the agents to exit and finalizes MPI (rank 0). Idempotent; called at exit when the
/// program does not. Requires: no mproc::mpi::Pool alive (std::logic_error otherwise).
void finalize();

/// True between init() and finalize().
bool initialized() noexcept;
/// This process's rank in MPI_COMM_WORLD (0: the driver). Requires init().
int rank();
/// The number of ranks in the job: the driver plus size() - 1 agents. Requires init().
int size();

/// An agent as the driver sees it.
struct AgentInfo {
  int rank = 0;
  std::string host;
  long pid = 0;            ///< the agent rank's process id (on its host)
  unsigned processes = 0;  ///< its worker processes
};

/// A Pool whose workers live on the agent ranks of the MPI job. Same API as mproc::Pool
/// (apply, apply_async, map, imap, imap_unordered, starmap, futures, chunksize, timeouts,
/// retries, close/join/terminate, stats); PoolOptions::processes is the number of workers
/// on each agent (0: the agent's cpu_count()). Tasks go to the agents with the most free
/// credit; each agent has a bounded number of tasks in flight per worker.
///
/// Differences from mproc::Pool: task arguments that carry file descriptors (Queue, Lock,
/// SharedMemory, ...) cannot cross machines and are refused with std::invalid_argument;
/// start_method is ignored (agents fork their workers from their zygote); one
/// mproc::mpi::Pool exists at a time (std::logic_error otherwise).
///
/// Throws std::logic_error when mproc::mpi::init() was not called, when called on an agent,
/// or when the job has no agents (run it under mpirun -np N, N ≥ 2); std::invalid_argument
/// for options out of range; PoolBroken when an agent cannot build its pool.
/// Thread-safety: as mproc::Pool.
class Pool : public mproc::Pool {
 public:
  explicit Pool(unsigned processes_per_agent = 0);
  explicit Pool(const PoolOptions& options);
  Pool(Pool&&) noexcept = default;

  /// The agents and their workers.
  const std::vector<AgentInfo>& agents() const noexcept { return agents_; }

  struct Started {  // what starting the agents' pools gives (internal)
    std::shared_ptr<mproc::detail::PoolEngine> engine;
    std::vector<AgentInfo> agents;
  };

 private:
  explicit Pool(Started started);
  std::vector<AgentInfo> agents_;
};

}  // namespace mproc::mpi
