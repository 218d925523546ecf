// bench/bench_limits.cpp — the physical limits mproc's figures are read against: what this
// machine can do with no library in the way. No mproc here, on purpose.
//
//   BM_limit_thread_map          figure 1's work done by 2 threads of this process (items/s)
//   BM_limit_memcpy              memcpy of a warm 128 MiB buffer (GB/s), figure 4's ceiling
//   BM_limit_echo_floor          the copies any echo of a std::vector through shared memory
//                                makes, done in one process (GB/s per round trip): figure 4's floor
//   BM_limit_fork_waitpid        fork() + _exit(0) + waitpid(), figure 6's ceiling (p50)
//   BM_limit_futex_round_trip/X  a FUTEX_WAKE/FUTEX_WAIT ping-pong between two processes
//                                (p50): what any sleeping hand-off, hence figure 2, costs at
//                                least; X = 1: the two pinned to different CPUs
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "bench_common.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

int add_one(int x) {
  return x + 1;
}

// ---------------------------------------------------------------- figure 1's limit

void BM_limit_thread_map(benchmark::State& state) {
  const auto n = bench::sized<std::size_t>(1'000'000, 200'000);
  std::vector<int> input(n);
  for (std::size_t i = 0; i < n; ++i) input[i] = static_cast<int>(i);
  // Called through a pointer the compiler cannot see through, as a worker calls a task: the
  // same function, not a loop the compiler vectorises into something else.
  int (*f)(int) = add_one;
  benchmark::DoNotOptimize(f);
  for (auto _ : state) {
    std::vector<int> out(n);
    auto half = [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) out[i] = f(input[i]);
    };
    std::thread a(half, 0, n / 2), b(half, n / 2, n);
    a.join();
    b.join();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
  state.SetLabel("2 std::threads, add_one through a function pointer");
}
BENCHMARK(BM_limit_thread_map)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 4's limit

void BM_limit_memcpy(benchmark::State& state) {
  const auto size = bench::sized<std::size_t>(128u << 20, 32u << 20);
  std::vector<char> from(size, 'x'), to(size, 'y');  // both touched: warm pages
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), size);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
BENCHMARK(BM_limit_memcpy)->UseRealTime()->Unit(benchmark::kMillisecond);

// An echo of a byte vector between two processes that own their vectors copies it at least
// four times: the caller's vector into shared memory, shared memory into the callee's vector,
// the callee's result into shared memory, shared memory into the caller's new result — and
// the result is fresh memory, which the kernel zeroes at first touch. All buffers but the
// result are warm here (as mproc keeps its segments and a worker's heap warm), and the
// result's buffer is advised to use huge pages, as mproc's decoder does.
void BM_limit_echo_floor(benchmark::State& state) {
  const auto size = bench::sized<std::size_t>(128u << 20, 32u << 20);
  std::vector<char> caller(size, 'x'), shared_in(size, 'i'), callee(size, 'c'), shared_out(size, 'o');
  for (auto _ : state) {
    std::memcpy(shared_in.data(), caller.data(), size);
    std::memcpy(callee.data(), shared_in.data(), size);
    std::memcpy(shared_out.data(), callee.data(), size);
    std::vector<char> result;
    result.reserve(size);
    constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
    const auto first = reinterpret_cast<std::uintptr_t>(result.data());
    const std::uintptr_t begin = (first + huge - 1) & ~(huge - 1), end = (first + size) & ~(huge - 1);
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    result.assign(shared_out.begin(), shared_out.end());
    benchmark::DoNotOptimize(result.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
BENCHMARK(BM_limit_echo_floor)->UseRealTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------- figure 6's limit

void BM_limit_fork_waitpid(benchmark::State& state) {
  bench::Latencies latencies;
  for (auto _ : state) {
    auto start = Clock::now();
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    int status = 0;
    while (pid > 0 && ::waitpid(pid, &status, 0) < 0) {
    }
    double elapsed = seconds_since(start);
    if (pid < 0) state.SkipWithError("fork failed");
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
}
BENCHMARK(BM_limit_fork_waitpid)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------- the wake-up limit

long futex(std::atomic<std::uint32_t>* word, int op, std::uint32_t value) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, nullptr, nullptr,
                   0);
}

/// Pins the calling thread (and what it forks) to one CPU; false when there is no such CPU.
bool pin_to_cpu(int cpu) {
  if (cpu >= static_cast<int>(std::thread::hardware_concurrency())) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// The parent writes odd values and the child answers with the next even one; each side
// sleeps in FUTEX_WAIT until the other has written (no spinning: the pure wake-up cost).
// Arg 1: the two processes pinned to CPUs 0 and 1, so every wake-up crosses CPUs (arg 0 lets
// the scheduler choose, which on a loaded machine often puts both on one CPU).
void BM_limit_futex_round_trip(benchmark::State& state) {
  constexpr std::uint32_t stop = UINT32_MAX;
  const bool cross_cpu = state.range(0) != 0;
  cpu_set_t original;
  ::sched_getaffinity(0, sizeof original, &original);
  if (cross_cpu && !pin_to_cpu(1)) {
    state.SkipWithError("fewer than 2 CPUs");
    return;
  }
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) {
    state.SkipWithError("mmap failed");
    return;
  }
  auto* word = new (page) std::atomic<std::uint32_t>(0);
  pid_t child = ::fork();
  if (cross_cpu) pin_to_cpu(0);  // the child stays on CPU 1
  if (child == 0) {
    for (std::uint32_t expected = 1;; expected += 2) {
      std::uint32_t v;
      while ((v = word->load(std::memory_order_acquire)) < expected) futex(word, FUTEX_WAIT, v);
      if (v == stop) ::_exit(0);
      word->store(expected + 1, std::memory_order_release);
      futex(word, FUTEX_WAKE, INT_MAX);
    }
  }
  bench::Latencies latencies;
  std::uint32_t next = 1;
  for (auto _ : state) {
    auto start = Clock::now();
    word->store(next, std::memory_order_release);
    futex(word, FUTEX_WAKE, INT_MAX);
    std::uint32_t v;
    while ((v = word->load(std::memory_order_acquire)) != next + 1) futex(word, FUTEX_WAIT, v);
    double elapsed = seconds_since(start);
    next += 2;
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  word->store(stop, std::memory_order_release);
  futex(word, FUTEX_WAKE, INT_MAX);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
  }
  ::munmap(page, 4096);
  ::sched_setaffinity(0, sizeof original, &original);
  latencies.report(state);
  state.SetLabel(cross_cpu ? "FUTEX_WAIT/FUTEX_WAKE hand-off, 2 processes on CPUs 0 and 1"
                           : "FUTEX_WAIT/FUTEX_WAKE hand-off, 2 processes");
}
BENCHMARK(BM_limit_futex_round_trip)
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
