// tests/test_future.cpp — Future<T>, as_completed() and wait(), with std::threads standing in for
// the pool that completes the shared states.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <latch>
#include <memory>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/future.hpp"
#include "mproc/serialize.hpp"
#include "support/leak_check.hpp"

namespace {

using future_test = mproc_test::LeakCheckedTest;
using namespace std::chrono_literals;

// Long enough never to run out on a loaded machine: only there to turn a hang into a failure.
constexpr auto hang_guard = 60s;

template <class T>
std::pair<std::shared_ptr<mproc::detail::FutureState<T>>, mproc::Future<T>> make_future() {
  auto state = std::make_shared<mproc::detail::FutureState<T>>();
  return {state, mproc::Future<T>(state)};
}

template <class T>
bool complete(mproc::detail::FutureState<T>& state, const T& value) {
  const std::vector<std::byte> bytes = mproc::serialize(value);
  return state.set_value_bytes(bytes);
}

template <class T>
std::vector<mproc::Future<T>> handles(
    const std::vector<std::shared_ptr<mproc::detail::FutureState<T>>>& states) {
  std::vector<mproc::Future<T>> futures;
  for (const auto& s : states) futures.emplace_back(s);
  return futures;
}

template <class T>
std::vector<std::shared_ptr<mproc::detail::FutureState<T>>> make_states(std::size_t n) {
  std::vector<std::shared_ptr<mproc::detail::FutureState<T>>> states;
  for (std::size_t i = 0; i < n; ++i)
    states.push_back(std::make_shared<mproc::detail::FutureState<T>>());
  return states;
}

/// Completes each future in turn from its own thread; joins on destruction.
class Completer {
 public:
  explicit Completer(std::function<void()> work) : thread_(std::move(work)) {}
  ~Completer() { thread_.join(); }

 private:
  std::thread thread_;
};

template <class F>
concept lvalue_gettable = requires(const F& f) {
  f.get();
};
template <class F>
concept rvalue_gettable = requires(F f) {
  std::move(f).get();
};

static_assert(std::ranges::input_range<mproc::AsCompleted<int>>);
static_assert(std::copy_constructible<mproc::Future<int>>);

// ---------------------------------------------------------------------------------------------
// get

TEST_F(future_test, get_returns_the_value_set_by_another_thread) {
  auto [state, future] = make_future<int>();
  EXPECT_TRUE(future.valid());
  EXPECT_FALSE(future.ready());
  Completer pool([state = state] { complete(*state, 42); });
  EXPECT_EQ(future.get(), 42);
  EXPECT_TRUE(future.ready());
  EXPECT_TRUE(future.successful());
  EXPECT_EQ(future.exception(), nullptr);
  EXPECT_EQ(future.get(), 42);  // an lvalue get() copies: it can be repeated
}

TEST_F(future_test, rvalue_get_moves_the_value_out_once) {
  auto [state, future] = make_future<std::string>();
  const std::string text(1000, 'x');
  ASSERT_TRUE(complete(*state, text));
  mproc::Future<std::string> copy = future;
  EXPECT_EQ(copy.get(), text);
  EXPECT_EQ(std::move(future).get(), text);
  EXPECT_THROW(copy.get(), std::logic_error);
  EXPECT_THROW(copy.then([](const std::string&) {}), std::logic_error);
}

TEST_F(future_test, get_rethrows_the_task_exception_with_its_type) {
  auto [state, future] = make_future<int>();
  const auto error = std::make_exception_ptr(std::out_of_range("index 7 out of range"));
  Completer pool([state = state, error] { state->set_exception(error); });
  try {
    future.get();
    FAIL() << "get() returned";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 7 out of range");
  }
  EXPECT_EQ(future.exception(), error);
  EXPECT_FALSE(future.successful());
  EXPECT_THROW(std::move(future).get(), std::out_of_range);
}

TEST_F(future_test, void_future_completes_with_empty_bytes) {
  auto [state, future] = make_future<void>();
  Completer pool([state = state] { state->set_value_bytes({}); });
  future.get();
  static_assert(std::is_void_v<decltype(future.get())>);
  EXPECT_TRUE(future.successful());
  std::move(future).get();
}

TEST_F(future_test, void_future_refuses_non_empty_bytes) {
  auto [state, future] = make_future<void>();
  const std::byte junk[3]{};
  EXPECT_TRUE(state->set_value_bytes(junk));
  EXPECT_THROW(future.get(), mproc::SerializationError);
}

TEST_F(future_test, move_only_value_comes_out_of_an_rvalue_future) {
  using Ptr = std::unique_ptr<int>;
  static_assert(!lvalue_gettable<mproc::Future<Ptr>>);
  static_assert(rvalue_gettable<mproc::Future<Ptr>>);
  static_assert(lvalue_gettable<mproc::Future<int>>);
  auto [state, future] = make_future<Ptr>();
  Completer pool([state = state] { complete(*state, std::make_unique<int>(7)); });
  Ptr value = std::move(future).get();
  ASSERT_NE(value, nullptr);
  EXPECT_EQ(*value, 7);
}

TEST_F(future_test, get_with_timeout_throws_timeout_error_then_later_succeeds) {
  auto [state, future] = make_future<int>();
  try {
    future.get(1ms);
    FAIL() << "get(timeout) returned";
  } catch (const mproc::TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("not ready within"), std::string::npos) << e.what();
  }
  EXPECT_THROW(future.get(0s), mproc::TimeoutError);
  EXPECT_THROW(future.get(-1s), mproc::TimeoutError);
  EXPECT_FALSE(future.ready());  // the task goes on
  Completer pool([state = state] { complete(*state, 5); });
  EXPECT_EQ(future.get(hang_guard), 5);
  EXPECT_EQ(std::move(future).get(std::chrono::duration<double>(0.5)), 5);
}

