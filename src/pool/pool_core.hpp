// src/pool/pool_core.hpp — the engine behind mproc::Pool (see pool_core.cpp for the picture).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "adaptive_mutex.hpp"
#include "launch/launcher.hpp"
#include "mproc/pool.hpp"
#include "pool/overflow.hpp"
#include "pool/worker_protocol.hpp"
#include "shm_segment.hpp"
#include "spsc_ring.hpp"
#include "syscall.hpp"

namespace mproc::detail {

/// How a pool's workers wait, where its owner knows better than PoolOptions' defaults.
struct WorkerWaitPolicy {
  /// An idle worker spins for ring_spin_time for its next task before it sleeps on the
  /// ring's futex: the next task of a stream is then caught without a wake-up. Where more
  /// processes spin than there are CPUs (an MPI agent's host, whose ranks all spin in their
  /// progress loops), that spin takes the CPU the agent needs to hand the worker its task.
  bool spin_for_tasks = true;
};

class PoolCore final : public PoolEngine {
 public:
  explicit PoolCore(const PoolOptions& options);
  /// With the fork start method, forks workers from `zygote`, a zygote (start_zygote())
  /// made earlier by this process — e.g. by an MPI agent before MPI_Init.
  PoolCore(const PoolOptions& options, LaunchedChild zygote, WorkerWaitPolicy wait = {});
  ~PoolCore();
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  std::uint64_t submit(TaskRequest request) override;
  bool cancel(std::uint64_t id) override;
  bool cancel_all(const std::vector<std::uint64_t>& ids) override;
  void close() override;
  void join() override;
  void terminate() override;
  PoolStats stats() const override;
  unsigned processes() const override { return processes_; }
  /// Drains the result rings in the calling thread when no other thread is doing it.
  bool make_progress() noexcept override;
  void waiter_arrives() noexcept override;
  void waiter_leaves(bool satisfied) noexcept override;

 private:
  enum class State { running, closed, terminated, broken };

  struct Task {
    TaskRequest request;
    unsigned retries_left = 0;
    std::optional<std::chrono::nanoseconds> timeout;
    int slot = -1;  // worker it was written to, -1 while pending
    bool timed_out = false;
    unsigned requeues = 0;  // times it went back because its worker died running another task
  };

  struct Slot {
    unsigned index = 0;
    bool alive = false;  // launched and not yet reaped
    LaunchedChild child;
    ShmSegment segment;
    WorkerControl* control = nullptr;
    SpscRing tasks;
    SpscRing results;
    OverflowChannel task_overflow;    // arguments too large for the ring
    OverflowChannel result_overflow;  // results too large for the ring
    UniqueFd stderr_read;
    UniqueFd fd_socket;  // descriptors of shareable task arguments go this way
    std::string stderr_tail;
    std::deque<std::uint64_t> assigned;  // in its ring or running, oldest first
    std::uint64_t dispatched = 0;
    bool stop_sent = false;
    bool killed_by_pool = false;
    std::uint64_t oom_kills_at_start = 0;
  };

  // Work to do once the lock is released: sinks run user code (callbacks).
  struct Completion {
    std::shared_ptr<TaskSink> sink;
    TaskRef ref;
    std::exception_ptr error;
  };
  using Completions = std::vector<Completion>;

  // A result read from a ring, in drain_results.
  struct Arrival {
    ResultRecordHeader header;
    std::size_t payload_at = 0;  // in arrival_bytes_ (unless it is the round's one large result)
    std::size_t payload_length = 0;
    std::shared_ptr<TaskSink> sink;
    TaskRef ref;
    std::exception_ptr error;
  };

  void launch_worker_locked(Slot& slot);
  std::size_t credit_locked() const;
  void dispatch_locked(Completions& done);
  bool needs_overflow(const Slot& slot, const Task& task) const;
  bool write_task_locked(Slot& slot, std::uint64_t id, Task& task);
  void send_stop_locked(Slot& slot);
  class ConsumerTurn;
  bool drain_results(Slot& slot);  // with a ConsumerTurn
  void handle_exit(Slot& slot);
  void fail_culprit_locked(Slot& slot, std::uint64_t id, int exit_code, Completions& done);
  static bool oom_killed(const Slot& slot, int exit_code);  // by the kernel's OOM killer
  void break_pool_locked(const std::string& why, Completions& done);
  void fail_all_locked(std::exception_ptr error, Completions& done);
  int check_timeouts_locked();
  void read_stderr(Slot& slot);
  bool finished_locked() const;
  void wake_supervisor();
  void supervise();
  static void complete(Completions& done);
  std::exception_ptr exception_from_result(const Task& task, const Slot& slot,
                                           std::span<const std::byte> payload);

  const PoolOptions options_;
  const unsigned processes_;
  const std::size_t ring_capacity_;
  const WorkerWaitPolicy worker_wait_;

  // The consumer role of every result ring, and with it the delivery of results: taken by
  // the supervisor, or by a thread waiting on a future (make_progress). Sinks and user
  // callbacks therefore run one at a time. Order: results_mutex_ before mutex_.
  std::mutex results_mutex_;
  std::vector<Arrival> arrivals_;           // drain_results' batch (results_mutex_)
  std::vector<std::byte> arrival_bytes_;    // and the payloads it copied out of the ring
  mutable AdaptiveMutex mutex_;
  State state_ = State::running;
  std::uint64_t next_id_ = 0;
  // Task nodes come from a pool owned by mutex_'s holder: no malloc (nor malloc's arena
  // lock, which the submitting thread and the one delivering results would share) per task.
  std::pmr::unsynchronized_pool_resource task_nodes_;
  std::pmr::unordered_map<std::uint64_t, Task> tasks_{&task_nodes_};
  std::deque<std::uint64_t> pending_;
  std::vector<std::unique_ptr<Slot>> slots_;
  PoolStats stats_;
  unsigned consecutive_initializer_failures_ = 0;
  std::uint64_t task_run_ns_average_ = 0;  // 0 until a task reported its run time
  std::string broken_reason_;

  LaunchedChild zygote_;  // fork start method
  UniqueFd epoll_;
  UniqueFd wake_event_;     // submitters → supervisor
  UniqueFd result_event_;   // workers → supervisor (only when it sleeps)
  std::thread supervisor_;
  // Threads spinning in make_progress(). While there are any, the supervisor does not ask
  // workers to wake it for results (a wake-up per result costs more than the result): it
  // relies on them, and looks again after at most waiter_reliance_ms — or at once when the
  // last of them gives up and goes to sleep. (seq_cst pairs: see waiter_leaves.)
  std::atomic<unsigned> spinning_waiters_{0};
  std::atomic<bool> supervisor_relies_on_waiters_{false};
  // When a waiter last left with its result (CLOCK_MONOTONIC ns; 0 after one gave up): in a
  // loop of apply() the next waiter comes within microseconds, and a supervisor that asked
  // for wake-ups in between would be woken by every result.
  std::atomic<std::int64_t> waiter_satisfied_at_{0};
  std::mutex join_mutex_;
};

/// The engine of a local pool whose fork-method workers come from `zygote` (see above).
std::shared_ptr<PoolEngine> make_pool_core(const PoolOptions& options, LaunchedChild zygote,
                                           WorkerWaitPolicy wait = {});

}  // namespace mproc::detail
