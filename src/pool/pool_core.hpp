// src/pool/pool_core.hpp — the engine behind mproc::Pool (see pool_core.cpp for the picture).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "launch/launcher.hpp"
#include "mproc/pool.hpp"
#include "pool/overflow.hpp"
#include "pool/worker_protocol.hpp"
#include "shm_segment.hpp"
#include "spsc_ring.hpp"
#include "syscall.hpp"

namespace mproc::detail {

class PoolCore final : public PoolEngine {
 public:
  explicit PoolCore(const PoolOptions& options);
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

  void launch_worker_locked(Slot& slot);
  void dispatch_locked(Completions& done);
  bool needs_overflow(const Slot& slot, const Task& task) const;
  bool write_task_locked(Slot& slot, std::uint64_t id, Task& task);
  void send_stop_locked(Slot& slot);
  bool drain_results(Slot& slot);
  void handle_exit(Slot& slot);
  void fail_culprit_locked(Slot& slot, std::uint64_t id, int exit_code, Completions& done);
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

  mutable std::mutex mutex_;
  State state_ = State::running;
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, Task> tasks_;
  std::deque<std::uint64_t> pending_;
  std::vector<std::unique_ptr<Slot>> slots_;
  PoolStats stats_;
  unsigned consecutive_initializer_failures_ = 0;
  std::string broken_reason_;

  LaunchedChild zygote_;  // fork start method
  UniqueFd epoll_;
  UniqueFd wake_event_;     // submitters → supervisor
  UniqueFd result_event_;   // workers → supervisor (only when it sleeps)
  std::thread supervisor_;
  std::mutex join_mutex_;
};

}  // namespace mproc::detail
