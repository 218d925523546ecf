// src/fd_passing.hpp — framed messages with file descriptors attached (SCM_RIGHTS)
// over an AF_UNIX stream socket: how launchers hand a child its boot record,
// its channels and, later, queues and shared memory.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "syscall.hpp"

namespace mproc::detail {

/// The largest frame mproc accepts on a control socket (a boot record with its arguments).
inline constexpr std::size_t max_frame_bytes = std::size_t{1} << 32;
/// The most descriptors one frame may carry.
inline constexpr std::size_t max_frame_fds = 64;

struct Frame {
  std::vector<std::byte> bytes;
  std::vector<UniqueFd> fds;
};

/// Sends `bytes` as one frame with `fds` attached. Throws std::system_error on failure
/// (EPIPE when the peer is gone; SIGPIPE is never raised).
void send_frame(int socket, std::span<const std::byte> bytes, std::span<const int> fds = {});

/// Receives one frame. Returns false on a clean EOF before the frame started.
/// Throws SerializationError on a malformed header, std::system_error on I/O failure.
/// Received descriptors are close-on-exec.
bool recv_frame(int socket, Frame& frame);

}  // namespace mproc::detail
