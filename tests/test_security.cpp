// tests/test_security.cpp — the claims of docs/security.md, proved: named segments are mode
// 0600 whatever the umask, another user (nobody) can neither open nor remove them nor reach
// our anonymous (memfd) segments nor make us adopt a segment of theirs, and a running pool under every start method has no network
// socket and no unix socket with a name — every channel is an unnamed socketpair.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Pool;
using mproc::PoolOptions;
using mproc::SharedMemory;
using mproc::StartMethod;

namespace {

using security_test = mproc_test::LeakCheckedTest;

std::string unique_name(const char* what) {
  static int counter = 0;
  return "mproc-test-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(++counter);
}

/// Sets the umask for the scope and restores the previous one.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(previous_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t previous_;
};

// --- Another user ------------------------------------------------------------------------------

/// What a process running as another user got when it tried each access: 0 for success,
/// else the errno. `dropped` is false when the child could not become that user at all.
struct OtherUserResults {
  int dropped = 0;  // 1 when setgroups/setgid/setuid all succeeded
  int drop_errno = 0;
  int open_read = 0;
  int open_write = 0;
  int shm_open_write = 0;
  int unlink = 0;
  int create_same_name = 0;
  int open_memfd = 0;
  int squat = 0;
};

int errno_of(int rc) { return rc >= 0 ? 0 : errno; }

/// Forks a child that becomes `user` (no supplementary groups) and runs `body(results)` there,
/// then returns what it recorded. `body` must make system calls only: the test process may
/// have threads (TSan's, a finished pool's).
template <class Body>
OtherUserResults as_user(const passwd& user, Body body) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category());
  const uid_t uid = user.pw_uid;
  const gid_t gid = user.pw_gid;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    OtherUserResults r;
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) {
      r.drop_errno = errno;
    } else if (::getuid() != uid || ::geteuid() != uid || ::getegid() != gid) {
      r.drop_errno = EPERM;
    } else {
      r.dropped = 1;
      body(r);
    }
    const ssize_t n = ::write(pipe_fds[1], &r, sizeof r);
    ::_exit(n == static_cast<ssize_t>(sizeof r) ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  OtherUserResults results;
  ssize_t got = 0;
  do {
    got = ::read(pipe_fds[0], &results, sizeof results);
  } while (got < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  EXPECT_EQ(got, static_cast<ssize_t>(sizeof results)) << "the child as another user did not report";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return results;
}

/// The user 'nobody', or nullopt with the reason to skip: only root can become someone else.
std::optional<passwd> other_user(std::string& why_not) {
  if (::geteuid() != 0) {
    why_not = "becoming the user 'nobody' needs root (CI runs the suite as root)";
    return std::nullopt;
  }
  const passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr || nobody->pw_uid == 0) {
    why_not = "there is no unprivileged user 'nobody' on this system";
    return std::nullopt;
  }
  return *nobody;
}

std::string cannot_become(const OtherUserResults& r) {
  return std::string("cannot become 'nobody' here (") + std::strerror(r.drop_errno) +
         "): no setuid capability, or the uid is not mapped in this user namespace";
}

// --- Sockets -----------------------------------------------------------------------------------

/// This process and every live descendant (workers, the forkserver, a pool's zygote, ...).
std::vector<pid_t> self_and_descendants() {
  std::map<pid_t, pid_t> parent_of;
  if (DIR* proc = ::opendir("/proc")) {
    while (dirent* entry = ::readdir(proc)) {
      char* end = nullptr;
      const long pid = std::strtol(entry->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
      std::string text;
      if (!std::getline(stat, text)) continue;
      const auto close = text.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(text.substr(close + 2));
      char state = 0;
      pid_t ppid = 0;
      rest >> state >> ppid;
      parent_of[static_cast<pid_t>(pid)] = ppid;
    }
    ::closedir(proc);
  }
  std::vector<pid_t> result{::getpid()};
  for (std::size_t i = 0; i < result.size(); ++i)
    for (auto& [pid, ppid] : parent_of)
      if (ppid == result[i]) result.push_back(pid);
  return result;
}

/// Socket inodes of the open descriptors of `pid`, each with a description for messages.
/// A process that ends while it is read simply contributes fewer.
std::map<std::string, std::string> socket_inodes(pid_t pid) {
  std::map<std::string, std::string> inodes;
  const std::string dir_path = "/proc/" + std::to_string(pid) + "/fd";
  DIR* dir = ::opendir(dir_path.c_str());
  if (!dir) return inodes;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    char target[256];
    const std::string link = dir_path + "/" + entry->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    // "socket:[12345]"
    if (std::strncmp(target, "socket:[", 8) != 0) continue;
    std::string inode(target + 8);
    if (!inode.empty() && inode.back() == ']') inode.pop_back();
    inodes[inode] = "fd " + std::string(entry->d_name) + " of pid " + std::to_string(pid);
  }
  ::closedir(dir);
  return inodes;
}

