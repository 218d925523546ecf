// mproc/detail/task_entry.hpp — what a pool worker runs for a task: entry points (one
// template instantiation per function and argument types) that decode the task's
// payload, call the user's function and encode its result. The parent names an entry by
// its FunctionId, so the same code runs under fork, forkserver and spawn.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/function_identity.hpp"
#include "mproc/errors.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

/// Result kinds a worker reports for a task.
enum class ResultKind : std::uint32_t {
  value = 1,      ///< payload: the encoded result (a chunk: the encoded std::vector<R>)
  exception = 2,  ///< payload: an encoded RemoteException
  partial = 3,    ///< a chunk where some items threw: encoded ChunkOutcome
};

/// An exception as it crosses the process boundary.
struct RemoteException {
  std::string type_id;    ///< typeid(...).name() of the thrown object (mangled): the registry key
  std::string type_name;  ///< demangled, for RemoteError
  std::string what;
  std::string traceback;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(type_id, type_name, what, traceback);
  }
};

/// The type id under which a worker reports std::bad_alloc beyond its memory limit.
inline constexpr const char* memory_limit_type_id = "mproc::MemoryLimitExceeded";

/// Describes the exception being handled (call inside a catch block), with the stack where
/// it was thrown when `with_trace`. Worker side.
RemoteException capture_current_exception(bool with_trace = true);
/// In a worker with a memory limit, std::bad_alloc is reported as MemoryLimitExceeded and
/// the worker is replaced after the task (its memory may be fragmented or leaked).
void set_worker_memory_limit(std::uint64_t bytes);
bool memory_limit_hit();

/// Rebuilds an exception thrown in a worker: the same type for std and registered
/// exception types, RemoteError otherwise. Parent side.
std::exception_ptr rebuild_exception(const RemoteException& remote);

/// The outcome of a map chunk in which some items threw.
template <class R>
struct ChunkOutcome {
  std::vector<R> values;  // results of the items that succeeded, in item order
  std::vector<std::pair<std::uint32_t, RemoteException>> errors;  // (index in chunk, error)

  template <class Archive>
  void serialize(Archive& archive) {
    archive(values, errors);
  }
};

/// Results from this size on that are their own bytes are sent from the result object itself.
inline constexpr std::size_t kept_result_bytes = std::size_t{64} << 10;

/// Where a worker's entry leaves a task's result: its encoding in bytes(), or — a large
/// result that is its own bytes (the memcpy fast path) — the result object itself, kept
/// alive here until it is sent, so that its bytes are copied once, straight into the ring or
/// the result overflow segment, instead of into bytes() first.
class TaskOutput {
 public:
  /// The encoded result is appended here (kept between tasks: its pages stay warm).
  std::vector<std::byte>& bytes() noexcept { return bytes_; }
  /// What to send: the kept result's bytes, or bytes().
  std::span<const std::byte> view() const noexcept {
    return owner_ ? kept_ : std::span<const std::byte>(bytes_);
  }
  /// Encodes value, keeping it instead when it is large and its own bytes.
  template <class R>
  void put(R&& value) {
    using V = std::remove_cvref_t<R>;
    if constexpr (raw_range<V>::value) {
      if (raw_bytes(value).size() >= kept_result_bytes) {
        auto* kept = new V(std::forward<R>(value));
        owner_ = Owner(kept, [](void* p) { delete static_cast<V*>(p); });
        kept_ = raw_bytes(*kept);
        return;
      }
    }
    serialize_to(bytes_, value);
  }
  /// Forgets the result (the bytes' capacity stays).
  void clear() noexcept {
    bytes_.clear();
    owner_.reset();
    kept_ = {};
  }

 private:
  using Owner = std::unique_ptr<void, void (*)(void*)>;
  std::vector<std::byte> bytes_;
  Owner owner_{nullptr, nullptr};
  std::span<const std::byte> kept_;
};

/// What a worker calls: decode `payload`, run, leave the result in `out`, return its kind.
using TaskEntry = ResultKind (*)(std::span<const std::byte> payload, TaskOutput& out);

// A payload is a sequence of parts, each an 8-byte length then that many bytes.
inline void begin_part(std::vector<std::byte>& out, std::size_t& at) {
  at = out.size();
  out.resize(at + sizeof(std::uint64_t));
}
inline void end_part(std::vector<std::byte>& out, std::size_t at) {
  std::uint64_t length = out.size() - at - sizeof(std::uint64_t);
  std::memcpy(out.data() + at, &length, sizeof length);
}
template <class T>
void append_part(std::vector<std::byte>& out, const T& value) {
  std::size_t at;
  begin_part(out, at);
  serialize_to(out, value);
  end_part(out, at);
}
inline std::span<const std::byte> take_part(std::span<const std::byte>& in) {
  std::uint64_t length;
  if (in.size() < sizeof length) throw SerializationError("task payload truncated: missing part length");
  std::memcpy(&length, in.data(), sizeof length);
  in = in.subspan(sizeof length);
  if (length > in.size()) throw SerializationError("task payload truncated: part longer than payload");
  auto part = in.first(length);
  in = in.subspan(length);
  return part;
}

/// The address of the function a function-pointer task names (resolved once per id).
void* resolve_function_cached(std::string_view module, std::uintptr_t offset);
inline void* resolve_function_cached(const FunctionId& id) { return resolve_function_cached(id.module, id.offset); }
/// The same, from the FunctionId's encoding (a thread's recent ones are found without decoding).
void* resolve_encoded_function_cached(std::span<const std::byte> encoded);

