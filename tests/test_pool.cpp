// tests/test_pool.cpp — the Pool API under every start method: apply, map, imap,
// starmap, futures, initializer, recycling, exceptions that keep their type, close/join.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <numeric>
#include <ranges>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/pool.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Pool;
using mproc::PoolOptions;
using mproc::StartMethod;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
std::string greet(std::string name, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += "hi " + name + ";";
  return out;
}
int worker_pid(int) { return ::getpid(); }
void nothing() {}

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
MPROC_REGISTER_EXCEPTION(ParseError);
struct UnregisteredError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int throw_invalid_argument(int) { throw std::invalid_argument("bad argument 7"); }
int throw_registered(int) { throw ParseError("line 3: unexpected token"); }
int throw_unregistered(int) { throw UnregisteredError("nobody knows me"); }
int fail_on_three(int x) {
  if (x == 3) throw std::out_of_range("three is out");
  return x;
}

// Throws for multiples of 7; chunks of ints take the pool's byte-copy path.
double fail_on_sevens(int x) {
  if (x % 7 == 0) throw std::domain_error("multiple of seven: " + std::to_string(x));
  return x * 0.5;
}
// The same over strings: chunks that are encoded element by element.
std::string shout_unless_seven(std::string s) {
  if (s.size() == 7) throw std::domain_error("seven letters: " + s);
  return s + "!";
}
struct Point {
  int x, y;
  friend bool operator==(const Point&, const Point&) = default;
};
Point swap_point(Point p) { return Point{p.y, p.x}; }

int initialized_value = 0;
void initialize(int value) { initialized_value = value; }
int read_initialized(int) { return initialized_value; }

class pool_test : public mproc_test::LeakCheckedTest, public ::testing::WithParamInterface<StartMethod> {
 protected:
  PoolOptions options(unsigned processes = 2) const {
    return PoolOptions{.processes = processes, .start_method = GetParam()};
  }
};

}  // namespace

TEST_P(pool_test, apply_returns_the_result) {
  Pool pool(options());
  EXPECT_EQ(pool.apply(square, 7), 49);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  EXPECT_EQ(pool.apply(greet, "ann", 2), "hi ann;hi ann;");
  EXPECT_EQ(pool.apply([](int x) { return x + 1; }, 41), 42);
  pool.apply(nothing);
}

TEST_P(pool_test, apply_runs_in_another_process) {
  Pool pool(options());
  EXPECT_NE(pool.apply(worker_pid, 0), ::getpid());
}

TEST_P(pool_test, apply_async_futures_resolve_in_any_order) {
  Pool pool(options());
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 200; ++i) futures.push_back(pool.apply_async(square, i));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(futures[i].get(), i * i);
  EXPECT_TRUE(futures[0].ready());
  EXPECT_TRUE(futures[0].successful());
}

TEST_P(pool_test, map_keeps_input_order) {
  Pool pool(options());
  std::vector<int> input(1000);
  std::iota(input.begin(), input.end(), 0);
  auto squares = pool.map(square, input);
  ASSERT_EQ(squares.size(), input.size());
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(squares[i], i * i);
  EXPECT_EQ(pool.map(square, input, 7), squares);  // explicit chunksize
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
}

TEST_P(pool_test, map_async_and_starmap) {
  Pool pool(options());
  auto future = pool.map_async(square, std::vector{1, 2, 3});
  EXPECT_EQ(future.get(), (std::vector{1, 4, 9}));
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector{3, 7, 11}));
  EXPECT_EQ(pool.starmap_async(add, pairs).get(), (std::vector{3, 7, 11}));
}

TEST_P(pool_test, imap_yields_in_order_and_imap_unordered_yields_everything) {
  Pool pool(options());
  std::vector<int> input(100);
  std::iota(input.begin(), input.end(), 0);
  std::vector<int> ordered;
  for (int r : pool.imap(square, input)) ordered.push_back(r);
  ASSERT_EQ(ordered.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ordered[i], i * i);
  std::multiset<int> unordered;
  for (int r : pool.imap_unordered(square, input, 3)) unordered.insert(r);
  EXPECT_EQ(unordered, std::multiset<int>(ordered.begin(), ordered.end()));
}