/// The inodes listed in /proc/net/<table> (tcp, tcp6, udp, udp6, raw, raw6): column 10.
std::set<std::string> inet_inodes(const char* table) {
  std::set<std::string> inodes;
  std::ifstream file(std::string("/proc/net/") + table);
  std::string line;
  std::getline(file, line);  // header
  while (std::getline(file, line)) {
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 10 && fields >> field; ++i) {
    }
    inodes.insert(field);
  }
  return inodes;
}

/// /proc/net/unix: inode (column 7) → path (column 8, empty for an unnamed socket).
std::map<std::string, std::string> unix_sockets() {
  std::map<std::string, std::string> sockets;
  std::ifstream file("/proc/net/unix");
  std::string line;
  std::getline(file, line);  // header
  while (std::getline(file, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, inode, path;
    fields >> num >> refcount >> protocol >> flags >> type >> state >> inode;
    std::getline(fields >> std::ws, path);
    sockets[inode] = path;
  }
  return sockets;
}

int hold_queue_and_lock(mproc::Queue<int> queue, mproc::Lock lock, mproc::Event release) {
  {
    std::scoped_lock hold(lock);
    queue.put(::getpid());
  }
  // Bounded, so that a failing test cannot leave the worker waiting; the test sets it.
  return release.wait_for(120s) ? 1 : 0;
}

class security_pool_test : public mproc_test::LeakCheckedTest,
                           public ::testing::WithParamInterface<StartMethod> {};

}  // namespace

// --- Named segments ------------------------------------------------------------------------------

