// tests/test_ring.cpp — the shared-memory building blocks: ShmSegment, futex wait/wake and
// SpscRing, with real processes on both ends wherever the behaviour crosses processes.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "futex.hpp"
#include "mproc/errors.hpp"
#include "shm_segment.hpp"
#include "spsc_ring.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::SerializationError;
using mproc::detail::futex_wait;
using mproc::detail::futex_wake;
using mproc::detail::ShmSegment;
using mproc::detail::SpscRing;
using mproc::detail::UniqueFd;

namespace {

using ring_test = mproc_test::LeakCheckedTest;

// A generous bound on every wait that should end quickly: it only turns a hang into a failure.
constexpr auto hang_limit = 60s;

/// Forks a child that runs `role` and leaves with _exit(its return value); an exception
/// in the child becomes exit code 99 (gtest assertions must not run in a child).
template <class Role>
pid_t fork_child(Role&& role) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    int code = 99;
    try {
      code = role();
    } catch (...) {
    }
    ::_exit(code);
  }
  return pid;
}

/// Reaps `pid`; its exit code, or 128 + signal when a signal ended it.
int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(const std::byte* data, std::size_t size) {
  std::uint64_t hash = 0xcbf29ce484222325;
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= static_cast<std::uint8_t>(data[i]);
    hash *= 0x100000001b3;
  }
  return hash;
}

// A self-checking record: {u32 stream, u32 sequence, u64 checksum of the rest} + filler whose
// length and bytes both follow from (stream, sequence), so the reader can check everything.
constexpr std::size_t stamp_bytes = 16;

std::size_t stamped_size(std::uint32_t stream, std::uint32_t sequence, std::size_t max_size) {
  std::uint64_t state = (std::uint64_t{stream} << 32) | sequence;
  std::uint64_t r = splitmix(state);
  // Mostly small records, now and then one up to the ring's limit (forces wrap-arounds).
  std::size_t limit = (r & 15) == 0 ? max_size : 600;
  return stamp_bytes + (r >> 8) % (limit - stamp_bytes + 1);
}

void fill_stamped(std::byte* out, std::size_t size, std::uint32_t stream, std::uint32_t sequence) {
  std::uint64_t state = (std::uint64_t{sequence} << 32) ^ stream ^ 0x5bd1e995;
  for (std::size_t i = stamp_bytes; i < size; i += 8) {
    std::uint64_t word = splitmix(state);
    std::memcpy(out + i, &word, std::min<std::size_t>(8, size - i));
  }
  std::uint64_t checksum = fnv1a(out + stamp_bytes, size - stamp_bytes);
  std::memcpy(out, &stream, 4);
  std::memcpy(out + 4, &sequence, 4);
  std::memcpy(out + 8, &checksum, 8);
}

/// Empty string when `record` is the intact record (stream, sequence), else what is wrong.
std::string check_stamped(std::span<const std::byte> record, std::uint32_t stream,
                          std::uint32_t sequence, std::size_t max_size) {
  if (record.size() < stamp_bytes) return "record too short";
  std::uint32_t got_stream, got_sequence;
  std::uint64_t checksum;
  std::memcpy(&got_stream, record.data(), 4);
  std::memcpy(&got_sequence, record.data() + 4, 4);
  std::memcpy(&checksum, record.data() + 8, 8);
  if (got_stream != stream || got_sequence != sequence)
    return "expected record " + std::to_string(stream) + "/" + std::to_string(sequence) + ", got " +
           std::to_string(got_stream) + "/" + std::to_string(got_sequence);
  if (record.size() != stamped_size(stream, sequence, max_size)) return "wrong length";
  if (fnv1a(record.data() + stamp_bytes, record.size() - stamp_bytes) != checksum)
    return "checksum mismatch";
  return {};
}

/// Producer loop: writes stamped records stream/0, stream/1, ... (`count` of them, or forever).
int produce_stamped(SpscRing& ring, std::uint32_t stream, std::uint64_t count) {
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    const auto seq = static_cast<std::uint32_t>(sequence);
    const std::size_t size = stamped_size(stream, seq, ring.max_record_size());
    std::byte* out;
    while (!(out = ring.try_begin_write(size)))
      if (!ring.wait_writable(size, hang_limit)) return 3;
    fill_stamped(out, size, stream, seq);
    if (ring.commit_write(size)) ring.wake_consumer();
  }
  return 0;
}

