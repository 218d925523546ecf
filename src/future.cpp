// src/future.cpp — the type-erased half of Future<T>: completing a shared state once, waiting
// on it (spin, then sleep), cancellation, done callbacks, as_completed() and wait().
#include "mproc/future.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <string>
#include <thread>
#include <unordered_set>

namespace mproc {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

// A waiter spins this long on the ready flag before it sleeps (when its engine says nothing
// else: ProgressEngine::spin_time). A futex wake-up across CPUs costs ~45 µs here, so a result
// that arrives within the spin is picked up an order of magnitude sooner; a longer spin would
// only burn CPU that the pool's own threads may need.
constexpr auto spin_time = std::chrono::microseconds(30);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

// Spinning only pays when the completing thread can run on another CPU at the same time.
bool spinning_pays() noexcept {
  static const bool pays = std::thread::hardware_concurrency() > 1;
  return pays;
}

std::string describe_duration(long double ns) {
  char text[64];
  if (!(ns >= 0)) ns = 0;
  if (ns >= 1e9L) {
    std::snprintf(text, sizeof text, "%.4Lg s", ns / 1e9L);
  } else if (ns >= 1e6L) {
    std::snprintf(text, sizeof text, "%.4Lg ms", ns / 1e6L);
  } else if (ns >= 1e3L) {
    std::snprintf(text, sizeof text, "%.4Lg us", ns / 1e3L);
  } else {
    std::snprintf(text, sizeof text, "%.0Lf ns", ns);
  }
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// FutureStateBase

FutureStateBase::~FutureStateBase() = default;

bool FutureStateBase::try_begin_completion() noexcept {
  Status expected = Status::pending;
  return status_.compare_exchange_strong(expected, Status::completing, std::memory_order_acq_rel);
}

void FutureStateBase::finish_completion(std::exception_ptr error, bool cancelled) noexcept {
  std::vector<Callback> callbacks;
  std::function<bool()> canceller;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    error_ = std::move(error);
    cancelled_ = cancelled;
    // Published under the lock: a waiter registers itself in sleepers_ and checks ready()
    // under the same lock before it sleeps, so either it sees done here or we see it there.
    status_.store(Status::done, std::memory_order_release);
    callbacks.swap(callbacks_);
    canceller.swap(canceller_);
    wake = sleepers_ > 0;
  }
  if (wake) ready_cv_.notify_all();
  for (const Callback& callback : callbacks) run_callback(callback.run);
  // The canceller (and whatever it captured from the pool) dies here, outside the lock.
}

bool FutureStateBase::set_value_bytes(std::span<const std::byte> bytes) {
  if (!try_begin_completion()) return false;
  std::exception_ptr error;
  try {
    decode(bytes);
  } catch (...) {
    // Usually a SerializationError; anything a user's load function throws must complete the
    // state too, or its waiters would wait for ever.
    error = std::current_exception();
  }
  finish_completion(std::move(error), false);
  return true;
}

bool FutureStateBase::set_exception(std::exception_ptr error) {
  if (!error) throw std::invalid_argument("mproc::Future: set_exception with a null exception_ptr");
  if (!try_begin_completion()) return false;
  finish_completion(std::move(error), false);
  return true;
}

bool FutureStateBase::spin_until_ready(Clock::time_point deadline) const noexcept {
  if (!spinning_pays()) return ready();
  // While it spins, the waiter completes results itself when the engine lets it (a pool's
  // result rings): the result then costs no wake-up of the pool's thread nor of this one.
  const std::shared_ptr<ProgressEngine> engine = progress_.lock();
  if (engine) engine->waiter_arrives();
  const auto stop = std::min(deadline, Clock::now() + (engine ? engine->spin_time() : spin_time));
  bool done = false;
  for (unsigned i = 1;; ++i) {
    if ((done = ready())) break;
    // Every poll reads cache lines a worker is writing: a few pauses between polls let it
    // finish the record instead of fighting for the line.
    if (engine && i % 4 == 0 && engine->make_progress() && (done = ready())) break;
    cpu_relax();
    if (i % 16 == 0 && Clock::now() >= stop) {
      done = ready();
      break;
    }
  }
  if (engine) engine->waiter_leaves(done);
  return done;
}

void FutureStateBase::wait() const {
  wait_until(Clock::time_point::max());
}

bool FutureStateBase::wait_until(Clock::time_point deadline) const {
  if (ready() || spin_until_ready(deadline)) return true;
  std::unique_lock lock(mutex_);
  ++sleepers_;
  bool done;
  if (deadline == Clock::time_point::max()) {
    ready_cv_.wait(lock, [this] { return ready(); });
    done = true;
  } else {
    done = ready_cv_.wait_until(lock, deadline, [this] { return ready(); });
  }
  --sleepers_;
  return done;
}

bool FutureStateBase::cancel() {
  // Concurrent cancel() calls take turns, so that the loser of a race sees the winner's
  // outcome (cancelled) rather than a canceller that refuses a task it already removed.
  std::lock_guard turn(cancel_mutex_);
  std::function<bool()> canceller;
  {
    std::lock_guard lock(mutex_);
    if (status_.load(std::memory_order_acquire) != Status::pending) return cancelled();
    canceller = canceller_;
  }
  // Called without mutex_: the canceller takes the pool's lock, and the pool completes states
  // while holding it.
  bool withdrawn = false;
  if (canceller) {
    withdrawn = canceller();
  } else if (has_engine_task_) {
    const auto engine = progress_.lock();
    withdrawn = engine && engine->cancel_task(engine_task_);
  }
  if (!withdrawn) return false;
  if (!try_begin_completion()) return cancelled();  // e.g. terminate() got there first
  finish_completion(
      std::make_exception_ptr(CancelledError("mproc::Future: the task was cancelled")), true);
  return true;
}

void FutureStateBase::set_canceller(std::function<bool()> canceller) {
  std::unique_lock lock(mutex_);
  if (status_.load(std::memory_order_acquire) == Status::done) {
    lock.unlock();
    return;  // canceller is destroyed outside the lock
  }
  canceller_.swap(canceller);
}

std::uint64_t FutureStateBase::add_removable_callback(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (status_.load(std::memory_order_acquire) != Status::done) {
      const std::uint64_t id = next_callback_id_++;
      callbacks_.push_back(Callback{id, std::move(callback)});
      return id;
    }
  }
  run_callback(callback);
  return 0;
}

