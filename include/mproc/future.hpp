// mproc/future.hpp — Future<T>, the result of a task a Pool runs, and the functions that wait on
// many of them at once: as_completed() and wait(), as in Python's concurrent.futures.
//
//   mproc::Future<int> f = pool.apply_async(square, 7);
//   f.then([](const int& v) { std::printf("%d\n", v); },
//          [](std::exception_ptr e) { /* log it */ });
//   int v = f.get(std::chrono::seconds(5));     // 49, or throws the task's exception
//
//   for (mproc::Future<int> done : mproc::as_completed(futures)) use(done.get());
//   auto [done, not_done] = mproc::wait(futures, std::chrono::seconds(1), mproc::FIRST_COMPLETED);
//
// A Future is a handle on a shared state (detail::FutureState<T>) that the pool completes exactly
// once, with the bytes of the value or with an exception. The templates here are thin: waiting,
// completion, cancellation and callbacks live in the type-erased detail::FutureStateBase
// (src/future.cpp); FutureState<T> only adds the decoded value.
#pragma once

#include <atomic>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/errors.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

/// When wait() returns, as concurrent.futures.wait's return_when.
enum class ReturnWhen {
  FIRST_COMPLETED,  ///< as soon as any future is done (or cancelled)
  FIRST_EXCEPTION,  ///< as soon as any future fails with an exception; else as ALL_COMPLETED
  ALL_COMPLETED,    ///< when every future is done
};

/// Python's spelling: `mproc::wait(futures, timeout, mproc::FIRST_COMPLETED)`.
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::FIRST_COMPLETED;
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::FIRST_EXCEPTION;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::ALL_COMPLETED;

namespace detail {

/// What completes futures and can do some of that work in the thread that waits for one: a
/// pool lets a waiter drain its workers' result rings itself, which saves the wake-ups of the
/// pool's own thread and of the waiter (two sleeping hand-offs, ~20-45 µs each).
class ProgressEngine {
 public:
  /// Completes whatever is ready now without blocking; true when it did anything. Must not
  /// throw. May run completion callbacks of other futures in the calling thread.
  virtual bool make_progress() noexcept = 0;
  /// A thread starts spinning on make_progress() (the engine may then leave the work to it).
  virtual void waiter_arrives() noexcept {}
  /// It stops: `satisfied` when what it waited for is done, false when it goes to sleep.
  virtual void waiter_leaves(bool /*satisfied*/) noexcept {}
  /// How long a waiter spins before it sleeps: about what a result usually takes to come
  /// back when it comes back soon (a local pool: a few µs; across MPI ranks: tens of µs).
  virtual std::chrono::nanoseconds spin_time() const noexcept { return std::chrono::microseconds(30); }
  /// Withdraws task `id` if it has not started; true when it did (FutureStateBase::cancel of
  /// a state bound to the task with set_engine_task).
  virtual bool cancel_task(std::uint64_t /*id*/) { return false; }

 protected:
  ~ProgressEngine() = default;
};

/// Shared state of a task's result; completed exactly once by the pool (the first completion
/// wins; later ones are ignored and return false).
///
/// Thread-safety: every member may be called from any thread at once. A thread that completes
/// the state, or calls any other member, must keep it alive for the call (hold a shared_ptr).
/// Fork-safety: a child must not wait on a state inherited mid-completion from its parent.
class FutureStateBase {
 public:
  FutureStateBase() = default;
  FutureStateBase(const FutureStateBase&) = delete;
  FutureStateBase& operator=(const FutureStateBase&) = delete;
  virtual ~FutureStateBase();

  /// Completes the state with the value encoded in bytes (decoded by decode()).
  ///
  /// A decoding failure (a SerializationError, or whatever a user's load function throws)
  /// completes the state with that exception instead. Returns false, doing nothing, when the
  /// state was already completed or cancelled. Throws nothing.
  bool set_value_bytes(std::span<const std::byte> bytes);

