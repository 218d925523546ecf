// src/shared_memory.cpp — SharedMemory (memfd or /dev/shm segments), the resource tracker that
// unlinks a dead creator's named segments, and ValueLock (the robust mutex of Value and Array).
//
// Who unlinks a named segment:
//
//   creator ── shm_open(O_EXCL) ── writes the name into the registry (a memfd both map) ──┐
//      │                                                                                  │
//      │ last handle destroyed: shm_unlink, clear the entry;                              ▼
//      │ no entry left: send 'q' on the command socket and reap the tracker     tracker (forked)
//      │                                                                   polls the creator's
//      └──── dies, even by SIGKILL ──▶ pidfd readable ──▶ tracker unlinks   pidfd and the socket
//                                                         every entry still set, then exits
//
// The tracker exists only while this process has named segments: tests (and users) see no
// helper process once the segments are gone. It is a fork of the creator that immediately drops
// every descriptor but its two, blocks all signals (a Ctrl-C to the process group must not stop
// it before it cleans up), and then only makes system calls: safe even when the creator has
// other threads. It holds no list of its own: the registry lives in shared memory, so nothing
// has to be sent to it when a segment is created or destroyed.
#include "mproc/shared_memory.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "shm_segment.hpp"
#include "sync/sync_segment.hpp"
#include "syscall.hpp"

namespace mproc {
namespace {

using detail::format_byte_size;
using detail::ShmSegment;
using detail::UniqueFd;

// ---------------------------------------------------------------------------------------------
// Names

constexpr std::size_t max_name_length = NAME_MAX;  // one path component in /dev/shm

/// The name without its optional leading '/'. Throws std::invalid_argument.
std::string normalize_name(std::string name) {
  if (!name.empty() && name.front() == '/') name.erase(0, 1);
  if (name.empty()) throw std::invalid_argument("a shared memory segment name cannot be empty");
  if (name.size() > max_name_length)
    throw std::invalid_argument("shared memory segment name '" + name.substr(0, 32) +
                                "...' is longer than " + std::to_string(max_name_length) +
                                " characters");
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos ||
      name == "." || name == "..")
    throw std::invalid_argument("shared memory segment name '" + name +
                                "' must be one path component (no '/' after the first)");
  return name;
}

// ---------------------------------------------------------------------------------------------
// The registry shared with the tracker

/// One named segment this process created. `state` is set (release) after `name` is written,
/// so the tracker never reads a half-written name.
struct RegistryEntry {
  std::atomic<std::uint32_t> state;  // 0 free, 1 set
  char name[max_name_length + 1];
};
constexpr std::uint32_t entry_free = 0;
constexpr std::uint32_t entry_set = 1;
constexpr std::size_t initial_entries = 64;

/// Unlinks every name still set in the registry behind `table_fd`. Only system calls: it runs
/// in the tracker, a fork of a possibly multi-threaded process.
void unlink_registered(int table_fd) noexcept {
  struct stat st {};
  if (::fstat(table_fd, &st) != 0 || st.st_size <= 0) return;
  const auto size = static_cast<std::size_t>(st.st_size);
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, table_fd, 0);
  if (address == MAP_FAILED) return;
  const auto* entries = static_cast<const RegistryEntry*>(address);
  for (std::size_t i = 0; i < size / sizeof(RegistryEntry); ++i) {
    if (entries[i].state.load(std::memory_order_acquire) != entry_set) continue;
    const char* name = entries[i].name;
    if (::memchr(name, '\0', sizeof entries[i].name) == nullptr || name[0] == '\0') continue;
    char path[sizeof "/dev/shm/" + max_name_length];
    std::memcpy(path, "/dev/shm/", 9);
    std::memcpy(path + 9, name, std::strlen(name) + 1);
    ::unlink(path);
  }
  ::munmap(address, size);
}

