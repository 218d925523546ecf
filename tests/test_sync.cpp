// tests/test_sync.cpp — Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier
// used across forked processes: exclusion, timeouts, a holder or a party killed with SIGKILL,
// misuse errors, and handles carried through serialization (descriptors via FdSink/FdSource).
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/serialize.hpp"
#include "mproc/sync.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Barrier;
using mproc::BoundedSemaphore;
using mproc::Condition;
using mproc::Event;
using mproc::Lock;
using mproc::Process;
using mproc::RLock;
using mproc::Semaphore;

namespace {

using sync_test = mproc_test::LeakCheckedTest;

/// A generous hang guard: a broken primitive fails the test instead of hanging it.
constexpr auto hang_guard = 60s;

/// A T in anonymous shared memory (MAP_SHARED before fork): the tests' scratch space, so the
/// primitives under test are not also the means of checking them.
template <class T>
class SharedScratch {
 public:
  SharedScratch() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    value_ = new (p) T{};
  }
  ~SharedScratch() { ::munmap(value_, sizeof(T)); }
  SharedScratch(const SharedScratch&) = delete;
  SharedScratch& operator=(const SharedScratch&) = delete;
  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }
  T* get() const { return value_; }

 private:
  T* value_;
};

/// In a child: ends it with `code` unless `ok`, so the parent's exitcode() check names the step.
void require(bool ok, int code) {
  if (!ok) ::_exit(code);
}

/// Polls `condition` (a state another process is about to reach) with a hang guard.
template <class F>
bool eventually(F condition) {
  const auto deadline = std::chrono::steady_clock::now() + hang_guard;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::optional<int> run_child(std::function<void()> body) {
  Process child(std::move(body));
  child.start();
  child.join();
  return child.exitcode();
}

/// Encodes `value` with its descriptors collected, and decodes it back as another process
/// receiving them would: the copy maps the same shared segment through new descriptors.
template <class T>
T round_trip(const T& value) {
  mproc::detail::FdSink sink;
  std::vector<std::byte> bytes;
  {
    mproc::detail::ScopedFdSink use(sink);
    bytes = mproc::serialize(value);
  }
  std::vector<int> received;
  for (int fd : sink.fds()) received.push_back(::dup(fd));
  mproc::detail::FdSource source(std::move(received));
  mproc::detail::ScopedFdSource use(source);
  return mproc::deserialize<T>(bytes);
}

}  // namespace

static_assert(mproc::Serializable<Lock> && mproc::Serializable<RLock> &&
              mproc::Serializable<Semaphore> && mproc::Serializable<BoundedSemaphore> &&
              mproc::Serializable<Event> && mproc::Serializable<Condition> &&
              mproc::Serializable<Barrier>);

// ---------------------------------------------------------------------------------------------
// Lock

TEST_F(sync_test, lock_excludes_other_processes_and_try_lock_for_times_out) {
  Lock lock;
  lock.lock();
  auto code = run_child([lock]() {
    require(!lock.try_lock(), 2);
    require(!lock.try_lock_for(20ms), 3);
    require(!lock.try_lock_until(std::chrono::system_clock::now() + 10ms), 4);
  });
  EXPECT_EQ(code, 0);
  lock.unlock();
  code = run_child([lock]() {
    require(lock.try_lock_for(hang_guard), 2);
    require(!lock.owner_died(), 3);
    lock.unlock();
  });
  EXPECT_EQ(code, 0);
}

TEST_F(sync_test, lock_keeps_a_shared_counter_consistent_across_processes) {
  constexpr int processes = 4, rounds = 2000;
  Lock lock;
  SharedScratch<long> counter;
  std::vector<Process> children;
  for (int i = 0; i < processes; ++i)
    children.emplace_back([lock, p = counter.get()]() {
      for (int r = 0; r < rounds; ++r) {
        std::scoped_lock hold(lock);
        const long seen = *static_cast<volatile long*>(p);  // a torn read-modify-write if unguarded
        *static_cast<volatile long*>(p) = seen + 1;
      }
    });
  for (auto& c : children) c.start();
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  EXPECT_EQ(*counter, processes * rounds);
}

