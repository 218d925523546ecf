// src/sync/barrier.cpp — Barrier: CPython's threading.Barrier state machine (filling, draining,
// resetting, broken) under a robust process-shared mutex, with waiters asleep on a futex, and
// the pids of the parties in shared memory so that waiters can notice a party's death.
//
// A round: arrivals fill the barrier; the last one turns it to `draining` and wakes everyone;
// each leaves, and the last to leave turns it back to `filling`. Arrivals that find it
// draining (or resetting) wait for that to end, so a waiter slow to wake up never confuses
// its round with the next one.
//
// Deaths: a waiter sleeps at most check_interval at a time; then, if no process has looked
// within check_interval, it looks at the parties (under the mutex) through /proc/<pid>/stat:
//   * an `inside` entry (a thread in arrive_and_wait()) whose process is gone, a zombie or a
//     reused pid is removed; in a filling round that breaks the barrier. Without this, the
//     others would wait for a round that can never complete.
//   * a `previous` entry (passed the last round) not inside now whose process is a zombie
//     that was killed or exited non-zero breaks a filling round that has waiters. A zombie
//     that exited 0, or a process already reaped, is forgotten: it may have just finished,
//     and a new process may take its place — parties are counted, not named.
// A process that dies holding the mutex (EOWNERDEAD) left the tables as they are between two
// stores: the count is rebuilt from the `inside` entries, whose pid is written last.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include "futex.hpp"
#include "mproc/sync.hpp"
#include "sync/sync_segment.hpp"

namespace mproc {

namespace {

using namespace std::chrono_literals;
using detail::BarrierState;
using detail::PartyStamp;

enum Phase : std::uint32_t { phase_filling = 0, phase_draining, phase_resetting, phase_broken };
enum BreakReason : std::uint32_t { no_reason = 0, aborted, timed_out, party_died };

/// How often waiters look at the parties (at most once per interval, by any one waiter).
constexpr std::chrono::nanoseconds check_interval = 100ms;

// ---------------------------------------------------------------------------------------------
// What /proc says about a process

struct StatFields {
  char state = '?';
  std::uint64_t start_time = 0;
  std::optional<int> exit_code;  // the wait status, for a zombie (Linux >= 3.5)
};

/// Fields 3 (state), 22 (starttime) and 52 (exit_code) of /proc/<pid>/stat.
std::optional<StatFields> read_stat(pid_t pid) {
  char path[48];
  if (pid == 0)
    std::snprintf(path, sizeof path, "/proc/self/stat");
  else
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = detail::retry_eintr([&] { return ::open(path, O_RDONLY | O_CLOEXEC); });
  if (fd < 0) return std::nullopt;
  char text[1024];
  std::size_t size = 0;
  for (;;) {
    const ssize_t n =
        detail::retry_eintr([&] { return ::read(fd, text + size, sizeof text - 1 - size); });
    if (n <= 0) break;
    size += static_cast<std::size_t>(n);
    if (size == sizeof text - 1) break;
  }
  ::close(fd);
  text[size] = '\0';
  // The command name (field 2) is in parentheses and may itself hold ") ": skip to the last.
  const char* p = nullptr;
  for (std::size_t i = size; i-- > 0;)
    if (text[i] == ')') {
      p = text + i + 1;
      break;
    }
  if (!p) return std::nullopt;
  StatFields fields;
  int field = 2;
  while (*p) {
    while (*p == ' ') ++p;
    if (!*p || *p == '\n') break;
    ++field;
    const char* start = p;
    while (*p && *p != ' ' && *p != '\n') ++p;
    if (field == 3) {
      fields.state = *start;
    } else if (field == 22) {
      fields.start_time = std::strtoull(start, nullptr, 10);
    } else if (field == 52) {
      fields.exit_code = static_cast<int>(std::strtol(start, nullptr, 10));
      break;
    }
  }
  return fields;
}

/// This process's start time (0 when /proc cannot tell), cached per pid: a forked child
/// finds the parent's pid in the cache and looks again.
std::uint64_t self_start_time() {
  static std::atomic<pid_t> cached_pid{0};
  static std::atomic<std::uint64_t> cached_start{0};
  const pid_t pid = ::getpid();
  if (cached_pid.load(std::memory_order_acquire) == pid)
    return cached_start.load(std::memory_order_relaxed);
  const auto fields = read_stat(0);
  const std::uint64_t start = fields ? fields->start_time : 0;
  cached_start.store(start, std::memory_order_relaxed);
  cached_pid.store(pid, std::memory_order_release);
  return start;
}

enum class Fate { alive, exited_ok, died, gone };
struct Probe {
  Fate fate = Fate::alive;
  int status = -1;  // the wait status when known
};

/// What became of the process a stamp names.
Probe probe(pid_t pid, std::uint64_t start_time) {
  const auto fields = read_stat(pid);
  if (!fields) {
    // No /proc entry: gone — or no /proc at all, where kill() can only say "exists".
    if (::kill(pid, 0) == -1 && errno == ESRCH) return {Fate::gone, -1};
    return {Fate::alive, -1};
  }
  if (start_time != 0 && fields->start_time != start_time) return {Fate::gone, -1};  // reused pid
  if (fields->state == 'Z' || fields->state == 'X') {
    if (!fields->exit_code) return {Fate::exited_ok, -1};
    return {*fields->exit_code == 0 ? Fate::exited_ok : Fate::died, *fields->exit_code};
  }
  return {Fate::alive, -1};
}

std::string describe_end(pid_t pid, int status) {
  std::string text = "process " + std::to_string(pid);
  if (status < 0) return text + " ended";
  if (WIFSIGNALED(status)) return text + " was killed by " + signal_name(WTERMSIG(status));
  return text + " exited with status " + std::to_string(WEXITSTATUS(status));
}

// ---------------------------------------------------------------------------------------------
// The mutex, held

/// Holds the barrier's mutex; wakes the sleepers after releasing it when the state changed.
class Held {
 public:
  explicit Held(BarrierState& state) : s_(state) { lock(); }
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;
  ~Held() {
    if (locked_) unlock();
  }