/// Reads one record, waiting for it (spinning for `spin` first); nullopt when none came
/// within hang_limit.
std::optional<std::span<const std::byte>> read_waiting(
    SpscRing& ring, std::chrono::nanoseconds spin = mproc::detail::ring_spin_time) {
  for (;;) {
    if (auto record = ring.try_read()) return record;
    if (!ring.wait_readable(hang_limit, spin)) return std::nullopt;
  }
}

struct RingInSegment {
  ShmSegment segment;
  SpscRing ring;
  explicit RingInSegment(std::size_t capacity)
      : segment(ShmSegment::create(SpscRing::required_bytes(capacity), "test ring")),
        ring(SpscRing::create(segment.bytes(), capacity)) {}
};

/// Scheduler state of process `pid` ('R', 'S', ...) from /proc/<pid>/stat.
char process_state(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  auto close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

/// Waits (polling, bounded) until `pid` is asleep; false if it never was within the bound.
bool wait_until_sleeping(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (process_state(pid) == 'S') return true;
    std::this_thread::sleep_for(100us);
  }
  return false;
}

}  // namespace

// ------------------------------------------------------------------------------ ShmSegment

TEST_F(ring_test, segment_is_shared_with_a_child_through_its_fd) {
  auto segment = ShmSegment::create(1 << 16, "test segment");
  ASSERT_EQ(segment.size(), 1u << 16);
  for (std::size_t i = 0; i < segment.size(); ++i) segment.data()[i] = std::byte(i * 7);
  const int fd = segment.fd();
  pid_t child = fork_child([fd] {
    // A fresh mapping from the descriptor alone, as a process that received it would do.
    auto attached = ShmSegment::attach(UniqueFd(::dup(fd)));
    if (attached.size() != 1u << 16) return 1;
    for (std::size_t i = 0; i < attached.size(); ++i)
      if (attached.data()[i] != std::byte(i * 7)) return 2;
    std::memset(attached.data(), 0xab, 4096);
    return 0;
  });
  ASSERT_EQ(reap(child), 0);
  EXPECT_EQ(segment.data()[0], std::byte{0xab});
  EXPECT_EQ(segment.data()[4095], std::byte{0xab});
  EXPECT_EQ(segment.data()[4096], std::byte(4096 * 7));
}

TEST_F(ring_test, segment_grown_by_a_child_is_seen_after_refresh) {
  auto segment = ShmSegment::create(4096, "test segment");
  segment.data()[0] = std::byte{1};
  EXPECT_FALSE(segment.refresh());
  const int fd = segment.fd();
  pid_t child = fork_child([fd] {
    auto writer = ShmSegment::attach(UniqueFd(::dup(fd)));
    writer.grow(1 << 20);
    writer.grow(1000);  // not larger: nothing happens
    if (writer.size() != 1u << 20 || writer.data()[0] != std::byte{1}) return 1;
    writer.data()[(1 << 20) - 1] = std::byte{42};
    return 0;
  });
  ASSERT_EQ(reap(child), 0);
  EXPECT_EQ(segment.size(), 4096u);
  EXPECT_TRUE(segment.refresh());
  ASSERT_EQ(segment.size(), 1u << 20);
  EXPECT_EQ(segment.data()[0], std::byte{1});
  EXPECT_EQ(segment.data()[(1 << 20) - 1], std::byte{42});
  EXPECT_FALSE(segment.refresh());
}

TEST_F(ring_test, segment_of_bad_size_is_rejected) {
  EXPECT_THROW(ShmSegment::create(0, "empty"), std::invalid_argument);
  EXPECT_THROW(ShmSegment::create((std::size_t{1} << 40) + 1, "huge"), std::invalid_argument);
  auto segment = ShmSegment::create(4096, "test segment");
  EXPECT_THROW(segment.grow(std::size_t{1} << 41), std::invalid_argument);
}

