// tests/chaos/chaos.cpp — the chaos program: round after round, a Pool, Queues and Pipes
// under load while a chaos thread SIGKILLs and SIGSTOPs/SIGCONTs their processes (workers,
// the pool's zygote, the forkserver, producers, consumers, senders); after every round it
// checks that nothing hung, nothing was lost or delivered twice, and nothing was left behind.
//
//   mproc_chaos [--seconds S] [--rounds N] [--seed X] [--only-round K] [--processes P]
//               [--scale F] [--quiet] [--min-kill-age MS | --kill-young]
//   environment: CHAOS_SECONDS, CHAOS_ROUNDS, CHAOS_SEED (flags win)
//
// Every round draws its choices from splitmix(seed, round), so `--seed X --only-round K`
// replays the configuration of round K (the chaos thread's timing is the machine's own:
// a replay is the same load and the same kind of chaos, not the same interleaving).
//
// One round:
//   pool phase   Pool{start method by round, max_retries 0 or 100, maybe max_memory_per_child}
//                apply_async (counted in shared memory) + hanging tasks with a per-task
//                timeout + memory hogs, then map(collect) with random chunks, imap and
//                imap_unordered, all while the chaos thread kills/stops workers and helpers.
//   ipc phase    a Queue or JoinableQueue with producer and consumer Processes, and Pipes
//                with one sender Process each, while the chaos thread kills/stops them;
//                killed consumers are replaced so producers can finish.
//   checks       per task: its value == f(input) exactly once, or (without retries) a
//                precise error; per queue item: see check_queue(); after everything is
//                destroyed: no child, no zombie, no stopped process, no /dev/shm entry and
//                no descriptor more than before the round.
// A watchdog turns any wait that takes far too long into a "HANG" failure naming the phase.
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "launch/launcher.hpp"
#include "mproc/mproc.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------------------------------
// Values the tasks compute. splitmix64 is a bijection, so a value names its input.

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A little CPU work (~10 to ~200 µs) so that kills land in the middle of tasks.
std::uint64_t work(std::uint64_t x) {
  std::uint64_t v = x;
  const unsigned spins = 5000 + static_cast<unsigned>(x % 8) * 12000;
  for (unsigned i = 0; i < spins; ++i) v = mix(v);
  asm volatile("" : : "r"(v));
  return mix(x);
}

// Records each execution in shared memory (one counter per task), then works.
std::uint64_t counted_work(mproc::SharedMemory counters, std::uint32_t index, std::uint64_t x) {
  std::atomic_ref<std::uint32_t>(reinterpret_cast<std::uint32_t*>(counters.data())[index])
      .fetch_add(1, std::memory_order_relaxed);
  return work(x);
}

std::uint64_t hang(std::uint64_t) {
  for (;;) ::pause();
}

// As tests/fault: malloc, and throw std::bad_alloc on failure (under ASan operator new
// aborts instead of throwing; malloc returns NULL with allocator_may_return_null=1).
std::uint64_t hog(std::uint64_t mib) {
  const std::size_t size = static_cast<std::size_t>(mib) << 20;
  char* block = static_cast<char*>(std::malloc(size));
  if (!block) throw std::bad_alloc();
  std::memset(block, 1, size);
  std::uint64_t middle = static_cast<unsigned char>(block[size / 2]);
  std::free(block);
  return middle;
}

// ---------------------------------------------------------------------------------------
// /proc

struct ProcInfo {
  pid_t ppid = 0;
  char state = '?';
  unsigned long long start = 0;  // starttime: tells a reused pid from the original
};

std::optional<ProcInfo> read_proc(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  ProcInfo info;
  rest >> info.state >> info.ppid;
  std::string field;
  for (int i = 5; i <= 21; ++i) rest >> field;  // fields 5..21
  rest >> info.start;                            // field 22
  return info;
}

std::map<pid_t, ProcInfo> process_table() {
  std::map<pid_t, ProcInfo> table;
  if (DIR* proc = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(proc)) {
      char* end = nullptr;
      long pid = std::strtol(entry->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      if (auto info = read_proc(static_cast<pid_t>(pid))) table[static_cast<pid_t>(pid)] = *info;
    }
    ::closedir(proc);
  }
  return table;
}

std::vector<pid_t> descendants_in(const std::map<pid_t, ProcInfo>& table, pid_t root) {
  std::vector<pid_t> result, frontier{root};
  while (!frontier.empty()) {
    pid_t parent = frontier.back();
    frontier.pop_back();
    for (auto& [pid, info] : table)
      if (info.ppid == parent) {
        result.push_back(pid);
        frontier.push_back(pid);
      }
  }
  return result;
}

std::map<int, std::string> open_fds() {
  std::map<int, std::string> fds;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    int own = ::dirfd(dir);
    while (dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      int fd = std::atoi(entry->d_name);
      if (fd == own) continue;
      char target[512] = {};
      std::string path = std::string("/proc/self/fd/") + entry->d_name;
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      fds[fd] = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?";
    }
    ::closedir(dir);
  }
  return fds;
}

std::set<std::string> shm_entries() {
  std::set<std::string> names;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (dirent* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') names.insert(entry->d_name);
    ::closedir(dir);
  }
  return names;
}

// argv[1] of a process: "--mproc-forkserver" or "--mproc-spawn" for programs mproc spawned.
std::string spawn_role(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0, argv1;
  std::getline(in, argv0, '\0');
  std::getline(in, argv1, '\0');
  return argv1;
}