void FutureStateBase::add_done_callback(std::function<void()> callback) {
  add_removable_callback(std::move(callback));
}

void FutureStateBase::remove_done_callback(std::uint64_t id) noexcept {
  if (id == 0) return;
  std::function<void()> removed;  // destroyed outside the lock
  std::lock_guard lock(mutex_);
  const auto it = std::find_if(callbacks_.begin(), callbacks_.end(),
                               [id](const Callback& c) { return c.id == id; });
  if (it == callbacks_.end()) return;
  removed.swap(it->run);
  callbacks_.erase(it);
}

std::exception_ptr FutureStateBase::exception() const {
  wait();
  return error_;
}

void FutureStateBase::run_callback(const std::function<void()>& callback) noexcept {
  try {
    callback();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: exception in a future's done callback (ignored): %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "mproc: exception in a future's done callback (ignored)\n");
  }
}

// ---------------------------------------------------------------------------------------------
// FutureState<void>

bool FutureState<void>::set_value() {
  if (!try_begin_completion()) return false;
  finish_completion(nullptr, false);
  return true;
}

void FutureState<void>::decode(std::span<const std::byte> bytes) {
  if (!bytes.empty())
    throw SerializationError("cannot decode void: " + std::to_string(bytes.size()) +
                             " trailing bytes after its 0-byte encoding");
}

// ---------------------------------------------------------------------------------------------
// Helpers of the templates

void throw_value_taken() {
  throw std::logic_error(
      "mproc::Future: the value was already moved out by get() on an rvalue Future");
}

void throw_no_state(const char* who) {
  throw std::logic_error(std::string("mproc::Future::") + who + ": no state");
}

void throw_not_ready(const char* who, long double timeout_ns) {
  throw TimeoutError(std::string(who) + ": the result was not ready within " +
                     describe_duration(timeout_ns) + " (the task goes on)");
}

Clock::time_point deadline_after(long double timeout_ns) noexcept {
  const auto now = Clock::now();
  if (!(timeout_ns > 0)) return now;  // also NaN
  using Ticks = std::chrono::duration<long double, Clock::period>;
  const long double ticks =
      std::ceil(Ticks(std::chrono::duration<long double, std::nano>(timeout_ns)).count());
  const long double room = static_cast<long double>((Clock::time_point::max() - now).count());
  if (ticks >= room) return Clock::time_point::max();
  return now + Clock::duration(static_cast<Clock::rep>(ticks));
}

// ---------------------------------------------------------------------------------------------
// as_completed

/// Indices of completed states, in completion order. The callbacks that fill it hold it by
/// shared_ptr, so it outlives the range when the range is dropped first.
class AsCompletedCore::Queue {
 public:
  void push(std::size_t index) {
    {
      std::lock_guard lock(mutex_);
      indices_.push_back(index);
    }
    nonempty_.notify_one();
  }

  std::optional<std::size_t> pop_until(Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    const auto nonempty = [this] { return !indices_.empty(); };
    if (deadline == Clock::time_point::max()) {
      nonempty_.wait(lock, nonempty);
    } else if (!nonempty_.wait_until(lock, deadline, nonempty)) {
      return std::nullopt;
    }
    const std::size_t index = indices_.front();
    indices_.pop_front();
    return index;
  }

 private:
  std::mutex mutex_;
  std::condition_variable nonempty_;
  std::deque<std::size_t> indices_;
};

