// tests/test_shared_memory.cpp — SharedMemory, Value and Array across real processes: sharing by
// fork and by serialization, named segments and their clean-up (also after SIGKILL), and the
// robust lock under contention and after its owner died.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/process.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared_memory.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Array;
using mproc::Process;
using mproc::ProcessOptions;
using mproc::SharedMemory;
using mproc::StartMethod;
using mproc::Value;

static_assert(mproc::Serializable<SharedMemory>);
static_assert(mproc::Serializable<Value<int>>);
static_assert(mproc::Serializable<Array<double>>);

namespace {

using shared_memory_test = mproc_test::LeakCheckedTest;

/// A unique name per test and process, so that parallel test runs never collide.
std::string unique_name(const char* what) {
  static int counter = 0;
  return "mproc-test-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(++counter);
}

bool shm_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

/// Waits (generously: only a hang guard) until `condition` holds.
template <class F>
bool eventually(F condition, std::chrono::seconds bound = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

/// A pipe for "ready" bytes between a child and the test.
struct Signal {
  int read_end = -1, write_end = -1;
  Signal() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_end = fds[0];
    write_end = fds[1];
  }
  ~Signal() {
    ::close(read_end);
    ::close(write_end);
  }
  void notify() const {
    const char byte = 1;
    if (::write(write_end, &byte, 1) != 1) std::abort();
  }
  /// True when a byte arrived within the (generous) bound.
  bool wait(std::chrono::milliseconds bound = 60s) const {
    pollfd p{read_end, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(bound.count())) != 1) return false;
    char byte = 0;
    return ::read(read_end, &byte, 1) == 1;
  }
};

[[noreturn]] void sleep_forever() {
  for (;;) ::pause();
}

/// Serializes `value` the way a Process argument travels, and decodes it with the descriptors.
template <class T>
T round_trip(const T& value) {
  mproc::detail::FdSink sink;
  std::vector<std::byte> bytes;
  {
    mproc::detail::ScopedFdSink use(sink);
    bytes = mproc::serialize(value);
  }
  std::vector<int> fds;
  for (int fd : sink.fds()) fds.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  mproc::detail::FdSource source(std::move(fds));
  mproc::detail::ScopedFdSource use(source);
  return mproc::deserialize<T>(bytes);
}

}  // namespace

// --- SharedMemory: anonymous -------------------------------------------------------------------

TEST_F(shared_memory_test, anonymous_segment_is_shared_with_a_fork_child) {
  auto memory = SharedMemory::create(4096);
  EXPECT_EQ(memory.size(), 4096u);
  EXPECT_TRUE(memory.name().empty());
  EXPECT_TRUE(std::ranges::all_of(memory.bytes(), [](std::byte b) { return b == std::byte{0}; }));
  Process child([memory] {
    for (std::size_t i = 0; i < memory.size(); ++i) memory.data()[i] = std::byte(i % 251);
  });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  for (std::size_t i = 0; i < memory.size(); ++i) ASSERT_EQ(memory.data()[i], std::byte(i % 251));
}

TEST_F(shared_memory_test, copies_share_one_mapping) {
  auto memory = SharedMemory::create(100);
  SharedMemory copy = memory;
  EXPECT_EQ(copy.data(), memory.data());
  copy.bytes()[99] = std::byte{7};
  memory = SharedMemory();
  EXPECT_EQ(copy.bytes()[99], std::byte{7});
}

TEST_F(shared_memory_test, a_128_mib_segment_filled_by_a_child_is_read_by_the_parent) {
  constexpr std::size_t size = std::size_t{128} << 20;
  auto memory = SharedMemory::create(size);
  ASSERT_EQ(memory.size(), size);
  Process child([memory] {
    // One pattern byte per 4 KiB page, so that a page mapped from the wrong place shows.
    for (std::size_t page = 0; page < size / 4096; ++page)
      std::memset(memory.data() + page * 4096, static_cast<int>(page % 253) + 1, 4096);
  });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  ASSERT_EQ(memory.size(), size);
  for (std::size_t page = 0; page < size / 4096; ++page) {
    const auto expected = std::byte(page % 253 + 1);
    const std::byte* p = memory.data() + page * 4096;
    ASSERT_EQ(p[0], expected) << "page " << page;
    ASSERT_EQ(p[4095], expected) << "page " << page;
    ASSERT_TRUE(std::all_of(p, p + 4096, [&](std::byte b) { return b == expected; }))
        << "page " << page;
  }
}

