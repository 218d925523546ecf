// tests/test_errors.cpp — the exception hierarchy: every mproc error is an mproc::Error,
// and the crash report says what happened.
#include <signal.h>

#include <type_traits>

#include "mproc/errors.hpp"
#include "support/leak_check.hpp"

namespace {
using errors_test = mproc_test::LeakCheckedTest;
}

TEST_F(errors_test, every_error_derives_from_mproc_error_and_runtime_error) {
  static_assert(std::is_base_of_v<std::runtime_error, mproc::Error>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::TimeoutError>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::WorkerCrashed>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::TaskTimeout>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::MemoryLimitExceeded>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::RemoteError>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::PoolClosed>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::PoolTerminated>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::PoolBroken>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::SerializationError>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::Empty>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::Full>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::BrokenBarrier>);
  static_assert(std::is_base_of_v<mproc::Error, mproc::CancelledError>);
  try {
    throw mproc::PoolClosed("pool is closed");
  } catch (const std::exception& e) {
    EXPECT_STREQ(e.what(), "pool is closed");
  }
}

TEST_F(errors_test, crash_report_names_signal_function_item_and_oom) {
  mproc::CrashReport report;
  report.pid = 1234;
  report.signal = SIGSEGV;
  report.signal_name = mproc::signal_name(SIGSEGV);
  report.function = "parse_record";
  report.item = 17;
  report.stderr_tail = "about to crash\n";
  mproc::WorkerCrashed crashed(report);
  std::string what = crashed.what();
  EXPECT_NE(what.find("1234"), std::string::npos) << what;
  EXPECT_NE(what.find("SIGSEGV"), std::string::npos) << what;
  EXPECT_NE(what.find("parse_record"), std::string::npos) << what;
  EXPECT_NE(what.find("item 17"), std::string::npos) << what;
  EXPECT_NE(what.find("about to crash"), std::string::npos) << what;
  EXPECT_EQ(crashed.report().item, 17u);

  report.signal = SIGKILL;
  report.signal_name = mproc::signal_name(SIGKILL);
  report.oom_killed = true;
  EXPECT_NE(mproc::WorkerCrashed(report).report().describe().find("OOM"), std::string::npos);
}

TEST_F(errors_test, exit_status_crash_and_timeouts_describe_themselves) {
  mproc::CrashReport report;
  report.pid = 99;
  report.exit_code = 3;
  EXPECT_NE(report.describe().find("exited with status 3"), std::string::npos);
  mproc::TaskTimeout timeout(std::chrono::seconds(2), report);
  EXPECT_EQ(timeout.limit(), std::chrono::seconds(2));
  EXPECT_NE(std::string(timeout.what()).find("time limit"), std::string::npos);
  mproc::MemoryLimitExceeded memory(1 << 20, report);
  EXPECT_EQ(memory.limit_bytes(), 1u << 20);
  mproc::RemoteError remote("my::Error", "went wrong", "#0 f()");
  EXPECT_EQ(remote.type_name(), "my::Error");
  EXPECT_EQ(remote.remote_what(), "went wrong");
  EXPECT_EQ(remote.remote_traceback(), "#0 f()");
  EXPECT_EQ(mproc::signal_name(SIGTERM), "SIGTERM");
}
