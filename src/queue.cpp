// src/queue.cpp — the shared byte queue behind Queue<T>, SimpleQueue<T> and JoinableQueue<T>:
// a ring of length-prefixed records in one memfd segment, a robust process-shared mutex, and
// futex words to sleep on.
//
//   segment:  [ Header (one page) | ring of capacity bytes ]
//   Header:   magic, sizes, robust mutex, State states[2] + current index, futex words
//   record:   u64 length | payload | padding to 8 bytes      (may wrap around the ring's end)
//
// Kill-safety comes from one rule: shared state changes only by a single store made while the
// mutex is held. Every counter a put or get changes (head, tail, count, unfinished) lives in a
// State; an operation writes the next State into the slot that is not current, then flips
// `current` with one store. Payload bytes are copied before that flip, into ring space past the
// published tail, where no reader looks. So a process killed anywhere inside an operation
// leaves either the old State or the new one, never a mix: when the next locker gets
// EOWNERDEAD it finds only fully published records, calls pthread_mutex_consistent and goes on.
//
// Waiting: a getter that finds nothing remembers `not_empty` (bumped by every put), spins a
// little while watching it, then counts itself in `get_sleepers` and futex-waits on it; a put
// calls futex_wake only when that count is non-zero, so steady traffic makes no system call.
// Putters wait on `not_full` the same way, join() on `all_done`. A sleeper re-checks the queue
// at least every wait_slice, so even a peer killed between publishing and waking (a wake-up
// that can never come) delays it by at most that.
#include <pthread.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "futex.hpp"
#include "mproc/queue.hpp"
#include "shm_segment.hpp"
#include "sync/sync_segment.hpp"
#include "syscall.hpp"

