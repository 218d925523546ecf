// bench/bench_pool.cpp — the Pool figures of DESIGN.md's "Numbers it is held to", one benchmark
// each, plus the sweeps behind docs/bench/*.png. scripts/bench runs them beside CPython's
// multiprocessing (bench/python/) and prints the comparison table.
//
//   BM_pool_worker_killed/MiB  figure 7: SIGKILL of a busy worker: its future fails, the
//                              next task completes on the replacement (run first; MiB: the
//                              ballast this process holds when the pool starts)
//   BM_pool_map_trivial        figure 1: map of a trivial function, 1,000,000 ints, 2 workers
//   BM_pool_apply_round_trip   figure 2: apply round trip of a trivial task (p50, p99)
//   BM_pool_apply_async_get    figure 3: 100,000 x apply_async, then get every future
//   BM_pool_echo_bytes         figure 4: a 128 MiB byte vector to a worker and back
//   BM_pool_cpu_bound/W        figure 5: 10,000 tasks of ~100 µs on W workers (efficiency;
//                              the limit: the same work on W threads of this process)
//   BM_sweep_*                 tasks/s against payload size and task duration (plots)
//
// Every pool is built once per benchmark run, outside the timed loop. Task functions are free
// functions, as the pool requires. Under MPROC_BENCH_QUICK=1 the sizes are smaller (the
// counters say which were used).
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>
#include <vector>

#include "bench_common.hpp"
#include "mproc/pool.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

int add_one(int x) {
  return x + 1;
}

std::vector<std::byte> echo(std::vector<std::byte> bytes) {
  return bytes;
}

std::uint64_t payload_size(const std::vector<std::byte>& bytes) {
  return bytes.size();
}

std::uint64_t cpu_task(std::uint64_t iterations) {
  return bench::burn(iterations);
}

// ---------------------------------------------------------------- figure 7

// A page shared by this process and the workers: it is mapped before the pool is built, and
// fork workers come from a zygote forked at construction, so they share it.
std::atomic<int>* running_pid = nullptr;

int report_pid_and_hang(int) {
  running_pid->store(static_cast<int>(::getpid()), std::memory_order_release);
  for (;;) ::pause();
}

void BM_pool_worker_killed(benchmark::State& state) {
  if (running_pid == nullptr) {
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
      state.SkipWithError("mmap failed");
      return;
    }
    running_pid = new (page) std::atomic<int>(0);
  }
  // Workers are forks of a zygote, itself a fork of this process now: the more this process
  // holds, the more a worker has to copy at fork and to tear down when killed. Arg: MiB of
  // ballast this process holds (touched) when the pool is built.
  std::vector<char> ballast(static_cast<std::size_t>(state.range(0)) << 20, 1);
  benchmark::DoNotOptimize(ballast.data());
  state.counters["parent_rss_kib"] = bench::rss_kib(::getpid());
  // One worker: the task queued behind the victim can only complete on the replacement.
  mproc::Pool pool(mproc::PoolOptions{.processes = 1, .start_method = mproc::StartMethod::fork});
  pool.apply(add_one, 0);
  bench::Latencies failed, next_done;
  int others_failed = 0;
  for (auto _ : state) {
    running_pid->store(0);
    auto victim = pool.apply_async(report_pid_and_hang, 0);
    auto next = pool.apply_async(add_one, 1);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    int pid = 0;
    while ((pid = running_pid->load(std::memory_order_acquire)) == 0 && Clock::now() < deadline)
      std::this_thread::yield();
    if (pid == 0) {
      state.SkipWithError("the victim task never started");
      break;
    }
    auto start = Clock::now();
    ::kill(pid, SIGKILL);
    if (!victim.wait_for(std::chrono::seconds(10))) {
      state.SkipWithError("the killed task's future never failed (hang)");
      break;
    }
    double t_failed = seconds_since(start);
    if (!next.wait_for(std::chrono::seconds(10))) {
      state.SkipWithError("the next task never completed");
      break;
    }
    double t_next = seconds_since(start);
    if (victim.successful()) state.SkipWithError("the killed task succeeded");
    if (!next.successful()) ++others_failed;
    failed.add(t_failed);
    next_done.add(t_next);
    state.SetIterationTime(t_next);
  }
  failed.report(state, "failed_");
  next_done.report(state, "next_");
  state.counters["others_failed"] = others_failed;
  state.SetLabel("1 fork worker: SIGKILL while running -> future fails / queued task done");
}
// Registered first, so that it runs while this process is small (later benchmarks leave
// tens of MiB of heap behind); Arg(256) shows what a big parent costs.
BENCHMARK(BM_pool_worker_killed)
    ->Arg(0)
    ->Arg(256)
    ->Iterations(bench::sized(40, 10))
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 1

