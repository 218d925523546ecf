// src/fd_passing.cpp — frames of bytes plus SCM_RIGHTS descriptors over stream sockets.
//
// Wire format: a 16-byte header {magic u32, fd count u32, length u64} sent in the
// same sendmsg() as the descriptors, then `length` bytes. On a stream socket the
// kernel attaches the descriptors to the first byte of the header, so the
// receiver collects them with the header's first recvmsg() and reads the rest plainly.
#include "fd_passing.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <system_error>

#include "mproc/errors.hpp"

namespace mproc::detail {
namespace {

constexpr std::uint32_t frame_magic = 0x6d70666dU;  // "mpfm"

struct FrameHeader {
  std::uint32_t magic;
  std::uint32_t fd_count;
  std::uint64_t length;
};
static_assert(sizeof(FrameHeader) == 16);

}  // namespace

void send_frame(int socket, std::span<const std::byte> bytes, std::span<const int> fds) {
  if (fds.size() > max_frame_fds) throw std::invalid_argument("send_frame: too many descriptors");
  FrameHeader header{frame_magic, static_cast<std::uint32_t>(fds.size()), bytes.size()};
  iovec iov[2] = {{&header, sizeof header},
                  {const_cast<std::byte*>(bytes.data()), bytes.size()}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_frame_fds)];
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = bytes.empty() ? 1 : 2;
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent = retry_eintr([&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL); });
  if (sent < 0) throw_errno("cannot send a frame on a control socket");
  // The descriptors went with the first byte; whatever the kernel did not take goes plainly.
  std::size_t total = sizeof header + bytes.size();
  std::size_t done = static_cast<std::size_t>(sent);
  if (done < sizeof header) {
    write_all(socket, reinterpret_cast<const char*>(&header) + done, sizeof header - done,
              "cannot send a frame header");
    done = sizeof header;
  }
  if (done < total) {
    std::size_t offset = done - sizeof header;
    write_all(socket, bytes.data() + offset, bytes.size() - offset, "cannot send a frame body");
  }
}

bool recv_frame(int socket, Frame& frame) {
  frame.bytes.clear();
  frame.fds.clear();
  FrameHeader header{};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_frame_fds)];
  iovec iov{&header, sizeof header};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got = retry_eintr([&] { return ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC); });
  if (got < 0) throw_errno("cannot receive a frame on a control socket");
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      std::size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
        frame.fds.emplace_back(fd);
      }
    }
  }
  if (got == 0) return false;
  if (msg.msg_flags & MSG_CTRUNC)
    throw SerializationError("control frame carried more descriptors than allowed");
  if (static_cast<std::size_t>(got) < sizeof header &&
      !read_exact(socket, reinterpret_cast<char*>(&header) + got, sizeof header - got,
                  "cannot receive a frame header"))
    throw SerializationError("control frame truncated in its header");
  if (header.magic != frame_magic) throw SerializationError("control frame has a bad magic number");
  if (header.fd_count != frame.fds.size())
    throw SerializationError("control frame announced " + std::to_string(header.fd_count) +
                             " descriptors but carried " + std::to_string(frame.fds.size()));
  if (header.length > max_frame_bytes)
    throw SerializationError("control frame of " + std::to_string(header.length) +
                             " bytes is larger than allowed");
  // The length is the peer's word: memory grows with the bytes that actually arrive (to at
  // most twice what came), so a bogus header of up to 4 GiB followed by a close costs nothing.
  constexpr std::size_t first_step = 64 * 1024;
  std::size_t received = 0;
  while (received < header.length) {
    const std::size_t step = static_cast<std::size_t>(
        std::min<std::uint64_t>(header.length - received, std::max(first_step, received)));
    frame.bytes.resize(received + step);
    if (!read_exact(socket, frame.bytes.data() + received, step, "cannot receive a frame body")) {
      if (received == 0) throw SerializationError("control frame truncated in its body");
      throw std::system_error(std::make_error_code(std::errc::connection_aborted),
                              "cannot receive a frame body: peer closed in the middle of a message");
    }
    received += step;
  }
  return true;
}

}  // namespace mproc::detail
