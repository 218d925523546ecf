// src/pool/pool_core.cpp — the engine of mproc::Pool: dispatch, results, worker deaths.
//
//   user threads                       supervisor thread (one per pool)
//   ────────────                       ────────────────────────────────
//   apply_async / map / imap           epoll: result eventfd, wake eventfd,
//     │ TaskRequest                           each worker's pidfd and stderr pipe
//     ▼                                       │
//   submit() ──► pending_ ──dispatch──►  task ring (shm, SPSC) ──► worker process
//     (mutex_)    (deque)   2..64 per worker                        │ runs the entry the
//                           (by task length)                        │ task names; publishes
//   Future ◄── sink ◄── drain_results() ◄── result ring (shm, SPSC) ◄┘ running_task in its
//   (callbacks run       (results_mutex_: the supervisor, or a          control block
//    in the drainer)      thread spinning in Future::get)
//
//   worker dies ─► pidfd readable ─► handle_exit(): deliver what it finished, find the
//   task it was running (control block), then: a chunk of several items is split in
//   halves and re-queued (poison-item bisection); a single task is retried while retries
//   remain, else fails with WorkerCrashed / TaskTimeout / MemoryLimitExceeded; tasks
//   queued behind it go back to the front of pending_; a replacement worker is launched
//   from the zygote (fork), the forkserver, or by spawn — never by forking this process.
//
// Wake-ups: a worker spins briefly and then sleeps on its task ring's futex; the
// supervisor sleeps in epoll, and a worker writes the result eventfd only when the
// supervisor announced it is going to sleep. A thread waiting on a future spins for a
// while and drains the result rings itself meanwhile; the supervisor then leaves the
// results to it (it asks for no wake-ups, and looks again within a millisecond), so a
// round trip needs no sleeping hand-off at all. Nothing blocks forever: every worker's end
// is seen through its pidfd, and every worker dies with this process (control channel).
#include "pool/pool_core.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "fd_passing.hpp"
#include "exclusive_turn.hpp"
#include "pool/records.hpp"

namespace mproc::detail {
namespace {

constexpr unsigned max_processes = 1024;
// Tasks written to a worker's ring ahead of time. At least 2, so that a worker finds its
// next task when it finishes one; more for short tasks, up to about queued_work_ns of work,
// so that a stream of tiny tasks is not held back by the hand-offs; never so many that one
// worker sits on work another could start (load balance, and what a crash sends back).
constexpr std::size_t min_tasks_in_flight_per_worker = 2;
constexpr std::size_t max_tasks_in_flight_per_worker = 64;
constexpr std::uint64_t queued_work_ns = 200'000;
constexpr std::size_t default_ring_capacity = std::size_t{4} << 20;
constexpr std::size_t stderr_tail_bytes = 4096;
// While a waiter spins on the result rings, the supervisor checks on them this often.
constexpr int waiter_reliance_ms = 1;

// epoll data: kind in the top byte, slot index below.
enum EventKind : std::uint64_t { event_wake = 1, event_results = 2, event_exit = 3, event_stderr = 4 };
std::uint64_t event_key(EventKind kind, unsigned slot = 0) { return (std::uint64_t{kind} << 56) | slot; }

std::uint64_t system_oom_kills() {
  std::ifstream vmstat("/proc/vmstat");
  std::string key;
  std::uint64_t value = 0;
  while (vmstat >> key >> value)
    if (key == "oom_kill") return value;
  return 0;
}

std::string task_function_name(const TaskRequest& request) {
  if (request.function_name) return *request.function_name;
  if (request.function_address) return function_name_at(request.function_address);
  return {};
}

unsigned checked_processes(unsigned requested) {
  unsigned n = requested == 0 ? cpu_count() : requested;
  if (n > max_processes)
    throw std::invalid_argument("mproc::Pool: " + std::to_string(n) + " processes is more than the " +
                                std::to_string(max_processes) + " a pool may have");
  return n;
}

void epoll_add(int epoll, int fd, std::uint64_t key) {
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = key;
  if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) throw_errno("epoll_ctl(ADD) in the pool supervisor");
}

const char* worker_name_prefix(StartMethod method) {
  switch (method) {
    case StartMethod::fork: return "ForkPoolWorker-";
    case StartMethod::forkserver: return "ForkServerPoolWorker-";
    case StartMethod::spawn: return "SpawnPoolWorker-";
  }
  return "PoolWorker-";
}

}  // namespace

PoolCore::PoolCore(const PoolOptions& options) : PoolCore(options, LaunchedChild{}) {}

