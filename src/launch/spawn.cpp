// src/launch/spawn.cpp — the spawn start method: fork+exec of this same program
// (/proc/self/exe), which enters the child through mproc's hook before main() and reads
// its boot record (target entry, serialized arguments, identity) from its control channel.
//
// posix_spawn (vfork-style clone in glibc) is used because it is safe from a
// multi-threaded parent and cheap: no page tables are copied. The child starts with an
// empty signal mask and default dispositions, and only its control socket is inherited.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"
#include "mproc/serialize.hpp"
#include "syscall.hpp"

extern char** environ;

namespace mproc::detail {
namespace {

class SpawnAttributes {
 public:
  SpawnAttributes(int inherited_fd) {
    posix_spawn_file_actions_init(&actions_);
    // dup2 onto itself clears FD_CLOEXEC in the child only (glibc >= 2.29).
    posix_spawn_file_actions_adddup2(&actions_, inherited_fd, inherited_fd);
    posix_spawnattr_init(&attributes_);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes_, &none);
    posix_spawnattr_setsigdefault(&attributes_, &all);
    posix_spawnattr_setflags(&attributes_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  ~SpawnAttributes() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attributes_);
  }
  SpawnAttributes(const SpawnAttributes&) = delete;
  SpawnAttributes& operator=(const SpawnAttributes&) = delete;

  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attributes() const { return &attributes_; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attributes_;
};

}  // namespace

LaunchedChild spawn_program(const BootRecord& boot, std::span<const int> extra_fds) {
  std::vector<std::byte> record = serialize(boot);
  auto [parent_end, child_end] = make_socketpair();

  std::vector<std::string> env_text;
  for (char** entry = environ; entry && *entry; ++entry)
    if (std::strncmp(*entry, "MPROC_SPAWN_FD=", 15) != 0) env_text.emplace_back(*entry);
  env_text.push_back("MPROC_SPAWN_FD=" + std::to_string(child_end.get()));
  std::vector<char*> envp;
  for (auto& text : env_text) envp.push_back(text.data());
  envp.push_back(nullptr);
  std::string argv0 = program_invocation_name;
  std::string role = boot.role == BootRole::forkserver ? "--mproc-forkserver" : "--mproc-spawn";
  char* argv[] = {argv0.data(), role.data(), nullptr};

  flush_std_streams();
  SpawnAttributes spawn(child_end.get());
  pid_t pid = 0;
  int error = ::posix_spawn(&pid, "/proc/self/exe", spawn.actions(), spawn.attributes(), argv,
                            envp.data());
  if (error != 0) throw_errno(error, "cannot spawn a child process (posix_spawn /proc/self/exe)");
  child_end.reset();

  LaunchedChild child;
  child.pid = pid;
  child.pidfd = pidfd_or_kill(pid);
  try {
    // The boot record waits in the socket buffer; a large one is read as the child starts.
    send_frame(parent_end.get(), record, extra_fds);
  } catch (const std::system_error& e) {
    // EPIPE/ECONNRESET: the child's end closed, which only its death does — killed from
    // outside as it started (the OOM killer, a stray kill). That is a child that died, not
    // a failure to start one: hand it over and let the caller reap it and see how it died,
    // as for any other death. (Its socket breaks in exit_files(), a moment before the pidfd
    // becomes readable in exit_notify(): allow that moment.)
    if ((e.code() == std::errc::broken_pipe || e.code() == std::errc::connection_reset) &&
        poll_one(child.pidfd.get(), POLLIN, 1000)) {
      child.control = std::move(parent_end);
      return child;
    }
    ::kill(pid, SIGKILL);
    retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
    throw;
  } catch (...) {
    ::kill(pid, SIGKILL);
    retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
    throw;
  }
  child.control = std::move(parent_end);
  return child;
}

LaunchedChild launch_spawn(const ChildIdentity& identity, const SpawnTarget& target,
                           std::span<const int> extra_fds) {
  BootRecord boot;
  boot.role = BootRole::process;
  boot.identity = identity;
  boot.target = target;
  boot.set_parent_death_signal = ::gettid() == ::getpid();
  return spawn_program(boot, extra_fds);
}

}  // namespace mproc::detail