// How long ago a process started, from its /proc starttime (clock ticks since boot).
std::chrono::milliseconds age(unsigned long long start_ticks) {
  std::ifstream in("/proc/uptime");
  double uptime = 0;
  in >> uptime;
  const double started = static_cast<double>(start_ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return std::chrono::milliseconds(static_cast<long long>((uptime - started) * 1000));
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// ---------------------------------------------------------------------------------------
// Bookkeeping

struct Totals {
  std::uint64_t rounds = 0, kills_worker = 0, kills_zygote = 0, kills_forkserver = 0,
                kills_producer = 0, kills_consumer = 0, kills_sender = 0, stops = 0;
  std::uint64_t tasks = 0, values = 0, crashed = 0, timeouts = 0, memory_limit = 0,
                retried = 0, workers_started = 0, retries_exhausted = 0;
  std::uint64_t items_acked = 0, items_received = 0, items_lost_to_killed_consumer = 0,
                items_lost_with_killed_producer = 0, messages = 0;
  std::uint64_t lost = 0, duplicated = 0, left_behind = 0, failures = 0;
};

Totals totals;
std::mutex totals_mutex;  // the chaos thread adds its counts at the end of each phase

struct RoundContext {
  unsigned round = 0;
  std::uint64_t seed = 0;
  std::string label;
  std::vector<std::string> failures;
  void fail(const std::string& what) {
    std::fprintf(stderr, "CHAOS FAILURE round %u (%s): %s\n", round, label.c_str(), what.c_str());
    failures.push_back(what);
  }
};

// Turns a wait that takes far too long into a precise failure instead of a silent hang.
class Watchdog {
 public:
  Watchdog() : thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void arm(std::string what, std::chrono::seconds limit) {
    std::lock_guard lock(mutex_);
    what_ = std::move(what);
    deadline_ = Clock::now() + limit;
    wake_.notify_all();
  }
  void disarm() {
    std::lock_guard lock(mutex_);
    deadline_.reset();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!quit_) {
      if (!deadline_) {
        wake_.wait(lock);
        continue;
      }
      if (wake_.wait_until(lock, *deadline_) == std::cv_status::timeout && deadline_ &&
          Clock::now() >= *deadline_) {
        std::fprintf(stderr, "CHAOS FAILURE (HANG): %s did not finish in time; processes below this one:\n",
                     what_.c_str());
        auto table = process_table();
        for (pid_t pid : descendants_in(table, ::getpid()))
          std::fprintf(stderr, "  pid %d state %c parent %d %s\n", pid, table[pid].state, table[pid].ppid,
                       spawn_role(pid).c_str());
        std::fflush(stderr);
        // Our children end with us (their control channels close); stopped ones get SIGCONT
        // first so they can.
        for (pid_t pid : descendants_in(table, ::getpid())) ::kill(pid, SIGCONT);
        std::_Exit(3);
      }
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Clock::time_point> deadline_;
  std::string what_;
  bool quit_ = false;
  std::thread thread_;
};

Watchdog* watchdog = nullptr;
bool trace = std::getenv("CHAOS_TRACE") != nullptr;  // print every signal the chaos sends

// ---------------------------------------------------------------------------------------
// The chaos thread

enum class Kind { worker, zygote, forkserver, producer, consumer, sender };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::worker: return "worker";
    case Kind::zygote: return "zygote";
    case Kind::forkserver: return "forkserver";
    case Kind::producer: return "producer";
    case Kind::consumer: return "consumer";
    case Kind::sender: return "sender";
  }
  return "?";
}

struct Target {
  pid_t pid;
  Kind kind;
};

struct ChaosOptions {
  std::chrono::milliseconds min_gap{3}, max_gap{30};
  double kill_probability = 0.6;    // else SIGSTOP, then SIGCONT 1..max_stop later
  double helper_probability = 0.15;  // pool phase: aim at a helper when there is one
  std::chrono::milliseconds max_stop{60};
  // At most one strike at a helper per this much time: a helper (zygote, forkserver) is
  // killed while a pool replaces a worker through it, but not again and again within one
  // launch (the launcher restarts a dead forkserver a few times, then gives up).
  std::chrono::milliseconds helper_cooldown{200};
  // SIGKILL only processes at least this old (--min-kill-age; 0 by default: a worker may be
  // killed while it starts, which once made the pool count an initializer failure and break).
  std::chrono::milliseconds min_age_to_kill{0};
};

class Chaos {
 public:
  Chaos(std::uint64_t seed, ChaosOptions options, std::function<std::vector<Target>()> targets)
      : random_(seed), options_(options), targets_(std::move(targets)), thread_([this] { run(); }) {}
  ~Chaos() { stop(); }

  /// Ends the chaos and resumes every process it stopped; returns once they are resumed.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (quit_) return;
      quit_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  const std::map<Kind, std::uint64_t>& kills() const { return kills_; }
  std::uint64_t stops() const { return stops_; }
  /// Every process the chaos thread saw, with its start time (to tell reused pids apart).
  const std::map<pid_t, unsigned long long>& seen() const { return seen_; }

 private:
  struct Stopped {
    int pidfd;
    Clock::time_point resume;
  };

  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      auto gap = std::chrono::milliseconds(std::uniform_int_distribution<long>(
          options_.min_gap.count(), options_.max_gap.count())(random_));
      auto until = Clock::now() + gap;
      for (auto& s : stopped_) until = std::min(until, s.resume);
      wake_.wait_until(lock, until, [&] { return quit_; });
      resume(quit_);
      if (quit_) return;
      lock.unlock();
      strike();
      lock.lock();
    }
  }

  void resume(bool all) {
    auto now = Clock::now();
    for (auto it = stopped_.begin(); it != stopped_.end();) {
      if (all || it->resume <= now) {
        pidfd_send_signal(it->pidfd, SIGCONT);
        ::close(it->pidfd);
        it = stopped_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void strike() {
    std::vector<Target> targets = targets_();
    for (auto& t : targets)
      if (auto info = read_proc(t.pid)) seen_.emplace(t.pid, info->start);
    if (targets.empty()) return;
    std::vector<Target> helpers, others;
    for (auto& t : targets)
      (t.kind == Kind::zygote || t.kind == Kind::forkserver ? helpers : others).push_back(t);
    std::uniform_real_distribution<double> unit(0, 1);
    if (Clock::now() - last_helper_strike_ < options_.helper_cooldown) helpers.clear();
    if (helpers.empty() && others.empty()) return;
    const bool at_helper = !helpers.empty() && (others.empty() || unit(random_) < options_.helper_probability);
    if (at_helper) last_helper_strike_ = Clock::now();
    const std::vector<Target>& pool = at_helper ? helpers : others;
    Target target = pool[std::uniform_int_distribution<std::size_t>(0, pool.size() - 1)(random_)];
    // Signal through a pidfd opened while the pid is still the process we listed.
    auto before = read_proc(target.pid);
    if (!before || before->state == 'Z') return;
    int pidfd = pidfd_open(target.pid);
    if (pidfd < 0) return;
    auto after = read_proc(target.pid);
    if (!after || after->start != before->start) {
      ::close(pidfd);
      return;
    }
    bool kill = unit(random_) < options_.kill_probability;
    if (kill && age(before->start) < options_.min_age_to_kill) kill = false;  // stop it instead
    if (trace)
      std::fprintf(stderr, "chaos %.3f: %s %s %d\n", std::chrono::duration<double>(Clock::now().time_since_epoch()).count(),
                   kill ? "SIGKILL" : "SIGSTOP", kind_name(target.kind), target.pid);
    if (kill) {
      if (pidfd_send_signal(pidfd, SIGKILL) == 0) ++kills_[target.kind];
      ::close(pidfd);
    } else if (pidfd_send_signal(pidfd, SIGSTOP) == 0) {
      ++stops_;
      auto length = std::chrono::milliseconds(
          std::uniform_int_distribution<long>(1, options_.max_stop.count())(random_));
      std::lock_guard lock(mutex_);
      stopped_.push_back({pidfd, Clock::now() + length});
    } else {
      ::close(pidfd);
    }
  }

  std::mt19937_64 random_;
  ChaosOptions options_;
  std::function<std::vector<Target>()> targets_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool quit_ = false;
  std::vector<Stopped> stopped_;
  std::map<Kind, std::uint64_t> kills_;
  std::uint64_t stops_ = 0;
  Clock::time_point last_helper_strike_{};
  std::map<pid_t, unsigned long long> seen_;
  std::thread thread_;  // last: starts once everything above exists
};

void add_chaos_counts(const Chaos& chaos, std::map<pid_t, unsigned long long>& seen) {
  std::lock_guard lock(totals_mutex);
  for (auto& [kind, n] : chaos.kills()) {
    switch (kind) {
      case Kind::worker: totals.kills_worker += n; break;
      case Kind::zygote: totals.kills_zygote += n; break;
      case Kind::forkserver: totals.kills_forkserver += n; break;
      case Kind::producer: totals.kills_producer += n; break;
      case Kind::consumer: totals.kills_consumer += n; break;
      case Kind::sender: totals.kills_sender += n; break;
    }
  }
  totals.stops += chaos.stops();
  seen.insert(chaos.seen().begin(), chaos.seen().end());
}

// ---------------------------------------------------------------------------------------
// Pool phase

struct Config {
  std::chrono::milliseconds min_kill_age{0};  // see ChaosOptions::min_age_to_kill
  double scale = 1.0;
  unsigned max_processes = 3;
  bool quiet = false;
};

std::string error_name(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const mproc::WorkerCrashed&) {
    return "WorkerCrashed";
  } catch (const mproc::TaskTimeout&) {
    return "TaskTimeout";
  } catch (const mproc::MemoryLimitExceeded&) {
    return "MemoryLimitExceeded";
  } catch (const std::exception& e) {
    return std::string("other exception: ") + e.what();
  } catch (...) {
    return "non-std exception";
  }
}

std::string error_text(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "?";
  }
}