/// The tracker's whole life. `command_fd` and `table_fd` are its only descriptors worth keeping.
/// Runs with every signal blocked (since before the fork).
[[noreturn]] void tracker_main(pid_t creator, int command_fd, int table_fd) noexcept {
  // Keep descriptors 3 and 4; drop everything else this fork inherited: a copy of a pipe's
  // write end held here would keep some reader of the creator from ever seeing EOF.
  // (Copies numbered 5 or above first, so that neither dup2 overwrites the other source.)
  const int command = ::fcntl(command_fd, F_DUPFD, 5);
  const int table = ::fcntl(table_fd, F_DUPFD, 5);
  if (command < 0 || table < 0) ::_exit(1);
  ::dup2(command, 3);
  ::dup2(table, 4);
  if (::syscall(SYS_close_range, 5U, ~0U, 0U) != 0)
    for (int fd = 5; fd < 65536; ++fd) ::close(fd);
  const int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    if (null_fd > 4) ::close(null_fd);
  }

  // The creator is this process's parent. If it died before pidfd_open, the parent is already
  // someone else: clean up at once. Without pidfds (kernels before 5.3), EOF on the command
  // socket and a periodic getppid() check stand in.
  const int creator_fd = static_cast<int>(::syscall(SYS_pidfd_open, creator, 0));
  for (;;) {
    if (::getppid() != creator) break;
    pollfd fds[2] = {{3, POLLIN, 0}, {creator_fd, POLLIN, 0}};
    const int n = ::poll(fds, creator_fd >= 0 ? 2 : 1, creator_fd >= 0 ? -1 : 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (creator_fd >= 0 && fds[1].revents != 0) break;
    if (fds[0].revents != 0) {
      char command_byte = 0;
      const ssize_t got = ::read(3, &command_byte, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got == 1 && command_byte == 'q') ::_exit(0);  // the creator unlinked everything
      break;                                            // EOF or error: the creator is gone
    }
  }
  unlink_registered(4);
  ::_exit(0);
}

/// This process's tracker and registry. One per process; a forked child inherits the parent's
/// copy and must not use it (see reset_if_inherited).
struct Tracker {
  std::mutex mutex;
  pid_t owner = 0;  // the process this state belongs to
  pid_t pid = 0;    // the tracker process, 0 when none runs
  UniqueFd pidfd;   // the tracker's pidfd
  UniqueFd command;
  ShmSegment table;
  std::unordered_map<std::string, std::size_t> slots;
};

Tracker* tracker_instance = nullptr;

Tracker& tracker() {
  // Leaked on purpose: segments held by static objects may be destroyed after it would be.
  static Tracker* const instance = [] {
    tracker_instance = new Tracker;
    // A child forked while another thread held the mutex would find it locked forever.
    // The child never uses the parent's state (reset_if_inherited), so a fresh mutex is
    // all it needs.
    ::pthread_atfork(nullptr, nullptr, [] { new (&tracker_instance->mutex) std::mutex; });
    return tracker_instance;
  }();
  return *instance;
}

/// In a forked child: forgets the parent's tracker and registry (closing this process's copies
/// of their descriptors; the parent's tracker and entries are untouched).
void reset_if_inherited(Tracker& t) {
  if (t.owner == ::getpid()) return;
  t.owner = ::getpid();
  t.pid = 0;
  t.pidfd.reset();
  t.command.reset();
  t.table = ShmSegment();
  t.slots.clear();
}

/// Ends the tracker: asks it to exit, waits for it (bounded: a stopped or wedged tracker is
/// killed) and reaps it. Called with the mutex held, once no entry is set.
void stop_tracker(Tracker& t) noexcept {
  if (t.pid == 0) return;
  const char quit = 'q';
  (void)::send(t.command.get(), &quit, 1, MSG_NOSIGNAL);
  bool ended = false;
  try {
    ended = detail::poll_one(t.pidfd.get(), POLLIN, 10'000);
  } catch (...) {
  }
  if (!ended) ::kill(t.pid, SIGKILL);
  // ECHILD when the program reaps children itself (SIGCHLD ignored): nothing left to do.
  (void)detail::retry_eintr([&] { return ::waitpid(t.pid, nullptr, 0); });
  t.pid = 0;
  t.pidfd.reset();
  t.command.reset();
}

/// Starts the tracker (with the mutex held) unless it runs. One that has died (killed by
/// someone) is reaped and replaced, so that new segments are watched again.
void start_tracker(Tracker& t) {
  if (t.pid != 0 && !detail::poll_one(t.pidfd.get(), POLLIN, 0)) return;
  if (t.pid != 0) stop_tracker(t);
  if (!t.table.data())
    t.table = ShmSegment::create(initial_entries * sizeof(RegistryEntry), "mproc-shm-registry");
  auto [ours, theirs] = detail::make_socketpair();
  const pid_t creator = ::getpid();
  // Signals stay blocked from before the fork: a Ctrl-C that reached the tracker between
  // fork() and its own sigprocmask() would end it before it could ever clean up.
  sigset_t all, previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t pid = ::fork();
  if (pid == 0) tracker_main(creator, theirs.get(), t.table.fd());
  const int fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) detail::throw_errno(fork_error, "cannot start the shared memory resource tracker (fork)");
  theirs.reset();
  UniqueFd pidfd;
  try {
    pidfd = UniqueFd(detail::pidfd_open(pid));
  } catch (...) {
    ::kill(pid, SIGKILL);
    (void)detail::retry_eintr([&] { return ::waitpid(pid, nullptr, 0); });
    throw;
  }
  t.pid = pid;
  t.pidfd = std::move(pidfd);
  t.command = std::move(ours);
}