/// The callable a task runs: F{} for captureless lambdas and empty functors, the
/// resolved address for function pointers (whose FunctionId is the payload's first part).
template <class F>
F task_callable(std::span<const std::byte>& payload) {
  auto target = take_part(payload);
  if constexpr (std::is_pointer_v<F>) {
    return reinterpret_cast<F>(resolve_encoded_function_cached(target));
  } else {
    return F{};
  }
}

template <class F>
void append_task_callable(std::vector<std::byte>& out, const F& f) {
  if constexpr (std::is_pointer_v<F>) {
    const auto& id = encoded_function_id_of(reinterpret_cast<const void*>(f));
    std::size_t at;
    begin_part(out, at);
    out.insert(out.end(), id.begin(), id.end());
    end_part(out, at);
  } else {
    std::size_t at;
    begin_part(out, at);
    end_part(out, at);
  }
}

/// Encodes one argument of a task as its own part, straight from the caller's object (no
/// copy into a tuple first: for a large argument that copy would be a fresh allocation).
template <class Arg, class T>
void append_argument(std::vector<std::byte>& out, const T& arg) {
  using Stored = std::decay_t<Arg>;
  if constexpr (std::is_same_v<Stored, const char*> || std::is_same_v<Stored, char*>)
    append_part(out, std::string(arg));  // stored as a std::string (see stored_arg_t)
  else
    append_part(out, static_cast<const Stored&>(arg));
}

/// Decodes the arguments that append_argument encoded, one part each, in order.
template <class Tuple, std::size_t... I>
Tuple take_arguments(std::span<const std::byte>& payload, std::index_sequence<I...>) {
  // Braced initialisation evaluates left to right: the parts are taken in order.
  return Tuple{deserialize<std::tuple_element_t<I, Tuple>>(take_part(payload))...};
}

/// apply: one call with a tuple of arguments, each encoded as its own part.
template <class F, class Tuple>
ResultKind apply_entry(std::span<const std::byte> payload, TaskOutput& out) {
  F f = task_callable<F>(payload);
  auto args = take_arguments<Tuple>(payload, std::make_index_sequence<std::tuple_size_v<Tuple>>{});
  if (!payload.empty()) throw SerializationError("task payload has bytes after its arguments");
  using R = decltype(std::apply(f, std::move(args)));
  if constexpr (std::is_void_v<R>) {
    std::apply(f, std::move(args));
  } else {
    out.put(std::apply(f, std::move(args)));
  }
  return ResultKind::value;
}

/// Runs items [first, items.size()) of a chunk whose earlier items gave `outcome.values`,
/// recording each item's value or exception; encodes the outcome into `out`.
template <class R, class T, class Call>
ResultKind finish_chunk(std::vector<T>& items, std::size_t first, ChunkOutcome<R>& outcome, Call& call,
                        std::vector<std::byte>& out) {
  for (std::size_t i = first; i < items.size(); ++i) {
    try {
      outcome.values.push_back(call(items[i]));
    } catch (...) {
      outcome.errors.emplace_back(static_cast<std::uint32_t>(i), capture_current_exception(outcome.errors.empty()));
    }
  }
  if (outcome.errors.empty()) {
    serialize_to(out, outcome.values);
    return ResultKind::value;
  }
  serialize_to(out, outcome);
  return ResultKind::partial;
}

/// map / starmap: a chunk of items, each an argument (or a tuple of arguments when Star).
template <class F, class T, bool Star>
ResultKind map_chunk_entry(std::span<const std::byte> payload, TaskOutput& output) {
  std::vector<std::byte>& out = output.bytes();
  F f = task_callable<F>(payload);
  auto call = [&](T& item) -> decltype(auto) {
    if constexpr (Star)
      return std::apply(f, std::move(item));
    else
      return std::invoke(f, std::move(item));
  };
  using R = std::decay_t<decltype(call(std::declval<T&>()))>;
  if constexpr (!Star && raw_range<std::vector<T>>::value && raw_range<std::vector<R>>::value &&
                std::is_default_constructible_v<T> && std::is_default_constructible_v<R>) {
    // Items and results that are their own bytes: read each item from the payload and write
    // each result into `out` where its encoding belongs — until an item throws (rare), when
    // the chunk's outcome is built item by item instead.
    const auto bytes = take_part(payload);
    if (!payload.empty()) throw SerializationError("task payload has bytes after its items");
    if (bytes.size() % sizeof(T) != 0) throw SerializationError("a chunk's items are truncated");
    const std::size_t n = bytes.size() / sizeof(T);
    const std::size_t at = out.size();
    out.resize(at + n * sizeof(R));
    for (std::size_t i = 0; i < n; ++i) {
      T item;
      std::memcpy(&item, bytes.data() + i * sizeof(T), sizeof(T));
      try {
        const R value = call(item);
        std::memcpy(out.data() + at + i * sizeof(R), &value, sizeof(R));
      } catch (...) {
        ChunkOutcome<R> outcome;
        outcome.values.resize(i);
        if (i != 0) std::memcpy(outcome.values.data(), out.data() + at, i * sizeof(R));
        outcome.errors.emplace_back(static_cast<std::uint32_t>(i), capture_current_exception());
        out.resize(at);
        auto items = deserialize<std::vector<T>>(bytes);
        return finish_chunk(items, i + 1, outcome, call, out);
      }
    }
    return ResultKind::value;
  } else {
    auto items = deserialize<std::vector<T>>(take_part(payload));
    ChunkOutcome<R> outcome;
    outcome.values.reserve(items.size());
    return finish_chunk(items, 0, outcome, call, out);
  }
}

/// The FunctionId of an entry instantiation (computed once per type).
template <auto Entry>
const FunctionId& entry_id() {
  static const FunctionId id = function_id_of(reinterpret_cast<const void*>(Entry));
  return id;
}

}  // namespace mproc::detail
