// src/pool/overflow.hpp — a task's arguments or result too large for its ring travel in a
// segment of their own: one per direction per worker, grown on demand and reused, so a
// large payload costs one copy in and one out, never a pipe, and its pages stay warm.
//
// Hand-over: the writer waits until the segment is free, copies the payload, sets
// `busy`; the ring record that follows says "payload in the overflow segment". The reader
// decodes straight from the mapping and then clears `busy`. The writer only grows the file
// while it is free, so a reader never looks at a mapping that is being replaced.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shm_segment.hpp"
#include "syscall.hpp"

namespace mproc::detail {

class OverflowChannel {
 public:
  OverflowChannel() = default;
  static OverflowChannel create();
  static OverflowChannel attach(UniqueFd fd);

  int fd() const noexcept { return segment_.fd(); }
  /// True while a payload waits for its reader.
  bool busy() const noexcept;

  /// Writer: blocks until the reader released the previous payload.
  void wait_free();
  /// Writer: copies `payload` in (growing the segment if needed) and marks it busy.
  /// Requires: !busy().
  void write(std::span<const std::byte> payload);
  /// Writer, in two steps for a payload gathered from pieces: room for `length` bytes
  /// (growing the segment if needed), then commit() marks them busy. Requires: !busy().
  std::byte* prepare(std::size_t length);
  void commit(std::size_t length);

  /// Reader: the payload of `length` bytes the writer announced. Throws SerializationError
  /// when the segment does not hold such a payload (a corrupt or lying peer).
  std::span<const std::byte> read(std::uint64_t length);
  /// Reader: done with the payload; the writer may reuse the segment.
  void release();

 private:
  struct Header {
    std::atomic<std::uint32_t> busy;
    std::uint32_t reserved;
    std::atomic<std::uint64_t> length;
  };
  static constexpr std::size_t data_offset = 64;
  Header* header() const noexcept { return reinterpret_cast<Header*>(segment_.data()); }

  ShmSegment segment_;
};

}  // namespace mproc::detail