RegistryEntry* registry_entries(Tracker& t) {
  return reinterpret_cast<RegistryEntry*>(t.table.data());
}

/// Records `name` (a segment this process just created) so that the tracker unlinks it should
/// this process die. Throws std::system_error when the tracker cannot be started.
void track(const std::string& name) {
  Tracker& t = tracker();
  std::scoped_lock hold(t.mutex);
  reset_if_inherited(t);
  start_tracker(t);
  std::size_t capacity = t.table.size() / sizeof(RegistryEntry);
  std::size_t slot = 0;
  auto* entries = registry_entries(t);
  while (slot < capacity && entries[slot].state.load(std::memory_order_relaxed) != entry_free)
    ++slot;
  if (slot == capacity) {
    t.table.grow(2 * capacity * sizeof(RegistryEntry));
    entries = registry_entries(t);
  }
  std::memcpy(entries[slot].name, name.c_str(), name.size() + 1);
  entries[slot].state.store(entry_set, std::memory_order_release);
  t.slots[name] = slot;
}

/// Unlinks `name` and forgets it; stops the tracker when it was the last. Never throws.
void unlink_tracked(const std::string& name) noexcept {
  char path[max_name_length + 2] = "/";
  std::memcpy(path + 1, name.c_str(), std::min(name.size(), max_name_length) + 1);
  path[max_name_length + 1] = '\0';
  ::shm_unlink(path);
  Tracker& t = tracker();
  std::scoped_lock hold(t.mutex);
  reset_if_inherited(t);
  auto it = t.slots.find(name);
  if (it == t.slots.end()) return;
  registry_entries(t)[it->second].state.store(entry_free, std::memory_order_release);
  t.slots.erase(it);
  if (t.slots.empty()) stop_tracker(t);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SharedMemory

struct SharedMemory::State {
  ShmSegment segment;
  std::string name;
  pid_t creator = 0;  // the process that unlinks `name` when this state goes; 0: none

  State(ShmSegment s, std::string n, pid_t c) noexcept
      : segment(std::move(s)), name(std::move(n)), creator(c) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    // A forked child's copy of the creator's state must not unlink the parent's segment.
    if (creator != 0 && creator == ::getpid()) unlink_tracked(name);
  }
};

SharedMemory::SharedMemory(std::shared_ptr<State> state) noexcept
    : state_(std::move(state)), data_(state_->segment.data()), size_(state_->segment.size()) {}

SharedMemory SharedMemory::create(std::size_t size) {
  return SharedMemory(std::make_shared<State>(ShmSegment::create(size, "mproc-shared-memory"),
                                              std::string(), 0));
}

namespace {
void check_size(std::size_t size) {
  if (size == 0) throw std::invalid_argument("a shared memory segment cannot be empty");
  if (size > detail::max_segment_bytes)
    throw std::invalid_argument("shared memory segment of " + format_byte_size(size) +
                                " is larger than the limit of " +
                                format_byte_size(detail::max_segment_bytes));
}
}  // namespace

