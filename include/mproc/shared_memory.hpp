// mproc/shared_memory.hpp — memory that several processes see at once: raw segments
// (SharedMemory, anonymous or named in /dev/shm) and typed, lock-carrying views on top of
// them (Value<T>, Array<T>), like Python's multiprocessing.shared_memory and sharedctypes.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/errors.hpp"

namespace mproc {

/// A block of memory shared between processes, like Python's SharedMemory.
///
/// Anonymous segments (the default) are memfds: nothing appears in the file system, and
/// they reach other processes by fork or as arguments of a Process or a pool task (the
/// descriptor travels with SCM_RIGHTS). Named segments live in /dev/shm with mode 0600 so
/// that unrelated processes of the same user can attach() by name; the creating process
/// unlinks the name when its last handle is destroyed, and a small helper process (the
/// resource tracker) unlinks it if the creator dies first, even by SIGKILL.
///
/// A SharedMemory is a cheap handle: copies share one mapping, which is unmapped when the
/// last copy in this process goes. The bytes are zero when created. Access to them is not
/// synchronized: use a lock (Value, Array, mproc::Lock) or atomics (std::atomic_ref).
///
/// Thread-safety: distinct handles may be used from any threads; the bytes are plain memory.
/// Fork-safety: a forked child sees the same bytes; its copies never unlink the name.
///
///   auto memory = mproc::SharedMemory::create(1 << 20);
///   mproc::Process child([memory] { std::ranges::fill(memory.bytes(), std::byte{1}); });
///   child.start();
///   child.join();                                   // memory.bytes()[0] == std::byte{1}
class SharedMemory {
 public:
  /// An empty handle (no segment): size() is 0 and data() is null.
  SharedMemory() noexcept = default;

  /// A new anonymous (memfd) segment of `size` zero bytes.
  /// Throws std::invalid_argument for size 0 or above 1 TiB, std::system_error when the
  /// system refuses ("cannot create shared memory segment of 128 MiB (memfd_create): ...").
  static SharedMemory create(std::size_t size);

  /// A new named segment /dev/shm/<name> (shm_open O_CREAT|O_EXCL, mode 0600), its pages
  /// reserved up front so that a full /dev/shm is an error here rather than a SIGBUS later.
  /// `name` may start with one '/', which name() leaves out.
  /// Throws std::invalid_argument for size 0 or above 1 TiB, or a name that is empty,
  /// longer than 255 characters or contains '/'; std::system_error with
  /// std::errc::file_exists when the name is taken, or another error when the system
  /// refuses ("cannot create shared memory segment 'x' of 128 MiB: ...").
  static SharedMemory create(std::size_t size, std::string name);

  /// Maps the existing named segment /dev/shm/<name>. The handle never unlinks it.
  /// Throws std::invalid_argument for a malformed name, std::system_error with
  /// std::errc::no_such_file_or_directory when there is no such segment, or another error
  /// ("cannot attach shared memory segment 'x': ...").
  static SharedMemory attach(const std::string& name);

  /// The segment's name without a leading '/'; empty for an anonymous segment.
  const std::string& name() const noexcept;
  std::size_t size() const noexcept { return size_; }
  std::byte* data() const noexcept { return data_; }
  std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// The descriptor behind the mapping (-1 for an empty handle); it stays owned by the handle.
  int native_handle() const noexcept;

  /// cereal: the descriptor travels with SCM_RIGHTS (see detail/fd_transfer.hpp), beside the
  /// size and name. The decoded handle maps the same pages and is never the creator.
  template <class Archive>
  void save(Archive& archive) const {
    const bool has_segment = static_cast<bool>(*this);
    archive(has_segment);
    if (!has_segment) return;
    detail::save_fd(archive, native_handle());
    archive(static_cast<std::uint64_t>(size_), name());
  }
  template <class Archive>
  void load(Archive& archive) {
    bool has_segment = false;
    archive(has_segment);
    if (!has_segment) {
      *this = SharedMemory();
      return;
    }
    const int fd = detail::load_fd(archive);
    std::uint64_t size = 0;
    std::string name;
    try {
      archive(size, name);
    } catch (...) {
      close_fd(fd);
      throw;
    }
    *this = from_fd(fd, size, std::move(name));
  }

 private:
  struct State;
  explicit SharedMemory(std::shared_ptr<State> state) noexcept;
  /// Adopts `fd` (closed on every path) and maps it; `size` must match the segment's.
  static SharedMemory from_fd(int fd, std::uint64_t size, std::string name);
  static void close_fd(int fd) noexcept;

