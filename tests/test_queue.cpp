// tests/test_queue.cpp — Queue, SimpleQueue and JoinableQueue across processes: order, exact
// delivery with many producers and consumers, blocking and timeouts, task_done/join, passing a
// queue through fd serialization, and producers and consumers SIGKILLed mid-operation.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "futex.hpp"
#include "mproc/detail/fd_transfer.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::JoinableQueue;
using mproc::Process;
using mproc::Queue;
using mproc::QueueOptions;
using mproc::SimpleQueue;

static_assert(mproc::Serializable<Queue<int>>);
static_assert(mproc::Serializable<Queue<std::string>>);
static_assert(mproc::Serializable<JoinableQueue<std::vector<double>>>);
static_assert(mproc::Serializable<SimpleQueue<int>>);

namespace {

using queue_test = mproc_test::LeakCheckedTest;

constexpr auto hang_guard = 60s;

/// A value that goes through cereal (not the memcpy fast path).
struct Item {
  int producer = 0;
  int index = 0;
  std::string text;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(producer, index, text);
  }
};

std::string text_for(int producer, int index) {
  return "item " + std::to_string(producer) + "/" + std::to_string(index);
}

/// Checksummed messages: [u64 checksum of the rest][u64 sequence number][payload].
using Message = std::vector<std::uint8_t>;

/// FNV-1a over 8-byte words (fast enough that copying, not checking, is where time goes).
std::uint64_t checksum(const std::uint8_t* data, std::size_t size) {
  std::uint64_t hash = 0xcbf29ce484222325u ^ size;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, data + i, 8);
    hash = (hash ^ word) * 0x100000001b3u;
  }
  for (; i < size; ++i) hash = (hash ^ data[i]) * 0x100000001b3u;
  return hash;
}

Message make_message(std::uint64_t sequence, std::size_t payload, std::mt19937_64& rng) {
  Message m(16 + payload);
  std::memcpy(m.data() + 8, &sequence, 8);
  for (std::size_t i = 16; i < m.size(); i += 8) {
    const std::uint64_t word = rng();
    std::memcpy(m.data() + i, &word, std::min<std::size_t>(8, m.size() - i));
  }
  const std::uint64_t sum = checksum(m.data() + 8, m.size() - 8);
  std::memcpy(m.data(), &sum, 8);
  return m;
}

bool intact(const Message& m) {
  if (m.size() < 16) return false;
  std::uint64_t sum = 0;
  std::memcpy(&sum, m.data(), 8);
  return sum == checksum(m.data() + 8, m.size() - 8);
}

std::uint64_t sequence_of(const Message& m) {
  std::uint64_t sequence = 0;
  std::memcpy(&sequence, m.data() + 8, 8);
  return sequence;
}

/// A Queue<Message> that also tells how often a dead lock holder was recovered from.
class InspectedQueue : public Queue<Message> {
 public:
  using Queue<Message>::Queue;
  std::uint64_t recoveries() const { return byte_queue().owner_died_recoveries(); }
};

/// Forks a child that runs `body` and _exits: 0 when it returned, 1 when it threw. No
/// destructors or atexit handlers of the test binary run in the child.
template <class F>
pid_t fork_child(F&& body) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    int code = 0;
    try {
      body();
    } catch (...) {
      code = 1;
    }
    ::_exit(code);
  }
  return pid;
}

int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

/// Burns a random few microseconds so that a kill lands at varied points of the peer's work.
void jitter(std::mt19937_64& rng, unsigned most) {
  const unsigned spins = static_cast<unsigned>(rng() % most);
  for (unsigned i = 0; i < spins; ++i) mproc::detail::cpu_relax();
}

}  // namespace

