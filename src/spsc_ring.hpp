// src/spsc_ring.hpp — a single-producer/single-consumer ring of variable-size records in
// shared memory: the lock-free fast path under Queue, Pipe and the pool's task channels.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace mproc::detail {

/// How long wait_readable / wait_writable spin before they announce sleep and futex-wait.
/// A cross-CPU wake-up costs ~45 µs on the machines mproc is measured on, a spinning
/// cache-line round trip ~0.06 µs: spinning about as long as a wake-up costs catches the
/// peer's next record in a stream without sleeping, and bounds what an idle waiter burns.
inline constexpr std::chrono::nanoseconds ring_spin_time{50'000};

/// The alignment the memory given to SpscRing::create / attach must have. required_bytes()
/// is a multiple of it, so rings laid out back to back in one segment stay aligned.
inline constexpr std::size_t ring_alignment = 128;

struct RingHeader;  // the shared layout; spsc_ring.cpp

/// A single-producer/single-consumer ring of variable-size records in `memory` owned by the
/// caller (usually a ShmSegment shared with another process).
///
/// Each record is an 8-byte header {u32 length, u32 kind} and its payload; payloads are
/// 16-byte aligned and a record never wraps around the end of the ring.
/// Kill-safety: a producer killed in the middle of a write publishes nothing; a consumer
/// killed between try_read() and pop() leaves the record for the next consumer. Everything
/// read from shared memory is validated: corruption throws SerializationError, never reads
/// out of bounds.
/// Thread-safety: one producer and one consumer at a time, in any threads or processes;
/// the roles may move between processes when the caller hands them over (e.g. under a
/// lock). The object itself is a handle with per-role caches, used by one thread at a time.
///
///   // process A                                   // process B
///   auto ring = SpscRing::create(segment.bytes(),  auto ring = SpscRing::attach(segment.bytes());
///                                1 << 16);         ring.wait_readable(-1ns);
///   auto* p = ring.try_begin_write(n);             auto record = ring.try_read();
///   std::memcpy(p, src, n);                        use(*record);
///   if (ring.commit_write(n)) ring.wake_consumer(); ring.pop();
class SpscRing {
 public:
  /// The bytes a ring of `capacity` data bytes needs: header plus data area.
  /// Throws std::invalid_argument unless capacity is a power of two in [4096, 2^32].
  static std::size_t required_bytes(std::size_t capacity);

  /// Lays out a new empty ring in `memory` (aligned to ring_alignment).
  /// Throws std::invalid_argument when memory is too small or misaligned or the capacity bad.
  static SpscRing create(std::span<std::byte> memory, std::size_t capacity);

  /// Opens a ring that create() laid out, possibly in another process. Throws
  /// SerializationError when the header is not a ring's or does not fit in `memory`,
  /// std::invalid_argument when memory is misaligned.
  static SpscRing attach(std::span<std::byte> memory);

  SpscRing() = default;

  std::size_t capacity() const noexcept { return static_cast<std::size_t>(capacity_); }
  /// The largest record that always fits into an empty ring: capacity/2 - record header.
  std::size_t max_record_size() const noexcept;

  // --- producer side (one thread or process at a time) ---

  /// Contiguous, 16-byte-aligned space for a record of `size` bytes, or nullptr while the
  /// ring is too full. Throws std::invalid_argument when size > max_record_size(),
  /// SerializationError when the shared positions are corrupt. No allocation, no syscall.
  std::byte* try_begin_write(std::size_t size);
  /// Publishes the record begun by try_begin_write with its final `size` (≤ the reserved
  /// size). Returns true when the consumer had announced it is going to sleep: then the
  /// caller must wake it (wake_consumer(), or its own eventfd). Throws std::logic_error
  /// without a reservation, std::invalid_argument for a size above the reserved one.
  bool commit_write(std::size_t size);
  /// Spins briefly, then sleeps until try_begin_write(size) would succeed, at most
  /// `timeout` (negative = forever). Returns false on timeout.
  bool wait_writable(std::size_t size, std::chrono::nanoseconds timeout);

  // --- consumer side (one thread or process at a time) ---

  /// The oldest record (valid until pop()), or nullopt when the ring is empty. Throws
  /// SerializationError for a corrupt record header or position. No allocation, no syscall.
  std::optional<std::span<const std::byte>> try_read();
  /// Releases the record returned by try_read(); wakes a producer waiting for space.
  /// Throws std::logic_error when try_read() has not returned a record since the last pop().
  void pop();
  /// Spins for `spin_time` (none when zero), then announces sleep and sleeps until a record
  /// is there, at most `timeout` (negative = forever). Returns false on timeout.
  bool wait_readable(std::chrono::nanoseconds timeout, std::chrono::nanoseconds spin_time = ring_spin_time);

  /// For consumers that sleep elsewhere (epoll on an eventfd): sets the consumer-sleeping
  /// flag (seq_cst). The caller must call try_read() once more before it actually sleeps,
  /// and cancel_sleep() when it wakes up.
  void prepare_to_sleep();
  void cancel_sleep();
  /// Wakes a consumer sleeping in wait_readable (after commit_write returned true).
  void wake_consumer();
  /// Roughly how many records are waiting (exact when neither side is mid-operation).
  std::size_t records_available_hint() const;

 private:
  SpscRing(RingHeader* header, std::byte* data, std::uint64_t capacity) noexcept;
  RingHeader& header() const;
  bool readable();
  bool writable(std::size_t size);

  RingHeader* header_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  // Producer-side state, never shared. cached_tail_ is a past consumer position: a lower
  // bound of the real one, so stale values only make the ring look fuller than it is.
  std::uint64_t cached_tail_ = 0;
  std::uint64_t reserved_at_ = 0;   // producer position at try_begin_write
  std::uint64_t reserved_pad_ = 0;  // bytes of padding to the end of the ring before it
  std::uint64_t reserved_size_ = 0;
  bool reserved_ = false;
  // Consumer-side state, never shared. cached_head_ is a past producer position.
  std::uint64_t cached_head_ = 0;
  std::uint64_t pop_to_ = 0;  // consumer position after the record try_read returned
  bool popping_ = false;
};

}  // namespace mproc::detail
