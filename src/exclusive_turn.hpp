// src/exclusive_turn.hpp — a role that one thread holds at a time and that the holding thread
// never re-enters (the consumer side of a pool's result rings, and running their sinks).
#pragma once

#include <mutex>

namespace mproc::detail {

/// Holds `mutex` for the role of `owner`, and marks the thread as holding it, so that a
/// completion callback that waits on another future of the same pool does not take the
/// role again from inside it (the role is not re-entrant, and std::mutex::try_lock by its
/// owner is undefined): then the turn is simply not granted (operator bool is false).
class ExclusiveTurn {
 public:
  ExclusiveTurn(std::mutex& mutex, const void* owner) : owner_(owner) {
    if (held_by_this_thread == owner) return;
    lock_ = std::unique_lock(mutex);
    enter();
  }
  ExclusiveTurn(std::mutex& mutex, const void* owner, std::try_to_lock_t) : owner_(owner) {
    if (held_by_this_thread == owner) return;
    lock_ = std::unique_lock(mutex, std::try_to_lock);
    if (lock_) enter();
  }
  ~ExclusiveTurn() {
    if (lock_) held_by_this_thread = previous_;
  }
  ExclusiveTurn(const ExclusiveTurn&) = delete;
  ExclusiveTurn& operator=(const ExclusiveTurn&) = delete;
  explicit operator bool() const noexcept { return lock_.owns_lock(); }

 private:
  void enter() noexcept {
    previous_ = held_by_this_thread;
    held_by_this_thread = owner_;
  }
  static inline thread_local const void* held_by_this_thread = nullptr;
  const void* owner_;
  std::unique_lock<std::mutex> lock_;
  const void* previous_ = nullptr;
};

}  // namespace mproc::detail
