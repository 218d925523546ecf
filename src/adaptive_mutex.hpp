// src/adaptive_mutex.hpp — a mutex that spins briefly before it sleeps, for locks held for
// a few hundred nanoseconds by two busy threads (a submitter and a result drainer).
#pragma once

#include <pthread.h>

namespace mproc::detail {

/// glibc's adaptive mutex: a contended lock() spins for a while (glibc.pthread.mutex_spin_count)
/// before it sleeps on the futex, so a short critical section in another thread costs a
/// spin, not a sleep and a wake-up (~45 µs across CPUs). Meets the Lockable requirements.
class AdaptiveMutex {
 public:
  AdaptiveMutex() noexcept {
    pthread_mutexattr_t attributes;
    ::pthread_mutexattr_init(&attributes);
#if defined(PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP)
    ::pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    ::pthread_mutex_init(&mutex_, &attributes);
    ::pthread_mutexattr_destroy(&attributes);
  }
  ~AdaptiveMutex() { ::pthread_mutex_destroy(&mutex_); }
  AdaptiveMutex(const AdaptiveMutex&) = delete;
  AdaptiveMutex& operator=(const AdaptiveMutex&) = delete;

  void lock() noexcept { ::pthread_mutex_lock(&mutex_); }
  bool try_lock() noexcept { return ::pthread_mutex_trylock(&mutex_) == 0; }
  void unlock() noexcept { ::pthread_mutex_unlock(&mutex_); }

 private:
  pthread_mutex_t mutex_;
};

}  // namespace mproc::detail
