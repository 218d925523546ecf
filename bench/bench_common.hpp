// bench/bench_common.hpp — what every benchmark program of bench/ shares: quick mode, latency
// percentiles reported as counters, a calibrated CPU-bound workload, and reading the cost of
// other processes (CPU time, RSS, USS) from /proc.
#pragma once

#include <benchmark/benchmark.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mproc/pool.hpp"
#include "proc_stats.hpp"

namespace bench {

using Clock = std::chrono::steady_clock;

/// True under `scripts/bench --quick` (MPROC_BENCH_QUICK=1): smaller sizes, shorter waits.
inline bool quick() {
  static const bool value = [] {
    const char* q = std::getenv("MPROC_BENCH_QUICK");
    return q != nullptr && *q != '\0' && *q != '0';
  }();
  return value;
}

/// `full` normally, `small` in quick mode.
template <class T>
T sized(T full, T small) {
  return quick() ? small : full;
}

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Per-iteration durations, reported as p50/p99 counters (in µs). Google Benchmark's own time
/// is a mean over the iterations, which one preempted iteration drags up on a loaded machine.
class Latencies {
 public:
  void add(double seconds) { samples_.push_back(seconds); }

  double percentile(double p) const {
    if (samples_.empty()) return 0;
    std::vector<double> sorted = samples_;
    std::sort(sorted.begin(), sorted.end());
    auto index = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(index, sorted.size() - 1)];
  }

  /// Sets `<prefix>p50_us` and `<prefix>p99_us`.
  void report(benchmark::State& state, const std::string& prefix = "") const {
    state.counters[prefix + "p50_us"] = percentile(0.50) * 1e6;
    state.counters[prefix + "p99_us"] = percentile(0.99) * 1e6;
  }

 private:
  std::vector<double> samples_;
};

// ---------------------------------------------------------------- a CPU-bound task

/// Burns CPU for `iterations` rounds of xorshift (a dependency chain the compiler cannot fold).
[[gnu::noinline]] inline std::uint64_t burn(std::uint64_t iterations) {
  std::uint64_t x = 0x9E3779B97F4A7C15ull ^ iterations;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

/// Rounds of burn() that take `micros` µs on this machine: the best of several tries, so that
/// a preemption during calibration does not shrink the task.
inline std::uint64_t iterations_for(double micros) {
  static const double rounds_per_us = [] {
    constexpr std::uint64_t probe = 1u << 20;
    double best = 1e9;
    for (int i = 0; i < 7; ++i) {
      auto start = Clock::now();
      benchmark::DoNotOptimize(burn(probe));
      best = std::min(best, seconds_since(start));
    }
    return static_cast<double>(probe) / (best * 1e6);
  }();
  return static_cast<std::uint64_t>(rounds_per_us * micros);
}

// ---------------------------------------------------------------- other processes, from /proc

/// Fields of /proc/<pid>/stat after the command name (field 3 is element 0).
inline std::vector<std::string> stat_fields(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> fields;
  auto close = line.rfind(')');
  if (close == std::string::npos) return fields;
  std::istringstream rest(line.substr(close + 2));
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;
}

/// Every live descendant of `root` (children, their children, ...).
inline std::vector<pid_t> descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  if (DIR* dir = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(dir)) {
      char* end = nullptr;
      long pid = std::strtol(entry->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      auto fields = stat_fields(static_cast<pid_t>(pid));
      if (fields.size() > 1) parent_of.emplace_back(static_cast<pid_t>(pid), std::stoi(fields[1]));
    }
    ::closedir(dir);
  }
  std::vector<pid_t> found;
  std::set<pid_t> frontier = {root};
  while (!frontier.empty()) {
    std::set<pid_t> next;
    for (auto [pid, ppid] : parent_of)
      if (frontier.count(ppid)) next.insert(pid);
    found.insert(found.end(), next.begin(), next.end());
    frontier = std::move(next);
  }
  return found;
}

/// utime + stime of a process (all its threads), in seconds; 0 when it is gone.
inline double cpu_seconds_of(pid_t pid) {
  auto fields = stat_fields(pid);
  if (fields.size() < 13) return 0;
  // utime and stime are fields 14 and 15 of stat: elements 11 and 12 here.
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// CPU time (user + system) of this whole process, every thread, in seconds.
inline double own_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto tv = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
  };
  return tv(usage.ru_utime) + tv(usage.ru_stime);
}

// ---------------------------------------------------------------- pool helpers

/// A task that answers with the pid of the worker running it, after a short nap so that
/// concurrent calls land on different workers.
inline int worker_pid_after(int nap_ms) {
  ::usleep(static_cast<useconds_t>(nap_ms) * 1000);
  return static_cast<int>(::getpid());
}

/// The pids of a pool's workers: as many concurrent naps as workers, until each answered.
inline std::vector<pid_t> worker_pids(mproc::Pool& pool) {
  std::set<pid_t> pids;
  for (int attempt = 0; attempt < 50 && pids.size() < pool.processes(); ++attempt) {
    std::vector<mproc::Future<int>> naps;
    for (unsigned i = 0; i < pool.processes(); ++i)
      naps.push_back(pool.apply_async(worker_pid_after, 30));
    for (auto& nap : naps) pids.insert(nap.get());
  }
  return {pids.begin(), pids.end()};
}

// ---------------------------------------------------------------- MPI programs

/// Not under mpirun: runs this program again as `mpirun -np 3 <it> <args>`, with the Open MPI
/// settings of docs/mpi.md (those already set are kept). Never returns.
inline void relaunch_under_mpirun(int argc, char** argv) {
  for (const char* setting : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                              "OMPI_MCA_rmaps_base_oversubscribe=1", "OMPI_MCA_hwloc_base_binding_policy=none",
                              "OMPI_MCA_mpi_yield_when_idle=1", "OMPI_MCA_btl_tcp_if_include=lo",
                              "OMPI_MCA_oob_tcp_if_include=lo"}) {
    std::string s = setting;
    auto eq = s.find('=');
    ::setenv(s.substr(0, eq).c_str(), s.substr(eq + 1).c_str(), 0);
  }
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) std::exit(2);
  self[n] = '\0';
  std::vector<char*> args = {const_cast<char*>("mpirun"), const_cast<char*>("-np"), const_cast<char*>("3"), self};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execvp("mpirun", args.data());
  std::perror("cannot run mpirun");
  std::exit(2);
}


}  // namespace bench
