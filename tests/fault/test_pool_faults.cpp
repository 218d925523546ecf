// tests/fault/test_pool_faults.cpp — workers that crash, hang, leak or fail to start, under
// every start method: only the task that did it fails, and the pool never hangs.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "launch/launcher.hpp"
#include "mproc/pool.hpp"
#include "support/crash.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Pool;
using mproc::PoolOptions;
using mproc::StartMethod;

namespace {

int square(int x) { return x * x; }
int segfault_task(int) { mproc_test::segfault(); }
int abort_task(int) { std::abort(); }
int exit_task(int code) { std::exit(code); }
int sigkill_task(int) {
  ::raise(SIGKILL);
  return 0;
}
int crash_on(int x) {
  if (x == 37 || x == 61) mproc_test::segfault();
  return x * 2;
}
int hang_task(int) {
  for (;;) ::pause();
}
int hang_on(int x) {
  if (x == 2) for (;;) ::pause();
  return x;
}
// Allocates with malloc and throws std::bad_alloc on failure, as operator new does (under
// ASan operator new aborts on failure instead; malloc returns NULL there too).
int allocate_mib(int mib) {
  const std::size_t size = static_cast<std::size_t>(mib) << 20;
  char* block = static_cast<char*>(std::malloc(size));
  if (!block) throw std::bad_alloc();
  std::memset(block, 1, size);
  int middle = block[size / 2];
  std::free(block);
  return middle;
}
void failing_initializer() { std::exit(3); }
int write_stderr_then_crash(int) {
  std::fputs("about to crash: last words\n", stderr);
  std::fflush(stderr);
  mproc_test::segfault();
}
// Dies the first time it runs with a given marker (the marker file exists after), then
// succeeds. `how`: 0 SIGKILL, 1 SIGSEGV, 2 abort(), 3 exit(3).
int crash_once_by(std::string marker, int how) {
  if (::access(marker.c_str(), F_OK) != 0) {
    if (FILE* f = std::fopen(marker.c_str(), "w")) std::fclose(f);
    switch (how) {
      case 1: mproc_test::segfault();
      case 2: std::abort();
      case 3: std::exit(3);
      default: ::raise(SIGKILL);
    }
  }
  return 7;
}
int crash_once(std::string marker) { return crash_once_by(marker, 0); }

// The first call dies after it has read its large argument; the retry sums it.
std::uint64_t sum_after_crashing_once(std::string marker, std::vector<std::uint8_t> big) {
  std::uint64_t sum = 0;
  for (auto b : big) sum += b;
  crash_once_by(marker, 0);
  return sum;
}

class pool_fault_test : public mproc_test::LeakCheckedTest, public ::testing::WithParamInterface<StartMethod> {
 protected:
  PoolOptions options(unsigned processes = 2) const {
    return PoolOptions{.processes = processes, .start_method = GetParam()};
  }
};

template <class F>
void expect_crash(Pool& pool, F task, int arg, const std::string& signal_or_exit) {
  try {
    pool.apply(task, arg);
    ADD_FAILURE() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_NE(std::string(e.what()).find(signal_or_exit), std::string::npos) << e.what();
    EXPECT_GT(e.report().pid, 0);
  }
  EXPECT_EQ(pool.apply(square, 5), 25);  // a replacement worker took over
}

}  // namespace

TEST_P(pool_fault_test, a_crashing_task_fails_alone_with_worker_crashed) {
  Pool pool(options());
  auto healthy = pool.apply_async(square, 4);
  expect_crash(pool, segfault_task, 0, "SIGSEGV");
  expect_crash(pool, abort_task, 0, "SIGABRT");
  expect_crash(pool, sigkill_task, 0, "SIGKILL");
  expect_crash(pool, exit_task, 3, "exited with status 3");
  EXPECT_EQ(healthy.get(), 16);
  auto stats = pool.stats();
  EXPECT_EQ(stats.workers_died, 4u);
  EXPECT_EQ(stats.workers_started, 2u + 4u);
}

TEST_P(pool_fault_test, crash_report_carries_signal_function_and_stderr_tail) {
  Pool pool(options());
  try {
    pool.apply(write_stderr_then_crash, 0);
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.report().signal, SIGSEGV);
    EXPECT_EQ(e.report().signal_name, "SIGSEGV");
    EXPECT_NE(e.report().function.find("write_stderr_then_crash"), std::string::npos) << e.report().function;
    EXPECT_NE(e.report().stderr_tail.find("last words"), std::string::npos) << e.report().stderr_tail;
    EXPECT_FALSE(e.report().oom_killed);
  }
}