TEST_F(sync_test, holder_killed_while_holding_hands_the_lock_on_with_owner_died) {
  Lock lock;
  auto code = run_child([lock]() {
    lock.lock();
    ::raise(SIGKILL);
  });
  EXPECT_EQ(code, -SIGKILL);
  ASSERT_TRUE(lock.try_lock_for(hang_guard));
  EXPECT_TRUE(lock.owner_died());
  lock.unlock();
  lock.lock();
  EXPECT_FALSE(lock.owner_died());
  lock.unlock();
}

TEST_F(sync_test, a_waiter_blocked_on_a_killed_holder_gets_the_lock) {
  Lock lock;
  Event locked;
  Process holder([lock, locked]() {
    lock.lock();
    locked.set();
    for (;;) ::pause();
  });
  holder.start();
  ASSERT_TRUE(locked.wait_for(hang_guard));
  Process waiter([lock]() {
    require(lock.try_lock_for(hang_guard), 2);
    require(lock.owner_died(), 3);
    lock.unlock();
  });
  waiter.start();
  holder.kill();
  holder.join();
  waiter.join();
  EXPECT_EQ(holder.exitcode(), -SIGKILL);
  EXPECT_EQ(waiter.exitcode(), 0);
}

TEST_F(sync_test, lock_refuses_unlock_by_a_non_holder_and_relock_by_its_holder) {
  Lock lock;
  EXPECT_THROW(lock.unlock(), std::logic_error);
  lock.lock();
  EXPECT_THROW(lock.lock(), std::logic_error);
  EXPECT_FALSE(lock.try_lock());
  std::thread other([&] { EXPECT_THROW(lock.unlock(), std::logic_error); });
  other.join();
  lock.release();
  EXPECT_TRUE(lock.acquire(1s));
  lock.release();
}

TEST_F(sync_test, scoped_lock_takes_two_locks_in_any_order_without_deadlock) {
  constexpr int rounds = 1000;
  Lock a, b;
  SharedScratch<long> counter;
  Process child([a, b, p = counter.get()]() {
    for (int r = 0; r < rounds; ++r) {
      std::scoped_lock hold(a, b);
      *static_cast<volatile long*>(p) = *static_cast<volatile long*>(p) + 1;
    }
  });
  child.start();
  for (int r = 0; r < rounds; ++r) {
    std::scoped_lock hold(b, a);
    *static_cast<volatile long*>(counter.get()) = *static_cast<volatile long*>(counter.get()) + 1;
  }
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_EQ(*counter, 2 * rounds);
  std::unique_lock<Lock> deferred(a, std::defer_lock);
  EXPECT_TRUE(deferred.try_lock_for(1s));
}

TEST_F(sync_test, lock_excludes_threads_of_one_process) {
  Lock lock;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, copy = lock]() {
      for (int r = 0; r < 2000; ++r) {
        std::scoped_lock hold(copy);
        ++counter;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 8000);
}

// ---------------------------------------------------------------------------------------------
// RLock

TEST_F(sync_test, rlock_is_recursive_for_its_holder_and_exclusive_for_others) {
  RLock lock;
  lock.lock();
  lock.lock();
  EXPECT_TRUE(lock.try_lock());
  EXPECT_TRUE(lock.try_lock_for(10ms));
  const auto others_cannot = [lock]() {
    require(!lock.try_lock(), 2);
    require(!lock.try_lock_for(10ms), 3);
  };
  EXPECT_EQ(run_child(others_cannot), 0);
  std::thread other([&] {
    EXPECT_FALSE(lock.try_lock());
    EXPECT_THROW(lock.unlock(), std::logic_error);
  });
  other.join();
  for (int i = 0; i < 3; ++i) lock.unlock();
  EXPECT_EQ(run_child(others_cannot), 0);
  lock.unlock();
  EXPECT_THROW(lock.unlock(), std::logic_error);
  EXPECT_EQ(run_child([lock]() {
              require(lock.try_lock(), 2);
              lock.unlock();
            }),
            0);
}

