// src/connection.cpp — Connection's framing: messages cut into atomic SOCK_SEQPACKET records,
// reassembled on the other side, with torn messages of killed senders detected and dropped.
//
// Why records: an AF_UNIX SOCK_SEQPACKET sendmsg() queues its whole record or nothing, even when
// the sender is SIGKILLed inside the call. So a message that fits in one record is atomic. A
// larger one is cut into records ("chunks"), each carrying a header:
//
//   magic | payload length | message id (sender pid << 32 | counter) | message length | offset
//
// The receiver keeps at most one message in progress and accepts a chunk only if it continues
// that message exactly (same id, offset = bytes received so far). Interleavings it handles:
//   * sender dies after chunk k of n, and later another holder of the same end sends: the next
//     message's first chunk (offset 0) arrives while the old one is in progress → the torn one
//     is dropped, the new one delivered.
//   * sender dies after chunk k of n and nobody else holds the end: EOF with a message in
//     progress → recv throws "closed in the middle of a message"; nothing torn is returned.
//   * a receiver dies (or gives up with max_length) after taking chunk k of n: the chunks after
//     it have no start this receiver saw → they are dropped as orphans.
// Descriptors (SCM_RIGHTS) ride on the first chunk of a message and are closed if it is dropped.
#include "mproc/connection.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>

#include "syscall.hpp"

namespace mproc::detail {
namespace {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;

constexpr std::uint32_t kMagic = 0x4e43504d;  // "MPCN" in memory order on little-endian
/// Most descriptors one sendmsg may carry (the kernel's SCM_MAX_FD).
constexpr std::size_t kMaxFds = 253;
/// Largest payload of one record; the receiver's landing buffer has this size.
constexpr std::size_t kMaxChunk = 256 * 1024;
/// Smallest payload of one record (below it the socket buffer is unusable anyway).
constexpr std::size_t kMinChunk = 4096;
/// The send buffer asked for at Pipe(): the kernel doubles it and caps it at wmem_max, and a
/// quarter of it becomes the chunk size, so a few chunks are in flight at once.
constexpr int kRequestedSendBuffer = 512 * 1024;
/// A message length no sender would write: a corrupt header, refused before allocating.
constexpr std::uint64_t kMaxMessage = std::uint64_t{1} << 46;
/// The most a message's first chunk makes the receiver allocate. The length in a header is the
/// sender's word: beyond this the buffer grows (doubling) as chunks arrive, so a corrupt or
/// hostile header costs memory in proportion to the bytes actually sent, not to its claim.
constexpr std::size_t kFirstAllocation = 4 * 1024 * 1024;

struct ChunkHeader {
  std::uint32_t magic;
  std::uint32_t length;  // payload bytes in this record
  std::uint64_t id;      // the message's id
  std::uint64_t total;   // the whole message's length
  std::uint64_t offset;  // of this payload within the message
};
static_assert(sizeof(ChunkHeader) == 32);

std::atomic<std::uint32_t> message_counter{0};

std::uint64_t next_message_id() {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(::getpid())) << 32) |
         message_counter.fetch_add(1, std::memory_order_relaxed);
}

Deadline deadline_after(std::optional<std::chrono::nanoseconds> timeout) {
  if (!timeout) return std::nullopt;
  return Clock::now() + *timeout;
}

/// Waits until `fd` reports one of `events` (or an error/hangup); false when `deadline` passed.
bool wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline - Clock::now());
      if (left < std::chrono::nanoseconds::zero()) left = std::chrono::nanoseconds::zero();
      ts.tv_sec = static_cast<time_t>(left.count() / 1000000000);
      ts.tv_nsec = static_cast<long>(left.count() % 1000000000);
      tsp = &ts;
    }
    pollfd p{fd, events, 0};
    int n = ::ppoll(&p, 1, tsp, nullptr);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw_errno("mproc::Connection: cannot poll its socket");
  }
}