TEST_P(pool_fault_test, retries_rerun_a_task_whose_worker_died) {
  auto opts = options();
  opts.max_retries = 2;
  Pool pool(opts);
  std::string marker = "/tmp/mproc-crash-once-" + std::to_string(::getpid()) + "-" + mproc::to_string(GetParam());
  ::unlink(marker.c_str());
  EXPECT_EQ(pool.apply(crash_once, marker), 7);
  ::unlink(marker.c_str());
  EXPECT_EQ(pool.stats().tasks_retried, 1u);
  // Every way of dying is retried the same way.
  for (int how : {1, 2, 3}) {
    ::unlink(marker.c_str());
    EXPECT_EQ(pool.apply(crash_once_by, marker, how), 7) << "how " << how;
  }
  ::unlink(marker.c_str());
  EXPECT_EQ(pool.stats().tasks_retried, 4u);
  // Without retries left, a crash is reported.
  EXPECT_THROW(pool.apply_async(mproc::TaskOptions{.max_retries = 0}, segfault_task, 0).get(), mproc::WorkerCrashed);
}

TEST_P(pool_fault_test, a_retried_apply_sends_its_borrowed_argument_again) {
  // apply() does not copy a large argument ahead (the caller's object is read when the task
  // is written to a worker): the retry after a crash must read it again, whole.
  auto opts = options();
  opts.max_retries = 1;
  Pool pool(opts);
  std::string marker = "/tmp/mproc-borrowed-retry-" + std::to_string(::getpid()) + "-" + mproc::to_string(GetParam());
  for (std::size_t size : {std::size_t{100} << 10, std::size_t{6} << 20}) {  // in the ring, in the overflow segment
    std::vector<std::uint8_t> big(size);
    std::uint64_t expected = 0;
    for (std::size_t i = 0; i < size; ++i) expected += big[i] = static_cast<std::uint8_t>(i * 13 + 5);
    ::unlink(marker.c_str());
    EXPECT_EQ(pool.apply(sum_after_crashing_once, marker, big), expected) << size;
  }
  ::unlink(marker.c_str());
  EXPECT_EQ(pool.stats().tasks_retried, 2u);
}

TEST_P(pool_fault_test, a_map_chunk_with_poison_items_delivers_every_other_result) {
  Pool pool(options());
  std::vector<int> input(100);
  for (int i = 0; i < 100; ++i) input[i] = i;
  auto results = pool.map(crash_on, input, mproc::collect, mproc::MapOptions{.chunksize = 50});
  ASSERT_EQ(results.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    if (i == 37 || i == 61) {
      ASSERT_FALSE(results[i].ok()) << i;
      try {
        std::rethrow_exception(results[i].error());
      } catch (const mproc::WorkerCrashed& e) {
        EXPECT_EQ(e.report().item, static_cast<std::size_t>(i));
        EXPECT_EQ(e.report().signal, SIGSEGV);
      }
    } else {
      ASSERT_TRUE(results[i].ok()) << i;
      EXPECT_EQ(results[i].value(), 2 * i);
    }
  }
  try {
    pool.map(crash_on, input, 50);
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    ASSERT_TRUE(e.report().item.has_value());
    EXPECT_TRUE(*e.report().item == 37 || *e.report().item == 61) << *e.report().item;
  }
}

TEST_P(pool_fault_test, imap_names_the_poison_item_and_yields_the_rest) {
  Pool pool(options());
  std::vector<int> input(80);
  for (int i = 0; i < 80; ++i) input[i] = i;
  int delivered = 0, crashed = 0;
  auto results = pool.imap(crash_on, input, 8);
  for (auto it = results.begin(); it != results.end(); ++it) {
    try {
      int v = *it;
      EXPECT_EQ(v % 2, 0);
      ++delivered;
    } catch (const mproc::WorkerCrashed& e) {
      EXPECT_TRUE(e.report().item == 37u || e.report().item == 61u);
      ++crashed;
    }
  }
  EXPECT_EQ(delivered, 78);
  EXPECT_EQ(crashed, 2);
}

