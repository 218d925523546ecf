// tests/fuzz/fuzz_connection.cpp — libFuzzer target: Connection's record framing (chunk
// headers, reassembly of chunked messages, torn messages and orphan chunks, EOF) as a peer
// that writes raw records on a Pipe's socket can drive it.
//
// Input: byte 0 sets how the receiver asks (bit 0: poll() before each recv, bit 1: a
// max_length, bit 2: decode messages as std::vector<std::string>), then records, each a
// 2-byte little-endian length (bit 15: attach a descriptor) and that many bytes. The records
// are sent on one end of a Pipe, which is then closed; the other end receives until EOF.
// Every failure must be mproc::EOFError, SerializationError or the documented std::system_error
// (EMSGSIZE for max_length); a crash, a sanitizer report, a huge allocation or a hang is a
// finding.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/errors.hpp"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_connection: %s\n", what);
  std::abort();
}

int dev_null() {
  static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

/// Sends one raw SOCK_SEQPACKET record, with a descriptor when `with_fd`. False when the
/// socket buffer is full (the remaining records are dropped: the test stays non-blocking).
bool send_record(int socket, const std::uint8_t* bytes, std::size_t size, bool with_fd) {
  iovec iov{const_cast<std::uint8_t*>(bytes), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (with_fd) {
    const int fd = dev_null();
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof fd);
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  }
  return ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  auto [sender, receiver] = mproc::Pipe(true);

  // A zero-length record reads as EOF on SOCK_SEQPACKET, which is what it means.
  std::size_t at = 1;
  while (at + 2 <= size) {
    const std::uint16_t word = static_cast<std::uint16_t>(data[at] | data[at + 1] << 8);
    at += 2;
    const std::size_t length = std::min<std::size_t>(word & 0x7fff, size - at);
    if (!send_record(sender.fileno(), data + at, length, (word & 0x8000) != 0)) break;
    at += length;
  }
  sender.close();

  for (int messages = 0; messages < 64; ++messages) {
    try {
      if ((mode & 1) && !receiver.poll()) finding("poll() is false with the writer closed");
      if (mode & 4) {
        (void)receiver.recv<std::vector<std::string>>();
      } else if (mode & 2) {
        (void)receiver.recv_bytes(static_cast<std::size_t>(mode >> 3));
      } else {
        (void)receiver.recv_bytes();
      }
    } catch (const mproc::EOFError&) {
      return 0;  // the end of every input
    } catch (const mproc::SerializationError&) {
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::message_size) throw;
    }
  }
  return 0;
}
