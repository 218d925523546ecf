// tests/mpi/test_mpi.cpp — mproc::mpi::Pool under mpirun -np 3 (a driver and two agents):
// results and order, spread over agents, crashes, retries, timeouts; and the roles that the
// agent-death and two-host tests run (see run_mpi_test.sh).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/mpi.hpp"
#include "mproc/queue.hpp"
#include "support/crash.hpp"

namespace {

int square(int x) { return x * x; }
// Large arguments among small ones: apply() borrows them, and mproc::mpi::Pool copies them
// into the request before they cross to an agent.
std::uint64_t weigh(int a, std::vector<std::uint8_t> big, int b) {
  std::uint64_t sum = static_cast<std::uint64_t>(a) * 1000 + static_cast<std::uint64_t>(b);
  for (std::size_t i = 0; i < big.size(); ++i) sum += big[i] * (i % 7 + 1);
  return sum;
}
int add(int a, int b) { return a + b; }

// The rank of the agent whose worker runs this (workers inherit the launcher's environment).
// The pid of the agent whose worker runs this: a worker's parent is its agent's zygote,
// whose parent is the agent (field 4 of /proc/<pid>/stat).
long agent_pid(int) {
  std::ifstream stat("/proc/" + std::to_string(::getppid()) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  char state = 0;
  long parent = -1;
  fields >> state >> parent;
  return parent;
}

std::string agent_host(int) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

int segfault_on_37(int x) {
  if (x == 37) mproc_test::segfault();  // a real SIGSEGV, also under UBSan (not a null store)
  return x * 2;
}

int abort_now() {
  std::abort();
}

int throw_runtime_error(int x) {
  if (x % 10 == 3) throw std::runtime_error("bad item " + std::to_string(x));
  return x;
}

// Crashes the first time it runs (the marker file does not exist yet), succeeds after.
int crash_once(std::string marker) {
  if (::access(marker.c_str(), F_OK) != 0) {
    std::ofstream(marker) << "crashed\n";
    std::abort();
  }
  return 42;
}

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

int initialized_value = 0;
void set_value(int value) { initialized_value = value; }
int read_value(int) { return initialized_value; }

int queue_size(mproc::Queue<int> queue) { return static_cast<int>(queue.qsize()); }

std::string temp_dir() {
  std::string pattern = "/tmp/mproc-mpi-test-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
  return pattern;
}

TEST(mpi_test, job_has_a_driver_and_two_agents) {
  EXPECT_EQ(mproc::mpi::rank(), 0);
  ASSERT_EQ(mproc::mpi::size(), 3);
  mproc::mpi::Pool pool(2);
  ASSERT_EQ(pool.agents().size(), 2u);
  EXPECT_EQ(pool.agents()[0].rank, 1);
  EXPECT_EQ(pool.agents()[1].rank, 2);
  EXPECT_EQ(pool.processes(), 4u);
}

TEST(mpi_test, map_keeps_input_order) {
  mproc::mpi::Pool pool(2);
  std::vector<int> items(1000);
  for (int i = 0; i < 1000; ++i) items[static_cast<std::size_t>(i)] = i;
  for (std::size_t chunksize : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}}) {
    auto squares = pool.map(square, items, chunksize);
    ASSERT_EQ(squares.size(), items.size());
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(squares[static_cast<std::size_t>(i)], i * i) << "chunksize " << chunksize;
  }
  EXPECT_EQ(pool.apply(square, 12), 144);
  std::vector<std::uint8_t> big(std::size_t{3} << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 31 + 7);
  EXPECT_EQ(pool.apply(weigh, 5, big, 9), weigh(5, big, 9));
  auto future = pool.apply_async(add, 40, 2);
  EXPECT_EQ(future.get(), 42);
  std::vector<std::tuple<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  int expected = 0;
  for (int value : pool.imap(square, items, 3)) {
    ASSERT_EQ(value, expected * expected);
    ++expected;
  }
  EXPECT_EQ(expected, 1000);
  std::multiset<int> unordered;
  for (int value : pool.imap_unordered(square, items)) unordered.insert(value);
  EXPECT_EQ(unordered.size(), 1000u);
  EXPECT_EQ(*unordered.rbegin(), 999 * 999);
  pool.close();
  pool.join();
  EXPECT_GE(pool.stats().tasks_done, 4u);
  EXPECT_EQ(pool.stats().tasks_failed, 0u);
}