std::string describe_timeout(std::chrono::nanoseconds timeout) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  if (us % 1000 == 0) return std::to_string(us / 1000) + " ms";
  return std::to_string(us) + " us";
}

bool is_peer_gone(int error) {
  return error == EPIPE || error == ECONNRESET || error == ECONNREFUSED || error == ENOTCONN;
}

/// The one place that says "the other end is closed" on receive. (An EOFError in errors.hpp
/// would be the natural type; until it exists this is mproc::Error.)
[[noreturn]] void throw_closed(bool mid_message) {
  if (mid_message)
    throw EOFError(
        "mproc::Connection::recv: the connection was closed by the other end in the middle of a "
        "message (its sender died or gave up while sending); the partial message was dropped");
  throw EOFError("mproc::Connection::recv: the connection was closed by the other end (EOF)");
}

}  // namespace

struct ConnectionState {
  UniqueFd fd;
  bool readable = false;
  bool writable = false;
  std::size_t chunk = kMinChunk;  // payload bytes per record when sending

  // Receiving: the message in progress, and where records land when not in it.
  struct Partial {
    bool active = false;
    std::uint64_t id = 0;
    std::uint64_t received = 0;
    std::uint64_t total = 0;       // the whole message's length
    std::vector<std::byte> bytes;  // at least `received` bytes, at most `total`
    std::vector<int> fds;          // owned
  } partial;
  std::unique_ptr<std::byte[]> landing;  // kMaxChunk bytes, allocated on first receive
  std::optional<ReceivedMessage> ready;  // a message poll() completed while dropping orphans

  ~ConnectionState() { drop_partial(); }

  void drop_partial() noexcept {
    for (int f : partial.fds) ::close(f);
    partial = Partial{};
  }

  /// Room for the next `more` bytes of the message in progress: doubles the buffer (up to the
  /// message's length), so a long message costs at most one extra copy of itself.
  void reserve_partial(std::size_t more) {
    const std::size_t needed = static_cast<std::size_t>(partial.received) + more;
    if (partial.bytes.size() >= needed) return;
    partial.bytes.resize(static_cast<std::size_t>(
        std::min<std::uint64_t>(partial.total, std::max(needed, 2 * partial.bytes.size()))));
  }

  /// Picks the chunk size from the socket's send buffer (the kernel refuses a record larger
  /// than the send buffer, EMSGSIZE).
  void size_chunks() {
    int sndbuf = 0;
    socklen_t len = sizeof sndbuf;
    std::size_t chunk_size = kMinChunk;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0 && sndbuf > 0)
      chunk_size = static_cast<std::size_t>(sndbuf) / 4;
    chunk_size = std::clamp(chunk_size, kMinChunk, kMaxChunk);
    chunk = chunk_size / kMinChunk * kMinChunk;
  }
};

namespace {

/// A received record: how many bytes (0 = EOF), its flags and the descriptors it carried.
struct Record {
  std::size_t size = 0;
  int flags = 0;
  std::vector<int> fds;  // owned: closed on destruction unless moved out (and cleared)

  Record() = default;
  Record(Record&& other) noexcept
      : size(other.size), flags(other.flags), fds(std::move(other.fds)) {
    other.fds.clear();
  }
  Record& operator=(Record&&) = delete;
  ~Record() { close_fds(); }
  void close_fds() noexcept {
    for (int f : fds) ::close(f);
    fds.clear();
  }
};

void collect_fds(msghdr& msg, Record& record) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < n; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      record.fds.push_back(f);
    }
  }
}

/// One recvmsg. Returns nullopt when `dontwait` and nothing was there. Throws mproc::Error
/// (via the caller) for a vanished peer, std::system_error for other failures.
std::optional<Record> receive_record(int fd, iovec* iov, int iovcnt, bool dontwait) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  for (;;) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      if (is_peer_gone(errno)) return Record{};  // reported as EOF
      throw_errno("mproc::Connection::recv: cannot receive from its socket");
    }
    Record record;
    record.size = static_cast<std::size_t>(n);
    record.flags = msg.msg_flags;
    collect_fds(msg, record);
    return record;
  }
}

}  // namespace
}  // namespace mproc::detail