void BM_pool_map_trivial(benchmark::State& state) {
  const auto n = bench::sized<std::size_t>(1'000'000, 200'000);
  std::vector<int> input(n);
  for (std::size_t i = 0; i < n; ++i) input[i] = static_cast<int>(i);
  mproc::Pool pool(2);
  pool.map(add_one, input);  // warm: workers started, segments grown
  for (auto _ : state) {
    std::vector<int> out = pool.map(add_one, input);
    if (out.size() != n || out[n - 1] != static_cast<int>(n)) state.SkipWithError("wrong result");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.counters["items"] = static_cast<double>(n);
  state.SetLabel("map(add_one, ints), auto chunksize, 2 workers");
}
BENCHMARK(BM_pool_map_trivial)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 2

void BM_pool_apply_round_trip(benchmark::State& state) {
  mproc::Pool pool(2);
  for (int i = 0; i < 100; ++i) pool.apply(add_one, i);  // every worker warm
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
  state.SetLabel("apply(add_one, i), 2 workers");
}
BENCHMARK(BM_pool_apply_round_trip)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------- figure 3

void BM_pool_apply_async_get(benchmark::State& state) {
  const auto n = bench::sized<int>(100'000, 10'000);
  mproc::Pool pool(2);
  std::vector<mproc::Future<int>> futures;
  futures.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < 1000; ++i) futures.push_back(pool.apply_async(add_one, i));  // warm
  for (auto& f : futures) f.get();
  for (auto _ : state) {
    futures.clear();
    for (int i = 0; i < n; ++i) futures.push_back(pool.apply_async(add_one, i));
    long sum = 0;
    for (auto& f : futures) sum += f.get();
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["tasks"] = n;
  state.SetLabel("n x apply_async(add_one, i), then get() each, 2 workers");
}
BENCHMARK(BM_pool_apply_async_get)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 4

void BM_pool_echo_bytes(benchmark::State& state) {
  const auto size = bench::sized<std::size_t>(128u << 20, 32u << 20);
  mproc::Pool pool(2);
  std::vector<std::byte> data(size);
  for (std::size_t i = 0; i < size; i += 4096) data[i] = static_cast<std::byte>(i >> 12);
  pool.apply(echo, data);  // overflow segments grown once, as a long-running program has them
  bench::Latencies latencies;
  for (auto _ : state) {
    auto start = Clock::now();
    std::vector<std::byte> back = pool.apply(echo, data);
    double elapsed = seconds_since(start);
    if (back.size() != size || back[size - 4096] != data[size - 4096])
      state.SkipWithError("wrong echo");
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  latencies.report(state);
  state.counters["mib"] = static_cast<double>(size >> 20);
  state.SetLabel("apply(echo, bytes): bytes / round trip");
}
BENCHMARK(BM_pool_echo_bytes)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 5 (and the speedup plot)

void BM_pool_cpu_bound(benchmark::State& state) {
  const auto workers = static_cast<unsigned>(state.range(0));
  const auto n = bench::sized<std::size_t>(10'000, 2'000);
  const std::uint64_t rounds = bench::iterations_for(100);
  const std::vector<std::uint64_t> items(n, rounds);
  mproc::Pool pool(workers);
  pool.map(cpu_task, std::vector<std::uint64_t>(4 * workers, rounds));  // warm
  double serial_total = 0, pool_total = 0, threads_total = 0;
  for (auto _ : state) {
    // The same work in this process, half of it just before the pool's run and half just
    // after, so that the serial reference brackets the pool's window and both see the same
    // load (this VM's speed changes from one second to the next).
    auto serial_half = [&](std::size_t from, std::size_t to) {
      auto serial_start = Clock::now();
      std::uint64_t sink = 0;
      for (std::size_t i = from; i < to; ++i) sink += bench::burn(items[i]);
      benchmark::DoNotOptimize(sink);
      serial_total += seconds_since(serial_start);
    };
    serial_half(0, n / 2);

    auto start = Clock::now();
    auto out = pool.map(cpu_task, items);
    double elapsed = seconds_since(start);
    benchmark::DoNotOptimize(out.data());
    pool_total += elapsed;
    state.SetIterationTime(elapsed);
    serial_half(n / 2, n);

    // The limit: the same work on `workers` threads of this process, taking items one at a
    // time from a shared counter (no processes, no copies, no results to send back).
    auto threads_start = Clock::now();
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < workers; ++w)
      threads.emplace_back([&] {
        std::uint64_t mine = 0;
        for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) mine += bench::burn(items[i]);
        benchmark::DoNotOptimize(mine);
      });
    for (auto& thread : threads) thread.join();
    threads_total += seconds_since(threads_start);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.counters["efficiency"] = serial_total / (workers * pool_total);
  state.counters["thread_efficiency"] = serial_total / (workers * threads_total);
  state.counters["speedup"] = serial_total / pool_total;
  state.counters["task_us"] = serial_total / static_cast<double>(state.iterations() * n) * 1e6;
  state.counters["tasks"] = static_cast<double>(n);
  state.SetLabel("map(cpu_task, n x ~100us), auto chunksize");
}
BENCHMARK(BM_pool_cpu_bound)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- sweeps for the plots

// How many tasks per iteration: about the same wall time per point, bounded.
std::size_t tasks_for_payload(std::size_t bytes) {
  std::size_t n = (std::size_t{64} << 20) / std::max<std::size_t>(bytes, 1);
  n = std::clamp<std::size_t>(n, 64, 20'000);
  return bench::quick() ? std::max<std::size_t>(n / 5, 16) : n;
}
std::size_t tasks_for_duration(std::int64_t micros) {
  std::size_t n = micros == 0 ? 20'000 : static_cast<std::size_t>(1'000'000 / micros);
  n = std::clamp<std::size_t>(n, 200, 20'000);
  return bench::quick() ? std::max<std::size_t>(n / 5, 40) : n;
}

void BM_sweep_apply_async_payload(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t n = tasks_for_payload(bytes);
  const std::vector<std::byte> payload(bytes, std::byte{7});
  mproc::Pool pool(2);
  std::vector<mproc::Future<std::uint64_t>> futures;
  auto run = [&] {
    futures.clear();
    for (std::size_t i = 0; i < n; ++i) futures.push_back(pool.apply_async(payload_size, payload));
    for (auto& f : futures) benchmark::DoNotOptimize(f.get());
  };
  run();  // warm
  for (auto _ : state) run();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_sweep_apply_async_payload)
    ->Arg(8)
    ->Arg(1 << 10)
    ->Arg(64 << 10)
    ->Arg(1 << 20)
    ->UseRealTime();

void BM_sweep_map_payload(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t n = tasks_for_payload(bytes);
  const std::vector<std::vector<std::byte>> items(n, std::vector<std::byte>(bytes, std::byte{7}));
  mproc::Pool pool(2);
  pool.map(payload_size, items);  // warm
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(payload_size, items));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_sweep_map_payload)->Arg(8)->Arg(1 << 10)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime();

void BM_sweep_apply_async_duration(benchmark::State& state) {
  const std::size_t n = tasks_for_duration(state.range(0));
  const std::uint64_t rounds = bench::iterations_for(static_cast<double>(state.range(0)));
  mproc::Pool pool(2);
  std::vector<mproc::Future<std::uint64_t>> futures;
  auto run = [&] {
    futures.clear();
    for (std::size_t i = 0; i < n; ++i) futures.push_back(pool.apply_async(cpu_task, rounds));
    for (auto& f : futures) benchmark::DoNotOptimize(f.get());
  };
  run();  // warm
  for (auto _ : state) run();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_sweep_apply_async_duration)->Arg(0)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime();

void BM_sweep_map_duration(benchmark::State& state) {
  const std::size_t n = tasks_for_duration(state.range(0));
  const std::vector<std::uint64_t> items(
      n, bench::iterations_for(static_cast<double>(state.range(0))));
  mproc::Pool pool(2);
  pool.map(cpu_task, items);  // warm
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(cpu_task, items));
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_sweep_map_duration)->Arg(0)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
