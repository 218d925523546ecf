// mproc/sync.hpp — synchronization between processes, like Python's multiprocessing.synchronize:
// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier.
//
// Every primitive lives in a small shared-memory segment of its own (a memfd). The objects are
// cheap handles: copies share the primitive, a forked child that captures one uses the same
// primitive, and each can be an argument of a Process or a pool task under every start method
// (the descriptor travels with SCM_RIGHTS). The primitive lives as long as any handle in any
// process.
//
//   Lock        robust process-shared pthread mutex: a holder that dies hands it on (owner_died())
//   RLock       the same, recursive
//   Semaphore   a counter on a futex; BoundedSemaphore refuses release() beyond its initial value
//   Event       a flag on a futex
//   Condition   a futex sequence number beside a Lock
//   Barrier     a robust mutex, a futex and the pids of its parties: a party's death breaks it
//
// Operations are const: a handle is like a pointer to the primitive, so a lambda that captures
// one by copy needs no `mutable`.
//
// Every blocking call has a form with a timeout (a std::chrono duration, or a time point of any
// clock, converted to steady_clock once when the call starts). See docs/ipc-sync.md.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/errors.hpp"

namespace mproc {

namespace detail {

/// Which primitive a shared segment holds; checked when a handle is decoded.
enum class SyncKind : std::uint32_t {
  lock = 1,
  rlock,
  semaphore,
  bounded_semaphore,
  event,
  condition,
  barrier,
};

/// The mapping of one primitive's segment in this process (defined in src/sync/).
class SyncSegment;

/// The descriptor behind a handle's segment (owned by the segment), for its save().
/// Throws std::logic_error naming `type` for an empty (moved-from) handle.
int sync_fd(const std::shared_ptr<SyncSegment>& segment, const char* type);
/// Adopts `fd` (closed on every path) and maps it. Throws SerializationError when it does not
/// hold an mproc primitive of kind `expected` (or, for a Semaphore, either semaphore kind).
std::shared_ptr<SyncSegment> attach_sync(int fd, SyncKind expected);
/// Throws std::logic_error naming `type` when a handle has no segment.
[[noreturn]] void throw_empty_handle(const char* type);

using steady_time = std::chrono::steady_clock::time_point;
/// A steady_clock deadline that means "no deadline".
inline constexpr steady_time no_deadline = steady_time::max();

/// now + `timeout`, saturating: a negative timeout is now, one beyond a century is forever.
template <class Rep, class Period>
steady_time deadline_after(const std::chrono::duration<Rep, Period>& timeout) {
  using namespace std::chrono;
  const auto now = steady_clock::now();
  if (!(timeout > timeout.zero())) return now;
  if (duration<double>(timeout) >= duration<double>(hours(24 * 365 * 100))) return no_deadline;
  return now + ceil<steady_clock::duration>(timeout);
}

/// `deadline` as a steady_clock deadline (other clocks are converted once, now).
template <class Clock, class Duration>
steady_time steady_deadline(const std::chrono::time_point<Clock, Duration>& deadline) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::time_point_cast<std::chrono::steady_clock::duration>(deadline);
  } else {
    return deadline_after(deadline - Clock::now());
  }
}

}  // namespace detail

/// A lock shared by processes, like Python's multiprocessing.Lock; a C++ TimedLockable, so
/// std::scoped_lock, std::unique_lock and std::lock work with it.
///
/// Built on a robust, process-shared, error-checking pthread mutex. When a process (or thread)
/// dies holding the lock, the kernel hands it on: the next lock() succeeds and owner_died() is
/// true — the data it guards may be half-updated. Nothing deadlocks on a dead holder.
///
/// Unlike Python's Lock, only the holding thread may unlock it (as for std::mutex), and locking
/// it again from the holding thread throws instead of deadlocking.
///
/// Thread-safety: as a mutex; any thread of any process may use any handle.
/// Fork-safety: a child forked while this process holds the lock does not hold it.
///
///   mproc::Lock lock;
///   mproc::Process child([lock] { std::scoped_lock hold(lock); std::puts("child"); });
///   child.start();
///   { std::scoped_lock hold(lock); std::puts("parent"); }
///   child.join();
class Lock {
 public:
  /// A new, unlocked lock. Throws std::system_error when no shared memory can be had.
  Lock();

