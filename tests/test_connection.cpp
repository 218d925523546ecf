// tests/test_connection.cpp — Pipe and Connection: values and bytes across real processes,
// one-way direction, poll and timeouts, huge messages, a closed or killed peer, and passing a
// Connection to another process (FdSink/FdSource, a Process argument, inside a message).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/process.hpp"
#include "support/leak_check.hpp"

using namespace std::literals;
using mproc::Connection;
using mproc::Pipe;

namespace {

using connection_test = mproc_test::LeakCheckedTest;

// A generous bound on every wait that should end quickly: it only turns a hang into a failure.
constexpr auto hang_limit = 60s;

/// Forks a child that runs `role` and leaves with _exit(its return value); an exception in the
/// child becomes exit code 99 (gtest assertions must not run in a child).
template <class Role>
pid_t fork_child(Role&& role) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    int code = 99;
    try {
      code = role();
    } catch (...) {
    }
    ::_exit(code);
  }
  return pid;
}

/// Reaps `pid`; its exit code, or 128 + signal when a signal ended it.
int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::uint64_t mix(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

/// A self-checking message: {seed, length, mix(seed, 2), mix(seed, 3), ...}.
std::vector<std::uint64_t> make_message(std::uint64_t seed, std::size_t words) {
  std::vector<std::uint64_t> v(std::max<std::size_t>(words, 2));
  v[0] = seed;
  v[1] = v.size();
  for (std::size_t i = 2; i < v.size(); ++i) v[i] = mix(seed, i);
  return v;
}

bool verify_message(const std::vector<std::uint64_t>& v) {
  if (v.size() < 2 || v[1] != v.size()) return false;
  for (std::size_t i = 2; i < v.size(); ++i)
    if (v[i] != mix(v[0], i)) return false;
  return true;
}

std::string to_string(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

/// A thread that sends on one end while the test receives on the other. On the way out it
/// closes the receiving end first (a failed test may have stopped reading), so that a send
/// blocked on a full socket fails with EPIPE instead of hanging the join.
class SenderThread {
 public:
  template <class F>
  SenderThread(Connection& receiving_end, F body)
      : receiving_end_(receiving_end), thread_([body = std::move(body)]() mutable {
          try {
            body();
          } catch (...) {
          }
        }) {}
  ~SenderThread() { join(); }
  void join() {
    if (!thread_.joinable()) return;
    receiving_end_.close();
    thread_.join();
  }

 private:
  Connection& receiving_end_;
  std::thread thread_;
};

bool says_closed(const mproc::Error& e) {
  return std::string(e.what()).find("closed by the other end") != std::string::npos;
}

bool says_mid_message(const mproc::Error& e) {
  return std::string(e.what()).find("in the middle of a message") != std::string::npos;
}

}  // namespace

TEST_F(connection_test, values_round_trip_through_a_fork_child) {
  auto [parent_end, child_end] = Pipe();
  mproc::Process child(
      [](Connection c) {
        // Echo each value back transformed, until the parent says stop.
        c.send(c.recv<int>() * 2);
        c.send(c.recv<std::string>() + " back");
        auto m = c.recv<std::map<std::string, std::vector<double>>>();
        m["count"] = {static_cast<double>(m.size())};
        c.send(m);
        c.send(std::tuple<int, std::string>(7, "seven"));
      },
      std::move(child_end));
  child.start();
  parent_end.send(21);
  EXPECT_EQ(parent_end.recv<int>(hang_limit), 42);
  parent_end.send(std::string("there and"));
  EXPECT_EQ(parent_end.recv<std::string>(hang_limit), "there and back");
  parent_end.send(std::map<std::string, std::vector<double>>{{"a", {1.5}}, {"b", {}}});
  auto m = parent_end.recv<std::map<std::string, std::vector<double>>>(hang_limit);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m["a"], std::vector<double>{1.5});
  EXPECT_EQ(m["count"], std::vector<double>{2.0});
  auto t = parent_end.recv<std::tuple<int, std::string>>(hang_limit);
  EXPECT_EQ(t, (std::tuple<int, std::string>(7, "seven")));
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST_F(connection_test, bytes_round_trip_exactly_including_empty_messages) {
  auto [a, b] = Pipe();
  pid_t pid = fork_child([&] {
    a.close();
    for (;;) {
      auto bytes = b.recv_bytes();
      b.send_bytes(bytes);
      if (bytes.empty()) return 0;
    }
  });
  b.close();
  const std::string text = "hello\0world"s;
  a.send_bytes(text);
  EXPECT_EQ(to_string(a.recv_bytes()), text);
  std::vector<std::byte> raw{std::byte{0}, std::byte{255}, std::byte{7}};
  a.send_bytes(std::span<const std::byte>(raw));
  EXPECT_EQ(a.recv_bytes(), raw);
  a.send_bytes("");
  EXPECT_TRUE(a.recv_bytes(hang_limit).empty());
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, one_way_pipe_receives_on_the_first_end_and_sends_on_the_second) {
  auto [r, w] = Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  EXPECT_THROW(r.send(1), std::logic_error);
  EXPECT_THROW(r.send_bytes("x"), std::logic_error);
  EXPECT_THROW(w.recv<int>(), std::logic_error);
  EXPECT_THROW(w.recv_bytes(), std::logic_error);
  EXPECT_THROW(w.poll(), std::logic_error);
  // The kernel enforces it too: a raw write on the receive end's socket fails.
  EXPECT_LT(::send(r.fileno(), "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT), 0);
  w.send(5);
  EXPECT_EQ(r.recv<int>(), 5);

  auto [duplex_a, duplex_b] = Pipe();
  EXPECT_TRUE(duplex_a.readable() && duplex_a.writable() && duplex_b.readable() &&
              duplex_b.writable());
}

TEST_F(connection_test, poll_is_false_when_empty_and_true_once_a_message_waits) {
  auto [a, b] = Pipe();
  EXPECT_FALSE(a.poll());
  EXPECT_FALSE(a.poll(10ms));
  pid_t pid = fork_child([&] {
    b.send(std::string("ready"));
    return 0;
  });
  EXPECT_TRUE(a.poll(hang_limit));
  EXPECT_TRUE(a.poll());
  EXPECT_EQ(a.recv<std::string>(), "ready");
  EXPECT_FALSE(a.poll());
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, recv_with_a_timeout_throws_timeout_error_when_nothing_comes) {
  auto [a, b] = Pipe();
  EXPECT_THROW(a.recv<int>(20ms), mproc::TimeoutError);
  EXPECT_THROW(a.recv_bytes(20ms), mproc::TimeoutError);
  EXPECT_THROW(a.recv_bytes(100, 0ms), mproc::TimeoutError);
  // The connection is still usable afterwards.
  b.send(3);
  EXPECT_EQ(a.recv<int>(hang_limit), 3);
}

TEST_F(connection_test, send_with_a_timeout_throws_timeout_error_when_the_pipe_stays_full) {
  auto [a, b] = Pipe();
  const std::string message(1000, 'm');  // one record: either queued whole or not at all
  std::size_t sent = 0;
  bool timed_out = false;
  for (; sent < 100000; ++sent) {
    try {
      b.send_bytes(message, 1ms);
    } catch (const mproc::TimeoutError&) {
      timed_out = true;
      break;
    }
  }
  ASSERT_TRUE(timed_out);
  for (std::size_t i = 0; i < sent; ++i) ASSERT_EQ(to_string(a.recv_bytes(hang_limit)), message);
  EXPECT_FALSE(a.poll());
}

TEST_F(connection_test, a_64_mib_message_round_trips_through_a_child) {
  auto [a, b] = Pipe();
  pid_t pid = fork_child([&] {
    a.close();
    auto v = b.recv<std::vector<std::uint64_t>>();
    if (!verify_message(v)) return 2;
    b.send(v);
    return 0;
  });
  b.close();
  const auto message = make_message(64, 64 * 1024 * 1024 / 8);
  a.send(message);
  auto back = a.recv<std::vector<std::uint64_t>>(hang_limit);
  EXPECT_EQ(back.size(), message.size());
  EXPECT_TRUE(back == message);
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, recv_bytes_drops_a_message_longer_than_max_length_and_stays_usable) {
  auto [a, b] = Pipe();
  // A thread sends: a multi-chunk message may not fit in the socket buffer all at once.
  SenderThread sender(a, [&b = b] {
    b.send_bytes(std::string(100, 'x'));
    b.send_bytes("short");
    b.send_bytes(std::string(3 * 1024 * 1024, 'y'));
    b.send_bytes("after");
  });
  try {
    a.recv_bytes(10);
    ADD_FAILURE() << "no exception for a 100-byte message with max_length 10";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EMSGSIZE);
  }
  EXPECT_EQ(to_string(a.recv_bytes(10)), "short");
  EXPECT_THROW(a.recv_bytes(1024 * 1024), std::system_error);
  // The rest of the dropped message is skipped: poll only reports the next message.
  EXPECT_TRUE(a.poll(hang_limit));
  EXPECT_EQ(to_string(a.recv_bytes(10, hang_limit)), "after");
}

TEST_F(connection_test, recv_throws_once_the_peer_has_closed_and_poll_reports_it) {
  auto [a, b] = Pipe();
  pid_t pid = fork_child([&] {
    a.close();
    b.send(1);
    return 0;  // exiting closes the child's end
  });
  b.close();  // the parent's copy of the child's end
  EXPECT_EQ(a.recv<int>(hang_limit), 1);
  EXPECT_TRUE(a.poll(hang_limit));
  try {
    a.recv<int>();
    ADD_FAILURE() << "recv after the peer closed did not throw";
  } catch (const mproc::Error& e) {
    EXPECT_TRUE(says_closed(e)) << e.what();
    EXPECT_FALSE(says_mid_message(e)) << e.what();
  }
  EXPECT_THROW(a.recv_bytes(), mproc::EOFError);  // and again: EOF stays EOF
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, send_to_a_closed_peer_throws_epipe_and_never_raises_sigpipe) {
  auto [a, b] = Pipe();
  b.close();
  try {
    a.send(1);
    ADD_FAILURE() << "send to a closed peer did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EPIPE);
  }
  // With SIGPIPE's default action (the test runner ignores it), the process must still live.
  pid_t pid = fork_child([&] {
    ::signal(SIGPIPE, SIG_DFL);
    try {
      a.send_bytes("x");
    } catch (const std::system_error& e) {
      return e.code().value() == EPIPE ? 0 : 3;
    }
    return 4;
  });
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, a_sender_blocked_on_a_full_pipe_gets_an_error_when_the_receiver_closes) {
  auto [a, b] = Pipe();
  pid_t pid = fork_child([&] {
    ::signal(SIGPIPE, SIG_DFL);
    a.close();
    try {
      b.send(make_message(1, 64 * 1024 * 1024 / 8));  // far more than the socket buffer holds
    } catch (const std::system_error& e) {
      return e.code().value() == EPIPE ? 0 : 3;
    }
    return 4;
  });
  b.close();
  a.close();  // the last holder of the receiving end: the blocked send must fail, not hang
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, a_sender_killed_in_the_middle_of_a_message_gives_a_clean_error) {
  auto [r, w] = Pipe(false);
  pid_t pid = fork_child([&] {
    r.close();
    w.send(make_message(2, 64 * 1024 * 1024 / 8));  // cannot complete: nobody reads it all
    return 0;
  });
  w.close();
  ASSERT_TRUE(r.poll(hang_limit));  // its first chunks have arrived
  ::kill(pid, SIGKILL);
  EXPECT_EQ(reap(pid), 128 + SIGKILL);
  try {
    r.recv<std::vector<std::uint64_t>>(hang_limit);
    ADD_FAILURE() << "a torn message was delivered";
  } catch (const mproc::TimeoutError&) {
    ADD_FAILURE() << "recv hung instead of seeing the dead sender";
  } catch (const mproc::Error& e) {
    EXPECT_TRUE(says_mid_message(e)) << e.what();
  }
}

TEST_F(connection_test, a_torn_message_of_a_killed_sender_is_dropped_and_later_messages_arrive) {
  auto [r, w] = Pipe(false);
  pid_t pid = fork_child([&] {
    r.close();
    w.send(make_message(3, 64 * 1024 * 1024 / 8));
    return 0;
  });
  ASSERT_TRUE(r.poll(hang_limit));
  ::kill(pid, SIGKILL);
  EXPECT_EQ(reap(pid), 128 + SIGKILL);
  // This process still holds the sending end: the channel must go on working for it. (A thread
  // sends, because the dead sender's chunks still fill the socket buffer until they are read.)
  SenderThread sender(r, [&w = w] { w.send(make_message(4, 1000)); });
  auto v = r.recv<std::vector<std::uint64_t>>(hang_limit);
  EXPECT_EQ(v[0], 4u);
  EXPECT_TRUE(verify_message(v));
  EXPECT_FALSE(r.poll());
}

TEST_F(connection_test, sigkill_at_random_points_of_send_never_delivers_a_torn_message) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int delivered = 0, torn_seen = 0, clean_eof = 0;
  for (int iteration = 0; iteration < 200; ++iteration) {
    auto [r, w] = Pipe(false);
    const std::uint64_t child_seed = rng();
    pid_t pid = fork_child([&] {
      r.close();
      std::mt19937_64 sizes(child_seed);
      for (std::uint64_t i = 0;; ++i) {
        // Mostly multi-chunk messages (up to 1 MiB), sometimes single-chunk ones.
        std::size_t words = sizes() % 4 == 0 ? 1 + sizes() % 1000 : 1 + sizes() % (1024 * 1024 / 8);
        w.send(make_message(child_seed ^ i, words));
      }
      return 0;
    });
    w.close();
    // Read some whole messages, then kill the sender at a random moment while reading on.
    const int before = static_cast<int>(rng() % 3);
    const auto spin = std::chrono::microseconds(rng() % 3000);
    for (int i = 0; i < before; ++i) {
      auto v = r.recv<std::vector<std::uint64_t>>(hang_limit);
      ASSERT_TRUE(verify_message(v)) << "iteration " << iteration;
      ++delivered;
    }
    std::jthread killer([pid, spin] {
      const auto until = std::chrono::steady_clock::now() + spin;
      while (std::chrono::steady_clock::now() < until) {
      }
      ::kill(pid, SIGKILL);
    });
    bool failed = false;
    for (;;) {
      try {
        auto v = r.recv<std::vector<std::uint64_t>>(hang_limit);
        if (!verify_message(v)) {
          ADD_FAILURE() << "iteration " << iteration << ": a corrupt message was delivered";
          failed = true;
          break;
        }
        ++delivered;
      } catch (const mproc::SerializationError& e) {
        ADD_FAILURE() << "iteration " << iteration << ": " << e.what();
        failed = true;
        break;
      } catch (const mproc::TimeoutError& e) {
        ADD_FAILURE() << "iteration " << iteration << ": recv hung: " << e.what();
        failed = true;
        break;
      } catch (const mproc::Error& e) {
        ASSERT_TRUE(says_closed(e)) << e.what();
        (says_mid_message(e) ? torn_seen : clean_eof)++;
        break;
      }
    }
    killer.join();
    EXPECT_EQ(reap(pid), 128 + SIGKILL);
    if (failed) break;
  }
  // Nearly every kill lands inside a multi-chunk send; make sure that path was exercised.
  EXPECT_GT(torn_seen, 0) << delivered << " delivered, " << clean_eof << " clean EOFs";
  RecordProperty("delivered", delivered);
  RecordProperty("torn", torn_seen);
}

TEST_F(connection_test, killing_one_of_several_senders_never_corrupts_the_channel_for_the_others) {
  auto [r, w] = Pipe(false);  // this process keeps `w` open throughout: no EOF, ever
  std::mt19937_64 rng(std::random_device{}());
  for (std::uint64_t round = 0; round < 20; ++round) {
    const std::uint64_t child_seed = rng();
    pid_t doomed = fork_child([&] {
      r.close();
      for (std::uint64_t i = 0;; ++i)
        w.send(make_message(child_seed ^ i, 1 + (child_seed ^ i) % (2 * 1024 * 1024 / 8)));
      return 0;
    });
    const int before = static_cast<int>(rng() % 3);
    for (int i = 0; i < before; ++i)
      ASSERT_TRUE(verify_message(r.recv<std::vector<std::uint64_t>>(hang_limit)));
    ASSERT_TRUE(r.poll(hang_limit));
    ::kill(doomed, SIGKILL);
    ASSERT_EQ(reap(doomed), 128 + SIGKILL);
    // A survivor sends a marked message; every message before it must be whole.
    const std::uint64_t marker = 0xfeedface00000000 | round;
    pid_t survivor = fork_child([&] {
      r.close();
      w.send(make_message(marker, 100 + round * 10000));
      return 0;
    });
    for (;;) {
      auto v = r.recv<std::vector<std::uint64_t>>(hang_limit);
      ASSERT_TRUE(verify_message(v)) << "round " << round;
      if (v[0] == marker) break;
    }
    ASSERT_EQ(reap(survivor), 0);
  }
}

TEST_F(connection_test, single_chunk_messages_from_concurrent_senders_arrive_whole) {
  auto [r, w] = Pipe(false);
  constexpr int senders = 4, per_sender = 2000;
  std::vector<pid_t> pids;
  for (int s = 0; s < senders; ++s)
    pids.push_back(fork_child([&, s] {
      r.close();
      for (int i = 0; i < per_sender; ++i) w.send(make_message((std::uint64_t(s) << 32) | i, 100));
      return 0;
    }));
  w.close();
  std::vector<std::uint32_t> next(senders, 0);
  for (int i = 0; i < senders * per_sender; ++i) {
    auto v = r.recv<std::vector<std::uint64_t>>(hang_limit);
    ASSERT_TRUE(verify_message(v));
    const auto s = static_cast<std::size_t>(v[0] >> 32);
    ASSERT_LT(s, next.size());
    ASSERT_EQ(static_cast<std::uint32_t>(v[0]), next[s]) << "sender " << s << " out of order";
    ++next[s];
  }
  EXPECT_THROW(r.recv<int>(hang_limit), mproc::Error);  // every sender has gone: EOF
  for (pid_t pid : pids) EXPECT_EQ(reap(pid), 0);
}

TEST_F(connection_test, a_record_that_is_not_a_message_throws_serialization_error_and_is_skipped) {
  auto [a, b] = Pipe();
  ASSERT_EQ(::send(b.fileno(), "junk", 4, MSG_NOSIGNAL), 4);
  b.send(7);
  EXPECT_THROW(a.recv<int>(), mproc::SerializationError);
  EXPECT_EQ(a.recv<int>(), 7);
  b.send(std::string("not an int"));
  EXPECT_THROW(a.recv<int>(), mproc::SerializationError);
}

TEST_F(connection_test, a_closed_or_moved_from_connection_refuses_use) {
  Connection none;
  EXPECT_TRUE(none.closed());
  EXPECT_FALSE(none.readable());
  EXPECT_THROW(none.send(1), std::logic_error);
  EXPECT_THROW(none.recv<int>(), std::logic_error);
  EXPECT_THROW(none.fileno(), std::logic_error);
  auto [a, b] = Pipe();
  Connection moved = std::move(a);
  EXPECT_TRUE(a.closed());  // NOLINT(bugprone-use-after-move): the documented moved-from state
  EXPECT_FALSE(moved.closed());
  moved.close();
  moved.close();
  EXPECT_TRUE(moved.closed());
  mproc::detail::FdSink sink;
  mproc::detail::ScopedFdSink use(sink);
  EXPECT_THROW(mproc::serialize(moved), std::logic_error);
}

TEST_F(connection_test, a_connection_round_trips_through_fd_sink_and_source_into_a_fork_child) {
  static_assert(mproc::Serializable<Connection>);
  auto [r, w] = Pipe(false);
  std::vector<std::byte> bytes;
  std::vector<int> fds;
  {
    mproc::detail::FdSink sink;
    {
      mproc::detail::ScopedFdSink use(sink);
      bytes = mproc::serialize(w);
    }
    for (int fd : sink.fds()) fds.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  }
  w.close();
  Connection copy;
  {
    mproc::detail::FdSource source(fds);
    mproc::detail::ScopedFdSource use(source);
    copy = mproc::deserialize<Connection>(bytes);
  }
  EXPECT_FALSE(copy.readable());  // the direction travelled too
  EXPECT_TRUE(copy.writable());
  pid_t pid = fork_child([&] {
    r.close();
    copy.send(std::string("from the decoded copy"));
    return 0;
  });
  copy.close();
  EXPECT_EQ(r.recv<std::string>(hang_limit), "from the decoded copy");
  EXPECT_THROW(r.recv<int>(hang_limit), mproc::Error);  // every copy of the sending end is closed
  EXPECT_EQ(reap(pid), 0);
  // Without a sink (outside a Process or pool argument) a Connection cannot be encoded.
  auto [x, y] = Pipe();
  EXPECT_THROW(mproc::serialize(x), mproc::SerializationError);
}

TEST_F(connection_test, a_connection_moved_into_a_process_argument_works_in_the_child) {
  auto [r, w] = Pipe(false);
  mproc::Process child([](Connection out, int n) { out.send(std::vector<int>(n, n)); },
                       std::move(w), 3);
  child.start();
  EXPECT_EQ(r.recv<std::vector<int>>(hang_limit), (std::vector<int>{3, 3, 3}));
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST_F(connection_test, a_connection_sent_inside_a_message_is_usable_by_the_receiver) {
  auto [a, b] = Pipe();
  pid_t pid = fork_child([&] {
    a.close();
    // The pipe to answer on is created after the fork: it can only arrive in the message.
    auto [reply, number] = b.recv<std::pair<Connection, int>>();
    reply.send(number + 1);
    return 0;
  });
  b.close();
  auto [answers, reply_end] = Pipe(false);
  a.send(std::pair<Connection, int>(std::move(reply_end), 41));  // the temporary closes it here
  EXPECT_EQ(answers.recv<int>(hang_limit), 42);
  EXPECT_THROW(answers.recv<int>(hang_limit), mproc::Error);  // the child's copy closed on exit
  EXPECT_EQ(reap(pid), 0);
}