TEST(mpi_test, tasks_land_on_every_agent) {
  mproc::mpi::Pool pool(2);
  std::vector<int> items(200, 0);
  auto pids = pool.map(agent_pid, items, 1);
  std::set<long> seen(pids.begin(), pids.end());
  ASSERT_EQ(pool.agents().size(), 2u);
  EXPECT_EQ(seen, (std::set<long>{pool.agents()[0].pid, pool.agents()[1].pid}));
  auto hosts = pool.map(agent_host, std::vector<int>(10, 0), 1);
  EXPECT_FALSE(hosts[0].empty());
}

TEST(mpi_test, exceptions_come_back_as_themselves) {
  mproc::mpi::Pool pool(2);
  std::vector<int> items(50);
  for (int i = 0; i < 50; ++i) items[static_cast<std::size_t>(i)] = i;
  try {
    pool.map(throw_runtime_error, items, 4);
    FAIL() << "map should have thrown";
  } catch (const std::runtime_error& e) {
    // The first failed chunk to arrive fails the map: one of items 3, 13, 23, ...
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("bad item ", 0), 0u) << what;
    EXPECT_EQ(what.back(), '3') << what;
  }
  auto results = pool.map(throw_runtime_error, items, mproc::collect, {.chunksize = 4});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)].ok(), i % 10 != 3) << i;
}

