// examples/timeouts.cpp — hard per-task time limits: a task that hangs is killed with its
// worker after 500 ms and fails with TaskTimeout; the other tasks are not touched, and a
// replacement worker takes over. A single call can set its own limit.
//
// Python has no per-task time limit in Pool or ProcessPoolExecutor:
//   with Pool(2) as pool:
//       hung = pool.apply_async(hang, (0,))
//       hung.get(timeout=0.5)   # raises multiprocessing.TimeoutError, but the worker
//                               # hangs on for ever and the pool has one worker less
// A thread cannot be killed; a worker process can.
#include <mproc/mproc.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <vector>

using namespace std::chrono_literals;

int hang(int) {
  for (;;) ::pause();
}
int times_ten(int x) { return 10 * x; }
int nap_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}

long long to_ms(std::chrono::nanoseconds d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

int main() {
  mproc::Pool pool(mproc::PoolOptions{.processes = 2, .task_timeout = 500ms});
  bool as_expected = true;

  // One task hangs; the quick ones still get their results (one may have been queued
  // behind the hung task on its worker: it moves to another worker when that one is killed).
  mproc::Future<int> hung = pool.apply_async(hang, 0);
  std::vector<mproc::Future<int>> quick;
  for (int i = 1; i <= 6; ++i) quick.push_back(pool.apply_async(times_ten, i));

  // hung.get(100ms) would only stop *waiting* (TimeoutError) and leave the task running;
  // the pool's limit kills it.
  try {
    hung.get();
    as_expected = false;
  } catch (const mproc::TaskTimeout& e) {
    std::printf("hung task: TaskTimeout after its limit of %lld ms; worker %d was killed by %s\n",
                to_ms(e.limit()), e.report().pid, e.report().signal_name.c_str());
    as_expected = as_expected && e.limit() == 500ms && e.report().pid > 0;
  }
  std::printf("quick tasks:");
  for (int i = 1; i <= 6; ++i) {
    int v = quick[i - 1].get();
    std::printf(" %d", v);
    as_expected = as_expected && v == 10 * i;
  }
  std::printf("\n");

  // Per call: a tighter limit for one task, a looser one for another.
  try {
    pool.apply_async(mproc::TaskOptions{.timeout = 100ms}, hang, 1).get();
    as_expected = false;
  } catch (const mproc::TaskTimeout& e) {
    std::printf("per-call limit: %s\n", e.what());
    as_expected = as_expected && e.limit() == 100ms;
  }
  int slept = pool.apply_async(mproc::TaskOptions{.timeout = 5s}, nap_ms, 800).get();
  std::printf("an 800 ms task under a 5 s per-call limit returned %d\n", slept);
  as_expected = as_expected && slept == 800;

  mproc::PoolStats stats = pool.stats();
  std::printf("tasks timed out: %llu, workers started: %llu\n",
              static_cast<unsigned long long>(stats.tasks_timed_out),
              static_cast<unsigned long long>(stats.workers_started));
  as_expected = as_expected && stats.tasks_timed_out == 2 && stats.workers_started == 4;
  std::printf("%s\n", as_expected ? "timeouts behaved as expected" : "UNEXPECTED RESULT");
  return as_expected ? 0 : 1;
}