  std::shared_ptr<State> state_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {
/// What Value and Array can hold: plain bytes that mean the same in every process.
template <class T>
concept shareable_element = std::is_trivially_copyable_v<T> && std::is_object_v<T> &&
                            !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                            alignof(T) <= 4096;
}  // namespace detail

template <class T>
  requires detail::shareable_element<T>
class Value;
template <class T>
  requires detail::shareable_element<T>
class Array;

/// The lock of a Value or an Array: a robust, recursive, process-shared pthread mutex that
/// lives in the same shared segment as the data it guards (like the RLock that Python's
/// Value and Array carry). It meets the TimedLockable requirements, so std::scoped_lock,
/// std::unique_lock and std::lock work with it.
///
/// Recursive: the thread that holds it may lock it again (get() and set() lock it too, so
/// they may be called inside a locked section); it is released after as many unlock()s.
/// When a process dies holding it, the next lock() succeeds (the kernel hands the mutex on)
/// and owner_died() is true until that owner unlocks: the guarded data may be half-updated.
///
/// Thread-safety: as a mutex. Obtained by reference from get_lock(); it lives as long as
/// any copy of its Value or Array in this process: keep one while the lock is held.
class ValueLock {
 public:
  ValueLock(const ValueLock&) = delete;
  ValueLock& operator=(const ValueLock&) = delete;

  /// Blocks until the lock is held. Throws std::system_error if the mutex is unusable.
  void lock();
  /// Takes the lock if it is free (or already held by this thread); never blocks.
  bool try_lock();
  /// Like lock(), giving up after `timeout`; returns whether the lock is held.
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    if (std::chrono::duration<double>(timeout).count() > 3e9) {  // ~95 years: forever
      lock();
      return true;
    }
    return lock_until(std::chrono::steady_clock::now() +
                      std::chrono::ceil<std::chrono::steady_clock::duration>(
                          std::max(timeout, std::chrono::duration<Rep, Period>::zero())));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> deadline) {
    return try_lock_for(deadline - Clock::now());
  }
  /// Releases one level of ownership. Requires: this thread holds the lock.
  /// Throws std::system_error (EPERM) when it does not.
  void unlock();
  /// True while the current owner took the lock over from a process (or thread) that died
  /// holding it. Meaningful only to the thread holding the lock.
  bool owner_died() const noexcept;

 private:
  template <class T>
    requires detail::shareable_element<T>
  friend class Value;
  template <class T>
    requires detail::shareable_element<T>
  friend class Array;
  struct Header;

  ValueLock(SharedMemory memory, Header* header) noexcept
      : memory_(std::move(memory)), header_(header) {}
  /// A new segment of `payload_offset(alignment) + payload_bytes` bytes with an initialized
  /// mutex; `count` is recorded in its header (an Array's length).
  static std::shared_ptr<ValueLock> create(std::size_t alignment, std::size_t payload_bytes,
                                           std::uint64_t count);
  /// Wraps a segment received from another process, checking that it was made for `count`
  /// elements of `element_bytes` and is large enough for them (SerializationError if not).
  static std::shared_ptr<ValueLock> adopt(SharedMemory memory, std::size_t alignment,
                                          std::size_t element_bytes, std::uint64_t count);
  static std::size_t payload_offset(std::size_t alignment) noexcept;
  std::byte* payload(std::size_t alignment) const noexcept {
    return memory_.data() + payload_offset(alignment);
  }
  bool lock_until(std::chrono::steady_clock::time_point deadline);
  /// The shared memory the lock and the data live in.
  const SharedMemory& memory() const noexcept { return memory_; }

  SharedMemory memory_;
  Header* header_;
};

/// One T in shared memory with its own lock, like Python's multiprocessing.Value.
///
/// get() and set() take the lock; *v, v->member and value() reach the shared T directly
/// (hold get_lock() or use with_lock() for read-modify-write). Copies share the value.
/// A default-constructed Value is an empty handle (as a decoded one is before loading):
/// write `Value<int> v(0)` for a value.
///
/// Requires: T trivially copyable, not a pointer (an address means nothing in another
/// process). Passing: capture or copy it into a fork child, or pass it as an argument of a
/// Process or a pool task under any start method.
///
///   mproc::Value<long> counter(0);
///   // in each of several processes:
///   counter.with_lock([](long& n) { ++n; });
template <class T>
  requires detail::shareable_element<T>
class Value {
 public:
  using value_type = T;
  using lock_type = ValueLock;

  /// An empty handle.
  Value() noexcept = default;
  /// A new shared T equal to `initial`.
  /// Throws std::system_error when no shared memory can be had.
  explicit Value(const T& initial)
      : lock_(ValueLock::create(alignof(T), sizeof(T), 1)),
        value_(reinterpret_cast<T*>(lock_->payload(alignof(T)))) {
    std::memcpy(static_cast<void*>(value_), std::addressof(initial), sizeof(T));
  }

  /// A copy of the value, read under the lock.
  T get() const {
    std::scoped_lock hold(get_lock());
    return *value_;
  }
  /// Replaces the value under the lock.
  void set(const T& v) const {
    std::scoped_lock hold(get_lock());
    *value_ = v;
  }
  /// Runs f(T&) with the lock held and returns its result.
  template <class F>
    requires std::invocable<F&, T&>
  decltype(auto) with_lock(F&& f) const {
    std::scoped_lock hold(get_lock());
    return f(*value_);
  }

