// src/syscall.cpp — EINTR-safe system call helpers and errno → std::system_error.
#include "syscall.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace mproc::detail {

void throw_errno(const std::string& what) { throw_errno(errno, what); }

void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

void UniqueFd::reset(int fd) noexcept {
  // close(2) must not be retried on EINTR on Linux: the descriptor is gone either way.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::pair<UniqueFd, UniqueFd> make_socketpair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    throw_errno("cannot create a socketpair");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

int pidfd_open(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw_errno("pidfd_open of process " + std::to_string(pid));
  return fd;
}

bool pidfd_send_signal(int pidfd, int signo) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, signo, nullptr, 0) == 0) return true;
  if (errno == ESRCH) return false;
  throw_errno("pidfd_send_signal");
}

bool poll_one(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  int n = check_syscall("poll", [&] { return ::poll(&p, 1, timeout_ms); });
  return n > 0;
}

void write_all(int fd, const void* data, std::size_t size, const char* what) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

bool read_exact(int fd, void* data, std::size_t size, const char* what) {
  auto* p = static_cast<char*>(data);
  std::size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, p + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) {
      if (got == 0) return false;
      throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                              std::string(what) + ": peer closed in the middle of a message");
    }
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace mproc::detail