TEST_F(queue_test, items_come_out_in_the_order_one_producer_put_them) {
  Queue<int> q;
  Process producer(
      [](Queue<int> q) {
        for (int i = 0; i < 20000; ++i) q.put(i);
      },
      q);
  producer.start();
  for (int i = 0; i < 20000; ++i) ASSERT_EQ(q.get(hang_guard), i);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST_F(queue_test, every_item_is_got_exactly_once_with_many_producers_and_consumers) {
  constexpr int producers = 3, consumers = 3, per_producer = 3000;
  // Small limits, so that producers block both by count and by bytes.
  Queue<Item> q(QueueOptions{.maxsize = 64, .capacity_bytes = 2048});
  Queue<std::vector<int>> results;

  std::vector<Process> processes;
  for (int p = 0; p < producers; ++p)
    processes.emplace_back(
        [q, p]() mutable {
          for (int i = 0; i < per_producer; ++i) q.put(Item{p, i, text_for(p, i)});
        });
  for (int c = 0; c < consumers; ++c)
    processes.emplace_back([q, results]() mutable {
      std::vector<int> got;
      for (;;) {
        Item item = q.get();
        if (item.producer < 0) break;  // the sentinel
        if (item.text != text_for(item.producer, item.index))
          throw std::runtime_error("wrong text: " + item.text);
        got.push_back(item.producer * per_producer + item.index);
      }
      results.put(got);
    });
  for (auto& p : processes) p.start();
  for (int p = 0; p < producers; ++p) processes[p].join();
  for (int c = 0; c < consumers; ++c) q.put(Item{-1, 0, ""});

  std::vector<int> all;
  for (int c = 0; c < consumers; ++c) {
    std::vector<int> got = results.get(hang_guard);
    // One producer's items reach one consumer in the order they were put.
    std::vector<int> last(producers, -1);
    for (int id : got) {
      EXPECT_GT(id % per_producer, last[id / per_producer]);
      last[id / per_producer] = id % per_producer;
    }
    all.insert(all.end(), got.begin(), got.end());
  }
  for (auto& p : processes) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0) << p.name();
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), std::size_t{producers * per_producer});
  for (int i = 0; i < producers * per_producer; ++i) ASSERT_EQ(all[i], i);
  EXPECT_TRUE(q.empty());
}

