// src/futex.hpp — sleeping and waking on a 32-bit word in shared memory, across processes
// (futex(2) without FUTEX_PRIVATE_FLAG), and the pause hint for the spin that comes first.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

namespace mproc::detail {

static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
                  sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "a futex word must be a plain 32-bit word in shared memory");

/// Sleeps while `word == expected`, at most `timeout` (negative = forever).
/// Returns false on timeout, true otherwise: woken, the value had already changed, or
/// spuriously (a signal): callers re-check their condition in a loop.
/// Throws std::system_error only for a bad address.
bool futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1));

/// Wakes up to `count` processes sleeping in futex_wait on `word`.
void futex_wake(const std::atomic<std::uint32_t>& word, int count = INT_MAX) noexcept;

/// Tells the CPU this is a spin-wait: frees the core's resources for its sibling hyperthread
/// and avoids the memory-order mis-speculation penalty when the awaited line changes.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace mproc::detail
