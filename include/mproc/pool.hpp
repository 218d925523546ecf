// mproc/pool.hpp — Pool: worker processes that run tasks, like Python's multiprocessing.Pool
// and concurrent.futures.ProcessPoolExecutor, with workers that may crash, hang or leak
// without costing more than the task that did it.
//
//   int square(int x) { return x * x; }
//   mproc::Pool pool(4);
//   std::vector<int> squares = pool.map(square, std::vector{1, 2, 3, 4, 5});
//   mproc::Future<int> f = pool.apply_async(square, 7);   // f.get() == 49
//
// Tasks are function pointers or captureless lambdas (checked at compile time) whose
// arguments and results are Serializable: they are named across processes by
// (module, offset), so they work under every start method.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/detail/task_entry.hpp"
#include "mproc/errors.hpp"
#include "mproc/future.hpp"
#include "mproc/process.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

/// A worker initializer: a stateless callable and its (serializable) arguments, run once in
/// every worker before its first task: `PoolOptions{.initializer = {load_model, "model.bin"}}`
/// or `.initializer = mproc::Initializer(setup)`.
class Initializer {
 public:
  Initializer() = default;
  template <class F, class... Args>
    requires(!std::same_as<std::remove_cvref_t<F>, Initializer> &&
             std::invocable<std::decay_t<F>, detail::stored_arg_t<Args>...>)
  Initializer(F&& f, Args&&... args) {  // NOLINT: implicit, so that `.initializer = {f, args...}` reads well
    using Fn = std::decay_t<F>;
    static_assert(detail::is_stateless_target_v<Fn>,
                  "mproc::Initializer: the initializer must be a function pointer, a captureless "
                  "lambda or an empty functor (it runs in other processes)");
    static_assert((Serializable<detail::stored_arg_t<Args>> && ...),
                  "mproc::Initializer: every argument must be Serializable");
    auto spec = detail::make_target_spec(StartMethod::spawn, std::forward<F>(f), std::forward<Args>(args)...);
    target_ = std::move(spec.spawn_target);
    name_ = std::move(spec.function_name);
    if constexpr (std::is_pointer_v<Fn>) address_ = reinterpret_cast<const void*>(static_cast<Fn>(f));
  }
  bool empty() const noexcept { return !target_.has_value(); }
  const std::optional<detail::SpawnTarget>& target() const noexcept { return target_; }
  /// The initializer's name (for messages; a function pointer is looked up on demand).
  std::string name() const { return address_ ? detail::function_name_at(address_) : name_; }

 private:
  std::optional<detail::SpawnTarget> target_;
  std::string name_;
  const void* address_ = nullptr;
};

/// Options of a Pool; use designated initializers.
struct PoolOptions {
  unsigned processes = 0;            ///< 0: cpu_count()
  Initializer initializer;           ///< run once in every worker
  unsigned max_tasks_per_child = 0;  ///< 0: unlimited; else a worker is replaced after this many tasks
  std::size_t max_memory_per_child = 0;  ///< 0: unlimited; else bytes a worker may allocate (kernel-enforced)
  std::optional<std::chrono::nanoseconds> task_timeout;  ///< default time limit of every task
  unsigned max_retries = 0;          ///< re-runs of a task whose worker died; 0: report the crash
  StartMethod start_method = StartMethod::fork;
};

/// Per-call options of apply_async.
struct TaskOptions {
  std::optional<std::chrono::nanoseconds> timeout;  ///< overrides PoolOptions::task_timeout
  std::optional<unsigned> max_retries;              ///< overrides PoolOptions::max_retries
};

/// Progress of a map/imap, passed to its progress callback (from the thread that delivers
/// results: the pool's thread, or one waiting on a future of the pool).
struct Progress {
  std::size_t done = 0;
  std::size_t total = 0;  ///< 0 when unknown (imap over an input of unknown length)
  std::chrono::steady_clock::duration elapsed{};
};
using ProgressCallback = std::function<void(const Progress&)>;

/// Per-call options of map, map_async, imap, imap_unordered, starmap.
struct MapOptions {
  std::size_t chunksize = 0;  ///< 0: automatic (map: ceil(N / (4 * processes)); imap: 1)
  std::optional<std::chrono::nanoseconds> timeout;  ///< time limit of each chunk task
  std::optional<unsigned> max_retries;
  ProgressCallback progress;
};

/// Tag: `pool.map(f, items, mproc::collect)` returns one Result per item instead of throwing.
struct collect_t {
  explicit collect_t() = default;
};
inline constexpr collect_t collect{};