PoolCore::PoolCore(const PoolOptions& options, LaunchedChild zygote, WorkerWaitPolicy wait)
    : options_(options), processes_(checked_processes(options.processes)), ring_capacity_(default_ring_capacity),
      worker_wait_(wait), zygote_(std::move(zygote)) {
  if (options.task_timeout && *options.task_timeout <= std::chrono::nanoseconds::zero())
    throw std::invalid_argument("mproc::Pool: task_timeout must be positive");
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("cannot create the pool's epoll instance");
  wake_event_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  result_event_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_event_ || !result_event_) throw_errno("cannot create the pool's eventfds");
  epoll_add(epoll_.get(), wake_event_.get(), event_key(event_wake));
  epoll_add(epoll_.get(), result_event_.get(), event_key(event_results));
  for (int fd : {epoll_.get(), wake_event_.get(), result_event_.get()}) track_parent_only_fd(fd);

  if (options_.start_method == StartMethod::fork) {
    // The zygote is a copy of this process as it is now, made before the supervisor
    // thread exists; every worker, first and replacement, is forked from it.
    if (!zygote_.pidfd) zygote_ = start_zygote();
    track_parent_only_fd(zygote_.control.get());
    track_parent_only_fd(zygote_.pidfd.get());
  }
  std::lock_guard lock(mutex_);
  try {
    for (unsigned i = 0; i < processes_; ++i) {
      slots_.push_back(std::make_unique<Slot>());
      slots_.back()->index = i;
      launch_worker_locked(*slots_.back());
    }
  } catch (...) {
    for (auto& slot : slots_)
      if (slot->alive) pidfd_send_signal(slot->child.pidfd.get(), SIGKILL);
    for (auto& slot : slots_)
      if (slot->alive) reap_child(slot->child);
    if (zygote_.pidfd) stop_server(zygote_);
    throw;
  }
  supervisor_ = std::thread([this] { supervise(); });
}

PoolCore::~PoolCore() {
  if (supervisor_.joinable()) {
    terminate();
    join();
  }
  for (auto& slot : slots_) {
    for (int fd : {slot->child.control.get(), slot->child.pidfd.get(), slot->child.status.get(),
                   slot->stderr_read.get(), slot->segment.fd(), slot->task_overflow.fd(), slot->result_overflow.fd(),
                   slot->fd_socket.get()})
      if (fd >= 0) untrack_parent_only_fd(fd);
  }
  for (int fd : {epoll_.get(), wake_event_.get(), result_event_.get(), zygote_.control.get(), zygote_.pidfd.get()})
    if (fd >= 0) untrack_parent_only_fd(fd);
  if (zygote_.pidfd) stop_server(zygote_);
}

// ----------------------------------------------------------------------------- workers

void PoolCore::launch_worker_locked(Slot& slot) {
  const std::size_t ring_bytes = SpscRing::required_bytes(ring_capacity_);
  WorkerBoot boot;
  boot.ring_capacity = ring_capacity_;
  boot.task_ring_offset = control_bytes;
  boot.result_ring_offset = control_bytes + ring_bytes;
  boot.segment_bytes = control_bytes + 2 * ring_bytes;
  boot.max_tasks = options_.max_tasks_per_child;
  boot.memory_limit = options_.max_memory_per_child;
  boot.spin_for_tasks = worker_wait_.spin_for_tasks;
  if (const auto& init = options_.initializer.target()) {
    boot.has_initializer = true;
    boot.initializer = *init;
  }

  ShmSegment segment = ShmSegment::create(boot.segment_bytes, "mproc-pool-worker");
  auto* control = new (segment.data()) WorkerControl{};
  control->magic.store(WorkerControl::magic_value);
  SpscRing tasks = SpscRing::create(segment.bytes().subspan(boot.task_ring_offset, ring_bytes), ring_capacity_);
  SpscRing results = SpscRing::create(segment.bytes().subspan(boot.result_ring_offset, ring_bytes), ring_capacity_);

  OverflowChannel task_overflow = OverflowChannel::create();
  OverflowChannel result_overflow = OverflowChannel::create();

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("cannot create a worker's stderr pipe");
  UniqueFd stderr_read(pipe_fds[0]), stderr_write(pipe_fds[1]);
  ::fcntl(stderr_read.get(), F_SETFL, O_NONBLOCK);

  SpawnTarget target;
  target.entry = function_id_of(reinterpret_cast<const void*>(&pool_worker_entry));
  target.payload = serialize(boot);
  ProcessOptions names;
  names.name = worker_name_prefix(options_.start_method) + std::to_string(stats_.workers_started + 1);
  names.daemon = true;
  ChildIdentity identity = next_child_identity(names);
  auto [fd_socket_parent, fd_socket_worker] = make_socketpair();
  std::vector<int> fds = {segment.fd(), result_event_.get(), stderr_write.get(),
                          task_overflow.fd(), result_overflow.fd(), fd_socket_worker.get()};
  if (const auto& init = options_.initializer.target(); init && init->fds)
    fds.insert(fds.end(), init->fds->fds().begin(), init->fds->fds().end());

  LaunchedChild child;
  if (options_.start_method == StartMethod::fork && zygote_.pidfd && poll_one(zygote_.pidfd.get(), POLLIN, 0)) {
    // The zygote died (killed from outside). A new one cannot be forked from this process
    // now that it has threads, so the forkserver — spawned, hence clean — takes over.
    untrack_parent_only_fd(zygote_.control.get());
    untrack_parent_only_fd(zygote_.pidfd.get());
    stop_server(zygote_);
  }
  switch (options_.start_method) {
    case StartMethod::fork:
      if (zygote_.pidfd) {
        try {
          child = launch_from_server(zygote_, identity, target, fds);
          break;
        } catch (const std::system_error&) {
          untrack_parent_only_fd(zygote_.control.get());
          untrack_parent_only_fd(zygote_.pidfd.get());
          stop_server(zygote_);
        }
      }
      child = launch_forkserver(identity, target, fds);
      break;
    case StartMethod::forkserver: child = launch_forkserver(identity, target, fds); break;
    case StartMethod::spawn: child = launch_spawn(identity, target, fds); break;
  }
  stderr_write.reset();
  fd_socket_worker.reset();

  slot.child = std::move(child);
  slot.fd_socket = std::move(fd_socket_parent);
  slot.segment = std::move(segment);
  slot.control = control;
  slot.tasks = tasks;
  slot.results = results;
  slot.task_overflow = std::move(task_overflow);
  slot.result_overflow = std::move(result_overflow);
  slot.stderr_read = std::move(stderr_read);
  slot.stderr_tail.clear();
  slot.assigned.clear();
  slot.dispatched = 0;
  slot.stop_sent = false;
  slot.killed_by_pool = false;
  slot.alive = true;
  slot.oom_kills_at_start = system_oom_kills();
  for (int fd : {slot.child.control.get(), slot.child.pidfd.get(), slot.child.status.get(),
                 slot.stderr_read.get(), slot.segment.fd(), slot.task_overflow.fd(), slot.result_overflow.fd(),
                 slot.fd_socket.get()})
    if (fd >= 0) track_parent_only_fd(fd);
  epoll_add(epoll_.get(), slot.child.pidfd.get(), event_key(event_exit, slot.index));
  epoll_add(epoll_.get(), slot.stderr_read.get(), event_key(event_stderr, slot.index));
  ++stats_.workers_started;
}

