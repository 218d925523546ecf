// src/boot.cpp — how every child begins and ends: the common child body (identity,
// parent-death watch, exit code, Python-style report of an escaping exception) and the
// hook that runs before main() in a spawned program and enters the child instead.
#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "fd_passing.hpp"
#include "launch/launcher.hpp"
#include "mproc/serialize.hpp"
#include "process_registry.hpp"

namespace mproc::detail {
namespace {

// The child dies with SIGKILL as soon as its control channel becomes readable, which
// happens only when the parent's end closes: the parent died (the parent never writes
// after the boot record). F_SETSIG makes the kernel send SIGKILL instead of SIGIO, so
// no handler is needed and user code cannot block it. This catches the death of the
// whole parent process, where PR_SET_PDEATHSIG only sees the creating thread.
void arm_parent_death_watch(int control_fd) {
  if (::fcntl(control_fd, F_SETOWN, ::getpid()) != 0 || ::fcntl(control_fd, F_SETSIG, SIGKILL) != 0 ||
      ::fcntl(control_fd, F_SETFL, ::fcntl(control_fd, F_GETFL) | O_ASYNC) != 0) {
    std::perror("mproc: cannot watch the parent's control channel");
    ::_exit(1);
  }
  // The parent may have died before the watch was armed: then no signal will come.
  pollfd p{control_fd, POLLIN, 0};
  if (::poll(&p, 1, 0) > 0) ::raise(SIGKILL);
}

void report_escaping_exception(const std::string& process_name) {
  std::string type = "unknown exception";
  if (std::type_info* info = abi::__cxa_current_exception_type()) type = demangle(info->name());
  std::string what;
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  std::string text = "Process " + process_name + ":\nTraceback: uncaught exception " + type;
  if (!what.empty()) text += ": " + what;
  text += "\n";
  std::fputs(text.c_str(), stderr);
}

}  // namespace

void flush_std_streams() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

[[noreturn]] void run_child(const ChildIdentity& identity, int control_fd,
                            bool set_parent_death_signal, void (*body)(void*), void* context) {
  become_child(identity);
  if (set_parent_death_signal) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != identity.parent_pid) ::raise(SIGKILL);  // the parent is already gone
  }
  arm_parent_death_watch(control_fd);
  int code = 0;
  try {
    body(context);
  } catch (...) {
    report_escaping_exception(identity.name);
    code = 1;
  }
  flush_std_streams();
  ::_exit(code);
}

namespace {
std::vector<UniqueFd>& inherited_fds() {
  static std::vector<UniqueFd>* fds = new std::vector<UniqueFd>();
  return *fds;
}
}  // namespace

void set_inherited_fds(std::vector<UniqueFd> fds) { inherited_fds() = std::move(fds); }
std::vector<UniqueFd> take_inherited_fds() { return std::exchange(inherited_fds(), {}); }

std::vector<int> take_inherited_fd_numbers() {
  std::vector<int> numbers;
  for (auto& fd : take_inherited_fds()) numbers.push_back(fd.release());
  return numbers;
}

void run_spawn_target(const SpawnTarget& target) {
  auto entry = reinterpret_cast<SpawnEntry>(resolve_function(target.entry));
  entry(target.payload);
}

namespace {

[[noreturn]] void spawned_program_main(int control_fd) {
  Frame frame;
  BootRecord boot;
  try {
    if (!recv_frame(control_fd, frame)) ::_exit(1);  // the parent died before sending it
    boot = deserialize<BootRecord>(frame.bytes);
    set_inherited_fds(std::move(frame.fds));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: spawned child cannot read its boot record: %s\n", e.what());
    ::_exit(1);
  }
  if (boot.role == BootRole::forkserver) forkserver_main(control_fd);
  run_child(
      boot.identity, control_fd, boot.set_parent_death_signal,
      [](void* context) { run_spawn_target(static_cast<BootRecord*>(context)->target); }, &boot);
}

// glibc calls .init_array functions with (argc, argv, envp). mproc is a static library,
// linked after the program's own objects, so this runs after the program's static
// initializers and before main().
__attribute__((constructor)) void mproc_spawn_hook() {
  const char* fd_text = std::getenv("MPROC_SPAWN_FD");
  if (fd_text == nullptr) return;
  int control_fd = std::atoi(fd_text);
  ::unsetenv("MPROC_SPAWN_FD");  // the child's own children must not take this path
  ::fcntl(control_fd, F_SETFD, FD_CLOEXEC);
  spawned_program_main(control_fd);
}

}  // namespace
}  // namespace mproc::detail