/// The outcome of one item of a map with `collect`: its value or its exception.
template <class T>
class Result {
 public:
  explicit Result(T value) : outcome_(std::in_place_index<0>, std::move(value)) {}
  explicit Result(std::exception_ptr error) : outcome_(std::in_place_index<1>, std::move(error)) {}
  bool ok() const noexcept { return outcome_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  /// The value; rethrows the item's exception when it failed.
  const T& value() const& {
    if (!ok()) std::rethrow_exception(std::get<1>(outcome_));
    return std::get<0>(outcome_);
  }
  T&& value() && {
    if (!ok()) std::rethrow_exception(std::get<1>(outcome_));
    return std::get<0>(std::move(outcome_));
  }
  /// The exception, or nullptr when the item succeeded.
  std::exception_ptr error() const noexcept { return ok() ? nullptr : std::get<1>(outcome_); }

 private:
  std::variant<T, std::exception_ptr> outcome_;
};

/// Counters of a pool's life (see Pool::stats()).
struct PoolStats {
  std::uint64_t tasks_done = 0;       ///< tasks (or chunks) that delivered a value
  std::uint64_t tasks_failed = 0;     ///< tasks that failed: exception, crash, timeout, memory limit
  std::uint64_t tasks_retried = 0;    ///< re-runs after a worker died
  std::uint64_t tasks_timed_out = 0;  ///< tasks killed by their time limit
  std::uint64_t workers_started = 0;
  std::uint64_t workers_died = 0;      ///< workers that ended other than by recycling or shutdown
  std::uint64_t workers_recycled = 0;  ///< workers replaced after max_tasks_per_child
};

/// Registers an exception type so that, thrown in a worker, it arrives as itself (same type,
/// same what()). T must be constructible from a std::string. Call it at static-initialisation
/// time (MPROC_REGISTER_EXCEPTION) so that spawned workers know it too.
template <class T>
bool register_exception();

/// Registers T at static-initialisation time: `MPROC_REGISTER_EXCEPTION(my::ParseError);`
#define MPROC_REGISTER_EXCEPTION(...)                                                  \
  [[maybe_unused]] static const bool MPROC_CONCAT_(mproc_registered_exception_, __LINE__) = \
      ::mproc::register_exception<__VA_ARGS__>()
#define MPROC_CONCAT_(a, b) MPROC_CONCAT_IMPL_(a, b)
#define MPROC_CONCAT_IMPL_(a, b) a##b

namespace detail {

using ExceptionFactory = std::exception_ptr (*)(const std::string& what);
void register_exception_type(const char* type_id, ExceptionFactory factory);


/// Where a task's items lie in the whole input of a map (for chunks) — or {0, 1} for apply.
struct TaskRef {
  std::uint64_t id = 0;
  std::size_t begin = 0;
  std::size_t end = 1;
};

/// Receives a task's outcome, in the pool's supervisor thread.
class TaskSink {
 public:
  virtual ~TaskSink() = default;
  virtual void deliver(const TaskRef& task, ResultKind kind, std::span<const std::byte> payload) = 0;
  virtual void fail(const TaskRef& task, std::exception_ptr error) = 0;
};

/// Encodes part of a map's items: first every chunk, later (the pool bisects a chunk that
/// killed its worker) a part of a chunk — from the chunk's own payload `whole`, whose first
/// item is item `whole_begin` of the map.
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  virtual std::vector<std::byte> encode(std::span<const std::byte> whole, std::size_t whole_begin,
                                        std::size_t begin, std::size_t end) const = 0;
};

/// Bytes of a task's payload that stay in the caller's object until the task is written to a
/// worker: the large arguments of the synchronous apply(), whose caller waits for the task's
/// outcome and so keeps them alive for every write (retries included). They belong at offset
/// `at` of the owned bytes; a large argument then costs one copy on its way to the worker
/// (straight into the overflow segment) instead of an encoding into a fresh buffer and a copy.
struct BorrowedBytes {
  std::size_t at = 0;
  std::span<const std::byte> bytes;
};

/// Arguments of apply() from this size on that are their own bytes are borrowed.
inline constexpr std::size_t borrowed_argument_bytes = std::size_t{64} << 10;

struct TaskRequest {
  FunctionId entry;
  std::vector<std::byte> payload;       // the encoded task, but for its borrowed bytes
  std::vector<BorrowedBytes> borrowed;  // in order of `at`; empty but for apply()'s large arguments
  std::shared_ptr<FdSink> fds;  // descriptors of shareable arguments; null when none
  const std::string* function_name = nullptr;  // a lambda's type name (cached), or null
  const void* function_address = nullptr;      // a function pointer, named only for a crash report
  std::shared_ptr<TaskSink> sink;
  std::shared_ptr<const ChunkSource> chunk;  // set for map chunks (splittable)
  std::size_t begin = 0, end = 1;            // item range within the whole input
  std::optional<std::chrono::nanoseconds> timeout;
  std::optional<unsigned> max_retries;