void PoolCore::send_stop_locked(Slot& slot) {
  if (!slot.alive || slot.stop_sent) return;
  TaskRecordHeader header{};
  header.kind = TaskRecordKind::stop;
  std::byte* p = slot.tasks.try_begin_write(sizeof header);
  if (!p) return;  // its ring is full of work: it will be told once that is drained
  std::memcpy(p, &header, sizeof header);
  if (slot.tasks.commit_write(sizeof header)) slot.tasks.wake_consumer();
  slot.stop_sent = true;
}

bool PoolCore::needs_overflow(const Slot& slot, const Task& task) const {
  const auto& request = task.request;
  // A quarter of the largest record: the ring then always has room for the worker's credit.
  return sizeof(TaskRecordHeader) + request.entry.module.size() + request.payload_size() >
         slot.tasks.max_record_size() / 4;
}

bool PoolCore::write_task_locked(Slot& slot, std::uint64_t id, Task& task) {
  const auto& request = task.request;
  const bool in_overflow = needs_overflow(slot, task);
  TaskRecordHeader header{};
  header.task_id = id;
  header.entry_offset = request.entry.offset;
  header.module_length = static_cast<std::uint32_t>(request.entry.module.size());
  header.kind = in_overflow ? TaskRecordKind::task_overflow : TaskRecordKind::task;
  const std::size_t payload_size = request.payload_size();
  header.payload_length = payload_size;
  const bool with_fds = request.fds && !request.fds->empty();
  header.flags = with_fds ? task_has_fds : 0;
  const std::size_t size = sizeof header + request.entry.module.size() + (in_overflow ? 0 : payload_size);
  std::byte* p = slot.tasks.try_begin_write(size);
  if (!p) return false;  // the ring is full: the task waits in pending_ for the next result
  if (with_fds) {
    // The descriptors go first, on the worker's socket; the record that needs them follows.
    try {
      send_frame(slot.fd_socket.get(), {}, request.fds->fds());
    } catch (const std::system_error&) {
      // The worker is dying: the task is handed to its replacement, descriptors and all.
    }
  }
  if (in_overflow) {
    request.copy_payload(slot.task_overflow.prepare(payload_size));
    slot.task_overflow.commit(payload_size);
  }
  std::memcpy(p, &header, sizeof header);
  std::memcpy(p + sizeof header, request.entry.module.data(), request.entry.module.size());
  if (!in_overflow) request.copy_payload(p + sizeof header + request.entry.module.size());
  if (slot.tasks.commit_write(size)) slot.tasks.wake_consumer();
  slot.assigned.push_back(id);
  ++slot.dispatched;
  task.slot = static_cast<int>(slot.index);
  return true;
}