  /// Completes the state with an exception. Returns false when it was already completed.
  /// Throws std::invalid_argument when error is null.
  bool set_exception(std::exception_ptr error);

  /// True once the state is completed (value, exception or cancellation). Lock-free.
  bool ready() const noexcept { return status_.load(std::memory_order_acquire) == Status::done; }

  /// Blocks until ready(): spins briefly, then sleeps.
  void wait() const;

  /// Blocks until ready() or deadline; returns ready(). time_point::max() waits for ever.
  bool wait_until(std::chrono::steady_clock::time_point deadline) const;

  /// Cancels the task if it has not started: when a canceller is set and returns true (the pool
  /// removed the task), completes the state with CancelledError and returns true. Returns true
  /// when the state was already cancelled, false when it is running, done or not cancellable.
  /// Throws what the canceller throws (the state is then unchanged).
  bool cancel();

  /// True when the state was completed by cancel(). Lock-free.
  bool cancelled() const noexcept { return ready() && cancelled_; }

  /// Installs the pool's canceller (replacing any earlier one); dropped at once when the state
  /// is already completed, cleared on completion. It is never called with the state's lock held.
  void set_canceller(std::function<bool()> canceller);

  /// Lets waiters of this state make progress on `engine` while they spin (set before the
  /// state is shared with other threads).
  void set_progress_engine(std::weak_ptr<ProgressEngine> engine) noexcept { progress_ = std::move(engine); }

  /// Makes the state the result of task `id` of its progress engine: without a canceller,
  /// cancel() asks the engine to withdraw that task (cheaper than a canceller, which is a
  /// std::function). Set before the state's Future is handed out.
  void set_engine_task(std::uint64_t id) noexcept {
    engine_task_ = id;
    has_engine_task_ = true;
  }

  /// Runs callback right after completion, in the completing thread, or at once in this thread
  /// when the state is already completed. Callbacks run exactly once, in the order they were
  /// added, never with the state's lock held. An exception a callback throws is reported on
  /// stderr and otherwise ignored (as concurrent.futures does), so it cannot hurt the pool.
  void add_done_callback(std::function<void()> callback);

  /// As add_done_callback(), but returns an id for remove_done_callback(); 0 when the callback
  /// already ran (the state was completed).
  std::uint64_t add_removable_callback(std::function<void()> callback);

  /// Forgets a callback that has not run yet (for waiters that give up); no-op otherwise.
  void remove_done_callback(std::uint64_t id) noexcept;

  /// The exception the state was completed with (CancelledError when cancelled), or nullptr
  /// when it holds a value. Waits until ready().
  std::exception_ptr exception() const;

  /// Rethrows the stored exception, if any. Requires: ready().
  void rethrow_if_failed() const {
    if (error_) std::rethrow_exception(error_);
  }

 protected:
  /// Stores the value encoded in bytes; called at most once, before the state is marked ready.
  virtual void decode(std::span<const std::byte> bytes) = 0;

  /// Claims the right to complete the state; false when another completion got there first.
  bool try_begin_completion() noexcept;
  /// Publishes the outcome after a successful try_begin_completion(): wakes waiters, runs the
  /// callbacks. error is null for a value.
  void finish_completion(std::exception_ptr error, bool cancelled) noexcept;

 private:
  enum class Status : std::uint8_t { pending, completing, done };
  struct Callback {
    std::uint64_t id;
    std::function<void()> run;
  };

  bool spin_until_ready(std::chrono::steady_clock::time_point deadline) const noexcept;
  static void run_callback(const std::function<void()>& callback) noexcept;

  std::atomic<Status> status_{Status::pending};
  // Written once, under mutex_, before status_ is released as done; read only after ready().
  std::exception_ptr error_;
  bool cancelled_ = false;