  /// The length of the whole payload, borrowed bytes included.
  std::size_t payload_size() const noexcept {
    std::size_t size = payload.size();
    for (const auto& part : borrowed) size += part.bytes.size();
    return size;
  }
  /// Calls put(piece) for each piece of the whole payload in order: owned bytes, then the
  /// borrowed bytes that belong there, and so on.
  template <class Put>
  void for_each_piece(Put&& put) const {
    const std::span<const std::byte> owned(payload);
    std::size_t from = 0;
    for (const auto& part : borrowed) {
      if (part.at != from) put(owned.subspan(from, part.at - from));
      put(part.bytes);
      from = part.at;
    }
    if (owned.size() != from) put(owned.subspan(from));
  }
  /// Writes the whole payload, borrowed bytes in their places, to dst (payload_size() bytes).
  void copy_payload(std::byte* dst) const noexcept {
    for_each_piece([&](std::span<const std::byte> piece) {
      std::memcpy(dst, piece.data(), piece.size());
      dst += piece.size();
    });
  }
  /// Copies the borrowed bytes into the payload, for an engine that keeps the request beyond
  /// its caller's wait.
  void own_payload() {
    if (borrowed.empty()) return;
    std::vector<std::byte> whole;
    reserve_bulk(whole, payload_size());
    for_each_piece([&](std::span<const std::byte> piece) { whole.insert(whole.end(), piece.begin(), piece.end()); });
    payload = std::move(whole);
    borrowed.clear();
  }
};

/// Encodes one argument of apply/apply_async into `request` as its own part; with Borrow, a
/// large one that is its own bytes (and of its stored type) is borrowed, not copied.
template <class Arg, bool Borrow, class T>
void append_argument(TaskRequest& request, const T& arg) {
  using Stored = std::decay_t<Arg>;
  if constexpr (Borrow && raw_range<Stored>::value && std::is_same_v<std::remove_cv_t<T>, Stored>) {
    const auto bytes = raw_bytes(arg);
    if (bytes.size() >= borrowed_argument_bytes) {
      const std::uint64_t length = bytes.size();
      append_bytes(request.payload, &length, sizeof length);  // the part's length, as append_part
      request.borrowed.push_back({request.payload.size(), bytes});
      return;
    }
  }
  append_argument<Arg>(request.payload, arg);
}

/// Encodes items [begin, end) of a map into `request`, with their descriptors (from the
/// chunk `whole` when it is a part of one, see ChunkSource).
inline void encode_chunk(const ChunkSource& chunk, std::size_t begin, std::size_t end, TaskRequest& request,
                         const TaskRequest* whole = nullptr) {
  FdSink fds;  // allocated on the heap only when an item has descriptors
  {
    ScopedFdSink collect(fds);
    request.payload = whole ? chunk.encode(whole->payload, whole->begin, begin, end)
                            : chunk.encode({}, begin, begin, end);
  }
  request.fds = fds.empty() ? nullptr : std::make_shared<FdSink>(std::move(fds));
}

/// The task for items [begin, end) of the map chunk `whole` (poison-item bisection splits a
/// chunk that killed its worker): same function, sink, source and per-task options.
inline TaskRequest chunk_part(const TaskRequest& whole, std::size_t begin, std::size_t end) {
  TaskRequest part;
  part.entry = whole.entry;
  encode_chunk(*whole.chunk, begin, end, part, &whole);
  part.function_name = whole.function_name;
  part.function_address = whole.function_address;
  part.sink = whole.sink;
  part.chunk = whole.chunk;
  part.begin = begin;
  part.end = end;
  part.timeout = whole.timeout;
  part.max_retries = whole.max_retries;
  return part;
}

/// What runs a Pool's tasks: worker processes on this machine (PoolCore, src/pool/) or the
/// workers of MPI ranks (mproc::mpi). Every method may be called from any thread.
class PoolEngine : public ProgressEngine {
 public:
  virtual ~PoolEngine() = default;
  virtual std::uint64_t submit(TaskRequest request) = 0;
  virtual bool cancel(std::uint64_t task_id) = 0;
  bool cancel_task(std::uint64_t task_id) override { return cancel(task_id); }
  /// Withdraws every task of `ids` if none has started yet (all or nothing).
  virtual bool cancel_all(const std::vector<std::uint64_t>& ids) = 0;
  virtual unsigned processes() const = 0;
  virtual void close() = 0;
  virtual void join() = 0;
  virtual void terminate() = 0;
  virtual PoolStats stats() const = 0;
  bool make_progress() noexcept override { return false; }
};

/// The engine of a Pool on this machine.
std::shared_ptr<PoolEngine> make_pool_core(const PoolOptions& options);

template <class F, class... Args>
using task_result_t = std::invoke_result_t<F, stored_arg_t<Args>...>;

/// What f returns for one item of a map (Star: the item is a tuple of arguments).
template <class F, class T, bool Star>
struct map_result {
  using type = std::decay_t<std::invoke_result_t<F&, T>>;
};
template <class F, class T>
struct map_result<F, T, true> {
  using type = std::decay_t<decltype(std::apply(std::declval<F&>(), std::declval<T>()))>;
};

template <class F>
constexpr void require_task_callable() {
  static_assert(is_stateless_target_v<F>,
                "mproc::Pool: a task must be a function pointer, a captureless lambda or an empty "
                "functor: it runs in worker processes that do not share this process's memory. "
                "Pass state as arguments.");
}

/// Completes a Future<R> from a task's outcome.
template <class R>
class FutureSink final : public TaskSink {
 public:
  /// `state` must outlive the sink (ApplyTask keeps both in one allocation).
  explicit FutureSink(FutureState<R>& state) : state_(&state) {}
  void deliver(const TaskRef&, ResultKind kind, std::span<const std::byte> payload) override {
    if (kind == ResultKind::value) {
      state_->set_value_bytes(payload);
    } else {
      try {
        if (kind != ResultKind::exception)
          throw SerializationError("a task's result has an unknown kind " +
                                   std::to_string(static_cast<std::uint32_t>(kind)));
        state_->set_exception(rebuild_exception(deserialize<RemoteException>(payload)));
      } catch (...) {
        state_->set_exception(std::current_exception());
      }
    }
  }
  void fail(const TaskRef&, std::exception_ptr error) override { state_->set_exception(error); }

