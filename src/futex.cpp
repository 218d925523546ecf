// src/futex.cpp — the futex(2) system calls behind futex_wait / futex_wake.
#include "futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "syscall.hpp"

namespace mproc::detail {
namespace {

std::uint32_t* address_of(const std::atomic<std::uint32_t>& word) {
  // The kernel compares and sleeps on the word itself; the static_assert in the header
  // guarantees the atomic is nothing but that word.
  return const_cast<std::uint32_t*>(reinterpret_cast<const std::uint32_t*>(&word));
}

}  // namespace

bool futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) {
  timespec relative{};
  timespec* limit = nullptr;
  if (timeout.count() >= 0) {
    // The kernel saturates very large relative timeouts, so nanoseconds::max() is fine.
    relative.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
    relative.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
    limit = &relative;
  }
  // FUTEX_WAIT (not _PRIVATE): the word lives in memory shared with other processes, so the
  // kernel must key the wait queue on the backing page, not on this process's address.
  long result = ::syscall(SYS_futex, address_of(word), FUTEX_WAIT, expected, limit, nullptr, 0);
  if (result == 0) return true;
  switch (errno) {
    case EAGAIN:  // the word no longer held `expected`: nothing to wait for
    case EINTR:   // a signal: spurious by contract, so a handler's flag gets looked at
      return true;
    case ETIMEDOUT:
      return false;
    default:
      throw_errno("futex wait");
  }
}

void futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  // The only possible failure is a bad address, which futex_wait would have reported.
  (void)::syscall(SYS_futex, address_of(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

}  // namespace mproc::detail