TEST_P(pool_fault_test, a_hanging_task_times_out_and_its_worker_is_replaced) {
  auto opts = options();
  opts.task_timeout = 200ms;
  Pool pool(opts);
  auto hung = pool.apply_async(hang_task, 0);
  auto fine = pool.apply_async(square, 3);
  try {
    hung.get();
    FAIL() << "no exception";
  } catch (const mproc::TaskTimeout& e) {
    EXPECT_EQ(e.limit(), 200ms);
    EXPECT_EQ(e.report().signal, SIGKILL);
  }
  EXPECT_EQ(fine.get(), 9);
  EXPECT_EQ(pool.apply(square, 4), 16);
  EXPECT_EQ(pool.stats().tasks_timed_out, 1u);
}

TEST_P(pool_fault_test, a_per_call_timeout_overrides_the_pool_default) {
  Pool pool(options());
  auto results = pool.map(hang_on, std::vector{0, 1, 2, 3}, mproc::collect,
                          mproc::MapOptions{.chunksize = 1, .timeout = 200ms});
  ASSERT_EQ(results.size(), 4u);
  EXPECT_TRUE(results[0].ok());
  EXPECT_THROW(results[2].value(), mproc::TaskTimeout);
  EXPECT_EQ(results[3].value(), 3);
  EXPECT_THROW(pool.apply_async(mproc::TaskOptions{.timeout = 100ms}, hang_task, 0).get(), mproc::TaskTimeout);
}

TEST_P(pool_fault_test, a_memory_hog_fails_with_memory_limit_exceeded) {
  auto opts = options(1);
  opts.max_memory_per_child = std::size_t{256} << 20;
  Pool pool(opts);
  EXPECT_EQ(pool.apply(allocate_mib, 16), 1);
  try {
    pool.apply(allocate_mib, 1024);
    FAIL() << "no exception";
  } catch (const mproc::MemoryLimitExceeded& e) {
    EXPECT_EQ(e.limit_bytes(), std::size_t{256} << 20);
  }
  EXPECT_EQ(pool.apply(allocate_mib, 16), 1);
}

TEST_P(pool_fault_test, an_initializer_that_crashes_breaks_the_pool_fast) {
  auto opts = options();
  opts.initializer = mproc::Initializer(failing_initializer);
  Pool pool(opts);
  // The workers may break the pool before this thread submits anything (they can die three
  // times over while it is descheduled): then apply_async throws, else the future does.
  EXPECT_THROW(pool.apply_async(square, 2).get(60s), mproc::PoolBroken);
  EXPECT_THROW(pool.apply_async(square, 2), mproc::PoolBroken);
}

TEST_P(pool_fault_test, terminate_fails_pending_futures_with_pool_terminated) {
  Pool pool(options(1));
  auto hung = pool.apply_async(hang_task, 0);
  auto queued = pool.apply_async(square, 2);
  pool.terminate();
  EXPECT_THROW(hung.get(), mproc::PoolTerminated);
  EXPECT_THROW(queued.get(), mproc::PoolTerminated);
  pool.join();
}

TEST_P(pool_fault_test, a_thousand_tasks_with_random_worker_kills_all_resolve) {
  auto opts = options();
  opts.max_retries = 0;
  Pool pool(opts);
  std::vector<mproc::Future<int>> futures;
  std::mt19937 random(12345);
  for (int i = 0; i < 1000; ++i) futures.push_back(random() % 25 == 0 ? pool.apply_async(sigkill_task, i) : pool.apply_async(square, i));
  int values = 0, crashes = 0;
  for (auto& f : futures) {
    try {
      f.get(60s);
      ++values;
    } catch (const mproc::WorkerCrashed&) {
      ++crashes;
    }
  }
  EXPECT_EQ(values + crashes, 1000);
  EXPECT_GT(crashes, 0);
  EXPECT_EQ(pool.stats().workers_died, static_cast<std::uint64_t>(crashes));
}

INSTANTIATE_TEST_SUITE_P(every_start_method, pool_fault_test,
                         ::testing::Values(StartMethod::fork, StartMethod::forkserver, StartMethod::spawn),
                         [](const auto& info) { return std::string(mproc::to_string(info.param)); });

using pool_interrupt_test = mproc_test::LeakCheckedTest;
using pool_helper_fault_test = mproc_test::LeakCheckedTest;

