// mproc/connection.hpp — Pipe() and Connection: whole messages (values or raw bytes) between
// processes over a socketpair, as Python's multiprocessing.Pipe and Connection.
//
//   auto [parent_end, child_end] = mproc::Pipe();
//   mproc::Process child([](mproc::Connection c) { c.send(c.recv<int>() * 2); },
//   std::move(child_end)); child.start(); parent_end.send(21); int answer = parent_end.recv<int>();
//   // 42 child.join();
//
// Messages have any size. A message is either delivered whole or not at all: a sender killed in
// the middle of send() never hands the receiver a torn message, and never breaks the channel for
// the processes that remain (see docs/ipc.md, "Pipes", for how).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/errors.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

class Connection;

namespace detail {

struct ConnectionState;

/// One whole message as received: its bytes and the descriptors that travelled with it.
struct ReceivedMessage {
  std::vector<std::byte> bytes;
  FdSource fds;
};

inline std::optional<std::chrono::nanoseconds> to_timeout(std::chrono::nanoseconds timeout) {
  return timeout < std::chrono::nanoseconds::zero() ? std::chrono::nanoseconds::zero() : timeout;
}

}  // namespace detail

/// One end of a Pipe: sends and receives whole messages.
///
/// A value goes through mproc::serialize (any Serializable type, including shareable objects such
/// as another Connection: their descriptors travel with the message); bytes go as they are.
///
/// Errors: the other end closed → recv throws mproc::Error ("... closed by the other end"), send
/// throws std::system_error (EPIPE) — never SIGPIPE. A method this end cannot do (sending on the
/// receive end of a one-way pipe, anything on a closed Connection) throws std::logic_error.
///
/// Sharing: move it into a Process argument (or capture it in a fork target), or pass it as a
/// pool task argument; the receiving process gets its own descriptor for the same end. Each
/// process holding an end keeps it open: the other end sees EOF only when all are closed.
///
/// Thread-safety: one thread may send while another receives on the same Connection; two
/// threads must not both send, or both receive, at the same time without a lock. Across
/// processes likewise: a message of one chunk (up to ~100 KiB) is atomic even with several
/// senders on one end, but larger messages from concurrent senders or concurrent receivers of
/// one end need a Lock (as in Python). A process killed in the middle never corrupts the channel.
///
/// Movable, not copyable (Python's Connection is one object too). A moved-from Connection is
/// closed.
class Connection {
 public:
  /// A closed Connection (what a moved-from one is).
  Connection() noexcept;
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  /// Closes this process's descriptor of the end.
  ~Connection();