TEST_F(security_test, named_segment_is_mode_0600_even_with_umask_0) {
  const std::string name = unique_name("umask");
  ScopedUmask no_mask(0);
  auto memory = SharedMemory::create(4096, name);
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST_F(security_test, anonymous_segment_is_mode_0600_even_with_umask_0) {
  ScopedUmask no_mask(0);
  auto memory = SharedMemory::create(4096);
  struct stat st {};
  ASSERT_EQ(::fstat(memory.native_handle(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_nlink, 0u) << "an anonymous segment has no name anywhere in the file system";
}

TEST_F(security_test, another_user_cannot_open_remove_or_take_over_our_segments) {
  std::string why_not;
  const auto user = other_user(why_not);
  if (!user) GTEST_SKIP() << why_not;

  const std::string name = unique_name("other-user");
  auto named = SharedMemory::create(4096, name);
  auto anonymous = SharedMemory::create(4096);
  std::memcpy(named.data(), "ours", 5);

  const std::string dev_path = "/dev/shm/" + name;
  const std::string shm_path = "/" + name;
  const std::string memfd_path = "/proc/" + std::to_string(::getpid()) + "/fd/" +
                                 std::to_string(anonymous.native_handle());
  const OtherUserResults r = as_user(*user, [&](OtherUserResults& out) {
    int fd;
    out.open_read = errno_of(fd = ::open(dev_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd >= 0) ::close(fd);
    out.open_write = errno_of(fd = ::open(dev_path.c_str(), O_RDWR | O_CLOEXEC));
    if (fd >= 0) ::close(fd);
    out.shm_open_write = errno_of(fd = ::shm_open(shm_path.c_str(), O_RDWR | O_CLOEXEC, 0));
    if (fd >= 0) ::close(fd);
    out.unlink = errno_of(::unlink(dev_path.c_str()));
    out.create_same_name = errno_of(
        fd = ::shm_open(shm_path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666));
    if (fd >= 0) ::close(fd);
    out.open_memfd = errno_of(fd = ::open(memfd_path.c_str(), O_RDWR | O_CLOEXEC));
    if (fd >= 0) ::close(fd);
  });
  if (!r.dropped) GTEST_SKIP() << cannot_become(r);
  EXPECT_EQ(r.open_read, EACCES) << std::strerror(r.open_read);
  EXPECT_EQ(r.open_write, EACCES) << std::strerror(r.open_write);
  EXPECT_EQ(r.shm_open_write, EACCES) << std::strerror(r.shm_open_write);
  // /dev/shm is sticky (mode 1777): only the owner may remove or replace an entry.
  EXPECT_EQ(r.unlink, EPERM) << std::strerror(r.unlink);
  EXPECT_EQ(r.create_same_name, EEXIST) << std::strerror(r.create_same_name);
  // Anonymous segments can only be reached through /proc/<pid>/fd, which the kernel guards
  // with the ptrace access check (and the memfd's own mode is 0600 besides).
  EXPECT_EQ(r.open_memfd, EACCES) << std::strerror(r.open_memfd);

  // Nothing the other user did reached the segment.
  EXPECT_STREQ(reinterpret_cast<const char*>(named.data()), "ours");
  struct stat st {};
  ASSERT_EQ(::stat(dev_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(security_test, a_name_squatted_by_another_user_is_refused_not_adopted) {
  std::string why_not;
  const auto user = other_user(why_not);
  if (!user) GTEST_SKIP() << why_not;

  // Another user creates our name first, open to everyone, hoping we will use its segment.
  const std::string name = unique_name("squat");
  const std::string shm_path = "/" + name;
  const OtherUserResults r = as_user(*user, [&](OtherUserResults& out) {
    const int fd = ::shm_open(shm_path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0666);
    out.squat = errno_of(fd);
    if (fd >= 0) {
      (void)::fchmod(fd, 0666);
      ::close(fd);
    }
  });
  if (!r.dropped) GTEST_SKIP() << cannot_become(r);
  ASSERT_EQ(r.squat, 0) << std::strerror(r.squat);
  struct Unlink {
    std::string path;
    ~Unlink() { ::shm_unlink(path.c_str()); }  // root may remove it from the sticky /dev/shm
  } cleanup{shm_path};

  try {
    auto memory = SharedMemory::create(4096, name);
    ADD_FAILURE() << "SharedMemory::create adopted a segment another user created";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EEXIST) << e.what();
  }
}

// --- Sockets ------------------------------------------------------------------------------------

TEST_P(security_pool_test, a_running_pool_has_no_network_socket_and_no_named_unix_socket) {
  mproc::Queue<int> queue;
  mproc::Lock lock;
  mproc::Event release;
  Pool pool(PoolOptions{.processes = 2, .start_method = GetParam()});
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 2; ++i)
    futures.push_back(pool.apply_async(hold_queue_and_lock, queue, lock, release));
  // Both tasks are running (each put its pid) and hold their arguments' descriptors.
  std::set<int> workers;
  for (int i = 0; i < 2; ++i) workers.insert(queue.get(120s));
  EXPECT_EQ(workers.size(), 2u);

  std::map<std::string, std::string> ours;
  const auto pids = self_and_descendants();
  // This process, the workers and whatever helpers the start method uses.
  EXPECT_GE(pids.size(), 3u);
  for (pid_t pid : pids) ours.merge(socket_inodes(pid));
  EXPECT_FALSE(ours.empty()) << "the pool's channels are sockets; none was found";

  for (const char* table : {"tcp", "tcp6", "udp", "udp6", "raw", "raw6"}) {
    const auto inet = inet_inodes(table);
    for (auto& [inode, where] : ours)
      EXPECT_EQ(inet.count(inode), 0u) << where << " is a network socket (/proc/net/" << table << ")";
  }
  const auto unix_table = unix_sockets();
  for (auto& [inode, where] : ours) {
    auto it = unix_table.find(inode);
    if (it == unix_table.end()) {
      ADD_FAILURE() << where << " (socket inode " << inode << ") is not a unix socket";
      continue;
    }
    EXPECT_EQ(it->second, "") << where << " is a unix socket bound to the name '" << it->second
                              << "': every channel must be an unnamed socketpair";
  }

  release.set();
  for (auto& f : futures) EXPECT_EQ(f.get(), 1);
}

INSTANTIATE_TEST_SUITE_P(every_start_method, security_pool_test,
                         ::testing::Values(StartMethod::fork, StartMethod::forkserver,
                                           StartMethod::spawn),
                         [](const auto& info) {
                           switch (info.param) {
                             case StartMethod::fork: return std::string("fork");
                             case StartMethod::forkserver: return std::string("forkserver");
                             case StartMethod::spawn: return std::string("spawn");
                           }
                           return std::string("unknown");
                         });
