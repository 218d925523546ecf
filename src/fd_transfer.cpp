// src/fd_transfer.cpp — the per-thread descriptor tables used while (de)serializing
// shareable objects.
#include "mproc/detail/fd_transfer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "syscall.hpp"

namespace mproc::detail {
namespace {
thread_local FdSink* active_sink = nullptr;
thread_local FdSource* active_source = nullptr;
}  // namespace

FdSink& FdSink::operator=(FdSink&& other) noexcept {
  if (this != &other) {
    for (int fd : fds_) ::close(fd);
    fds_ = std::move(other.fds_);
  }
  return *this;
}

FdSink::~FdSink() {
  for (int fd : fds_) ::close(fd);
}

std::uint32_t FdSink::add(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw_errno("cannot duplicate a descriptor to pass it to another process");
  fds_.push_back(copy);
  return static_cast<std::uint32_t>(fds_.size() - 1);
}

FdSource& FdSource::operator=(FdSource&& other) noexcept {
  if (this != &other) {
    for (int fd : fds_) ::close(fd);
    fds_ = std::move(other.fds_);
  }
  return *this;
}

FdSource::~FdSource() {
  for (int fd : fds_) ::close(fd);
}

int FdSource::take(std::uint32_t index) {
  if (index >= fds_.size())
    throw SerializationError("descriptor index " + std::to_string(index) + " is out of range (" +
                             std::to_string(fds_.size()) + " descriptors travelled)");
  int copy = ::fcntl(fds_[index], F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw_errno("cannot duplicate a received descriptor");
  return copy;
}

ScopedFdSink::ScopedFdSink(FdSink& sink) : previous_(active_sink) { active_sink = &sink; }
ScopedFdSink::~ScopedFdSink() { active_sink = previous_; }
ScopedFdSource::ScopedFdSource(FdSource& source) : previous_(active_source) { active_source = &source; }
ScopedFdSource::~ScopedFdSource() { active_source = previous_; }

FdSink* current_fd_sink() noexcept { return active_sink; }
FdSource* current_fd_source() noexcept { return active_source; }

}  // namespace mproc::detail
