// src/sync/semaphore.cpp — Semaphore and BoundedSemaphore: a count in shared memory that is
// also the futex word its waiters sleep on.
#include <climits>
#include <stdexcept>
#include <string>

#include "futex.hpp"
#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

std::shared_ptr<detail::SyncSegment> create_semaphore(detail::SyncKind kind, int initial,
                                                      std::uint32_t max_count) {
  if (initial < 0)
    throw std::invalid_argument("mproc::Semaphore: the initial value must not be negative (got " +
                                std::to_string(initial) + ")");
  return detail::create_sync(kind, sizeof(detail::SemaphoreState), "mproc-semaphore",
                             [&](std::byte* data) {
                               auto* state = new (data) detail::SemaphoreState{};
                               state->count.store(static_cast<std::uint32_t>(initial));
                               state->max_count = max_count;
                             });
}

detail::SemaphoreState& semaphore_state(const std::shared_ptr<detail::SyncSegment>& segment) {
  if (!segment) detail::throw_empty_handle("Semaphore");
  return segment->state<detail::SemaphoreState>();
}

/// Decrements `count` if it is positive.
bool try_take(std::atomic<std::uint32_t>& count) noexcept {
  std::uint32_t value = count.load(std::memory_order_relaxed);
  while (value > 0)
    if (count.compare_exchange_weak(value, value - 1, std::memory_order_acquire,
                                    std::memory_order_relaxed))
      return true;
  return false;
}

}  // namespace

Semaphore::Semaphore(int initial)
    : segment_(create_semaphore(detail::SyncKind::semaphore, initial, INT_MAX)) {}

Semaphore::Semaphore(bounded_tag, int initial)
    : segment_(create_semaphore(detail::SyncKind::bounded_semaphore, initial,
                                static_cast<std::uint32_t>(initial < 0 ? 0 : initial))) {}

void Semaphore::acquire() const {
  acquire_until(detail::no_deadline);
}

bool Semaphore::try_acquire() const {
  return try_take(semaphore_state(segment_).count);
}

bool Semaphore::acquire_until(detail::steady_time deadline) const {
  auto& state = semaphore_state(segment_);
  for (int round = 0; round < detail::spin_rounds; ++round) {
    if (try_take(state.count)) return true;
    detail::cpu_relax();
  }
  for (;;) {
    if (try_take(state.count)) return true;
    const auto left = detail::time_left(deadline);
    if (left.count() == 0) return false;
    // Announce the sleep before it: release() adds to the count, then reads `waiters`; we add
    // to `waiters`, then the kernel compares the count with 0. Whichever comes second sees the
    // other's write (both are sequentially consistent), so a release is never slept through.
    state.waiters.fetch_add(1);
    detail::futex_wait(state.count, 0, left);
    state.waiters.fetch_sub(1);
  }
}

void Semaphore::release(int n) const {
  auto& state = semaphore_state(segment_);
  if (n < 1)
    throw std::invalid_argument("mproc::Semaphore::release: n must be at least 1 (got " +
                                std::to_string(n) + ")");
  std::uint32_t value = state.count.load(std::memory_order_relaxed);
  do {
    if (value + static_cast<std::uint64_t>(n) > state.max_count) {
      if (segment_->kind() == detail::SyncKind::bounded_semaphore)
        throw std::logic_error(
            "mproc::BoundedSemaphore: released too many times (the value "
            "would exceed its initial value " +
            std::to_string(state.max_count) + ")");
      throw std::overflow_error("mproc::Semaphore: release would take the value past INT_MAX");
    }
  } while (!state.count.compare_exchange_weak(value, value + static_cast<std::uint32_t>(n)));
  if (state.waiters.load() > 0) detail::futex_wake(state.count, n);
}

int Semaphore::get_value() const noexcept {
  if (!segment_) return 0;
  return static_cast<int>(segment_->state<detail::SemaphoreState>().count.load());
}

}  // namespace mproc