std::size_t scaled(double base, const Config& config) {
  return std::max<std::size_t>(1, static_cast<std::size_t>(base * config.scale));
}

void pool_phase(RoundContext& ctx, const Config& config, std::mt19937_64& random,
                std::map<pid_t, unsigned long long>& seen) {
  using mproc::StartMethod;
  const StartMethod methods[] = {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn};
  const StartMethod method = methods[ctx.round % 3];
  const unsigned retries = (ctx.round / 3) % 2 == 1 ? 20 : 0;
  const unsigned processes = std::uniform_int_distribution<unsigned>(2, std::max(2u, config.max_processes))(random);
  const bool memory_round = random() % 2 == 0;
  const std::size_t memory_limit = std::size_t{256} << 20;
  const unsigned max_tasks_per_child = random() % 4 == 0 ? 50 : 0;
  ctx.label = "seed " + std::to_string(ctx.seed) + ", pool " + mproc::to_string(method) +
              ", processes " + std::to_string(processes) + ", max_retries " + std::to_string(retries) +
              (memory_round ? ", max_memory_per_child 256 MiB" : "") +
              (max_tasks_per_child ? ", max_tasks_per_child 50" : "");
  if (!config.quiet) std::printf("round %u: %s\n", ctx.round, ctx.label.c_str()), std::fflush(stdout);

  const std::uint64_t salt = (ctx.seed & 0xffffffffull) << 32;
  auto input = [&](std::size_t i) { return salt | i; };
  const std::size_t n_apply = scaled(400, config), n_map = scaled(4000, config),
                    n_imap = scaled(500, config), n_unordered = scaled(500, config);
  const std::size_t n_hang = std::uniform_int_distribution<std::size_t>(1, 3)(random);
  const std::size_t n_hog = memory_round ? std::uniform_int_distribution<std::size_t>(1, 3)(random) : 0;

  mproc::SharedMemory counters = mproc::SharedMemory::create(n_apply * sizeof(std::uint32_t));
  std::optional<mproc::Pool> pool;
  pool.emplace(mproc::PoolOptions{.processes = processes,
                                  .max_tasks_per_child = max_tasks_per_child,
                                  .max_memory_per_child = memory_round ? memory_limit : 0,
                                  .max_retries = retries,
                                  .start_method = method});

  // Targets: every process below this one is the pool's (the ipc phase has not started).
  // A direct child is the zygote (fork), the forkserver or a spawned worker; they are told
  // apart by the role a spawned program gets in argv[1]. (Not by helper_pids(): it takes
  // the forkserver client's lock, which a launch holds while it waits for a forkserver
  // that this very thread may have stopped.)
  const pid_t self = ::getpid();
  auto targets = [self] {
    auto table = process_table();
    std::vector<Target> result;
    for (pid_t pid : descendants_in(table, self)) {
      if (table[pid].state == 'Z') continue;
      Kind kind = Kind::worker;
      if (table[pid].ppid == self) {
        std::string role = spawn_role(pid);
        kind = role == "--mproc-forkserver" ? Kind::forkserver : role == "--mproc-spawn" ? Kind::worker : Kind::zygote;
      }
      result.push_back({pid, kind});
    }
    return result;
  };
  ChaosOptions chaos_options;
  chaos_options.min_age_to_kill = config.min_kill_age;
  Chaos chaos(random(), chaos_options, targets);

  // Submit: counted tasks, hanging tasks with a per-task timeout, memory hogs; shuffled.
  enum class Job { counted, hang, hog };
  std::vector<Job> jobs(n_apply, Job::counted);
  jobs.insert(jobs.end(), n_hang, Job::hang);
  jobs.insert(jobs.end(), n_hog, Job::hog);
  std::shuffle(jobs.begin(), jobs.end(), random);
  struct Submitted {
    Job job;
    std::uint32_t index;
    std::chrono::nanoseconds timeout{};
    mproc::Future<std::uint64_t> future;
  };
  std::vector<Submitted> submitted;
  std::uint32_t next_counted = 0;
  watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: submitting", 120s);
  for (Job job : jobs) {
    if (job == Job::counted) {
      std::uint32_t index = next_counted++;
      submitted.push_back({job, index, {}, pool->apply_async(counted_work, counters, index, input(index))});
    } else if (job == Job::hang) {
      auto limit = std::chrono::milliseconds(std::uniform_int_distribution<long>(50, 300)(random));
      submitted.push_back({job, 0, limit, pool->apply_async(mproc::TaskOptions{.timeout = limit}, hang, std::uint64_t{0})});
    } else {
      submitted.push_back({job, 0, {}, pool->apply_async(hog, std::uint64_t{1024})});
    }
  }

  std::uint64_t values = 0, crashed = 0, timeouts = 0, memory_hits = 0, tasks = 0, retries_exhausted = 0;
  // A map item or imap item: the value, or (without retries) WorkerCrashed.
  auto check_item = [&](const char* what, std::size_t i, const mproc::Result<std::uint64_t>& r) {
    ++tasks;
    if (r.ok()) {
      if (r.value() != mix(input(i)))
        ctx.fail(std::string(what) + " item " + std::to_string(i) + ": wrong value (another item's result?)");
      else
        ++values;
      return;
    }
    std::string name = error_name(r.error());
    if (name == "WorkerCrashed" && retries == 0) {
      ++crashed;
      return;
    }
    ctx.fail(std::string(what) + " item " + std::to_string(i) + ": " + name + " (" + error_text(r.error()) +
             ")" + (retries ? " although retries remained" : ""));
  };

  // map with random chunks, collecting per-item results.
  {
    std::vector<std::uint64_t> items(n_map);
    for (std::size_t i = 0; i < n_map; ++i) items[i] = input(i);
    std::size_t chunksize = std::uniform_int_distribution<std::size_t>(1, 64)(random);
    watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: map", 180s);
    auto results = pool->map(work, items, mproc::collect, mproc::MapOptions{.chunksize = chunksize});
    if (results.size() != n_map)
      ctx.fail("map returned " + std::to_string(results.size()) + " results for " + std::to_string(n_map) + " items");
    for (std::size_t i = 0; i < std::min(results.size(), n_map); ++i) check_item("map", i, results[i]);
  }
  // imap, in order, exceptions thrown at the item.
  {
    std::vector<std::uint64_t> items(n_imap);
    for (std::size_t i = 0; i < n_imap; ++i) items[i] = input(i);
    std::size_t chunksize = std::uniform_int_distribution<std::size_t>(1, 8)(random);
    watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: imap", 180s);
    std::size_t i = 0;
    auto range = pool->imap(work, items, chunksize);
    for (auto it = range.begin(); it != range.end(); ++it, ++i) {
      try {
        check_item("imap", i, mproc::Result<std::uint64_t>(*it));
      } catch (...) {
        check_item("imap", i, mproc::Result<std::uint64_t>(std::current_exception()));
      }
    }
    if (i != n_imap) ctx.fail("imap yielded " + std::to_string(i) + " items for " + std::to_string(n_imap));
  }
  // imap_unordered: a value names its input, so every input must show up exactly once.
  {
    std::vector<std::uint64_t> items(n_unordered);
    std::unordered_map<std::uint64_t, std::size_t> index_of;
    for (std::size_t i = 0; i < n_unordered; ++i) {
      items[i] = input(i);
      index_of[mix(items[i])] = i;
    }
    std::vector<unsigned> arrivals(n_unordered, 0);
    std::size_t yielded = 0, errors = 0;
    std::size_t chunksize = std::uniform_int_distribution<std::size_t>(1, 8)(random);
    watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: imap_unordered", 180s);
    auto range = pool->imap_unordered(work, items, chunksize);
    for (auto it = range.begin(); it != range.end(); ++it) {
      ++yielded;
      ++tasks;
      try {
        std::uint64_t v = *it;
        auto found = index_of.find(v);
        if (found == index_of.end()) {
          ctx.fail("imap_unordered yielded a value that is no input's result");
        } else if (++arrivals[found->second] > 1) {
          ctx.fail("imap_unordered delivered item " + std::to_string(found->second) + " twice");
          std::lock_guard lock(totals_mutex);
          ++totals.duplicated;
        } else {
          ++values;
        }
      } catch (...) {
        std::string name = error_name(std::current_exception());
        if (name == "WorkerCrashed" && retries == 0) {
          ++crashed;
          ++errors;
        } else {
          ctx.fail("imap_unordered item: " + name + " (" + error_text(std::current_exception()) + ")");
        }
      }
    }
    std::size_t missing = 0;
    for (unsigned a : arrivals) missing += a == 0;
    if (yielded != n_unordered)
      ctx.fail("imap_unordered yielded " + std::to_string(yielded) + " results for " + std::to_string(n_unordered) + " items");
    if (missing != errors) {
      ctx.fail("imap_unordered: " + std::to_string(missing) + " items never delivered but only " +
               std::to_string(errors) + " errors");
      std::lock_guard lock(totals_mutex);
      totals.lost += missing - std::min(missing, errors);
    }
  }
  // The apply_async futures, each read once.
  watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: apply_async futures", 180s);
  std::vector<bool> delivered(n_apply, false);
  for (auto& s : submitted) {
    ++tasks;
    if (!s.future.wait_for(150s)) {
      ctx.fail("apply_async future not ready after 150 s (hang)");
      continue;
    }
    std::exception_ptr error = s.future.exception();
    std::string name = error ? error_name(error) : "";
    switch (s.job) {
      case Job::counted:
        if (!error) {
          std::uint64_t v = s.future.get();
          if (v != mix(input(s.index))) ctx.fail("apply_async task " + std::to_string(s.index) + ": wrong value");
          else ++values, delivered[s.index] = true;
        } else if (name == "WorkerCrashed" && retries == 0) {
          ++crashed;
        } else {
          ctx.fail("apply_async task " + std::to_string(s.index) + ": " + name + " (" + error_text(error) + ")" +
                   (retries ? " although retries remained" : ""));
        }
        break;
      case Job::hang:
        if (name == "WorkerCrashed" && retries && pool->stats().tasks_retried >= retries) {
          ++retries_exhausted;  // a slow task killed more than max_retries times: allowed
        } else if (name == "TaskTimeout") {
          try {
            std::rethrow_exception(error);
          } catch (const mproc::TaskTimeout& e) {
            if (e.limit() != s.timeout) ctx.fail("TaskTimeout carries the wrong limit");
          }
          ++timeouts;
        } else if (name == "WorkerCrashed" && retries == 0) {
          ++crashed;
        } else {
          ctx.fail("a task over its " + std::to_string(s.timeout.count() / 1'000'000) + " ms timeout ended with " +
                   (error ? name + " (" + error_text(error) + ")" : std::string("a value")) +
                   ", not TaskTimeout");
        }
        break;
      case Job::hog:
        if (name == "WorkerCrashed" && retries && pool->stats().tasks_retried >= retries) {
          ++retries_exhausted;
        } else if (name == "MemoryLimitExceeded") {
          ++memory_hits;
        } else if (name == "WorkerCrashed" && retries == 0) {
          ++crashed;
        } else {
          ctx.fail("a task allocating 1 GiB over a 256 MiB limit ended with " +
                   (error ? name + " (" + error_text(error) + ")" : std::string("a value")) +
                   ", not MemoryLimitExceeded");
        }
        break;
    }
  }
  // Executions recorded in shared memory: a delivered task ran; without retries a task
  // never runs twice; with them, at most 1 + max_retries times.
  for (std::uint32_t i = 0; i < n_apply; ++i) {
    std::uint32_t runs = std::atomic_ref<std::uint32_t>(reinterpret_cast<std::uint32_t*>(counters.data())[i]).load();
    if (delivered[i] && runs == 0) ctx.fail("task " + std::to_string(i) + " delivered a value but never ran");
    if (retries == 0 && runs > 1) {
      ctx.fail("task " + std::to_string(i) + " ran " + std::to_string(runs) + " times without retries");
      std::lock_guard lock(totals_mutex);
      ++totals.duplicated;
    }
    if (runs > 1 + retries) ctx.fail("task " + std::to_string(i) + " ran " + std::to_string(runs) + " times");
  }

  watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: stopping the chaos", 60s);
  chaos.stop();
  auto stats = pool->stats();
  if (!ctx.failures.empty())
    std::fprintf(stderr, "round %u pool stats: done %llu failed %llu retried %llu timed_out %llu started %llu died %llu recycled %llu\n",
                 ctx.round, (unsigned long long)stats.tasks_done, (unsigned long long)stats.tasks_failed,
                 (unsigned long long)stats.tasks_retried, (unsigned long long)stats.tasks_timed_out,
                 (unsigned long long)stats.workers_started, (unsigned long long)stats.workers_died,
                 (unsigned long long)stats.workers_recycled);
  if (stats.tasks_timed_out != timeouts)
    ctx.fail("stats().tasks_timed_out is " + std::to_string(stats.tasks_timed_out) + " but " +
             std::to_string(timeouts) + " futures failed with TaskTimeout");
  // A healthy pool after the chaos: one more of each kind of call.
  watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: after the chaos", 120s);
  try {
    if (pool->apply(work, input(7)) != mix(input(7))) ctx.fail("apply after the chaos: wrong value");
    auto after = pool->map(work, std::vector<std::uint64_t>{input(1), input(2), input(3)});
    if (after != std::vector<std::uint64_t>{mix(input(1)), mix(input(2)), mix(input(3))})
      ctx.fail("map after the chaos: wrong values");
  } catch (const std::exception& e) {
    ctx.fail(std::string("the pool is unusable after the chaos: ") + e.what());
  }
  watchdog->arm("round " + std::to_string(ctx.round) + " pool phase: destroying the pool (close + join)", 120s);
  pool.reset();
  add_chaos_counts(chaos, seen);
  std::lock_guard lock(totals_mutex);
  totals.tasks += tasks;
  totals.values += values;
  totals.crashed += crashed;
  totals.timeouts += timeouts;
  totals.memory_limit += memory_hits;
  totals.retries_exhausted += retries_exhausted;
  totals.retried += stats.tasks_retried;
  totals.workers_started += stats.workers_started;
}

