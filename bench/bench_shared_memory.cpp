// bench/bench_shared_memory.cpp — figure 4's other half: handing a SharedMemory to a pool task
// costs the same whatever its size (only the descriptor travels, with SCM_RIGHTS).
//
//   BM_pool_shared_memory_handoff/MiB  apply(f, SharedMemory of MiB MiB), the task reads one
//                                      byte (p50)
//
// A program of its own so that the other pool benchmarks build without the shared-memory module.
#include <algorithm>
#include <cstdint>

#include "bench_common.hpp"
#include "mproc/pool.hpp"
#include "mproc/shared_memory.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

std::uint64_t first_byte(mproc::SharedMemory memory) {
  return memory.size() + static_cast<std::uint64_t>(memory.bytes()[0]);
}

void BM_pool_shared_memory_handoff(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0)) << 20;
  mproc::Pool pool(2);
  auto memory = mproc::SharedMemory::create(size);
  std::fill(memory.bytes().begin(), memory.bytes().end(), std::byte{1});
  for (int i = 0; i < 20; ++i) pool.apply(first_byte, memory);
  bench::Latencies latencies;
  for (auto _ : state) {
    auto start = Clock::now();
    auto r = pool.apply(first_byte, memory);
    double elapsed = seconds_since(start);
    if (r != size + 1) state.SkipWithError("wrong result");
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.SetLabel("apply(f, SharedMemory): the task reads one byte");
}
BENCHMARK(BM_pool_shared_memory_handoff)
    ->Arg(1)
    ->Arg(128)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