  /// Blocks until this thread holds the lock.
  /// Throws std::logic_error when this thread already holds it (it would deadlock); so does
  /// try_lock_for(). std::system_error if the mutex is unusable.
  void lock() const;
  /// Takes the lock if it is free; never blocks. Returns whether this thread now holds it
  /// (false also when this thread holds it already).
  bool try_lock() const;
  /// Like lock(), giving up after `timeout`; returns whether this thread now holds it.
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return lock_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return lock_until(detail::steady_deadline(deadline));
  }
  /// Releases the lock. Throws std::logic_error when this thread does not hold it.
  void unlock() const;

  /// True when the last acquisition of the lock found its previous holder dead (the kernel
  /// released the mutex for it). Meaningful to the thread that holds the lock.
  bool owner_died() const noexcept;

  /// Python's names: acquire() blocks; acquire(timeout) returns whether it got the lock.
  void acquire() const { lock(); }
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) const {
    return try_lock_for(timeout);
  }
  void release() const { unlock(); }

  /// cereal: the segment's descriptor travels beside the bytes (detail/fd_transfer.hpp).
  template <class Archive>
  void save(Archive& archive) const {
    detail::save_fd(archive, detail::sync_fd(segment_, "Lock"));
  }
  template <class Archive>
  void load(Archive& archive) {
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::lock);
  }

 private:
  bool lock_until(detail::steady_time deadline) const;
  std::shared_ptr<detail::SyncSegment> segment_;
};

/// A recursive lock shared by processes, like Python's multiprocessing.RLock: the thread that
/// holds it may lock it again, and it is free after as many unlock()s. Owned by a thread of a
/// process (a pid and a tid): another thread, or a forked child, does not hold it.
///
/// As Lock, it is robust: when its holder dies, the next acquisition succeeds with
/// owner_died() true, whatever depth the dead holder had reached.
///
/// Thread-safety: as a recursive mutex. Fork-safety: as Lock.
class RLock {
 public:
  /// A new, unlocked recursive lock. Throws std::system_error when no shared memory can be had.
  RLock();

  /// Blocks until this thread holds the lock (at once when it already does).
  /// Throws std::system_error (EAGAIN) when the recursion depth overflows.
  void lock() const;
  bool try_lock() const;
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return lock_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return lock_until(detail::steady_deadline(deadline));
  }
  /// Releases one level. Throws std::logic_error when this thread does not hold the lock.
  void unlock() const;

  /// True when the outermost acquisition of the current (or last) holder found the previous
  /// holder dead. Meaningful to the thread that holds the lock.
  bool owner_died() const noexcept;

  void acquire() const { lock(); }
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) const {
    return try_lock_for(timeout);
  }
  void release() const { unlock(); }

  template <class Archive>
  void save(Archive& archive) const {
    detail::save_fd(archive, detail::sync_fd(segment_, "RLock"));
  }
  template <class Archive>
  void load(Archive& archive) {
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::rlock);
  }

 private:
  bool lock_until(detail::steady_time deadline) const;
  std::shared_ptr<detail::SyncSegment> segment_;
};

/// A counting semaphore shared by processes, like Python's multiprocessing.Semaphore (and
/// std::counting_semaphore): acquire() waits until the count is positive and decrements it;
/// release(n) adds n and wakes up to n waiters.
///
/// A semaphore has no owner: when a process dies after acquire(), its unit is not given back
/// (no one can tell a dead holder from a process that meant to keep the unit). Use a Lock when
/// holder death must be survived, and try_acquire_for() where a peer may die.
///
/// Thread-safety: any thread of any process may use any handle.
class Semaphore {
 public:
  /// A new semaphore with count `initial`.
  /// Throws std::invalid_argument when `initial` is negative, std::system_error when no shared
  /// memory can be had.
  explicit Semaphore(int initial = 1);

  /// Blocks until the count is positive, then decrements it.
  void acquire() const;
  /// Decrements the count if it is positive; never blocks. Returns whether it did.
  bool try_acquire() const;
  /// Like acquire(), giving up after `timeout`; returns whether it decremented the count.
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return acquire_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return acquire_until(detail::steady_deadline(deadline));
  }
  /// Python's acquire(timeout=...): the same as try_acquire_for.
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) const {
    return try_acquire_for(timeout);
  }
  /// Adds `n` to the count and wakes up to `n` waiters.
  /// Throws std::invalid_argument when n < 1; std::overflow_error when the count would pass
  /// INT_MAX; for a BoundedSemaphore, std::logic_error when it would pass the initial value
  /// (Python raises ValueError). The count is unchanged when it throws.
  void release(int n = 1) const;
  /// The current count (a snapshot: other processes may change it at once).
  int get_value() const noexcept;

  template <class Archive>
  void save(Archive& archive) const {
    detail::save_fd(archive, detail::sync_fd(segment_, "Semaphore"));
  }
  /// Decodes either kind of semaphore (a BoundedSemaphore keeps its bound when sliced).
  template <class Archive>
  void load(Archive& archive) {
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::semaphore);
  }

 protected:
  struct bounded_tag {};
  Semaphore(bounded_tag, int initial);
  bool acquire_until(detail::steady_time deadline) const;
  std::shared_ptr<detail::SyncSegment> segment_;
};