// ---------------------------------------------------------------------------------------
// IPC phase: queues and pipes

// Shared counters of the ipc phase, in one anonymous segment:
//   [0, P)          attempt[p]: the seq producer p is putting (written before put)
//   [P, 2P)         acked[p]: how many puts of producer p returned
//   [2P]            stop flag for consumers
//   [2P + 1]        torn or malformed items seen by consumers
//   [2P + 2, ...)   received[p * N + seq]: how many times consumers got that item
struct IpcLayout {
  std::uint32_t producers, items;
  std::size_t bytes() const { return (2 * producers + 2 + std::size_t{producers} * items) * sizeof(std::uint32_t); }
};

std::atomic_ref<std::uint32_t> slot(const mproc::SharedMemory& shm, std::size_t i) {
  return std::atomic_ref<std::uint32_t>(reinterpret_cast<std::uint32_t*>(shm.data())[i]);
}

// An item: [producer << 32 | seq, then a pattern derived from it]; its length varies, so
// some items are large enough to be copied while a kill lands.
std::vector<std::uint64_t> make_item(std::uint32_t producer, std::uint32_t seq, std::size_t words) {
  std::vector<std::uint64_t> item(std::max<std::size_t>(1, words));
  item[0] = std::uint64_t{producer} << 32 | seq;
  for (std::size_t k = 1; k < item.size(); ++k) item[k] = mix(item[0] + k);
  return item;
}
bool item_intact(const std::vector<std::uint64_t>& item) {
  if (item.empty()) return false;
  for (std::size_t k = 1; k < item.size(); ++k)
    if (item[k] != mix(item[0] + k)) return false;
  return true;
}
std::size_t item_words(std::uint32_t producer, std::uint32_t seq) {
  std::uint64_t r = mix(std::uint64_t{producer} << 32 | seq);
  return r % 16 == 0 ? 1 + r % 4000 : 1 + r % 40;  // mostly small, some ~32 KiB
}

