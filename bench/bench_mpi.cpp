// bench/bench_mpi.cpp — mproc::mpi::Pool on a driver and two agents of one worker each, the
// layout bench/python/bench_mpi4py.py gives mpi4py.futures (a driver and two worker ranks):
//
//   BM_mpi_apply_round_trip   apply(add_one, i): round trip driver → agent → worker → back
//   BM_mpi_map/1, /256        map(add_one, n ints, chunksize): tasks (items) per second
//
// Started without mpirun, it runs itself under `mpirun -np 3` (with the Open MPI settings of
// docs/mpi.md), so scripts/bench can run it like every other bench_* program.
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "mproc/mpi.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

int add_one(int x) { return x + 1; }

void BM_mpi_apply_round_trip(benchmark::State& state) {
  mproc::mpi::Pool pool(1);
  for (int i = 0; i < 200; ++i) pool.apply(add_one, i);  // both agents and workers warm
  bench::Latencies latencies;
  int i = 0;
  for (auto _ : state) {
    auto start = Clock::now();
    int r = pool.apply(add_one, i);
    double elapsed = seconds_since(start);
    if (r != i + 1) state.SkipWithError("wrong result");
    ++i;
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.SetLabel("apply(add_one, i), 2 agents x 1 worker");
}
BENCHMARK(BM_mpi_apply_round_trip)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_mpi_map(benchmark::State& state) {
  const auto chunksize = static_cast<std::size_t>(state.range(0));
  const int n = chunksize == 1 ? bench::sized(200'000, 20'000) : bench::sized(2'000'000, 200'000);
  std::vector<int> items(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) items[static_cast<std::size_t>(i)] = i;
  mproc::mpi::Pool pool(1);
  pool.map(add_one, std::vector<int>(1000, 0), chunksize);  // warm
  for (auto _ : state) {
    auto results = pool.map(add_one, items, chunksize);
    if (results.back() != n) state.SkipWithError("wrong result");
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["tasks_per_s"] =
      benchmark::Counter(static_cast<double>(n) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel("map(add_one, ints, chunksize), 2 agents x 1 worker");
}
BENCHMARK(BM_mpi_map)->Arg(1)->Arg(256)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  if (!std::getenv("OMPI_COMM_WORLD_RANK") && !std::getenv("PMIX_RANK")) bench::relaunch_under_mpirun(argc, argv);
  mproc::mpi::init(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