TEST_F(ring_test, segment_failure_names_the_size) {
  // In a child: an address-space limit makes the mapping fail without touching the test.
  pid_t child = fork_child([] {
    rlimit limit{};
    ::getrlimit(RLIMIT_AS, &limit);
    std::ifstream status("/proc/self/status");
    std::string line;
    std::size_t vm_kib = 0;
    while (std::getline(status, line))
      if (line.rfind("VmSize:", 0) == 0) vm_kib = std::stoull(line.substr(7));
    limit.rlim_cur = (vm_kib + 256 * 1024) * 1024;  // room for 256 MiB more, not 512 GiB
    if (::setrlimit(RLIMIT_AS, &limit) != 0) return 1;
    try {
      ShmSegment::create(std::size_t{512} << 30, "too big");
    } catch (const std::system_error& error) {
      return std::string(error.what()).find("cannot create shared memory segment of 512 GiB") !=
                     std::string::npos
                 ? 0
                 : 2;
    }
    return 3;
  });
  EXPECT_EQ(reap(child), 0);
}

// ------------------------------------------------------------------------------ futex

TEST_F(ring_test, futex_wakes_a_sleeper_in_another_process) {
  auto segment = ShmSegment::create(4096, "test futex");
  auto* word = ::new (segment.data()) std::atomic<std::uint32_t>(0);
  pid_t child = fork_child([word] {
    while (word->load() == 0)
      if (!futex_wait(*word, 0, hang_limit)) return 1;
    return word->load() == 7 ? 0 : 2;
  });
  wait_until_sleeping(child);  // best effort: the wake-up below works either way
  word->store(7);
  futex_wake(*word);
  EXPECT_EQ(reap(child), 0);
}

TEST_F(ring_test, futex_wait_returns_at_once_or_times_out) {
  std::atomic<std::uint32_t> word{5};
  EXPECT_TRUE(futex_wait(word, 4, hang_limit));  // value differs: no sleep
  EXPECT_FALSE(futex_wait(word, 5, 10ms));
  EXPECT_FALSE(futex_wait(word, 5, 0ns));
}

// ------------------------------------------------------------------------------ SpscRing

TEST_F(ring_test, records_come_out_in_order_through_wrap_arounds) {
  RingInSegment r(4096);
  SpscRing& ring = r.ring;
  ASSERT_EQ(ring.capacity(), 4096u);
  ASSERT_EQ(ring.max_record_size(), 2048u - 8);
  std::mt19937_64 random(12345);
  // Record n holds the bytes (n + i) & 0xff: a window of this pattern, copied and compared
  // in one call each (a check per byte made the test take a minute under ThreadSanitizer).
  std::vector<std::byte> pattern(256 + ring.max_record_size());
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i & 0xff);
  std::uint32_t written = 0, read = 0;
  for (int step = 0; step < 200000; ++step) {
    if (random() % 2 == 0) {
      std::size_t size = random() % (ring.max_record_size() + 1);
      std::byte* out = ring.try_begin_write(size);
      if (!out) {
        // Full now: only possible when something is waiting to be read.
        ASSERT_GT(ring.records_available_hint(), 0u);
        continue;
      }
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(out) % 16, 0u);
      if (size) std::memcpy(out, pattern.data() + (written & 0xff), size);
      ring.commit_write(size);
      ++written;
    } else if (auto record = ring.try_read()) {
      // Sizes are not stored separately: the first byte names the record, the pattern
      // checks every byte.
      ASSERT_TRUE(record->empty() ||
                  std::memcmp(record->data(), pattern.data() + (read & 0xff), record->size()) == 0)
          << "record " << read << " of " << record->size() << " bytes is not what was written";
      ring.pop();
      ++read;
    } else {
      ASSERT_EQ(read, written);
    }
  }
  while (auto record = ring.try_read()) {
    ring.pop();
    ++read;
  }
  EXPECT_EQ(read, written);
  EXPECT_GT(written, 50000u);
  EXPECT_EQ(ring.records_available_hint(), 0u);
}