 private:
  FutureState<R>* state_;
};

/// An apply_async's future state and the sink the pool completes it through, in one
/// allocation (a task's allocations are most of what submitting it costs).
template <class R>
struct ApplyTask {
  FutureState<R> state;
  FutureSink<R> sink{state};
};

/// The items of a map, shared by its chunks; encodes any sub-range for a worker.
template <class F, class T>
class ItemsSource final : public ChunkSource {
 public:
  ItemsSource(F f, std::shared_ptr<const std::vector<T>> items, std::size_t offset = 0)
      : f_(f), items_(std::move(items)), offset_(offset) {}
  std::vector<std::byte> encode(std::span<const std::byte>, std::size_t, std::size_t begin,
                                std::size_t end) const override {
    std::vector<std::byte> out;
    append_task_callable(out, f_);
    std::size_t at;
    begin_part(out, at);
    // The fast path of a vector<T> is its elements' bytes; a sub-range encodes the same.
    std::vector<T> part(items_->begin() + static_cast<std::ptrdiff_t>(begin - offset_),
                        items_->begin() + static_cast<std::ptrdiff_t>(end - offset_));
    serialize_to(out, part);
    end_part(out, at);
    return out;
  }

 private:
  F f_;
  std::shared_ptr<const std::vector<T>> items_;
  std::size_t offset_;  // global index of (*items_)[0]
};

/// Items that are their own bytes (ints, doubles, plain structs) laid out contiguously: a
/// chunk's payload is copied straight from the caller's items (no copy of the whole input
/// first), and a part of a chunk is a slice of the chunk's payload.
template <class F, class T>
  requires raw_range<std::vector<T>>::value
class RawItemsSource final : public ChunkSource {
 public:
  explicit RawItemsSource(F f) : f_(f) {}
  /// Encodes `count` items starting at `first` (called while they are alive: at submission).
  std::vector<std::byte> encode_items(const T* first, std::size_t count) const {
    return encode_bytes(std::as_bytes(std::span<const T>(first, count)));
  }
  std::vector<std::byte> encode(std::span<const std::byte> whole, std::size_t whole_begin, std::size_t begin,
                                std::size_t end) const override {
    take_part(whole);  // the callable, encoded again below
    const auto items = take_part(whole);
    if (begin < whole_begin || begin > end || (end - whole_begin) * sizeof(T) > items.size())
      throw std::logic_error("mproc: a part of a map chunk lies outside the chunk");
    return encode_bytes(items.subspan((begin - whole_begin) * sizeof(T), (end - begin) * sizeof(T)));
  }

 private:
  // The payload map_chunk_entry reads: the callable's part, then the items' bytes as a part.
  std::vector<std::byte> encode_bytes(std::span<const std::byte> items) const {
    std::vector<std::byte> out;
    reserve_bulk(out, 64 + items.size());  // huge pages for a large chunk, as any payload
    append_task_callable(out, f_);
    std::size_t at;
    begin_part(out, at);
    out.insert(out.end(), items.begin(), items.end());
    end_part(out, at);
    return out;
  }

  F f_;
};

/// Per-item results of a map, filled chunk by chunk in the thread that delivers results.
/// Values are decoded straight into the vector that map returns (one memcpy per chunk for
/// items that are their own bytes); failures, rare, are kept by item range.
template <class R>
class ItemResults {
  static constexpr bool in_place = std::is_default_constructible_v<R> && std::is_move_assignable_v<R>;

 public:
  explicit ItemResults(std::size_t n) : values_(n) {}

  /// Stores a chunk's outcome.
  void store(const TaskRef& task, ResultKind kind, std::span<const std::byte> payload) {
    const std::size_t n = task.end - task.begin;
    if (kind == ResultKind::value) {
      if constexpr (in_place && raw_range<std::vector<R>>::value) {
        if (payload.size() != n * sizeof(R))
          throw SerializationError("a chunk result has the wrong number of items");
        if (n != 0) std::memcpy(values_.data() + task.begin, payload.data(), payload.size());
      } else {
        auto values = deserialize<std::vector<R>>(payload);
        if (values.size() != n) throw SerializationError("a chunk result has the wrong number of items");
        for (std::size_t i = 0; i < n; ++i) put(task.begin + i, std::move(values[i]));
      }
    } else if (kind == ResultKind::partial) {
      auto outcome = deserialize<ChunkOutcome<R>>(payload);
      if (outcome.values.size() + outcome.errors.size() != n)
        throw SerializationError("a chunk result has the wrong number of items");
      std::size_t next_value = 0, next_error = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (next_error < outcome.errors.size() && outcome.errors[next_error].first == i)
          fail_range(task.begin + i, task.begin + i + 1, rebuild_exception(outcome.errors[next_error++].second));
        else if (next_value < outcome.values.size())
          put(task.begin + i, std::move(outcome.values[next_value++]));
        else
          throw SerializationError("a chunk result's error indices are out of order");
      }
    } else if (kind == ResultKind::exception) {
      fail(task, rebuild_exception(deserialize<RemoteException>(payload)));
    } else {
      throw SerializationError("a chunk's result has an unknown kind " +
                               std::to_string(static_cast<std::uint32_t>(kind)));
    }
  }
  void fail(const TaskRef& task, std::exception_ptr error) { fail_range(task.begin, task.end, std::move(error)); }
  /// The first failure in [begin, end), by index.
  std::exception_ptr first_error(std::size_t begin, std::size_t end) const {
    auto it = failed_.upper_bound(begin);
    if (it != failed_.begin() && std::prev(it)->second.first > begin) return std::prev(it)->second.second;
    return it != failed_.end() && it->first < end ? it->second.second : nullptr;
  }
  std::exception_ptr error(std::size_t i) const { return failed_.empty() ? nullptr : first_error(i, i + 1); }
  R take(std::size_t i) {
    if constexpr (in_place)
      return std::move(values_[i]);
    else
      return std::move(*values_[i]);
  }
  /// Every value, in item order (call once, when every item has a value).
  std::vector<R> take_all() {
    if constexpr (in_place) {
      return std::move(values_);
    } else {
      std::vector<R> all;
      all.reserve(values_.size());
      for (auto& value : values_) all.push_back(std::move(*value));
      return all;
    }
  }
  std::size_t size() const { return values_.size(); }

