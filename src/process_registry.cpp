// src/process_registry.cpp — this process's identity, its live children, the exit handler
// that joins or terminates them, and the fork hygiene that keeps a child from inheriting
// its parent's children and private descriptors.
#include "process_registry.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>

#include "launch/launcher.hpp"
#include "process_state.hpp"
#include "syscall.hpp"

namespace mproc::detail {
namespace {

struct SelfInfo {
  std::string name = "MainProcess";
  std::string identity;  // "" in the main process, "1:2" in Process-1:2
  bool daemon = false;
  std::optional<ProcessInfo> parent;
  std::atomic<unsigned> next_child_index{1};
};

SelfInfo& self() {
  static SelfInfo* info = new SelfInfo();  // never destroyed: used from exit handlers
  return *info;
}

// Two locks, always taken in this order when both are held (only around fork()):
//
//   mutex      the children. Held while a child's ProcessState::mutex is taken (the exit
//              handler joins each child under it).
//   fds_mutex  the parent-only descriptors. Taken while a ProcessState::mutex is held: a join
//              reaps the child and untracks its descriptors with that mutex held.
//
// One lock for both made a cycle: thread A in Process::join() holds the state's mutex and,
// once the child ends, waits for the registry lock to untrack its descriptors, while thread
// B in active_children() holds the registry lock and waits for that state's mutex.
struct Registry {
  pthread_mutex_t mutex = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
  pthread_mutex_t fds_mutex = PTHREAD_MUTEX_INITIALIZER;
  std::vector<ProcessState*> children;
  std::vector<int> parent_only_fds;
  bool exit_handler_installed = false;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: used from exit handlers
  return *r;
}

class RegistryLock {
 public:
  explicit RegistryLock(pthread_mutex_t& mutex = registry().mutex) : mutex_(mutex) {
    pthread_mutex_lock(&mutex_);
  }
  ~RegistryLock() { pthread_mutex_unlock(&mutex_); }
  RegistryLock(const RegistryLock&) = delete;
  RegistryLock& operator=(const RegistryLock&) = delete;

 private:
  pthread_mutex_t& mutex_;
};

void join_children_locked();

// At exit, as Python's multiprocessing does: terminate daemons, then join the others,
// so that no child outlives its parent's normal exit and none is left a zombie.
// The registry lock is held throughout so no Process can be destroyed under our feet
// (a Process's destructor untracks its state before freeing it).
void join_children_at_exit() {
  join_children_locked();
  stop_forkserver();
}

void join_children_locked() {
  RegistryLock lock;
  std::vector<ProcessState*> children = registry().children;
  for (ProcessState* state : children) {
    std::lock_guard guard(state->mutex);
    if (state->options.daemon) state->signal_locked(SIGTERM);
  }
  for (ProcessState* state : children) {
    std::lock_guard guard(state->mutex);
    try {
      state->wait_locked(-1);
    } catch (...) {
    }
  }
}

}  // namespace

ChildIdentity next_child_identity(const ProcessOptions& options) {
  SelfInfo& me = self();
  unsigned index = me.next_child_index.fetch_add(1);
  ChildIdentity id;
  id.identity = me.identity.empty() ? std::to_string(index) : me.identity + ":" + std::to_string(index);
  id.name = options.name.empty() ? "Process-" + id.identity : options.name;
  id.daemon = options.daemon;
  id.parent_pid = ::getpid();
  id.parent_name = me.name;
  return id;
}

void become_child(const ChildIdentity& identity) {
  SelfInfo& me = self();
  me.name = identity.name;
  me.identity = identity.identity;
  me.daemon = identity.daemon;
  me.parent.emplace(identity.parent_pid, identity.parent_name);
  me.next_child_index = 1;
}

void track_child(ProcessState* state) {
  RegistryLock lock;
  Registry& r = registry();
  r.children.push_back(state);
  if (!r.exit_handler_installed) {
    r.exit_handler_installed = true;
    std::atexit(join_children_at_exit);
  }
}

void untrack_child(ProcessState* state) {
  RegistryLock lock;
  auto& children = registry().children;
  children.erase(std::remove(children.begin(), children.end(), state), children.end());
}

std::vector<ProcessInfo> list_active_children() {
  RegistryLock lock;
  std::vector<ProcessInfo> alive;
  for (ProcessState* state : registry().children) {
    // Never wait for a state's mutex here: another thread may hold it for as long as a
    // join lasts. A tracked child's pidfd stays open until its Process is destroyed (which
    // untracks it under this lock first), so it can be polled without that mutex; the child
    // is then only looked at, and reaped by whoever holds the mutex.
    std::unique_lock guard(state->mutex, std::try_to_lock);
    const bool ended = guard.owns_lock() ? state->wait_locked(0)
                                         : poll_one(state->child.pidfd.get(), POLLIN, 0);
    if (!ended) alive.emplace_back(state->child.pid, state->identity.name);
  }
  return alive;
}

void track_parent_only_fd(int fd) {
  RegistryLock lock(registry().fds_mutex);
  registry().parent_only_fds.push_back(fd);
}

void untrack_parent_only_fd(int fd) {
  RegistryLock lock(registry().fds_mutex);
  auto& fds = registry().parent_only_fds;
  fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
}

void lock_registry_for_fork() {
  pthread_mutex_lock(&registry().mutex);
  pthread_mutex_lock(&registry().fds_mutex);
}
void unlock_registry_after_fork_in_parent() {
  pthread_mutex_unlock(&registry().fds_mutex);
  pthread_mutex_unlock(&registry().mutex);
}

void reset_registry_in_forked_child() {
  // Only the forking thread exists here; the lock it took before fork() is re-created.
  Registry& r = registry();
  for (int fd : r.parent_only_fds) ::close(fd);
  r.parent_only_fds.clear();
  r.children.clear();
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&r.mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  pthread_mutex_init(&r.fds_mutex, nullptr);
  reset_forkserver_in_forked_child();
}

}  // namespace mproc::detail

namespace mproc {

ProcessInfo current_process() {
  return ProcessInfo(::getpid(), detail::self().name);
}

std::optional<ProcessInfo> parent_process() { return detail::self().parent; }

std::vector<ProcessInfo> active_children() { return detail::list_active_children(); }

}  // namespace mproc
