// mproc/detail/fd_transfer.hpp — how shareable objects (queues, pipes, locks, shared
// memory) cross a process boundary: their serialize functions put file descriptors in a
// table that travels beside the bytes (SCM_RIGHTS), and take them back on the other side.
//
//   Writer (parent):  FdSink sink; { ScopedFdSink use(sink); bytes = serialize(args); }
//                     → send bytes, and sink.fds() with SCM_RIGHTS
//   Reader (child):   FdSource source(received fds); { ScopedFdSource use(source); args = deserialize(bytes); }
//
// A shareable type's save() calls save_fd(archive, fd) and its load() calls
// load_fd(archive), which returns a descriptor the object then owns.
#pragma once

#include <cstdint>
#include <vector>

#include "mproc/errors.hpp"

namespace mproc::detail {

/// Descriptors collected while serializing (owned: duplicates, closed on destruction).
class FdSink {
 public:
  FdSink() = default;
  FdSink(FdSink&& other) noexcept : fds_(std::move(other.fds_)) {}
  FdSink& operator=(FdSink&& other) noexcept;
  FdSink(const FdSink&) = delete;
  FdSink& operator=(const FdSink&) = delete;
  ~FdSink();
  /// Duplicates `fd` (close-on-exec) into the table; returns its index.
  std::uint32_t add(int fd);
  const std::vector<int>& fds() const noexcept { return fds_; }
  bool empty() const noexcept { return fds_.empty(); }

 private:
  std::vector<int> fds_;
};

/// Descriptors received beside the bytes (owned until taken).
class FdSource {
 public:
  FdSource() = default;
  explicit FdSource(std::vector<int> fds) : fds_(std::move(fds)) {}
  FdSource(FdSource&& other) noexcept : fds_(std::move(other.fds_)) {}
  FdSource& operator=(FdSource&& other) noexcept;
  FdSource(const FdSource&) = delete;
  FdSource& operator=(const FdSource&) = delete;
  ~FdSource();
  /// A descriptor for entry `index`, owned by the caller (a duplicate: an object may be
  /// decoded more than once). Throws SerializationError for an index out of range.
  int take(std::uint32_t index);

 private:
  std::vector<int> fds_;
};

/// Makes `sink` (or `source`) the current one of this thread for its lifetime.
class ScopedFdSink {
 public:
  explicit ScopedFdSink(FdSink& sink);
  ~ScopedFdSink();
  ScopedFdSink(const ScopedFdSink&) = delete;
  ScopedFdSink& operator=(const ScopedFdSink&) = delete;

 private:
  FdSink* previous_;
};
class ScopedFdSource {
 public:
  explicit ScopedFdSource(FdSource& source);
  ~ScopedFdSource();
  ScopedFdSource(const ScopedFdSource&) = delete;
  ScopedFdSource& operator=(const ScopedFdSource&) = delete;

 private:
  FdSource* previous_;
};

FdSink* current_fd_sink() noexcept;
FdSource* current_fd_source() noexcept;

/// Records `fd` in the current sink and writes its index. Throws SerializationError when
/// no sink is active (the object is being serialized somewhere descriptors cannot follow).
template <class Archive>
void save_fd(Archive& archive, int fd) {
  FdSink* sink = current_fd_sink();
  if (!sink)
    throw SerializationError(
        "mproc: this object holds a file descriptor and can only be passed as an argument "
        "of a Process or a Pool task");
  std::uint32_t index = sink->add(fd);
  archive(index);
}

/// Reads an index written by save_fd and returns the descriptor (owned by the caller).
template <class Archive>
int load_fd(Archive& archive) {
  std::uint32_t index = 0;
  archive(index);
  FdSource* source = current_fd_source();
  if (!source) throw SerializationError("mproc: a file descriptor was expected but none travelled with the data");
  return source->take(index);
}

}  // namespace mproc::detail