TEST_P(pool_test, imap_over_an_endless_input_stops_when_the_consumer_stops) {
  Pool pool(options());
  std::vector<int> got;
  for (int r : pool.imap(square, std::views::iota(0))) {
    got.push_back(r);
    if (got.size() == 50) break;
  }
  pool.close();
  pool.join();  // every task that was submitted has finished (or was withdrawn)
  ASSERT_EQ(got.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(got[i], i * i);
  // The input was consumed lazily: at most 2 × processes items beyond what the consumer
  // took were ever submitted, however slowly it read.
  EXPECT_LE(pool.stats().tasks_done, 50u + 2 * pool.processes());
}

TEST_P(pool_test, std_exceptions_arrive_as_themselves) {
  Pool pool(options());
  try {
    pool.apply(throw_invalid_argument, 1);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "bad argument 7");
  }
  EXPECT_EQ(pool.apply(square, 3), 9);  // the worker survived
}

TEST_P(pool_test, registered_exceptions_arrive_as_themselves) {
  Pool pool(options());
  try {
    pool.apply(throw_registered, 1);
    FAIL() << "no exception";
  } catch (const ParseError& e) {
    EXPECT_STREQ(e.what(), "line 3: unexpected token");
  }
}

TEST_P(pool_test, unregistered_exceptions_arrive_as_remote_error) {
  Pool pool(options());
  try {
    pool.apply(throw_unregistered, 1);
    FAIL() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_NE(e.type_name().find("UnregisteredError"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.remote_what(), "nobody knows me");
    // The trace is the thrower's stack, not the worker loop's after unwinding.
    EXPECT_NE(e.remote_traceback().find("throw_unregistered"), std::string::npos) << e.remote_traceback();
  }
}

TEST_P(pool_test, map_throws_the_failed_items_exception_and_collect_returns_every_item) {
  Pool pool(options());
  std::vector<int> input{1, 2, 3, 4, 5};
  EXPECT_THROW(pool.map(fail_on_three, input), std::out_of_range);
  auto results = pool.map(fail_on_three, input, mproc::collect);
  ASSERT_EQ(results.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    if (input[i] == 3) {
      EXPECT_FALSE(results[i].ok());
      EXPECT_THROW(results[i].value(), std::out_of_range);
    } else {
      EXPECT_EQ(results[i].value(), input[i]);
    }
  }
}

TEST_P(pool_test, map_reports_items_that_throw_anywhere_in_a_chunk_and_keeps_every_other_value) {
  Pool pool(options());
  std::vector<int> input(1000);
  std::iota(input.begin(), input.end(), 1);
  for (std::size_t chunksize : {std::size_t{1}, std::size_t{10}, std::size_t{333}, std::size_t{0}}) {
    auto results = pool.map(fail_on_sevens, input, mproc::collect, mproc::MapOptions{.chunksize = chunksize});
    ASSERT_EQ(results.size(), input.size());
    for (std::size_t i = 0; i < input.size(); ++i) {
      if (input[i] % 7 == 0) {
        ASSERT_FALSE(results[i].ok()) << i << " chunksize " << chunksize;
        try {
          std::rethrow_exception(results[i].error());
        } catch (const std::domain_error& e) {
          EXPECT_EQ(std::string(e.what()), "multiple of seven: " + std::to_string(input[i]));
        }
      } else {
        ASSERT_TRUE(results[i].ok()) << i << " chunksize " << chunksize;
        EXPECT_EQ(results[i].value(), input[i] * 0.5);
      }
    }
    EXPECT_THROW(pool.map(fail_on_sevens, input, chunksize), std::domain_error);
  }
  std::vector<std::string> words{"a", "seventy", "bb", "ccc", "sevenup", "dddd"};
  auto shouted = pool.map(shout_unless_seven, words, mproc::collect, mproc::MapOptions{.chunksize = 4});
  ASSERT_EQ(shouted.size(), words.size());
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (words[i].size() == 7)
      EXPECT_THROW(shouted[i].value(), std::domain_error) << i;
    else
      EXPECT_EQ(shouted[i].value(), words[i] + "!");
  }
}