TEST_F(sync_test, rlock_holder_killed_at_depth_two_hands_it_on_at_depth_one) {
  RLock lock;
  EXPECT_EQ(run_child([lock]() {
              lock.lock();
              lock.lock();
              ::raise(SIGKILL);
            }),
            -SIGKILL);
  ASSERT_TRUE(lock.try_lock_for(hang_guard));
  EXPECT_TRUE(lock.owner_died());
  lock.lock();  // nested: not a new acquisition
  EXPECT_TRUE(lock.owner_died());
  lock.unlock();
  lock.unlock();  // free again: one level for the takeover, one for the nested lock
  EXPECT_EQ(run_child([lock]() {
              require(lock.try_lock(), 2);
              require(!lock.owner_died(), 3);
              lock.unlock();
            }),
            0);
}

// ---------------------------------------------------------------------------------------------
// Semaphore, BoundedSemaphore

TEST_F(sync_test, semaphore_limits_how_many_processes_are_inside_at_once) {
  struct Inside {
    std::atomic<int> now{0}, most{0};
  };
  Semaphore slots(2);
  SharedScratch<Inside> inside;
  std::vector<Process> children;
  for (int i = 0; i < 4; ++i)
    children.emplace_back([slots, p = inside.get()]() {
      for (int r = 0; r < 300; ++r) {
        require(slots.try_acquire_for(hang_guard), 2);
        const int n = ++p->now;
        int most = p->most.load();
        while (n > most && !p->most.compare_exchange_weak(most, n)) {
        }
        --p->now;
        slots.release();
      }
    });
  for (auto& c : children) c.start();
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  EXPECT_LE(inside->most.load(), 2);
  EXPECT_GE(inside->most.load(), 1);
  EXPECT_EQ(slots.get_value(), 2);
}

TEST_F(sync_test, semaphore_release_n_wakes_n_waiting_processes) {
  Semaphore gate(0);
  EXPECT_FALSE(gate.try_acquire());
  EXPECT_FALSE(gate.try_acquire_for(20ms));
  EXPECT_FALSE(gate.acquire(1ms));
  std::vector<Process> children;
  for (int i = 0; i < 3; ++i)
    children.emplace_back([gate]() { require(gate.try_acquire_for(hang_guard), 2); });
  for (auto& c : children) c.start();
  gate.release(3);
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  EXPECT_EQ(gate.get_value(), 0);
  EXPECT_THROW(gate.release(0), std::invalid_argument);
  EXPECT_THROW(Semaphore(-1), std::invalid_argument);
}

TEST_F(sync_test, bounded_semaphore_refuses_release_beyond_its_initial_value) {
  BoundedSemaphore bounded(2);
  EXPECT_THROW(bounded.release(), std::logic_error);
  bounded.acquire();
  EXPECT_THROW(bounded.release(2), std::logic_error);
  EXPECT_EQ(bounded.get_value(), 1);
  bounded.release();
  EXPECT_EQ(bounded.get_value(), 2);
  Semaphore sliced = bounded;  // the bound lives in shared memory
  EXPECT_THROW(sliced.release(), std::logic_error);
  EXPECT_EQ(run_child([bounded]() {
              bounded.acquire();
              bounded.release();
              try {
                bounded.release();
              } catch (const std::logic_error&) {
                ::_exit(0);
              }
              ::_exit(2);
            }),
            0);
  EXPECT_EQ(bounded.get_value(), 2);
}

// ---------------------------------------------------------------------------------------------
// Event

TEST_F(sync_test, event_wakes_waiting_processes_and_wait_for_times_out) {
  Event event;
  EXPECT_FALSE(event.is_set());
  EXPECT_FALSE(event.wait_for(20ms));
  EXPECT_FALSE(event.wait_until(std::chrono::steady_clock::now() + 1ms));
  std::vector<Process> children;
  for (int i = 0; i < 3; ++i)
    children.emplace_back([event]() {
      require(event.wait_for(hang_guard), 2);
      require(event.is_set(), 3);
    });
  for (auto& c : children) c.start();
  event.set();
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  event.wait();  // set: returns at once
  event.clear();
  EXPECT_FALSE(event.is_set());
  EXPECT_FALSE(event.wait_for(1ms));
}