template <class Q>
void producer_main(Q queue, mproc::SharedMemory shm, std::uint32_t producers, std::uint32_t producer,
                   std::uint32_t items) {
  for (std::uint32_t seq = 0; seq < items; ++seq) {
    (void)work(seq);
    slot(shm, producer).store(seq);
    queue.put(make_item(producer, seq, item_words(producer, seq)), std::chrono::seconds(120));
    slot(shm, producers + producer).store(seq + 1);
  }
}

template <class Q>
void consumer_main(Q queue, mproc::SharedMemory shm, std::uint32_t producers, std::uint32_t items,
                   bool joinable) {
  for (;;) {
    std::optional<std::vector<std::uint64_t>> item;
    try {
      item = queue.get(std::chrono::milliseconds(50));
    } catch (const mproc::Empty&) {
      if (slot(shm, 2 * producers).load()) return;
      continue;
    }
    (void)work((*item)[0]);
    std::uint32_t p = static_cast<std::uint32_t>((*item)[0] >> 32), seq = static_cast<std::uint32_t>((*item)[0]);
    if (!item_intact(*item) || p >= producers || seq >= items || item->size() != item_words(p, seq))
      slot(shm, 2 * producers + 1).fetch_add(1);
    else
      slot(shm, 2 * producers + 2 + std::size_t{p} * items + seq).fetch_add(1);
    if constexpr (requires { queue.task_done(); }) {
      if (joinable) queue.task_done();
    }
  }
}

void sender_main(mproc::Connection conn, mproc::SharedMemory shm, std::uint32_t sender, std::uint32_t messages) {
  for (std::uint32_t seq = 0; seq < messages; ++seq) {
    (void)work(seq);
    slot(shm, 2 * sender).store(seq);
    // Some messages span several 256 KiB records, so a kill can land between two of them.
    std::uint64_t r = mix(std::uint64_t{sender} << 32 | seq);
    std::size_t words = r % 8 == 0 ? 20'000 + r % 80'000 : 1 + r % 100;
    conn.send(make_item(sender, seq, words), std::chrono::seconds(120));
    slot(shm, 2 * sender + 1).store(seq + 1);
  }
}

struct Tracked {
  std::optional<mproc::Process> process;  // reset once a sender has ended (see below)
  Kind kind;
  std::uint32_t index;
};

// Waits for one of `processes` to end (pidfds), at most `timeout`.
void wait_any(std::vector<Tracked>& processes, std::chrono::milliseconds timeout) {
  std::vector<pollfd> fds;
  for (auto& t : processes)
    if (t.process && !t.process->exitcode()) fds.push_back({t.process->sentinel(), POLLIN, 0});
  ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
}

