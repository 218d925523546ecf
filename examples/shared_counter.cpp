// examples/shared_counter.cpp — four processes start together at an mproc::Barrier, add to a
// counter guarded by an mproc::Lock, then report one after another, each handing the turn to
// the next with an mproc::Semaphore.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <mproc/process.hpp>
#include <mproc/sync.hpp>
#include <mutex>
#include <vector>

int main() {
  constexpr int workers = 4;
  constexpr long increments = 10000;

  // The counter: plain memory shared with the children (forked after this mapping).
  void* memory =
      ::mmap(nullptr, sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return 1;
  auto* counter = static_cast<long*>(memory);
  *counter = 0;

  mproc::Lock lock;                    // guards *counter
  mproc::Barrier start(workers);       // everyone starts counting at once
  std::vector<mproc::Semaphore> turn;  // turn[i] lets worker i report
  for (int i = 0; i < workers; ++i) turn.emplace_back(i == 0 ? 1 : 0);

  std::vector<mproc::Process> processes;
  for (int i = 0; i < workers; ++i)
    processes.emplace_back([=] {  // the handles are copied: the copies share
      const std::size_t arrival = start.arrive_and_wait();
      for (long n = 0; n < increments; ++n) {
        std::scoped_lock hold(lock);
        ++*counter;
      }
      turn[i].acquire();
      std::printf("Worker %d (pid %d): reached the barrier as number %zu, done counting\n", i,
                  ::getpid(), arrival + 1);
      std::fflush(stdout);
      if (i + 1 < workers) turn[i + 1].release();
    });
  for (auto& p : processes) p.start();
  for (auto& p : processes) p.join();

  std::printf("Counter: %ld (expected %ld)\n", *counter, workers * increments);
  bool ok = *counter == workers * increments;
  for (auto& p : processes) ok = ok && p.exitcode() == 0;
  ::munmap(memory, sizeof(long));
  return ok ? 0 : 1;
}