TEST_F(pool_interrupt_test, sigint_to_the_process_group_during_map_ends_everything) {
  // The program under test runs in a child with its own process group, like a shell job.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t program = ::fork();
  ASSERT_GE(program, 0);
  if (program == 0) {
    ::setpgid(0, 0);
    ::close(ready[0]);
    ::signal(SIGINT, SIG_DFL);
    Pool pool(2);
    (void)!::write(ready[1], "r", 1);
    ::close(ready[1]);
    for (;;) pool.map(hang_on, std::vector<int>{2, 2, 2, 2});
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(::kill(-program, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(program, &status, 0), program);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
  // Everything it started (zygote, workers) is gone within 2 s; reap what was re-parented here.
  auto deadline = std::chrono::steady_clock::now() + 2s;
  std::vector<pid_t> left;
  do {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    left = mproc_test::descendants();
  } while (!left.empty() && std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(left.empty()) << left.size() << " processes outlived the interrupted program";
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST_F(pool_helper_fault_test, the_pool_survives_the_death_of_its_zygote_or_forkserver) {
  for (auto method : {StartMethod::fork, StartMethod::forkserver}) {
    mproc::detail::stop_forkserver();  // none left over from an earlier test in this process
    Pool pool(PoolOptions{.processes = 2, .start_method = method});
    EXPECT_EQ(pool.apply(square, 3), 9);
    // Workers are the helper's children, so this process's direct children are exactly the
    // helpers that fork workers: the pool's zygote (fork) or the forkserver.
    std::vector<pid_t> helpers = mproc_test::children_of(::getpid());
    ASSERT_EQ(helpers.size(), 1u) << mproc::to_string(method);
    ::kill(helpers[0], SIGKILL);
    // Workers that crash now need replacements from a helper that is gone.
    for (int i = 0; i < 4; ++i) EXPECT_THROW(pool.apply(sigkill_task, 0), mproc::WorkerCrashed);
    EXPECT_EQ(pool.apply(square, 4), 16);
    EXPECT_EQ(pool.stats().workers_died, 4u);
    ::waitpid(helpers[0], nullptr, 0);
  }
  mproc::detail::stop_forkserver();
}

// A SIGSTOPped helper never answers: the pool must not wait for it for ever. The crashed
// worker's status (which the helper would report) is given up on after a bound, the launch of
// its replacement times out, the helper is killed, and the pool goes on without it.
TEST_F(pool_helper_fault_test, a_stopped_zygote_or_forkserver_does_not_freeze_the_pool) {
  for (auto method : {StartMethod::fork, StartMethod::forkserver}) {
    mproc::detail::stop_forkserver();
    Pool pool(PoolOptions{.processes = 2, .start_method = method});
    EXPECT_EQ(pool.apply(square, 3), 9);
    std::vector<pid_t> helpers = mproc_test::children_of(::getpid());
    ASSERT_EQ(helpers.size(), 1u) << mproc::to_string(method);
    ASSERT_EQ(::kill(helpers[0], SIGSTOP), 0);
    EXPECT_THROW(pool.apply(sigkill_task, 0), mproc::WorkerCrashed);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(pool.apply(square, i), i * i);
    EXPECT_EQ(pool.stats().workers_died, 1u);
    // Killed and reaped by the pool or the launcher, not left stopped behind them.
    int status = 0;
    const pid_t reaped = ::waitpid(helpers[0], &status, WNOHANG);
    if (reaped == helpers[0])
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << mproc::to_string(method);
    else
      EXPECT_TRUE(reaped == -1 && errno == ECHILD && ::kill(helpers[0], 0) == -1) << mproc::to_string(method);
  }
  mproc::detail::stop_forkserver();
}

namespace {
int allocate_in_map(int mib) { return allocate_mib(mib); }
}  // namespace

TEST_F(pool_helper_fault_test, a_memory_hog_inside_a_map_fails_with_memory_limit_exceeded) {
  Pool pool(PoolOptions{.processes = 1, .max_memory_per_child = std::size_t{256} << 20});
  auto results = pool.map(allocate_in_map, std::vector{8, 2048, 8}, mproc::collect, mproc::MapOptions{.chunksize = 3});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].value(), 1);
  EXPECT_THROW(results[1].value(), mproc::MemoryLimitExceeded);
  EXPECT_EQ(results[2].value(), 1);
  // The one worker ended after that chunk; the next task can only run on its replacement.
  EXPECT_EQ(pool.apply(square, 2), 4);
  EXPECT_GE(pool.stats().workers_recycled, 1u);
}