/// A Semaphore whose count may never exceed its initial value, like Python's
/// multiprocessing.BoundedSemaphore: a release() too many throws std::logic_error.
/// The bound lives in shared memory, so a copy sliced to Semaphore keeps it.
class BoundedSemaphore : public Semaphore {
 public:
  /// A new semaphore with count and bound `initial`.
  /// Throws std::invalid_argument when `initial` is negative.
  explicit BoundedSemaphore(int initial = 1) : Semaphore(bounded_tag{}, initial) {}

  template <class Archive>
  void load(Archive& archive) {
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::bounded_semaphore);
  }
};

/// A flag shared by processes, like Python's multiprocessing.Event: wait() blocks until it is
/// set. set() wakes every waiter.
///
/// A wait returns true when the flag was set at any moment during the wait, even when someone
/// cleared it again before the waiter ran (Python's threading.Event behaves so; its
/// multiprocessing.Event can miss such a pulse).
///
/// Thread-safety: any thread of any process may use any handle.
class Event {
 public:
  /// A new, clear event. Throws std::system_error when no shared memory can be had.
  Event();

  void set() const;
  void clear() const;
  bool is_set() const noexcept;
  /// Blocks until the flag is set.
  void wait() const;
  /// Like wait(), giving up after `timeout`; returns whether the flag was set.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return wait_until_steady(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return wait_until_steady(detail::steady_deadline(deadline));
  }

  template <class Archive>
  void save(Archive& archive) const {
    detail::save_fd(archive, detail::sync_fd(segment_, "Event"));
  }
  template <class Archive>
  void load(Archive& archive) {
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::event);
  }

 private:
  bool wait_until_steady(detail::steady_time deadline) const;
  std::shared_ptr<detail::SyncSegment> segment_;
};

/// A condition variable shared by processes, like Python's multiprocessing.Condition. It owns
/// a Lock (a new one, or the one given) and is itself Lockable through it, so the natural uses
/// are:
///
///   std::unique_lock hold(cond);             // or cond.lock() ... cond.unlock()
///   cond.wait([&] { return ready(); });       // releases the lock while it sleeps
///   ...
///   { std::scoped_lock hold(cond); make_ready(); }
///   cond.notify_all();
///
/// The wait functions require that the calling thread holds the lock; they release it while
/// sleeping and hold it again when they return (also on timeout). Waits may wake spuriously:
/// prefer the predicate forms. notify() may be called with or without the lock held.
///
/// Built on a futex sequence number (no pthread_cond in memory shared with processes that may
/// die). When the lock's holder dies, the next holder (possibly a waiter re-acquiring it) gets
/// it with owner_died() true. Unlike Python, the default lock is a Lock, not an RLock.
///
/// Thread-safety: any thread of any process may use any handle.
class Condition {
 public:
  /// A new condition with its own new Lock, or using `lock` (shared with its other users).
  /// Throws std::system_error when no shared memory can be had.
  Condition();
  explicit Condition(Lock lock);

  void lock() const { lock_.lock(); }
  bool try_lock() const { return lock_.try_lock(); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return lock_.try_lock_for(timeout);
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return lock_.try_lock_until(deadline);
  }
  void unlock() const { lock_.unlock(); }
  /// The lock's owner_died(): whether the current holder took it over from a dead one.
  bool owner_died() const noexcept { return lock_.owner_died(); }
  /// A handle to the condition's lock.
  Lock get_lock() const { return lock_; }
  void acquire() const { lock_.lock(); }
  void release() const { lock_.unlock(); }