TEST_F(ring_test, full_ring_refuses_writes_until_a_pop) {
  RingInSegment r(4096);
  SpscRing& ring = r.ring;
  int records = 0;
  while (std::byte* out = ring.try_begin_write(100)) {
    std::memset(out, records, 100);
    ring.commit_write(100);
    ++records;
  }
  EXPECT_EQ(records, 4096 / 112);
  EXPECT_EQ(ring.try_begin_write(100), nullptr);
  EXPECT_FALSE(ring.wait_writable(100, 10ms));
  auto record = ring.try_read();
  ASSERT_TRUE(record);
  EXPECT_EQ((*record)[0], std::byte{0});
  ring.pop();
  EXPECT_TRUE(ring.wait_writable(100, 0ns));
  EXPECT_NE(ring.try_begin_write(100), nullptr);
  // The largest record fits once the ring is empty, wherever the positions are.
  while (ring.try_read()) ring.pop();
  EXPECT_NE(ring.try_begin_write(ring.max_record_size()), nullptr);
}

TEST_F(ring_test, misuse_is_rejected) {
  RingInSegment r(4096);
  SpscRing& ring = r.ring;
  EXPECT_THROW(ring.try_begin_write(ring.max_record_size() + 1), std::invalid_argument);
  EXPECT_THROW(ring.wait_writable(ring.max_record_size() + 1, 0ns), std::invalid_argument);
  EXPECT_THROW(ring.commit_write(0), std::logic_error);
  ASSERT_NE(ring.try_begin_write(10), nullptr);
  EXPECT_THROW(ring.commit_write(11), std::invalid_argument);
  EXPECT_THROW(ring.pop(), std::logic_error);
  EXPECT_THROW(SpscRing::required_bytes(5000), std::invalid_argument);
  EXPECT_THROW(SpscRing::required_bytes(2048), std::invalid_argument);
  EXPECT_THROW(SpscRing::create(r.segment.bytes(), 8192), std::invalid_argument);  // too small
  EXPECT_THROW(SpscRing::create(r.segment.bytes().subspan(64), 4096), std::invalid_argument);
  SpscRing unattached;
  EXPECT_THROW(unattached.try_read(), std::logic_error);
}

TEST_F(ring_test, child_streams_200k_intact_records_to_parent) {
  RingInSegment r(1 << 16);
  const std::uint64_t count = 200000;
  std::span<std::byte> memory = r.segment.bytes();
  pid_t child = fork_child([memory, count] {
    auto ring = SpscRing::attach(memory);
    return produce_stamped(ring, 1, count);
  });
  SpscRing& ring = r.ring;
  std::string problem;
  std::uint64_t received = 0;
  for (; received < count && problem.empty(); ++received) {
    try {
      auto record = read_waiting(ring);
      if (!record) {
        problem = "no record within the hang limit";
        break;
      }
      problem =
          check_stamped(*record, 1, static_cast<std::uint32_t>(received), ring.max_record_size());
      ring.pop();
    } catch (const std::exception& error) {
      problem = error.what();
    }
  }
  if (!problem.empty()) ::kill(child, SIGKILL);
  EXPECT_EQ(reap(child), problem.empty() ? 0 : 128 + SIGKILL);
  EXPECT_EQ(problem, "") << "at record " << received;
  EXPECT_FALSE(ring.try_read());
}

TEST_F(ring_test, threads_of_one_process_stream_intact_records) {
  // The same protocol between two threads, where ThreadSanitizer can check its ordering.
  RingInSegment r(1 << 14);
  const std::uint64_t count = 20000;
  int producer_result = -1;
  std::thread producer([&] {
    auto ring = SpscRing::attach(r.segment.bytes());
    producer_result = produce_stamped(ring, 2, count);
  });
  std::string problem;
  std::uint64_t received = 0;
  for (; received < count && problem.empty(); ++received) {
    auto record = read_waiting(r.ring);
    if (!record) {
      problem = "no record within the hang limit";
      break;
    }
    problem =
        check_stamped(*record, 2, static_cast<std::uint32_t>(received), r.ring.max_record_size());
    r.ring.pop();
  }
  producer.join();
  EXPECT_EQ(problem, "") << "at record " << received;
  EXPECT_EQ(producer_result, 0);
}