template <class Q>
void ipc_phase_with(RoundContext& ctx, const Config& config, std::mt19937_64& random,
                    std::map<pid_t, unsigned long long>& seen, bool joinable) {
  using mproc::StartMethod;
  const StartMethod methods[] = {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn};
  const StartMethod method = methods[(ctx.round + 1) % 3];
  // 3 producers at a time; a killed one is replaced by a fresh producer (a new index with
  // its own items) while indices remain, so the queue has traffic for the whole phase.
  const std::uint32_t producers = 12, live_producers = 3, consumers = 2, senders = 2;
  const std::uint32_t items = static_cast<std::uint32_t>(scaled(700, config));
  const std::uint32_t messages = static_cast<std::uint32_t>(scaled(250, config));
  const std::size_t maxsize = std::vector<std::size_t>{0, 4, 64}[random() % 3];
  const std::size_t capacity = std::vector<std::size_t>{std::size_t{64} << 10, std::size_t{1} << 20}[random() % 2];
  ctx.label = "seed " + std::to_string(ctx.seed) + ", " + (joinable ? "JoinableQueue" : "Queue") +
              " maxsize " + std::to_string(maxsize) + " capacity " + std::to_string(capacity >> 10) +
              " KiB, processes by " + mproc::to_string(method);
  if (!config.quiet) std::printf("round %u: %s\n", ctx.round, ctx.label.c_str()), std::fflush(stdout);

  IpcLayout layout{producers, items};
  mproc::SharedMemory shm = mproc::SharedMemory::create(layout.bytes());
  mproc::SharedMemory pipe_shm = mproc::SharedMemory::create(2 * senders * sizeof(std::uint32_t));
  std::optional<Q> queue;
  queue.emplace(mproc::QueueOptions{.maxsize = maxsize, .capacity_bytes = capacity});
  const mproc::ProcessOptions options{.start_method = method};

  std::mutex live_mutex;
  std::vector<Target> live;  // what the chaos thread may hit
  std::vector<Tracked> tracked;
  auto publish = [&] {
    std::lock_guard lock(live_mutex);
    live.clear();
    for (auto& t : tracked)
      if (t.process && !t.process->exitcode()) live.push_back({t.process->pid(), t.kind});
  };
  auto start_consumer = [&](std::uint32_t index) {
    tracked.push_back({mproc::Process(options, consumer_main<Q>, *queue, shm, producers, items, joinable),
                       Kind::consumer, index});
    tracked.back().process->start();
  };

  watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: starting processes", 120s);
  std::uint32_t next_producer = 0;
  auto start_producer = [&] {
    std::uint32_t p = next_producer++;
    tracked.push_back({mproc::Process(options, producer_main<Q>, *queue, shm, producers, p, items), Kind::producer, p});
    tracked.back().process->start();
  };
  for (std::uint32_t p = 0; p < live_producers; ++p) start_producer();
  for (std::uint32_t c = 0; c < consumers; ++c) start_consumer(c);
  std::vector<mproc::Connection> receivers;
  for (std::uint32_t s = 0; s < senders; ++s) {
    auto [receive_end, send_end] = mproc::Pipe(false);
    receivers.push_back(std::move(receive_end));
    tracked.push_back({mproc::Process(options, sender_main, std::move(send_end), pipe_shm, s, messages), Kind::sender, s});
    tracked.back().process->start();
  }
  publish();
  Chaos chaos(random(), ChaosOptions{.min_gap = 5ms, .max_gap = 40ms, .kill_probability = 0.4}, [&] {
    std::lock_guard lock(live_mutex);
    return live;
  });

  // The pipes' receiver: this thread, beside the queue supervision below.
  std::vector<std::vector<std::uint32_t>> got(senders);
  std::vector<std::string> pipe_errors;
  std::atomic<bool> pipes_done{false};
  std::vector<bool> pipe_open(senders, true);
  std::thread receiver([&] {
    while (std::any_of(pipe_open.begin(), pipe_open.end(), [](bool b) { return b; })) {
      std::vector<pollfd> fds;
      std::vector<std::uint32_t> which;
      for (std::uint32_t s = 0; s < senders; ++s)
        if (pipe_open[s]) fds.push_back({receivers[s].fileno(), POLLIN, 0}), which.push_back(s);
      ::poll(fds.data(), fds.size(), 100);
      for (std::size_t k = 0; k < fds.size(); ++k) {
        if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        std::uint32_t s = which[k];
        try {
          auto message = receivers[s].template recv<std::vector<std::uint64_t>>(std::chrono::milliseconds(20));
          std::uint32_t from = static_cast<std::uint32_t>(message[0] >> 32), seq = static_cast<std::uint32_t>(message[0]);
          if (!item_intact(message) || from != s) pipe_errors.push_back("pipe " + std::to_string(s) + ": a torn or foreign message");
          else if (seq != got[s].size())
            pipe_errors.push_back("pipe " + std::to_string(s) + ": message " + std::to_string(seq) + " arrived after " +
                                  std::to_string(got[s].size()) + " messages (lost, duplicated or reordered)");
          got[s].push_back(seq);
        } catch (const mproc::TimeoutError&) {
          // A large message still arriving: continue with it next time.
        } catch (const mproc::EOFError&) {
          pipe_open[s] = false;  // the sender ended (or died mid-message: the part was dropped)
        } catch (const std::exception& e) {
          pipe_errors.push_back("pipe " + std::to_string(s) + ": " + e.what());
          pipe_open[s] = false;
        }
      }
    }
    pipes_done = true;
  });

  // Supervise: replace killed consumers so the producers can finish; release each sender's
  // end of its pipe once the sender has ended, so that the receiver sees EOF.
  watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: producers and senders running", 240s);
  std::set<std::size_t> handled;
  std::map<std::uint32_t, int> sender_code;
  for (;;) {
    bool running = false, changed = false;
    for (std::size_t i = 0; i < tracked.size() && !changed; ++i) {
      auto& t = tracked[i];
      if (!t.process) continue;
      auto code = t.process->exitcode();
      if (!code && t.kind != Kind::consumer) running = true;
      if (!code || handled.count(i)) continue;
      if (t.kind == Kind::sender) {
        handled.insert(i);
        sender_code[t.index] = *code;
        t.process.reset();  // drops this process's copy of the send end: the receiver sees EOF
      } else if (t.kind == Kind::consumer && *code != 0) {
        handled.insert(i);
        start_consumer(t.index);  // invalidates t
        changed = true;
      } else if (t.kind == Kind::producer && *code != 0) {
        handled.insert(i);
        if (next_producer < producers) {
          start_producer();  // invalidates t
          changed = true;
        }
      }
    }
    publish();
    if (changed) continue;
    if (!running) break;
    wait_any(tracked, 50ms);
  }
  watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: stopping the chaos", 60s);
  chaos.stop();
  // Consumers drain what is left, then stop.
  watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: consumers draining", 120s);
  for (;;) {
    bool empty = queue->qsize() == 0;
    if (empty) break;
    bool consumer_alive = false;
    for (auto& t : tracked)
      if (t.kind == Kind::consumer && t.process && !t.process->exitcode()) consumer_alive = true;
    if (!consumer_alive) break;
    wait_any(tracked, 20ms);
  }
  slot(shm, 2 * producers).store(1);
  for (auto& t : tracked) {
    if (t.process && !t.process->join(120s)) ctx.fail(std::string(kind_name(t.kind)) + " did not end within 120 s");
  }
  watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: pipe receiver", 120s);
  receiver.join();
  for (auto& e : pipe_errors) ctx.fail(e);

  // This process drains the queue and shows that it is still usable.
  std::uint32_t parent_got = 0;
  while (auto item = queue->try_get()) {
    std::uint32_t p = static_cast<std::uint32_t>((*item)[0] >> 32), seq = static_cast<std::uint32_t>((*item)[0]);
    if (!item_intact(*item) || p >= producers || seq >= items) slot(shm, 2 * producers + 1).fetch_add(1);
    else slot(shm, 2 * producers + 2 + std::size_t{p} * items + seq).fetch_add(1);
    ++parent_got;
    if constexpr (requires { queue->task_done(); }) queue->task_done();
  }
  try {
    queue->put(make_item(producers, 0, 3), 10s);
    auto back = queue->get(10s);
    if (back != make_item(producers, 0, 3)) ctx.fail("the queue returned a different item after the chaos");
    if constexpr (requires { queue->task_done(); }) queue->task_done();
  } catch (const std::exception& e) {
    ctx.fail(std::string("the queue is unusable after the chaos: ") + e.what());
  }

  // Attribute every outcome to a process's fate.
  std::map<std::pair<Kind, std::uint32_t>, int> last_code;  // producers and senders: one each
  for (auto& t : tracked)
    if (t.kind == Kind::producer) last_code[{t.kind, t.index}] = t.process->exitcode().value_or(0);
  std::uint32_t consumers_killed = 0;
  for (auto& t : tracked) {
    if (t.kind != Kind::consumer) continue;
    int code = t.process->exitcode().value_or(0);
    if (code == -SIGKILL) ++consumers_killed;
    else if (code != 0) ctx.fail("a consumer ended with " + std::to_string(code) + " without being killed");
  }
  std::uint64_t lost_to_consumers = 0, lost_with_producer = 0, acked_total = 0, received_total = 0;
  if (std::uint32_t torn = slot(shm, 2 * producers + 1).load()) ctx.fail(std::to_string(torn) + " torn or malformed queue items");
  for (std::uint32_t p = 0; p < producers; ++p) {
    std::uint32_t attempt = slot(shm, p).load(), acked = slot(shm, producers + p).load();
    if (p >= next_producer) {  // never started: nothing of it may arrive
      for (std::uint32_t seq = 0; seq < items; ++seq)
        if (slot(shm, 2 * producers + 2 + std::size_t{p} * items + seq).load() != 0)
          ctx.fail("an item of producer " + std::to_string(p) + ", which never ran, arrived");
      continue;
    }
    int code = last_code[{Kind::producer, p}];
    bool killed = code == -SIGKILL;
    if (!killed && code != 0) ctx.fail("producer " + std::to_string(p) + " ended with " + std::to_string(code));
    if (!killed && acked != items)
      ctx.fail("producer " + std::to_string(p) + " was not killed but acknowledged only " + std::to_string(acked) + " puts");
    acked_total += acked;
    for (std::uint32_t seq = 0; seq < items; ++seq) {
      std::uint32_t n = slot(shm, 2 * producers + 2 + std::size_t{p} * items + seq).load();
      received_total += n;
      if (n > 1) {
        ctx.fail("item " + std::to_string(seq) + " of producer " + std::to_string(p) + " arrived " + std::to_string(n) + " times");
        std::lock_guard lock(totals_mutex);
        totals.duplicated += n - 1;
      }
      if (seq < acked) {
        if (n == 0) ++lost_to_consumers;
      } else if (seq == acked && killed && attempt == acked) {
        if (n == 0) ++lost_with_producer;  // its put was interrupted: either outcome is right
      } else if (n != 0) {
        ctx.fail("item " + std::to_string(seq) + " of producer " + std::to_string(p) +
                 " arrived although its put never started (attempt " + std::to_string(attempt) + ", acked " +
                 std::to_string(acked) + ")");
      }
    }
  }
  // An acknowledged item may be missing only because a consumer was killed after taking it
  // and before recording it: at most one per killed consumer.
  if (lost_to_consumers > consumers_killed) {
    ctx.fail(std::to_string(lost_to_consumers) + " acknowledged items never arrived, but only " +
             std::to_string(consumers_killed) + " consumers were killed (at most one item each may be lost)");
    std::lock_guard lock(totals_mutex);
    totals.lost += lost_to_consumers - consumers_killed;
  }
  // JoinableQueue: with no consumer killed, every item is done.
  if constexpr (requires { queue->join(1s); }) {
    if (consumers_killed == 0) {
      watchdog->arm("round " + std::to_string(ctx.round) + " ipc phase: JoinableQueue::join", 120s);
      if (!queue->join(60s)) ctx.fail("JoinableQueue::join did not return although no consumer was killed");
    }
  }
  // Pipes: every acknowledged message arrived, in order (checked as they arrived); only a
  // sender killed mid-send may have lost the message it was sending.
  std::uint64_t messages_received = 0;
  for (std::uint32_t s = 0; s < senders; ++s) {
    std::uint32_t attempt = slot(pipe_shm, 2 * s).load(), acked = slot(pipe_shm, 2 * s + 1).load();
    std::size_t n = got[s].size();
    messages_received += n;
    int code = sender_code.count(s) ? sender_code[s] : 0;
    bool killed = code == -SIGKILL;
    if (!killed && code != 0) ctx.fail("sender " + std::to_string(s) + " ended with " + std::to_string(code));
    // Killed after its ack store and before the next attempt store: attempt == acked - 1.
    bool complete = acked == messages && n == messages;
    bool interrupted = killed && (n == acked || (attempt == acked && n == acked + 1));
    if (!complete && !interrupted)
      ctx.fail("pipe " + std::to_string(s) + ": " + std::to_string(n) + " messages received, sender acknowledged " +
               std::to_string(acked) + " of " + std::to_string(messages) + " (attempt " + std::to_string(attempt) + ")");
  }
  (void)parent_got;
  queue.reset();
  receivers.clear();
  tracked.clear();
  add_chaos_counts(chaos, seen);
  std::lock_guard lock(totals_mutex);
  totals.items_acked += acked_total;
  totals.items_received += received_total;
  totals.items_lost_to_killed_consumer += lost_to_consumers;
  totals.items_lost_with_killed_producer += lost_with_producer;
  totals.messages += messages_received;
}