TEST_P(pool_test, map_copies_its_input_when_called_so_later_changes_do_not_reach_the_workers) {
  Pool pool(options());
  std::vector<int> input(10000, 3);
  auto future = pool.map_async(square, input, 100);
  std::fill(input.begin(), input.end(), 5);
  input.clear();
  input.shrink_to_fit();  // the caller's items are gone before the workers are done
  auto squares = future.get();
  ASSERT_EQ(squares.size(), 10000u);
  EXPECT_TRUE(std::all_of(squares.begin(), squares.end(), [](int v) { return v == 9; }));
}

TEST_P(pool_test, map_over_plain_structs_arrays_spans_and_to_strings) {
  Pool pool(options());
  std::vector<Point> points;
  for (int i = 0; i < 500; ++i) points.push_back(Point{i, -i});
  auto swapped = pool.map(swap_point, points, 7);
  ASSERT_EQ(swapped.size(), points.size());
  for (int i = 0; i < 500; ++i) EXPECT_EQ(swapped[i], (Point{-i, i}));
  std::array<int, 5> fixed{1, 2, 3, 4, 5};
  EXPECT_EQ(pool.map(square, fixed), (std::vector{1, 4, 9, 16, 25}));
  std::vector<int> big(1000);
  std::iota(big.begin(), big.end(), 0);
  EXPECT_EQ(pool.map(square, std::span<const int>(big).subspan(10, 3)), (std::vector{100, 121, 144}));
  auto named = pool.map([](int v) { return std::to_string(v * 3); }, big, 64);
  ASSERT_EQ(named.size(), big.size());
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(named[i], std::to_string(3 * i));
}

TEST_P(pool_test, initializer_runs_in_every_worker) {
  auto opts = options();
  opts.initializer = {initialize, 17};
  Pool pool(opts);
  auto values = pool.map(read_initialized, std::vector<int>(20, 0), 1);
  for (int v : values) EXPECT_EQ(v, 17);
}

TEST_P(pool_test, max_tasks_per_child_recycles_workers) {
  auto opts = options(1);
  opts.max_tasks_per_child = 2;
  Pool pool(opts);
  std::set<int> pids;
  for (int i = 0; i < 6; ++i) pids.insert(pool.apply(worker_pid, i));
  EXPECT_EQ(pids.size(), 3u);
  EXPECT_GE(pool.stats().workers_recycled, 2u);
}

TEST_P(pool_test, future_then_callbacks_run_once) {
  Pool pool(options());
  std::atomic<int> value{0}, errors{0};
  auto ok = pool.apply_async(square, 6);
  ok.then([&](const int& v) { value = v; }, [&](std::exception_ptr) { ++errors; });
  auto bad = pool.apply_async(throw_invalid_argument, 0);
  bad.then([&](const int&) { value = -1; }, [&](std::exception_ptr) { ++errors; });
  ok.wait();
  bad.wait();
  pool.close();
  pool.join();  // callbacks ran in the pool's thread, before it ended
  EXPECT_EQ(value.load(), 36);
  EXPECT_EQ(errors.load(), 1);
}

TEST_P(pool_test, as_completed_and_wait_see_every_future) {
  Pool pool(options());
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(pool.apply_async(square, i));
  std::set<int> seen;
  for (auto f : mproc::as_completed(futures)) seen.insert(f.get());
  EXPECT_EQ(seen.size(), 20u);
  auto result = mproc::wait(futures, 60s, mproc::ReturnWhen::ALL_COMPLETED);
  EXPECT_EQ(result.done.size(), 20u);
  EXPECT_TRUE(result.not_done.empty());
}

