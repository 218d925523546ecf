// src/syscall.hpp — the one wrapper every system call in mproc goes through:
// EINTR retries, errno → std::system_error with a message naming what failed,
// an owning file descriptor, and the pidfd calls glibc 2.36 does not wrap.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

#include <sys/types.h>

namespace mproc::detail {

/// Throws std::system_error(errno) whose message is "<what>: <strerror>".
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(int error, const std::string& what);

/// Calls f() again while it fails with EINTR; returns its last result.
template <class F>
auto retry_eintr(F&& f) {
  for (;;) {
    auto result = f();
    if (!(result == -1 && errno == EINTR)) return result;
  }
}

/// Like retry_eintr, and throws std::system_error naming `what` on failure.
template <class F>
auto check_syscall(const char* what, F&& f) {
  auto result = retry_eintr(std::forward<F>(f));
  if (result == -1) throw_errno(what);
  return result;
}

/// An owned file descriptor: closed on destruction, movable, never copied.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// A connected pair of close-on-exec AF_UNIX stream sockets.
std::pair<UniqueFd, UniqueFd> make_socketpair();

/// pidfd_open(2): a descriptor that refers to `pid` for as long as it lives.
int pidfd_open(pid_t pid);
/// pidfd_send_signal(2); returns false when the process has already exited.
bool pidfd_send_signal(int pidfd, int signo);
/// Waits up to `timeout_ms` (-1 = forever) for `fd` to report `events`; true when it did.
bool poll_one(int fd, short events, int timeout_ms);

/// Writes all of `size` bytes (MSG_NOSIGNAL for sockets); throws on failure.
void write_all(int fd, const void* data, std::size_t size, const char* what);
/// Reads exactly `size` bytes; returns false on EOF before the first byte,
/// throws on EOF in the middle or on error.
bool read_exact(int fd, void* data, std::size_t size, const char* what);

}  // namespace mproc::detail
