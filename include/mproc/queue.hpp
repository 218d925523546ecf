// mproc/queue.hpp — Queue<T>, SimpleQueue<T> and JoinableQueue<T>: first-in first-out queues of
// values between any number of producer and consumer processes, in one shared-memory segment.
//
//   mproc::Queue<std::string> jobs(100);                 // at most 100 items waiting
//   mproc::Process worker([](mproc::Queue<std::string> q) {
//     for (std::string job; !(job = q.get()).empty();) run(job);
//   }, jobs);
//   worker.start();
//   jobs.put("first");
//   jobs.put("");                                        // a sentinel: "no more work"
//   worker.join();
//
// The templates are thin: a value is serialized (serialize.hpp) and its bytes go through
// detail::ByteQueue (src/queue.cpp), a ring of length-prefixed records in a memfd segment
// guarded by a robust process-shared mutex. See docs/ipc.md, "Queue".
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/errors.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

/// The size of a queue's shared byte ring unless QueueOptions says otherwise: 16 MiB.
/// Only the part of the ring that messages have used takes memory.
inline constexpr std::size_t default_queue_capacity = std::size_t{16} << 20;

/// Options of a Queue; use designated initializers:
/// `Queue<Job> jobs(QueueOptions{.maxsize = 100, .capacity_bytes = 1 << 20})`.
struct QueueOptions {
  /// The most items the queue holds at once; put() blocks while it is reached. 0 = no limit.
  std::size_t maxsize = 0;
  /// Bytes of the shared ring that holds the serialized items (each also takes 8 bytes of
  /// framing and is padded to 8 bytes). put() blocks while the ring has no room for an item;
  /// an item that could never fit is refused. At least 16; rounded up to a multiple of 8.
  std::size_t capacity_bytes = default_queue_capacity;
};

namespace detail {

class QueueCore;  // the mapping and the per-process state; src/queue.cpp

/// A timeout as nanoseconds, saturated (hours::max() does not overflow); negative becomes 0.
template <class Rep, class Period>
constexpr std::chrono::nanoseconds queue_timeout(std::chrono::duration<Rep, Period> timeout) noexcept {
  using namespace std::chrono;
  if (timeout <= duration<Rep, Period>::zero()) return nanoseconds::zero();
  if (duration<long double, std::nano>(timeout).count() >=
      static_cast<long double>(nanoseconds::max().count()))
    return nanoseconds::max();
  return duration_cast<nanoseconds>(timeout);
}

/// No time limit: wait until the operation can complete.
inline constexpr std::chrono::nanoseconds queue_forever{-1};

/// A number naming a value type, so that a queue decoded as Queue<U> when it carries T is
/// refused instead of handing out garbage.
template <class T>
constexpr std::uint64_t queue_type_tag() noexcept {
  std::uint64_t hash = 0xcbf29ce484222325u;  // FNV-1a of the type's name
  for (char c : type_name<T>()) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3u;
  return hash;
}

/// A per-thread byte buffer that put/get reuse, so that steady traffic allocates nothing.
/// A nested use in the same thread (a value whose serialize function uses a queue) gets a
/// buffer of its own.
class QueueScratch {
 public:
  QueueScratch() noexcept {
    Slot& slot = thread_slot();
    if (!slot.busy) {
      slot.busy = true;
      shared_ = &slot;
    }
  }
  ~QueueScratch() {
    if (!shared_) return;
    // Keep a warm buffer for the next call, but not one a single huge message left behind.
    if (shared_->bytes.capacity() > keep_limit)
      std::vector<std::byte>().swap(shared_->bytes);
    else
      shared_->bytes.clear();
    shared_->busy = false;
  }
  QueueScratch(const QueueScratch&) = delete;
  QueueScratch& operator=(const QueueScratch&) = delete;
  std::vector<std::byte>& bytes() noexcept { return shared_ ? shared_->bytes : own_; }

 private:
  static constexpr std::size_t keep_limit = std::size_t{1} << 20;
  struct Slot {
    std::vector<std::byte> bytes;
    bool busy = false;
  };
  static Slot& thread_slot() noexcept {
    thread_local Slot slot;
    return slot;
  }
  Slot* shared_ = nullptr;
  std::vector<std::byte> own_;
};

/// The type-erased queue of byte messages behind Queue<T>, SimpleQueue<T> and JoinableQueue<T>:
/// a cheap copyable handle (copies share the queue and its closed() state; a fork child's copy
/// works on the same queue). Timeouts: queue_forever waits without limit, zero never sleeps.
class ByteQueue {
 public:
  /// A new empty queue. Throws std::invalid_argument for a capacity below 16 bytes or above
  /// 1 TiB, std::system_error when the segment cannot be created.
  ByteQueue(const QueueOptions& options, std::uint64_t type_tag);
  /// Opens the queue whose segment is `fd` (taking ownership of it), as made by another
  /// handle's fd(). Throws SerializationError when fd is not a queue's segment or carries
  /// another type than `type_tag`, std::system_error when it cannot be mapped.
  static ByteQueue attach(int fd, std::uint64_t type_tag);

