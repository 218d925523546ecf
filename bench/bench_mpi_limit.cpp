// bench/bench_mpi_limit.cpp — the limit of figure 10's round trip on this machine: the same
// path with no library in the way. Rank 0 sends an int to rank 1 (MPI), rank 1 hands it to a
// child it forked before MPI_Init (a flag in a shared page, polled: pure spinning, then
// sched_yield), the child answers the same way and rank 1 sends the answer back (MPI). Rank 2
// waits in MPI meanwhile, as bench_mpi's second agent does. Same `mpirun -np 3` layout and
// Open MPI settings as bench_mpi.
//
//   BM_limit_mpi_chain_round_trip   p50/p99 of driver → rank → child → rank → driver
//
// Started without mpirun, it runs itself under `mpirun -np 3`.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>

#include <mpi.h>

#include "bench_common.hpp"

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr int tag_request = 1;
constexpr int tag_stop = 2;

// The page rank 1 shares with its child: a request and its answer, each with a sequence number.
struct Mailbox {
  std::atomic<std::uint64_t> request_seq{0};
  std::atomic<int> request{0};
  alignas(64) std::atomic<std::uint64_t> answer_seq{0};
  std::atomic<int> answer{0};
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Spins (a few µs of pauses, then sched_yield) until `seq` differs from `seen`.
std::uint64_t wait_change(const std::atomic<std::uint64_t>& seq, std::uint64_t seen) {
  const auto pure_spin_end = Clock::now() + std::chrono::microseconds(2);
  for (;;) {
    const std::uint64_t now = seq.load(std::memory_order_acquire);
    if (now != seen) return now;
    if (Clock::now() < pure_spin_end)
      __builtin_ia32_pause();
    else
      ::sched_yield();
  }
}

[[noreturn]] void child_loop(Mailbox* box) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::uint64_t seen = 0;
  for (;;) {
    seen = wait_change(box->request_seq, seen);
    box->answer.store(box->request.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    box->answer_seq.store(seen, std::memory_order_release);
  }
}

void BM_limit_mpi_chain_round_trip(benchmark::State& state) {
  bench::Latencies latencies;
  int value = 0;
  for (auto _ : state) {
    auto start = Clock::now();
    MPI_Send(&value, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD);
    int answer = 0;
    MPI_Recv(&answer, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    double elapsed = seconds_since(start);
    if (answer != value + 1) state.SkipWithError("wrong answer");
    ++value;
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.SetLabel("raw MPI + shared-memory flag, rank 0 -> rank 1 -> its child -> back");
}
BENCHMARK(BM_limit_mpi_chain_round_trip)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Ranks 1 and 2: pass each request to the child and its answer back, until told to stop.
void serve(Mailbox* box) {
  std::uint64_t seq = 0;
  for (;;) {
    int value = 0;
    MPI_Status status;
    MPI_Recv(&value, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
    if (status.MPI_TAG == tag_stop) return;
    box->request.store(value, std::memory_order_relaxed);
    box->request_seq.store(++seq, std::memory_order_release);
    wait_change(box->answer_seq, seq - 1);
    int answer = box->answer.load(std::memory_order_relaxed);
    MPI_Send(&answer, 1, MPI_INT, 0, tag_request, MPI_COMM_WORLD);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!std::getenv("OMPI_COMM_WORLD_RANK") && !std::getenv("PMIX_RANK")) bench::relaunch_under_mpirun(argc, argv);
  // Ranks 1 and 2 fork their child before MPI_Init, as mproc's agents fork their zygote.
  const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  Mailbox* box = nullptr;
  pid_t child = -1;
  if (env_rank && std::atoi(env_rank) > 0) {
    void* page = ::mmap(nullptr, sizeof(Mailbox), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 2;
    box = new (page) Mailbox;
    child = ::fork();
    if (child == 0) child_loop(box);
  }
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank == 0) {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    int none = 0;
    for (int r = 1; r < size; ++r) MPI_Send(&none, 1, MPI_INT, r, tag_stop, MPI_COMM_WORLD);
  } else if (box) {
    serve(box);
  }
  MPI_Finalize();
  if (child > 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  }
  return 0;
}
