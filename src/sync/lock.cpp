// src/sync/lock.cpp — Lock and RLock: robust process-shared pthread mutexes in their own
// segments. A holder that dies hands the mutex on; the next holder learns it from owner_died().
#include <stdexcept>
#include <string>

#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

// Beside the pthread mutex, LockState keeps `owner_tid` (and, for an RLock, `depth`, which
// the pthread mutex counts too): written only by the holder, they let unlock() refuse a
// thread that does not hold the lock before touching anything, and let an RLock tell its
// outermost acquisition — the one owner_died() describes — from nested ones.

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

/// Records an acquisition by the calling thread (which now holds the mutex).
bool note_acquired(detail::SyncSegment& segment, detail::LockState& state,
                   detail::LockResult result, bool recursive) {
  if (result == detail::LockResult::timed_out) return false;
  const bool died = result == detail::LockResult::owner_died;
  if (!recursive || died || state.depth == 0) {
    // An outermost acquisition. After a death the kernel hands a recursive mutex over with a
    // count of one, whatever depth the dead holder had reached.
    state.depth = 1;
    state.owner_died.store(died, std::memory_order_relaxed);
    state.owner_tid.store(detail::current_tid(), std::memory_order_relaxed);
  } else {
    ++state.depth;
  }
  segment.holds.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void note_released(detail::SyncSegment& segment, detail::LockState& state, const char* type) {
  const pid_t self = detail::current_tid();
  if (state.owner_tid.load(std::memory_order_relaxed) != self || state.depth == 0)
    throw std::logic_error(std::string("mproc::") + type +
                           ": unlock() by a thread that does not hold it");
  const bool last = --state.depth == 0;
  if (last) state.owner_tid.store(0, std::memory_order_relaxed);
  try {
    detail::robust_unlock(state.mutex, type);
  } catch (...) {
    // Only a thread whose tid was recycled from a dead holder gets here: not our mutex.
    ++state.depth;
    if (last) state.owner_tid.store(self, std::memory_order_relaxed);
    throw;
  }
  segment.holds.fetch_sub(1, std::memory_order_relaxed);
}

bool owner_died_of(const std::shared_ptr<detail::SyncSegment>& segment) noexcept {
  return segment &&
         segment->state<detail::LockState>().owner_died.load(std::memory_order_relaxed) != 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Lock

Lock::Lock() : segment_(create_lock(detail::SyncKind::lock, PTHREAD_MUTEX_ERRORCHECK)) {}

void Lock::lock() const {
  lock_until(detail::no_deadline);
}

bool Lock::lock_until(detail::steady_time deadline) const {
  auto& state = lock_state(segment_, "Lock");
  return note_acquired(*segment_, state, detail::robust_lock(state.mutex, deadline, "Lock"), false);
}

bool Lock::try_lock() const {
  auto& state = lock_state(segment_, "Lock");
  return note_acquired(*segment_, state, detail::robust_try_lock(state.mutex, "Lock"), false);
}

void Lock::unlock() const {
  auto& state = lock_state(segment_, "Lock");
  note_released(*segment_, state, "Lock");
}

bool Lock::owner_died() const noexcept {
  return owner_died_of(segment_);
}

// ---------------------------------------------------------------------------------------------
// RLock

RLock::RLock() : segment_(create_lock(detail::SyncKind::rlock, PTHREAD_MUTEX_RECURSIVE)) {}

void RLock::lock() const {
  lock_until(detail::no_deadline);
}

bool RLock::lock_until(detail::steady_time deadline) const {
  auto& state = lock_state(segment_, "RLock");
  return note_acquired(*segment_, state, detail::robust_lock(state.mutex, deadline, "RLock"), true);
}

bool RLock::try_lock() const {
  auto& state = lock_state(segment_, "RLock");
  return note_acquired(*segment_, state, detail::robust_try_lock(state.mutex, "RLock"), true);
}

void RLock::unlock() const {
  auto& state = lock_state(segment_, "RLock");
  note_released(*segment_, state, "RLock");
}

bool RLock::owner_died() const noexcept {
  return owner_died_of(segment_);
}

}  // namespace mproc