TEST_F(queue_test, put_on_a_full_queue_waits_until_a_get_makes_room) {
  Queue<int> q(2);
  Queue<int> done;
  q.put(1);
  q.put(2);
  EXPECT_TRUE(q.full());
  Process producer(
      [](Queue<int> q, Queue<int> done) {
        q.put(3);  // waits: the queue holds maxsize items
        done.put(0);
      },
      q, done);
  producer.start();
  // The put cannot have finished: nothing has left the queue yet.
  EXPECT_FALSE(done.try_get().has_value());
  EXPECT_EQ(q.get(hang_guard), 1);
  EXPECT_EQ(done.get(hang_guard), 0);
  EXPECT_EQ(q.get(hang_guard), 2);
  EXPECT_EQ(q.get(hang_guard), 3);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_F(queue_test, put_waits_while_the_ring_has_no_room_for_the_bytes) {
  // 64 bytes of ring: one 40-byte item takes 48 of them, so a second one must wait.
  Queue<std::string> q(QueueOptions{.maxsize = 0, .capacity_bytes = 64});
  Queue<int> done;
  const std::string a(40, 'a'), b(40, 'b');
  q.put(a);
  EXPECT_FALSE(q.try_put(b));
  EXPECT_FALSE(q.full());  // full() counts items, not bytes
  Process producer(
      [&b](Queue<std::string> q, Queue<int> done) {
        q.put(b);
        done.put(0);
      },
      q, done);
  producer.start();
  EXPECT_FALSE(done.try_get().has_value());
  EXPECT_EQ(q.get(hang_guard), a);
  EXPECT_EQ(done.get(hang_guard), 0);
  EXPECT_EQ(q.get(hang_guard), b);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

TEST_F(queue_test, timeouts_throw_empty_and_full_and_try_forms_report_instead) {
  Queue<int> q(1);
  EXPECT_THROW(q.get(10ms), mproc::Empty);
  EXPECT_FALSE(q.try_get().has_value());
  EXPECT_THROW(q.get(0s), mproc::Empty);
  EXPECT_THROW(q.get(-5s), mproc::Empty);  // negative: as zero
  EXPECT_TRUE(q.try_put(1));
  EXPECT_THROW(q.put(2, 10ms), mproc::Full);
  EXPECT_FALSE(q.try_put(2));
  EXPECT_EQ(q.get(std::chrono::hours::max()), 1);  // a huge timeout does not overflow
  q.put(4, 10ms);
  EXPECT_EQ(q.try_get(), 4);
}

TEST_F(queue_test, a_getter_sleeping_in_another_process_is_woken_by_put) {
  Queue<std::string> requests, replies;
  Process echo(
      [](Queue<std::string> requests, Queue<std::string> replies) {
        for (std::string s; (s = requests.get()) != "stop";) replies.put(s + "!");
      },
      requests, replies);
  echo.start();
  for (int i = 0; i < 200; ++i) {
    requests.put(std::to_string(i));
    ASSERT_EQ(replies.get(hang_guard), std::to_string(i) + "!");
  }
  requests.put("stop");
  echo.join();
  EXPECT_EQ(echo.exitcode(), 0);
}

TEST_F(queue_test, qsize_empty_and_full_follow_the_items) {
  Queue<int> q(3);
  EXPECT_EQ(q.maxsize(), 3u);
  EXPECT_EQ(q.capacity_bytes(), mproc::default_queue_capacity);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  EXPECT_EQ(q.qsize(), 0u);
  Process producer([](Queue<int> q) { q.put(1), q.put(2), q.put(3); }, q);
  producer.start();
  producer.join();
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_TRUE(q.full());
  EXPECT_FALSE(q.empty());
  (void)q.get();
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_FALSE(q.full());

  Queue<int> unbounded;
  for (int i = 0; i < 1000; ++i) unbounded.put(i);
  EXPECT_FALSE(unbounded.full());
  EXPECT_EQ(unbounded.qsize(), 1000u);
}

TEST_F(queue_test, join_waits_for_task_done_from_another_process) {
  JoinableQueue<int> q;
  Queue<int> sums;
  for (int i = 1; i <= 5; ++i) q.put(i);
  EXPECT_FALSE(q.join(0s));
  Process consumer(
      [](JoinableQueue<int> q, Queue<int> sums) {
        int sum = 0;
        for (int i = 0; i < 5; ++i) {
          sum += q.get();
          q.task_done();
        }
        sums.put(sum);
      },
      q, sums);
  consumer.start();
  EXPECT_TRUE(q.join(hang_guard));
  EXPECT_EQ(sums.get(hang_guard), 15);
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
  q.join();  // nothing unfinished: returns at once
  EXPECT_THROW(q.task_done(), std::logic_error);
}

TEST_F(queue_test, join_with_timeout_returns_false_while_a_task_is_unfinished) {
  JoinableQueue<int> q;
  q.put(7);
  EXPECT_EQ(q.get(), 7);
  EXPECT_FALSE(q.join(20ms));
  q.task_done();
  EXPECT_TRUE(q.join(0s));
}

TEST_F(queue_test, an_item_larger_than_the_ring_is_refused) {
  Queue<std::string> q(QueueOptions{.maxsize = 0, .capacity_bytes = 1024});
  try {
    q.put(std::string(2000, 'x'));
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("message of 2000 bytes exceeds the queue's capacity of 1024"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(q.try_put(std::string(1020, 'x')), std::invalid_argument);  // 8 bytes of framing
  q.put(std::string(1016, 'y'));  // exactly the whole ring
  EXPECT_EQ(q.get(), std::string(1016, 'y'));
  EXPECT_TRUE(q.empty());
}

TEST_F(queue_test, capacities_out_of_range_are_refused) {
  EXPECT_THROW(Queue<int>(QueueOptions{.maxsize = 0, .capacity_bytes = 8}), std::invalid_argument);
  EXPECT_THROW(Queue<int>(QueueOptions{.maxsize = 0, .capacity_bytes = std::size_t{1} << 50}),
               std::invalid_argument);
  Queue<int> odd(QueueOptions{.maxsize = 0, .capacity_bytes = 17});
  EXPECT_EQ(odd.capacity_bytes(), 24u);  // rounded up to 8
}

TEST_F(queue_test, a_closed_handle_refuses_put_and_get_but_others_go_on) {
  Queue<int> q;
  q.put(1);
  Queue<int> copy_in_this_process = q;
  // A child forked before close() has its own handle (a copy of this process's memory).
  Process other([](Queue<int> q) { q.put(2); }, q);
  other.start();
  q.close();
  EXPECT_THROW(q.put(3), std::logic_error);
  EXPECT_THROW((void)q.get(), std::logic_error);
  EXPECT_THROW((void)copy_in_this_process.try_get(), std::logic_error);  // copies share close()
  other.join();
  EXPECT_EQ(other.exitcode(), 0);
  EXPECT_EQ(q.qsize(), 2u);
}

TEST_F(queue_test, simple_queue_carries_items_across_processes) {
  SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  Process producer(
      [](SimpleQueue<std::string> q) {
        q.put("a");
        q.put("b", 60s);
      },
      q);
  producer.start();
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(hang_guard), "b");
  EXPECT_THROW(q.get(1ms), mproc::Empty);
  producer.join();
  EXPECT_TRUE(q.empty());
}

TEST_F(queue_test, a_queue_travels_through_fd_serialization_and_works_in_a_fork_child) {
  using mproc::detail::FdSink;
  using mproc::detail::FdSource;
  Queue<std::string> q(5);
  FdSink sink;
  std::vector<std::byte> bytes;
  {
    mproc::detail::ScopedFdSink use(sink);
    bytes = mproc::serialize(q);
  }
  ASSERT_EQ(sink.fds().size(), 1u);
  std::vector<int> received;
  for (int fd : sink.fds()) received.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  FdSource source(std::move(received));
  Queue<std::string> decoded = [&] {
    mproc::detail::ScopedFdSource use(source);
    return mproc::deserialize<Queue<std::string>>(bytes);
  }();
  EXPECT_EQ(decoded.maxsize(), 5u);
  decoded.put("through the decoded handle");
  EXPECT_EQ(q.get(hang_guard), "through the decoded handle");

  Process child([](Queue<std::string> q) { q.put("from the child"); }, decoded);
  child.start();
  EXPECT_EQ(q.get(hang_guard), "from the child");
  child.join();
  EXPECT_EQ(child.exitcode(), 0);

  // Decoding it as a queue of another type is refused.
  FdSource again(std::vector<int>{::fcntl(sink.fds()[0], F_DUPFD_CLOEXEC, 0)});
  {
    mproc::detail::ScopedFdSource use(again);
    EXPECT_THROW(mproc::deserialize<Queue<int>>(bytes), mproc::SerializationError);
  }
  // Serializing where no descriptor can follow is refused.
  EXPECT_THROW(mproc::serialize(q), mproc::SerializationError);
}

TEST_F(queue_test, a_producer_killed_mid_put_never_tears_a_message_and_the_queue_goes_on) {
  constexpr int iterations = 1000;
  // Messages of up to 64 KiB in a 256 KiB ring: the producer fills the ring, blocks, and is
  // mostly copying a message when the parent's get lets it go on — which is when it is killed.
  InspectedQueue q(QueueOptions{.maxsize = 0, .capacity_bytes = 256 << 10});
  std::mt19937_64 rng(20240601);
  std::size_t checked = 0;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    const std::uint64_t seed = rng();
    const pid_t producer = fork_child([&] {
      std::mt19937_64 child_rng(seed);
      for (std::uint64_t n = 0;; ++n) q.put(make_message(n, child_rng() % (64 << 10), child_rng));
    });
    const int reads = static_cast<int>(rng() % 4);
    for (int i = 0; i < reads; ++i) {
      const Message m = q.get(hang_guard);
      ASSERT_TRUE(intact(m)) << "iteration " << iteration;
      ++checked;
    }
    jitter(rng, 20000);
    ::kill(producer, SIGKILL);
    const int status = reap(producer);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    while (std::optional<Message> m = q.try_get()) {
      ASSERT_TRUE(intact(*m)) << "iteration " << iteration;
      ++checked;
    }
    ASSERT_TRUE(q.empty());
    // The queue goes on: this process can put and get, and the next iteration's producer is
    // a new process whose messages this one gets.
    q.put(make_message(424242, 1000, rng));
    const Message m = q.get(hang_guard);
    ASSERT_TRUE(intact(m));
    ASSERT_EQ(sequence_of(m), 424242u);
  }
  const pid_t last = fork_child([&] { q.put(make_message(7, 1000, rng)); });
  const Message m = q.get(hang_guard);
  EXPECT_TRUE(intact(m) && sequence_of(m) == 7);
  EXPECT_EQ(reap(last), 0);
  // How often a kill landed while the producer held the lock (the EOWNERDEAD path): reported,
  // not asserted, since where a kill lands is chance.
  std::printf("[          ] %zu messages checked; %llu recoveries from a dead lock holder\n",
              checked, static_cast<unsigned long long>(q.recoveries()));
}

TEST_F(queue_test, a_consumer_killed_mid_get_loses_at_most_its_own_message) {
  constexpr int iterations = 200;
  constexpr std::uint64_t batch = 16;
  InspectedQueue q(QueueOptions{.maxsize = 0, .capacity_bytes = 1 << 20});
  Queue<std::uint64_t> acks;
  std::mt19937_64 rng(7);
  for (int iteration = 0; iteration < iterations; ++iteration) {
    for (std::uint64_t n = 0; n < batch; ++n) q.put(make_message(n, rng() % (64 << 10), rng));
    const pid_t consumer = fork_child([&] {
      for (;;) {
        const Message m = q.get();
        if (!intact(m)) ::_exit(3);  // a torn message
        acks.put(sequence_of(m));
      }
    });
    const std::uint64_t wait_for = rng() % 4;
    for (std::uint64_t i = 0; i < wait_for; ++i) ASSERT_EQ(acks.get(hang_guard), i);
    jitter(rng, 2000);
    ::kill(consumer, SIGKILL);
    const int status = reap(consumer);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "iteration " << iteration << ": status " << status;
    while (acks.try_get()) {
    }
    // What is left is intact and exactly the newest items: the consumer took a prefix (the
    // last of which may be lost with it), and nothing else went missing.
    std::vector<std::uint64_t> left;
    while (std::optional<Message> m = q.try_get()) {
      ASSERT_TRUE(intact(*m)) << "iteration " << iteration;
      left.push_back(sequence_of(*m));
    }
    for (std::size_t i = 0; i < left.size(); ++i) {
      ASSERT_EQ(left[i], batch - left.size() + i) << "iteration " << iteration;
    }
    ASSERT_LE(left.size(), batch - wait_for);
    ASSERT_TRUE(q.empty());
    // The next iteration's consumer is a new process that gets what this one puts.
  }
  q.put(make_message(99, 5000, rng));
  const pid_t last = fork_child([&] {
    const Message m = q.get();
    if (!intact(m) || sequence_of(m) != 99) ::_exit(4);
  });
  EXPECT_EQ(reap(last), 0);
  EXPECT_TRUE(q.empty());
  std::printf("[          ] %llu recoveries from a dead lock holder\n",
              static_cast<unsigned long long>(q.recoveries()));
}
