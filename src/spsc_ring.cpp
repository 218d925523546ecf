// src/spsc_ring.cpp — the ring's shared layout, its record format and the sleep/wake protocol.
//
// Positions (head = producer, tail = consumer) are 64-bit byte counters that only grow;
// offset = position & (capacity - 1). Records are 16-byte multiples and start at offsets
// ≡ 8 (mod 16), so that payloads, right after the 8-byte record header, are 16-byte aligned.
// A record that does not fit before the end is preceded by a padding record that covers the
// rest of the ring and the first 8 bytes of the next lap, so the record starts at offset 8.
//
//   data area:  | 8 | hdr payload… | hdr payload… | … | pad hdr ………… |
//               ^ lap start        ^ tail                ^ head
#include "spsc_ring.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <stdexcept>
#include <string>

#include "futex.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail {

static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "ring positions must be lock-free atomics to live in shared memory");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// The shared header. Every group written by one side sits on its own pair of cache lines
// (128 bytes: the adjacent-line prefetcher moves lines in pairs), so the producer's stores
// never invalidate the line the consumer writes and the other way round.
struct RingHeader {
  // Written once by create(), read-only afterwards.
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_bytes;
  std::uint64_t capacity;

  // Written by the producer on every commit.
  alignas(128) std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> records_written;

  // Written by the consumer on every pop.
  alignas(128) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> records_read;

  // The futex words: (epoch << 1) | sleeping. A side sets its sleeping bit before it sleeps;
  // the peer that sees the bit clears it and bumps the epoch in one CAS, then wakes the
  // futex. They are written only around sleeps, so they stay in both caches and the check
  // on every commit / pop costs a cache hit, not a cache-line transfer.
  alignas(128) std::atomic<std::uint32_t> consumer_wait;  // "data published" word
  alignas(128) std::atomic<std::uint32_t> producer_wait;  // "space freed" word
};

namespace {

constexpr std::uint64_t ring_magic = 0x31474e49'52534d50;  // "PMSRING1" read little-endian
constexpr std::uint32_t ring_version = 1;
constexpr std::uint64_t min_capacity = 4096;
constexpr std::uint64_t max_capacity = std::uint64_t{1} << 32;  // lengths are 32-bit
constexpr std::uint64_t record_header_bytes = 8;
constexpr std::uint64_t record_align = 16;
// Every position is ≡ 8 (mod 16): the record header takes those 8 bytes, the payload is
// 16-byte aligned.
constexpr std::uint64_t first_position = record_header_bytes;

constexpr std::uint32_t kind_data = 0x41544144;     // "DATA"
constexpr std::uint32_t kind_padding = 0x44444150;  // "PADD"

static_assert(sizeof(RingHeader) % ring_alignment == 0 && alignof(RingHeader) <= ring_alignment);

constexpr std::uint32_t sleeping_bit = 1;

bool valid_capacity(std::uint64_t capacity) {
  return capacity >= min_capacity && capacity <= max_capacity && (capacity & (capacity - 1)) == 0;
}

/// Bytes a record of `size` payload bytes occupies in the ring.
constexpr std::uint64_t record_bytes(std::uint64_t size) {
  return (record_header_bytes + size + record_align - 1) & ~(record_align - 1);
}

[[noreturn]] void corrupt(const char* what) {
  throw SerializationError(std::string("shared ring is corrupt: ") + what);
}

// Record headers are read with one 64-bit load into a local and validated there: a buggy
// peer rewriting the header cannot change it between the check and the use.
std::uint64_t load_record_header(const std::byte* at) {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(at), __ATOMIC_RELAXED);
}

void store_record_header(std::byte* at, std::uint64_t length, std::uint32_t kind) {
  // {u32 length, u32 kind} in memory order on a little-endian machine.
  __atomic_store_n(reinterpret_cast<std::uint64_t*>(at), length | (std::uint64_t{kind} << 32),
                   __ATOMIC_RELAXED);
}

