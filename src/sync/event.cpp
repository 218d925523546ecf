// src/sync/event.cpp — Event: a flag and a count of the times it was set, in one futex word.
#include "futex.hpp"
#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

constexpr std::uint32_t flag_bit = 1;
constexpr std::uint32_t one_set = 2;  // the set count starts above the flag bit

detail::EventState& event_state(const std::shared_ptr<detail::SyncSegment>& segment) {
  if (!segment) detail::throw_empty_handle("Event");
  return segment->state<detail::EventState>();
}

}  // namespace

Event::Event()
    : segment_(detail::create_sync(detail::SyncKind::event, sizeof(detail::EventState),
                                   "mproc-event",
                                   [](std::byte* data) { new (data) detail::EventState{}; })) {}

void Event::set() const {
  auto& state = event_state(segment_);
  std::uint32_t word = state.word.load();
  do {
    if (word & flag_bit) return;
  } while (!state.word.compare_exchange_weak(word, (word + one_set) | flag_bit));
  if (state.waiters.load() > 0) detail::futex_wake(state.word);
}

void Event::clear() const {
  event_state(segment_).word.fetch_and(~flag_bit);
}

bool Event::is_set() const noexcept {
  return segment_ && (segment_->state<detail::EventState>().word.load() & flag_bit);
}

void Event::wait() const {
  wait_until_steady(detail::no_deadline);
}

bool Event::wait_until_steady(detail::steady_time deadline) const {
  auto& state = event_state(segment_);
  // The word changes only when the event is set (clear() of a clear event changes nothing),
  // so once it differs from what we saw clear, a set() happened during the wait — even if a
  // clear() followed before we looked.
  const std::uint32_t seen = state.word.load();
  if (seen & flag_bit) return true;
  for (int round = 0; round < detail::spin_rounds; ++round) {
    if (state.word.load(std::memory_order_relaxed) != seen) return true;
    detail::cpu_relax();
  }
  bool was_set = false;
  state.waiters.fetch_add(1);  // before the kernel's compare: see Semaphore::acquire_until
  for (;;) {
    if (state.word.load() != seen) {
      was_set = true;
      break;
    }
    const auto left = detail::time_left(deadline);
    if (left.count() == 0) break;
    detail::futex_wait(state.word, seen, left);
  }
  state.waiters.fetch_sub(1);
  return was_set;
}

}  // namespace mproc
