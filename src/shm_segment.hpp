// src/shm_segment.hpp — a shared-memory segment backed by a memfd: created by one process,
// attached by others through its file descriptor, grown by a writer and re-mapped by readers.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "syscall.hpp"

namespace mproc::detail {

/// The largest segment mproc creates: anything bigger is a bug in the caller's arithmetic.
inline constexpr std::size_t max_segment_bytes = std::size_t{1} << 40;

/// "128 MiB", "1.5 GiB", "100 bytes": sizes in error messages people can read.
std::string format_byte_size(std::size_t bytes);

/// A memfd mapped MAP_SHARED read-write. Move-only; the destructor unmaps and closes.
///
/// The mapping may move when the segment grows (grow(), refresh()): never keep data()
/// across those calls. Fork-safety: a forked child inherits the mapping and the
/// (close-on-exec) descriptor; its copy of the object unmaps only the child's view.
///
///   auto segment = ShmSegment::create(1 << 20, "queue");
///   send_frame(socket, header, {segment.fd()});              // the peer calls attach()
class ShmSegment {
 public:
  ShmSegment() = default;

  /// A new zero-filled segment of `size` bytes. `debug_name` shows in /proc/<pid>/maps.
  /// Throws std::invalid_argument for size 0 or above max_segment_bytes,
  /// std::system_error ("cannot create shared memory segment of 128 MiB ...") on failure.
  static ShmSegment create(std::size_t size, const char* debug_name);

  /// Maps the segment behind `fd` (its size from fstat). A still-empty file gives an
  /// empty segment that refresh() maps once it has grown. Throws std::system_error.
  static ShmSegment attach(UniqueFd fd);

  ShmSegment(ShmSegment&& other) noexcept;
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;
  ~ShmSegment();

  /// Writer side: enlarges the file to `new_size` and remaps (no-op if not larger).
  /// Throws std::invalid_argument above max_segment_bytes, std::system_error on failure.
  void grow(std::size_t new_size);

  /// Reader side: when another process has grown the file, remaps it. Returns true if it did.
  bool refresh();

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  int fd() const noexcept { return fd_.get(); }
  std::span<std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  ShmSegment(UniqueFd fd, std::byte* data, std::size_t size) noexcept
      : fd_(std::move(fd)), data_(data), size_(size) {}
  void remap(std::size_t new_size, const std::string& what);

  UniqueFd fd_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mproc::detail