// ---------------------------------------------------------------------------------------
// Leftovers

void check_leftovers(RoundContext& ctx, const std::map<pid_t, unsigned long long>& seen,
                     const std::map<int, std::string>& fds_before, const std::set<std::string>& shm_before) {
  watchdog->arm("round " + std::to_string(ctx.round) + " leftover check", 60s);
  mproc::detail::stop_forkserver();
  const pid_t self = ::getpid();
  // Generous: a process just killed needs a moment to be reaped. Only a condition is
  // awaited; nothing is assumed to have happened after a delay.
  auto deadline = Clock::now() + 20s;
  std::vector<std::string> problems;
  for (;;) {
    problems.clear();
    auto table = process_table();
    for (pid_t pid : descendants_in(table, self))
      problems.push_back("process " + std::to_string(pid) + " (state " + table[pid].state + ", parent " +
                         std::to_string(table[pid].ppid) + ") is still below this one" +
                         (table[pid].state == 'Z' ? " as a zombie" : ""));
    for (auto& [pid, start] : seen) {
      auto it = table.find(pid);
      if (it == table.end() || it->second.start != start) continue;  // gone (or a new process)
      if (it->second.ppid == self) continue;                           // reported above
      if (it->second.state == 'Z') continue;  // an orphan ended; reaping it is init's job
      problems.push_back("process " + std::to_string(pid) + " of this round is still alive (state " +
                         it->second.state + (it->second.state == 'T' ? ", stopped" : "") + ", parent " +
                         std::to_string(it->second.ppid) + ")");
    }
    auto shm = shm_entries();
    for (auto& name : shm)
      if (!shm_before.count(name)) problems.push_back("/dev/shm/" + name + " is new");
    auto fds = open_fds();
    for (auto& [fd, target] : fds)
      if (!fds_before.count(fd)) problems.push_back("descriptor " + std::to_string(fd) + " (" + target + ") leaked");
    if (problems.empty() || Clock::now() > deadline) break;
    std::this_thread::sleep_for(10ms);
  }
  for (auto& p : problems) ctx.fail(p);
  if (!problems.empty()) {
    std::lock_guard lock(totals_mutex);
    totals.left_behind += problems.size();
    for (pid_t pid : descendants_in(process_table(), self)) ::kill(pid, SIGCONT), ::kill(pid, SIGKILL);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
}

// ---------------------------------------------------------------------------------------

std::uint64_t parse_u64(const char* text, const char* what) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 0);
  if (errno || !end || *end != '\0') {
    std::fprintf(stderr, "mproc_chaos: bad %s '%s'\n", what, text);
    std::exit(2);
  }
  return v;
}

