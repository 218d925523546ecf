// bench/bench_process.cpp — what a process costs: starting and joining one under each start
// method (figure 6), the CPU an idle pool burns (figure 8) and the memory an idle worker holds
// (figure 9). The limits these are compared with are in bench_limits.cpp.
//
//   BM_process_start_join_lambda  Process([] {}).start(); join() under fork (p50), run first:
//                                 before any function pointer has been named (see below)
//   BM_process_start_join/M       Process(noop).start(); join() under fork, forkserver, spawn (p50)
//   BM_pool_idle_cpu              CPU of this process and its descendants over an idle period, %
//   BM_pool_idle_memory/M         RSS and USS of an idle worker, this process's RSS growth per
//                                 worker: measured in a fresh copy of this program
//                                 (`bench_process --measure-idle-memory M`), so that what earlier
//                                 benchmarks left in this process's memory does not count
//
// Naming a function pointer (the name goes into crash reports) makes Boost.Stacktrace load the
// program's debug information into this process, once; a forked child inherits that memory, so
// fork costs more afterwards. The lambda variant and `name_lookup_rss_kib` show how much.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "bench_common.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

void noop() {}

int add_one(int x) {
  return x + 1;
}

constexpr auto fork_arg = static_cast<std::int64_t>(mproc::StartMethod::fork);
constexpr auto forkserver_arg = static_cast<std::int64_t>(mproc::StartMethod::forkserver);
constexpr auto spawn_arg = static_cast<std::int64_t>(mproc::StartMethod::spawn);

// ---------------------------------------------------------------- figure 6

// Registered first: no function pointer has been named in this process yet.
void BM_process_start_join_lambda(benchmark::State& state) {
  const mproc::ProcessOptions options{.start_method = mproc::StartMethod::fork};
  bench::Latencies latencies;
  for (auto _ : state) {
    auto start = Clock::now();
    mproc::Process p(options, [] {});
    p.start();
    p.join();
    double elapsed = seconds_since(start);
    if (p.exitcode() != 0) state.SkipWithError("the child failed");
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.counters["rss_kib"] = bench::rss_kib(::getpid());
  state.SetLabel("fork, captureless lambda");
}
BENCHMARK(BM_process_start_join_lambda)->UseManualTime()->Unit(benchmark::kMillisecond);

void BM_process_start_join(benchmark::State& state) {
  const auto method = static_cast<mproc::StartMethod>(state.range(0));
  const mproc::ProcessOptions options{.start_method = method};
  {
    mproc::Process warm(options, noop);  // the forkserver starts on first use
    warm.start();
    warm.join();
  }
  bench::Latencies latencies;
  for (auto _ : state) {
    auto start = Clock::now();
    mproc::Process p(options, noop);
    p.start();
    p.join();
    double elapsed = seconds_since(start);
    if (p.exitcode() != 0) state.SkipWithError("the child failed");
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.counters["rss_kib"] = bench::rss_kib(::getpid());
  state.SetLabel(mproc::to_string(method));
}
BENCHMARK(BM_process_start_join)
    ->Arg(fork_arg)
    ->Arg(forkserver_arg)
    ->Arg(spawn_arg)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 8

double descendants_cpu_seconds() {
  double total = 0;
  for (pid_t pid : bench::descendants(::getpid())) total += bench::cpu_seconds_of(pid);
  return total;
}

void BM_pool_idle_cpu(benchmark::State& state) {
  const auto idle = std::chrono::milliseconds(bench::sized(2000, 500));
  mproc::Pool pool(2);
  for (int i = 0; i < 100; ++i) pool.apply(add_one, i);
  bench::worker_pids(pool);                                     // every worker has run tasks
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // past any spin-then-sleep phase
  for (auto _ : state) {
    double own0 = bench::own_cpu_seconds(), children0 = descendants_cpu_seconds();
    auto start = Clock::now();
    std::this_thread::sleep_for(idle);
    double wall = seconds_since(start);
    double own = bench::own_cpu_seconds() - own0;
    double children = descendants_cpu_seconds() - children0;
    state.counters["idle_cpu_pct"] = 100 * (own + children) / wall;
    state.counters["parent_cpu_pct"] = 100 * own / wall;
    state.counters["workers_cpu_pct"] = 100 * children / wall;
    state.SetIterationTime(wall);
  }
  state.SetLabel("Pool(2), fork: this process (getrusage) + descendants (/proc/<pid>/stat)");
}
BENCHMARK(BM_pool_idle_cpu)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 9

constexpr const char* measure_flag = "--measure-idle-memory";

struct MemoryFigures {
  double worker_rss_kib = 0, worker_uss_kib = 0, worker_rss_max_kib = 0, worker_uss_max_kib = 0;
  double workers_seen = 0, parent_rss_kib = 0, parent_rss_per_worker_kib = 0,
         name_lookup_rss_kib = 0;
};

// Runs in a fresh copy of this program. The tasks are captureless lambdas, whose names cost
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

void BM_pool_idle_memory(benchmark::State& state) {
  const auto method = static_cast<mproc::StartMethod>(state.range(0));
  for (auto _ : state) {
    auto start = Clock::now();
    char self[4096] = {};
    if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
      state.SkipWithError("cannot find this program");
      break;
    }
    const std::string command =
        "'" + std::string(self) + "' " + measure_flag + " " + std::to_string(state.range(0));
    FILE* child = ::popen(command.c_str(), "r");
    MemoryFigures m;
    int fields = child ? std::fscanf(child, "%lf %lf %lf %lf %lf %lf %lf %lf", &m.worker_rss_kib,
                                     &m.worker_uss_kib, &m.worker_rss_max_kib,
                                     &m.worker_uss_max_kib, &m.workers_seen, &m.parent_rss_kib,
                                     &m.parent_rss_per_worker_kib, &m.name_lookup_rss_kib)
                       : 0;
    if (child) ::pclose(child);
    if (fields != 8) {
      state.SkipWithError("the measuring copy of this program failed");
      break;
    }
    state.counters["worker_rss_kib"] = m.worker_rss_kib;
    state.counters["worker_uss_kib"] = m.worker_uss_kib;
    state.counters["worker_rss_max_kib"] = m.worker_rss_max_kib;
    state.counters["worker_uss_max_kib"] = m.worker_uss_max_kib;
    state.counters["workers_seen"] = m.workers_seen;
    state.counters["parent_rss_kib"] = m.parent_rss_kib;
    state.counters["parent_rss_per_worker_kib"] = m.parent_rss_per_worker_kib;
    state.counters["name_lookup_rss_kib"] = m.name_lookup_rss_kib;
    state.SetIterationTime(seconds_since(start));
  }
  state.SetLabel(mproc::to_string(method));
}
BENCHMARK(BM_pool_idle_memory)
    ->Arg(fork_arg)
    ->Arg(forkserver_arg)
    ->Arg(spawn_arg)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], measure_flag) == 0) {
    MemoryFigures m = measure_idle_memory(static_cast<mproc::StartMethod>(std::atoi(argv[2])));
    std::printf("%.0f %.0f %.0f %.0f %.0f %.0f %.1f %.0f\n", m.worker_rss_kib, m.worker_uss_kib,
                m.worker_rss_max_kib, m.worker_uss_max_kib, m.workers_seen, m.parent_rss_kib,
                m.parent_rss_per_worker_kib, m.name_lookup_rss_kib);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