TEST_P(pool_test, close_refuses_new_work_and_join_waits_for_submitted_work) {
  Pool pool(options());
  auto future = pool.apply_async(square, 5);
  pool.close();
  EXPECT_THROW(pool.apply_async(square, 1), mproc::PoolClosed);
  pool.join();
  EXPECT_EQ(future.get(), 25);
}

TEST_P(pool_test, destructor_finishes_submitted_work) {
  mproc::Future<int> future;
  {
    Pool pool(options());
    future = pool.apply_async(square, 9);
  }
  EXPECT_EQ(future.get(), 81);
}

TEST_P(pool_test, stats_count_tasks_and_workers) {
  Pool pool(options());
  pool.map(square, std::vector<int>(10, 1), 1);
  EXPECT_THROW(pool.apply(throw_invalid_argument, 0), std::invalid_argument);
  auto stats = pool.stats();
  EXPECT_EQ(stats.tasks_done, 10u);
  EXPECT_EQ(stats.tasks_failed, 1u);
  EXPECT_EQ(stats.workers_started, 2u);
  EXPECT_EQ(stats.workers_died, 0u);
}

TEST_P(pool_test, progress_callback_reaches_the_total) {
  Pool pool(options());
  std::atomic<std::size_t> last_done{0}, total{0};
  mproc::MapOptions map_options;
  map_options.chunksize = 4;
  map_options.progress = [&](const mproc::Progress& p) {
    last_done = p.done;
    total = p.total;
  };
  pool.map(square, std::vector<int>(40, 2), map_options);
  EXPECT_EQ(last_done.load(), 40u);
  EXPECT_EQ(total.load(), 40u);
}

INSTANTIATE_TEST_SUITE_P(every_start_method, pool_test,
                         ::testing::Values(StartMethod::fork, StartMethod::forkserver, StartMethod::spawn),
                         [](const auto& info) { return std::string(mproc::to_string(info.param)); });

TEST(pool_options_test, out_of_range_process_count_is_invalid_argument) {
  EXPECT_THROW(Pool pool(100000), std::invalid_argument);
}

namespace {
std::vector<std::uint8_t> echo_bytes(std::vector<std::uint8_t> bytes) { return bytes; }
std::size_t count_bytes(std::vector<std::uint8_t> bytes) { return bytes.size(); }
}  // namespace

TEST_P(pool_test, large_arguments_and_results_travel_through_their_own_segment) {
  Pool pool(options());
  // 100 KiB goes in the rings (apply borrows it, the worker sends it from the result itself),
  // 3 and 40 MiB through the overflow segments, 1 KiB as any small value.
  for (std::size_t size : {std::size_t{100} << 10, std::size_t{3} << 20, std::size_t{40} << 20, std::size_t{1} << 10}) {
    std::vector<std::uint8_t> data(size);
    for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::uint8_t>(i * 31 + 7);
    auto back = pool.apply(echo_bytes, data);
    EXPECT_TRUE(back == data) << size;
  }
  // Several large tasks in flight at once, to every worker.
  std::vector<mproc::Future<std::size_t>> futures;
  for (int i = 0; i < 6; ++i) futures.push_back(pool.apply_async(count_bytes, std::vector<std::uint8_t>(std::size_t{5} << 20, 1)));
  for (auto& f : futures) EXPECT_EQ(f.get(), std::size_t{5} << 20);
}

namespace {
std::string fingerprint(std::span<const std::uint8_t> bytes) {
  std::uint64_t hash = 1469598103934665603u;
  for (auto b : bytes) hash = (hash ^ b) * 1099511628211u;
  return std::to_string(bytes.size()) + ":" + std::to_string(hash);
}
std::string fingerprints(int a, std::vector<std::uint8_t> big, std::string text, std::vector<std::uint8_t> huge, int b) {
  return std::to_string(a) + " " + fingerprint(big) + " " + std::to_string(text.size()) + text.substr(0, 3) + " " +
         fingerprint(huge) + " " + std::to_string(b);
}
std::vector<std::uint8_t> pattern(std::size_t size, unsigned seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * seed + (i >> 12));
  return bytes;
}
}  // namespace