TEST_F(shared_memory_test, size_zero_or_absurd_is_an_invalid_argument) {
  EXPECT_THROW(SharedMemory::create(0), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(std::size_t{1} << 41), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(0, unique_name("zero")), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(std::size_t{1} << 41, unique_name("huge")),
               std::invalid_argument);
  EXPECT_THROW(Array<int>(std::size_t{0}), std::invalid_argument);
  EXPECT_THROW(Array<double>(std::size_t{1} << 40), std::invalid_argument);
}

TEST_F(shared_memory_test, an_empty_handle_has_no_bytes) {
  SharedMemory memory;
  EXPECT_FALSE(memory);
  EXPECT_EQ(memory.size(), 0u);
  EXPECT_EQ(memory.data(), nullptr);
  EXPECT_TRUE(memory.name().empty());
  EXPECT_FALSE(round_trip(memory));
  Value<int> value;
  EXPECT_FALSE(value);
  EXPECT_THROW(value.get_lock(), std::logic_error);
  EXPECT_FALSE(round_trip(value));
  Array<int> array;
  EXPECT_EQ(array.size(), 0u);
  EXPECT_THROW(array.get_lock(), std::logic_error);
}

// --- SharedMemory: named -----------------------------------------------------------------------

TEST_F(shared_memory_test, named_segment_has_mode_0600_and_a_name_without_slash) {
  const std::string name = unique_name("mode");
  auto memory = SharedMemory::create(1000, "/" + name);
  EXPECT_EQ(memory.name(), name);
  EXPECT_EQ(memory.size(), 1000u);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::getuid());
}

TEST_F(shared_memory_test, named_segment_is_attached_from_a_child) {
  const std::string name = unique_name("attach");
  auto memory = SharedMemory::create(64, name);
  Process child([name] {
    auto attached = SharedMemory::attach(name);
    if (attached.size() != 64) std::exit(2);
    std::memcpy(attached.data(), "hello from the child", 21);
  });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(memory.data()), "hello from the child");
  EXPECT_TRUE(shm_exists(name));  // attaching handles never unlink
}

TEST_F(shared_memory_test, named_segment_created_by_a_child_is_attached_by_the_parent) {
  const std::string name = unique_name("child-created");
  Signal created, done;
  Process child([&] {
    auto memory = SharedMemory::create(32, name);
    std::memcpy(memory.data(), "made by the child", 18);
    created.notify();
    if (!done.wait()) std::exit(2);
    // Exits (with _exit, so without destroying `memory`): the tracker unlinks the name.
  });
  child.start();
  ASSERT_TRUE(created.wait());
  {
    auto attached = SharedMemory::attach(name);
    EXPECT_EQ(attached.size(), 32u);
    EXPECT_STREQ(reinterpret_cast<const char*>(attached.data()), "made by the child");
    EXPECT_TRUE(attached.name() == name);
  }
  done.notify();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_TRUE(eventually([&] { return !shm_exists(name); })) << name << " was not unlinked";
}

TEST_F(shared_memory_test, duplicate_name_is_an_error) {
  const std::string name = unique_name("duplicate");
  auto memory = SharedMemory::create(10, name);
  try {
    SharedMemory::create(10, name);
    FAIL() << "a second segment with the same name was created";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::file_exists);
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  EXPECT_TRUE(shm_exists(name));  // the failed attempt left the first segment alone
}