TEST(mpi_test, segfaulting_item_fails_alone_and_the_job_lives_on) {
  mproc::mpi::Pool pool(2);
  std::vector<int> items(100);
  for (int i = 0; i < 100; ++i) items[static_cast<std::size_t>(i)] = i;
  for (std::size_t chunksize : {std::size_t{0}, std::size_t{1}, std::size_t{16}}) {
    auto results = pool.map(segfault_on_37, items, mproc::collect, {.chunksize = chunksize});
    ASSERT_EQ(results.size(), 100u);
    for (int i = 0; i < 100; ++i) {
      const auto& result = results[static_cast<std::size_t>(i)];
      if (i != 37) {
        ASSERT_TRUE(result.ok()) << "item " << i << " chunksize " << chunksize;
        EXPECT_EQ(result.value(), 2 * i);
        continue;
      }
      ASSERT_FALSE(result.ok());
      try {
        std::rethrow_exception(result.error());
      } catch (const mproc::WorkerCrashed& e) {
        EXPECT_EQ(e.report().signal_name, "SIGSEGV");
        ASSERT_TRUE(e.report().item.has_value());
        EXPECT_EQ(*e.report().item, 37u);
        EXPECT_NE(e.report().function.find("segfault_on_37"), std::string::npos) << e.report().function;
        EXPECT_NE(std::string(e.what()).find("on rank "), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_THROW(pool.map(segfault_on_37, items), mproc::WorkerCrashed);
  EXPECT_THROW(pool.apply(abort_now), mproc::WorkerCrashed);
  EXPECT_EQ(pool.apply(square, 9), 81);  // the job is alive
  EXPECT_GE(pool.stats().workers_died, 1u);
}

TEST(mpi_test, crashed_task_is_retried) {
  const std::string dir = temp_dir();
  const std::string marker = dir + "/crashed";
  {
    mproc::mpi::Pool pool(mproc::PoolOptions{.processes = 1, .max_retries = 1});
    EXPECT_EQ(pool.apply(crash_once, marker), 42);
    pool.close();
    pool.join();
    EXPECT_EQ(pool.stats().tasks_retried, 1u);
    EXPECT_EQ(pool.stats().tasks_failed, 0u);
  }
  ::unlink(marker.c_str());
  {
    mproc::mpi::Pool pool(1);  // no retries: the crash is reported
    EXPECT_THROW(pool.apply(crash_once, marker), mproc::WorkerCrashed);
    EXPECT_EQ(pool.apply(crash_once, marker), 42);
  }
  ::unlink(marker.c_str());
  ::rmdir(dir.c_str());
}

TEST(mpi_test, task_over_its_timeout_fails_with_task_timeout) {
  mproc::mpi::Pool pool(1);
  auto slow = pool.apply_async(mproc::TaskOptions{.timeout = std::chrono::milliseconds(200)}, sleep_ms, 60'000);
  auto fast = pool.apply_async(sleep_ms, 1);
  try {
    slow.get();
    FAIL() << "the task should have timed out";
  } catch (const mproc::TaskTimeout& e) {
    EXPECT_EQ(e.limit(), std::chrono::milliseconds(200));
  }
  EXPECT_EQ(fast.get(), 1);
  EXPECT_EQ(pool.apply(square, 5), 25);
  EXPECT_EQ(pool.stats().tasks_timed_out, 1u);
}

TEST(mpi_test, pending_task_can_be_cancelled) {
  mproc::mpi::Pool pool(1);  // 2 workers in all: a few tasks in flight, the rest pending
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(pool.apply_async(sleep_ms, 200));
  EXPECT_TRUE(futures.back().cancel());
  EXPECT_THROW(futures.back().get(), mproc::CancelledError);
  pool.terminate();
  pool.join();
  EXPECT_THROW(futures.front().get(), mproc::PoolTerminated);
}

TEST(mpi_test, initializer_runs_in_every_worker) {
  mproc::mpi::Pool pool(mproc::PoolOptions{.processes = 2, .initializer = {set_value, 7}});
  auto values = pool.map(read_value, std::vector<int>(16, 0), 1);
  EXPECT_EQ(values, std::vector<int>(16, 7));
}

TEST(mpi_test, arguments_with_descriptors_are_refused) {
  mproc::mpi::Pool pool(1);
  mproc::Queue<int> queue;
  EXPECT_THROW(pool.apply_async(queue_size, queue), std::invalid_argument);
  EXPECT_THROW(mproc::mpi::Pool(2), std::logic_error);  // one pool at a time
}

TEST(mpi_role, agent_killed) {
  // The job must end, non-zero, naming the rank: killing agent rank 2 from here (same host).
  mproc::mpi::Pool pool(1);
  ASSERT_EQ(pool.agents().size(), 2u);
  const long pid = pool.agents()[1].pid;
  std::fprintf(stderr, "test: killing agent rank 2 (pid %ld)\n", pid);
  auto future = pool.map_async(sleep_ms, std::vector<int>(100, 50), 1);
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
  future.wait();
  FAIL() << "the driver should have been ended with the job";
}

// Not a ctest case (a measurement): the CPU an idle pool costs, driver and agents.
TEST(mpi_role, idle_cpu) {
  auto cpu_seconds = [](long pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(in, line);
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::vector<std::string> fields;
    for (std::string field; rest >> field;) fields.push_back(field);
    return (std::stod(fields[11]) + std::stod(fields[12])) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  };
  mproc::mpi::Pool pool(1);
  pool.apply(square, 1);
  std::vector<long> pids = {static_cast<long>(::getpid())};
  for (const auto& agent : pool.agents()) pids.push_back(agent.pid);
  std::vector<double> before;
  for (long pid : pids) before.push_back(cpu_seconds(pid));
  std::this_thread::sleep_for(std::chrono::seconds(10));
  for (std::size_t i = 0; i < pids.size(); ++i)
    std::fprintf(stderr, "idle: rank %zu used %.2f%% of a core\n", i, (cpu_seconds(pids[i]) - before[i]) / 10 * 100);
}

TEST(mpi_role, two_hosts) {
  mproc::mpi::Pool pool(1);
  ASSERT_EQ(pool.agents().size(), 2u);
  std::set<std::string> hosts;
  for (const auto& agent : pool.agents()) hosts.insert(agent.host);
  std::fprintf(stderr, "test: agents on %s and %s\n", pool.agents()[0].host.c_str(), pool.agents()[1].host.c_str());
  std::vector<int> items(200);
  for (int i = 0; i < 200; ++i) items[static_cast<std::size_t>(i)] = i;
  auto squares = pool.map(square, items, 1);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(squares[static_cast<std::size_t>(i)], i * i);
  auto pids = pool.map(agent_pid, std::vector<int>(100, 0), 1);
  EXPECT_EQ(std::set<long>(pids.begin(), pids.end()), (std::set<long>{pool.agents()[0].pid, pool.agents()[1].pid}));
  auto results = pool.map(segfault_on_37, items, mproc::collect, {.chunksize = 8});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)].ok(), i != 37) << i;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun, ranks 1 and 2 serve the pool and never return. Started as a plain program
  // with MPROC_TEST_SPAWN_AGENTS=N (run_mpi_test.sh spawn), it spawns N agents itself.
  const char* spawn = std::getenv("MPROC_TEST_SPAWN_AGENTS");
  mproc::mpi::init(argc, argv, spawn ? static_cast<unsigned>(std::atoi(spawn)) : 0u);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