// ---------------------------------------------------------------------------------------------
// Condition

TEST_F(sync_test, condition_passes_items_between_producer_and_consumer_processes) {
  struct Slot {
    int value = 0;
    bool full = false;
  };
  constexpr int items = 200;
  Condition cond;
  SharedScratch<Slot> slot;
  Process consumer([cond, p = slot.get()]() {
    for (int expected = 1; expected <= items; ++expected) {
      std::unique_lock hold(cond);
      require(cond.wait_for(hang_guard, [&] { return p->full; }), 2);
      require(p->value == expected, 3);
      p->full = false;
      hold.unlock();
      cond.notify_all();
    }
  });
  consumer.start();
  for (int i = 1; i <= items; ++i) {
    std::unique_lock hold(cond);
    ASSERT_TRUE(cond.wait_for(hang_guard, [&] { return !slot->full; }));
    slot->value = i;
    slot->full = true;
    hold.unlock();
    cond.notify();
  }
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
}

TEST_F(sync_test, condition_notify_all_wakes_every_waiting_process) {
  Condition cond;
  SharedScratch<std::atomic<int>> go;
  std::vector<Process> children;
  for (int i = 0; i < 3; ++i)
    children.emplace_back([cond, p = go.get()]() {
      std::unique_lock hold(cond);
      require(cond.wait_for(hang_guard, [&] { return p->load() == 1; }), 2);
      require(!cond.owner_died(), 3);
    });
  for (auto& c : children) c.start();
  {
    std::scoped_lock hold(cond);
    go->store(1);
  }
  cond.notify_all();
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
}

TEST_F(sync_test, condition_wait_times_out_holding_the_lock_and_requires_it) {
  Lock lock;
  Condition cond(lock);
  EXPECT_THROW(cond.wait_for(1ms), std::logic_error);
  cond.notify(3);  // no waiters: nothing happens
  EXPECT_THROW(cond.notify(-1), std::invalid_argument);
  std::unique_lock hold(cond);
  EXPECT_FALSE(cond.wait_for(20ms));
  EXPECT_FALSE(cond.wait_until(std::chrono::system_clock::now() + 1ms, [] { return false; }));
  EXPECT_TRUE(cond.wait_for(1ms, [] { return true; }));
  EXPECT_FALSE(lock.try_lock());  // held again after the timeouts, through the shared Lock
  EXPECT_EQ(run_child([lock]() { require(!lock.try_lock(), 2); }), 0);
  hold.unlock();
  EXPECT_TRUE(cond.get_lock().try_lock());
  lock.unlock();
}

TEST_F(sync_test, condition_waiter_takes_over_the_lock_of_a_killed_holder) {
  Condition cond;
  Event holding;
  Process holder([cond, holding]() {
    cond.lock();
    holding.set();
    for (;;) ::pause();
  });
  holder.start();
  ASSERT_TRUE(holding.wait_for(hang_guard));
  holder.kill();
  holder.join();
  std::unique_lock hold(cond);
  EXPECT_TRUE(cond.owner_died());
}

// ---------------------------------------------------------------------------------------------
// Barrier

TEST_F(sync_test, barrier_synchronizes_rounds_and_numbers_arrivals) {
  constexpr int parties = 4, rounds = 20;
  struct Seen {
    std::atomic<unsigned> indices[rounds];
    std::atomic<int> round_of[parties];
  };
  Barrier barrier(parties);
  EXPECT_EQ(barrier.parties(), std::size_t{parties});
  SharedScratch<Seen> seen;
  std::vector<Process> children;
  for (int me = 1; me < parties; ++me)
    children.emplace_back([barrier, me, p = seen.get()]() {
      for (int r = 0; r < rounds; ++r) {
        p->round_of[me] = r;
        const std::size_t index = barrier.arrive_and_wait_for(hang_guard);
        // Nobody passes round r before everyone has reached it.
        for (int other = 0; other < parties; ++other) require(p->round_of[other] >= r, 2);
        p->indices[r].fetch_or(1u << index);
      }
    });
  for (auto& c : children) c.start();
  for (int r = 0; r < rounds; ++r) {
    seen->round_of[0] = r;
    const std::size_t index = barrier.wait();
    ASSERT_LT(index, std::size_t{parties});
    seen->indices[r].fetch_or(1u << index);
  }
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  for (int r = 0; r < rounds; ++r) EXPECT_EQ(seen->indices[r].load(), 0xFu) << "round " << r;
  EXPECT_FALSE(barrier.broken());
  EXPECT_EQ(barrier.n_waiting(), 0u);
}

