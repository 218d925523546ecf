// src/mpi/wire.hpp — what the driver and the agents say to each other over MPI: message
// tags, the records of task and result batches, and failures encoded to cross machines.
//
//   driver (rank 0)                                  agent (rank r ≥ 1)
//   tag_configure  AgentConfig ─────────────────────► builds its local PoolCore
//                  ◄───────────────────────────────── tag_ready  AgentHello (or an error)
//   tag_tasks      [BatchHeader][TaskRecord...] ────► submits each task to the local pool
//                  ◄───────────────────────────────── tag_results [BatchHeader][ResultRecord...]
//   tag_end_pool   u8 terminate ────────────────────► closes (or terminates) and joins its pool
//                  ◄───────────────────────────────── tag_pool_ended  AgentStats
//   tag_shutdown   (empty) ─────────────────────────► MPI_Finalize, exit(0)
//
// Every receive matches any tag from its peer, so MPI's non-overtaking rule keeps each
// peer's messages in the order they were sent (a pool's last results precede its end).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mproc/detail/task_entry.hpp"
#include "mproc/errors.hpp"
#include "mproc/pool.hpp"
#include "mproc/serialize.hpp"

namespace mproc::mpi::detail {

enum Tag : int {
  tag_configure = 101,
  tag_tasks = 102,
  tag_end_pool = 103,
  tag_shutdown = 104,
  tag_ready = 111,
  tag_results = 112,
  tag_pool_ended = 113,
};

/// The pool an agent builds (PoolOptions minus what cannot cross machines).
struct AgentConfig {
  unsigned processes = 0;
  unsigned max_tasks_per_child = 0;
  std::uint64_t max_memory_per_child = 0;
  std::optional<std::int64_t> task_timeout_ns;
  unsigned max_retries = 0;
  bool has_initializer = false;
  mproc::detail::FunctionId initializer_entry;
  std::vector<std::byte> initializer_payload;
  std::string initializer_name;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(processes, max_tasks_per_child, max_memory_per_child, task_timeout_ns, max_retries,
            has_initializer, initializer_entry, initializer_payload, initializer_name);
  }
};

/// An agent's answer to AgentConfig: its pool is up (error empty) or could not be built.
struct AgentHello {
  unsigned processes = 0;
  std::string host;
  std::int64_t pid = 0;
  std::string error;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(processes, host, pid, error);
  }
};

/// Counters an agent keeps about its local pool, sent with every result batch.
struct AgentStats {
  std::uint64_t tasks_retried = 0;
  std::uint64_t workers_started = 0;
  std::uint64_t workers_died = 0;
  std::uint64_t workers_recycled = 0;
};

struct BatchHeader {
  std::uint32_t count = 0;
  std::uint32_t reserved = 0;
  AgentStats stats;  // results only
};

struct TaskRecord {
  std::uint64_t id = 0;
  std::uint64_t entry_offset = 0;
  std::int64_t timeout_ns = -1;  // -1: the pool's default
  std::uint32_t max_retries = 0;
  std::uint32_t module_length = 0;
  std::uint64_t payload_length = 0;
  // followed by module_length bytes of module path, then payload_length bytes
};

/// How a task ended on its agent. value/exception/partial carry the worker's bytes as they
/// came (mproc::detail::ResultKind); failure carries an encoded WireError.
enum class Outcome : std::uint32_t { value = 1, exception = 2, partial = 3, failure = 4 };

struct ResultRecord {
  std::uint64_t id = 0;
  std::uint32_t outcome = 0;
  std::uint32_t reserved = 0;
  std::uint64_t payload_length = 0;
  // followed by payload_length bytes
};

/// A failure as it crosses machines: enough to rebuild the same exception type with the
/// same fields on the driver.
struct WireError {
  enum Kind : std::uint8_t {
    crashed = 1,      // WorkerCrashed
    timed_out = 2,    // TaskTimeout
    memory = 3,       // MemoryLimitExceeded
    remote_error = 4,  // RemoteError (type name, what, traceback)
    rebuilt = 5,      // std or registered type: rebuilt from its type id
    broken = 6,       // PoolBroken
    terminated = 7,   // PoolTerminated
    serialization = 8,  // SerializationError
    other = 9,        // anything else: RemoteError-like text
  };
  std::uint8_t kind = other;
  std::int64_t pid = 0;
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string signal_name;
  std::string stderr_tail;
  bool oom_killed = false;
  std::int64_t limit = 0;  // timeout in ns, memory in bytes
  mproc::detail::RemoteException remote;
  std::string what;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(kind, pid, exit_code, signal, signal_name, stderr_tail, oom_killed, limit, remote, what);
  }

  /// Classifies an exception (agent side).
  static WireError from(std::exception_ptr error);
  /// The report of a crash, timeout or memory failure (fields the agent knew).
  CrashReport report() const;
  bool is_crash() const { return kind == crashed; }
};

/// Rebuilds the exception on the driver. `function`/`item` complete the crash report (the
/// agent does not know the task's name); `where` ("rank 2 (host)") is added to a crash's
/// message.
std::exception_ptr rebuild(const WireError& error, const std::string& function, std::optional<std::size_t> item,
                           const std::string& where);

// ----------------------------------------------------------------------------- byte helpers

template <class T>
void put(std::vector<std::byte>& out, const T& value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

inline void put_bytes(std::vector<std::byte>& out, const void* data, std::size_t size) {
  const auto* p = static_cast<const std::byte*>(data);
  out.insert(out.end(), p, p + size);
}

/// Reads records from a received batch; throws SerializationError past its end.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> bytes) : bytes_(bytes) {}
  template <class T>
  T get() {
    T value;
    std::memcpy(&value, take(sizeof(T)).data(), sizeof(T));
    return value;
  }
  std::span<const std::byte> take(std::size_t size) {
    if (size > bytes_.size() - at_) throw SerializationError("mproc::mpi: a truncated message");
    auto part = bytes_.subspan(at_, size);
    at_ += size;
    return part;
  }

 private:
  std::span<const std::byte> bytes_;
  std::size_t at_ = 0;
};

}  // namespace mproc::mpi::detail
