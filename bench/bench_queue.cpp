// bench/bench_queue.cpp — Queue latency and throughput between two processes, beside the
// references they are held to: a raw futex ping-pong (what any sleeping hand-off costs) and a
// pure spinning ping-pong (what sharing a cache line costs).
//
//   BM_queue_round_trip/N     parent put(ping) → child get, put(pong) → parent get; N-byte items
//   BM_raw_futex_round_trip   the same hand-off on one shared word with FUTEX_WAIT/FUTEX_WAKE
//   BM_raw_spin_round_trip    the same hand-off on one shared word, both sides spinning
//   BM_queue_stream/N         a child puts N-byte items as fast as the parent gets them
//
// Goal (docs/ipc.md): the queue round trip within 3× the raw futex round trip.
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mproc/queue.hpp"

namespace {

/// Forks a child running `body`, which never returns into the benchmark.
template <class F>
pid_t fork_child(F&& body) {
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
}

void BM_queue_round_trip(benchmark::State& state) {
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'x');
  mproc::Queue<std::string> ping, pong;
  const pid_t child = fork_child([&] {
    for (;;) {
      std::string item = ping.get();
      if (item.empty()) return;
      pong.put(item);
    }
  });
  for (auto _ : state) {
    ping.put(payload);
    benchmark::DoNotOptimize(pong.get());
  }
  ping.put(std::string());
  reap(child);
  state.SetLabel("put->get->put->get, 2 processes");
}
BENCHMARK(BM_queue_round_trip)->Arg(8)->Arg(1024)->Arg(64 << 10)->UseRealTime();

/// One 32-bit word in a shared anonymous mapping.
struct SharedWord {
  SharedWord() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    word = new (p) std::atomic<std::uint32_t>(0);
  }
  ~SharedWord() { ::munmap(word, 4096); }
  std::atomic<std::uint32_t>* word;
};

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, nullptr,
            nullptr, 0);
}
void futex_wake(std::atomic<std::uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr,
            nullptr, 0);
}

constexpr std::uint32_t stop_value = UINT32_MAX;

// The parent writes odd values, the child answers with the next even one.
void BM_raw_futex_round_trip(benchmark::State& state) {
  SharedWord shared;
  std::atomic<std::uint32_t>* word = shared.word;
  const pid_t child = fork_child([word] {
    for (std::uint32_t expected = 1;; expected += 2) {
      std::uint32_t v;
      while ((v = word->load(std::memory_order_acquire)) < expected) futex_wait(word, v);
      if (v == stop_value) return;
      word->store(expected + 1, std::memory_order_release);
      futex_wake(word);
    }
  });
  std::uint32_t next = 1;
  for (auto _ : state) {
    word->store(next, std::memory_order_release);
    futex_wake(word);
    std::uint32_t v;
    while ((v = word->load(std::memory_order_acquire)) != next + 1) futex_wait(word, v);
    next += 2;
  }
  word->store(stop_value, std::memory_order_release);
  futex_wake(word);
  reap(child);
  state.SetLabel("reference: FUTEX_WAIT/FUTEX_WAKE hand-off, 2 processes");
}
BENCHMARK(BM_raw_futex_round_trip)->UseRealTime();

void BM_raw_spin_round_trip(benchmark::State& state) {
  SharedWord shared;
  std::atomic<std::uint32_t>* word = shared.word;
  const pid_t child = fork_child([word] {
    for (std::uint32_t expected = 1;; expected += 2) {
      std::uint32_t v;
      while ((v = word->load(std::memory_order_acquire)) < expected) {
      }
      if (v == stop_value) return;
      word->store(expected + 1, std::memory_order_release);
    }
  });
  std::uint32_t next = 1;
  for (auto _ : state) {
    word->store(next, std::memory_order_release);
    while (word->load(std::memory_order_acquire) != next + 1) {
    }
    next += 2;
  }
  word->store(stop_value, std::memory_order_release);
  reap(child);
  state.SetLabel("reference: both sides spinning on one word, 2 processes");
}
BENCHMARK(BM_raw_spin_round_trip)->UseRealTime();

void BM_queue_stream(benchmark::State& state) {
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'x');
  mproc::Queue<std::string> items(1024);
  mproc::Queue<int> control;
  const pid_t child = fork_child([&] {
    for (;;) {
      const int count = control.get();
      if (count < 0) return;
      for (int i = 0; i < count; ++i) items.put(payload);
    }
  });
  constexpr int batch = 1000;
  for (auto _ : state) {
    control.put(batch);
    for (int i = 0; i < batch; ++i) benchmark::DoNotOptimize(items.get());
  }
  control.put(-1);
  reap(child);
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * state.range(0));
}
BENCHMARK(BM_queue_stream)->Arg(8)->Arg(4096)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
