// tests/fuzz/fuzz_frames.cpp — libFuzzer target: control frames (fd_passing's recv_frame) and
// what is decoded from them: the boot record of spawn and forkserver children, the
// forkserver's replies, a pool worker's WorkerBoot, a spawn target's payload and the
// FunctionId it names.
//
// Input: byte 0 = descriptors to attach (low 2 bits), byte 1 = how many stream bytes ride
// with them in the first sendmsg, the rest = the bytes a peer writes on the control socket,
// which is then closed. The receiver reads frames until EOF or an error. Every failure must
// be a SerializationError, or std::system_error (connection_aborted) for a frame cut short by
// the peer's close; a crash, a sanitizer report, a hang, a
// huge allocation or a leaked descriptor is a finding.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <system_error>
#include <tuple>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"
#include "mproc/serialize.hpp"
#include "pool/worker_protocol.hpp"

namespace {

using namespace mproc::detail;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_frames: %s\n", what);
  std::abort();
}

int dev_null() {
  static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

/// Writes `stream` on `socket` as a peer would: the first `with_fds` bytes in one sendmsg
/// carrying `fd_count` descriptors, the rest plainly, then shuts the socket down.
void write_peer(int socket, std::span<const std::uint8_t> stream, std::size_t fd_count,
                std::size_t with_fds) {
  std::size_t done = 0;
  if (fd_count > 0 && !stream.empty()) {
    with_fds = std::max<std::size_t>(1, std::min(with_fds, stream.size()));
    int fds[3] = {dev_null(), dev_null(), dev_null()};
    iovec iov{const_cast<std::uint8_t*>(stream.data()), with_fds};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fd_count);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fd_count);
    std::memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * fd_count);
    const ssize_t sent = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (sent < 0) finding("sendmsg failed");
    done = static_cast<std::size_t>(sent);
  }
  while (done < stream.size()) {
    const ssize_t n = ::send(socket, stream.data() + done, stream.size() - done, MSG_NOSIGNAL);
    if (n < 0) finding("send failed");
    done += static_cast<std::size_t>(n);
  }
  ::shutdown(socket, SHUT_WR);
}

/// What a spawned child or the forkserver does with a FunctionId, short of calling it: only
/// ids in the main executable are resolved (any other module would be dlopen()ed by path).
void check_function_id(const mproc::detail::FunctionId& id) {
  if (!id.module.empty()) return;
  try {
    void* address = resolve_function(id);
    (void)address;
  } catch (const std::runtime_error&) {
  }
}

template <class T>
bool try_decode(std::span<const std::byte> bytes, T& out) {
  try {
    out = mproc::deserialize<T>(bytes);
    return true;
  } catch (const mproc::SerializationError&) {
    return false;
  }
}

/// Every decoder that reads a frame's bytes, as its real reader would.
void decode_frame(const Frame& frame) {
  // The boot record of a spawned child / a forkserver request.
  BootRecord boot;
  if (try_decode(frame.bytes, boot)) {
    check_function_id(boot.target.entry);
    // A process target's payload: (FunctionId, arguments) for a function pointer.
    std::pair<FunctionId, std::tuple<int, std::string>> spawn_args;
    if (try_decode(boot.target.payload, spawn_args)) check_function_id(spawn_args.first);
    // A pool worker's payload.
    WorkerBoot worker;
    if (try_decode(boot.target.payload, worker)) check_function_id(worker.initializer.entry);
  }
  // The forkserver's replies: {pid; pidfd} when it started a child, {wait status} later.
  if (frame.bytes.size() == sizeof(std::int32_t)) {
    std::int32_t word;
    std::memcpy(&word, frame.bytes.data(), sizeof word);
    (void)exit_code_from_wait_status(word);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t fd_count = data[0] & 3;
  const std::size_t with_fds = data[1];
  const std::span<const std::uint8_t> stream(data + 2, size - 2);

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) finding("socketpair failed");
  UniqueFd reader(pair[0]), writer(pair[1]);
  write_peer(writer.get(), stream, fd_count, with_fds);
  writer.reset();

  for (int frames = 0; frames < 64; ++frames) {
    Frame frame;
    try {
      if (!recv_frame(reader.get(), frame)) break;
    } catch (const mproc::SerializationError&) {
      break;  // a malformed header
    } catch (const std::system_error& e) {
      // The peer closed in the middle of a frame: what launch_forkserver takes for a dead
      // forkserver (and restarts it).
      if (e.code() != std::errc::connection_aborted) throw;
      break;
    }
    if (frame.fds.size() > max_frame_fds) finding("a frame carried more descriptors than allowed");
    decode_frame(frame);
  }
  return 0;
}