/// Announces that this side is about to sleep; returns the futex value to sleep on.
/// seq_cst, like the re-check of the position that follows it: see wait_for.
std::uint32_t announce_sleep(std::atomic<std::uint32_t>& word) {
  return word.fetch_or(sleeping_bit, std::memory_order_seq_cst) | sleeping_bit;
}

void withdraw_sleep(std::atomic<std::uint32_t>& word) {
  std::uint32_t value = word.load(std::memory_order_relaxed);
  while ((value & sleeping_bit) &&
         !word.compare_exchange_weak(value, value & ~sleeping_bit, std::memory_order_relaxed)) {
  }
}

/// Called right after a seq_cst store of a position: true when the peer had announced sleep.
/// Clearing the bit makes only the first publication after a sleep pay for the wake-up;
/// bumping the epoch in the same CAS changes the futex word, so a peer between its
/// announcement and its futex_wait does not go to sleep on a wake-up it already got.
bool claim_wake(std::atomic<std::uint32_t>& word) {
  std::uint32_t value = word.load(std::memory_order_seq_cst);
  while (value & sleeping_bit) {
    if (word.compare_exchange_weak(value, (value + 2) & ~sleeping_bit, std::memory_order_acq_rel,
                                   std::memory_order_relaxed))
      return true;
  }
  return false;
}

/// Restricted to a single CPU (taskset, a one-CPU container), busy-spinning only delays the
/// peer it waits for: then the spin yields the CPU from the start.
bool single_cpu() {
  static const bool single = [] {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return false;
    return CPU_COUNT(&set) <= 1;
  }();
  return single;
}

using clock = std::chrono::steady_clock;

// The first part of the spin only pauses: a peer on another CPU publishes within a
// cache-line round trip. The rest yields the CPU on every pass, because the peer may be
// runnable on *this* CPU — the scheduler likes to put a futex wakee next to its waker, and
// two busy-spinning processes on one CPU would each burn their whole spin before the other
// ran (ping-pong round trips of 2 × ring_spin_time instead of a few µs). sched_yield returns
// at once when nothing else is runnable here.
constexpr std::chrono::nanoseconds pure_spin_time{2'000};

/// Spins until `ready()` or the spin budget (or `deadline`) is gone; true when ready.
template <class Ready>
bool spin_until(Ready&& ready, clock::time_point deadline, std::chrono::nanoseconds spin_time) {
  if (spin_time.count() <= 0) return false;
  const auto start = clock::now();
  const auto spin_end = std::min(deadline, start + spin_time);
  if (!single_cpu()) {
    const auto pause_end = std::min(spin_end, start + pure_spin_time);
    // Polls back off from every pause to every max_pauses pauses: each poll of a position
    // the peer is busy updating steals its cache line, so polling flat out slows the peer
    // down (a stream of small records ran ~5× slower), while a peer that publishes within
    // a few hundred ns is still seen at once.
    constexpr unsigned max_pauses = 16;
    for (unsigned pauses = 1;; pauses = std::min(2 * pauses, max_pauses)) {
      if (ready()) return true;
      for (unsigned i = 0; i < pauses; ++i) cpu_relax();
      // Reading the clock (~20-50 ns through the vDSO) costs no more than the pauses.
      if (clock::now() >= pause_end) break;
    }
  }
  while (clock::now() < spin_end) {
    ::sched_yield();
    if (ready()) return true;
  }
  return false;
}

clock::time_point deadline_after(std::chrono::nanoseconds timeout) {
  if (timeout.count() < 0) return clock::time_point::max();
  auto now = clock::now();
  if (timeout >= clock::time_point::max() - now) return clock::time_point::max();
  return now + std::chrono::duration_cast<clock::duration>(timeout);
}

/// Spin, then sleep on `word` until `ready()`: the waiting half of the protocol for both sides.
template <class Ready>
bool wait_for(std::atomic<std::uint32_t>& word, Ready&& ready, std::chrono::nanoseconds timeout,
              std::chrono::nanoseconds spin_time = ring_spin_time) {
  if (ready()) return true;
  const auto deadline = deadline_after(timeout);
  if (spin_until(ready, deadline, spin_time)) return true;
  for (;;) {
    // Lost wake-ups are ruled out by a seq_cst store and a seq_cst load on each side:
    //   waiter:    set sleeping bit;  re-check position;  futex_wait(word, armed)
    //   publisher: store position;    read sleeping bit;  if set: CAS it off, futex_wake
    // In the single total order of seq_cst operations one of the two stores comes first,
    // so at least one side sees the other's store. If the waiter misses the new position,
    // the publisher sees the bit, changes the word and wakes: the futex_wait either finds
    // the word changed (EAGAIN) or is woken. (Fences between relaxed operations would do
    // the same, but ThreadSanitizer does not model fences; on x86 either costs one locked
    // instruction.)
    const std::uint32_t armed = announce_sleep(word);
    if (ready()) {
      withdraw_sleep(word);
      return true;
    }
    std::chrono::nanoseconds left{-1};
    if (deadline != clock::time_point::max()) {
      left = deadline - clock::now();
      if (left.count() <= 0) {
        withdraw_sleep(word);
        return false;
      }
    }
    futex_wait(word, armed, left);
    if (ready()) {
      withdraw_sleep(word);
      return true;
    }
  }
}

}  // namespace

