// tests/fuzz/fuzz_pool_records.cpp — libFuzzer target: the payloads a Pool and its workers
// exchange. Worker side: a task's parts (take_part) and the entries that decode them
// (apply_entry, map_chunk_entry). Parent side: a result's bytes as a Future (FutureSink), as
// a map chunk's items (ItemResults::store: values, ChunkOutcome), as a RemoteException and
// the exception rebuilt from it; a FunctionId resolved in the main executable; the task and
// result records of a worker's rings (src/pool/records.cpp, what the worker and the pool run).
//
// Input: byte 0 picks the case, byte 1 a result kind / item count, the rest is the payload.
// Every failure must be a SerializationError (ItemResults/FutureSink turn it into the task's
// error); a crash, a sanitizer report, an item stored out of range or a hang is a finding.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "mproc/detail/task_entry.hpp"
#include "mproc/pool.hpp"
#include "pool/records.hpp"

namespace {

using namespace mproc::detail;
using Bytes = std::span<const std::byte>;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_pool_records: %s\n", what);
  std::abort();
}

// Task functions of the kinds a user writes; none throws (a throwing item would format a
// stack trace, ~milliseconds: the parent's decoding of failed items is fuzzed instead).
constexpr auto concat = [](int n, std::string s) { return s + std::to_string(n); };
constexpr auto sum = [](std::vector<int> v) {
  long total = 0;
  for (int x : v) total += x;
  return total;
};
constexpr auto ignore = [](std::string) {};
constexpr auto square = [](int x) { return static_cast<long long>(x) * x; };
constexpr auto add = [](int a, int b) { return static_cast<long long>(a) + b; };
constexpr auto words = [](std::string s) { return std::vector<std::string>{s, s}; };

/// Runs a worker entry the way the worker loop does: SerializationError is reported as the
/// task's exception.
void run_entry(TaskEntry entry, Bytes payload) {
  TaskOutput out;
  try {
    const ResultKind kind = entry(payload, out);
    if (kind != ResultKind::value && kind != ResultKind::partial) finding("bad result kind");
  } catch (const mproc::SerializationError&) {
  }
}

void parts(Bytes payload) {
  try {
    for (int i = 0; i < 256 && !payload.empty(); ++i) {
      Bytes part = take_part(payload);
      (void)part;
    }
  } catch (const mproc::SerializationError&) {
  }
}

void consume(std::exception_ptr error) {
  if (!error) finding("a null exception");
  try {
    std::rethrow_exception(error);
  } catch (...) {
  }
}

template <class R>
void item_results(std::uint8_t control, Bytes payload) {
  // The pool knows each chunk's range; the worker's bytes must fit it.
  const std::size_t begin = control >> 4 & 3;
  const std::size_t count = control & 7;
  const auto kind = static_cast<ResultKind>(control >> 3 & 1 ? 2 + (control >> 6) : 1);
  ItemResults<R> results(begin + count + 2);
  const TaskRef task{7, begin, begin + count};
  try {
    results.store(task, kind, payload);
  } catch (const mproc::SerializationError&) {
    results.fail(task, std::current_exception());
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    const bool inside = i >= task.begin && i < task.end;
    if (!inside) {
      // Values are decoded in place: an item outside the chunk must be untouched.
      if (results.error(i) || !(results.take(i) == R{})) finding("an item stored outside its chunk");
      continue;
    }
    if (auto error = results.error(i))
      consume(error);
    else
      (void)results.take(i);
  }
}

template <class R>
void future_sink(std::uint8_t control, Bytes payload) {
  auto state = std::make_shared<mproc::detail::FutureState<R>>();
  FutureSink<R> sink(*state);
  const auto kind = static_cast<ResultKind>(control % 4);
  sink.deliver(TaskRef{}, kind, payload);
  if (!state->ready()) finding("the future was not completed");
  try {
    if constexpr (std::is_void_v<R>)
      state->rethrow_if_failed();
    else
      (void)state->take_result();
  } catch (...) {
  }
}

void remote_exception(Bytes payload) {
  RemoteException remote;
  try {
    remote = mproc::deserialize<RemoteException>(payload);
  } catch (const mproc::SerializationError&) {
    return;
  }
  consume(rebuild_exception(remote));
}

void function_id(Bytes payload) {
  FunctionId id;
  try {
    id = mproc::deserialize<FunctionId>(payload);
  } catch (const mproc::SerializationError&) {
    return;
  }
  // Other modules would be dlopen()ed by path; only the main executable is resolved here,
  // and the address is never called.
  if (!id.module.empty()) return;
  try {
    (void)resolve_function_cached(id);
  } catch (const std::runtime_error&) {
  }
}

// A ring record: decoded, or refused with SerializationError; what is decoded lies inside it.
void ring_record(bool task_ring, Bytes record) {
  try {
    if (task_ring) {
      const TaskRecord task = decode_task_record(record);
      if (task.stop) return;
      const auto* begin = reinterpret_cast<const std::byte*>(record.data());
      const auto* module = reinterpret_cast<const std::byte*>(task.module.data());
      if (module < begin || module + task.module.size() > begin + record.size()) finding("module name outside the record");
      if (!task.in_overflow && (task.inline_payload.data() < begin ||
                                task.inline_payload.data() + task.inline_payload.size() > begin + record.size() ||
                                task.inline_payload.size() != task.header.payload_length))
        finding("task payload outside the record");
    } else {
      const ResultRecord result = decode_result_record(record);
      if (!result.in_overflow && (result.inline_payload.size() != result.header.payload_length ||
                                  result.inline_payload.data() + result.inline_payload.size() !=
                                      record.data() + record.size()))
        finding("result payload outside the record");
    }
  } catch (const mproc::SerializationError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t control = data[1];
  const Bytes payload(reinterpret_cast<const std::byte*>(data + 2), size - 2);
  switch (data[0] % 16) {
    case 0: parts(payload); break;
    case 1: run_entry(apply_entry<decltype(concat), std::tuple<int, std::string>>, payload); break;
    case 2: run_entry(apply_entry<decltype(sum), std::tuple<std::vector<int>>>, payload); break;
    case 3: run_entry(apply_entry<decltype(ignore), std::tuple<std::string>>, payload); break;
    case 4: run_entry(map_chunk_entry<decltype(square), int, false>, payload); break;
    case 5: run_entry(map_chunk_entry<decltype(add), std::tuple<int, int>, true>, payload); break;
    case 6: run_entry(map_chunk_entry<decltype(words), std::string, false>, payload); break;
    case 7: item_results<long long>(control, payload); break;
    case 8: item_results<std::vector<std::string>>(control, payload); break;
    case 9: future_sink<std::string>(control, payload); break;
    case 10: future_sink<void>(control, payload); break;
    case 11: future_sink<std::vector<int>>(control, payload); break;
    case 12: remote_exception(payload); break;
    case 13: function_id(payload); break;
    case 14: ring_record(true, payload); break;
    case 15: ring_record(false, payload); break;
  }
  return 0;
}