std::size_t PoolCore::credit_locked() const {
  if (task_run_ns_average_ == 0) return min_tasks_in_flight_per_worker;
  return std::clamp<std::size_t>(queued_work_ns / task_run_ns_average_, min_tasks_in_flight_per_worker,
                                 max_tasks_in_flight_per_worker);
}

void PoolCore::dispatch_locked(Completions&) {
  const std::size_t credit = credit_locked();
  while (!pending_.empty()) {
    std::uint64_t id = pending_.front();
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
      pending_.pop_front();
      continue;
    }
    // The worker with the fewest tasks that can take this one now. A large task needs its
    // worker's overflow segment to be free: it is freed as the previous large task ends,
    // and dispatch runs again when that task's result arrives.
    Slot* best = nullptr;
    for (auto& slot : slots_) {
      if (!slot->alive || slot->stop_sent || slot->assigned.size() >= credit) continue;
      if (options_.max_tasks_per_child && slot->dispatched >= options_.max_tasks_per_child) continue;
      if (needs_overflow(*slot, it->second) && slot->task_overflow.busy()) continue;
      if (!best || slot->assigned.size() < best->assigned.size()) best = slot.get();
    }
    if (!best) return;
    if (!write_task_locked(*best, id, it->second)) return;
    pending_.pop_front();
  }
}

// ----------------------------------------------------------------------------- user side

std::uint64_t PoolCore::submit(TaskRequest request) {
  Completions done;
  std::uint64_t id;
  bool has_timeout;
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::broken) throw PoolBroken("mproc::Pool is broken: " + broken_reason_);
    if (state_ != State::running) throw PoolClosed("mproc::Pool: cannot submit work after close() or terminate()");
    id = ++next_id_;
    Task task;
    task.retries_left = request.max_retries.value_or(options_.max_retries);
    task.timeout = request.timeout ? request.timeout : options_.task_timeout;
    if (task.timeout && *task.timeout <= std::chrono::nanoseconds::zero())
      throw std::invalid_argument("mproc::Pool: a task timeout must be positive");
    has_timeout = task.timeout.has_value();
    task.request = std::move(request);
    tasks_.emplace(id, std::move(task));
    pending_.push_back(id);
    dispatch_locked(done);
  }
  complete(done);
  if (has_timeout) wake_supervisor();  // it watches deadlines
  return id;
}

bool PoolCore::cancel(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = std::find(pending_.begin(), pending_.end(), id);
  if (it == pending_.end()) return false;
  pending_.erase(it);
  tasks_.erase(id);
  return true;
}

bool PoolCore::cancel_all(const std::vector<std::uint64_t>& ids) {
  std::lock_guard lock(mutex_);
  std::vector<std::deque<std::uint64_t>::iterator> found;
  for (auto id : ids) {
    if (!tasks_.count(id)) continue;  // already finished
    auto it = std::find(pending_.begin(), pending_.end(), id);
    if (it == pending_.end()) return false;  // running: nothing is withdrawn
  }
  for (auto id : ids) {
    auto it = std::find(pending_.begin(), pending_.end(), id);
    if (it != pending_.end()) pending_.erase(it);
    tasks_.erase(id);
  }
  return true;
}

void PoolCore::close() {
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::running) state_ = State::closed;
  }
  wake_supervisor();
}

void PoolCore::terminate() {
  Completions done;
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::terminated) return;
    state_ = State::terminated;
    fail_all_locked(std::make_exception_ptr(PoolTerminated("mproc::Pool was terminated")), done);
    for (auto& slot : slots_) {
      if (slot->alive) {
        slot->killed_by_pool = true;
        pidfd_send_signal(slot->child.pidfd.get(), SIGKILL);
      }
    }
  }
  complete(done);
  wake_supervisor();
}

void PoolCore::join() {
  {
    std::lock_guard lock(mutex_);
    if (state_ == State::running)
      throw std::logic_error("mproc::Pool::join: call close() or terminate() first");
  }
  std::lock_guard lock(join_mutex_);
  if (supervisor_.joinable()) {
    if (supervisor_.get_id() == std::this_thread::get_id())
      throw std::logic_error("mproc::Pool::join: called from the pool's own thread (a callback)");
    supervisor_.join();
  }
}

PoolStats PoolCore::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void PoolCore::wake_supervisor() {
  std::uint64_t one = 1;
  (void)!::write(wake_event_.get(), &one, sizeof one);
}

void PoolCore::complete(Completions& done) {
  for (auto& c : done) {
    try {
      c.sink->fail(c.ref, c.error);
    } catch (...) {
      // A sink never throws on purpose; a user callback that does must not kill the pool.
    }
  }
  done.clear();
}

void PoolCore::fail_all_locked(std::exception_ptr error, Completions& done) {
  for (auto& [id, task] : tasks_)
    done.push_back({task.request.sink, TaskRef{id, task.request.begin, task.request.end}, error});
  stats_.tasks_failed += tasks_.size();
  tasks_.clear();
  pending_.clear();
  for (auto& slot : slots_) slot->assigned.clear();
}