TEST_F(ring_test, sleeping_consumer_is_woken_by_a_producer_in_another_process) {
  RingInSegment r(4096);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::span<std::byte> memory = r.segment.bytes();
  const pid_t parent = ::getpid();
  pid_t child = fork_child([&] {
    ::close(ready[1]);
    char byte;
    if (::read(ready[0], &byte, 1) != 1) return 1;
    // The parent is now on its way into wait_readable: wait until it really sleeps, so
    // that the producer has to take the wake-up path.
    if (!wait_until_sleeping(parent)) return 2;
    auto ring = SpscRing::attach(memory);
    std::byte* out = ring.try_begin_write(8);
    if (!out) return 3;
    std::memcpy(out, "wake up!", 8);
    bool consumer_slept = ring.commit_write(8);
    if (consumer_slept) ring.wake_consumer();
    return consumer_slept ? 0 : 4;
  });
  ::close(ready[0]);
  ASSERT_EQ(::write(ready[1], "x", 1), 1);
  ::close(ready[1]);
  EXPECT_TRUE(r.ring.wait_readable(hang_limit));
  auto record = r.ring.try_read();
  ASSERT_TRUE(record);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(record->data()), record->size()), "wake up!");
  r.ring.pop();
  EXPECT_EQ(reap(child), 0);
}

// Round trips make both sides alternate between spinning, announcing sleep and sleeping,
// hitting every interleaving of the wake-up protocol; a lost wake-up hangs until hang_limit.
// The child waits for each ping spinning for `child_spin` first (zero: it sleeps at once).
void ping_pong_never_loses_a_wake_up(std::chrono::nanoseconds child_spin) {
  const std::size_t ring_bytes = SpscRing::required_bytes(4096);
  auto segment = ShmSegment::create(2 * ring_bytes, "test ping-pong");
  auto ping = SpscRing::create(segment.bytes().subspan(0, ring_bytes), 4096);
  auto pong = SpscRing::create(segment.bytes().subspan(ring_bytes), 4096);
  constexpr std::uint64_t rounds = 20000;
  std::span<std::byte> memory = segment.bytes();
  pid_t child = fork_child([memory, ring_bytes, child_spin] {
    auto in = SpscRing::attach(memory.subspan(0, ring_bytes));
    auto out = SpscRing::attach(memory.subspan(ring_bytes));
    for (std::uint64_t i = 0; i < rounds; ++i) {
      auto record = read_waiting(in, child_spin);
      if (!record || record->size() != 8) return 1;
      std::uint64_t value;
      std::memcpy(&value, record->data(), 8);
      in.pop();
      std::byte* p = out.try_begin_write(8);
      if (!p) return 2;
      value += 1;
      std::memcpy(p, &value, 8);
      if (out.commit_write(8)) out.wake_consumer();
    }
    return 0;
  });
  std::mt19937 random(7);
  std::uint64_t failures = 0;
  for (std::uint64_t i = 0; i < rounds && failures == 0; ++i) {
    std::byte* p = ping.try_begin_write(8);
    ASSERT_NE(p, nullptr);
    std::uint64_t value = i * 2;
    std::memcpy(p, &value, 8);
    // Vary the parent's pace so the child mostly catches it spinning and now and then
    // (a pause is ~10-40 ns) gives up spinning and sleeps.
    unsigned pauses = random() % 16 == 0 ? random() % 8192 : random() % 64;
    for (; pauses > 0; --pauses) mproc::detail::cpu_relax();
    if (ping.commit_write(8)) ping.wake_consumer();
    auto record = read_waiting(pong);
    if (!record) {
      ++failures;
      break;
    }
    std::memcpy(&value, record->data(), 8);
    if (value != i * 2 + 1) ++failures;
    pong.pop();
  }
  if (failures) ::kill(child, SIGKILL);
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(reap(child), failures ? 128 + SIGKILL : 0);
}

TEST_F(ring_test, ping_pong_over_two_rings_never_loses_a_wake_up) {
  ping_pong_never_loses_a_wake_up(mproc::detail::ring_spin_time);
}

// An MPI agent's workers on a crowded host wait for their tasks without spinning.
TEST_F(ring_test, ping_pong_with_a_consumer_that_never_spins_never_loses_a_wake_up) {
  ping_pong_never_loses_a_wake_up(std::chrono::nanoseconds::zero());
}

