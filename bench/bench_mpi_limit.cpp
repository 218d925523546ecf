// bench/bench_mpi_limit.cpp — the limit of figure 10's round trip on this machine: the same
// path with no library in the way. Rank 0 sends an int to rank 1 (MPI), rank 1 hands it to a
// child it forked before MPI_Init (a word in a shared page), the child answers the same way
// and rank 1 sends the answer back (MPI). Rank 2 has nothing to do meanwhile, as bench_mpi's
// second agent; like an mproc agent it polls for ~200 µs after its last message and then
// sleeps in 50 µs slices. Same `mpirun -np 3` layout and Open MPI settings as bench_mpi.
//
//   BM_limit_mpi_chain_round_trip/0   the child spins for the next request (pauses, then
//                                     sched_yield; asleep after 50 µs without one, as a
//                                     local pool's worker): best with a CPU for every process
//   BM_limit_mpi_chain_round_trip/1   the child sleeps on a futex at once, and rank 1 wakes
//                                     it: best with fewer CPUs than spinning processes
//
// The limit is the faster of the two (p50/p99 of driver → rank → child → rank → driver).
// Started without mpirun, it runs itself under `mpirun -np 3`.
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
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

// The page rank 1 shares with its child: a request and its answer, each with a sequence
// number (32-bit: the request's is a futex word), and how the child waits.
struct Mailbox {
  std::atomic<std::uint32_t> request_seq{0};
  std::atomic<int> request{0};
  std::atomic<int> child_sleeps{0};    // 1: the child futex-waits for the next request
  std::atomic<int> child_sleeping{0};  // the child announced it is about to sleep
  alignas(64) std::atomic<std::uint32_t> answer_seq{0};
  std::atomic<int> answer{0};
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free && sizeof(std::atomic<std::uint32_t>) == 4);

long futex(std::atomic<std::uint32_t>& word, int op, std::uint32_t value) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, value, nullptr, nullptr, 0);
}

// Spins (a few µs of pauses, then sched_yield) until `seq` differs from `seen`.
std::uint32_t spin_for_change(const std::atomic<std::uint32_t>& seq, std::uint32_t seen) {
  const auto pure_spin_end = Clock::now() + std::chrono::microseconds(2);
  for (;;) {
    const std::uint32_t now = seq.load(std::memory_order_acquire);
    if (now != seen) return now;
    if (Clock::now() < pure_spin_end)
      __builtin_ia32_pause();
    else
      ::sched_yield();
  }
}

// Sleeps on the request word until it differs from `seen` (the waking side's protocol is
// in publish_request: a seq_cst store and load on each side, so no wake-up is lost).
std::uint32_t sleep_for_change(Mailbox* box, std::uint32_t seen) {
  for (;;) {
    box->child_sleeping.store(1, std::memory_order_seq_cst);
    const std::uint32_t now = box->request_seq.load(std::memory_order_seq_cst);
    if (now != seen) {
      box->child_sleeping.store(0, std::memory_order_relaxed);
      return now;
    }
    futex(box->request_seq, FUTEX_WAIT, seen);
  }
}

void publish_request(Mailbox* box, int value, std::uint32_t seq, bool child_sleeps) {
  box->request.store(value, std::memory_order_relaxed);
  box->child_sleeps.store(child_sleeps ? 1 : 0, std::memory_order_relaxed);
  box->request_seq.store(seq, std::memory_order_seq_cst);
  if (box->child_sleeping.load(std::memory_order_seq_cst) && box->child_sleeping.exchange(0))
    futex(box->request_seq, FUTEX_WAKE, 1);
}

// The child's wait for the next request: mproc's local-pool policy (spin ~50 µs: pauses, then
// sched_yield; then sleep on the futex), or, when told so, straight to sleep.
std::uint32_t wait_for_request(Mailbox* box, std::uint32_t seen) {
  const auto spin = box->child_sleeps.load(std::memory_order_relaxed) ? std::chrono::microseconds(0)
                                                                      : std::chrono::microseconds(50);
  const auto start = Clock::now();
  for (auto now = start; now - start < spin; now = Clock::now()) {
    const std::uint32_t seq = box->request_seq.load(std::memory_order_acquire);
    if (seq != seen) return seq;
    if (now - start < std::chrono::microseconds(2))
      __builtin_ia32_pause();
    else
      ::sched_yield();
  }
  return sleep_for_change(box, seen);
}

[[noreturn]] void child_loop(Mailbox* box) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::uint32_t seen = 0;
  for (;;) {
    seen = wait_for_request(box, seen);
    box->answer.store(box->request.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    box->answer_seq.store(seen, std::memory_order_release);
  }
}

// A request: the value, and whether the child is to sleep while it waits for the next one.
struct Request {
  int value = 0;
  int child_sleeps = 0;
};

void BM_limit_mpi_chain_round_trip(benchmark::State& state) {
  bench::Latencies latencies;
  Request request;
  request.child_sleeps = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto start = Clock::now();
    MPI_Send(&request, 2, MPI_INT, 1, tag_request, MPI_COMM_WORLD);
    int answer = 0;
    MPI_Recv(&answer, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    double elapsed = seconds_since(start);
    if (answer != request.value + 1) state.SkipWithError("wrong answer");
    ++request.value;
    latencies.add(elapsed);
    state.SetIterationTime(elapsed);
  }
  latencies.report(state);
  state.SetLabel(request.child_sleeps ? "raw MPI + futex, rank 0 -> rank 1 -> its sleeping child -> back"
                                      : "raw MPI + shared-memory flag, rank 0 -> rank 1 -> its spinning child -> back");
}
BENCHMARK(BM_limit_mpi_chain_round_trip)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Waits for a message from rank 0 as an mproc agent does: polls for 200 µs after the last
// one (pauses, then sched_yield), then sleeps in 50 µs slices. Returns its tag.
int wait_for_message(MPI_Request& pending, Clock::time_point last_active) {
  for (;;) {
    int done = 0;
    MPI_Status status;
    MPI_Test(&pending, &done, &status);
    if (done) return status.MPI_TAG;
    const auto idle = Clock::now() - last_active;
    if (idle < std::chrono::microseconds(2)) {
      __builtin_ia32_pause();
    } else if (idle < std::chrono::microseconds(200)) {
      ::sched_yield();
    } else {
      timespec slice{0, 50'000};
      ::nanosleep(&slice, nullptr);
    }
  }
}

// Ranks 1 and 2: pass each request to the child and its answer back, until told to stop.
void serve(Mailbox* box) {
  std::uint32_t seq = 0;
  auto last_active = Clock::now();
  for (;;) {
    Request request;
    MPI_Request pending;
    MPI_Irecv(&request, 2, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &pending);
    if (wait_for_message(pending, last_active) == tag_stop) return;
    publish_request(box, request.value, ++seq, request.child_sleeps != 0);
    spin_for_change(box->answer_seq, seq - 1);
    int answer = box->answer.load(std::memory_order_relaxed);
    MPI_Send(&answer, 1, MPI_INT, 0, tag_request, MPI_COMM_WORLD);
    last_active = Clock::now();
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