 private:
  void put(std::size_t i, R&& value) {
    if constexpr (in_place)
      values_[i] = std::move(value);
    else
      values_[i].emplace(std::move(value));
  }
  // Each item has one outcome, so the ranges never overlap: begin → (end, error).
  void fail_range(std::size_t begin, std::size_t end, std::exception_ptr error) {
    if (begin < end) failed_.insert_or_assign(begin, std::pair{end, std::move(error)});
  }

  std::vector<std::conditional_t<in_place, R, std::optional<R>>> values_;
  std::map<std::size_t, std::pair<std::size_t, std::exception_ptr>> failed_;
};

/// Collects the chunks of a map_async and completes its future when all have arrived
/// (or, without `collect`, at the first failed item).
template <class R, bool Collect>
class MapSink final : public TaskSink {
 public:
  using Value = std::conditional_t<Collect, std::vector<Result<R>>, std::vector<R>>;

  MapSink(std::size_t n, std::shared_ptr<FutureState<Value>> state, ProgressCallback progress)
      : results_(n), left_(n), state_(std::move(state)), progress_(std::move(progress)),
        started_(std::chrono::steady_clock::now()) {
    if (n == 0) state_->set_value(Value{});
  }
  void deliver(const TaskRef& task, ResultKind kind, std::span<const std::byte> payload) override {
    try {
      results_.store(task, kind, payload);
    } catch (...) {
      results_.fail(task, std::current_exception());
    }
    arrived(task);
  }
  void fail(const TaskRef& task, std::exception_ptr error) override {
    results_.fail(task, error);
    arrived(task);
  }

 private:
  void arrived(const TaskRef& task) {
    if (state_->ready()) return;  // failed fast or terminated: nothing more to report
    if (!Collect) {
      if (auto error = results_.first_error(task.begin, task.end)) {
        state_->set_exception(error);
        return;
      }
    }
    left_ -= task.end - task.begin;
    if (progress_) progress_(Progress{results_.size() - left_, results_.size(), std::chrono::steady_clock::now() - started_});
    if (left_ != 0) return;
    if constexpr (Collect) {
      Value value;
      value.reserve(results_.size());
      for (std::size_t i = 0; i < results_.size(); ++i) {
        if (auto error = results_.error(i))
          value.emplace_back(error);
        else
          value.emplace_back(results_.take(i));
      }
      state_->set_value(std::move(value));
    } else {
      state_->set_value(results_.take_all());
    }
  }

  ItemResults<R> results_;
  std::size_t left_;
  std::shared_ptr<FutureState<Value>> state_;
  ProgressCallback progress_;
  std::chrono::steady_clock::time_point started_;
};

/// Shared between an imap's iterator and its chunks' sink.
template <class R>
struct ImapState {
  std::mutex mutex;
  std::condition_variable arrived;
  std::map<std::size_t, Result<R>> ready;  // item index → outcome, until consumed
  std::deque<std::size_t> arrival_order;   // for imap_unordered
  std::size_t done_items = 0;
  ProgressCallback progress;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

template <class R>
class ImapSink final : public TaskSink {
 public:
  explicit ImapSink(std::shared_ptr<ImapState<R>> state, std::size_t begin, std::size_t end)
      : state_(std::move(state)), results_(end - begin), offset_(begin) {}
  void deliver(const TaskRef& task, ResultKind kind, std::span<const std::byte> payload) override {
    TaskRef local{task.id, task.begin - offset_, task.end - offset_};
    try {
      results_.store(local, kind, payload);
    } catch (...) {
      results_.fail(local, std::current_exception());
    }
    publish(task, local);
  }
  void fail(const TaskRef& task, std::exception_ptr error) override {
    TaskRef local{task.id, task.begin - offset_, task.end - offset_};
    results_.fail(local, error);
    publish(task, local);
  }

 private:
  void publish(const TaskRef& task, const TaskRef& local) {
    ProgressCallback progress;
    Progress snapshot;
    {
      std::lock_guard lock(state_->mutex);
      for (std::size_t i = local.begin; i < local.end; ++i) {
        std::size_t global = task.begin + (i - local.begin);
        if (auto error = results_.error(i))
          state_->ready.emplace(global, Result<R>(error));
        else
          state_->ready.emplace(global, Result<R>(results_.take(i)));
        state_->arrival_order.push_back(global);
      }
      state_->done_items += local.end - local.begin;
      progress = state_->progress;
      snapshot = Progress{state_->done_items, 0, std::chrono::steady_clock::now() - state_->started};
    }
    state_->arrived.notify_all();
    if (progress) progress(snapshot);
  }

  std::shared_ptr<ImapState<R>> state_;
  ItemResults<R> results_;
  std::size_t offset_;
};

}  // namespace detail