TEST_F(ring_test, wait_readable_times_out_on_an_empty_ring) {
  RingInSegment r(4096);
  EXPECT_FALSE(r.ring.wait_readable(10ms));
  EXPECT_FALSE(r.ring.wait_readable(0ns));
  EXPECT_FALSE(r.ring.wait_readable(10ms, 0ns));  // no spin: straight to the futex
}

TEST_F(ring_test, producer_killed_mid_stream_never_publishes_a_partial_record) {
  RingInSegment r(1 << 14);
  SpscRing& ring = r.ring;
  std::span<std::byte> memory = r.segment.bytes();
  std::mt19937 random(2024);
  std::uint64_t total = 0;
  for (std::uint32_t stream = 0; stream < 200; ++stream) {
    // Each producer is a new process attaching to the ring its predecessor died writing to.
    pid_t child = fork_child([memory, stream] {
      auto producer = SpscRing::attach(memory);
      return produce_stamped(producer, stream, UINT64_MAX);
    });
    // Read a random number of records, then kill the producer while it keeps writing (the
    // reading goes on until it is dead, so it is not just asleep on a full ring): the kill
    // lands at a random point, usually in the middle of filling a record.
    std::uint32_t sequence = 0;
    const std::uint32_t before_kill = random() % 300;
    std::string problem;
    bool killed = false, dead = false;
    while (!dead && problem.empty()) {
      if (!killed && sequence >= before_kill) {
        ASSERT_EQ(::kill(child, SIGKILL), 0);
        killed = true;
      }
      if (killed) {
        int status = 0;
        pid_t reaped = ::waitpid(child, &status, WNOHANG);
        ASSERT_GE(reaped, 0);
        if (reaped == child) {
          ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
          dead = true;
        }
      }
      // Whatever the producer published is whole; whatever it had not is invisible.
      try {
        auto record = ring.try_read();
        if (!record) {
          if (!killed && !ring.wait_readable(hang_limit))
            problem = "no record within the hang limit";
          continue;
        }
        problem = check_stamped(*record, stream, sequence, ring.max_record_size());
        ring.pop();
        ++sequence;
      } catch (const std::exception& error) {
        problem = error.what();
      }
    }
    if (!dead) {
      ::kill(child, SIGKILL);
      reap(child);
    }
    ASSERT_EQ(problem, "") << "stream " << stream << " record " << sequence;
    while (auto record = ring.try_read()) {
      ASSERT_EQ(check_stamped(*record, stream, sequence, ring.max_record_size()), "")
          << "stream " << stream << " record " << sequence;
      ring.pop();
      ++sequence;
    }
    total += sequence;
  }
  // A producer that is left alone finishes its stream on the same ring.
  pid_t child = fork_child([memory] {
    auto producer = SpscRing::attach(memory);
    return produce_stamped(producer, 1000, 1000);
  });
  for (std::uint32_t sequence = 0; sequence < 1000; ++sequence) {
    auto record = read_waiting(ring);
    ASSERT_TRUE(record);
    ASSERT_EQ(check_stamped(*record, 1000, sequence, ring.max_record_size()), "");
    ring.pop();
  }
  EXPECT_EQ(reap(child), 0);
  EXPECT_FALSE(ring.try_read());
  EXPECT_GT(total, 0u);
}

TEST_F(ring_test, consumer_killed_before_pop_leaves_the_record) {
  RingInSegment r(4096);
  std::byte* out = r.ring.try_begin_write(5);
  std::memcpy(out, "hello", 5);
  r.ring.commit_write(5);
  std::span<std::byte> memory = r.segment.bytes();
  pid_t child = fork_child([memory] {
    auto consumer = SpscRing::attach(memory);
    if (!consumer.try_read()) return 1;
    ::raise(SIGKILL);
    return 2;
  });
  EXPECT_EQ(reap(child), 128 + SIGKILL);
  auto record = r.ring.try_read();
  ASSERT_TRUE(record);
  EXPECT_EQ(record->size(), 5u);
  r.ring.pop();
  EXPECT_FALSE(r.ring.try_read());
}