void PoolCore::break_pool_locked(const std::string& why, Completions& done) {
  state_ = State::broken;
  broken_reason_ = why;
  fail_all_locked(std::make_exception_ptr(PoolBroken("mproc::Pool is broken: " + why)), done);
  for (auto& slot : slots_) {
    if (slot->alive) {
      slot->killed_by_pool = true;
      pidfd_send_signal(slot->child.pidfd.get(), SIGKILL);
    }
  }
}

// ----------------------------------------------------------------------------- results

// Holds the consumer role of the result rings (see ExclusiveTurn: a callback that waits on
// another future of this pool does not drain again from inside a drain).
class PoolCore::ConsumerTurn : public ExclusiveTurn {
 public:
  explicit ConsumerTurn(PoolCore& core) : ExclusiveTurn(core.results_mutex_, &core) {}
  ConsumerTurn(PoolCore& core, std::try_to_lock_t) : ExclusiveTurn(core.results_mutex_, &core, std::try_to_lock) {}
};

void PoolCore::waiter_arrives() noexcept {
  spinning_waiters_.fetch_add(1, std::memory_order_seq_cst);
}

void PoolCore::waiter_leaves(bool satisfied) noexcept {
  // Dekker-style with the supervisor's sleep: it stores "relies" then loads the count; we
  // store the count then load "relies". In the total order of seq_cst operations, either it
  // sees this waiter gone (and asks workers to wake it), or we see that it relies on us.
  // A waiter that got what it waited for does not wake it: the supervisor looks again
  // within waiter_reliance_ms anyway, and in a loop of apply() the next waiter is already
  // on its way. One that goes to sleep must, or its own result could wait that long.
  waiter_satisfied_at_.store(satisfied ? monotonic_ns() : 0, std::memory_order_relaxed);
  if (spinning_waiters_.fetch_sub(1, std::memory_order_seq_cst) == 1 && !satisfied &&
      supervisor_relies_on_waiters_.load(std::memory_order_seq_cst))
    wake_supervisor();
}

bool PoolCore::make_progress() noexcept {
  ConsumerTurn turn(*this, std::try_to_lock);
  if (!turn) return false;
  bool any = false;
  try {
    for (auto& slot : slots_)
      if (slot->alive && drain_results(*slot)) any = true;
  } catch (...) {
    // Out of memory while delivering: the supervisor will try again.
  }
  return any;
}

std::exception_ptr PoolCore::exception_from_result(const Task& task, const Slot& slot,
                                                   std::span<const std::byte> payload) {
  try {
    auto remote = deserialize<RemoteException>(payload);
    if (remote.type_id == memory_limit_type_id) {
      CrashReport report;
      report.pid = slot.child.pid;
      report.function = task_function_name(task.request);
      if (task.request.chunk) report.item = task.request.begin;
      return std::make_exception_ptr(MemoryLimitExceeded(options_.max_memory_per_child, report));
    }
    return rebuild_exception(remote);
  } catch (...) {
    return std::current_exception();
  }
}

namespace {

// Small results are copied out of the ring and handled in batches: one turn of mutex_ per
// batch instead of per result, which the threads submitting work would otherwise fight for.
constexpr std::size_t result_batch_records = 32;
constexpr std::size_t result_batch_max_payload = 256;

}  // namespace

