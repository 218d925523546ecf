// src/pool/worker_protocol.hpp — what the pool and a worker share: the layout of the
// worker's shared-memory segment (control block, task ring, result ring), the records that
// travel in the rings, and the boot record a worker starts from.
#pragma once

#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "mproc/process.hpp"

namespace mproc::detail {

/// CLOCK_MONOTONIC in nanoseconds: the clock of WorkerControl::running_since, the same in
/// every process of the machine.
inline std::int64_t monotonic_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// Written by the worker, read by the pool (a dead worker's last words).
struct alignas(64) WorkerControl {
  static constexpr std::uint32_t magic_value = 0x6d70776bU;  // "mpwk"
  std::atomic<std::uint32_t> magic;
  std::atomic<std::uint32_t> ready;          // 1 once the initializer has run
  std::atomic<std::uint64_t> running_task;   // id of the task being run; 0 when idle
  std::atomic<std::int64_t> running_since;   // CLOCK_MONOTONIC ns when it started
  std::atomic<std::uint64_t> tasks_done;
  std::atomic<std::uint32_t> exit_reason;    // a WorkerExit, set just before a deliberate exit
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

enum class WorkerExit : std::uint32_t {
  none = 0,
  stopped = 1,              // told to stop (close/join)
  recycled = 2,             // max_tasks_per_child reached
  initializer_failed = 3,   // the initializer threw
  memory_limit = 4,         // a task ran out of its memory limit
};

/// A worker's exit status when its initializer threw (a crash loop makes the pool broken).
inline constexpr int initializer_failed_exit_code = 86;

inline constexpr std::size_t control_bytes = 4096;

enum class TaskRecordKind : std::uint32_t {
  task = 1,           // the payload follows the module name in the ring
  stop = 2,           // exit after the tasks before it
  task_overflow = 3,  // the payload waits in the task overflow segment
};

/// Precedes every task in the task ring: then the module name, then the payload.
struct TaskRecordHeader {
  std::uint64_t task_id;
  std::uint64_t entry_offset;
  std::uint32_t module_length;
  TaskRecordKind kind;
  std::uint64_t payload_length;
  std::uint32_t flags;  // task_has_fds: a frame of descriptors waits on the worker's fd socket
  std::uint32_t reserved;
};
inline constexpr std::uint32_t task_has_fds = 1;

/// Precedes every result in the result ring: then the payload.
struct ResultRecordHeader {
  std::uint64_t task_id;
  std::uint32_t kind;   // ResultKind
  std::uint32_t flags;  // result_in_overflow: the payload waits in the result overflow segment
  std::uint64_t payload_length;
  std::uint64_t run_ns;  // how long the task ran: the pool sizes each worker's queue by it
};

inline constexpr std::uint32_t result_in_overflow = 1;

/// Sent to a worker at start (serialized as its target's payload).
struct WorkerBoot {
  std::uint64_t ring_capacity = 0;
  std::uint64_t task_ring_offset = 0;
  std::uint64_t result_ring_offset = 0;
  std::uint64_t segment_bytes = 0;
  std::uint64_t max_tasks = 0;
  std::uint64_t memory_limit = 0;
  bool spin_for_tasks = true;  // spin (ring_spin_time) for the next task before sleeping
  bool has_initializer = false;
  SpawnTarget initializer;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(ring_capacity, task_ring_offset, result_ring_offset, segment_bytes, max_tasks,
            memory_limit, spin_for_tasks, has_initializer, initializer.entry, initializer.payload);
  }
};

/// The descriptors a worker inherits, in this order.
enum WorkerFd : std::size_t {
  worker_fd_segment = 0,
  worker_fd_result_event = 1,
  worker_fd_stderr = 2,
  worker_fd_task_overflow = 3,
  worker_fd_result_overflow = 4,
  worker_fd_task_fds = 5,  // a socket: descriptors of shareable task arguments
  worker_fd_count = 6,     // the initializer's argument descriptors follow
};

/// The worker's entry point, named by FunctionId in its boot record.
void pool_worker_entry(std::span<const std::byte> payload);

}  // namespace mproc::detail
