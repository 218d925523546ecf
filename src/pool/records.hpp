// src/pool/records.hpp — decoding the records of a pool worker's rings (bytes another
// process wrote): a task record as the worker reads it, a result record as the pool reads
// it. Pure functions, so that the fuzzer runs exactly what the worker and the pool run.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "pool/worker_protocol.hpp"

namespace mproc::detail {

/// A task record: its header, the entry's module name, and the payload when it travels in
/// the ring (empty when in_overflow: then it waits in the task overflow segment).
struct TaskRecord {
  TaskRecordHeader header{};
  std::string_view module;
  std::span<const std::byte> inline_payload;
  bool stop = false;
  bool in_overflow = false;
};

/// Throws SerializationError for a record shorter than its header, of an unknown kind, or
/// whose lengths do not add up to its size.
TaskRecord decode_task_record(std::span<const std::byte> record);

/// A result record: its header, and the payload when it travels in the ring.
struct ResultRecord {
  ResultRecordHeader header{};
  std::span<const std::byte> inline_payload;
  bool in_overflow = false;
};

/// Throws SerializationError for a record shorter than its header, with unknown flags, or
/// whose length does not match its size. (The result's kind is checked where it is used.)
ResultRecord decode_result_record(std::span<const std::byte> record);

}  // namespace mproc::detail