bool PoolCore::drain_results(Slot& slot) {
  // Reused from call to call (the consumer role is ours): no allocation per result.
  std::vector<Arrival>& batch = arrivals_;
  std::vector<std::byte>& bytes = arrival_bytes_;
  bool any = false;
  for (;;) {
    // Gather: small records are copied and popped; a large one (or one in the overflow
    // segment) ends the batch and is handled in place, popped after its delivery.
    batch.clear();
    bytes.clear();
    std::span<const std::byte> large_payload;
    bool large = false, in_overflow = false;
    while (batch.size() < result_batch_records) {
      std::optional<std::span<const std::byte>> record;
      try {
        record = slot.results.try_read();
      } catch (const std::exception& e) {
        // A worker that corrupts its result ring cannot be trusted: it is killed and its
        // tasks are handled as those of a crashed worker.
        std::lock_guard lock(mutex_);
        slot.killed_by_pool = true;
        pidfd_send_signal(slot.child.pidfd.get(), SIGKILL);
        break;
      }
      if (!record) break;
      any = true;
      ResultRecord result;
      bool big = false;
      try {
        result = decode_result_record(*record);
        big = result.in_overflow || result.inline_payload.size() > result_batch_max_payload;
        if (big && !batch.empty()) break;  // handled in a round of its own, next
        if (result.in_overflow) large_payload = slot.result_overflow.read(result.header.payload_length);
      } catch (const std::exception&) {
        // A worker that writes malformed records cannot be trusted with more work.
        std::lock_guard lock(mutex_);
        slot.killed_by_pool = true;
        pidfd_send_signal(slot.child.pidfd.get(), SIGKILL);
        slot.results.pop();
        continue;
      }
      if (big) {
        large = true;
        in_overflow = result.in_overflow;
        if (!in_overflow) large_payload = result.inline_payload;
        batch.emplace_back().header = result.header;
        break;
      }
      Arrival& arrival = batch.emplace_back();
      arrival.header = result.header;
      arrival.payload_at = bytes.size();
      arrival.payload_length = result.inline_payload.size();
      bytes.insert(bytes.end(), result.inline_payload.begin(), result.inline_payload.end());
      slot.results.pop();
    }
    if (batch.empty()) return any;
    auto payload_of = [&](const Arrival& arrival) {
      return large ? large_payload : std::span<const std::byte>(bytes).subspan(arrival.payload_at, arrival.payload_length);
    };

    Completions done;
    {
      std::lock_guard lock(mutex_);
      for (Arrival& arrival : batch) {
        const ResultRecordHeader& header = arrival.header;
        auto it = tasks_.find(header.task_id);
        if (it != tasks_.end()) {
          Task& task = it->second;
          arrival.sink = std::move(task.request.sink);
          arrival.ref = TaskRef{header.task_id, task.request.begin, task.request.end};
          if (static_cast<ResultKind>(header.kind) == ResultKind::exception) {
            arrival.error = exception_from_result(task, slot, payload_of(arrival));
            ++stats_.tasks_failed;
          } else {
            ++stats_.tasks_done;
          }
          tasks_.erase(it);
        }
        // A worker answers in order: its result is the oldest assigned task's (but after a
        // requeue, a retried task's may come from anywhere in the queue).
        if (!slot.assigned.empty() && slot.assigned.front() == header.task_id) {
          slot.assigned.pop_front();
        } else {
          auto pos = std::find(slot.assigned.begin(), slot.assigned.end(), header.task_id);
          if (pos != slot.assigned.end()) slot.assigned.erase(pos);
        }
        // A moving average over about the last 8 tasks (at least 1 ns: 0 means "not measured").
        task_run_ns_average_ = std::max<std::uint64_t>(
            1, task_run_ns_average_ ? (7 * task_run_ns_average_ + header.run_ns) / 8 : header.run_ns);
      }
      consecutive_initializer_failures_ = 0;  // a worker got past its initializer
      dispatch_locked(done);
    }
    for (Arrival& arrival : batch) {
      if (!arrival.sink) continue;
      try {
        if (arrival.error)
          arrival.sink->fail(arrival.ref, arrival.error);
        else
          arrival.sink->deliver(arrival.ref, static_cast<ResultKind>(arrival.header.kind), payload_of(arrival));
      } catch (...) {
      }
      arrival.sink.reset();  // a map's last chunk frees its results here, outside the lock
    }
    if (large) {
      if (in_overflow) slot.result_overflow.release();
      slot.results.pop();
    }
    complete(done);
  }
}

void PoolCore::read_stderr(Slot& slot) {
  if (!slot.stderr_read) return;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(slot.stderr_read.get(), buffer, sizeof buffer);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // EAGAIN, or EOF (every writer closed)
    }
    // The worker's stderr is the program's: pass it on, keep the tail for crash reports.
    try {
      write_all(STDERR_FILENO, buffer, static_cast<std::size_t>(n), "stderr");
    } catch (...) {
    }
    slot.stderr_tail.append(buffer, static_cast<std::size_t>(n));
    if (slot.stderr_tail.size() > stderr_tail_bytes)
      slot.stderr_tail.erase(0, slot.stderr_tail.size() - stderr_tail_bytes);
  }
}

// ----------------------------------------------------------------------------- deaths

bool PoolCore::oom_killed(const Slot& slot, int exit_code) {
  // A SIGKILL that the pool did not send, while the kernel's count of OOM kills went up.
  return exit_code == -SIGKILL && !slot.killed_by_pool && system_oom_kills() > slot.oom_kills_at_start;
}