  void lock() {
    if (detail::robust_lock(s_.mutex, detail::no_deadline, "Barrier") ==
        detail::LockResult::owner_died)
      recover();
    locked_ = true;
  }
  void unlock() {
    locked_ = false;
    ::pthread_mutex_unlock(&s_.mutex);
    if (wake_) {
      wake_ = false;
      detail::futex_wake(s_.sequence);
    }
  }
  /// Waiters must look again: move the sequence now, wake them once the mutex is free.
  void changed() {
    s_.sequence.fetch_add(1);
    wake_ = true;
  }

  BarrierState& state() const noexcept { return s_; }

 private:
  /// A process died holding the mutex, between any two of its stores.
  void recover() {
    std::uint32_t count = 0;
    for (std::uint32_t i = 0; i < s_.parties; ++i)
      if (s_.inside()[i].pid.load(std::memory_order_acquire) != 0) ++count;
    s_.count = count;
    if ((s_.phase == phase_draining || s_.phase == phase_resetting) && count == 0)
      s_.phase = phase_filling;
    if (s_.phase > phase_broken) s_.phase = phase_broken;
    changed();
  }

  BarrierState& s_;
  bool locked_ = false;
  bool wake_ = false;
};

void clear_stamps(PartyStamp* stamps, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) stamps[i].pid.store(0, std::memory_order_release);
}

void break_barrier(Held& held, BreakReason reason, pid_t pid = 0, int status = -1) {
  auto& s = held.state();
  s.phase = phase_broken;
  s.break_reason = reason;
  s.break_pid = pid;
  s.break_status = status;
  // The dead (or the last round's parties) must not break the barrier again after reset().
  clear_stamps(s.previous(), s.parties);
  held.changed();
}

std::string broken_message(const BarrierState& s) {
  std::string text = "mproc::Barrier is broken";
  switch (s.break_reason) {
    case aborted:
      return text + ": abort() was called";
    case timed_out:
      return text + ": a wait timed out";
    case party_died:
      return text + ": a party died (" + describe_end(s.break_pid, s.break_status) + ")";
    default:
      return text;
  }
}

/// Takes a free `inside` entry for this process; returns its index.
std::uint32_t take_entry(BarrierState& s, pid_t pid, std::uint64_t start_time) {
  for (std::uint32_t i = 0; i < s.parties; ++i) {
    PartyStamp& entry = s.inside()[i];
    if (entry.pid.load(std::memory_order_relaxed) != 0) continue;
    entry.start_time.store(start_time, std::memory_order_relaxed);
    entry.pid.store(pid, std::memory_order_release);
    ++s.count;
    return i;
  }
  // count < parties whenever an arrival gets here, and count is the number of taken entries.
  throw std::logic_error("mproc::Barrier: its shared state is corrupt (no free entry)");
}

/// Leaves the barrier: frees the entry; the last to leave a drained or reset round opens it.
void leave(Held& held, std::uint32_t entry) {
  auto& s = held.state();
  if (s.inside()[entry].pid.exchange(0, std::memory_order_acq_rel) != 0 && s.count > 0) --s.count;
  if (s.count == 0 && (s.phase == phase_draining || s.phase == phase_resetting)) {
    s.phase = phase_filling;
    held.changed();
  }
}

/// Looks at the parties (see the file comment). Requires the mutex.
void check_parties(Held& held) {
  auto& s = held.state();
  const pid_t self = ::getpid();
  PartyStamp* inside = s.inside();
  for (std::uint32_t i = 0; i < s.parties; ++i) {
    const pid_t pid = inside[i].pid.load(std::memory_order_acquire);
    if (pid == 0 || pid == self) continue;
    const Probe seen = probe(pid, inside[i].start_time.load(std::memory_order_relaxed));
    if (seen.fate == Fate::alive) continue;
    inside[i].pid.store(0, std::memory_order_release);
    if (s.count > 0) --s.count;
    if (s.phase == phase_filling) break_barrier(held, party_died, pid, seen.status);
    held.changed();
  }
  if (s.count == 0 && (s.phase == phase_draining || s.phase == phase_resetting)) {
    s.phase = phase_filling;
    held.changed();
  }
  if (s.phase != phase_filling || s.count == 0) return;
  PartyStamp* previous = s.previous();
  for (std::uint32_t i = 0; i < s.parties; ++i) {
    const pid_t pid = previous[i].pid.load(std::memory_order_acquire);
    if (pid == 0 || pid == self) continue;
    bool arrived = false;
    for (std::uint32_t j = 0; j < s.parties && !arrived; ++j)
      arrived = inside[j].pid.load(std::memory_order_relaxed) == pid;
    if (arrived) continue;
    const Probe seen = probe(pid, previous[i].start_time.load(std::memory_order_relaxed));
    if (seen.fate == Fate::alive) continue;
    if (seen.fate == Fate::died) {
      break_barrier(held, party_died, pid, seen.status);
      return;
    }
    previous[i].pid.store(0, std::memory_order_release);  // finished or reaped: it left
  }
}

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Releases the mutex and sleeps until the state changes, the deadline passes, or it is time
/// to look at the parties; holds the mutex again on return. Returns false at the deadline.
bool wait_for_change(Held& held, detail::steady_time deadline) {
  auto& s = held.state();
  const std::uint32_t seen = s.sequence.load();
  held.unlock();
  bool moved = false;
  for (int round = 0; round < detail::spin_rounds && !moved; ++round) {
    moved = s.sequence.load(std::memory_order_relaxed) != seen;
    detail::cpu_relax();
  }
  if (!moved) {
    const auto now = std::chrono::steady_clock::now();
    if (now < deadline) {
      const auto slice = deadline == detail::no_deadline
                             ? check_interval
                             : std::min<std::chrono::nanoseconds>(check_interval, deadline - now);
      detail::futex_wait(s.sequence, seen, slice);
    }
  }
  held.lock();
  if (s.sequence.load() != seen) return true;
  if (std::chrono::steady_clock::now() >= deadline) return false;
  const std::int64_t now_ns = steady_ns();
  if (now_ns - s.last_check_ns.load() >= check_interval.count()) {
    s.last_check_ns.store(now_ns);
    check_parties(held);
  }
  return true;
}

}  // namespace