TEST_P(pool_test, apply_puts_borrowed_large_arguments_between_small_ones_in_their_places) {
  Pool pool(options());
  const auto big = pattern(std::size_t{200} << 10, 7);
  const auto huge = pattern(std::size_t{5} << 20, 11);
  const std::string text(std::size_t{300} << 10, 'x');  // a large std::string is borrowed too
  const std::string expected = fingerprints(-4, big, text, huge, 99);
  EXPECT_EQ(pool.apply(fingerprints, -4, big, text, huge, 99), expected);
  EXPECT_EQ(pool.apply_async(fingerprints, -4, big, text, huge, 99).get(), expected);
  // Temporaries: apply's live until it returns, apply_async's are copied before it returns.
  EXPECT_EQ(pool.apply(fingerprints, -4, pattern(std::size_t{200} << 10, 7), text, pattern(std::size_t{5} << 20, 11), 99),
            expected);
  auto later = pool.apply_async(fingerprints, -4, pattern(std::size_t{200} << 10, 7), text,
                                pattern(std::size_t{5} << 20, 11), 99);
  EXPECT_EQ(later.get(), expected);
}

namespace {
// Distinct functions (and with two argument types, distinct task entries) for one worker to
// alternate between: more than it remembers, so each is looked up again now and then.
template <int K>
long times(long x) {
  return K * x;
}
template <int K>
long times_then_add(long x, int y) {
  return K * x + y;
}
}  // namespace

TEST_P(pool_test, a_worker_alternating_between_many_functions_runs_each_one) {
  Pool pool(options(1));
  for (long round = 1; round <= 3; ++round) {
    EXPECT_EQ(pool.apply(times<2>, round), 2 * round);
    EXPECT_EQ(pool.apply(times_then_add<3>, round, 1), 3 * round + 1);
    EXPECT_EQ(pool.apply(times<5>, round), 5 * round);
    EXPECT_EQ(pool.apply(times_then_add<7>, round, 2), 7 * round + 2);
    EXPECT_EQ(pool.apply(times<11>, round), 11 * round);
    EXPECT_EQ(pool.apply(times_then_add<13>, round, 3), 13 * round + 3);
    EXPECT_EQ(pool.apply(times<17>, round), 17 * round);
  }
  auto futures = std::vector<mproc::Future<long>>{};
  for (long i = 0; i < 60; ++i) {
    switch (i % 3) {
      case 0: futures.push_back(pool.apply_async(times<2>, i)); break;
      case 1: futures.push_back(pool.apply_async(times<5>, i)); break;
      default: futures.push_back(pool.apply_async(times_then_add<3>, i, 4)); break;
    }
  }
  for (long i = 0; i < 60; ++i) {
    const long expected = i % 3 == 0 ? 2 * i : i % 3 == 1 ? 5 * i : 3 * i + 4;
    EXPECT_EQ(futures[static_cast<std::size_t>(i)].get(), expected) << "task " << i;
  }
}

namespace {
// Allocates, touches and frees `bytes`; returns the worker's pid.
int touch_and_free(std::size_t bytes) {
  std::vector<std::uint8_t> block(bytes, 1);
  volatile std::uint8_t sink = block[bytes / 2];
  (void)sink;
  return ::getpid();
}
std::uint64_t resident_bytes_of(int pid) {
  FILE* statm = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
  if (!statm) return 0;
  unsigned long size = 0, resident = 0;
  if (std::fscanf(statm, "%lu %lu", &size, &resident) != 2) resident = 0;
  std::fclose(statm);
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}
}  // namespace