TEST_F(sync_test, barrier_timeout_breaks_it_until_reset) {
  Barrier barrier(2);
  EXPECT_THROW(barrier.arrive_and_wait_for(20ms), mproc::BrokenBarrier);
  EXPECT_TRUE(barrier.broken());
  EXPECT_THROW(barrier.arrive_and_wait_for(hang_guard), mproc::BrokenBarrier);
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
  Process child([barrier]() { barrier.arrive_and_wait_for(hang_guard); });
  child.start();
  EXPECT_NO_THROW(barrier.arrive_and_wait_for(hang_guard));
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST_F(sync_test, barrier_abort_breaks_it_for_waiting_processes) {
  Barrier barrier(3);
  Process child([barrier]() {
    try {
      barrier.arrive_and_wait_for(hang_guard);
    } catch (const mproc::BrokenBarrier&) {
      ::_exit(0);
    }
    ::_exit(2);
  });
  child.start();
  ASSERT_TRUE(eventually([&] { return barrier.n_waiting() == 1; }));
  barrier.abort();
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_TRUE(barrier.broken());
  EXPECT_EQ(barrier.n_waiting(), 0u);
}

TEST_F(sync_test, barrier_party_killed_while_waiting_breaks_it_for_the_others) {
  Barrier barrier(3);
  const auto expect_broken = [barrier]() {
    try {
      barrier.arrive_and_wait_for(hang_guard);
    } catch (const mproc::BrokenBarrier&) {
      ::_exit(0);
    }
    ::_exit(2);
  };
  Process survivor(expect_broken);
  Process victim(expect_broken);
  survivor.start();
  victim.start();
  ASSERT_TRUE(eventually([&] { return barrier.n_waiting() == 2; }));
  victim.kill();
  // Noticed without this process arriving or reaping the victim.
  survivor.join();
  EXPECT_EQ(survivor.exitcode(), 0);
  victim.join();
  EXPECT_EQ(victim.exitcode(), -SIGKILL);
  EXPECT_TRUE(barrier.broken());
  try {
    barrier.arrive_and_wait_for(hang_guard);
    ADD_FAILURE() << "arrived at a broken barrier";
  } catch (const mproc::BrokenBarrier& e) {
    EXPECT_NE(std::string(e.what()).find("SIGKILL"), std::string::npos) << e.what();
  }
}

TEST_F(sync_test, barrier_party_killed_between_rounds_breaks_the_next_round) {
  Barrier barrier(3);
  Process survivor([barrier]() {
    barrier.arrive_and_wait_for(hang_guard);
    try {
      barrier.arrive_and_wait_for(hang_guard);
    } catch (const mproc::BrokenBarrier&) {
      ::_exit(0);
    }
    ::_exit(2);
  });
  Process victim([barrier]() {
    barrier.arrive_and_wait_for(hang_guard);
    ::raise(SIGKILL);
  });
  survivor.start();
  victim.start();
  barrier.arrive_and_wait_for(hang_guard);
  // The victim never arrives at round two; it is a zombie until joined below.
  EXPECT_THROW(barrier.arrive_and_wait_for(hang_guard), mproc::BrokenBarrier);
  survivor.join();
  victim.join();
  EXPECT_EQ(survivor.exitcode(), 0);
  EXPECT_EQ(victim.exitcode(), -SIGKILL);
  barrier.reset();  // forgets the dead: the barrier works again
  Process next([barrier]() { barrier.arrive_and_wait_for(hang_guard); });
  Process other([barrier]() { barrier.arrive_and_wait_for(hang_guard); });
  next.start();
  other.start();
  EXPECT_NO_THROW(barrier.arrive_and_wait_for(hang_guard));
  next.join();
  other.join();
  EXPECT_EQ(next.exitcode(), 0);
  EXPECT_EQ(other.exitcode(), 0);
}

TEST_F(sync_test, barrier_party_that_finished_normally_may_be_replaced) {
  Barrier barrier(2);
  Process first([barrier]() { barrier.arrive_and_wait_for(hang_guard); });
  first.start();
  barrier.arrive_and_wait_for(hang_guard);
  pollfd ended{first.sentinel(), POLLIN, 0};  // ended with status 0, still a zombie
  ASSERT_EQ(::poll(&ended, 1, 60'000), 1);
  Process second([barrier]() { barrier.arrive_and_wait_for(hang_guard); });
  second.start();
  EXPECT_NO_THROW(barrier.arrive_and_wait_for(hang_guard));
  first.join();
  second.join();
  EXPECT_EQ(first.exitcode(), 0);
  EXPECT_EQ(second.exitcode(), 0);
  EXPECT_FALSE(barrier.broken());
}

TEST_F(sync_test, barrier_rejects_bad_party_counts_and_empty_handles) {
  EXPECT_THROW(Barrier(0), std::invalid_argument);
  EXPECT_THROW(Barrier(100000), std::invalid_argument);
  Barrier single(1);
  EXPECT_EQ(single.arrive_and_wait(), 0u);
  EXPECT_EQ(single.arrive_and_wait(), 0u);
  Barrier empty;
  EXPECT_FALSE(empty);
  EXPECT_THROW(empty.arrive_and_wait(), std::logic_error);
}

// ---------------------------------------------------------------------------------------------
// Serialization

TEST_F(sync_test, handles_survive_serialization_and_work_in_a_forked_child) {
  Lock lock;
  RLock rlock;
  Semaphore semaphore(0);
  BoundedSemaphore bounded(1);
  Event event;
  Condition cond;
  Barrier barrier(2);
  auto copies = round_trip(std::make_tuple(lock, rlock, semaphore, bounded, event, cond, barrier));
  lock.lock();
  rlock.lock();
  cond.lock();
  Process child([copies]() {
    auto& [lock2, rlock2, semaphore2, bounded2, event2, cond2, barrier2] = copies;
    require(!lock2.try_lock(), 2);
    require(!rlock2.try_lock(), 3);
    require(!cond2.try_lock(), 4);
    semaphore2.release(2);
    try {
      bounded2.release();
      ::_exit(5);
    } catch (const std::logic_error&) {
    }
    event2.set();
    barrier2.arrive_and_wait_for(hang_guard);
  });
  child.start();
  EXPECT_NO_THROW(barrier.arrive_and_wait_for(hang_guard));
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_EQ(semaphore.get_value(), 2);
  EXPECT_TRUE(event.is_set());
  lock.unlock();
  rlock.unlock();
  cond.unlock();
}

TEST_F(sync_test, decoding_refuses_a_descriptor_of_another_primitive) {
  Event event;
  mproc::detail::FdSink sink;
  std::vector<std::byte> bytes;
  {
    mproc::detail::ScopedFdSink use(sink);
    bytes = mproc::serialize(event);
  }
  mproc::detail::FdSource source({::dup(sink.fds()[0])});
  mproc::detail::ScopedFdSource use(source);
  EXPECT_THROW(mproc::deserialize<Lock>(bytes), mproc::SerializationError);
  EXPECT_THROW(mproc::deserialize<BoundedSemaphore>(bytes), mproc::SerializationError);
  EXPECT_NO_THROW(mproc::deserialize<Event>(bytes));
}

TEST_F(sync_test, serializing_without_a_descriptor_table_is_refused) {
  EXPECT_THROW(mproc::serialize(Lock()), mproc::SerializationError);
}
