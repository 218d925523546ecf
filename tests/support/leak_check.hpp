// tests/support/leak_check.hpp — the fixture every mproc test derives from: it fails a test
// that leaves a child process, a zombie or a /dev/shm entry behind.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

namespace mproc_test {

/// Live descendants of this process (children, grandchildren, ...), excluding mproc's
/// own helper processes (the forkserver) but including their children.
std::vector<pid_t> descendants();
/// Live direct children of `parent`.
std::vector<pid_t> children_of(pid_t parent);
/// Entries currently in /dev/shm.
std::set<std::string> shm_entries();

/// Base fixture: records /dev/shm on SetUp; on TearDown waits (generously) for every
/// descendant to be gone and every new /dev/shm entry to be unlinked, then fails the
/// test naming whatever is left — and kills and reaps it so later tests start clean.
class LeakCheckedTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

 private:
  std::set<std::string> shm_before_;
};

}  // namespace mproc_test
