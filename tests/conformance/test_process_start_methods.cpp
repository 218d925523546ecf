// tests/conformance/test_process_start_methods.cpp — the same Process behaviour under
// every start method: fork, forkserver and spawn. Targets here are stateless (function
// pointers and captureless lambdas) and talk back through exit codes and files, since
// spawn and forkserver children share neither memory nor descriptors with this process.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mproc/process.hpp"
#include "support/crash.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Process;
using mproc::ProcessOptions;
using mproc::StartMethod;

namespace {

class start_method_test : public mproc_test::LeakCheckedTest,
                          public ::testing::WithParamInterface<StartMethod> {
 protected:
  ProcessOptions options(std::string name = {}) const {
    return ProcessOptions{.name = std::move(name), .start_method = GetParam()};
  }
  std::string temp_path(const std::string& stem) const {
    return (std::filesystem::temp_directory_path() /
            ("mproc-test-" + std::to_string(::getpid()) + "-" + stem))
        .string();
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::filesystem::remove(path);
  return text.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

void sleep_forever() {
  for (;;) ::pause();
}

int add_and_exit(int a, int b) { std::exit(a + b); }

}  // namespace

TEST_P(start_method_test, returning_target_exits_with_zero) {
  Process p(options(), [] {});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(start_method_test, captureless_lambda_receives_its_arguments) {
  std::string path = temp_path("args");
  Process p(
      options(),
      [](std::string path, int n, std::vector<double> values, std::map<std::string, int> m) {
        double sum = 0;
        for (double v : values) sum += v;
        std::ostringstream text;
        text << n << " " << sum << " " << m.at("x");
        write_file(path, text.str());
      },
      path, 42, std::vector<double>{1.5, 2.5}, std::map<std::string, int>{{"x", 7}});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(read_file(path), "42 4 7");
}

TEST_P(start_method_test, function_pointer_receives_its_arguments) {
  Process p(options(), add_and_exit, 2, 3);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 5);
}

TEST_P(start_method_test, string_literal_arguments_arrive_as_strings) {
  std::string path = temp_path("literal");
  Process p(options(), [](std::string path, std::string word) { write_file(path, word); }, path,
            "literal");
  p.start();
  p.join();
  EXPECT_EQ(read_file(path), "literal");
}

TEST_P(start_method_test, exit_status_becomes_the_exit_code) {
  Process p(options(), [] { std::exit(3); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(start_method_test, uncaught_exception_exits_with_one) {
  Process p(options(), [] { throw std::logic_error("bad"); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
}

TEST_P(start_method_test, segfault_exits_with_minus_sigsegv) {
  Process p(options(), [] {
    mproc_test::segfault();
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGSEGV);
}

TEST_P(start_method_test, abort_exits_with_minus_sigabrt) {
  Process p(options(), [] { std::abort(); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGABRT);
}

TEST_P(start_method_test, kill_and_terminate_give_minus_the_signal) {
  Process killed(options(), sleep_forever);
  Process terminated(options(), sleep_forever);
  killed.start();
  terminated.start();
  killed.kill();
  terminated.terminate();
  killed.join();
  terminated.join();
  EXPECT_EQ(killed.exitcode(), -SIGKILL);
  EXPECT_EQ(terminated.exitcode(), -SIGTERM);
}

TEST_P(start_method_test, join_with_timeout_returns_false_while_the_child_sleeps) {
  Process p(options(), sleep_forever);
  p.start();
  EXPECT_FALSE(p.join(20ms));
  EXPECT_TRUE(p.is_alive());
  p.kill();
  EXPECT_TRUE(p.join(60s));
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_P(start_method_test, child_knows_its_name_pid_and_parent) {
  std::string path = temp_path("names");
  Process p(
      options("named-child"),
      [](std::string path) {
        auto me = mproc::current_process();
        auto parent = mproc::parent_process();
        write_file(path, me.name() + " " + std::to_string(me.pid()) + " " +
                             (parent ? parent->name() + " " + std::to_string(parent->pid())
                                     : std::string("none")));
      },
      path);
  p.start();
  p.join();
  EXPECT_EQ(read_file(path), "named-child " + std::to_string(p.pid()) + " MainProcess " +
                                 std::to_string(::getpid()));
}

TEST_P(start_method_test, many_children_run_side_by_side) {
  std::vector<Process> children;
  for (int i = 0; i < 8; ++i) children.emplace_back(options(), [](int code) { std::exit(code); }, i);
  for (auto& child : children) child.start();
  for (int i = 0; i < 8; ++i) {
    children[i].join();
    EXPECT_EQ(children[i].exitcode(), i);
  }
}

INSTANTIATE_TEST_SUITE_P(every_start_method, start_method_test,
                         ::testing::Values(StartMethod::fork, StartMethod::forkserver,
                                           StartMethod::spawn),
                         [](const auto& info) { return std::string(mproc::to_string(info.param)); });

#include "support/fd_handle.hpp"

TEST_P(start_method_test, descriptors_of_shareable_arguments_travel_with_them) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  Process p(options(), [](mproc_test::FdHandle out, int n) { out.write_text("got " + std::to_string(n)); },
            mproc_test::FdHandle{fds[1]}, 5);
  p.start();
  p.join();
  ::close(fds[1]);
  char buffer[64] = {};
  ASSERT_GT(::read(fds[0], buffer, sizeof buffer - 1), 0);
  ::close(fds[0]);
  EXPECT_STREQ(buffer, "got 5");
  EXPECT_EQ(p.exitcode(), 0);
}