TEST_F(future_test, huge_timeouts_mean_no_timeout) {
  auto [state, future] = make_future<int>();
  Completer pool([state = state] { complete(*state, 3); });
  EXPECT_EQ(future.get(std::chrono::hours::max()), 3);
  EXPECT_TRUE(future.wait_for(std::chrono::nanoseconds::max()));
  EXPECT_TRUE(future.wait_for(std::chrono::duration<double>(1e300)));
}

TEST_F(future_test, wait_for_is_false_until_ready_then_true) {
  auto [state, future] = make_future<int>();
  EXPECT_FALSE(future.wait_for(1ms));
  EXPECT_FALSE(future.wait_for(0ms));
  Completer pool([state = state] { complete(*state, 1); });
  EXPECT_TRUE(future.wait_for(hang_guard));
  EXPECT_TRUE(future.wait_for(0ms));
  future.wait();
}

TEST_F(future_test, successful_before_ready_throws_logic_error) {
  auto [state, future] = make_future<int>();
  EXPECT_THROW(future.successful(), std::logic_error);
  complete(*state, 1);
  EXPECT_TRUE(future.successful());
}

TEST_F(future_test, invalid_future_throws_no_state) {
  mproc::Future<int> future;
  EXPECT_FALSE(future.valid());
  EXPECT_FALSE(future.ready());
  EXPECT_FALSE(future.cancelled());
  EXPECT_EQ(future.state(), nullptr);
  EXPECT_THROW(future.get(), std::logic_error);
  EXPECT_THROW(future.wait(), std::logic_error);
  EXPECT_THROW(future.wait_for(1s), std::logic_error);
  EXPECT_THROW(future.cancel(), std::logic_error);
  EXPECT_THROW(future.then([](const int&) {}), std::logic_error);
  std::vector<mproc::Future<int>> futures{future};
  EXPECT_THROW(mproc::wait(futures), std::logic_error);
  EXPECT_THROW(mproc::as_completed(futures), std::logic_error);
}

TEST_F(future_test, first_completion_wins) {
  auto [state, future] = make_future<int>();
  EXPECT_TRUE(complete(*state, 1));
  EXPECT_FALSE(complete(*state, 2));
  EXPECT_FALSE(state->set_exception(std::make_exception_ptr(std::runtime_error("late"))));
  EXPECT_FALSE(state->set_value(3));
  EXPECT_FALSE(future.cancel());
  EXPECT_EQ(future.get(), 1);
}

TEST_F(future_test, decode_failure_completes_with_serialization_error) {
  auto [state, future] = make_future<int>();
  const std::byte three_bytes[3]{};
  EXPECT_TRUE(state->set_value_bytes(three_bytes));
  EXPECT_THROW(future.get(), mproc::SerializationError);
  EXPECT_FALSE(future.successful());
  EXPECT_FALSE(complete(*state, 1));
}

