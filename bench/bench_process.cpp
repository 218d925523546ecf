// bench/bench_process.cpp — what a process costs: starting and joining one under each start
// method (figure 6), the CPU an idle pool burns (figure 8) and the memory an idle worker holds
// (figure 9). The limits these are compared with are in bench_limits.cpp.
//
//   BM_process_start_join_lambda  Process([] {}).start(); join() under fork (p50), run first:
//                                 before any function pointer has been named (see below)
//   BM_process_start_join/M       Process(noop).start(); join() under fork, forkserver, spawn (p50)
//   BM_pool_idle_cpu              CPU of this process and its descendants over an idle period, %
//   BM_pool_idle_memory/M         RSS and USS of an idle worker, this process's RSS growth per
//                                 worker: measured by `idle_memory_probe M`, a fresh program
//                                 linked with mproc only (bench/idle_memory_probe.cpp)
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

struct MemoryFigures {
  double worker_rss_kib = 0, worker_uss_kib = 0, worker_rss_max_kib = 0, worker_uss_max_kib = 0;
  double workers_seen = 0, parent_rss_kib = 0, parent_rss_per_worker_kib = 0,
         name_lookup_rss_kib = 0;
};

void BM_pool_idle_memory(benchmark::State& state) {
  const auto method = static_cast<mproc::StartMethod>(state.range(0));
  for (auto _ : state) {
    auto start = Clock::now();
    // idle_memory_probe is built next to this program (bench/CMakeLists.txt).
    char self[4096] = {};
    if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
      state.SkipWithError("cannot find this program");
      break;
    }
    std::string probe(self);
    probe = probe.substr(0, probe.rfind('/') + 1) + "idle_memory_probe";
    const std::string command = "'" + probe + "' " + std::to_string(state.range(0));
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
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
