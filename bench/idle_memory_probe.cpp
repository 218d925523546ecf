// bench/idle_memory_probe.cpp — figure 9's measurement, run by BM_pool_idle_memory
// (bench_process) as `idle_memory_probe M`: builds a Pool(2) under start method M, lets it go
// idle and prints the RSS and USS of its workers and this process's RSS growth per worker.
//
// A program of its own, linked with mproc only: its workers (a spawned worker is a fresh exec
// of this program) then hold what a user's program would, not the benchmark harness's
// libraries. It runs in a fresh process, so that no earlier benchmark's memory counts.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "mproc/pool.hpp"
#include "proc_stats.hpp"

namespace {

int add_one(int x) {
  return x + 1;
}

struct MemoryFigures {
  double worker_rss_kib = 0, worker_uss_kib = 0, worker_rss_max_kib = 0, worker_uss_max_kib = 0;
  double workers_seen = 0, parent_rss_kib = 0, parent_rss_per_worker_kib = 0,
         name_lookup_rss_kib = 0;
};

// Runs in a fresh process. The tasks are captureless lambdas, whose names cost
// nothing; naming a function pointer is measured last, on its own (name_lookup_rss_kib).
MemoryFigures measure_idle_memory(mproc::StartMethod method) {
  constexpr unsigned workers = 2;
  MemoryFigures m;
  double parent_before = bench::rss_kib(::getpid());
  mproc::Pool pool(mproc::PoolOptions{.processes = workers, .start_method = method});
  for (int i = 0; i < 100; ++i) pool.apply([](int x) { return x + 1; }, i);
  std::set<pid_t> pids;
  for (int attempt = 0; attempt < 50 && pids.size() < workers; ++attempt) {
    std::vector<mproc::Future<int>> naps;
    for (unsigned i = 0; i < workers; ++i)
      naps.push_back(pool.apply_async(
          [](int ms) {
            ::usleep(static_cast<useconds_t>(ms) * 1000);
            return static_cast<int>(::getpid());
          },
          30));
    for (auto& nap : naps) pids.insert(nap.get());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (pid_t pid : pids) {
    double r = bench::rss_kib(pid), u = bench::uss_kib(pid);
    m.worker_rss_kib += r / static_cast<double>(pids.size());
    m.worker_uss_kib += u / static_cast<double>(pids.size());
    m.worker_rss_max_kib = std::max(m.worker_rss_max_kib, r);
    m.worker_uss_max_kib = std::max(m.worker_uss_max_kib, u);
  }
  m.workers_seen = static_cast<double>(pids.size());
  m.parent_rss_kib = bench::rss_kib(::getpid());
  m.parent_rss_per_worker_kib = (m.parent_rss_kib - parent_before) / workers;
  pool.apply(add_one, 0);  // the first function pointer this process names
  m.name_lookup_rss_kib = bench::rss_kib(::getpid()) - m.parent_rss_kib;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: idle_memory_probe START_METHOD (0 fork, 1 forkserver, 2 spawn)\n");
    return 2;
  }
  MemoryFigures m = measure_idle_memory(static_cast<mproc::StartMethod>(std::atoi(argv[1])));
  std::printf("%.0f %.0f %.0f %.0f %.0f %.0f %.1f %.0f\n", m.worker_rss_kib, m.worker_uss_kib,
              m.worker_rss_max_kib, m.worker_uss_max_kib, m.workers_seen, m.parent_rss_kib,
              m.parent_rss_per_worker_kib, m.name_lookup_rss_kib);
  return 0;
}