  /// Appends `message`; false when `timeout` passed first (the queue is unchanged then).
  /// Throws std::invalid_argument when the message can never fit, std::logic_error after close().
  bool put(std::span<const std::byte> message, std::chrono::nanoseconds timeout) const;
  /// Moves the oldest message into `out`; false when `timeout` passed first.
  /// Throws std::logic_error after close(), SerializationError when the shared state is corrupt.
  bool get(std::vector<std::byte>& out, std::chrono::nanoseconds timeout) const;

  std::size_t qsize() const;
  std::size_t maxsize() const noexcept;
  std::size_t capacity_bytes() const noexcept;
  void close() const noexcept;
  bool closed() const noexcept;

  /// JoinableQueue: one item fewer is unfinished. Throws std::logic_error when none is.
  void task_done() const;
  /// JoinableQueue: waits until no item is unfinished; false when `timeout` passed first.
  bool join(std::chrono::nanoseconds timeout) const;
  /// Items put and not yet marked done.
  std::size_t unfinished_tasks() const;

  /// The memfd of the shared segment (owned by the handle), for save_fd.
  int fd() const noexcept;
  /// How many times a handle found the queue's lock held by a process that had died and
  /// recovered it (for tests and diagnostics).
  std::uint64_t owner_died_recoveries() const;

 private:
  explicit ByteQueue(std::shared_ptr<QueueCore> core) noexcept : core_(std::move(core)) {}
  std::shared_ptr<QueueCore> core_;
};

/// Serializes `value` and puts its bytes (trivially copyable values and vectors/strings of them
/// go straight from their own memory).
template <class T>
bool queue_put(const ByteQueue& queue, const T& value, std::chrono::nanoseconds timeout) {
  if constexpr (raw_value<T> || raw_range<T>::value) {
    return queue.put(raw_bytes(value), timeout);
  } else {
    QueueScratch scratch;
    serialize_to(scratch.bytes(), value);
    return queue.put(scratch.bytes(), timeout);
  }
}

/// Gets the oldest message and decodes it as a T; nullopt when `timeout` passed first.
template <class T>
std::optional<T> queue_get(const ByteQueue& queue, std::chrono::nanoseconds timeout) {
  QueueScratch scratch;
  if (!queue.get(scratch.bytes(), timeout)) return std::nullopt;
  return deserialize<T>(scratch.bytes());
}

}  // namespace detail

/// A first-in first-out queue of T between processes, like Python's multiprocessing.Queue.
///
/// Many producers and consumers in any processes; each item is got exactly once. put() is
/// synchronous: when it returns, the item is in shared memory (there is no feeder thread to
/// flush). A Queue is a cheap handle: copies share the queue. Share it by capturing or passing
/// it to a Process (any start method), or as an argument of a Pool task; its descriptor
/// travels with SCM_RIGHTS.
///
/// Requires: Serializable<T>.
/// Kill-safety: a process killed in the middle of put() or get() never corrupts the queue or
/// tears an item for the others; an item whose get() was cut short after it left the queue is
/// lost (only that one).
/// Thread-safety: every method may be called from any thread of any process at once.
///
///   mproc::Queue<int> q;
///   q.put(1);
///   int one = q.get();
///   std::optional<int> none = q.try_get();     // nullopt: empty
template <class T>
class Queue {
 public:
  /// A new, empty, unbounded queue (a capacity of default_queue_capacity bytes).
  /// Throws std::system_error when the shared segment cannot be created.
  Queue() : Queue(QueueOptions{}) {}
  /// A new, empty queue of at most `maxsize` items (0 = no limit on the count).
  explicit Queue(std::size_t maxsize) : Queue(QueueOptions{.maxsize = maxsize}) {}
  /// A new, empty queue. Throws std::invalid_argument for capacity_bytes below 16 or above
  /// 1 TiB, std::system_error when the shared segment cannot be created.
  explicit Queue(const QueueOptions& options)
      : queue_((detail::require_serializable<T>(), options), detail::queue_type_tag<T>()) {}

  /// Appends `value`, waiting while the queue is full (maxsize items, or no room in the ring).
  /// Throws std::invalid_argument when the encoded value is larger than the ring (the message
  /// says both sizes), SerializationError when it cannot be encoded, std::logic_error after
  /// close().
  void put(const T& value) { detail::queue_put(queue_, value, detail::queue_forever); }
  /// Like put(value), waiting at most `timeout`. Throws Full when it ran out.
  template <class Rep, class Period>
  void put(const T& value, std::chrono::duration<Rep, Period> timeout) {
    if (!detail::queue_put(queue_, value, detail::queue_timeout(timeout)))
      throw Full("mproc::Queue::put: the queue is full");
  }
  /// Appends `value` if there is room now; returns whether it did. Throws as put().
  bool try_put(const T& value) { return detail::queue_put(queue_, value, std::chrono::nanoseconds::zero()); }