void PoolCore::fail_culprit_locked(Slot& slot, std::uint64_t id, int exit_code, Completions& done) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Task& task = it->second;
  TaskRef ref{id, task.request.begin, task.request.end};
  CrashReport report;
  report.pid = slot.child.pid;
  if (exit_code < 0) {
    report.signal = -exit_code;
    report.signal_name = signal_name(-exit_code);
    report.oom_killed = oom_killed(slot, exit_code);
  } else {
    report.exit_code = exit_code;
  }
  report.function = task_function_name(task.request);
  if (task.request.chunk) report.item = task.request.begin;
  report.stderr_tail = slot.stderr_tail;

  if (task.timed_out) {
    ++stats_.tasks_timed_out;
    ++stats_.tasks_failed;
    done.push_back({task.request.sink, ref, std::make_exception_ptr(TaskTimeout(*task.timeout, report))});
    tasks_.erase(it);
    return;
  }
  const std::size_t items = task.request.end - task.request.begin;
  if (task.request.chunk && items > 1) {
    // Poison-item isolation: halve the chunk until the item that kills is alone.
    const std::size_t middle = task.request.begin + items / 2;
    for (auto [begin, end] : {std::pair{middle, task.request.end}, std::pair{task.request.begin, middle}}) {
      Task half;
      half.request = chunk_part(task.request, begin, end);
      half.retries_left = task.retries_left;
      half.timeout = task.timeout;
      std::uint64_t half_id = ++next_id_;
      tasks_.emplace(half_id, std::move(half));
      pending_.push_front(half_id);  // the first half ends up first
    }
    tasks_.erase(it);
    return;
  }
  if (task.retries_left > 0) {
    --task.retries_left;
    ++stats_.tasks_retried;
    task.slot = -1;
    pending_.push_front(id);
    return;
  }
  ++stats_.tasks_failed;
  done.push_back({task.request.sink, ref, std::make_exception_ptr(WorkerCrashed(report))});
  tasks_.erase(it);
}

void PoolCore::handle_exit(Slot& slot) {
  ConsumerTurn turn(*this);
  drain_results(slot);  // what it finished before dying is delivered
  read_stderr(slot);
  const int exit_code = reap_child(slot.child);
  Completions done;
  {
    std::lock_guard lock(mutex_);
    slot.alive = false;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, slot.child.pidfd.get(), nullptr);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, slot.stderr_read.get(), nullptr);
    for (int fd : {slot.child.control.get(), slot.child.pidfd.get(), slot.child.status.get(),
                   slot.stderr_read.get(), slot.segment.fd(), slot.task_overflow.fd(), slot.result_overflow.fd(),
                   slot.fd_socket.get()})
      if (fd >= 0) untrack_parent_only_fd(fd);
    const auto reason = static_cast<WorkerExit>(slot.control->exit_reason.load(std::memory_order_acquire));
    const bool was_ready = slot.control->ready.load(std::memory_order_acquire) != 0;
    const std::uint64_t running = slot.control->running_task.load(std::memory_order_acquire);

    // Tasks queued behind the one it was running never started: they go back, in order.
    std::deque<std::uint64_t> assigned = std::move(slot.assigned);
    slot.assigned.clear();
    const bool culprit_known = running != 0 && std::find(assigned.begin(), assigned.end(), running) != assigned.end();
    for (auto it = assigned.rbegin(); it != assigned.rend(); ++it) {
      if (*it == running) continue;
      auto task = tasks_.find(*it);
      if (task == tasks_.end()) continue;
      // A worker that keeps dying with no task marked running (e.g. killed from outside
      // while idle) must not bounce the same task for ever: after a few rounds the oldest
      // one is treated as the culprit.
      if (!culprit_known && it == std::prev(assigned.rend()) && ++task->second.requeues > 3) {
        fail_culprit_locked(slot, *it, exit_code, done);
        continue;
      }
      task->second.slot = -1;
      pending_.push_front(*it);
    }
    if (culprit_known) fail_culprit_locked(slot, running, exit_code, done);

    if (state_ != State::terminated && state_ != State::broken) {
      if (reason == WorkerExit::recycled || reason == WorkerExit::memory_limit) {
        ++stats_.workers_recycled;
      } else if (reason != WorkerExit::stopped) {
        ++stats_.workers_died;
        // A worker that ends before it is ready by itself (exit, a crash signal: the
        // initializer, or the program's own start-up under spawn) counts towards a crash
        // loop. A SIGKILL from outside (a kill -9, not the OOM killer) does not: a worker
        // killed young is the killer's doing, and the pool must not break over it.
        const bool killed_from_outside = exit_code == -SIGKILL && !oom_killed(slot, exit_code);
        if (was_ready)
          consecutive_initializer_failures_ = 0;
        else if (!killed_from_outside)
          ++consecutive_initializer_failures_;
      }
      if (consecutive_initializer_failures_ >= std::max(3u, processes_)) {
        break_pool_locked("its workers die in the initializer (" + options_.initializer.name() + "), " +
                              std::to_string(consecutive_initializer_failures_) + " times in a row; last: " +
                              (exit_code < 0 ? signal_name(-exit_code) : "exit status " + std::to_string(exit_code)),
                          done);
      } else if (reason != WorkerExit::stopped && (state_ == State::running || !tasks_.empty())) {
        // A start can fail for a passing reason (the zygote or forkserver killed during it:
        // the next attempt uses a new one); only repeated failures break the pool.
        constexpr int start_attempts = 3;
        for (int attempt = 1;; ++attempt) {
          try {
            launch_worker_locked(slot);
            break;
          } catch (const std::exception& e) {
            if (attempt == start_attempts) {
              break_pool_locked(std::string("cannot start a replacement worker (") + std::to_string(start_attempts) +
                                    " attempts): " + e.what(),
                                done);
              break;
            }
          }
        }
      }
    }
    dispatch_locked(done);
  }
  complete(done);
}