  mutable std::mutex mutex_;
  mutable std::condition_variable ready_cv_;
  mutable int sleepers_ = 0;  // threads blocked on ready_cv_ (under mutex_)
  std::vector<Callback> callbacks_;
  std::uint64_t next_callback_id_ = 1;
  std::function<bool()> canceller_;
  std::weak_ptr<ProgressEngine> progress_;
  std::uint64_t engine_task_ = 0;
  bool has_engine_task_ = false;
  std::mutex cancel_mutex_;  // serialises cancel() so concurrent calls agree on the outcome
};

[[noreturn]] void throw_value_taken();
[[noreturn]] void throw_no_state(const char* who);
[[noreturn]] void throw_not_ready(const char* who, long double timeout_ns);
/// now + timeout_ns, saturated: time_point::max() (no deadline) when it would overflow.
std::chrono::steady_clock::time_point deadline_after(long double timeout_ns) noexcept;

template <class Rep, class Period>
long double to_nanoseconds(std::chrono::duration<Rep, Period> timeout) noexcept {
  return std::chrono::duration<long double, std::nano>(timeout).count();
}

/// The shared state of a Future<T>: a FutureStateBase that holds the decoded T.
template <class T>
class FutureState final : public FutureStateBase {
 public:
  /// Completes the state with value (for results that are already decoded). Returns false
  /// when it was already completed.
  bool set_value(T value) {
    if (!try_begin_completion()) return false;
    std::exception_ptr error;
    try {
      value_.emplace(std::move(value));
    } catch (...) {
      error = std::current_exception();
    }
    finish_completion(error, false);
    return true;
  }

  /// The value. Requires: ready() and no exception.
  const T& value() const {
    if (taken_.load(std::memory_order_acquire)) throw_value_taken();
    return *value_;
  }
  /// A copy of the value, or the stored exception rethrown. Requires: ready().
  T copy_result() const {
    rethrow_if_failed();
    return value();
  }
  /// The value moved out (once), or the stored exception rethrown. Requires: ready().
  T take_result() {
    rethrow_if_failed();
    if (taken_.exchange(true, std::memory_order_acq_rel)) throw_value_taken();
    return std::move(*value_);
  }
  bool value_taken() const noexcept { return taken_.load(std::memory_order_acquire); }

 private:
  void decode(std::span<const std::byte> bytes) override {
    // Some results are assembled in this process (a map's vector of Results) and never
    // arrive as bytes; only Serializable ones can be decoded.
    if constexpr (Serializable<T>)
      value_.emplace(mproc::deserialize<T>(bytes));
    else
      throw SerializationError("mproc::Future: this result type is never decoded from bytes");
  }

  std::optional<T> value_;
  std::atomic<bool> taken_{false};
};

/// The state of a Future<void>: the task's bytes must be empty.
template <>
class FutureState<void> final : public FutureStateBase {
 public:
  bool set_value();
  void copy_result() const { rethrow_if_failed(); }
  void take_result() { rethrow_if_failed(); }
  bool value_taken() const noexcept { return false; }

 private:
  void decode(std::span<const std::byte> bytes) override;
};

template <class F, class T>
concept value_callback = (std::is_void_v<T> && std::invocable<F&>) ||
                         (!std::is_void_v<T> && std::invocable<F&, const std::remove_cv_t<T>&>);

template <class F>
concept error_callback = std::invocable<F&, std::exception_ptr>;

/// A std::function-compatible wrapper: move-only callables are shared instead of copied.
template <class F>
std::function<void()> as_function(F&& f) {
  using Fn = std::decay_t<F>;
  if constexpr (std::copy_constructible<Fn>) {
    return std::function<void()>(std::forward<F>(f));
  } else {
    return [shared = std::make_shared<Fn>(std::forward<F>(f))] { (*shared)(); };
  }
}

/// The non-template part of AsCompleted<T>: registers a callback on each distinct state that
/// queues its index on completion, and hands the indices out in completion order.
class AsCompletedCore {
 public:
  /// deadline: time_point::max() for none. Throws std::logic_error when a state is null.
  AsCompletedCore(std::vector<std::shared_ptr<FutureStateBase>> states,
                  std::chrono::steady_clock::time_point deadline);
  AsCompletedCore(const AsCompletedCore&) = delete;
  AsCompletedCore& operator=(const AsCompletedCore&) = delete;
  ~AsCompletedCore();