  /// Sends `value` as one message (mproc::serialize). Blocks while the receiver's buffer is full.
  /// Throws SerializationError when the value cannot be encoded, std::system_error (EPIPE) when
  /// the other end is closed, std::logic_error when this end cannot send.
  template <class T>
  void send(const T& value) {
    send_value(value, std::nullopt);
  }
  /// As send(value), but throws TimeoutError when the message could not be handed over within
  /// `timeout`. A message that timed out part-way is never delivered (the receiver drops it).
  template <class T, class Rep, class Period>
  void send(const T& value, std::chrono::duration<Rep, Period> timeout) {
    send_value(value,
               detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)));
  }

  /// Sends `bytes` as one message; the receiver gets exactly these bytes from recv_bytes().
  void send_bytes(std::span<const std::byte> bytes) { send_message(bytes, {}, std::nullopt); }
  void send_bytes(std::string_view text) { send_message(as_bytes(text), {}, std::nullopt); }
  template <class Rep, class Period>
  void send_bytes(std::span<const std::byte> bytes, std::chrono::duration<Rep, Period> timeout) {
    send_message(bytes, {},
                 detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)));
  }
  template <class Rep, class Period>
  void send_bytes(std::string_view text, std::chrono::duration<Rep, Period> timeout) {
    send_bytes(as_bytes(text), timeout);
  }

  /// Waits for the next message and decodes it as a T (it must have been sent as a T).
  /// Throws mproc::Error when the other end is closed (all its holders closed it or died),
  /// SerializationError when the bytes are not a T, std::logic_error when this end cannot receive.
  template <class T>
  T recv() {
    detail::require_serializable<T>();
    return decode<T>(recv_message(std::nullopt, std::nullopt));
  }
  /// As recv<T>(), but throws TimeoutError when no whole message arrived within `timeout`
  /// (a message that had begun to arrive is kept: the next recv continues it).
  template <class T, class Rep, class Period>
  T recv(std::chrono::duration<Rep, Period> timeout) {
    detail::require_serializable<T>();
    return decode<T>(recv_message(
        detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)),
        std::nullopt));
  }

  /// Waits for the next message and returns its bytes. Throws as recv<T>().
  std::vector<std::byte> recv_bytes() { return recv_message(std::nullopt, std::nullopt).bytes; }
  /// As recv_bytes(), but a message longer than `max_length` is dropped and std::system_error
  /// (EMSGSIZE) is thrown; the Connection stays usable.
  std::vector<std::byte> recv_bytes(std::size_t max_length) {
    return recv_message(std::nullopt, max_length).bytes;
  }
  /// As recv_bytes(), but throws TimeoutError when no whole message arrived within `timeout`.
  template <class Rep, class Period>
  std::vector<std::byte> recv_bytes(std::chrono::duration<Rep, Period> timeout) {
    return recv_message(
               detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)),
               std::nullopt)
        .bytes;
  }
  template <class Rep, class Period>
  std::vector<std::byte> recv_bytes(std::size_t max_length,
                                    std::chrono::duration<Rep, Period> timeout) {
    return recv_message(
               detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)),
               max_length)
        .bytes;
  }

  /// True when a message (or its first part) is waiting, or the other end is closed (so that
  /// recv will not block forever but throw). Does not wait.
  bool poll() { return poll_for(std::chrono::nanoseconds::zero()); }
  /// As poll(), waiting up to `timeout` for it to become true.
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_for(
        *detail::to_timeout(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)));
  }

  /// Closes this process's descriptor (other processes' copies stay open). Idempotent.
  void close() noexcept;
  bool closed() const noexcept { return state_ == nullptr; }
  /// Whether this end may receive / send (false for the other direction of a one-way pipe).
  bool readable() const noexcept;
  bool writable() const noexcept;
  /// The socket's descriptor, owned by this Connection. Throws std::logic_error when closed.
  int fileno() const;

  /// cereal: the descriptor travels beside the bytes (SCM_RIGHTS); see detail/fd_transfer.hpp.
  /// A message half-received by this Connection does not travel.
  template <class Archive>
  void save(Archive& archive) const {
    archive(direction_bits());
    detail::save_fd(archive, fileno());
  }
  template <class Archive>
  void load(Archive& archive) {
    std::uint8_t bits = 0;
    archive(bits);
    if (bits == 0 || bits > 3)
      throw SerializationError("a Connection's direction bits are corrupt");
    adopt(detail::load_fd(archive), bits);
  }

 private:
  friend std::pair<Connection, Connection> Pipe(bool duplex);

  static std::span<const std::byte> as_bytes(std::string_view text) noexcept {
    return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
  }

  template <class T>
  void send_value(const T& value, std::optional<std::chrono::nanoseconds> timeout) {
    detail::require_serializable<T>();
    detail::FdSink sink;
    std::vector<std::byte> bytes;
    {
      detail::ScopedFdSink use(sink);
      bytes = serialize(value);
    }
    send_message(bytes, sink.fds(), timeout);
  }

  template <class T>
  static T decode(detail::ReceivedMessage message) {
    detail::ScopedFdSource use(message.fds);
    return deserialize<T>(message.bytes);
  }

  void send_message(std::span<const std::byte> bytes, std::span<const int> fds,
                    std::optional<std::chrono::nanoseconds> timeout);
  detail::ReceivedMessage recv_message(std::optional<std::chrono::nanoseconds> timeout,
                                       std::optional<std::size_t> max_length);
  /// Receives and files one record; returns the message it completed, if any.
  std::optional<detail::ReceivedMessage> take_record(bool dontwait,
                                                     std::optional<std::size_t> max_length);
  void check_readable(const char* method) const;
  [[noreturn]] static void throw_too_long(std::uint64_t length, std::size_t max_length);
  bool poll_for(std::chrono::nanoseconds timeout);
  std::uint8_t direction_bits() const;
  /// Takes ownership of `fd` (closed on failure). bits: 1 readable, 2 writable.
  void adopt(int fd, std::uint8_t bits);

  std::unique_ptr<detail::ConnectionState> state_;
};

/// A pair of connected ends. Duplex (the default): both ends send and receive. One-way
/// (`duplex = false`): the first end only receives, the second only sends — as Python's
/// `r, w = Pipe(False)`.
/// Throws std::system_error when the system is out of descriptors.
std::pair<Connection, Connection> Pipe(bool duplex = true);

}  // namespace mproc