int PoolCore::check_timeouts_locked() {
  const std::int64_t now = monotonic_ns();
  std::int64_t next = -1;
  auto consider = [&](std::int64_t at) {
    if (next < 0 || at < next) next = at;
  };
  for (auto& slot : slots_) {
    if (!slot->alive) continue;
    const std::uint64_t running = slot->control->running_task.load(std::memory_order_acquire);
    for (std::uint64_t id : slot->assigned) {
      auto it = tasks_.find(id);
      if (it == tasks_.end() || !it->second.timeout) continue;
      if (id != running) {
        consider(now + 5'000'000);  // not started yet: look again soon
        continue;
      }
      const std::int64_t deadline = slot->control->running_since.load(std::memory_order_relaxed) +
                                    static_cast<std::int64_t>(it->second.timeout->count());
      if (now >= deadline) {
        if (!it->second.timed_out) {
          it->second.timed_out = true;
          slot->killed_by_pool = true;
          pidfd_send_signal(slot->child.pidfd.get(), SIGKILL);
        }
      } else {
        consider(deadline);
      }
    }
  }
  if (next < 0) return -1;
  const std::int64_t wait_ns = std::max<std::int64_t>(0, next - now);
  return static_cast<int>(std::min<std::int64_t>(INT_MAX, (wait_ns + 999'999) / 1'000'000));
}

bool PoolCore::finished_locked() const {
  for (auto& slot : slots_)
    if (slot->alive) return false;
  return state_ != State::running;
}

// ----------------------------------------------------------------------------- supervisor

void PoolCore::supervise() {
  epoll_event events[64];
  for (;;) {
    {
      ConsumerTurn turn(*this);
      for (auto& slot : slots_) drain_results(*slot);
    }
    int timeout_ms;
    {
      std::lock_guard lock(mutex_);
      if (state_ == State::closed && tasks_.empty())
        for (auto& slot : slots_) send_stop_locked(*slot);
      if (finished_locked()) break;
      timeout_ms = check_timeouts_locked();
    }
    bool pending_results = false;
    supervisor_relies_on_waiters_.store(true, std::memory_order_seq_cst);
    const std::int64_t satisfied_at = waiter_satisfied_at_.load(std::memory_order_relaxed);
    const bool rely_on_waiters = spinning_waiters_.load(std::memory_order_seq_cst) > 0 ||
                                 (satisfied_at != 0 && monotonic_ns() - satisfied_at < waiter_reliance_ms * 1'000'000);
    if (rely_on_waiters) {
      if (timeout_ms < 0 || timeout_ms > waiter_reliance_ms) timeout_ms = waiter_reliance_ms;
    } else {
      supervisor_relies_on_waiters_.store(false, std::memory_order_relaxed);
      // Announce sleep, then look once more: a result published in between is not missed.
      ConsumerTurn turn(*this);
      for (auto& slot : slots_) {
        if (!slot->alive) continue;
        slot->results.prepare_to_sleep();
        if (slot->results.try_read()) pending_results = true;
      }
    }
    int n = 0;
    if (!pending_results) {
      n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
      if (n < 0 && errno != EINTR) std::perror("mproc pool supervisor: epoll_wait");
    }
    supervisor_relies_on_waiters_.store(false, std::memory_order_relaxed);
    if (!rely_on_waiters) {
      ConsumerTurn turn(*this);
      for (auto& slot : slots_)
        if (slot->alive) slot->results.cancel_sleep();
    }
    std::vector<unsigned> exited;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t kind = events[i].data.u64 >> 56;
      const unsigned index = static_cast<unsigned>(events[i].data.u64 & 0xffffffffU);
      std::uint64_t drained;
      if (kind == event_wake) (void)!::read(wake_event_.get(), &drained, sizeof drained);
      if (kind == event_results) (void)!::read(result_event_.get(), &drained, sizeof drained);
      if (kind == event_stderr && index < slots_.size()) read_stderr(*slots_[index]);
      if (kind == event_exit && index < slots_.size()) exited.push_back(index);
    }
    for (unsigned index : exited)
      if (slots_[index]->alive) handle_exit(*slots_[index]);
  }
}

// ----------------------------------------------------------------------------- the C++ API's hooks

std::shared_ptr<PoolEngine> make_pool_core(const PoolOptions& options) { return std::make_shared<PoolCore>(options); }
std::shared_ptr<PoolEngine> make_pool_core(const PoolOptions& options, LaunchedChild zygote,
                                           WorkerWaitPolicy wait) {
  return std::make_shared<PoolCore>(options, std::move(zygote), wait);
}

}  // namespace mproc::detail