std::size_t SpscRing::required_bytes(std::size_t capacity) {
  if (!valid_capacity(capacity))
    throw std::invalid_argument("ring capacity " + std::to_string(capacity) +
                                " is not a power of two between 4096 and 2^32");
  return sizeof(RingHeader) + capacity;
}

SpscRing::SpscRing(RingHeader* header, std::byte* data, std::uint64_t capacity) noexcept
    : header_(header), data_(data), capacity_(capacity) {
  cached_tail_ = header->tail.load(std::memory_order_acquire);
  cached_head_ = header->head.load(std::memory_order_acquire);
}

SpscRing SpscRing::create(std::span<std::byte> memory, std::size_t capacity) {
  const std::size_t needed = required_bytes(capacity);
  if (memory.size() < needed)
    throw std::invalid_argument("a ring of capacity " + std::to_string(capacity) + " needs " +
                                std::to_string(needed) + " bytes, got " +
                                std::to_string(memory.size()));
  if (reinterpret_cast<std::uintptr_t>(memory.data()) % ring_alignment != 0)
    throw std::invalid_argument("ring memory must be aligned to 128 bytes");
  auto* header = ::new (static_cast<void*>(memory.data())) RingHeader{};
  header->version = ring_version;
  header->header_bytes = sizeof(RingHeader);
  header->capacity = capacity;
  header->head.store(first_position, std::memory_order_relaxed);
  header->tail.store(first_position, std::memory_order_relaxed);
  // The magic last: a ring whose creation was interrupted never attaches.
  __atomic_store_n(&header->magic, ring_magic, __ATOMIC_RELEASE);
  return SpscRing(header, memory.data() + sizeof(RingHeader), capacity);
}

SpscRing SpscRing::attach(std::span<std::byte> memory) {
  if (reinterpret_cast<std::uintptr_t>(memory.data()) % ring_alignment != 0)
    throw std::invalid_argument("ring memory must be aligned to 128 bytes");
  if (memory.size() < sizeof(RingHeader)) corrupt("memory too small for a ring header");
  // create() constructed the header in this shared memory, possibly in another process.
  auto* header = std::launder(reinterpret_cast<RingHeader*>(memory.data()));
  if (__atomic_load_n(&header->magic, __ATOMIC_ACQUIRE) != ring_magic) corrupt("bad magic");
  if (header->version != ring_version) corrupt("unknown version");
  if (header->header_bytes != sizeof(RingHeader)) corrupt("unexpected header size");
  const std::uint64_t capacity = header->capacity;
  if (!valid_capacity(capacity)) corrupt("capacity is not a power of two in [4096, 2^32]");
  if (memory.size() - sizeof(RingHeader) < capacity) corrupt("capacity exceeds the memory");
  const std::uint64_t tail = header->tail.load(std::memory_order_acquire);
  const std::uint64_t head = header->head.load(std::memory_order_acquire);
  if (head % record_align != first_position || tail % record_align != first_position)
    corrupt("misaligned position");
  // Both sides may be live, so head - tail is checked where each is read in order.
  if (head < tail) corrupt("producer position behind consumer position");
  return SpscRing(header, memory.data() + sizeof(RingHeader), capacity);
}