TEST_P(pool_test, an_idle_worker_gives_back_the_memory_of_a_large_task) {
  // Workers keep the heap a task freed while tasks keep coming (warm pages for the next
  // large argument), and give it back once idle for a second.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer's allocator replaces glibc's (whose policy this tests) and "
                  "keeps freed blocks in its quarantine";
#endif
  Pool pool(options(1));
  const int pid = pool.apply(touch_and_free, std::size_t{96} << 20);
  std::uint64_t resident = resident_bytes_of(pid);
  for (int i = 0; i < 600 && resident > (std::size_t{32} << 20); ++i) {  // up to 60 s: a bound, not a timing
    std::this_thread::sleep_for(100ms);
    resident = resident_bytes_of(pid);
  }
  EXPECT_LT(resident, std::size_t{32} << 20);
  EXPECT_EQ(pool.apply(touch_and_free, std::size_t{1} << 20), pid);  // the same worker, still serving
}

namespace {
int wait_for_file(std::string path) {
  // Blocks until the test creates `path` (bounded: a hung test fails by its timeout).
  for (int i = 0; i < 60'000 && ::access(path.c_str(), F_OK) != 0; ++i) ::usleep(1000);
  return 1;
}
}  // namespace

TEST_P(pool_test, cancel_withdraws_tasks_that_have_not_started) {
  Pool pool(options(1));
  std::string gate = "/tmp/mproc-cancel-gate-" + std::to_string(::getpid()) + mproc::to_string(GetParam());
  ::unlink(gate.c_str());
  auto blocker = pool.apply_async(wait_for_file, gate);  // occupies the only worker
  auto queued_1 = pool.apply_async(square, 2);           // in its ring (credit 2)
  auto pending = pool.apply_async(square, 3);            // still pending in the pool
  auto pending_map = pool.map_async(square, std::vector<int>(10, 1), 1);
  EXPECT_TRUE(pending.cancel());
  EXPECT_TRUE(pending.cancelled());
  EXPECT_THROW(pending.get(), mproc::CancelledError);
  EXPECT_TRUE(pending_map.cancel());
  EXPECT_THROW(pending_map.get(), mproc::CancelledError);
  if (FILE* f = std::fopen(gate.c_str(), "w")) std::fclose(f);
  EXPECT_FALSE(blocker.cancel());  // running: cannot be withdrawn
  EXPECT_EQ(blocker.get(), 1);
  EXPECT_EQ(queued_1.get(), 4);
  ::unlink(gate.c_str());
}

TEST_P(pool_test, a_map_whose_chunks_started_cannot_be_cancelled_and_completes) {
  Pool pool(options(1));
  std::string gate = "/tmp/mproc-cancel-map-" + std::to_string(::getpid()) + mproc::to_string(GetParam());
  ::unlink(gate.c_str());
  auto map = pool.map_async(wait_for_file, std::vector<std::string>(4, gate), 1);
  if (FILE* f = std::fopen(gate.c_str(), "w")) std::fclose(f);
  (void)map.cancel();  // whatever the answer, the future completes
  try {
    EXPECT_EQ(map.get(60s), std::vector<int>(4, 1));
  } catch (const mproc::CancelledError&) {
  }
  ::unlink(gate.c_str());
}

TEST_P(pool_test, unwinding_through_a_pool_terminates_it) {
  mproc::Future<int> never;
  std::string gate = "/tmp/mproc-unwind-" + std::to_string(::getpid()) + mproc::to_string(GetParam());
  ::unlink(gate.c_str());
  try {
    Pool pool(options(1));
    never = pool.apply_async(wait_for_file, gate);
    throw std::runtime_error("leave the scope");
  } catch (const std::runtime_error&) {
  }
  // The destructor did not wait for the blocked task: it terminated the pool.
  EXPECT_THROW(never.get(60s), mproc::PoolTerminated);
}

#include <fcntl.h>

#include "support/fd_handle.hpp"

namespace {
int write_through(mproc_test::FdHandle out, int n) {
  out.write_text("task " + std::to_string(n) + ";");
  ::close(out.fd);
  return n;
}
}  // namespace

TEST_P(pool_test, descriptors_of_shareable_task_arguments_travel_with_them) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  {
    Pool pool(options());
    EXPECT_EQ(pool.apply(write_through, mproc_test::FdHandle{fds[1]}, 1), 1);
    std::vector<std::tuple<mproc_test::FdHandle, int>> args{{{fds[1]}, 2}, {{fds[1]}, 3}};
    EXPECT_EQ(pool.starmap(write_through, args), (std::vector{2, 3}));
  }
  ::close(fds[1]);
  std::string text;
  char buffer[256];
  ssize_t n;
  while ((n = ::read(fds[0], buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(fds[0]);
  EXPECT_NE(text.find("task 1;"), std::string::npos) << text;
  EXPECT_NE(text.find("task 2;"), std::string::npos) << text;
  EXPECT_NE(text.find("task 3;"), std::string::npos) << text;
}

#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"

namespace {
int add_under_lock(mproc::Lock lock, mproc::Value<int> counter, int n) {
  for (int i = 0; i < n; ++i) {
    std::scoped_lock hold(lock);
    counter.set(counter.get() + 1);
  }
  return n;
}
}  // namespace

TEST_P(pool_test, a_lock_and_shared_value_passed_as_task_arguments_are_shared) {
  mproc::Lock lock;
  mproc::Value<int> counter(0);
  Pool pool(options());
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 8; ++i) futures.push_back(pool.apply_async(add_under_lock, lock, counter, 250));
  for (auto& f : futures) EXPECT_EQ(f.get(), 250);
  EXPECT_EQ(counter.get(), 2000);
}

#include "mproc/queue.hpp"

namespace {
int produce_into(mproc::Queue<std::string> queue, int n) {
  for (int i = 0; i < n; ++i) queue.put("item " + std::to_string(i));
  return n;
}
}  // namespace

TEST_P(pool_test, a_queue_passed_as_a_task_argument_carries_items_back) {
  mproc::Queue<std::string> queue;
  Pool pool(options());
  auto a = pool.apply_async(produce_into, queue, 50);
  auto b = pool.apply_async(produce_into, queue, 50);
  EXPECT_EQ(a.get() + b.get(), 100);
  std::multiset<std::string> items;
  for (int i = 0; i < 100; ++i) items.insert(queue.get(60s));
  EXPECT_EQ(items.count("item 0"), 2u);
  EXPECT_EQ(items.count("item 49"), 2u);
  EXPECT_TRUE(queue.empty());
}

namespace {
int busy_for_us(int us) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < end) {
  }
  return us;
}
}  // namespace

// Waiters drain the result rings themselves while they spin, and the pool's thread relies on
// them meanwhile: whatever mix of short and long tasks, spinning and sleeping waiters, and
// callback-only futures, every result arrives exactly once.
TEST_P(pool_test, results_arrive_whoever_drains_them) {
  Pool pool(options());
  constexpr int threads = 3, per_thread = 300;
  std::atomic<int> callbacks_run{0};
  std::vector<mproc::Future<int>> callback_only;
  std::vector<std::thread> waiters;
  std::atomic<int> wrong{0};
  for (int t = 0; t < threads; ++t) {
    waiters.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        // 0 µs (caught while spinning) to 200 µs (after the waiter went to sleep).
        const int us = ((i * 7 + t * 13) % 5) * 50;
        if (pool.apply(busy_for_us, us) != us) ++wrong;
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    callback_only.push_back(pool.apply_async(busy_for_us, (i % 3) * 30));
    callback_only.back().then([&](const int&) { ++callbacks_run; },
                              [&](std::exception_ptr) { ++wrong; });
  }
  for (auto& waiter : waiters) waiter.join();
  pool.close();
  pool.join();  // every callback has run by now, in whichever thread drained its result
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(callbacks_run.load(), 200);
}