AsCompletedCore::AsCompletedCore(std::vector<std::shared_ptr<FutureStateBase>> states,
                                 Clock::time_point deadline)
    : states_(std::move(states)),
      callback_ids_(states_.size(), 0),
      queue_(std::make_shared<Queue>()),
      deadline_(deadline) {
  for (const auto& state : states_)
    if (!state) throw_no_state("as_completed");
  std::unordered_set<const FutureStateBase*> seen;
  seen.reserve(states_.size());
  try {
    for (std::size_t i = 0; i < states_.size(); ++i) {
      if (!seen.insert(states_[i].get()).second) continue;  // yielded once, like Python's set
      ++total_;
      // Already completed states run this at once, so they come first, in the given order.
      callback_ids_[i] =
          states_[i]->add_removable_callback([queue = queue_, i] { queue->push(i); });
    }
  } catch (...) {
    for (std::size_t i = 0; i < states_.size(); ++i)
      states_[i]->remove_done_callback(callback_ids_[i]);
    throw;
  }
}

AsCompletedCore::~AsCompletedCore() {
  for (std::size_t i = 0; i < states_.size(); ++i)
    states_[i]->remove_done_callback(callback_ids_[i]);
}

std::optional<std::size_t> AsCompletedCore::next() {
  if (handed_out_ == total_) return std::nullopt;
  const std::optional<std::size_t> index = queue_->pop_until(deadline_);
  if (!index) {
    throw TimeoutError("mproc::as_completed: " + std::to_string(total_ - handed_out_) + " (of " +
                       std::to_string(total_) + ") futures unfinished");
  }
  ++handed_out_;
  callback_ids_[*index] = 0;  // it ran
  return index;
}

// ---------------------------------------------------------------------------------------------
// wait

namespace {

bool failed(const FutureStateBase& state) {  // Requires: state.ready()
  return !state.cancelled() && state.exception() != nullptr;
}

bool satisfied(ReturnWhen when, std::size_t finished, std::size_t total, bool any_failed) {
  if (finished == total) return true;
  switch (when) {
    case ReturnWhen::FIRST_COMPLETED:
      return finished > 0;
    case ReturnWhen::FIRST_EXCEPTION:
      return any_failed;
    case ReturnWhen::ALL_COMPLETED:
      return false;
  }
  return false;
}

/// Counts completions reported by callbacks; shared with them, so it outlives wait_states().
struct Waiter {
  std::mutex mutex;
  std::condition_variable changed;
  std::size_t finished = 0;
  bool any_failed = false;
};

}  // namespace

WaitIndices wait_states(const std::vector<std::shared_ptr<FutureStateBase>>& states,
                        Clock::time_point deadline, ReturnWhen return_when) {
  for (const auto& state : states)
    if (!state) throw_no_state("wait");

  std::vector<std::size_t> distinct;
  distinct.reserve(states.size());
  {
    std::unordered_set<const FutureStateBase*> seen;
    seen.reserve(states.size());
    for (std::size_t i = 0; i < states.size(); ++i)
      if (seen.insert(states[i].get()).second) distinct.push_back(i);
  }

  auto waiter = std::make_shared<Waiter>();
  std::vector<std::size_t> pending;
  for (std::size_t i : distinct) {
    if (states[i]->ready()) {
      ++waiter->finished;
      waiter->any_failed = waiter->any_failed || failed(*states[i]);
    } else {
      pending.push_back(i);
    }
  }

  const std::size_t total = distinct.size();
  if (!satisfied(return_when, waiter->finished, total, waiter->any_failed)) {
    // A state that completes between the check above and its registration runs the callback
    // at once, here, and is counted exactly once either way.
    std::vector<std::pair<FutureStateBase*, std::uint64_t>> registered;
    registered.reserve(pending.size());
    const auto unregister = [&registered]() noexcept {
      for (auto [state, id] : registered) state->remove_done_callback(id);
    };
    try {
      for (std::size_t i : pending) {
        FutureStateBase* state = states[i].get();
        // The callback runs inside the state's completion, so the raw pointer is alive then.
        const std::uint64_t id = state->add_removable_callback([waiter, state] {
          const bool error = failed(*state);
          {
            std::lock_guard lock(waiter->mutex);
            ++waiter->finished;
            waiter->any_failed = waiter->any_failed || error;
          }
          waiter->changed.notify_all();
        });
        registered.emplace_back(state, id);
      }
      std::unique_lock lock(waiter->mutex);
      const auto enough = [&] {
        return satisfied(return_when, waiter->finished, total, waiter->any_failed);
      };
      if (deadline == Clock::time_point::max()) {
        waiter->changed.wait(lock, enough);
      } else {
        waiter->changed.wait_until(lock, deadline, enough);
      }
    } catch (...) {
      unregister();
      throw;
    }
    unregister();  // callbacks left on futures that are still pending would pile up
  }

  // Sorted by what is true now, like Python, which also counts futures that completed
  // while this call was returning.
  WaitIndices result;
  for (std::size_t i : distinct) (states[i]->ready() ? result.done : result.not_done).push_back(i);
  return result;
}

}  // namespace detail
}  // namespace mproc