/// The lazy result range of imap / imap_unordered: iterating submits the input a bounded
/// number of chunks ahead and yields each item's result (in input order for imap, in
/// completion order for imap_unordered). An item's exception is thrown when it is reached.
template <class F, class Range, class R, bool Ordered>
class ImapRange {
  using Input = std::views::all_t<Range>;
  using InputIterator = std::ranges::iterator_t<Input>;
  using Sentinel = std::ranges::sentinel_t<Input>;
  using T = std::decay_t<std::ranges::range_reference_t<Input>>;

 public:
  ImapRange(std::shared_ptr<detail::PoolEngine> engine, F f, Range&& input, MapOptions options,
            std::size_t max_chunks_in_flight)
      : engine_(std::move(engine)), f_(f), input_(std::views::all(std::forward<Range>(input))),
        options_(std::move(options)), max_chunks_in_flight_(max_chunks_in_flight),
        state_(std::make_shared<detail::ImapState<R>>()) {
    state_->progress = options_.progress;
    if (options_.chunksize == 0) options_.chunksize = 1;
  }
  ImapRange(ImapRange&&) = default;
  ImapRange(const ImapRange&) = delete;
  ~ImapRange() {
    // Chunks not yet started are withdrawn; running ones finish into a state nobody reads.
    for (auto id : submitted_) {
      try {
        engine_->cancel(id);
      } catch (...) {
      }
    }
  }

  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(ImapRange* range) : range_(range) { advance(); }
    R operator*() const { return std::move(current_->value()); }  // throws the item's error
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_.has_value(); }

   private:
    void advance() { current_ = range_->next(); }
    ImapRange* range_ = nullptr;
    mutable std::optional<Result<R>> current_;
  };

  iterator begin() {
    if (!started_) {
      started_ = true;
      it_ = std::ranges::begin(input_);
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const { return {}; }

 private:
  // Submits chunks until max_chunks_in_flight are outstanding or the input ends. An item
  // counts until the consumer has taken its result, so a slow consumer holds back the input
  // (and the memory of results nobody has read yet) instead of letting it run ahead.
  void top_up() {
    while (!input_done_) {
      if (next_index_ - consumed_ >= max_chunks_in_flight_ * options_.chunksize) return;
      auto items = std::make_shared<std::vector<T>>();
      items->reserve(options_.chunksize);
      while (items->size() < options_.chunksize && it_ != std::ranges::end(input_)) {
        items->push_back(*it_);
        ++it_;
      }
      if (it_ == std::ranges::end(input_)) input_done_ = true;
      if (items->empty()) return;
      std::size_t begin = next_index_, end = next_index_ + items->size();
      next_index_ = end;
      detail::TaskRequest request;
      request.entry = detail::entry_id<&detail::map_chunk_entry<F, T, false>>();
      auto source = std::make_shared<detail::ItemsSource<F, T>>(f_, items, begin);
      detail::encode_chunk(*source, begin, end, request);
      request.chunk = source;
      request.function_name = &detail::demangled_type_name<F>();
      request.sink = std::make_shared<detail::ImapSink<R>>(state_, begin, end);
      request.begin = begin;
      request.end = end;
      request.timeout = options_.timeout;
      request.max_retries = options_.max_retries;
      submitted_.push_back(engine_->submit(std::move(request)));
    }
  }

  std::optional<Result<R>> next() {
    top_up();
    std::unique_lock lock(state_->mutex);
    if (Ordered) {
      if (consumed_ == next_index_ && input_done_) return std::nullopt;
      state_->arrived.wait(lock, [&] { return state_->ready.count(consumed_) != 0; });
      auto node = state_->ready.extract(consumed_);
      ++consumed_;
      lock.unlock();
      top_up();
      return std::move(node.mapped());
    } else {
      if (consumed_ == next_index_ && input_done_) return std::nullopt;
      state_->arrived.wait(lock, [&] { return !state_->arrival_order.empty(); });
      std::size_t index = state_->arrival_order.front();
      state_->arrival_order.pop_front();
      auto node = state_->ready.extract(index);
      ++consumed_;
      lock.unlock();
      top_up();
      return std::move(node.mapped());
    }
  }

  std::shared_ptr<detail::PoolEngine> engine_;
  F f_;
  Input input_;
  MapOptions options_;
  std::size_t max_chunks_in_flight_;
  std::shared_ptr<detail::ImapState<R>> state_;
  bool started_ = false;
  bool input_done_ = false;
  InputIterator it_{};
  std::size_t next_index_ = 0;  // items taken from the input
  std::size_t consumed_ = 0;    // results handed out
  std::vector<std::uint64_t> submitted_;
};

/// A pool of worker processes.
///
/// Thread-safety: every method may be called from any thread.
/// Destruction: close() then join() — submitted work finishes; while an exception unwinds
/// the stack through it, terminate() instead.
class Pool {
 public:
  /// `processes` workers (0: cpu_count()). Throws std::invalid_argument when out of range.
  explicit Pool(unsigned processes = 0);
  explicit Pool(const PoolOptions& options);
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) = delete;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  /// Runs f(args...) in a worker and waits for its result.
  template <class F, class... Args>
  detail::task_result_t<std::decay_t<F>, Args...> apply(F&& f, Args&&... args) {
    // The caller's arguments outlive the task here, so large ones are not copied ahead.
    return submit_apply<true, F, Args...>(TaskOptions{}, f, args...).get();
  }

  /// Schedules f(args...) in a worker. Throws PoolClosed after close(), PoolBroken.
  template <class F, class... Args>
    requires(!std::same_as<std::remove_cvref_t<F>, TaskOptions>)
  Future<detail::task_result_t<std::decay_t<F>, Args...>> apply_async(F&& f, Args&&... args) {
    return apply_async(TaskOptions{}, std::forward<F>(f), std::forward<Args>(args)...);
  }

  template <class F, class... Args>
  Future<detail::task_result_t<std::decay_t<F>, Args...>> apply_async(const TaskOptions& options,
                                                                      F&& f, Args&&... args) {
    return submit_apply<false, F, Args...>(options, f, args...);
  }

  /// f over every item of `items`, results in input order. The first failed item's
  /// exception is thrown (WorkerCrashed naming the item when it killed its worker).
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& items, std::size_t chunksize = 0) {
    return map_async(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize}).get();
  }
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& items, MapOptions options) {
    return map_async(std::forward<F>(f), std::forward<Range>(items), std::move(options)).get();
  }
  /// Like map, but never throws for an item: one Result per item.
  template <class F, std::ranges::input_range Range>
  auto map(F&& f, Range&& items, collect_t, MapOptions options = {}) {
    return submit_map<false, true>(std::forward<F>(f), std::forward<Range>(items), std::move(options)).get();
  }

  template <class F, std::ranges::input_range Range>
  auto map_async(F&& f, Range&& items, std::size_t chunksize = 0) {
    return map_async(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize});
  }
  template <class F, std::ranges::input_range Range>
  auto map_async(F&& f, Range&& items, MapOptions options) {
    return submit_map<false, false>(std::forward<F>(f), std::forward<Range>(items), std::move(options));
  }

  /// f(args...) for every tuple of arguments in `items`.
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& items, std::size_t chunksize = 0) {
    return starmap_async(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize}).get();
  }
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& f, Range&& items, MapOptions options) {
    return starmap_async(std::forward<F>(f), std::forward<Range>(items), std::move(options)).get();
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& f, Range&& items, std::size_t chunksize = 0) {
    return starmap_async(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize});
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& f, Range&& items, MapOptions options) {
    return submit_map<true, false>(std::forward<F>(f), std::forward<Range>(items), std::move(options));
  }

  /// Lazily maps f over `items` (which may be endless), results in input order.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize});
  }
  template <class F, std::ranges::input_range Range>
  auto imap(F&& f, Range&& items, MapOptions options) {
    return make_imap<true>(std::forward<F>(f), std::forward<Range>(items), std::move(options));
  }
  /// Like imap, results in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& items, std::size_t chunksize = 1) {
    return imap_unordered(std::forward<F>(f), std::forward<Range>(items), MapOptions{.chunksize = chunksize});
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& f, Range&& items, MapOptions options) {
    return make_imap<false>(std::forward<F>(f), std::forward<Range>(items), std::move(options));
  }

  /// No new work is accepted; submitted work goes on. Workers exit when it is done.
  void close();
  /// Waits for the workers to exit. Requires close() or terminate() first (std::logic_error).
  void join();
  /// Kills the workers now; pending and running tasks fail with PoolTerminated.
  void terminate();
  /// Number of worker processes.
  unsigned processes() const;
  PoolStats stats() const;

 protected:
  /// A pool whose tasks another engine runs (mproc::mpi::Pool).
  explicit Pool(std::shared_ptr<detail::PoolEngine> engine);

 private:
  /// apply_async's work; with Borrow (apply(), whose caller waits) large arguments that are
  /// their own bytes are borrowed from the caller instead of copied (detail::BorrowedBytes).
  template <bool Borrow, class F, class... Args>
  Future<detail::task_result_t<std::decay_t<F>, Args...>> submit_apply(const TaskOptions& options,
                                                                       const std::remove_reference_t<F>& f,
                                                                       const std::remove_reference_t<Args>&... args) {
    using Fn = std::decay_t<F>;
    using Tuple = std::tuple<detail::stored_arg_t<Args>...>;
    using R = detail::task_result_t<Fn, Args...>;
    detail::require_task_callable<Fn>();
    static_assert(Serializable<Tuple>, "mproc::Pool: every task argument must be Serializable");
    static_assert(std::is_void_v<R> || Serializable<R>, "mproc::Pool: the task's result must be Serializable");
    auto task = std::make_shared<detail::ApplyTask<R>>();
    std::shared_ptr<detail::FutureState<R>> state(task, &task->state);
    state->set_progress_engine(engine_);
    detail::TaskRequest request;
    request.entry = detail::entry_id<&detail::apply_entry<Fn, Tuple>>();
    request.payload.reserve(64);
    detail::append_task_callable(request.payload, static_cast<const Fn&>(f));
    {
      detail::FdSink fds;  // allocated on the heap only when an argument has descriptors
      {
        detail::ScopedFdSink collect(fds);
        (detail::append_argument<Args, Borrow>(request, args), ...);
      }
      if (!fds.empty()) request.fds = std::make_shared<detail::FdSink>(std::move(fds));
    }
    set_function_name<Fn>(request, f);
    detail::TaskSink* sink = &task->sink;
    request.sink = std::shared_ptr<detail::TaskSink>(std::move(task), sink);
    request.timeout = options.timeout;
    request.max_retries = options.max_retries;
    state->set_engine_task(engine_->submit(std::move(request)));  // cancel() withdraws it there
    return Future<R>(std::move(state));
  }
  // Naming a function pointer reads debug information (megabytes): it is done only when a
  // crash report needs the name, from the address kept here.
  template <class Fn>
  static void set_function_name(detail::TaskRequest& request, const Fn& f) {
    if constexpr (std::is_pointer_v<Fn>)
      request.function_address = reinterpret_cast<const void*>(f);
    else
      request.function_name = &detail::demangled_type_name<Fn>();
  }

  template <bool Star, bool Collect, class F, class Range>
  auto submit_map(F&& f, Range&& items, MapOptions options) {
    using Fn = std::decay_t<F>;
    using T = std::decay_t<std::ranges::range_reference_t<Range>>;
    detail::require_task_callable<Fn>();
    static_assert(Serializable<T>, "mproc::Pool: the items of a map must be Serializable");
    using R = typename detail::map_result<Fn, T, Star>::type;
    static_assert(!std::is_void_v<R>, "mproc::Pool::map: the function must return a value");
    static_assert(Serializable<R>, "mproc::Pool: the task's result must be Serializable");
    using Sink = detail::MapSink<R, Collect>;
    using Value = typename Sink::Value;

    // Items that are their own bytes, laid out contiguously, are copied straight into each
    // chunk's payload; any other input is first copied into one vector that the chunks share.
    constexpr bool raw_input = std::ranges::contiguous_range<Range> && std::ranges::sized_range<Range> &&
                               std::same_as<std::remove_cv_t<std::ranges::range_value_t<Range>>, T> &&
                               detail::raw_range<std::vector<T>>::value;
    std::shared_ptr<std::vector<T>> all;
    std::size_t n;
    if constexpr (raw_input) {
      n = std::ranges::size(items);
    } else {
      all = std::make_shared<std::vector<T>>();
      if constexpr (std::ranges::sized_range<Range>) all->reserve(std::ranges::size(items));
      for (auto&& item : items) all->push_back(item);
      n = all->size();
    }
    std::size_t chunksize = options.chunksize;
    if (chunksize == 0) {
      std::size_t parts = 4 * static_cast<std::size_t>(processes());
      chunksize = std::max<std::size_t>(1, (n + parts - 1) / parts);
    }
    auto state = std::make_shared<detail::FutureState<Value>>();
    state->set_progress_engine(engine_);
    auto sink = std::make_shared<Sink>(n, state, std::move(options.progress));
    std::shared_ptr<const detail::ChunkSource> source;
    if constexpr (raw_input)
      source = std::make_shared<detail::RawItemsSource<Fn, T>>(static_cast<const Fn&>(f));
    else
      source = std::make_shared<detail::ItemsSource<Fn, T>>(static_cast<const Fn&>(f),
                                                            std::shared_ptr<const std::vector<T>>(all));
    const auto entry = detail::entry_id<&detail::map_chunk_entry<Fn, T, Star>>();

    auto ids = std::make_shared<std::vector<std::uint64_t>>();
    ids->reserve((n + chunksize - 1) / chunksize);
    for (std::size_t begin = 0; begin < n; begin += chunksize) {
      std::size_t end = std::min(n, begin + chunksize);
      detail::TaskRequest request;
      request.entry = entry;
      if constexpr (raw_input)
        request.payload = static_cast<const detail::RawItemsSource<Fn, T>&>(*source).encode_items(
            std::ranges::data(items) + begin, end - begin);
      else
        detail::encode_chunk(*source, begin, end, request);
      set_function_name<Fn>(request, f);
      request.sink = sink;
      request.chunk = source;
      request.begin = begin;
      request.end = end;
      request.timeout = options.timeout;
      request.max_retries = options.max_retries;
      ids->push_back(engine_->submit(std::move(request)));
    }
    std::weak_ptr<detail::PoolEngine> engine = engine_;
    state->set_canceller([engine, ids] {
      auto e = engine.lock();
      return e && e->cancel_all(*ids);
    });
    return Future<Value>(std::move(state));
  }

  template <bool Ordered, class F, class Range>
  auto make_imap(F&& f, Range&& items, MapOptions options) {
    using Fn = std::decay_t<F>;
    using T = std::decay_t<std::ranges::range_reference_t<Range>>;
    detail::require_task_callable<Fn>();
    static_assert(Serializable<T>, "mproc::Pool: the items of an imap must be Serializable");
    using R = std::decay_t<std::invoke_result_t<Fn&, T>>;
    static_assert(!std::is_void_v<R>, "mproc::Pool::imap: the function must return a value");
    static_assert(Serializable<R>, "mproc::Pool: the task's result must be Serializable");
    return ImapRange<Fn, Range, R, Ordered>(engine_, static_cast<const Fn&>(f), std::forward<Range>(items),
                                            std::move(options), 2 * static_cast<std::size_t>(processes()));
  }

  std::shared_ptr<detail::PoolEngine> engine_;
  int uncaught_at_construction_ = 0;
};

template <class T>
bool register_exception() {
  static_assert(std::is_constructible_v<T, std::string>,
                "mproc::register_exception: T must be constructible from a std::string");
  detail::register_exception_type(typeid(T).name(), [](const std::string& what) {
    return std::make_exception_ptr(T(what));
  });
  return true;
}

}  // namespace mproc
