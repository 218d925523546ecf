// tests/fault/test_process_faults.cpp — Process when things go wrong: the parent is
// SIGKILLed, the forkserver dies, children are started from many threads at once.
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <optional>
#include <thread>
#include <vector>

#include "launch/launcher.hpp"
#include "mproc/process.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Process;
using mproc::ProcessOptions;
using mproc::StartMethod;

namespace {

using process_fault_test = mproc_test::LeakCheckedTest;

void sleep_forever() {
  for (;;) ::pause();
}

// Waits for `pid` (not necessarily our child) to end; false when it outlives the deadline.
bool wait_gone(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  pollfd p{fd, POLLIN, 0};
  bool gone = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) == 1;
  ::close(fd);
  return gone;
}

}  // namespace

TEST_F(process_fault_test, children_die_within_a_second_when_the_parent_is_sigkilled) {
  // Orphans are re-parented to this process, so it can check how they died and reap them.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    // The doomed parent: one child per start method, plus (by then) a forkserver.
    ::close(fds[0]);
    std::vector<Process> children;
    for (auto method : {StartMethod::fork, StartMethod::spawn, StartMethod::forkserver})
      children.emplace_back(ProcessOptions{.start_method = method}, sleep_forever);
    std::vector<pid_t> pids;
    for (auto& child : children) {
      child.start();
      pids.push_back(child.pid());
    }
    for (pid_t helper : mproc::detail::helper_pids()) pids.push_back(helper);
    (void)!::write(fds[1], pids.data(), pids.size() * sizeof(pid_t));
    ::close(fds[1]);
    sleep_forever();
  }
  ::close(fds[1]);
  std::vector<pid_t> pids(8);
  ssize_t got = ::read(fds[0], pids.data(), pids.size() * sizeof(pid_t));
  ::close(fds[0]);
  ASSERT_EQ(got, static_cast<ssize_t>(4 * sizeof(pid_t)));  // 3 children + the forkserver
  pids.resize(4);

  ASSERT_EQ(::kill(parent, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(parent, &status, 0), parent);
  auto deadline = std::chrono::steady_clock::now() + 1s;
  for (pid_t pid : pids) EXPECT_TRUE(wait_gone(pid, deadline)) << "process " << pid << " outlived its parent";
  for (pid_t pid : pids) {
    int child_status = 0;
    pid_t reaped = ::waitpid(pid, &child_status, 0);  // adopted by us: reap, leave no zombie
    if (pid != pids.back() && reaped == pid) {
      EXPECT_TRUE(WIFSIGNALED(child_status) && WTERMSIG(child_status) == SIGKILL);
    }
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST_F(process_fault_test, a_dead_forkserver_is_replaced_on_next_use) {
  Process first(ProcessOptions{.start_method = StartMethod::forkserver}, [] { std::exit(7); });
  first.start();
  first.join();
  EXPECT_EQ(first.exitcode(), 7);
  auto helpers = mproc::detail::helper_pids();
  ASSERT_EQ(helpers.size(), 1u);
  ::kill(helpers[0], SIGKILL);
  ASSERT_TRUE(wait_gone(helpers[0], std::chrono::steady_clock::now() + 60s));

  Process second(ProcessOptions{.start_method = StartMethod::forkserver}, [] { std::exit(8); });
  second.start();
  second.join();
  EXPECT_EQ(second.exitcode(), 8);
  auto replaced = mproc::detail::helper_pids();
  ASSERT_EQ(replaced.size(), 1u);
  EXPECT_NE(replaced[0], helpers[0]);
}

TEST_F(process_fault_test, forkserver_children_outlive_a_killed_forkserver_and_still_report) {
  Process child(ProcessOptions{.start_method = StartMethod::forkserver}, sleep_forever);
  child.start();
  auto helpers = mproc::detail::helper_pids();
  ASSERT_EQ(helpers.size(), 1u);
  ::kill(helpers[0], SIGKILL);
  ASSERT_TRUE(wait_gone(helpers[0], std::chrono::steady_clock::now() + 60s));
  EXPECT_TRUE(child.is_alive());
  child.kill();
  child.join();  // never hangs: the status is lost with the forkserver, the end is not
  EXPECT_TRUE(child.exitcode().has_value());
  mproc::detail::stop_forkserver();
}

TEST_F(process_fault_test, children_started_from_many_threads_at_once_all_report) {
  constexpr int threads = 4, per_thread = 6;
  std::vector<std::thread> starters;
  std::vector<int> wrong(threads, 0);
  for (int t = 0; t < threads; ++t) {
    starters.emplace_back([t, &wrong] {
      for (int i = 0; i < per_thread; ++i) {
        auto method = static_cast<StartMethod>(i % 3);
        Process p(ProcessOptions{.start_method = method}, [](int code) { std::exit(code); }, t * 10 + i);
        p.start();
        p.join();
        if (p.exitcode() != t * 10 + i) ++wrong[t];
      }
    });
  }
  for (auto& s : starters) s.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
}

TEST_F(process_fault_test, a_child_started_by_a_thread_that_exits_keeps_running) {
  // PR_SET_PDEATHSIG would kill it when its creating thread exits; mproc must not.
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  std::optional<Process> child;
  std::thread([&] {
    child.emplace(
        [](int gate_read, int gate_write) {
          ::close(gate_write);
          char c;
          (void)!::read(gate_read, &c, 1);  // EOF once the parent closed the gate
          std::exit(9);
        },
        gate[0], gate[1]);
    child->start();
  }).join();
  ::close(gate[1]);  // the creating thread is gone by now
  ::close(gate[0]);
  child->join();
  EXPECT_EQ(child->exitcode(), 9);
}

TEST_F(process_fault_test, spawned_and_forkserver_children_outlive_the_thread_that_started_them) {
  for (auto method : {StartMethod::spawn, StartMethod::forkserver}) {
    // The child shares no descriptor with us: it waits for a file that appears only after
    // its creating thread has exited.
    std::string gate = "/tmp/mproc-gate-" + std::to_string(::getpid()) + "-" + mproc::to_string(method);
    ::unlink(gate.c_str());
    std::optional<Process> child;
    std::thread([&] {
      child.emplace(
          ProcessOptions{.start_method = method},
          [](std::string path) {
            for (int i = 0; i < 60'000 && ::access(path.c_str(), F_OK) != 0; ++i) ::usleep(1000);
            std::exit(11);
          },
          gate);
      child->start();
    }).join();
    if (FILE* f = std::fopen(gate.c_str(), "w")) std::fclose(f);
    child->join();
    ::unlink(gate.c_str());
    EXPECT_EQ(child->exitcode(), 11) << mproc::to_string(method);
  }
}