namespace mproc {

using detail::ChunkHeader;
using detail::ConnectionState;

Connection::Connection() noexcept = default;
Connection::Connection(Connection&& other) noexcept = default;
Connection& Connection::operator=(Connection&& other) noexcept = default;
Connection::~Connection() = default;

void Connection::close() noexcept {
  state_.reset();
}

bool Connection::readable() const noexcept {
  return state_ && state_->readable;
}
bool Connection::writable() const noexcept {
  return state_ && state_->writable;
}

int Connection::fileno() const {
  if (!state_) throw std::logic_error("mproc::Connection: the connection is closed");
  return state_->fd.get();
}

std::uint8_t Connection::direction_bits() const {
  if (!state_)
    throw std::logic_error(
        "mproc::Connection: a closed connection cannot be passed to another process");
  return static_cast<std::uint8_t>((state_->readable ? 1 : 0) | (state_->writable ? 2 : 0));
}

void Connection::adopt(int fd, std::uint8_t bits) {
  detail::UniqueFd owned(fd);
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET)
    throw SerializationError(
        "mproc::Connection: the descriptor that travelled is not a Pipe's socket");
  auto state = std::make_unique<ConnectionState>();
  state->fd = std::move(owned);
  state->readable = (bits & 1) != 0;
  state->writable = (bits & 2) != 0;
  state->size_chunks();
  state_ = std::move(state);
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
    detail::throw_errno("mproc::Pipe: cannot create a socketpair");
  detail::UniqueFd a(fds[0]), b(fds[1]);
  for (int f : fds) {
    // Best effort: a larger buffer means larger records and fewer wake-ups; the kernel caps it.
    int size = detail::kRequestedSendBuffer;
    (void)::setsockopt(f, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  // One-way: the kernel enforces the direction too, so a descriptor passed on keeps it.
  if (!duplex && ::shutdown(a.get(), SHUT_WR) != 0)
    detail::throw_errno("mproc::Pipe: cannot make the pipe one-way");
  Connection first, second;
  first.adopt(a.release(), duplex ? 3 : 1);
  second.adopt(b.release(), duplex ? 3 : 2);
  return {std::move(first), std::move(second)};
}

void Connection::send_message(std::span<const std::byte> bytes, std::span<const int> fds,
                              std::optional<std::chrono::nanoseconds> timeout) {
  if (!state_) throw std::logic_error("mproc::Connection::send: the connection is closed");
  if (!state_->writable)
    throw std::logic_error("mproc::Connection::send: this end of a one-way Pipe only receives");
  if (fds.size() > detail::kMaxFds)
    throw SerializationError("mproc::Connection::send: a message can carry at most " +
                             std::to_string(detail::kMaxFds) +
                             " shareable objects' descriptors, not " + std::to_string(fds.size()));
  ConnectionState& s = *state_;
  const detail::Deadline deadline = detail::deadline_after(timeout);
  const std::uint64_t id = detail::next_message_id();
  const std::uint64_t total = bytes.size();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * detail::kMaxFds)];

