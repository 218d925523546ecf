// src/pool/worker_main.cpp — the loop every pool worker runs: take a task from its ring,
// run the entry the task names, put the result in the other ring, and tell the pool what
// it is running so a death can be pinned on the right task.
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"
#include "mproc/detail/fd_transfer.hpp"
#include "mproc/detail/task_entry.hpp"
#include "pool/overflow.hpp"
#include "pool/records.hpp"
#include "pool/worker_protocol.hpp"
#include "shm_segment.hpp"
#include "spsc_ring.hpp"
#include "syscall.hpp"

namespace mproc::detail {
namespace {

// The address space this process already uses: the memory limit is counted on top of it.
std::uint64_t current_address_space() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmSize:") {
      std::uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(4096, '\n');
  }
  return 0;
}

std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

void limit_memory(std::uint64_t limit) {
  rlimit rl{};
  rl.rlim_cur = rl.rlim_max = current_address_space() + limit;
  if (::setrlimit(RLIMIT_AS, &rl) != 0) std::perror("mproc worker: setrlimit(RLIMIT_AS)");
}

// How long a worker waits for its next task before it gives its free heap memory back.
constexpr auto heap_return_after = std::chrono::seconds(1);

// Large arguments and results are fresh allocations in a worker. By glibc's defaults each one
// above 32 MiB is an mmap of its own, which the kernel zero-fills at first touch (on the VMs
// mproc is measured on, slower than copying it) and unmaps when it is freed. A worker without a
// memory limit takes them from its heap instead, so that back-to-back large tasks reuse warm
// pages, and gives the free heap back once idle (heap_return_after). With a memory limit the
// defaults stay: the limit's resident-size check after each task would count the kept pages.
void keep_freed_memory_between_tasks() {
  ::mallopt(M_MMAP_MAX, 0);                 // large blocks from the heap (glibc still falls
                                            // back to mmap when the heap cannot grow)
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);   // free() keeps up to 256 MiB on top of the heap
}

class Worker {
 public:
  Worker(const WorkerBoot& boot, std::vector<UniqueFd> fds)
      : boot_(boot),
        segment_(ShmSegment::attach(std::move(fds[worker_fd_segment]))),
        result_event_(std::move(fds[worker_fd_result_event])),
        task_overflow_(OverflowChannel::attach(std::move(fds[worker_fd_task_overflow]))),
        result_overflow_(OverflowChannel::attach(std::move(fds[worker_fd_result_overflow]))),
        fd_socket_(std::move(fds[worker_fd_task_fds])) {
    if (segment_.size() < boot.segment_bytes) throw SerializationError("worker segment is smaller than announced");
    control_ = reinterpret_cast<WorkerControl*>(segment_.data());
    tasks_ = SpscRing::attach(segment_.bytes().subspan(boot.task_ring_offset, SpscRing::required_bytes(boot.ring_capacity)));
    results_ = SpscRing::attach(segment_.bytes().subspan(boot.result_ring_offset, SpscRing::required_bytes(boot.ring_capacity)));
  }

