// src/pool/records.cpp — decoding the records of a pool worker's rings (see records.hpp).
#include "pool/records.hpp"

#include <cstring>
#include <string>

#include "mproc/errors.hpp"

namespace mproc::detail {

TaskRecord decode_task_record(std::span<const std::byte> record) {
  TaskRecord task;
  if (record.size() < sizeof task.header) throw SerializationError("task record shorter than its header");
  std::memcpy(&task.header, record.data(), sizeof task.header);
  const auto rest = record.subspan(sizeof task.header);
  switch (task.header.kind) {
    case TaskRecordKind::stop:
      task.stop = true;
      return task;
    case TaskRecordKind::task: break;
    case TaskRecordKind::task_overflow: task.in_overflow = true; break;
    default:
      throw SerializationError("task record of unknown kind " +
                               std::to_string(static_cast<std::uint32_t>(task.header.kind)));
  }
  // Compared without adding, so that lengths near 2^64 cannot wrap around.
  if (task.header.module_length > rest.size()) throw SerializationError("task record's module name overruns it");
  const std::size_t after_module = rest.size() - task.header.module_length;
  if (task.in_overflow ? after_module != 0 : task.header.payload_length != after_module)
    throw SerializationError("task record length does not match its header");
  if (task.header.flags & ~task_has_fds) throw SerializationError("task record has unknown flags");
  task.module = std::string_view(reinterpret_cast<const char*>(rest.data()), task.header.module_length);
  if (!task.in_overflow) task.inline_payload = rest.subspan(task.header.module_length);
  return task;
}

ResultRecord decode_result_record(std::span<const std::byte> record) {
  ResultRecord result;
  if (record.size() < sizeof result.header) throw SerializationError("result record shorter than its header");
  std::memcpy(&result.header, record.data(), sizeof result.header);
  if (result.header.flags & ~result_in_overflow) throw SerializationError("result record has unknown flags");
  result.in_overflow = (result.header.flags & result_in_overflow) != 0;
  const std::size_t after_header = record.size() - sizeof result.header;
  if (result.in_overflow ? after_header != 0 : result.header.payload_length != after_header)
    throw SerializationError("result record length does not match its header");
  if (!result.in_overflow) result.inline_payload = record.subspan(sizeof result.header);
  return result;
}

}  // namespace mproc::detail
