// src/shm_segment.cpp — memfd_create + ftruncate + mmap, and the remapping that follows growth.
#include "shm_segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace mproc::detail {

std::string format_byte_size(std::size_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  std::size_t scale = 1024;
  while (unit < 5 && bytes / scale >= 1024) {
    scale *= 1024;
    ++unit;
  }
  if (bytes % scale == 0) return std::to_string(bytes / scale) + " " + units[unit];
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s",
                static_cast<double>(bytes) / static_cast<double>(scale), units[unit]);
  return text;
}

namespace {

void check_size(std::size_t size) {
  if (size == 0) throw std::invalid_argument("a shared memory segment cannot be empty");
  if (size > max_segment_bytes)
    throw std::invalid_argument("shared memory segment of " + format_byte_size(size) +
                                " is larger than the limit of " +
                                format_byte_size(max_segment_bytes));
}

std::byte* map_shared(int fd, std::size_t size, const std::string& what) {
  void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) throw_errno(what + " (mmap)");
  return static_cast<std::byte*>(address);
}

}  // namespace

ShmSegment ShmSegment::create(std::size_t size, const char* debug_name) {
  check_size(size);
  const std::string what = "cannot create shared memory segment of " + format_byte_size(size);
  // memfd names are limited to 249 bytes; a longer one would make memfd_create fail.
  std::string name = debug_name && *debug_name ? debug_name : "mproc";
  if (name.size() > 249) name.resize(249);
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno(what + " (memfd_create)");
  // memfd_create makes the file mode 0777 (umask aside). Only /proc/<pid>/fd/<n> can reach it
  // by name, and the kernel's ptrace check already keeps other users out of that; 0600 makes
  // the file itself refuse them too, as a named segment does.
  check_syscall((what + " (fchmod)").c_str(), [&] { return ::fchmod(fd.get(), 0600); });
  check_syscall((what + " (ftruncate)").c_str(),
                [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); });
  // No process may ever shrink the file: a peer touching a page past the new end would die
  // of SIGBUS, so a buggy or hostile process could kill every other user of the segment.
  // Best effort — the seal is a safety net, not something correctness depends on.
  (void)::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK);
  std::byte* data = map_shared(fd.get(), size, what);
  return ShmSegment(std::move(fd), data, size);
}

ShmSegment ShmSegment::attach(UniqueFd fd) {
  if (!fd) throw std::invalid_argument("ShmSegment::attach needs an open file descriptor");
  struct stat st {};
  check_syscall("cannot attach shared memory segment (fstat)",
                [&] { return ::fstat(fd.get(), &st); });
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0) return ShmSegment(std::move(fd), nullptr, 0);
  std::byte* data =
      map_shared(fd.get(), size, "cannot map shared memory segment of " + format_byte_size(size));
  return ShmSegment(std::move(fd), data, size);
}

ShmSegment::ShmSegment(ShmSegment&& other) noexcept
    : fd_(std::move(other.fd_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

ShmSegment& ShmSegment::operator=(ShmSegment&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ShmSegment::~ShmSegment() {
  if (data_) ::munmap(data_, size_);
}

void ShmSegment::remap(std::size_t new_size, const std::string& what) {
  if (!data_) {
    data_ = map_shared(fd_.get(), new_size, what);
  } else {
    // MREMAP_MAYMOVE keeps the pages (no copy) and moves the mapping if it cannot grow in place.
    void* address = ::mremap(data_, size_, new_size, MREMAP_MAYMOVE);
    if (address == MAP_FAILED) throw_errno(what + " (mremap)");
    data_ = static_cast<std::byte*>(address);
  }
  size_ = new_size;
}

void ShmSegment::grow(std::size_t new_size) {
  if (!fd_) throw std::logic_error("ShmSegment::grow on an empty segment");
  if (new_size <= size_) return;
  check_size(new_size);
  const std::string what = "cannot grow shared memory segment to " + format_byte_size(new_size);
  check_syscall((what + " (ftruncate)").c_str(),
                [&] { return ::ftruncate(fd_.get(), static_cast<off_t>(new_size)); });
  remap(new_size, what);
}

bool ShmSegment::refresh() {
  if (!fd_) return false;
  struct stat st {};
  check_syscall("cannot refresh shared memory segment (fstat)",
                [&] { return ::fstat(fd_.get(), &st); });
  const auto new_size = static_cast<std::size_t>(st.st_size);
  if (new_size <= size_) return false;
  remap(new_size, "cannot map shared memory segment of " + format_byte_size(new_size));
  return true;
}

}  // namespace mproc::detail