TEST_F(ring_test, attach_rejects_a_corrupt_header) {
  RingInSegment r(4096);
  std::span<std::byte> memory = r.segment.bytes();
  EXPECT_NO_THROW(SpscRing::attach(memory));
  // Header layout (spsc_ring.cpp): u64 magic at 0, u32 version at 8, u32 size at 12,
  // u64 capacity at 16.
  auto with_u64_at = [&](std::size_t offset, std::uint64_t value) {
    std::uint64_t saved;
    std::memcpy(&saved, memory.data() + offset, 8);
    std::memcpy(memory.data() + offset, &value, 8);
    bool threw = false;
    try {
      SpscRing::attach(memory);
    } catch (const SerializationError&) {
      threw = true;
    }
    std::memcpy(memory.data() + offset, &saved, 8);
    return threw;
  };
  EXPECT_TRUE(with_u64_at(0, 0x1234));            // magic
  EXPECT_TRUE(with_u64_at(8, 0xffff'ffff'ffff));  // version and header size
  EXPECT_TRUE(with_u64_at(16, 5000));             // capacity not a power of two
  EXPECT_TRUE(with_u64_at(16, 1 << 20));          // capacity beyond the memory
  EXPECT_TRUE(with_u64_at(16, 0));
  EXPECT_THROW(SpscRing::attach(memory.subspan(0, 100)), SerializationError);
  std::vector<std::byte> zeros(memory.size());
  std::memcpy(memory.data(), zeros.data(), 128);
  EXPECT_THROW(SpscRing::attach(memory), SerializationError);
}

TEST_F(ring_test, corrupt_record_header_throws_instead_of_reading_out_of_bounds) {
  RingInSegment r(4096);
  SpscRing& ring = r.ring;
  std::byte* out = ring.try_begin_write(100);
  std::memset(out, 1, 100);
  ring.commit_write(100);
  std::byte* header = out - 8;  // {u32 length, u32 kind} right before the payload
  std::uint32_t saved;
  std::memcpy(&saved, header, 4);
  for (std::uint32_t bad : {0x7fff'ffffu, 2000u, 101u + 8u, 4096u}) {
    std::memcpy(header, &bad, 4);
    EXPECT_THROW(ring.try_read(), SerializationError) << "length " << bad;
  }
  std::memcpy(header, &saved, 4);
  std::byte kind_saved[4];
  std::memcpy(kind_saved, header + 4, 4);
  std::memset(header + 4, 0x5a, 4);
  EXPECT_THROW(ring.try_read(), SerializationError);
  std::memcpy(header + 4, kind_saved, 4);
  auto record = ring.try_read();
  ASSERT_TRUE(record);
  EXPECT_EQ(record->size(), 100u);
  ring.pop();
}

TEST_F(ring_test, corrupt_padding_record_throws) {
  RingInSegment r(4096);
  SpscRing& ring = r.ring;
  // Two 1500-byte records take 2 × 1520 bytes from offset 8; popped, the next 2000-byte
  // record does not fit before the end: padding from offset 3048, the record at offset 8.
  for (int i = 0; i < 2; ++i) {
    ASSERT_NE(ring.try_begin_write(1500), nullptr);
    ring.commit_write(1500);
    ASSERT_TRUE(ring.try_read());
    ring.pop();
  }
  std::byte* out = ring.try_begin_write(2000);
  ASSERT_NE(out, nullptr);
  ring.commit_write(2000);
  std::byte* data = out - 16;  // the record sits at offset 8 of the data area
  std::byte* padding = data + 3048;
  std::uint32_t length, kind;
  std::memcpy(&length, padding, 4);
  std::memcpy(&kind, padding + 4, 4);
  ASSERT_EQ(length, 4096u - 3048 + 8);
  std::uint32_t bad = length - 16;
  std::memcpy(padding, &bad, 4);
  EXPECT_THROW(ring.try_read(), SerializationError);
  std::memcpy(padding, &length, 4);
  std::memset(padding + 4, 0, 4);
  EXPECT_THROW(ring.try_read(), SerializationError);
  std::memcpy(padding + 4, &kind, 4);
  auto record = ring.try_read();
  ASSERT_TRUE(record);
  EXPECT_EQ(record->size(), 2000u);
  EXPECT_EQ(record->data(), out);
  ring.pop();
  EXPECT_FALSE(ring.try_read());
}
