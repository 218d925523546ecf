// src/sync/lock.cpp — Lock and RLock: robust process-shared pthread mutexes in their own
// segments. A holder that dies hands the mutex on; the next holder learns it from owner_died().
#include <unistd.h>

#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

std::shared_ptr<detail::SyncSegment> create_lock(detail::SyncKind kind, int type) {
  return detail::create_sync(kind, sizeof(detail::LockState),
                             kind == detail::SyncKind::lock ? "mproc-lock" : "mproc-rlock",
                             [type](std::byte* data) {
                               auto* state = new (data) detail::LockState{};
                               detail::init_robust_mutex(state->mutex, type);
                             });
}

detail::LockState& lock_state(const std::shared_ptr<detail::SyncSegment>& segment,
                              const char* type) {
  if (!segment) detail::throw_empty_handle(type);
  return segment->state<detail::LockState>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Lock

Lock::Lock() : segment_(create_lock(detail::SyncKind::lock, PTHREAD_MUTEX_ERRORCHECK)) {}

void Lock::lock() { lock_until(detail::no_deadline); }

bool Lock::lock_until(detail::steady_time deadline) {
  auto& state = lock_state(segment_, "Lock");
  const auto result = detail::robust_lock(state.mutex, deadline, "Lock");
  if (result == detail::LockResult::timed_out) return false;
  state.owner_died.store(result == detail::LockResult::owner_died, std::memory_order_relaxed);
  segment_->holds.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool Lock::try_lock() {
  auto& state = lock_state(segment_, "Lock");
  const auto result = detail::robust_try_lock(state.mutex, "Lock");
  if (result == detail::LockResult::timed_out) return false;
  state.owner_died.store(result == detail::LockResult::owner_died, std::memory_order_relaxed);
  segment_->holds.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Lock::unlock() {
  auto& state = lock_state(segment_, "Lock");
  detail::robust_unlock(state.mutex, "Lock");
  segment_->holds.fetch_sub(1, std::memory_order_relaxed);
}

bool Lock::owner_died() const noexcept {
  return segment_ && segment_->state<detail::LockState>().owner_died.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// RLock
//
// The pthread mutex counts the recursion itself; `depth` and `owner_tid` mirror it so that
// owner_died() is decided by the outermost acquisition only, and so that unlock() by a thread
// that does not hold the lock is refused before it touches `depth`.

RLock::RLock() : segment_(create_lock(detail::SyncKind::rlock, PTHREAD_MUTEX_RECURSIVE)) {}

void RLock::lock() { lock_until(detail::no_deadline); }

namespace {

void note_rlock_acquired(detail::SyncSegment& segment, detail::LockState& state,
                         detail::LockResult result) {
  if (result == detail::LockResult::owner_died) {
    // Whatever depth the dead holder had reached, the kernel handed the mutex over with a
    // count of one.
    state.depth = 1;
    state.owner_died.store(1, std::memory_order_relaxed);
    state.owner_tid.store(::gettid(), std::memory_order_relaxed);
  } else if (++state.depth == 1) {
    state.owner_died.store(0, std::memory_order_relaxed);
    state.owner_tid.store(::gettid(), std::memory_order_relaxed);
  }
  segment.holds.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

bool RLock::lock_until(detail::steady_time deadline) {
  auto& state = lock_state(segment_, "RLock");
  const auto result = detail::robust_lock(state.mutex, deadline, "RLock");
  if (result == detail::LockResult::timed_out) return false;
  note_rlock_acquired(*segment_, state, result);
  return true;
}

bool RLock::try_lock() {
  auto& state = lock_state(segment_, "RLock");
  const auto result = detail::robust_try_lock(state.mutex, "RLock");
  if (result == detail::LockResult::timed_out) return false;
  note_rlock_acquired(*segment_, state, result);
  return true;
}

void RLock::unlock() {
  auto& state = lock_state(segment_, "RLock");
  if (state.owner_tid.load(std::memory_order_relaxed) != ::gettid() || state.depth == 0)
    throw std::logic_error("mproc::RLock: unlock() by a thread that does not hold it");
  if (--state.depth == 0) state.owner_tid.store(0, std::memory_order_relaxed);
  try {
    detail::robust_unlock(state.mutex, "RLock");
  } catch (...) {
    // Only a thread whose tid was recycled from a dead holder gets here: the mutex is not ours.
    if (state.depth++ == 0) state.owner_tid.store(::gettid(), std::memory_order_relaxed);
    throw;
  }
  segment_->holds.fetch_sub(1, std::memory_order_relaxed);
}

bool RLock::owner_died() const noexcept {
  return segment_ && segment_->state<detail::LockState>().owner_died.load(std::memory_order_relaxed);
}

}  // namespace mproc