namespace mproc::detail {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

constexpr std::uint64_t queue_magic = 0x5155455551434f52u;  // "ROCQUEUQ"
constexpr std::uint32_t queue_layout_version = 1;
constexpr std::size_t header_bytes = 4096;  // the ring starts on its own page
constexpr std::size_t record_header_bytes = sizeof(std::uint64_t);
constexpr std::size_t min_capacity = 16;

/// The longest a waiter spins before it sleeps. A futex wake-up across CPUs costs ~45 µs round
/// trip on an idle machine of the kind mproc is measured on, a spinning cache-line hand-off
/// ~0.06 µs: a spin of about one wake-up's cost catches a peer that answers quickly (a
/// ping-pong, a stream) without any system call. SpinBudget shortens it when spinning does
/// not pay.
constexpr nanoseconds max_spin{40'000};
/// What a wait spins, now and then, after spinning has stopped paying: enough to notice that
/// the peer answers quickly again.
constexpr nanoseconds probe_spin{5'000};
/// A gap this long between two looks at the clock in a spin loop (normally ~1 µs apart) means
/// the spinner was descheduled.
constexpr nanoseconds descheduled_gap{10'000};
/// The longest a sleeper sleeps before it looks at the queue again on its own.
constexpr nanoseconds wait_slice{std::chrono::milliseconds(100)};

/// Everything a put, get or task_done changes. Written only under the mutex, into the slot
/// that is not current; relaxed atomics so that lock-free diagnostic reads are well defined.
struct State {
  std::atomic<std::uint64_t> head;        // ring position of the oldest record
  std::atomic<std::uint64_t> tail;        // ring position after the newest record
  std::atomic<std::uint64_t> count;       // records between head and tail
  std::atomic<std::uint64_t> unfinished;  // put and not yet task_done (JoinableQueue)
};

struct Values {
  std::uint64_t head = 0, tail = 0, count = 0, unfinished = 0;
};

struct alignas(64) Header {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t capacity;   // ring bytes, a multiple of 8
  std::uint64_t maxsize;    // 0 = unbounded in count
  std::uint64_t type_tag;   // queue_type_tag<T>() of the creator
  pthread_mutex_t mutex;    // robust, process-shared
  std::atomic<std::uint32_t> current;  // which State is published: 0 or 1
  std::atomic<std::uint64_t> recoveries;  // EOWNERDEAD seen (diagnostics)
  State states[2];

  alignas(64) std::atomic<std::uint32_t> not_empty;  // bumped by every put
  std::atomic<std::uint32_t> get_sleepers;
  alignas(64) std::atomic<std::uint32_t> not_full;  // bumped by every get
  std::atomic<std::uint32_t> put_sleepers;
  alignas(64) std::atomic<std::uint32_t> all_done;  // bumped when unfinished reaches 0
  std::atomic<std::uint32_t> join_sleepers;
};
static_assert(sizeof(Header) <= header_bytes);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

std::uint64_t round_up8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

/// Ring bytes a message of `size` bytes takes: header plus payload padded to 8.
std::uint64_t record_bytes(std::uint64_t size) { return record_header_bytes + round_up8(size); }

bool spinning_pays() {
  static const bool more_than_one_cpu = ::get_nprocs() > 1;
  return more_than_one_cpu;
}

/// How long one kind of wait (get or put, in this process) spins before it sleeps, learned
/// from how its spins went. A spin that saw the awaited change doubles the budget (up to
/// max_spin); one that ran out halves it. On an idle machine a quick peer keeps it at the top
/// and hand-offs take no system call; on a loaded one a spinner only keeps a CPU from the
/// very peer it waits for (or from anyone else), the peer answers late, and the budget falls
/// to zero: then every 16th wait spins probe_spin to find out whether spinning pays again.
class SpinBudget {
 public:
  nanoseconds next() noexcept {
    if (!spinning_pays()) return nanoseconds::zero();
    const std::int64_t budget = budget_ns_.load(std::memory_order_relaxed);
    if (budget != 0) return nanoseconds(budget);
    return probes_.fetch_add(1, std::memory_order_relaxed) % 16 == 15 ? probe_spin
                                                                     : nanoseconds::zero();
  }
  void record(bool paid) noexcept {
    const std::int64_t budget = budget_ns_.load(std::memory_order_relaxed);
    std::int64_t next;
    if (paid)
      next = std::min<std::int64_t>(max_spin.count(), std::max<std::int64_t>(2 * budget, probe_spin.count()));
    else
      next = budget / 2 < 1000 ? 0 : budget / 2;
    budget_ns_.store(next, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::int64_t> budget_ns_{max_spin.count()};
  std::atomic<std::uint32_t> probes_{0};
};

[[noreturn]] void throw_corrupt(const std::string& what) {
  throw SerializationError("mproc::Queue: the shared queue state is corrupt (" + what +
                           "); a process wrote over the queue's memory");
}

Clock::time_point deadline_in(nanoseconds timeout) {
  if (timeout < nanoseconds::zero()) return Clock::time_point::max();
  const auto now = Clock::now();
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + timeout;
}

}  // namespace

/// One process's view of a queue: the mapping and whether this handle was closed.
class QueueCore {
 public:
  explicit QueueCore(ShmSegment segment) noexcept
      : segment_(std::move(segment)),
        header_(reinterpret_cast<Header*>(segment_.data())),
        ring_(segment_.data() + header_bytes),
        capacity_(header_->capacity) {}

  Header& header() const noexcept { return *header_; }
  std::uint64_t capacity() const noexcept { return capacity_; }
  int fd() const noexcept { return segment_.fd(); }

  std::atomic<bool> closed{false};
  SpinBudget get_spin, put_spin;

  /// The mutex, held for a scope. lock() recovers from a dead holder.
  class Guard {
   public:
    Guard(QueueCore& core, Clock::time_point deadline) : core_(core) {
      locked_ = core.lock(deadline);
    }
    ~Guard() {
      if (locked_) ::pthread_mutex_unlock(&core_.header().mutex);
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    explicit operator bool() const noexcept { return locked_; }

   private:
    QueueCore& core_;
    bool locked_ = false;
  };

  /// The published State, checked (under the mutex).
  Values published() const {
    const Header& h = header();
    const std::uint32_t index = h.current.load(std::memory_order_relaxed);
    if (index > 1) throw_corrupt("state index " + std::to_string(index));
    const State& s = h.states[index];
    Values v{s.head.load(std::memory_order_relaxed), s.tail.load(std::memory_order_relaxed),
             s.count.load(std::memory_order_relaxed),
             s.unfinished.load(std::memory_order_relaxed)};
    if (v.tail < v.head || v.tail - v.head > capacity_ || v.head % 8 != 0 || v.tail % 8 != 0 ||
        v.count > (v.tail - v.head) / record_header_bytes || (v.count == 0) != (v.head == v.tail))
      throw_corrupt("head " + std::to_string(v.head) + ", tail " + std::to_string(v.tail) +
                    ", count " + std::to_string(v.count));
    return v;
  }

  /// Publishes `v` with a single store (under the mutex): see the banner.
  void publish(const Values& v) {
    Header& h = header();
    const std::uint32_t next = 1 - h.current.load(std::memory_order_relaxed);
    State& s = h.states[next];
    s.head.store(v.head, std::memory_order_relaxed);
    s.tail.store(v.tail, std::memory_order_relaxed);
    s.count.store(v.count, std::memory_order_relaxed);
    s.unfinished.store(v.unfinished, std::memory_order_relaxed);
    // Release: whoever reads `current` (even without the mutex) sees the record bytes and the
    // State it names.
    h.current.store(next, std::memory_order_release);
  }

  void copy_in(std::uint64_t position, const std::byte* from, std::uint64_t size) {
    const std::uint64_t offset = position % capacity_;
    const std::uint64_t first = std::min(size, capacity_ - offset);
    if (first) std::memcpy(ring_ + offset, from, first);
    if (size > first) std::memcpy(ring_, from + first, size - first);
  }
  void copy_out(std::uint64_t position, std::byte* to, std::uint64_t size) const {
    const std::uint64_t offset = position % capacity_;
    const std::uint64_t first = std::min(size, capacity_ - offset);
    if (first) std::memcpy(to, ring_ + offset, first);
    if (size > first) std::memcpy(to + first, ring_, size - first);
  }

 private:
  bool lock(Clock::time_point deadline) {
    switch (robust_lock(header().mutex, deadline, "Queue")) {
      case LockResult::acquired: return true;
      case LockResult::owner_died: recover(); return true;
      case LockResult::timed_out: return false;
    }
    return false;
  }

  /// The previous holder died with the mutex (which robust_lock made consistent again). Its
  /// operation either published (one store) or did not; either way the current State is
  /// whole. What may be missing is the wake-up it was about to send: bump every futex word
  /// and wake every sleeper so that each re-checks.
  void recover() {
    Header& h = header();
    h.recoveries.fetch_add(1, std::memory_order_relaxed);
    try {
      (void)published();
    } catch (...) {
      ::pthread_mutex_unlock(&h.mutex);
      throw;
    }
    for (auto* word : {&h.not_empty, &h.not_full, &h.all_done}) {
      word->fetch_add(1, std::memory_order_seq_cst);
      futex_wake(*word);
    }
  }

  ShmSegment segment_;
  Header* header_;
  std::byte* ring_;
  std::uint64_t capacity_;
};

namespace {

/// Bumps `word` (under the mutex, after publish) so that waiters see a change.
void signal_change(std::atomic<std::uint32_t>& word) { word.fetch_add(1, std::memory_order_seq_cst); }

/// After the mutex is released: wakes sleepers if any announced themselves. The seq_cst pair
/// (signal_change's RMW, this load) against the waiter's (sleepers RMW, the kernel's read of
/// the word) means either we see the sleeper or it sees the new word and does not sleep.
void wake_if_sleeping(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& sleepers,
                      int count) {
  if (sleepers.load(std::memory_order_seq_cst) != 0) futex_wake(word, count);
}

/// Waits until `word` differs from `seen`, `deadline` passes, or wait_slice runs out: first
/// spinning (when `spin` is given), then sleeping. The caller re-checks its condition after.
void wait_for_change(const std::atomic<std::uint32_t>& word, std::uint32_t seen,
                     std::atomic<std::uint32_t>& sleepers, Clock::time_point deadline,
                     SpinBudget* spin) {
  const nanoseconds budget = spin ? spin->next() : nanoseconds::zero();
  if (budget > nanoseconds::zero()) {
    auto last = Clock::now();
    const bool cut_by_deadline = deadline - last <= budget;
    const auto spin_until = cut_by_deadline ? deadline : last + budget;
    // A spin during which this process lost its CPU did not pay, even when the change came:
    // the peer may well have run on this very CPU, in the time the spin took from it.
    bool descheduled = false;
    for (unsigned i = 1;; ++i) {
      if (word.load(std::memory_order_acquire) != seen) {
        spin->record(!descheduled);
        return;
      }
      cpu_relax();
      if (i % 32 == 0) {
        const auto now = Clock::now();
        if (now - last > descheduled_gap) descheduled = true;
        if (now >= spin_until) break;
        last = now;
      }
    }
    if (!cut_by_deadline) spin->record(false);
  }
  const auto now = Clock::now();
  if (now >= deadline) return;
  const nanoseconds nap = std::min<nanoseconds>(wait_slice, deadline - now);
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  futex_wait(word, seen, nap);
  sleepers.fetch_sub(1, std::memory_order_seq_cst);
}

void check_open(const QueueCore& core, const char* operation) {
  if (core.closed.load(std::memory_order_relaxed))
    throw std::logic_error(std::string("mproc::Queue::") + operation + ": the queue is closed");
}

}  // namespace

ByteQueue::ByteQueue(const QueueOptions& options, std::uint64_t type_tag) {
  if (options.capacity_bytes < min_capacity)
    throw std::invalid_argument("mproc::Queue: capacity_bytes must be at least " +
                                std::to_string(min_capacity) + ", not " +
                                std::to_string(options.capacity_bytes));
  if (options.capacity_bytes > max_segment_bytes - header_bytes)
    throw std::invalid_argument("mproc::Queue: capacity_bytes of " +
                                format_byte_size(options.capacity_bytes) +
                                " is larger than the limit of " +
                                format_byte_size(max_segment_bytes - header_bytes));
  const std::uint64_t capacity = round_up8(options.capacity_bytes);
  ShmSegment segment = ShmSegment::create(header_bytes + capacity, "mproc-queue");

  // The segment is zero-filled and nobody else can see it yet: construct the header in place.
  auto* h = new (segment.data()) Header{};
  h->version = queue_layout_version;
  h->header_size = static_cast<std::uint32_t>(header_bytes);
  h->capacity = capacity;
  h->maxsize = options.maxsize;
  h->type_tag = type_tag;
  // Made as robust_mutex_type_matches() expects in attach(): glibc's settype(NORMAL) adds a
  // no-elision bit to the type word that a mutex of the default type does not have.
  init_robust_mutex(h->mutex, PTHREAD_MUTEX_NORMAL);
  h->magic = queue_magic;
  core_ = std::make_shared<QueueCore>(std::move(segment));
}

ByteQueue ByteQueue::attach(int fd, std::uint64_t type_tag) {
  ShmSegment segment = ShmSegment::attach(UniqueFd(fd));
  if (segment.size() < header_bytes + min_capacity)
    throw SerializationError("mproc::Queue: the descriptor is not a queue's (a segment of " +
                             format_byte_size(segment.size()) + ")");
  const auto* h = reinterpret_cast<const Header*>(segment.data());
  if (h->magic != queue_magic || h->version != queue_layout_version ||
      h->header_size != header_bytes || h->capacity % 8 != 0 || h->capacity < min_capacity ||
      h->capacity > segment.size() - header_bytes)
    throw SerializationError("mproc::Queue: the descriptor is not a queue's segment");
  if (!robust_mutex_type_matches(h->mutex, PTHREAD_MUTEX_NORMAL))
    throw SerializationError("mproc::Queue: the queue's lock is not one mproc made (a process wrote over it)");
  if (h->type_tag != type_tag)
    throw SerializationError(
        "mproc::Queue: the queue carries another value type than the one it was decoded as");
  return ByteQueue(std::make_shared<QueueCore>(std::move(segment)));
}

bool ByteQueue::put(std::span<const std::byte> message, std::chrono::nanoseconds timeout) const {
  QueueCore& core = *core_;
  check_open(core, "put");
  const std::uint64_t size = message.size();
  const std::uint64_t needed = record_bytes(size);
  if (size > core.capacity() || needed > core.capacity())
    throw std::invalid_argument("mproc::Queue::put: message of " + std::to_string(size) +
                                " bytes exceeds the queue's capacity of " +
                                std::to_string(core.capacity()) + " bytes (" +
                                std::to_string(core.capacity() - record_header_bytes) +
                                " at most per message)");
  Header& h = core.header();
  const auto deadline = deadline_in(timeout);
  const bool nonblocking = timeout == nanoseconds::zero();
  for (bool first = true;; first = false) {
    const std::uint32_t seen = h.not_full.load(std::memory_order_acquire);
    bool put = false;
    {
      QueueCore::Guard guard(core, nonblocking ? Clock::time_point::max() : deadline);
      if (!guard) return false;
      Values v = core.published();
      const bool room_by_count = h.maxsize == 0 || v.count < h.maxsize;
      if (room_by_count && needed <= core.capacity() - (v.tail - v.head)) {
        // Copy first, past the published tail where no reader looks; then publish.
        core.copy_in(v.tail, reinterpret_cast<const std::byte*>(&size), record_header_bytes);
        core.copy_in(v.tail + record_header_bytes, message.data(), size);
        v.tail += needed;
        v.count += 1;
        v.unfinished += 1;
        core.publish(v);
        signal_change(h.not_empty);
        put = true;
      }
    }
    if (put) {
      // One item: one getter can use it.
      wake_if_sleeping(h.not_empty, h.get_sleepers, 1);
      return true;
    }
    if (Clock::now() >= deadline) return false;
    wait_for_change(h.not_full, seen, h.put_sleepers, deadline, first ? &core.put_spin : nullptr);
  }
}

bool ByteQueue::get(std::vector<std::byte>& out, std::chrono::nanoseconds timeout) const {
  QueueCore& core = *core_;
  check_open(core, "get");
  Header& h = core.header();
  const auto deadline = deadline_in(timeout);
  const bool nonblocking = timeout == nanoseconds::zero();
  for (bool first = true;; first = false) {
    const std::uint32_t seen = h.not_empty.load(std::memory_order_acquire);
    bool got = false;
    {
      QueueCore::Guard guard(core, nonblocking ? Clock::time_point::max() : deadline);
      if (!guard) return false;
      Values v = core.published();
      if (v.count != 0) {
        std::uint64_t size = 0;
        core.copy_out(v.head, reinterpret_cast<std::byte*>(&size), record_header_bytes);
        if (size > v.tail - v.head || record_bytes(size) > v.tail - v.head)
          throw_corrupt("a record of " + std::to_string(size) + " bytes in " +
                        std::to_string(v.tail - v.head) + " queued bytes");
        out.resize(size);  // may throw bad_alloc: nothing has changed yet
        core.copy_out(v.head + record_header_bytes, out.data(), size);
        v.head += record_bytes(size);
        v.count -= 1;
        // An empty ring starts over at position 0: the next records land on warm pages, and
        // a queue that never holds much never touches more of its ring than that.
        if (v.count == 0) v.head = v.tail = 0;
        core.publish(v);
        signal_change(h.not_full);
        got = true;
      }
    }
    if (got) {
      // Any putter may now fit (each needs its own amount of room): wake them all.
      wake_if_sleeping(h.not_full, h.put_sleepers, INT_MAX);
      return true;
    }
    if (Clock::now() >= deadline) return false;
    wait_for_change(h.not_empty, seen, h.get_sleepers, deadline, first ? &core.get_spin : nullptr);
  }
}

std::size_t ByteQueue::qsize() const {
  QueueCore::Guard guard(*core_, Clock::time_point::max());
  return static_cast<std::size_t>(core_->published().count);
}

std::size_t ByteQueue::maxsize() const noexcept {
  return static_cast<std::size_t>(core_->header().maxsize);
}

std::size_t ByteQueue::capacity_bytes() const noexcept {
  return static_cast<std::size_t>(core_->capacity());
}

void ByteQueue::close() const noexcept { core_->closed.store(true, std::memory_order_relaxed); }

bool ByteQueue::closed() const noexcept { return core_->closed.load(std::memory_order_relaxed); }

void ByteQueue::task_done() const {
  QueueCore& core = *core_;
  Header& h = core.header();
  bool all_done = false;
  {
    QueueCore::Guard guard(core, Clock::time_point::max());
    Values v = core.published();
    if (v.unfinished == 0)
      throw std::logic_error(
          "mproc::JoinableQueue::task_done: called more times than there were items");
    v.unfinished -= 1;
    core.publish(v);
    if (v.unfinished == 0) {
      signal_change(h.all_done);
      all_done = true;
    }
  }
  if (all_done) wake_if_sleeping(h.all_done, h.join_sleepers, INT_MAX);
}

bool ByteQueue::join(std::chrono::nanoseconds timeout) const {
  QueueCore& core = *core_;
  Header& h = core.header();
  const auto deadline = deadline_in(timeout);
  for (;;) {
    const std::uint32_t seen = h.all_done.load(std::memory_order_acquire);
    {
      QueueCore::Guard guard(core, timeout == nanoseconds::zero() ? Clock::time_point::max()
                                                                  : deadline);
      if (!guard) return false;
      if (core.published().unfinished == 0) return true;
    }
    if (Clock::now() >= deadline) return false;
    wait_for_change(h.all_done, seen, h.join_sleepers, deadline, nullptr);
  }
}

std::size_t ByteQueue::unfinished_tasks() const {
  QueueCore::Guard guard(*core_, Clock::time_point::max());
  return static_cast<std::size_t>(core_->published().unfinished);
}

int ByteQueue::fd() const noexcept { return core_->fd(); }

std::uint64_t ByteQueue::owner_died_recoveries() const {
  return core_->header().recoveries.load(std::memory_order_relaxed);
}

}  // namespace mproc::detail