SharedMemory SharedMemory::create(std::size_t size, std::string name) {
  name = normalize_name(std::move(name));
  check_size(size);
  const std::string what =
      "cannot create shared memory segment '" + name + "' of " + format_byte_size(size);
  const std::string path = "/" + name;
  UniqueFd fd(detail::retry_eintr(
      [&] { return ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600); }));
  if (!fd) {
    if (errno == EEXIST) detail::throw_errno(what + ": the name is taken");
    detail::throw_errno(what);
  }
  // From here the name is ours: registered with the tracker at once (a crash before that
  // would leak it), unlinked on every failure below.
  try {
    track(name);
  } catch (...) {
    ::shm_unlink(path.c_str());
    throw;
  }
  try {
    // The umask may have taken bits away from 0600; make the mode exactly that.
    detail::check_syscall(what.c_str(), [&] { return ::fchmod(fd.get(), 0600); });
    detail::check_syscall(what.c_str(),
                          [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); });
    // Reserve the pages now: /dev/shm is a size-limited tmpfs (64 MiB in a default Docker
    // container) and, unreserved, the first write past its room would be a SIGBUS.
    const int rc = detail::retry_eintr(
        [&] { return ::fallocate(fd.get(), 0, 0, static_cast<off_t>(size)); });
    if (rc != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
      if (errno == ENOSPC) detail::throw_errno(what + ": /dev/shm is full");
      detail::throw_errno(what + " (fallocate)");
    }
    auto segment = ShmSegment::attach(std::move(fd));
    return SharedMemory(std::make_shared<State>(std::move(segment), name, ::getpid()));
  } catch (...) {
    unlink_tracked(name);
    throw;
  }
}

SharedMemory SharedMemory::attach(const std::string& name_or_path) {
  const std::string name = normalize_name(name_or_path);
  const std::string what = "cannot attach shared memory segment '" + name + "'";
  const std::string path = "/" + name;
  UniqueFd fd(detail::retry_eintr([&] { return ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0); }));
  if (!fd) {
    if (errno == ENOENT) detail::throw_errno(what + ": there is no segment of that name");
    detail::throw_errno(what);
  }
  auto segment = ShmSegment::attach(std::move(fd));
  if (segment.size() == 0)
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            what + ": it is empty (its creator has not sized it yet)");
  return SharedMemory(std::make_shared<State>(std::move(segment), name, 0));
}

SharedMemory SharedMemory::from_fd(int fd, std::uint64_t size, std::string name) {
  UniqueFd owned(fd);
  if (!name.empty()) name = normalize_name(std::move(name));
  if (size == 0 || size > detail::max_segment_bytes)
    throw SerializationError("cannot decode mproc::SharedMemory: bad size " + std::to_string(size));
  auto segment = ShmSegment::attach(std::move(owned));
  if (segment.size() < size)
    throw SerializationError("cannot decode mproc::SharedMemory: the segment has " +
                             format_byte_size(segment.size()) + ", " +
                             format_byte_size(static_cast<std::size_t>(size)) + " expected");
  SharedMemory memory(std::make_shared<State>(std::move(segment), std::move(name), 0));
  memory.size_ = static_cast<std::size_t>(size);
  return memory;
}

void SharedMemory::close_fd(int fd) noexcept { UniqueFd(fd).reset(); }

const std::string& SharedMemory::name() const noexcept {
  static const std::string none;
  return state_ ? state_->name : none;
}

int SharedMemory::native_handle() const noexcept { return state_ ? state_->segment.fd() : -1; }

// ---------------------------------------------------------------------------------------------
// ValueLock

/// The start of a Value's or Array's segment. `depth` and `owner_died` are written only by the
/// thread that holds the mutex; atomics so that owner_died() may peek without a data race.
struct ValueLock::Header {
  pthread_mutex_t mutex;
  std::atomic<std::uint32_t> depth;       // nesting of the current owner (recursive mutex)
  std::atomic<std::uint32_t> owner_died;  // the current owner took over from a dead one
  std::atomic<pid_t> owner_tid;           // the thread holding it (0: none)
  std::uint64_t count;                    // an Array's length (1 for a Value)
};

std::size_t ValueLock::payload_offset(std::size_t alignment) noexcept {
  const std::size_t align = std::max<std::size_t>(alignment, 64);
  return (sizeof(Header) + align - 1) / align * align;
}