// ---------------------------------------------------------------------------------------------
// cancel

TEST_F(future_test, cancel_succeeds_when_the_canceller_removes_the_task) {
  auto [state, future] = make_future<int>();
  int calls = 0;
  state->set_canceller([&calls] {
    ++calls;
    return true;
  });
  EXPECT_FALSE(future.cancelled());
  EXPECT_TRUE(future.cancel());
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(future.ready());
  EXPECT_TRUE(future.cancelled());
  EXPECT_FALSE(future.successful());
  EXPECT_THROW(future.get(), mproc::CancelledError);
  EXPECT_THROW(future.get(1s), mproc::CancelledError);
  EXPECT_TRUE(future.cancel());  // already cancelled, as in Python
  EXPECT_EQ(calls, 1);           // the canceller went with completion
  EXPECT_FALSE(complete(*state, 1));
}

// An engine that withdraws the tasks it is told are still queued.
class QueueingEngine final : public mproc::detail::ProgressEngine {
 public:
  bool make_progress() noexcept override { return false; }
  bool cancel_task(std::uint64_t id) override {
    asked.push_back(id);
    return id == queued;
  }
  std::uint64_t queued = 0;
  std::vector<std::uint64_t> asked;
};

TEST_F(future_test, cancel_asks_the_engine_to_withdraw_the_task_the_state_is_bound_to) {
  auto engine = std::make_shared<QueueingEngine>();
  engine->queued = 7;
  auto [queued_state, queued] = make_future<int>();
  queued_state->set_progress_engine(engine);
  queued_state->set_engine_task(7);
  auto [running_state, running] = make_future<int>();
  running_state->set_progress_engine(engine);
  running_state->set_engine_task(8);
  EXPECT_TRUE(queued.cancel());
  EXPECT_TRUE(queued.cancelled());
  EXPECT_THROW(queued.get(), mproc::CancelledError);
  EXPECT_FALSE(running.cancel());  // the engine has started it
  EXPECT_FALSE(running.ready());
  EXPECT_EQ(engine->asked, (std::vector<std::uint64_t>{7, 8}));
  engine.reset();  // the pool is gone: nothing to withdraw from, and no crash
  EXPECT_FALSE(running.cancel());
  ASSERT_TRUE(complete(*running_state, 5));
  EXPECT_EQ(running.get(), 5);
}

TEST_F(future_test, cancel_fails_when_the_task_already_runs) {
  auto [state, future] = make_future<int>();
  EXPECT_FALSE(future.cancel());  // no canceller: not cancellable
  auto pool_token = std::make_shared<int>(0);
  state->set_canceller([pool_token] { return false; });
  EXPECT_FALSE(future.cancel());
  EXPECT_FALSE(future.cancelled());
  EXPECT_FALSE(future.ready());
  ASSERT_TRUE(complete(*state, 9));
  EXPECT_EQ(pool_token.use_count(), 1) << "the canceller is cleared on completion";
  EXPECT_FALSE(future.cancel());
  EXPECT_EQ(future.get(), 9);
  state->set_canceller([pool_token] { return true; });  // too late: dropped
  EXPECT_EQ(pool_token.use_count(), 1);
  EXPECT_FALSE(future.cancel());
}

TEST_F(future_test, concurrent_cancels_agree) {
  auto [state, future] = make_future<int>();
  std::atomic<int> removed{0};
  state->set_canceller([&removed] { return removed.fetch_add(1) == 0; });  // removes it once
  std::atomic<int> cancelled{0};
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&, future = future]() mutable { cancelled += future.cancel(); });
  }
  EXPECT_EQ(removed.load(), 1);
  EXPECT_EQ(cancelled.load(), 4);
  EXPECT_THROW(future.get(), mproc::CancelledError);
}

// ---------------------------------------------------------------------------------------------
// then

