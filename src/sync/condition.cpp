// src/sync/condition.cpp — Condition: a futex sequence number beside a Lock. A waiter reads
// the sequence while it holds the lock, releases the lock and sleeps until the sequence moves;
// notify() moves it. No pthread_cond: its internal state would be left inconsistent by a
// process that dies inside it, and every other waiter could hang.
#include <stdexcept>
#include <string>

#include "futex.hpp"
#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

std::shared_ptr<detail::SyncSegment> create_condition() {
  return detail::create_sync(detail::SyncKind::condition, sizeof(detail::ConditionState),
                             "mproc-condition",
                             [](std::byte* data) { new (data) detail::ConditionState{}; });
}

detail::ConditionState& condition_state(const std::shared_ptr<detail::SyncSegment>& segment) {
  if (!segment) detail::throw_empty_handle("Condition");
  return segment->state<detail::ConditionState>();
}

}  // namespace

Condition::Condition() : segment_(create_condition()) {}

Condition::Condition(Lock lock) : lock_(std::move(lock)), segment_(create_condition()) {}

void Condition::wait() const {
  wait_until_steady(detail::no_deadline);
}

bool Condition::wait_until_steady(detail::steady_time deadline) const {
  auto& state = condition_state(segment_);
  // Read the sequence while holding the lock: a notify() that follows any change the caller
  // made or saw under the lock moves the sequence past this value, so it cannot be missed
  // between our unlock() and our sleep.
  state.waiters.fetch_add(1);
  const std::uint32_t seen = state.sequence.load();
  try {
    lock_.unlock();
  } catch (...) {
    state.waiters.fetch_sub(1);
    throw;
  }
  bool notified = false;
  for (int round = 0; round < detail::spin_rounds && !notified; ++round) {
    notified = state.sequence.load(std::memory_order_relaxed) != seen;
    detail::cpu_relax();
  }
  while (!notified) {
    if (state.sequence.load() != seen) {
      notified = true;
      break;
    }
    const auto left = detail::time_left(deadline);
    if (left.count() == 0) break;
    detail::futex_wait(state.sequence, seen, left);
  }
  state.waiters.fetch_sub(1);
  // As std::condition_variable: the lock is held again on return, also after a timeout. Its
  // holder may have died meanwhile: then this lock() succeeds with owner_died() true.
  lock_.lock();
  return notified;
}

void Condition::notify(int n) const {
  auto& state = condition_state(segment_);
  if (n < 0)
    throw std::invalid_argument("mproc::Condition::notify: n must not be negative (got " +
                                std::to_string(n) + ")");
  if (n == 0) return;
  state.sequence.fetch_add(1);
  if (state.waiters.load() > 0) detail::futex_wake(state.sequence, n);
}

void Condition::notify_all() const {
  auto& state = condition_state(segment_);
  state.sequence.fetch_add(1);
  if (state.waiters.load() > 0) detail::futex_wake(state.sequence);
}

}  // namespace mproc
