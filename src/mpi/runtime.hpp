// src/mpi/runtime.hpp — the MPI state mproc keeps in a process (its communicator, rank,
// the agent's early zygote) and the helpers every MPI-side file uses.
#pragma once

#include <sched.h>

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "futex.hpp"
#include "launch/launcher.hpp"
#include "mproc/mpi.hpp"

namespace mproc::mpi::detail {

class SpawnedAgentsWatch;

struct Runtime {
  bool initialized = false;
  bool finalized = false;
  int rank = 0;
  int size = 1;
  MPI_Comm comm = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD (or, in spawn mode, the
                                  // driver and its spawned agents merged): mproc's traffic only
  MPI_Comm spawn_link = MPI_COMM_NULL;  // spawn mode: the driver↔agents intercommunicator
  std::string host;
  int ranks_on_host = 1;        // ranks of `comm` on this host, this one included
  bool driver_on_host = false;  // whether rank 0 is one of them
  mproc::detail::LaunchedChild zygote;  // agents: made before MPI_Init
  bool pool_alive = false;              // driver: one mproc::mpi::Pool at a time
  std::unique_ptr<SpawnedAgentsWatch> spawned_agents_watch;  // spawn mode, driver
};

Runtime& runtime();

/// Throws std::runtime_error naming `what` when `rc` is not MPI_SUCCESS.
void check(int rc, const char* what);
/// Prints "mproc::mpi: <message>" on stderr and aborts the MPI job (every rank) with status 1.
[[noreturn]] void abort_job(const std::string& message) noexcept;

/// The agent's life after MPI_Init (never returns).
[[noreturn]] void agent_main();

/// Starts the driver's engine: configures every agent's pool (blocking until all answered).
mproc::mpi::Pool::Started start_driver_engine(const PoolOptions& options);

/// Sends that are in flight: their buffers live until MPI says they are done.
class Outgoing {
 public:
  /// Starts sending `bytes` (moved in) to `dest` with `tag`.
  void send(std::vector<std::byte> bytes, int dest, int tag, MPI_Comm comm);
  /// Frees the buffers of completed sends; true when some completed.
  bool poll();
  /// Waits for every send to complete.
  void drain();
  bool empty() const noexcept { return requests_.empty(); }

 private:
  std::vector<MPI_Request> requests_;
  std::vector<std::unique_ptr<std::vector<std::byte>>> buffers_;
};

/// Receives the message MPI_Iprobe found (status) into `into` (resized).
void receive(const MPI_Status& status, MPI_Comm comm, std::vector<std::byte>& into);

/// How a progress loop waits when there is nothing to do: it spins for spin_time after its
/// last activity (a reply usually comes within microseconds), then sleeps in short slices
/// (MPI cannot wake a sleeping thread, so a slice bounds the added latency); after
/// long_idle without activity the slices grow to 1 ms, and after very_long_idle to
/// max_slice, so an idle rank costs next to no CPU (an MPI poll costs ~10 µs here).
class IdleBackoff {
 public:
  static constexpr std::chrono::microseconds spin_time{200};
  static constexpr std::chrono::microseconds first_slice{50};
  static constexpr std::chrono::microseconds long_slice{1000};
  static constexpr std::chrono::microseconds max_slice{5000};
  static constexpr std::chrono::milliseconds long_idle{20};
  static constexpr std::chrono::seconds very_long_idle{1};

  void active() noexcept {
    last_active_ = std::chrono::steady_clock::now();
    slice_ = first_slice;
  }
  /// One pass of the spin: a pause at first; after pure_spin_time a sched_yield, because on
  /// a machine with fewer cores than busy processes (driver, agents, their workers) the
  /// process this loop waits for may need this very core (under SCHED_FIFO it would not
  /// get it at all until this loop sleeps).
  void pause() noexcept {
    if (std::chrono::steady_clock::now() - last_active_ < pure_spin_time)
      mproc::detail::cpu_relax();
    else
      ::sched_yield();
  }
  static constexpr std::chrono::microseconds pure_spin_time{2};

  /// How long to sleep now: zero while spinning.
  std::chrono::microseconds next_sleep() noexcept {
    const auto idle = std::chrono::steady_clock::now() - last_active_;
    if (idle < spin_time) return std::chrono::microseconds::zero();
    if (idle < long_idle) return first_slice;
    auto slice = slice_;
    slice_ = std::min(slice_ * 2, idle < very_long_idle ? long_slice : max_slice);
    return slice;
  }

 private:
  std::chrono::steady_clock::time_point last_active_ = std::chrono::steady_clock::now();
  std::chrono::microseconds slice_ = first_slice;
};

}  // namespace mproc::mpi::detail