TEST_F(future_test, then_before_completion_runs_once_in_the_completing_thread) {
  auto [state, future] = make_future<int>();
  std::atomic<int> values{0}, errors{0};
  std::thread::id ran_in;
  future.then(
      [&](const int& v) {
        EXPECT_EQ(v, 11);
        ran_in = std::this_thread::get_id();
        ++values;
      },
      [&](std::exception_ptr) { ++errors; });
  std::thread::id pool_id;
  {
    Completer pool([&, state = state] {
      pool_id = std::this_thread::get_id();
      complete(*state, 11);
      complete(*state, 12);  // ignored: no second call
    });
  }
  EXPECT_EQ(values.load(), 1);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(ran_in, pool_id);
}

TEST_F(future_test, then_after_completion_runs_at_once_in_the_caller) {
  auto [state, future] = make_future<std::string>();
  complete(*state, std::string("done"));
  int values = 0;
  std::thread::id ran_in;
  future.then([&](const std::string& v) {
    EXPECT_EQ(v, "done");
    ran_in = std::this_thread::get_id();
    ++values;
  });
  EXPECT_EQ(values, 1);
  EXPECT_EQ(ran_in, std::this_thread::get_id());
  EXPECT_EQ(future.get(), "done");  // the callback did not consume the value
}

TEST_F(future_test, then_passes_the_exception_to_on_error) {
  auto [state, future] = make_future<int>();
  int values = 0, errors = 0;
  auto& chained = future.then([&](const int&) { ++values; },
                              [&](std::exception_ptr e) {
                                ++errors;
                                EXPECT_THROW(std::rethrow_exception(e), std::invalid_argument);
                              });
  EXPECT_EQ(&chained, &future);
  future.then([&](const int&) { ++values; });  // no error callback: nothing happens on error
  {
    Completer pool([state = state] {
      state->set_exception(std::make_exception_ptr(std::invalid_argument("bad")));
    });
  }
  EXPECT_EQ(values, 0);
  EXPECT_EQ(errors, 1);
  future.then([&](const int&) { ++values; }, [&](std::exception_ptr) { ++errors; });
  EXPECT_EQ(errors, 2);
}

TEST_F(future_test, then_on_a_cancelled_future_reports_cancelled_error) {
  auto [state, future] = make_future<int>();
  state->set_canceller([] { return true; });
  bool got_cancelled = false;
  future.then([](const int&) { FAIL(); },
              [&](std::exception_ptr e) {
                try {
                  std::rethrow_exception(e);
                } catch (const mproc::CancelledError&) {
                  got_cancelled = true;
                }
              });
  EXPECT_TRUE(future.cancel());
  EXPECT_TRUE(got_cancelled);
}

TEST_F(future_test, then_works_for_void_and_move_only_callables) {
  auto [state, future] = make_future<void>();
  auto token = std::make_unique<int>(5);
  int seen = 0;
  future.then([&seen, token = std::move(token)] { seen = *token; });
  ASSERT_TRUE(state->set_value());
  EXPECT_EQ(seen, 5);
}

TEST_F(future_test, throwing_callback_does_not_hurt_the_completing_thread) {
  auto [state, future] = make_future<int>();
  int later = 0;
  future.then([](const int&) { throw std::runtime_error("callback failed (expected)"); });
  future.then([&](const int& v) { later = v; });
  EXPECT_TRUE(complete(*state, 4));
  EXPECT_EQ(later, 4);  // the callbacks after the throwing one still ran
  EXPECT_EQ(future.get(), 4);
}

// ---------------------------------------------------------------------------------------------
// as_completed

TEST_F(future_test, as_completed_yields_in_completion_order) {
  constexpr std::size_t n = 6;
  auto states = make_states<int>(n);
  const auto futures = handles(states);
  // Two are done before the call: they come first, in the given order (1 before 4).
  complete(*states[4], 4);
  complete(*states[1], 1);

  // The "pool" completes the rest in reverse order, one per step; the consumer lets it take
  // the next step only after it has received the previous future.
  std::binary_semaphore step{0};
  Completer pool([&] {
    for (std::size_t i : {5, 3, 2, 0}) {
      step.acquire();
      complete(*states[i], static_cast<int>(i));
    }
  });

  std::vector<int> order;
  auto range = mproc::as_completed(futures);
  for (auto it = range.begin(); it != range.end(); ++it) {
    mproc::Future<int> f = *it;
    EXPECT_TRUE(f.ready());
    order.push_back(f.get());
    if (order.size() >= 2) step.release();
  }
  EXPECT_EQ(order, (std::vector<int>{1, 4, 5, 3, 2, 0}));
}