  // Queues one record; false when the kernel refused it as too large (nothing was queued).
  const auto send_record = [&](std::uint64_t offset, std::size_t length) {
    ChunkHeader header{detail::kMagic, static_cast<std::uint32_t>(length), id, total, offset};
    iovec iov[2] = {{&header, sizeof header},
                    {const_cast<std::byte*>(bytes.data()) + offset, length}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = length ? 2 : 1;
    if (offset == 0 && !fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
      if (deadline && !detail::wait_fd(s.fd.get(), POLLOUT, deadline))
        throw TimeoutError("mproc::Connection::send: the receiver took no message within " +
                           detail::describe_timeout(*timeout));
      // MSG_NOSIGNAL: a closed peer is an EPIPE error here, never a SIGPIPE that kills.
      if (::sendmsg(s.fd.get(), &msg, MSG_NOSIGNAL | (deadline ? MSG_DONTWAIT : 0)) >= 0)
        return true;
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      if (errno == EMSGSIZE && length > detail::kMinChunk) return false;
      if (detail::is_peer_gone(errno))
        throw std::system_error(
            EPIPE, std::generic_category(),
            "mproc::Connection::send: the connection was closed by the other end");
      detail::throw_errno("mproc::Connection::send: cannot send a message of " +
                          std::to_string(total) + " bytes");
    }
  };

  std::uint64_t offset = 0;
  do {
    const std::size_t length =
        static_cast<std::size_t>(std::min<std::uint64_t>(s.chunk, total - offset));
    if (send_record(offset, length)) {
      offset += length;
    } else {
      // Someone shrank the send buffer after this Connection sized its records: cut smaller ones.
      s.chunk = std::max(detail::kMinChunk, length / 2 / detail::kMinChunk * detail::kMinChunk);
    }
  } while (offset < total);
}

std::optional<detail::ReceivedMessage> Connection::take_record(
    bool dontwait, std::optional<std::size_t> max_length) {
  ConnectionState& s = *state_;
  auto& partial = s.partial;
  if (!s.landing) s.landing.reset(new std::byte[detail::kMaxChunk]);

  // The record lands in place when it continues the message in progress; whatever does not
  // fit there (or all of it, with no message in progress) lands in the landing buffer.
  ChunkHeader header{};
  std::size_t in_place = 0;
  iovec iov[3];
  int iovcnt = 0;
  iov[iovcnt++] = {&header, sizeof header};
  if (partial.active) {
    in_place = static_cast<std::size_t>(
        std::min<std::uint64_t>(partial.total - partial.received, detail::kMaxChunk));
    if (in_place) {
      s.reserve_partial(in_place);
      iov[iovcnt++] = {partial.bytes.data() + partial.received, in_place};
    }
  }
  iov[iovcnt++] = {s.landing.get(), detail::kMaxChunk - in_place};

  std::optional<detail::Record> got = detail::receive_record(s.fd.get(), iov, iovcnt, dontwait);
  if (!got) return std::nullopt;  // nothing there (another receiver took it after our poll)
  detail::Record& record = *got;
  if (record.size == 0) {
    const bool mid_message = partial.active;
    s.drop_partial();
    detail::throw_closed(mid_message);
  }

  // Check the header before trusting any of it.
  const char* corrupt = nullptr;
  if (record.flags & MSG_CTRUNC)
    corrupt = "more descriptors than a message may carry";
  else if ((record.flags & MSG_TRUNC) || record.size < sizeof header)
    corrupt = "a record of an unexpected size";
  else if (header.magic != detail::kMagic)
    corrupt = "a record without the message header (something else wrote to the socket)";
  else if (record.size != sizeof header + header.length || header.length > detail::kMaxChunk ||
           header.total > detail::kMaxMessage || header.offset > header.total ||
           header.length > header.total - header.offset ||
           (header.length == 0 && header.total != 0))
    corrupt = "a record whose header is inconsistent";
  if (corrupt) {
    record.close_fds();
    throw SerializationError(std::string("mproc::Connection::recv: received ") + corrupt);
  }

  if (partial.active && header.id == partial.id && header.offset == partial.received &&
      header.total == partial.total) {
    // The next chunk of the message in progress; offset + length <= total, so it landed in place.
    partial.received += header.length;
    partial.fds.insert(partial.fds.end(), record.fds.begin(), record.fds.end());
    record.fds.clear();
  } else if (header.offset == 0) {
    // The first chunk of a new message. A message in progress is torn (its sender died or
    // gave up): drop it. The payload may be split between its buffer and the landing buffer.
    if (max_length && header.total > *max_length) {
      record.close_fds();
      s.drop_partial();  // the rest of this message will come as orphans and be dropped
      throw_too_long(header.total, *max_length);
    }
    std::vector<std::byte> bytes(static_cast<std::size_t>(std::min<std::uint64_t>(
        header.total, std::max<std::uint64_t>(header.length, detail::kFirstAllocation))));
    const std::size_t first = std::min<std::size_t>(in_place, header.length);
    if (first) std::memcpy(bytes.data(), partial.bytes.data() + partial.received, first);
    if (header.length > first)
      std::memcpy(bytes.data() + first, s.landing.get(), header.length - first);
    s.drop_partial();
    partial.active = true;
    partial.id = header.id;
    partial.received = header.length;
    partial.total = header.total;
    partial.bytes = std::move(bytes);
    partial.fds = std::move(record.fds);
    record.fds.clear();
  } else {
    // A later chunk of a message whose start this receiver never saw: drop it.
    record.close_fds();
    return std::nullopt;
  }

  if (partial.received != partial.total) return std::nullopt;
  std::optional<detail::ReceivedMessage> message;
  message.emplace(detail::ReceivedMessage{std::move(partial.bytes), detail::FdSource(std::move(partial.fds))});
  partial = {};
  return message;
}

void Connection::throw_too_long(std::uint64_t length, std::size_t max_length) {
  throw std::system_error(EMSGSIZE, std::generic_category(),
                          "mproc::Connection::recv_bytes: a message of " + std::to_string(length) +
                              " bytes is longer than max_length (" + std::to_string(max_length) +
                              "); it was dropped");
}

void Connection::check_readable(const char* method) const {
  if (!state_)
    throw std::logic_error(std::string("mproc::Connection::") + method +
                           ": the connection is closed");
  if (!state_->readable)
    throw std::logic_error(std::string("mproc::Connection::") + method +
                           ": this end of a one-way Pipe only sends");
}

detail::ReceivedMessage Connection::recv_message(std::optional<std::chrono::nanoseconds> timeout,
                                                 std::optional<std::size_t> max_length) {
  check_readable("recv");
  ConnectionState& s = *state_;
  if (s.ready) {  // completed by poll()
    detail::ReceivedMessage message(std::move(*s.ready));
    s.ready.reset();
    if (max_length && message.bytes.size() > *max_length)
      throw_too_long(message.bytes.size(), *max_length);
    return message;
  }
  const detail::Deadline deadline = detail::deadline_after(timeout);
  for (;;) {
    if (deadline && !detail::wait_fd(s.fd.get(), POLLIN, deadline))
      throw TimeoutError("mproc::Connection::recv: no whole message arrived within " +
                         detail::describe_timeout(*timeout));
    if (auto message = take_record(deadline.has_value(), max_length)) return std::move(*message);
  }
}

bool Connection::poll_for(std::chrono::nanoseconds timeout) {
  check_readable("poll");
  ConnectionState& s = *state_;
  if (s.ready) return true;
  const detail::Deadline deadline = detail::deadline_after(timeout);
  for (;;) {
    if (!detail::wait_fd(s.fd.get(), POLLIN, deadline)) return false;
    // Look at the next record's header: orphan chunks, which recv would drop, do not count.
    ChunkHeader header{};
    ssize_t n = detail::retry_eintr(
        [&] { return ::recv(s.fd.get(), &header, sizeof header, MSG_PEEK | MSG_DONTWAIT); });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;  // another receiver took it
    if (n < static_cast<ssize_t>(sizeof header) || header.magic != detail::kMagic)
      return true;  // EOF, an error or junk: recv reports it without blocking
    const auto& partial = s.partial;
    if (header.offset == 0 ||
        (partial.active && header.id == partial.id && header.offset == partial.received))
      return true;
    // An orphan: take it the way recv would (it may have been replaced by a first chunk since
    // the peek, which is then kept as the message in progress, or even completed).
    if (auto message = take_record(true, std::nullopt)) {
      s.ready.emplace(std::move(*message));
      return true;
    }
  }
}

}  // namespace mproc