  /// Releases the lock, sleeps until notified (or spuriously), takes the lock again.
  /// Throws std::logic_error when this thread does not hold the lock.
  void wait() const;
  /// Like wait(), giving up after `timeout`; returns false when it timed out.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return wait_until_steady(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    return wait_until_steady(detail::steady_deadline(deadline));
  }
  /// Waits until pred() is true (checked with the lock held, first before any wait).
  template <class Predicate>
  requires std::predicate<Predicate&>
  void wait(Predicate pred) const {
    while (!pred()) wait();
  }
  /// Like wait(pred), giving up after `timeout`; returns pred()'s last value.
  template <class Rep, class Period, class Predicate>
  requires std::predicate<Predicate&>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout, Predicate pred) const {
    return wait_until_steady(detail::deadline_after(timeout), pred);
  }
  template <class Clock, class Duration, class Predicate>
  requires std::predicate<Predicate&>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline, Predicate pred) const {
    return wait_until_steady(detail::steady_deadline(deadline), pred);
  }

  /// Wakes up to `n` waiting threads (more may wake: waits can be spurious).
  void notify(int n = 1) const;
  void notify_one() const { notify(1); }
  void notify_all() const;

  template <class Archive>
  void save(Archive& archive) const {
    archive(lock_);
    detail::save_fd(archive, detail::sync_fd(segment_, "Condition"));
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(lock_);
    segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::condition);
  }

 private:
  bool wait_until_steady(detail::steady_time deadline) const;
  template <class Predicate>
  bool wait_until_steady(detail::steady_time deadline, Predicate& pred) const {
    while (!pred())
      if (!wait_until_steady(deadline)) return static_cast<bool>(pred());
    return true;
  }

  Lock lock_;
  std::shared_ptr<detail::SyncSegment> segment_;
};

/// A barrier for a fixed number of parties in any processes, like Python's
/// multiprocessing.Barrier (and std::barrier): each arrive_and_wait() blocks until `parties`
/// calls have arrived, then all return and the barrier is ready for the next round.
///
/// The barrier breaks — every waiter, and every later caller until reset(), gets BrokenBarrier
/// — when abort() is called, when a timed wait runs out, or when a party dies:
///   * a process that has arrived and is waiting in this round dies (any way: killed, exit);
///   * a process that passed the previous round ends abnormally (killed by a signal, or exit
///     status other than 0) before arriving at this one, as long as its end is still visible:
///     it is a zombie its parent has not reaped yet — as when the parent itself waits here.
/// Waiters look every 100 ms, so a death is noticed within about that. A process that ended
/// with status 0, or was already reaped, is taken to have left: another process may take its
/// place (parties are counted, not named). Processes must share a pid namespace.
///
/// Thread-safety: any thread of any process may use any handle; threads count as parties.
/// A default-constructed Barrier is an empty handle (only to be assigned or decoded into).
///
///   mproc::Barrier barrier(3);   // this process and two children
///   // in each: barrier.arrive_and_wait();   → 0, 1 or 2: the order of arrival
class Barrier {
 public:
  /// An empty handle: every call but assignment throws std::logic_error.
  Barrier() noexcept = default;
  /// A new barrier for `parties` parties.
  /// Throws std::invalid_argument when `parties` is 0 or above 65536.
  explicit Barrier(std::size_t parties);

  /// Arrives and waits for the other parties of this round. Returns the order of arrival in
  /// the round, 0 to parties() - 1 (like Python's wait()).
  /// Throws BrokenBarrier when the barrier is or becomes broken (see the class comment).
  std::size_t arrive_and_wait() const;
  /// Like arrive_and_wait(), but when the round has not completed after `timeout` the
  /// barrier breaks (as in Python) and BrokenBarrier is thrown.
  template <class Rep, class Period>
  std::size_t arrive_and_wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
    return arrive_and_wait_until_steady(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  std::size_t arrive_and_wait_until(
      const std::chrono::time_point<Clock, Duration>& deadline) const {
    return arrive_and_wait_until_steady(detail::steady_deadline(deadline));
  }
  /// Python's name for arrive_and_wait().
  std::size_t wait() const { return arrive_and_wait(); }

  /// Breaks the barrier: current and later waiters get BrokenBarrier until reset().
  void abort() const;
  /// Returns the barrier to its initial state; threads waiting in it get BrokenBarrier.
  void reset() const;
  bool broken() const;
  std::size_t parties() const;
  /// How many parties wait in the current round.
  std::size_t n_waiting() const;

  explicit operator bool() const noexcept { return segment_ != nullptr; }

  template <class Archive>
  void save(Archive& archive) const {
    const bool has_segment = segment_ != nullptr;
    archive(has_segment);
    if (has_segment) detail::save_fd(archive, detail::sync_fd(segment_, "Barrier"));
  }
  template <class Archive>
  void load(Archive& archive) {
    bool has_segment = false;
    archive(has_segment);
    if (has_segment)
      segment_ = detail::attach_sync(detail::load_fd(archive), detail::SyncKind::barrier);
    else
      segment_.reset();
  }

 private:
  std::size_t arrive_and_wait_until_steady(detail::steady_time deadline) const;
  detail::SyncSegment& segment() const;
  std::shared_ptr<detail::SyncSegment> segment_;
};

}  // namespace mproc