TEST_F(future_test, as_completed_with_range_for_and_duplicates) {
  auto states = make_states<int>(3);
  auto futures = handles(states);
  futures.push_back(futures[0]);  // given twice, yielded once
  Completer pool([&] {
    for (std::size_t i : {2, 0, 1}) complete(*states[i], static_cast<int>(i) * 10);
  });
  int total = 0, count = 0;
  for (mproc::Future<int> f : mproc::as_completed(futures, hang_guard)) {
    total += f.get();
    ++count;
  }
  EXPECT_EQ(count, 3);
  EXPECT_EQ(total, 30);
}

TEST_F(future_test, as_completed_of_nothing_is_empty) {
  const std::vector<mproc::Future<int>> none;
  auto range = mproc::as_completed(none);
  EXPECT_TRUE(range.begin() == range.end());
}

TEST_F(future_test, as_completed_throws_timeout_error_when_one_never_completes) {
  auto states = make_states<int>(3);
  const auto futures = handles(states);
  complete(*states[0], 0);
  Completer pool([&] { complete(*states[2], 2); });
  std::vector<int> seen;
  try {
    for (mproc::Future<int> f : mproc::as_completed(futures, 50ms)) seen.push_back(f.get());
    FAIL() << "iteration ended";
  } catch (const mproc::TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("1 (of 3) futures unfinished"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(future_test, as_completed_range_may_die_before_its_futures_complete) {
  auto states = make_states<int>(4);
  const auto futures = handles(states);
  {
    auto range = mproc::as_completed(futures);
    complete(*states[3], 3);
    auto it = range.begin();
    EXPECT_EQ((*it).get(), 3);
  }
  std::vector<std::jthread> pool;
  for (std::size_t i = 0; i < 3; ++i) pool.emplace_back([&, i] { complete(*states[i], 0); });
  pool.clear();
  for (const auto& f : futures) EXPECT_TRUE(f.ready());
}

// ---------------------------------------------------------------------------------------------
// wait

TEST_F(future_test, wait_all_completed_returns_when_every_future_is_done) {
  auto states = make_states<int>(5);
  const auto futures = handles(states);
  Completer pool([&] {
    for (std::size_t i = 0; i < states.size(); ++i) complete(*states[i], static_cast<int>(i));
  });
  const auto result = mproc::wait(futures);
  EXPECT_EQ(result.done.size(), 5u);
  EXPECT_TRUE(result.not_done.empty());
  for (const auto& f : result.done) EXPECT_TRUE(f.ready());
}

TEST_F(future_test, wait_all_completed_with_timeout_leaves_the_straggler_in_not_done) {
  auto states = make_states<int>(3);
  const auto futures = handles(states);
  Completer pool([&] {
    complete(*states[0], 0);
    complete(*states[2], 2);
  });
  const auto result = mproc::wait(futures, 50ms, mproc::ALL_COMPLETED);
  ASSERT_EQ(result.not_done.size(), 1u);
  EXPECT_EQ(result.not_done[0].state(), states[1]);
  EXPECT_EQ(result.done.size(), 2u);
}

TEST_F(future_test, wait_first_completed_returns_after_one) {
  auto states = make_states<int>(4);
  const auto futures = handles(states);
  Completer pool([&] { complete(*states[2], 2); });
  const auto result = mproc::wait(futures, hang_guard, mproc::FIRST_COMPLETED);
  ASSERT_EQ(result.done.size(), 1u);
  EXPECT_EQ(result.done[0].get(), 2);
  EXPECT_EQ(result.not_done.size(), 3u);
  // Already satisfied: returns at once; a cancelled future counts as completed.
  states[0]->set_canceller([] { return true; });
  ASSERT_TRUE(futures[0].state()->cancel());
  EXPECT_EQ(mproc::wait(futures, mproc::FIRST_COMPLETED).done.size(), 2u);
}

TEST_F(future_test, wait_first_completed_with_timeout_returns_nothing_done) {
  auto states = make_states<int>(2);
  const auto futures = handles(states);
  const auto result = mproc::wait(futures, 20ms, mproc::FIRST_COMPLETED);
  EXPECT_TRUE(result.done.empty());
  EXPECT_EQ(result.not_done.size(), 2u);
  EXPECT_TRUE(mproc::wait(std::vector<mproc::Future<int>>{}, mproc::FIRST_COMPLETED).done.empty());
}

TEST_F(future_test, wait_first_exception_returns_on_a_failure) {
  auto states = make_states<int>(4);
  const auto futures = handles(states);
  Completer pool([&] {
    complete(*states[0], 0);  // a value does not end the wait
    states[1]->set_canceller([] { return true; });
    states[1]->cancel();  // nor does a cancellation
    states[3]->set_exception(std::make_exception_ptr(std::runtime_error("boom")));
  });
  const auto result = mproc::wait(futures, hang_guard, mproc::FIRST_EXCEPTION);
  EXPECT_EQ(result.done.size(), 3u);
  ASSERT_EQ(result.not_done.size(), 1u);
  EXPECT_EQ(result.not_done[0].state(), states[2]);
}

TEST_F(future_test, wait_first_exception_without_failures_waits_for_all) {
  auto states = make_states<int>(3);
  const auto futures = handles(states);
  Completer pool([&] {
    for (auto& s : states) complete(*s, 1);
  });
  const auto result = mproc::wait(futures, hang_guard, mproc::FIRST_EXCEPTION);
  EXPECT_EQ(result.done.size(), 3u);
  EXPECT_TRUE(result.not_done.empty());
  const auto partial = make_states<int>(2);
  complete(*partial[0], 1);
  EXPECT_EQ(mproc::wait(handles(partial), 20ms, mproc::FIRST_EXCEPTION).not_done.size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Many threads

TEST_F(future_test, many_threads_waiting_on_one_future_all_wake) {
  auto [state, future] = make_future<std::string>();
  constexpr int waiters = 8;
  std::latch started(waiters + 1);
  std::atomic<int> woke{0};
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < waiters; ++i) {
      threads.emplace_back([&, i, future = future] {
        started.arrive_and_wait();
        if (i % 2 == 0) {
          EXPECT_EQ(future.get(), "hello");
        } else {
          EXPECT_TRUE(future.wait_for(hang_guard));
        }
        ++woke;
      });
    }
    started.arrive_and_wait();
    complete(*state, std::string("hello"));
  }
  EXPECT_EQ(woke.load(), waiters);
}

TEST_F(future_test, stress_ten_thousand_futures_two_completers_two_waiters) {
  constexpr std::size_t n = 10'000;
  auto states = make_states<std::uint64_t>(n);
  auto futures = handles(states);
  std::vector<std::atomic<int>> callback_runs(n);
  // Callbacks before completion for half of them, after for the other half (below).
  for (std::size_t i = 0; i < n; i += 2)
    futures[i].then([&callback_runs, i](const std::uint64_t& v) {
      EXPECT_EQ(v, i);
      ++callback_runs[i];
    });

  std::uint64_t forward_sum = 0, backward_sum = 0;
  {
    std::vector<std::jthread> threads;
    threads.emplace_back([&] {
      for (const auto& f : futures) forward_sum += f.get();
    });
    threads.emplace_back([&] {
      for (auto it = futures.rbegin(); it != futures.rend(); ++it) backward_sum += it->get();
    });
    for (std::size_t parity = 0; parity < 2; ++parity) {
      threads.emplace_back([&, parity] {
        for (std::size_t i = parity; i < n; i += 2) {
          // Both completers also race on a few shared ones: exactly one must win.
          if (i % 100 == 0) complete(*states[i ^ 1], static_cast<std::uint64_t>(i ^ 1));
          complete(*states[i], static_cast<std::uint64_t>(i));
        }
      });
    }
    for (std::size_t i = 1; i < n; i += 2)
      futures[i].then([&callback_runs, i](const std::uint64_t& v) {
        EXPECT_EQ(v, i);
        ++callback_runs[i];
      });
  }
  const std::uint64_t expected = n * (n - 1) / 2;
  EXPECT_EQ(forward_sum, expected);
  EXPECT_EQ(backward_sum, expected);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(callback_runs[i].load(), 1) << "future " << i;
  EXPECT_EQ(mproc::wait(futures, hang_guard).done.size(), n);
  std::size_t yielded = 0;
  for (const auto& f : mproc::as_completed(futures, hang_guard)) yielded += f.ready();
  EXPECT_EQ(yielded, n);
}

}  // namespace