TEST_F(shared_memory_test, attach_to_a_missing_name_is_an_error) {
  const std::string name = unique_name("missing");
  try {
    SharedMemory::attach(name);
    FAIL() << "attached a segment that does not exist";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST_F(shared_memory_test, malformed_names_are_invalid_arguments) {
  EXPECT_THROW(SharedMemory::create(10, ""), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(10, "/"), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(10, "a/b"), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(10, std::string(300, 'x')), std::invalid_argument);
  EXPECT_THROW(SharedMemory::attach(".."), std::invalid_argument);
}

TEST_F(shared_memory_test, creator_destroying_its_last_handle_unlinks_the_name) {
  const std::string name = unique_name("destroy");
  {
    auto memory = SharedMemory::create(10, name);
    SharedMemory copy = memory;
    memory = SharedMemory();
    EXPECT_TRUE(shm_exists(name));  // a copy is still alive
    // While a named segment exists, exactly one helper (the tracker) runs.
    EXPECT_EQ(mproc_test::descendants().size(), 1u);
  }
  EXPECT_FALSE(shm_exists(name));
  // The tracker stopped with the last segment and was reaped (no zombie either).
  EXPECT_TRUE(mproc_test::descendants().empty());
}

TEST_F(shared_memory_test, a_forked_child_dropping_its_copy_does_not_unlink) {
  const std::string name = unique_name("forked-copy");
  auto memory = SharedMemory::create(10, name);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    { SharedMemory gone = std::move(memory); }  // the child's last copy of the state
    ::_exit(shm_exists(name) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child unlinked the name";
  EXPECT_TRUE(shm_exists(name));
}

TEST_F(shared_memory_test, creator_killed_by_sigkill_still_has_its_segment_unlinked) {
  const std::string name = unique_name("sigkill");
  Signal created;
  Process child([&] {
    auto memory = SharedMemory::create(1 << 20, name);
    created.notify();
    sleep_forever();
  });
  child.start();
  ASSERT_TRUE(created.wait());
  ASSERT_TRUE(shm_exists(name));
  // The child's tracker, found before the child dies (then it is reparented).
  const auto trackers = mproc_test::children_of(child.pid());
  ASSERT_EQ(trackers.size(), 1u);
  const int tracker_fd = static_cast<int>(::syscall(SYS_pidfd_open, trackers[0], 0));
  ASSERT_GE(tracker_fd, 0);
  // A Ctrl-C or a polite SIGTERM to the tracker must not stop it from cleaning up.
  ::kill(trackers[0], SIGINT);
  ::kill(trackers[0], SIGTERM);
  child.kill();
  child.join();
  EXPECT_EQ(child.exitcode(), -SIGKILL);
  EXPECT_TRUE(eventually([&] { return !shm_exists(name); })) << name << " was not unlinked";
  // The tracker exits once it has cleaned up.
  pollfd p{tracker_fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 60'000), 1) << "the tracker is still running";
  ::close(tracker_fd);
}

TEST_F(shared_memory_test, a_killed_tracker_is_replaced_and_the_new_one_cleans_up_everything) {
  const std::string first = unique_name("first"), second = unique_name("second");
  Signal created, go_on;
  Process child([&] {
    auto a = SharedMemory::create(100, first);
    created.notify();
    if (!go_on.wait()) std::exit(2);
    auto b = SharedMemory::create(100, second);  // finds its tracker dead: starts another
    created.notify();
    sleep_forever();
  });
  child.start();
  ASSERT_TRUE(created.wait());
  auto trackers = mproc_test::children_of(child.pid());
  ASSERT_EQ(trackers.size(), 1u);
  const int tracker_fd = static_cast<int>(::syscall(SYS_pidfd_open, trackers[0], 0));
  ASSERT_GE(tracker_fd, 0);
  ::kill(trackers[0], SIGKILL);
  pollfd p{tracker_fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 60'000), 1);
  ::close(tracker_fd);
  go_on.notify();
  ASSERT_TRUE(created.wait());
  child.kill();
  child.join();
  EXPECT_TRUE(eventually([&] { return !shm_exists(first) && !shm_exists(second); }))
      << first << " or " << second << " was not unlinked";
}

// --- Serialization ----------------------------------------------------------------------------

TEST_F(shared_memory_test, serialized_anonymous_segment_maps_the_same_bytes_across_fork) {
  auto memory = SharedMemory::create(256);
  SharedMemory decoded = round_trip(memory);
  ASSERT_EQ(decoded.size(), 256u);
  EXPECT_NE(decoded.native_handle(), memory.native_handle());
  memory.bytes()[0] = std::byte{42};
  EXPECT_EQ(decoded.bytes()[0], std::byte{42});
  Process child([decoded] { decoded.bytes()[255] = std::byte{9}; });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(memory.bytes()[255], std::byte{9});
}

TEST_F(shared_memory_test, serialized_named_segment_keeps_its_name_and_never_unlinks) {
  const std::string name = unique_name("serialized");
  auto memory = SharedMemory::create(16, name);
  {
    SharedMemory decoded = round_trip(memory);
    EXPECT_EQ(decoded.name(), name);
    decoded.bytes()[3] = std::byte{3};
  }
  EXPECT_TRUE(shm_exists(name));
  EXPECT_EQ(memory.bytes()[3], std::byte{3});
}

TEST_F(shared_memory_test, serializing_without_a_descriptor_sink_is_a_serialization_error) {
  auto memory = SharedMemory::create(16);
  EXPECT_THROW(mproc::serialize(memory), mproc::SerializationError);
  Value<int> value(1);
  EXPECT_THROW(mproc::serialize(value), mproc::SerializationError);
}

TEST_F(shared_memory_test, value_and_array_round_trip_and_stay_shared_across_fork) {
  Value<double> value(1.5);
  Array<int> array{1, 2, 3, 4};
  auto value_copy = round_trip(value);
  auto array_copy = round_trip(array);
  EXPECT_EQ(value_copy.get(), 1.5);
  ASSERT_EQ(array_copy.size(), 4u);
  EXPECT_EQ(array_copy.to_vector(), (std::vector<int>{1, 2, 3, 4}));
  Process child([value_copy, array_copy] {
    value_copy.set(2.5);
    array_copy.with_lock([](std::span<int> elements) {
      for (int& e : elements) e *= 10;
    });
  });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(value.get(), 2.5);
  EXPECT_EQ(array.to_vector(), (std::vector<int>{10, 20, 30, 40}));
  // The lock is the same one too: held through one handle, it is busy through the other
  // (from another process, since it is recursive within a thread).
  std::scoped_lock hold(value.get_lock());
  Process probe([value_copy] { std::exit(value_copy.get_lock().try_lock() ? 1 : 0); });
  probe.start();
  probe.join();
  EXPECT_EQ(probe.exitcode(), 0);
}

TEST_F(shared_memory_test, a_decoded_array_must_match_its_segment) {
  Array<int> array(4);
  mproc::detail::FdSink sink;
  std::vector<std::byte> bytes;
  {
    mproc::detail::ScopedFdSink use(sink);
    bytes = mproc::serialize(array);
  }
  // Claim more elements than the segment holds: the last 8 bytes are the element count.
  const std::uint64_t lie = 1'000'000;
  std::memcpy(bytes.data() + bytes.size() - sizeof lie, &lie, sizeof lie);
  std::vector<int> fds{::fcntl(sink.fds()[0], F_DUPFD_CLOEXEC, 0)};
  mproc::detail::FdSource source(std::move(fds));
  mproc::detail::ScopedFdSource use(source);
  EXPECT_THROW(mproc::deserialize<Array<int>>(bytes), mproc::SerializationError);
}

void add_one_to(Value<int> value, Array<int> array) {
  value.with_lock([](int& v) { ++v; });
  std::scoped_lock hold(array.get_lock());
  for (int& e : array) ++e;
}

TEST_F(shared_memory_test, value_and_array_are_process_arguments_under_every_start_method) {
  Value<int> value(0);
  Array<int> array(3);
  for (StartMethod method : {StartMethod::fork, StartMethod::forkserver, StartMethod::spawn}) {
    Process child(ProcessOptions{.start_method = method}, &add_one_to, value, array);
    child.start();
    child.join();
    EXPECT_EQ(child.exitcode(), 0) << mproc::to_string(method);
  }
  EXPECT_EQ(value.get(), 3);
  EXPECT_EQ(array.to_vector(), (std::vector<int>{3, 3, 3}));
}

// --- Value, Array and their lock ---------------------------------------------------------------

TEST_F(shared_memory_test, value_counter_incremented_by_4_processes_sums_exactly) {
  constexpr int processes = 4, increments = 5000;
  Value<long> counter(0);
  std::vector<Process> children;
  for (int i = 0; i < processes; ++i)
    children.emplace_back([counter, i] {
      for (int n = 0; n < increments; ++n) {
        if (i % 2 == 0) {
          counter.with_lock([](long& v) { ++v; });
        } else {
          std::scoped_lock hold(counter.get_lock());
          *counter = *counter + 1;
        }
      }
    });
  for (auto& child : children) child.start();
  for (auto& child : children) {
    child.join();
    EXPECT_EQ(child.exitcode(), 0);
  }
  EXPECT_EQ(counter.get(), long{processes} * increments);
}

TEST_F(shared_memory_test, array_updated_by_4_processes_under_its_lock_sums_exactly) {
  constexpr int processes = 4, rounds = 2000;
  Array<std::int64_t> array(16);
  std::vector<Process> children;
  for (int i = 0; i < processes; ++i)
    children.emplace_back([array] {
      for (int n = 0; n < rounds; ++n) {
        std::unique_lock hold(array.get_lock());
        // Read-modify-write across every element: any lost update breaks the sums below.
        for (std::size_t k = 0; k < array.size(); ++k) array[k] = array[k] + std::int64_t(k) + 1;
      }
    });
  for (auto& child : children) child.start();
  for (auto& child : children) {
    child.join();
    EXPECT_EQ(child.exitcode(), 0);
  }
  for (std::size_t k = 0; k < array.size(); ++k)
    EXPECT_EQ(array[k], std::int64_t(processes) * rounds * (std::int64_t(k) + 1)) << k;
}

TEST_F(shared_memory_test, array_is_built_from_a_span_and_checks_at) {
  const std::vector<double> initial{0.5, 1.5, 2.5};
  Array<double> array(initial);  // a std::span<const double> of it
  EXPECT_EQ(array.size(), 3u);
  EXPECT_EQ(array.to_vector(), initial);
  EXPECT_EQ(array.at(2), 2.5);
  EXPECT_THROW(array.at(3), std::out_of_range);
  Array<double> copy = array;
  copy[1] = 7;
  EXPECT_EQ(array[1], 7);
  EXPECT_EQ(&copy.get_lock(), &array.get_lock());
}

TEST_F(shared_memory_test, the_lock_is_recursive_so_get_and_set_work_inside_it) {
  Value<int> value(5);
  std::scoped_lock hold(value.get_lock());
  value.set(value.get() + 1);
  EXPECT_TRUE(value.get_lock().try_lock());
  value.get_lock().unlock();
  EXPECT_EQ(*value, 6);
  EXPECT_FALSE(value.get_lock().owner_died());
}

TEST_F(shared_memory_test, unlock_by_a_thread_that_does_not_hold_the_lock_throws) {
  Value<int> value(0);
  EXPECT_THROW(value.get_lock().unlock(), std::system_error);
  value.get_lock().lock();
  std::thread other([&] { EXPECT_THROW(value.get_lock().unlock(), std::system_error); });
  other.join();
  value.get_lock().unlock();
}

TEST_F(shared_memory_test, a_timed_wait_for_the_lock_gets_it_with_owner_died_when_the_holder_dies) {
  // The holder dies while this thread is already asleep in the timed lock (it waits until the
  // mutex word shows a waiter), so the timed path itself must hand over EOWNERDEAD.
  Value<int> value(0);
  Signal locked;
  // The segment (page-aligned) opens with the lock's header, whose first member is the mutex;
  // the value itself lies within the first page.
  auto* mutex = reinterpret_cast<pthread_mutex_t*>(
      reinterpret_cast<std::uintptr_t>(&*value) & ~std::uintptr_t{4095});
  Process holder([&] {
    value.get_lock().lock();
    locked.notify();
    // FUTEX_WAITERS (bit 31 of the lock word) is set once a waiter sleeps on the mutex.
    auto* word = reinterpret_cast<std::atomic<unsigned>*>(&mutex->__data.__lock);
    while ((word->load() & 0x80000000u) == 0) ::sched_yield();
    ::_exit(0);  // dies holding it: the kernel's robust list hands it on
  });
  holder.start();
  ASSERT_TRUE(locked.wait());
  ASSERT_TRUE(value.get_lock().try_lock_for(60s));
  EXPECT_TRUE(value.get_lock().owner_died());
  value.get_lock().unlock();
  holder.join();
}

TEST_F(shared_memory_test, lock_held_by_a_killed_process_passes_on_with_owner_died) {
  Value<int> value(0);
  Signal locked;
  Process holder([&] {
    value.get_lock().lock();
    *value = 99;  // half of an update the holder never finishes
    locked.notify();
    sleep_forever();
  });
  holder.start();
  ASSERT_TRUE(locked.wait());
  EXPECT_FALSE(value.get_lock().try_lock());
  EXPECT_FALSE(value.get_lock().try_lock_for(20ms));  // only the outcome is asserted
  holder.kill();
  holder.join();
  ASSERT_TRUE(value.get_lock().try_lock_for(60s));
  EXPECT_TRUE(value.get_lock().owner_died());
  EXPECT_EQ(*value, 99);
  value.get_lock().unlock();
  // The next owner finds it in order.
  std::scoped_lock hold(value.get_lock());
  EXPECT_FALSE(value.get_lock().owner_died());
}

struct Point {
  double x, y;
  int tag;
};

TEST_F(shared_memory_test, value_of_a_struct_is_shared_field_by_field) {
  Value<Point> point(Point{1, 2, 3});
  Process child([point] {
    std::scoped_lock hold(point.get_lock());
    point->x = 10;
    point->tag = 30;
  });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  const Point p = point.get();
  EXPECT_EQ(p.x, 10);
  EXPECT_EQ(p.y, 2);
  EXPECT_EQ(p.tag, 30);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(&point.value()) % alignof(Point), 0u);
}