RingHeader& SpscRing::header() const {
  if (!header_) throw std::logic_error("SpscRing used before create() or attach()");
  return *header_;
}

std::size_t SpscRing::max_record_size() const noexcept {
  // Worst case: a record that just misses the end needs padding of up to its own size, so
  // a record of capacity/2 bytes (header included) always fits into an empty ring.
  return capacity_ == 0 ? 0 : static_cast<std::size_t>(capacity_ / 2 - record_header_bytes);
}

// ---------------------------------------------------------------------------- producer

std::byte* SpscRing::try_begin_write(std::size_t size) {
  RingHeader& h = header();
  if (size > max_record_size())
    throw std::invalid_argument("record of " + std::to_string(size) +
                                " bytes exceeds the ring's limit of " +
                                std::to_string(max_record_size()));
  // Our own position comes from shared memory, not from a member: the producer role may
  // have moved here from another process since this object last wrote.
  const std::uint64_t head = h.head.load(std::memory_order_relaxed);
  if (head % record_align != first_position) corrupt("misaligned producer position");
  const std::uint64_t record = record_bytes(size);
  const std::uint64_t offset = head & (capacity_ - 1);
  const std::uint64_t pad =
      offset + record <= capacity_ ? 0 : capacity_ - offset + record_header_bytes;
  const std::uint64_t need = pad + record;
  if (cached_tail_ > head || head - cached_tail_ + need > capacity_) {
    // Acquire: the consumer's release store of tail comes after it finished reading the
    // bytes we are about to overwrite.
    cached_tail_ = h.tail.load(std::memory_order_acquire);
    if (cached_tail_ > head || head - cached_tail_ > capacity_) corrupt("consumer position");
    if (head - cached_tail_ + need > capacity_) return nullptr;
  }
  // The padding header is written now but published only with the record in commit_write.
  if (pad != 0) store_record_header(data_ + offset, pad, kind_padding);
  reserved_at_ = head;
  reserved_pad_ = pad;
  reserved_size_ = size;
  reserved_ = true;
  return data_ + ((head + pad) & (capacity_ - 1)) + record_header_bytes;
}

