// src/sync/sync_segment.cpp — the segments synchronization primitives live in, their
// validation when a handle arrives from another process, and the robust mutex calls.
#include "sync/sync_segment.hpp"

#include <errno.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>

#include "syscall.hpp"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define MPROC_SYNC_TSAN 1
#else
#define MPROC_SYNC_TSAN 0
#endif

namespace mproc::detail {

namespace {
// This thread's tid, cached: gettid() is a system call, and locks ask on every acquisition.
// A forked child's only thread is the one that forked: the atfork handler forgets the
// parent's tid there.
thread_local pid_t cached_tid = 0;
void forget_tid_in_child() noexcept {
  cached_tid = 0;
}
}  // namespace

pid_t current_tid() noexcept {
  if (cached_tid == 0) {
    static const int registered = ::pthread_atfork(nullptr, nullptr, forget_tid_in_child);
    (void)registered;
    cached_tid = ::gettid();
  }
  return cached_tid;
}

SyncSegment::~SyncSegment() {
  // The kernel releases a robust mutex held by a dying thread by walking the thread's list of
  // held robust mutexes — at their addresses in this process. Unmapping a mutex this process
  // still holds (the last handle destroyed while locked: a bug, as for std::mutex) would make
  // that walk fail, and the other processes would wait on it forever. Keep such a mapping.
  if (holds.load(std::memory_order_relaxed) > 0) (void)segment_.release();
}

int sync_fd(const std::shared_ptr<SyncSegment>& segment, const char* type) {
  if (!segment) throw_empty_handle(type);
  return segment->fd();
}

[[noreturn]] void throw_empty_handle(const char* type) {
  throw std::logic_error(std::string("mproc::") + type +
                         ": empty handle (default-constructed or moved from)");
}

namespace {

const char* kind_name(SyncKind kind) noexcept {
  switch (kind) {
    case SyncKind::lock:
      return "Lock";
    case SyncKind::rlock:
      return "RLock";
    case SyncKind::semaphore:
      return "Semaphore";
    case SyncKind::bounded_semaphore:
      return "BoundedSemaphore";
    case SyncKind::event:
      return "Event";
    case SyncKind::condition:
      return "Condition";
    case SyncKind::barrier:
      return "Barrier";
  }
  return "synchronization primitive";
}

bool kind_accepted(SyncKind expected, SyncKind actual) noexcept {
  if (expected == actual) return true;
  // A Semaphore handle may refer to a BoundedSemaphore (the bound lives in the segment).
  return expected == SyncKind::semaphore && actual == SyncKind::bounded_semaphore;
}

}  // namespace

std::size_t sync_state_size(SyncKind kind, const std::byte* data, std::size_t mapped) {
  switch (kind) {
    case SyncKind::lock:
    case SyncKind::rlock:
      return sizeof(LockState);
    case SyncKind::semaphore:
    case SyncKind::bounded_semaphore:
      return sizeof(SemaphoreState);
    case SyncKind::event:
      return sizeof(EventState);
    case SyncKind::condition:
      return sizeof(ConditionState);
    case SyncKind::barrier: {
      if (mapped < sizeof(BarrierState)) return sizeof(BarrierState);
      std::uint32_t parties = 0;
      std::memcpy(&parties, data + offsetof(BarrierState, parties), sizeof parties);
      if (parties == 0 || parties > max_barrier_parties) return 0;
      return BarrierState::bytes_for(parties);
    }
  }
  return 0;
}

std::shared_ptr<SyncSegment> attach_sync(int fd, SyncKind expected) {
  const std::string what = std::string("cannot decode an mproc::") + kind_name(expected) + ": ";
  ShmSegment segment;
  try {
    segment = ShmSegment::attach(UniqueFd(fd));
  } catch (const std::system_error& e) {
    throw SerializationError(what + e.what());
  }
  if (segment.size() < sizeof(SyncHeader))
    throw SerializationError(what + "the descriptor does not hold a synchronization primitive");
  const auto* header = reinterpret_cast<const SyncHeader*>(segment.data());
  if (header->magic.load(std::memory_order_acquire) != sync_magic)
    throw SerializationError(what + "the descriptor does not hold a synchronization primitive");
  const SyncKind actual = header->kind;
  if (!kind_accepted(expected, actual))
    throw SerializationError(what + "the descriptor holds an mproc::" + kind_name(actual));
  const std::size_t needed = sync_state_size(actual, segment.data(), segment.size());
  if (needed == 0 || segment.size() < needed)
    throw SerializationError(what + "its shared state is malformed");
  const pthread_mutex_t* mutex = nullptr;
  int mutex_type = PTHREAD_MUTEX_ERRORCHECK;
  if (actual == SyncKind::lock || actual == SyncKind::rlock) {
    mutex = &reinterpret_cast<const LockState*>(segment.data())->mutex;
    if (actual == SyncKind::rlock) mutex_type = PTHREAD_MUTEX_RECURSIVE;
  } else if (actual == SyncKind::barrier) {
    mutex = &reinterpret_cast<const BarrierState*>(segment.data())->mutex;
  }
  if (mutex && !robust_mutex_type_matches(*mutex, mutex_type))
    throw SerializationError(what + "its mutex is not one mproc made (a process wrote over it)");
  if (actual == SyncKind::semaphore || actual == SyncKind::bounded_semaphore) {
    const auto* state = reinterpret_cast<const SemaphoreState*>(segment.data());
    const std::uint32_t max_count = state->max_count;
    if (max_count > INT_MAX || state->count.load(std::memory_order_relaxed) > max_count)
      throw SerializationError(what + "its count is beyond its bound (a process wrote over it)");
  }
  return std::make_shared<SyncSegment>(std::move(segment), actual);
}

// ---------------------------------------------------------------------------------------------

std::chrono::nanoseconds time_left(steady_time deadline) noexcept {
  if (deadline == no_deadline) return std::chrono::nanoseconds(-1);
  const auto left = deadline - std::chrono::steady_clock::now();
  if (left <= left.zero()) return std::chrono::nanoseconds(0);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(left);
}

timespec monotonic_timespec(steady_time deadline) noexcept {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  timespec ts{};
  if (ns <= 0) return ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

void init_robust_mutex(pthread_mutex_t& mutex, int type) {
  pthread_mutexattr_t attributes;
  int rc = ::pthread_mutexattr_init(&attributes);
  if (rc != 0) throw_errno(rc, "cannot initialize a process-shared mutex");
  rc = ::pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = ::pthread_mutexattr_settype(&attributes, type);
  if (rc == 0) rc = ::pthread_mutex_init(&mutex, &attributes);
  ::pthread_mutexattr_destroy(&attributes);
  if (rc != 0) throw_errno(rc, "cannot initialize a robust process-shared mutex");
}

bool robust_mutex_type_matches(const pthread_mutex_t& mutex, int type) noexcept {
#if defined(__GLIBC__)
  // The type word a fresh mutex of each type gets here (robust, process-shared, maybe elision
  // flags), computed once per type.
  auto fresh_kind = [](int t) {
    pthread_mutex_t probe;
    try {
      init_robust_mutex(probe, t);
    } catch (...) {
      return -1;
    }
    const int kind = probe.__data.__kind;
    ::pthread_mutex_destroy(&probe);
    return kind;
  };
  static const int normal = fresh_kind(PTHREAD_MUTEX_NORMAL);
  static const int errorcheck = fresh_kind(PTHREAD_MUTEX_ERRORCHECK);
  static const int recursive = fresh_kind(PTHREAD_MUTEX_RECURSIVE);
  const int expected = type == PTHREAD_MUTEX_ERRORCHECK  ? errorcheck
                       : type == PTHREAD_MUTEX_RECURSIVE ? recursive
                                                         : normal;
  const int kind = __atomic_load_n(&mutex.__data.__kind, __ATOMIC_RELAXED);
  return expected != -1 && kind == expected;
#else
  (void)mutex;
  (void)type;
  return true;
#endif
}

namespace {

LockResult lock_result(pthread_mutex_t& mutex, int rc, const char* type_name, bool trying) {
  switch (rc) {
    case 0:
      return LockResult::acquired;
    case EOWNERDEAD:
      // The previous holder died holding it; we hold it now. Mark it consistent at once, so
      // that if we die too the next holder sees EOWNERDEAD again, never ENOTRECOVERABLE.
      ::pthread_mutex_consistent(&mutex);
      return LockResult::owner_died;
    case ETIMEDOUT:
    case EBUSY:
      return LockResult::timed_out;
    case EDEADLK:
      if (trying) return LockResult::timed_out;
      throw std::logic_error(std::string("mproc::") + type_name +
                             ": the calling thread already holds it (locking it again would "
                             "deadlock)");
    default:
      throw_errno(rc, std::string("cannot lock an mproc::") + type_name);
  }
}

}  // namespace

LockResult robust_lock(pthread_mutex_t& mutex, steady_time deadline, const char* type_name) {
  int rc;
  if (deadline == no_deadline) {
    rc = ::pthread_mutex_lock(&mutex);
  } else {
    const timespec limit = monotonic_timespec(deadline);
#if MPROC_SYNC_TSAN
    // ThreadSanitizer (GCC 12) does not intercept pthread_mutex_clocklock: tell it.
    __tsan_mutex_pre_lock(&mutex, __tsan_mutex_try_lock);
#endif
    rc = ::pthread_mutex_clocklock(&mutex, CLOCK_MONOTONIC, &limit);
#if MPROC_SYNC_TSAN
    __tsan_mutex_post_lock(&mutex,
                           rc == 0 || rc == EOWNERDEAD
                               ? __tsan_mutex_try_lock
                               : __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed,
                           0);
#endif
  }
  return lock_result(mutex, rc, type_name, false);
}

LockResult robust_try_lock(pthread_mutex_t& mutex, const char* type_name) {
  return lock_result(mutex, ::pthread_mutex_trylock(&mutex), type_name, true);
}

void robust_unlock(pthread_mutex_t& mutex, const char* type_name) {
  const int rc = ::pthread_mutex_unlock(&mutex);
  if (rc == 0) return;
  if (rc == EPERM)
    throw std::logic_error(std::string("mproc::") + type_name +
                           ": unlock() by a thread that does not hold it");
  throw_errno(rc, std::string("cannot unlock an mproc::") + type_name);
}

}  // namespace mproc::detail