  /// Removes and returns the oldest item, waiting while the queue is empty.
  /// Throws SerializationError when the item cannot be decoded as a T (it is gone then),
  /// std::logic_error after close().
  T get() { return *detail::queue_get<T>(queue_, detail::queue_forever); }
  /// Like get(), waiting at most `timeout`. Throws Empty when it ran out.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    std::optional<T> value = detail::queue_get<T>(queue_, detail::queue_timeout(timeout));
    if (!value) throw Empty("mproc::Queue::get: the queue is empty");
    return std::move(*value);
  }
  /// The oldest item if there is one now (Python's get_nowait(), without the exception).
  std::optional<T> try_get() { return detail::queue_get<T>(queue_, std::chrono::nanoseconds::zero()); }

  /// Items in the queue now (other processes may change it at any moment).
  std::size_t qsize() const { return queue_.qsize(); }
  /// True when there is no item now.
  bool empty() const { return qsize() == 0; }
  /// True when maxsize() items are queued now (always false for an unbounded queue; a
  /// bounded or unbounded queue may also be full by bytes, which this does not report).
  bool full() const { return maxsize() != 0 && qsize() >= maxsize(); }
  /// The most items the queue holds at once; 0 = no limit.
  std::size_t maxsize() const noexcept { return queue_.maxsize(); }
  /// Bytes of the shared ring.
  std::size_t capacity_bytes() const noexcept { return queue_.capacity_bytes(); }

  /// This handle (and its copies in this process) will put and get no more: later put/get
  /// calls throw std::logic_error. Other processes' handles are not affected; the queue lives
  /// while any process holds a handle.
  void close() noexcept { queue_.close(); }

  /// cereal: the queue travels as its segment's descriptor (see detail/fd_transfer.hpp).
  template <class Archive>
  void save(Archive& archive) const {
    detail::save_fd(archive, queue_.fd());
  }
  template <class Archive>
  void load(Archive& archive) {
    queue_ = detail::ByteQueue::attach(detail::load_fd(archive), detail::queue_type_tag<T>());
  }

 protected:
  const detail::ByteQueue& byte_queue() const noexcept { return queue_; }

 private:
  detail::ByteQueue queue_;
};

/// Queue<T> whose consumers report each item done, like Python's JoinableQueue: join() waits
/// until every item put so far has been got and marked with task_done().
///
/// A consumer that dies between get() and task_done() leaves its item unfinished for ever:
/// use join(timeout) where consumers may die.
///
///   // consumer process                       // producer
///   for (;;) { work(q.get()); q.task_done(); } q.put(a); q.put(b); q.join();
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  using Queue<T>::Queue;

  /// Marks one item got earlier as processed. Throws std::logic_error when called more times
  /// than items were put (Python raises ValueError).
  void task_done() { this->byte_queue().task_done(); }
  /// Waits until every item put has been marked with task_done().
  void join() { this->byte_queue().join(detail::queue_forever); }
  /// Like join(), waiting at most `timeout`; returns false when it ran out.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->byte_queue().join(detail::queue_timeout(timeout));
  }
};

/// A plain unbounded queue, like Python's SimpleQueue: put, get, empty, close.
/// Shared, thread- and kill-safe as Queue<T>.
template <class T>
class SimpleQueue {
 public:
  SimpleQueue() : queue_() {}
  /// A queue whose shared ring holds `capacity_bytes` (see QueueOptions).
  explicit SimpleQueue(std::size_t capacity_bytes)
      : queue_(QueueOptions{.maxsize = 0, .capacity_bytes = capacity_bytes}) {}

  /// Appends `value` (waiting while the ring has no room for it). Throws as Queue::put.
  void put(const T& value) { queue_.put(value); }
  /// Like put(value), waiting at most `timeout`. Throws Full when it ran out.
  template <class Rep, class Period>
  void put(const T& value, std::chrono::duration<Rep, Period> timeout) {
    queue_.put(value, timeout);
  }
  /// Removes and returns the oldest item, waiting while there is none.
  T get() { return queue_.get(); }
  /// Like get(), waiting at most `timeout`. Throws Empty when it ran out.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return queue_.get(timeout);
  }
  bool empty() const { return queue_.empty(); }
  /// See Queue::close().
  void close() noexcept { queue_.close(); }

  template <class Archive>
  void save(Archive& archive) const {
    queue_.save(archive);
  }
  template <class Archive>
  void load(Archive& archive) {
    queue_.load(archive);
  }

 private:
  Queue<T> queue_;
};

}  // namespace mproc
