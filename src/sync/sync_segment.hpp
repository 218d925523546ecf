// src/sync/sync_segment.hpp — what every synchronization primitive stands on: its own small
// memfd segment (a header naming the primitive, then its state), a robust process-shared
// pthread mutex, and the conversion of steady_clock deadlines for futex and pthread waits.
#pragma once

#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "mproc/sync.hpp"
#include "shm_segment.hpp"

namespace mproc::detail {

/// "mpsy": the first word of every primitive's segment, written last by its creator.
inline constexpr std::uint32_t sync_magic = 0x6d707379;

/// The start of every primitive's segment: which primitive lives there.
struct SyncHeader {
  std::atomic<std::uint32_t> magic;
  SyncKind kind;
};

/// One primitive's segment mapped in this process; shared by every handle to it here.
class SyncSegment {
 public:
  SyncSegment(ShmSegment segment, SyncKind kind) noexcept
      : segment_(std::make_unique<ShmSegment>(std::move(segment))), kind_(kind) {}
  SyncSegment(const SyncSegment&) = delete;
  SyncSegment& operator=(const SyncSegment&) = delete;
  ~SyncSegment();

  /// The primitive's state, which starts with its SyncHeader.
  template <class State>
  State& state() const noexcept {
    return *std::launder(reinterpret_cast<State*>(segment_->data()));
  }
  std::byte* data() const noexcept { return segment_->data(); }
  std::size_t size() const noexcept { return segment_->size(); }
  int fd() const noexcept { return segment_->fd(); }
  SyncKind kind() const noexcept { return kind_; }

  /// How many holds of a Lock or RLock the threads of this process have (see the destructor).
  std::atomic<long> holds{0};

 private:
  std::unique_ptr<ShmSegment> segment_;
  SyncKind kind_;
};

/// A new zero-filled segment of `size` bytes for a primitive of `kind`; `init` constructs the
/// state in it, then the header is filled in (its magic last).
/// Throws std::system_error when no shared memory can be had.
template <class Init>
std::shared_ptr<SyncSegment> create_sync(SyncKind kind, std::size_t size, const char* debug_name,
                                         Init&& init) {
  auto segment = std::make_shared<SyncSegment>(ShmSegment::create(size, debug_name), kind);
  init(segment->data());
  auto* header = std::launder(reinterpret_cast<SyncHeader*>(segment->data()));
  header->kind = kind;
  header->magic.store(sync_magic, std::memory_order_release);
  return segment;
}

// ---------------------------------------------------------------------------------------------
// State layouts (each starts with its SyncHeader; the creator zero-fills, then constructs)

/// Lock and RLock.
struct LockState {
  SyncHeader header;
  pthread_mutex_t mutex;
  std::atomic<std::uint32_t> owner_died;  ///< the last (outermost) acquisition found a dead holder
  std::atomic<std::int32_t> owner_tid;    ///< the holding thread, 0 when free
  std::uint32_t depth;                    ///< RLock: recursion depth, written by the holder only
};

/// Semaphore and BoundedSemaphore: the count is the futex word.
struct SemaphoreState {
  SyncHeader header;
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> waiters;  ///< threads asleep (or about to be) on `count`
  std::uint32_t max_count;             ///< INT_MAX, or a BoundedSemaphore's initial value
};

/// Event: bit 0 of `word` is the flag, the bits above count the times it was set.
struct EventState {
  SyncHeader header;
  std::atomic<std::uint32_t> word;
  std::atomic<std::uint32_t> waiters;
};

/// Condition: `sequence` changes on every notify; waiters sleep on it.
struct ConditionState {
  SyncHeader header;
  std::atomic<std::uint32_t> sequence;
  std::atomic<std::uint32_t> waiters;
};

/// A process that takes part in a Barrier: its pid and start time (which tells a reused pid).
struct PartyStamp {
  std::atomic<std::int32_t> pid;  ///< 0: a free entry. Written last (release), cleared first.
  std::atomic<std::uint64_t> start_time;
};

/// Barrier: phase, counters and two tables of `parties` stamps after it — who is inside
/// arrive_and_wait() now, and who passed the last completed round.
struct BarrierState {
  SyncHeader header;
  pthread_mutex_t mutex;
  std::atomic<std::uint32_t> sequence;  ///< futex word: changes whenever waiters must look again
  std::uint32_t parties;
  std::uint32_t phase;         ///< BarrierPhase
  std::uint32_t count;         ///< threads inside arrive_and_wait() (occupied `inside` entries)
  std::uint32_t break_reason;  ///< BarrierBreak, when phase is broken
  std::int32_t break_pid;      ///< the party whose death broke it
  std::int32_t break_status;   ///< its wait status, when known
  std::atomic<std::int64_t> last_check_ns;  ///< steady time of the last look at the parties