Barrier::Barrier(std::size_t parties) {
  if (parties == 0 || parties > detail::max_barrier_parties)
    throw std::invalid_argument("mproc::Barrier: parties must be between 1 and " +
                                std::to_string(detail::max_barrier_parties) + " (got " +
                                std::to_string(parties) + ")");
  segment_ =
      detail::create_sync(detail::SyncKind::barrier, BarrierState::bytes_for(parties),
                          "mproc-barrier", [parties](std::byte* data) {
                            auto* state = new (data) BarrierState{};
                            detail::init_robust_mutex(state->mutex, PTHREAD_MUTEX_ERRORCHECK);
                            state->parties = static_cast<std::uint32_t>(parties);
                            for (std::size_t i = 0; i < 2 * parties; ++i)
                              new (state->inside() + i) PartyStamp{};
                          });
}

detail::SyncSegment& Barrier::segment() const {
  if (!segment_) detail::throw_empty_handle("Barrier");
  return *segment_;
}

std::size_t Barrier::arrive_and_wait() const {
  return arrive_and_wait_until_steady(detail::no_deadline);
}

std::size_t Barrier::arrive_and_wait_until_steady(detail::steady_time deadline) const {
  auto& s = segment().state<BarrierState>();
  const pid_t self = ::getpid();
  const std::uint64_t start_time = self_start_time();
  Held held(s);
  // Wait for the last round's waiters to leave (or a reset to finish).
  while (s.phase == phase_draining || s.phase == phase_resetting) {
    if (!wait_for_change(held, deadline)) {
      break_barrier(held, timed_out);
      throw BrokenBarrier(broken_message(s));
    }
  }
  if (s.phase == phase_broken) throw BrokenBarrier(broken_message(s));

  const std::size_t index = s.count;
  const std::uint32_t entry = take_entry(s, self, start_time);
  if (s.count == s.parties) {
    // The last arrival: the round completes. Remember who passed it.
    for (std::uint32_t i = 0; i < s.parties; ++i) {
      PartyStamp& from = s.inside()[i];
      PartyStamp& to = s.previous()[i];
      to.pid.store(0, std::memory_order_relaxed);
      to.start_time.store(from.start_time.load(std::memory_order_relaxed),
                          std::memory_order_relaxed);
      to.pid.store(from.pid.load(std::memory_order_relaxed), std::memory_order_release);
    }
    s.phase = phase_draining;
    held.changed();
  } else {
    while (s.phase == phase_filling) {
      if (!wait_for_change(held, deadline)) {
        if (s.phase == phase_filling) break_barrier(held, timed_out);
        break;
      }
    }
  }
  const bool passed = s.phase == phase_draining;
  const std::string failure = passed ? std::string()
                              : s.phase == phase_resetting
                                  ? std::string("mproc::Barrier was reset while waiting")
                                  : broken_message(s);
  leave(held, entry);
  if (!passed) throw BrokenBarrier(failure);
  return index;
}

void Barrier::abort() const {
  Held held(segment().state<BarrierState>());
  break_barrier(held, aborted);
}

void Barrier::reset() const {
  auto& s = segment().state<BarrierState>();
  Held held(s);
  if (s.count > 0) {
    // Waiters get BrokenBarrier; the last to leave opens the barrier. A drained round stays
    // draining: its waiters passed.
    if (s.phase == phase_filling || s.phase == phase_broken) s.phase = phase_resetting;
  } else {
    s.phase = phase_filling;
  }
  s.break_reason = no_reason;
  clear_stamps(s.previous(), s.parties);
  held.changed();
}

bool Barrier::broken() const {
  auto& s = segment().state<BarrierState>();
  Held held(s);
  return s.phase == phase_broken;
}

std::size_t Barrier::parties() const {
  return segment().state<BarrierState>().parties;
}

std::size_t Barrier::n_waiting() const {
  auto& s = segment().state<BarrierState>();
  Held held(s);
  return s.phase == phase_filling ? s.count : 0;
}

}  // namespace mproc