  [[noreturn]] void run() {
    if (boot_.memory_limit) {
      limit_memory(boot_.memory_limit);
      set_worker_memory_limit(boot_.memory_limit);
    } else {
      keep_freed_memory_between_tasks();
    }
    if (boot_.has_initializer) {
      try {
        run_spawn_target(boot_.initializer);
      } catch (...) {
        std::fprintf(stderr, "mproc worker %d: the initializer threw: %s\n", ::getpid(),
                     capture_current_exception().what.c_str());
        finish(WorkerExit::initializer_failed, initializer_failed_exit_code);
      }
    }
    control_->ready.store(1, std::memory_order_release);
    TaskOutput out;
    bool heap_to_return = false;  // a task ran since the heap was last given back (no memory limit)
    const std::chrono::nanoseconds spin = boot_.spin_for_tasks ? ring_spin_time : std::chrono::nanoseconds::zero();
    for (;;) {
      if (heap_to_return) {
        if (!tasks_.wait_readable(heap_return_after, spin)) {
          ::malloc_trim(0);
          heap_to_return = false;
        }
      }
      tasks_.wait_readable(std::chrono::nanoseconds(-1), spin);
      auto record = tasks_.try_read();
      if (!record) continue;
      const TaskRecord task = decode_task_record(*record);
      const TaskRecordHeader& header = task.header;
      if (task.stop) {
        tasks_.pop();
        finish(WorkerExit::stopped, 0);
      }
      const bool in_overflow = task.in_overflow;

      // From here on a death is this task's: it is marked running before anything of it
      // (even mapping a large argument) can fail.
      const std::int64_t started = monotonic_ns();
      control_->running_since.store(started, std::memory_order_relaxed);
      control_->running_task.store(header.task_id, std::memory_order_release);
      out.clear();
      ResultKind kind;
      try {
        auto payload = in_overflow ? task_overflow_.read(header.payload_length) : task.inline_payload;
        FdSource fds;
        if (header.flags & task_has_fds) {
          Frame frame;
          if (!recv_frame(fd_socket_.get(), frame)) throw SerializationError("the pool closed the descriptor socket");
          std::vector<int> numbers;
          for (auto& fd : frame.fds) numbers.push_back(fd.release());
          fds = FdSource(std::move(numbers));
        }
        ScopedFdSource use_fds(fds);
        kind = reinterpret_cast<TaskEntry>(resolve_function_cached(task.module, header.entry_offset))(payload, out);
      } catch (...) {
        out.clear();
        serialize_to(out.bytes(), capture_current_exception());
        kind = ResultKind::exception;
      }
      if (in_overflow) task_overflow_.release();
      tasks_.pop();
      send_result(header.task_id, kind, out.view(), static_cast<std::uint64_t>(monotonic_ns() - started));
      out.clear();  // a kept result is freed now, not when the worker's next task comes
      heap_to_return = boot_.memory_limit == 0;
      control_->running_task.store(0, std::memory_order_release);
      auto done = control_->tasks_done.fetch_add(1, std::memory_order_relaxed) + 1;
      // A task that hit the memory limit, or left this worker holding more than the limit
      // (a leak), ends the worker: a fresh one replaces it.
      if (boot_.memory_limit && (memory_limit_hit() || resident_bytes() > boot_.memory_limit))
        finish(WorkerExit::memory_limit, 0);
      if (boot_.max_tasks && done >= boot_.max_tasks) finish(WorkerExit::recycled, 0);
    }
  }

 private:
  void send_result(std::uint64_t task_id, ResultKind kind, std::span<const std::byte> payload,
                   std::uint64_t run_ns) {
    ResultRecordHeader header{task_id, static_cast<std::uint32_t>(kind), 0, payload.size(), run_ns};
    std::size_t size = sizeof header + payload.size();
    const bool in_overflow = size > results_.max_record_size();
    if (in_overflow) {
      result_overflow_.wait_free();  // the pool releases the previous one as it delivers it
      result_overflow_.write(payload);
      header.flags = result_in_overflow;
      size = sizeof header;
    }
    std::byte* slot;
    while ((slot = results_.try_begin_write(size)) == nullptr)
      results_.wait_writable(size, std::chrono::nanoseconds(-1));
    std::memcpy(slot, &header, sizeof header);
    if (!in_overflow && !payload.empty()) std::memcpy(slot + sizeof header, payload.data(), payload.size());
    if (results_.commit_write(size)) {
      std::uint64_t one = 1;
      (void)!::write(result_event_.get(), &one, sizeof one);
    }
  }

  [[noreturn]] void finish(WorkerExit reason, int code) {
    control_->exit_reason.store(static_cast<std::uint32_t>(reason), std::memory_order_release);
    flush_std_streams();
    ::_exit(code);
  }

  WorkerBoot boot_;
  ShmSegment segment_;
  UniqueFd result_event_;
  WorkerControl* control_ = nullptr;
  OverflowChannel task_overflow_;
  OverflowChannel result_overflow_;
  UniqueFd fd_socket_;
  SpscRing tasks_;
  SpscRing results_;
};

}  // namespace

void enable_throw_traces();

void pool_worker_entry(std::span<const std::byte> payload) {
  enable_throw_traces();
  // Ctrl-C goes to the whole process group: the program decides, its workers carry on (and
  // die with it through their control channel if it ends).
  ::signal(SIGINT, SIG_IGN);
  auto fds = take_inherited_fds();
  if (fds.size() < worker_fd_count) {
    std::fprintf(stderr, "mproc worker: expected %zu descriptors, got %zu\n", std::size_t{worker_fd_count}, fds.size());
    ::_exit(1);
  }
  ::dup2(fds[worker_fd_stderr].get(), STDERR_FILENO);
  fds[worker_fd_stderr].reset();
  WorkerBoot boot = deserialize<WorkerBoot>(payload);
  // What follows the worker's own descriptors belongs to the initializer's arguments.
  set_inherited_fds(std::vector<UniqueFd>(std::make_move_iterator(fds.begin() + worker_fd_count),
                                          std::make_move_iterator(fds.end())));
  fds.resize(worker_fd_count);
  Worker worker(boot, std::move(fds));
  worker.run();
}

}  // namespace mproc::detail