  PartyStamp* inside() noexcept { return reinterpret_cast<PartyStamp*>(this + 1); }
  PartyStamp* previous() noexcept { return inside() + parties; }
  static std::size_t bytes_for(std::size_t parties) noexcept {
    return sizeof(BarrierState) + 2 * parties * sizeof(PartyStamp);
  }
};
static_assert(sizeof(BarrierState) % alignof(PartyStamp) == 0);

/// The largest Barrier: its segment stays small (2 MiB) and its checks quick.
inline constexpr std::size_t max_barrier_parties = 65536;

/// The smallest segment a primitive of `kind` fits in, given its header (for a Barrier the
/// size depends on its party count). 0 when the header is not plausible for `kind`.
std::size_t sync_state_size(SyncKind kind, const std::byte* data, std::size_t mapped);

// ---------------------------------------------------------------------------------------------
// Deadlines

/// Time left until `deadline` (never negative); -1 ns for no_deadline (futex_wait: forever).
std::chrono::nanoseconds time_left(steady_time deadline) noexcept;
/// `deadline` as an absolute CLOCK_MONOTONIC time (steady_clock is CLOCK_MONOTONIC).
timespec monotonic_timespec(steady_time deadline) noexcept;

// ---------------------------------------------------------------------------------------------
// Robust mutex

/// How an attempt to take a robust mutex ended.
enum class LockResult { acquired, owner_died, timed_out };

/// Initializes `mutex` as process-shared and robust, of pthread `type`.
/// Throws std::system_error.
void init_robust_mutex(pthread_mutex_t& mutex, int type);
/// Whether `mutex`, found in a segment another process handed over, is what
/// init_robust_mutex(mutex, type) made. glibc dispatches on the mutex's type word (lock
/// elision, priority inheritance, ...) before anything else, so garbage there crashes the
/// first lock call (SIGILL, found by tests/fuzz/fuzz_segments): decoders refuse such a segment.
/// True where the C library's layout is unknown (not glibc).
bool robust_mutex_type_matches(const pthread_mutex_t& mutex, int type) noexcept;
/// Takes `mutex` before `deadline` (no_deadline: blocks). A mutex whose holder died is made
/// consistent and reported as owner_died. Throws std::logic_error (naming `type_name`) when the
/// calling thread holds an error-checking mutex already, std::system_error on other failures.
LockResult robust_lock(pthread_mutex_t& mutex, steady_time deadline, const char* type_name);
/// Takes `mutex` if it is free; timed_out when it is not (or this thread holds it).
LockResult robust_try_lock(pthread_mutex_t& mutex, const char* type_name);
/// Releases `mutex`. Throws std::logic_error when the calling thread does not hold it.
void robust_unlock(pthread_mutex_t& mutex, const char* type_name);

/// The calling thread's tid (cached; correct in forked children).
pid_t current_tid() noexcept;

/// Spins this many rounds on a futex word before sleeping: a wake-up across CPUs costs
/// ~45 µs, a cache-line round trip ~0.06 µs, so a short spin catches a quick release cheaply.
inline constexpr int spin_rounds = 100;

}  // namespace mproc::detail