  /// The shared T itself, unsynchronized. Requires: a non-empty handle.
  T& value() const noexcept { return *value_; }
  T& operator*() const noexcept { return *value_; }
  T* operator->() const noexcept { return value_; }

  /// The lock guarding the value. Throws std::logic_error on an empty handle.
  lock_type& get_lock() const {
    if (!lock_) throw std::logic_error("mproc::Value: empty handle (default-constructed)");
    return *lock_;
  }
  explicit operator bool() const noexcept { return lock_ != nullptr; }

  template <class Archive>
  void save(Archive& archive) const {
    archive(lock_ ? lock_->memory() : SharedMemory());
  }
  template <class Archive>
  void load(Archive& archive) {
    SharedMemory memory;
    archive(memory);
    if (!memory) {
      *this = Value();
      return;
    }
    lock_ = ValueLock::adopt(std::move(memory), alignof(T), sizeof(T), 1);
    value_ = reinterpret_cast<T*>(lock_->payload(alignof(T)));
  }

 private:
  std::shared_ptr<ValueLock> lock_;
  T* value_ = nullptr;
};

/// A fixed-size array of T in shared memory with a lock, like Python's
/// multiprocessing.Array. Elements are reached directly (operator[], begin/end, span());
/// hold get_lock() or use with_lock() to update them consistently. Copies share the elements.
/// A default-constructed Array is an empty handle of size 0.
///
/// Requires: T trivially copyable, not a pointer. Passing: as for Value.
///
///   mproc::Array<double> data(1000);               // 1000 zeros
///   mproc::Process worker([data] { data[0] = 3.5; });
template <class T>
  requires detail::shareable_element<T>
class Array {
 public:
  using value_type = T;
  using lock_type = ValueLock;
  using iterator = T*;
  using const_iterator = T*;

  /// An empty handle.
  Array() noexcept = default;
  /// `count` zero-initialized elements (all bits zero).
  /// Throws std::invalid_argument for 0 elements or more than fit in 1 TiB,
  /// std::system_error when no shared memory can be had.
  explicit Array(std::size_t count) : Array(count, nullptr) {}
  /// A copy of `initial`'s elements. Throws as Array(count).
  explicit Array(std::span<const T> initial) : Array(initial.size(), initial.data()) {}
  Array(std::initializer_list<T> initial) : Array(initial.size(), initial.begin()) {}

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() const noexcept { return data_; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  std::span<T> span() const noexcept { return {data_, size_}; }
  /// Unchecked element access. Requires: i < size().
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  /// Checked element access. Throws std::out_of_range.
  T& at(std::size_t i) const {
    if (i >= size_)
      throw std::out_of_range("mproc::Array index " + std::to_string(i) + " out of range (size " +
                              std::to_string(size_) + ")");
    return data_[i];
  }
  /// A copy of the elements, taken under the lock (Python's arr[:]).
  std::vector<T> to_vector() const {
    std::scoped_lock hold(get_lock());
    return std::vector<T>(begin(), end());
  }
  /// Runs f(std::span<T>) with the lock held and returns its result.
  template <class F>
    requires std::invocable<F&, std::span<T>>
  decltype(auto) with_lock(F&& f) const {
    std::scoped_lock hold(get_lock());
    return f(span());
  }

  /// The lock guarding the elements. Throws std::logic_error on an empty handle.
  lock_type& get_lock() const {
    if (!lock_) throw std::logic_error("mproc::Array: empty handle (default-constructed)");
    return *lock_;
  }
  explicit operator bool() const noexcept { return lock_ != nullptr; }

  template <class Archive>
  void save(Archive& archive) const {
    archive(lock_ ? lock_->memory() : SharedMemory(), static_cast<std::uint64_t>(size_));
  }
  template <class Archive>
  void load(Archive& archive) {
    SharedMemory memory;
    std::uint64_t count = 0;
    archive(memory, count);
    if (!memory) {
      *this = Array();
      return;
    }
    lock_ = ValueLock::adopt(std::move(memory), alignof(T), sizeof(T), count);
    data_ = reinterpret_cast<T*>(lock_->payload(alignof(T)));
    size_ = static_cast<std::size_t>(count);
  }

 private:
  Array(std::size_t count, const T* initial) {
    if (count == 0) throw std::invalid_argument("mproc::Array: an array needs at least one element");
    if (count > (std::size_t{1} << 40) / sizeof(T))
      throw std::invalid_argument("mproc::Array: " + std::to_string(count) +
                                  " elements do not fit in the 1 TiB limit of shared memory");
    lock_ = ValueLock::create(alignof(T), count * sizeof(T), count);
    data_ = reinterpret_cast<T*>(lock_->payload(alignof(T)));
    size_ = count;
    if (initial) std::memcpy(static_cast<void*>(data_), initial, count * sizeof(T));
  }

  std::shared_ptr<ValueLock> lock_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mproc
