// tests/fault/test_pool_parent_death.cpp — a program that dies in the middle of Pool::map
// takes every worker and helper process (zygote, forkserver) with it, under every start
// method: SIGKILL of the program alone, and Ctrl-C (SIGINT to its process group).
//
//   this test (a subreaper) ── fork ──▶ the doomed program: Pool + map(report_and_block, ...)
//        ▲                                   └─ zygote / forkserver ─ workers (or spawned workers)
//        └──────────── FIFO: each worker writes its pid once its map task runs ──┘
//
// Once every worker has reported, the map is running and the test records the doomed
// program's whole process tree (pidfds, so no pid can be mistaken for a reused one), kills
// the program and waits — bounded — for each recorded process to end.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "mproc/pool.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc::StartMethod;

namespace {

constexpr unsigned workers = 2;

// The map task: tells the test its worker's pid through the FIFO, then blocks for ever.
int report_and_block(std::string fifo) {
  int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    pid_t pid = ::getpid();
    (void)!::write(fd, &pid, sizeof pid);  // atomic: smaller than PIPE_BUF
    ::close(fd);
  }
  for (;;) ::pause();
}

// Every process below `root` (children, grandchildren, ...), from /proc.
std::vector<pid_t> tree_below(pid_t root) {
  std::map<pid_t, pid_t> parent_of;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text;
    if (!std::getline(stat, text)) continue;
    auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (state != 'Z') parent_of[std::stoi(name)] = ppid;
  }
  std::vector<pid_t> result, frontier{root};
  while (!frontier.empty()) {
    pid_t parent = frontier.back();
    frontier.pop_back();
    for (auto& [pid, ppid] : parent_of)
      if (ppid == parent) result.push_back(pid), frontier.push_back(pid);
  }
  return result;
}

enum class Death { sigkill, sigint };

class pool_parent_death_test : public mproc_test::LeakCheckedTest,
                               public ::testing::WithParamInterface<std::tuple<StartMethod, Death>> {};

}  // namespace

TEST_P(pool_parent_death_test, every_worker_and_helper_ends_with_the_program_during_map) {
  const auto [method, death] = GetParam();
  // Orphans are re-parented to this process, so that it can reap them: nothing is left.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  const std::string fifo = "/tmp/mproc-parent-death-" + std::to_string(::getpid()) + "-" +
                           std::string(mproc::to_string(method)) + (death == Death::sigint ? "-int" : "-kill");
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Read and write: the FIFO never reports end-of-file between two workers' writes.
  int reports = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reports, 0);

  pid_t program = ::fork();
  ASSERT_GE(program, 0);
  if (program == 0) {
    // The doomed program: its own process group, like a shell job; default SIGINT.
    ::setpgid(0, 0);
    ::signal(SIGINT, SIG_DFL);
    ::close(reports);
    mproc::Pool pool(mproc::PoolOptions{.processes = workers, .start_method = method});
    std::vector<std::string> items(4 * workers, fifo);
    (void)pool.map(report_and_block, items, mproc::MapOptions{.chunksize = 1});
    std::_Exit(99);  // unreachable: the map never ends
  }
  ::setpgid(program, program);  // also here: no race with the kill below

  // Handshake: every worker has started its map task.
  std::set<pid_t> reported;
  auto deadline = Clock::now() + 60s;  // generous: spawn under a sanitizer on a loaded machine
  while (reported.size() < workers && Clock::now() < deadline) {
    pollfd p{reports, POLLIN, 0};
    ::poll(&p, 1, 100);
    pid_t pid;
    while (::read(reports, &pid, sizeof pid) == static_cast<ssize_t>(sizeof pid)) reported.insert(pid);
  }
  ASSERT_EQ(reported.size(), workers) << "the map's tasks did not start on every worker";

  // The program's whole tree, as pidfds: workers, and the zygote or the forkserver.
  std::vector<pid_t> tree = tree_below(program);
  for (pid_t worker : reported)
    EXPECT_NE(std::find(tree.begin(), tree.end(), worker), tree.end()) << "worker " << worker << " is not below the program";
  const std::size_t helpers = method == StartMethod::spawn ? 0 : 1;
  EXPECT_GE(tree.size(), workers + helpers) << "expected the workers and the " << (helpers ? "helper" : "");
  std::map<pid_t, int> pidfds;
  for (pid_t pid : tree) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) pidfds[pid] = fd;
  }

  auto killed_at = Clock::now();
  if (death == Death::sigkill)
    ASSERT_EQ(::kill(program, SIGKILL), 0);
  else
    ASSERT_EQ(::kill(-program, SIGINT), 0);  // Ctrl-C: the whole process group
  int status = 0;
  ASSERT_EQ(::waitpid(program, &status, 0), program);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == (death == Death::sigkill ? SIGKILL : SIGINT))
      << "status " << status;

  // The contract says within a second; the bound here is generous so that only a process
  // that does not end at all fails the test on a loaded machine.
  auto bound = Clock::now() + 5s;
  Clock::duration slowest{};
  for (auto& [pid, fd] : pidfds) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(bound - Clock::now());
    pollfd p{fd, POLLIN, 0};
    bool gone = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) == 1;
    EXPECT_TRUE(gone) << "process " << pid << " outlived the program that started it";
    if (gone) slowest = std::max(slowest, Clock::now() - killed_at);
  }
  std::printf("%zu processes ended %lld ms after the program died\n", pidfds.size(),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count()));
  for (auto& [pid, fd] : pidfds) {
    ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);  // only matters after a failure above
    ::waitpid(pid, nullptr, 0);  // adopted by this subreaper: reap it, leave no zombie
    ::close(fd);
  }
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  ::close(reports);
  ::unlink(fifo.c_str());
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

INSTANTIATE_TEST_SUITE_P(
    every_start_method, pool_parent_death_test,
    ::testing::Combine(::testing::Values(StartMethod::fork, StartMethod::forkserver, StartMethod::spawn),
                       ::testing::Values(Death::sigkill, Death::sigint)),
    [](const auto& info) {
      return std::string(mproc::to_string(std::get<0>(info.param))) +
             (std::get<1>(info.param) == Death::sigkill ? "_sigkill" : "_sigint");
    });