  /// Blocks until the next state completes and returns its index in the given vector; nullopt
  /// once every distinct state has been handed out. Throws TimeoutError past the deadline.
  std::optional<std::size_t> next();

 private:
  class Queue;
  std::vector<std::shared_ptr<FutureStateBase>> states_;
  std::vector<std::uint64_t> callback_ids_;  // per index; 0: none pending (ran, or duplicate)
  std::shared_ptr<Queue> queue_;             // shared with the callbacks, which outlive us
  std::size_t total_ = 0;                    // distinct states
  std::size_t handed_out_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

struct WaitIndices {
  std::vector<std::size_t> done;
  std::vector<std::size_t> not_done;
};

/// concurrent.futures.wait over type-erased states; duplicates are reported once.
WaitIndices wait_states(const std::vector<std::shared_ptr<FutureStateBase>>& states,
                        std::chrono::steady_clock::time_point deadline, ReturnWhen return_when);

}  // namespace detail

/// The result of a task: a copyable handle on a shared state, like std::shared_future.
///
/// Example:
///   mproc::Future<std::string> f = pool.apply_async(greet, "world");
///   if (f.wait_for(std::chrono::seconds(1))) std::cout << f.get() << '\n';
///
/// A default-constructed Future is invalid: valid() is false and every other member, but
/// ready() and cancelled() (false), throws std::logic_error("... no state").
/// Thread-safety: any member may be called from many threads at once, on one handle or on
/// copies, except that an rvalue get() moves the value out and must not race another get().
template <class T>
class Future {
 public:
  using value_type = T;

  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<T>> state) noexcept
      : state_(std::move(state)) {}

  bool valid() const noexcept { return state_ != nullptr; }

  /// Waits, then returns a copy of the value (nothing for Future<void>) or rethrows the task's
  /// exception with its own type; CancelledError when the task was cancelled. For a move-only T
  /// only the rvalue form exists: `std::move(f).get()`.
  /// Throws std::logic_error when the value was already moved out by an rvalue get().
  T get() const& requires(std::is_void_v<T> || std::copy_constructible<T>) {
    wait();
    return state_->copy_result();
  }

  /// As get(), but moves the value out of the shared state: one-shot, e.g.
  /// `pool.apply_async(f).get()`. Copies of this Future then throw std::logic_error from get().
  T get() && {
    wait();
    return state_->take_result();
  }

