// tests/test_process.cpp — Process under the fork start method: exit codes, join with a
// timeout, signals, names, the process tree queries and cpu_count().
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "mproc/process.hpp"
#include "support/crash.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Process;
using mproc::ProcessOptions;
using mproc::StartMethod;

namespace {

using process_test = mproc_test::LeakCheckedTest;

struct Pipe {
  int read_end = -1, write_end = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    read_end = fds[0];
    write_end = fds[1];
  }
  ~Pipe() {
    close_write();
    if (read_end >= 0) ::close(read_end);
  }
  void close_write() {
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
  std::string read_all() {
    close_write();
    std::string text;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(read_end, buffer, sizeof buffer)) > 0) text.append(buffer, n);
    return text;
  }
};

void sleep_forever() {
  for (;;) ::pause();
}

}  // namespace

TEST_F(process_test, returning_target_exits_with_zero) {
  Process p([] {});
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST_F(process_test, exit_status_becomes_the_exit_code) {
  Process p([] { std::exit(3); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_F(process_test, uncaught_exception_exits_with_one_and_is_printed_to_stderr) {
  Pipe err;
  Process p(
      [](int fd) {
        ::dup2(fd, STDERR_FILENO);
        throw std::runtime_error("the answer is not 42");
      },
      err.write_end);
  p.start();
  std::string text = err.read_all();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(text.find("Process " + p.name()), std::string::npos) << text;
  EXPECT_NE(text.find("std::runtime_error"), std::string::npos) << text;
  EXPECT_NE(text.find("the answer is not 42"), std::string::npos) << text;
}

TEST_F(process_test, segfault_exits_with_minus_sigsegv) {
  Process p([] {
    mproc_test::segfault();
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGSEGV);
}

TEST_F(process_test, kill_exits_with_minus_sigkill) {
  Process p(sleep_forever);
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_F(process_test, terminate_exits_with_minus_sigterm) {
  Process p(sleep_forever);
  p.start();
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST_F(process_test, join_with_timeout_returns_false_while_the_child_sleeps) {
  Process p(sleep_forever);
  p.start();
  EXPECT_FALSE(p.join(50ms));
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  p.kill();
  EXPECT_TRUE(p.join(60s));
  EXPECT_FALSE(p.is_alive());
}

TEST_F(process_test, starting_twice_is_an_error) {
  Process p([] {});
  p.start();
  EXPECT_THROW(p.start(), std::logic_error);
  p.join();
}

TEST_F(process_test, join_before_start_is_an_error) {
  Process p([] {});
  EXPECT_THROW(p.join(), std::logic_error);
  EXPECT_EQ(p.pid(), 0);
}

TEST_F(process_test, child_has_its_own_pid_and_memory) {
  static int counter = 0;
  Pipe out;
  Process p(
      [](int fd) {
        counter = 41;
        std::string text = std::to_string(::getpid()) + " " + std::to_string(counter + 1);
        ::write(fd, text.data(), text.size());
      },
      out.write_end);
  p.start();
  std::string text = out.read_all();
  p.join();
  EXPECT_EQ(text, std::to_string(p.pid()) + " 42");
  EXPECT_NE(p.pid(), ::getpid());
  EXPECT_EQ(counter, 0);  // the child's write did not reach this process
}

TEST_F(process_test, stateful_lambda_and_move_only_arguments_work_under_fork) {
  Pipe out;
  std::string greeting = "hello";
  auto payload = std::make_unique<int>(7);
  Process p(
      [greeting, fd = out.write_end](std::unique_ptr<int> value) {
        std::string text = greeting + " " + std::to_string(*value);
        ::write(fd, text.data(), text.size());
      },
      std::move(payload));
  p.start();
  EXPECT_EQ(out.read_all(), "hello 7");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(process_test, default_names_count_up_and_custom_names_are_kept) {
  Process a([] {});
  Process b([] {});
  Process c(ProcessOptions{.name = "loader"}, [] {});
  EXPECT_EQ(a.name().rfind("Process-", 0), 0u);
  EXPECT_NE(a.name(), b.name());
  EXPECT_EQ(c.name(), "loader");
  EXPECT_EQ(mproc::current_process().name(), "MainProcess");
  EXPECT_EQ(mproc::current_process().pid(), ::getpid());
  EXPECT_FALSE(mproc::parent_process().has_value());
}

TEST_F(process_test, child_knows_its_name_and_parent) {
  Pipe out;
  Process p(
      ProcessOptions{.name = "worker-7"},
      [](int fd) {
        auto me = mproc::current_process();
        auto parent = mproc::parent_process();
        std::string text = me.name() + " " + std::to_string(me.pid() == ::getpid()) + " " +
                           (parent ? parent->name() + " " + std::to_string(parent->pid()) : "none");
        ::write(fd, text.data(), text.size());
      },
      out.write_end);
  p.start();
  std::string text = out.read_all();
  p.join();
  EXPECT_EQ(text, "worker-7 1 MainProcess " + std::to_string(::getpid()));
}

TEST_F(process_test, grandchild_names_extend_the_parent_identity) {
  Pipe out;
  Process p(
      [](int fd) {
        Process inner([](int fd) {
          auto me = mproc::current_process();
          std::string text = me.name() + " <- " + mproc::parent_process()->name();
          ::write(fd, text.data(), text.size());
        }, fd);
        inner.start();
        inner.join();
      },
      out.write_end);
  p.start();
  std::string text = out.read_all();
  p.join();
  EXPECT_EQ(text, p.name() + ":1 <- " + p.name());
}

TEST_F(process_test, active_children_lists_running_children_only) {
  Process sleeper(sleep_forever);
  Process quick([] {});
  sleeper.start();
  quick.start();
  quick.join();
  auto children = mproc::active_children();
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0].pid(), sleeper.pid());
  EXPECT_EQ(children[0].name(), sleeper.name());
  sleeper.kill();
  sleeper.join();
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST_F(process_test, active_children_does_not_wait_for_a_join_in_another_thread) {
  // A join holds its process's lock until the child ends. active_children() used to wait for
  // that lock while holding the registry's, which the join needs to reap: a deadlock once
  // the child ended.
  Process sleeper(sleep_forever);
  sleeper.start();
  const pid_t pid = sleeper.pid();
  std::thread joiner([&] { sleeper.join(); });
  const auto children = mproc::active_children();
  EXPECT_EQ(children.size(), 1u);
  if (!children.empty()) EXPECT_EQ(children[0].pid(), pid);
  ::kill(pid, SIGKILL);  // not through `sleeper`: another thread is using it
  joiner.join();
  EXPECT_EQ(sleeper.exitcode(), -SIGKILL);
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST_F(process_test, destroying_a_running_daemon_terminates_it) {
  pid_t pid;
  {
    Process p(ProcessOptions{.daemon = true}, sleep_forever);
    EXPECT_TRUE(p.daemon());
    p.start();
    pid = p.pid();
  }
  EXPECT_NE(::kill(pid, 0), 0);  // reaped: the pid no longer names our child
}

TEST_F(process_test, destroying_a_running_process_joins_it) {
  Pipe gate;
  Pipe done;
  {
    Process p(
        [](int gate_fd, int gate_write_fd, int done_fd) {
          ::close(gate_write_fd);  // the fork copied it; only the parent's copy may stay
          char c;
          (void)::read(gate_fd, &c, 1);  // returns when the parent closes the gate
          ::write(done_fd, "x", 1);
        },
        gate.read_end, gate.write_end, done.write_end);
    p.start();
    gate.close_write();
  }  // must wait for the child to finish, not kill it
  EXPECT_EQ(done.read_all(), "x");
}

TEST_F(process_test, sentinel_becomes_readable_when_the_child_ends) {
  Process p([] { std::exit(5); });
  EXPECT_EQ(p.sentinel(), -1);
  p.start();
  ASSERT_GE(p.sentinel(), 0);
  pollfd fd{p.sentinel(), POLLIN, 0};
  ASSERT_EQ(::poll(&fd, 1, 60'000), 1);
  EXPECT_EQ(p.exitcode(), 5);
}

TEST_F(process_test, cpu_count_respects_the_affinity_mask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_GE(mproc::cpu_count(), 1u);
  EXPECT_LE(mproc::cpu_count(), static_cast<unsigned>(CPU_COUNT(&set)));
  Process p([] {
    cpu_set_t one;
    CPU_ZERO(&one);
    cpu_set_t current;
    sched_getaffinity(0, sizeof current, &current);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &current)) {
        CPU_SET(cpu, &one);
        break;
      }
    if (sched_setaffinity(0, sizeof one, &one) != 0) std::exit(100);
    std::exit(static_cast<int>(mproc::cpu_count()));
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
}

TEST_F(process_test, stateful_target_is_refused_under_spawn_and_forkserver) {
  int captured = 3;
  for (auto method : {StartMethod::spawn, StartMethod::forkserver}) {
    try {
      Process p(ProcessOptions{.start_method = method}, [captured] { std::exit(captured); });
      ADD_FAILURE() << "a stateful target was accepted under " << mproc::to_string(method);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("state"), std::string::npos) << e.what();
    }
  }
}

TEST_F(process_test, unserializable_argument_is_refused_under_spawn) {
  struct Opaque {
    std::unique_ptr<int> p;
  };
  EXPECT_THROW(Process(ProcessOptions{.start_method = StartMethod::spawn}, [](Opaque) {}, Opaque{}),
               std::invalid_argument);
}