void print_summary(std::uint64_t seed, double seconds) {
  std::lock_guard lock(totals_mutex);
  const Totals& t = totals;
  std::printf(
      "chaos summary: seed=%llu rounds=%llu seconds=%.0f kills_worker=%llu kills_zygote=%llu "
      "kills_forkserver=%llu kills_producer=%llu kills_consumer=%llu kills_sender=%llu stops=%llu "
      "tasks=%llu values=%llu worker_crashed=%llu timeouts=%llu memory_limit=%llu retried=%llu "
      "retries_exhausted=%llu "
      "workers_started=%llu queue_items_acked=%llu queue_items_received=%llu "
      "lost_to_killed_consumer=%llu lost_in_killed_put=%llu pipe_messages=%llu "
      "lost=%llu duplicated=%llu left_behind=%llu failures=%llu\n",
      (unsigned long long)seed, (unsigned long long)t.rounds, seconds, (unsigned long long)t.kills_worker,
      (unsigned long long)t.kills_zygote, (unsigned long long)t.kills_forkserver,
      (unsigned long long)t.kills_producer, (unsigned long long)t.kills_consumer,
      (unsigned long long)t.kills_sender, (unsigned long long)t.stops, (unsigned long long)t.tasks,
      (unsigned long long)t.values, (unsigned long long)t.crashed, (unsigned long long)t.timeouts,
      (unsigned long long)t.memory_limit, (unsigned long long)t.retried, (unsigned long long)t.retries_exhausted, (unsigned long long)t.workers_started,
      (unsigned long long)t.items_acked, (unsigned long long)t.items_received,
      (unsigned long long)t.items_lost_to_killed_consumer, (unsigned long long)t.items_lost_with_killed_producer,
      (unsigned long long)t.messages, (unsigned long long)t.lost, (unsigned long long)t.duplicated,
      (unsigned long long)t.left_behind, (unsigned long long)t.failures);
  std::fflush(stdout);
}

// Creates the library's lazily made process-wide state (the forkserver's first start, the
// spawn path, ...) once, so that it is not mistaken for a leak of the first round.
void warm_up() {
  for (auto method : {mproc::StartMethod::fork, mproc::StartMethod::forkserver, mproc::StartMethod::spawn}) {
    mproc::Pool pool(mproc::PoolOptions{.processes = 1, .start_method = method});
    (void)pool.apply(work, std::uint64_t{1});
  }
  mproc::Queue<std::vector<std::uint64_t>> queue;
  queue.put({1});
  (void)queue.get();
  auto [a, b] = mproc::Pipe();
  a.send(std::vector<std::uint64_t>{1});
  (void)b.recv<std::vector<std::uint64_t>>();
  mproc::detail::stop_forkserver();
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  double seconds = 0;
  std::uint64_t rounds = 0;
  std::optional<std::uint64_t> seed, only_round;
  Config config;
  if (const char* env = std::getenv("CHAOS_SECONDS")) seconds = std::atof(env);
  if (const char* env = std::getenv("CHAOS_ROUNDS")) rounds = parse_u64(env, "CHAOS_ROUNDS");
  if (const char* env = std::getenv("CHAOS_SEED")) seed = parse_u64(env, "CHAOS_SEED");
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "mproc_chaos: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--seconds") seconds = std::atof(value());
    else if (arg == "--rounds") rounds = parse_u64(value(), "--rounds");
    else if (arg == "--seed") seed = parse_u64(value(), "--seed");
    else if (arg == "--only-round") only_round = parse_u64(value(), "--only-round");
    else if (arg == "--processes") config.max_processes = static_cast<unsigned>(parse_u64(value(), "--processes"));
    else if (arg == "--scale") config.scale = std::atof(value());
    else if (arg == "--quiet") config.quiet = true;
    else if (arg == "--kill-young") config.min_kill_age = 0ms;
    else if (arg == "--min-kill-age") config.min_kill_age = std::chrono::milliseconds(parse_u64(value(), "--min-kill-age"));
    else {
      std::fprintf(stderr,
                   "usage: %s [--seconds S] [--rounds N] [--seed X] [--only-round K] [--processes P] "
                   "[--scale F] [--quiet] [--min-kill-age MS | --kill-young]\n",
                   argv[0]);
      return 2;
    }
  }
  if (seconds <= 0 && rounds == 0) rounds = 12;
  if (!seed) seed = std::random_device{}() ^ (std::uint64_t{std::random_device{}()} << 32);
  std::printf("mproc_chaos: seed %llu (replay a round: --seed %llu --only-round K)\n", (unsigned long long)*seed,
              (unsigned long long)*seed);
  std::fflush(stdout);

  Watchdog dog;
  watchdog = &dog;
  warm_up();
  const auto begin = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - begin).count(); };
  bool failed = false;
  for (std::uint64_t round = only_round.value_or(0);; ++round) {
    if (only_round && round != *only_round) break;
    if (!only_round) {
      if (rounds && round >= rounds) break;
      if (seconds > 0 && elapsed() >= seconds) break;
    }
    RoundContext ctx;
    ctx.round = static_cast<unsigned>(round);
    ctx.seed = mix(*seed + round);
    std::mt19937_64 random(ctx.seed);
    auto fds_before = open_fds();
    auto shm_before = shm_entries();
    std::map<pid_t, unsigned long long> seen;
    try {
      pool_phase(ctx, config, random, seen);
      check_leftovers(ctx, seen, fds_before, shm_before);
      seen.clear();
      if (round % 2 == 0)
        ipc_phase_with<mproc::Queue<std::vector<std::uint64_t>>>(ctx, config, random, seen, false);
      else
        ipc_phase_with<mproc::JoinableQueue<std::vector<std::uint64_t>>>(ctx, config, random, seen, true);
      check_leftovers(ctx, seen, fds_before, shm_before);
    } catch (const std::exception& e) {
      ctx.fail(std::string("unexpected exception: ") + e.what());
    }
    watchdog->disarm();
    {
      std::lock_guard lock(totals_mutex);
      ++totals.rounds;
      totals.failures += ctx.failures.size();
    }
    if (!ctx.failures.empty()) {
      failed = true;
      std::fprintf(stderr, "round %llu failed; replay with: --seed %llu --only-round %llu\n",
                   (unsigned long long)round, (unsigned long long)*seed, (unsigned long long)round);
      break;
    }
  }
  print_summary(*seed, elapsed());
  watchdog = nullptr;
  return failed ? 1 : 0;
}