std::shared_ptr<ValueLock> ValueLock::create(std::size_t alignment, std::size_t payload_bytes,
                                             std::uint64_t count) {
  auto memory = SharedMemory::create(payload_offset(alignment) + payload_bytes);
  auto* header = new (memory.data()) Header{};
  header->count = count;
  detail::init_robust_mutex(header->mutex, PTHREAD_MUTEX_RECURSIVE);
  return std::shared_ptr<ValueLock>(new ValueLock(std::move(memory), header));
}

std::shared_ptr<ValueLock> ValueLock::adopt(SharedMemory memory, std::size_t alignment,
                                            std::size_t element_bytes, std::uint64_t count) {
  const std::size_t offset = payload_offset(alignment);
  if (memory.size() < offset || count == 0 ||
      count > (memory.size() - offset) / std::max<std::size_t>(element_bytes, 1))
    throw SerializationError("cannot decode a shared Value or Array: a segment of " +
                             format_byte_size(memory.size()) + " cannot hold " +
                             std::to_string(count) + " element(s) of " +
                             std::to_string(element_bytes) + " bytes");
  auto* header = reinterpret_cast<Header*>(memory.data());
  if (!detail::robust_mutex_type_matches(header->mutex, PTHREAD_MUTEX_RECURSIVE))
    throw SerializationError("cannot decode a shared Value or Array: its lock is not one mproc "
                             "made (a process wrote over it)");
  if (header->count != count)
    throw SerializationError("cannot decode a shared Value or Array: it was created with " +
                             std::to_string(header->count) + " element(s), not " +
                             std::to_string(count));
  return std::shared_ptr<ValueLock>(new ValueLock(std::move(memory), header));
}

namespace {
/// Bookkeeping after the robust mutex's lock (sync_segment.hpp) gave `result`; true when the
/// lock is now held.
bool after_acquire(detail::LockResult result, std::atomic<std::uint32_t>& depth,
                   std::atomic<std::uint32_t>& owner_died, std::atomic<pid_t>& owner_tid) {
  switch (result) {
    case detail::LockResult::acquired:
      if (depth.load(std::memory_order_relaxed) == 0) {
        owner_died.store(0, std::memory_order_relaxed);
        owner_tid.store(::gettid(), std::memory_order_relaxed);
      }
      depth.fetch_add(1, std::memory_order_relaxed);
      return true;
    case detail::LockResult::owner_died:
      // The previous owner died holding it (the mutex is consistent again): the data may not
      // be, which owner_died() tells the caller.
      depth.store(1, std::memory_order_relaxed);
      owner_died.store(1, std::memory_order_relaxed);
      owner_tid.store(::gettid(), std::memory_order_relaxed);
      return true;
    case detail::LockResult::timed_out:
      return false;
  }
  return false;
}
}  // namespace

void ValueLock::lock() {
  after_acquire(detail::robust_lock(header_->mutex, detail::no_deadline, "Value"), header_->depth,
                header_->owner_died, header_->owner_tid);
}

bool ValueLock::try_lock() {
  return after_acquire(detail::robust_try_lock(header_->mutex, "Value"), header_->depth, header_->owner_died,
                       header_->owner_tid);
}

bool ValueLock::lock_until(std::chrono::steady_clock::time_point deadline) {
  if (try_lock()) return true;
  return after_acquire(detail::robust_lock(header_->mutex, deadline, "Value"), header_->depth,
                       header_->owner_died, header_->owner_tid);
}

void ValueLock::unlock() {
  if (header_->owner_tid.load(std::memory_order_relaxed) != ::gettid() ||
      header_->depth.load(std::memory_order_relaxed) == 0)
    detail::throw_errno(EPERM, "cannot unlock the lock of a shared value: this thread does not "
                               "hold it");
  if (header_->depth.fetch_sub(1, std::memory_order_relaxed) == 1) {
    header_->owner_died.store(0, std::memory_order_relaxed);
    header_->owner_tid.store(0, std::memory_order_relaxed);
  }
  const int rc = ::pthread_mutex_unlock(&header_->mutex);
  if (rc != 0) detail::throw_errno(rc, "cannot unlock the lock of a shared value");
}

bool ValueLock::owner_died() const noexcept {
  return header_->owner_died.load(std::memory_order_relaxed) != 0;
}

}  // namespace mproc