bool SpscRing::commit_write(std::size_t size) {
  RingHeader& h = header();
  if (!reserved_) throw std::logic_error("commit_write without try_begin_write");
  if (size > reserved_size_)
    throw std::invalid_argument("commit_write of " + std::to_string(size) +
                                " bytes after reserving " + std::to_string(reserved_size_));
  const std::uint64_t start = reserved_at_ + reserved_pad_;
  store_record_header(data_ + (start & (capacity_ - 1)), size, kind_data);
  reserved_ = false;
  h.records_written.store(h.records_written.load(std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
  // The one store that makes the record visible, after all of its bytes: a producer killed
  // before it leaves the record unpublished, and the next producer simply overwrites it.
  // seq_cst rather than release: it is the publisher's half of the sleep protocol.
  h.head.store(start + record_bytes(size), std::memory_order_seq_cst);
  return claim_wake(h.consumer_wait);
}

bool SpscRing::writable(std::size_t size) {
  RingHeader& h = header();
  const std::uint64_t head = h.head.load(std::memory_order_relaxed);
  const std::uint64_t record = record_bytes(size);
  const std::uint64_t offset = head & (capacity_ - 1);
  const std::uint64_t pad =
      offset + record <= capacity_ ? 0 : capacity_ - offset + record_header_bytes;
  // seq_cst: the waiter's re-check in the sleep protocol (see wait_for).
  cached_tail_ = h.tail.load(std::memory_order_seq_cst);
  // A corrupt position reports "writable" so that try_begin_write runs and throws.
  if (cached_tail_ > head || head - cached_tail_ > capacity_) return true;
  return head - cached_tail_ + pad + record <= capacity_;
}

bool SpscRing::wait_writable(std::size_t size, std::chrono::nanoseconds timeout) {
  RingHeader& h = header();
  if (size > max_record_size())
    throw std::invalid_argument("record of " + std::to_string(size) +
                                " bytes exceeds the ring's limit of " +
                                std::to_string(max_record_size()));
  return wait_for(
      h.producer_wait, [&] { return writable(size); }, timeout);
}

// ---------------------------------------------------------------------------- consumer

std::optional<std::span<const std::byte>> SpscRing::try_read() {
  RingHeader& h = header();
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  if (tail % record_align != first_position) corrupt("misaligned consumer position");
  if (cached_head_ <= tail) {
    // Acquire: pairs with the producer's release store, so the record's bytes are visible.
    cached_head_ = h.head.load(std::memory_order_acquire);
    if (cached_head_ == tail) return std::nullopt;
  }
  const std::uint64_t head = cached_head_;
  if (head < tail || head - tail > capacity_ || head % record_align != first_position)
    corrupt("producer position");

  std::uint64_t position = tail;
  std::uint64_t offset = position & (capacity_ - 1);  // ≡ 8 (mod 16): a header fits before the end
  std::uint64_t word = load_record_header(data_ + offset);
  auto length = static_cast<std::uint32_t>(word);
  auto kind = static_cast<std::uint32_t>(word >> 32);
  if (kind == kind_padding) {
    if (length != capacity_ - offset + record_header_bytes || length >= head - position)
      corrupt("padding record does not reach the end of the ring");
    position += length;
    offset = position & (capacity_ - 1);
    word = load_record_header(data_ + offset);
    length = static_cast<std::uint32_t>(word);
    kind = static_cast<std::uint32_t>(word >> 32);
  }
  if (kind != kind_data) corrupt("bad record marker");
  const std::uint64_t record = record_bytes(length);
  if (length > max_record_size() || record > head - position || offset + record > capacity_)
    corrupt("record length beyond the published data");
  pop_to_ = position + record;
  popping_ = true;
  return std::span<const std::byte>(data_ + offset + record_header_bytes, length);
}

void SpscRing::pop() {
  RingHeader& h = header();
  if (!popping_) throw std::logic_error("pop without a record from try_read");
  popping_ = false;
  h.records_read.store(h.records_read.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  // Release (seq_cst: the publisher's half of the producer's sleep protocol): our reads of
  // the record happen before the producer may overwrite it.
  h.tail.store(pop_to_, std::memory_order_seq_cst);
  if (claim_wake(h.producer_wait)) futex_wake(h.producer_wait);
}

bool SpscRing::readable() {
  RingHeader& h = header();
  const std::uint64_t tail = h.tail.load(std::memory_order_relaxed);
  if (cached_head_ > tail) return true;
  // seq_cst: the waiter's re-check in the sleep protocol (see wait_for).
  cached_head_ = h.head.load(std::memory_order_seq_cst);
  // A corrupt position also reports "readable" so that try_read runs and throws.
  return cached_head_ != tail;
}

bool SpscRing::wait_readable(std::chrono::nanoseconds timeout, std::chrono::nanoseconds spin_time) {
  RingHeader& h = header();
  return wait_for(
      h.consumer_wait, [&] { return readable(); }, timeout, spin_time);
}

void SpscRing::prepare_to_sleep() {
  announce_sleep(header().consumer_wait);
}

void SpscRing::cancel_sleep() {
  withdraw_sleep(header().consumer_wait);
}

void SpscRing::wake_consumer() {
  futex_wake(header().consumer_wait);
}

std::size_t SpscRing::records_available_hint() const {
  RingHeader& h = header();
  const std::uint64_t read = h.records_read.load(std::memory_order_relaxed);
  const std::uint64_t written = h.records_written.load(std::memory_order_relaxed);
  if (written <= read) return 0;
  // Each record takes at least 16 bytes: more than capacity/16 means a torn or corrupt count.
  const std::uint64_t most = capacity_ / record_align;
  return static_cast<std::size_t>(written - read < most ? written - read : most);
}

}  // namespace mproc::detail