  /// As get(), but throws TimeoutError when the result is not ready within timeout. The task
  /// goes on; the Future can be waited on again.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const& requires(std::is_void_v<T> ||
                                                                    std::copy_constructible<T>) {
    wait_or_throw(timeout);
    return state_->copy_result();
  }

  /// As get(timeout), moving the value out.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) && {
    wait_or_throw(timeout);
    return state_->take_result();
  }

  /// Blocks until the result is ready (value, exception or cancellation).
  void wait() const { checked("wait").wait(); }

  /// Blocks until the result is ready or timeout passes; returns whether it is ready.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    const auto& state = checked("wait_for");
    return state.wait_until(detail::deadline_after(detail::to_nanoseconds(timeout)));
  }

  /// True when the result is ready. Never blocks; false for an invalid Future.
  bool ready() const noexcept { return state_ && state_->ready(); }

  /// True when the task returned a value, false when it threw or was cancelled.
  /// Throws std::logic_error when the result is not ready yet (Python raises ValueError).
  bool successful() const {
    const auto& state = checked("successful");
    if (!state.ready())
      throw std::logic_error("mproc::Future::successful: the result is not ready");
    return state.exception() == nullptr;
  }

  /// Cancels the task if it has not started yet; returns true when the Future is cancelled
  /// (get() then throws CancelledError), false when the task runs or is done.
  bool cancel() { return checked("cancel").cancel(); }

  /// True when the task was cancelled. False for an invalid Future.
  bool cancelled() const noexcept { return state_ && state_->cancelled(); }

  /// Waits, then returns the task's exception (a CancelledError when cancelled), or nullptr
  /// when it returned a value.
  std::exception_ptr exception() const { return checked("exception").exception(); }

  /// Calls on_value(const T&) (on_value() for Future<void>) or on_error(std::exception_ptr)
  /// once the result is ready, like Python's apply_async(callback=, error_callback=): right
  /// after completion, in the thread that delivered the result (the pool's thread, or a thread
  /// waiting on a future of the pool), or at once in this thread when already done.
  /// Callbacks should be quick; what they throw is reported on stderr and ignored.
  /// Returns *this. Throws std::logic_error when the value was already moved out.
  template <class OnValue, class OnError>
  requires detail::value_callback<OnValue, T> && detail::error_callback<OnError> Future& then(
      OnValue on_value, OnError on_error) {
    auto& state = checked("then");
    if (state.value_taken()) detail::throw_value_taken();
    // A raw pointer, not a shared_ptr: the state owns the callback, and it runs either inside
    // the completing call or in this call, while the state is alive either way.
    detail::FutureState<T>* raw = state_.get();
    state.add_done_callback(detail::as_function(
        [raw, on_value = std::move(on_value), on_error = std::move(on_error)]() mutable {
          if (std::exception_ptr error = raw->exception()) {
            on_error(std::move(error));
          } else if constexpr (std::is_void_v<T>) {
            on_value();
          } else {
            on_value(raw->value());
          }
        }));
    return *this;
  }

  /// As then(on_value, on_error), with errors left to whoever calls get().
  template <class OnValue>
  requires detail::value_callback<OnValue, T> Future& then(OnValue on_value) {
    return then(std::move(on_value), [](std::exception_ptr) {});
  }

  /// The shared state, for the pool; null for an invalid Future.
  std::shared_ptr<detail::FutureState<T>> state() const noexcept { return state_; }

 private:
  detail::FutureState<T>& checked(const char* who) const {
    if (!state_) detail::throw_no_state(who);
    return *state_;
  }

  template <class Rep, class Period>
  void wait_or_throw(std::chrono::duration<Rep, Period> timeout) const {
    const long double ns = detail::to_nanoseconds(timeout);
    if (!checked("get").wait_until(detail::deadline_after(ns)))
      detail::throw_not_ready("mproc::Future::get", ns);
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

/// The futures of as_completed(), in completion order: an input range whose iterator blocks
/// until the next future completes (already completed ones come first, in the given order).
/// A future given twice is yielded once. Incrementing (and begin()) throws TimeoutError when
/// the overall timeout passes first. The range may be destroyed before its futures complete.
/// Thread-safety: one range is iterated by one thread.
template <class T>
class AsCompleted {
 public:
  class iterator {
   public:
    using iterator_concept = std::input_iterator_tag;
    using iterator_category = std::input_iterator_tag;
    using value_type = Future<T>;
    using difference_type = std::ptrdiff_t;
    using reference = Future<T>;

    iterator() = default;
    Future<T> operator*() const { return range_->current_; }
    iterator& operator++() {
      range_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
      return it.at_end();
    }

   private:
    friend class AsCompleted;
    explicit iterator(AsCompleted* range) noexcept : range_(range) {}
    bool at_end() const noexcept { return range_ == nullptr || range_->finished_; }
    AsCompleted* range_ = nullptr;
  };

  /// Prefer as_completed(). deadline: time_point::max() for none.
  /// Throws std::logic_error when a future is invalid.
  AsCompleted(std::vector<Future<T>> futures, std::chrono::steady_clock::time_point deadline)
      : futures_(std::move(futures)),
        core_(std::make_unique<detail::AsCompletedCore>(states_of(futures_), deadline)) {}

  /// Blocks until the first future completes (once; later calls resume where iteration is).
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  static std::vector<std::shared_ptr<detail::FutureStateBase>> states_of(
      const std::vector<Future<T>>& futures) {
    std::vector<std::shared_ptr<detail::FutureStateBase>> states;
    states.reserve(futures.size());
    for (const auto& f : futures) states.push_back(f.state());
    return states;
  }

  void advance() {
    if (finished_) return;
    if (std::optional<std::size_t> index = core_->next()) {
      current_ = futures_[*index];
    } else {
      finished_ = true;
      current_ = Future<T>();
    }
  }

  std::vector<Future<T>> futures_;
  std::unique_ptr<detail::AsCompletedCore> core_;
  Future<T> current_;
  bool started_ = false;
  bool finished_ = false;
};

/// The futures in completion order, lazily, like concurrent.futures.as_completed:
///
///   for (mproc::Future<int> f : mproc::as_completed(futures)) total += f.get();
///
/// Throws std::logic_error when a future is invalid.
template <class T>
AsCompleted<T> as_completed(const std::vector<Future<T>>& futures) {
  return AsCompleted<T>(futures, std::chrono::steady_clock::time_point::max());
}

/// As as_completed(futures), with an overall timeout counted from this call: the iterator
/// throws TimeoutError when the next future does not complete in time.
template <class T, class Rep, class Period>
AsCompleted<T> as_completed(const std::vector<Future<T>>& futures,
                            std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<T>(futures, detail::deadline_after(detail::to_nanoseconds(timeout)));
}

/// What wait() returns: the futures that are done (completed or cancelled) and those that are
/// not, each in the order given, a future given twice listed once.
template <class T>
struct WaitResult {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {
template <class T>
WaitResult<T> wait_futures(const std::vector<Future<T>>& futures,
                           std::chrono::steady_clock::time_point deadline, ReturnWhen when) {
  std::vector<std::shared_ptr<FutureStateBase>> states;
  states.reserve(futures.size());
  for (const auto& f : futures) states.push_back(f.state());
  const WaitIndices indices = wait_states(states, deadline, when);
  WaitResult<T> result;
  result.done.reserve(indices.done.size());
  result.not_done.reserve(indices.not_done.size());
  for (std::size_t i : indices.done) result.done.push_back(futures[i]);
  for (std::size_t i : indices.not_done) result.not_done.push_back(futures[i]);
  return result;
}
}  // namespace detail

/// Waits until return_when holds for futures, like concurrent.futures.wait: FIRST_COMPLETED
/// (any done), FIRST_EXCEPTION (any failed with an exception — cancellation does not count —
/// or all done), ALL_COMPLETED. Returns at once when it already holds, or futures is empty.
/// Throws std::logic_error when a future is invalid.
template <class T>
WaitResult<T> wait(const std::vector<Future<T>>& futures,
                   ReturnWhen return_when = ReturnWhen::ALL_COMPLETED) {
  return detail::wait_futures(futures, std::chrono::steady_clock::time_point::max(), return_when);
}

/// As wait(futures, return_when), giving up after timeout: then some futures are in not_done.
/// Does not throw TimeoutError.
template <class T, class Rep, class Period>
WaitResult<T> wait(const std::vector<Future<T>>& futures,
                   std::chrono::duration<Rep, Period> timeout,
                   ReturnWhen return_when = ReturnWhen::ALL_COMPLETED) {
  return detail::wait_futures(futures, detail::deadline_after(detail::to_nanoseconds(timeout)),
                              return_when);
}

}  // namespace mproc
