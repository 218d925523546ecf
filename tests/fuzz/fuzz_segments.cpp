// tests/fuzz/fuzz_segments.cpp — libFuzzer target: shared-memory segments a peer hands over
// (a memfd received with SCM_RIGHTS) with garbage in them: the segments of Lock, RLock,
// Semaphore, BoundedSemaphore, Event, Condition and Barrier, of a Queue, a SharedMemory, a
// Value / Array and an SpscRing, and the archive bytes that travel beside the descriptor.
//
// Input: byte 0 picks the kind, bytes 1-2 the segment's length L (little-endian), byte 3 how
// many zero pages follow it, then L bytes of segment content, then the archive bytes the
// handle is decoded from (the descriptor is entry 0). Decoding must give a handle or throw
// SerializationError (std::system_error when the segment cannot be mapped); the operations
// that cannot block are then tried on the handle. A crash, a sanitizer report, a read past
// the mapping or a hang is a finding. Operations that take a segment's mutex without a
// deadline are not tried: a peer can always deadlock a lock it shares.
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <span>
#include <system_error>

#include "mproc/detail/fd_transfer.hpp"
#include "mproc/errors.hpp"
#include "mproc/queue.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"
#include "spsc_ring.hpp"
#include "syscall.hpp"

namespace {

using namespace std::chrono_literals;
using Bytes = std::span<const std::byte>;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_segments: %s\n", what);
  std::abort();
}

/// Reads every byte of `bytes`: a read past the mapping faults.
void touch(Bytes bytes) {
  volatile std::byte sum{};
  for (std::byte b : bytes) sum = sum ^ b;
}

/// Decodes T from `archive` with `fd` as descriptor entry 0.
template <class T>
T decode(int fd, Bytes archive) {
  mproc::detail::FdSource source({::dup(fd)});
  mproc::detail::ScopedFdSource use(source);
  return mproc::deserialize<T>(archive);
}

/// The operations of each handle that return without waiting.
void operate(const mproc::Lock& lock) {
  (void)lock.owner_died();
  if (lock.try_lock()) lock.unlock();
}
void operate(const mproc::RLock& lock) {
  if (lock.try_lock()) {
    if (lock.try_lock()) lock.unlock();
    lock.unlock();
  }
}
void operate(const mproc::Semaphore& semaphore) {
  (void)semaphore.get_value();
  if (semaphore.try_acquire()) semaphore.release();
  (void)semaphore.try_acquire_for(0ns);
}
void operate(const mproc::Event& event) {
  (void)event.is_set();
  (void)event.wait_for(0ns);
  event.set();
  event.clear();
}
void operate(const mproc::Condition& condition) {
  if (condition.try_lock()) {
    condition.notify_all();
    (void)condition.wait_for(0ns);
    condition.unlock();
  }
}
void operate(const mproc::Barrier&) {
  // Every Barrier operation takes the segment's mutex without a deadline (a garbage mutex that
  // looks held blocks it for ever, see the banner): decoding is what is fuzzed.
}

template <class T>
void sync_case(int fd, Bytes archive) {
  T handle;
  try {
    handle = decode<T>(fd, archive);
  } catch (const mproc::SerializationError&) {
    return;
  }
  try {
    operate(handle);
  } catch (const mproc::SerializationError&) {
  } catch (const mproc::Error&) {
    // BrokenBarrierError, TimeoutError and the like: the primitive's own answers.
  } catch (const std::logic_error&) {
    // unlock of a lock this thread does not hold (its state said so), a semaphore released
    // above its bound.
  } catch (const std::system_error&) {
    // A pthread call refused the mutex.
  } catch (const std::overflow_error&) {
    // Semaphore::release past INT_MAX (the count a peer wrote since it was decoded).
  }
}

void queue_case(int fd) {
  try {
    auto queue = mproc::detail::ByteQueue::attach(::dup(fd), 0x1234);
    (void)queue.capacity_bytes();
    (void)queue.maxsize();
  } catch (const mproc::SerializationError&) {
  }
}

void shared_memory_case(int fd, Bytes archive) {
  try {
    auto memory = decode<mproc::SharedMemory>(fd, archive);
    touch(memory.bytes());
  } catch (const mproc::SerializationError&) {
  }
}

void array_case(int fd, Bytes archive) {
  try {
    auto value = decode<mproc::Value<int>>(fd, archive);
    if (value) (void)value.get_lock().owner_died();  // the archive may say "no segment"
  } catch (const mproc::SerializationError&) {
  }
  try {
    auto array = decode<mproc::Array<double>>(fd, archive);
    touch(std::as_bytes(array.span()));
  } catch (const mproc::SerializationError&) {
  }
}

void ring_case(std::byte* mapping, std::size_t size) {
  try {
    auto ring = mproc::detail::SpscRing::attach({mapping, size});
    for (int i = 0; i < 16; ++i) {
      auto record = ring.try_read();
      if (!record) break;
      touch(*record);
      ring.pop();
    }
  } catch (const mproc::SerializationError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const unsigned kind = data[0] % 12;
  const std::size_t length = std::min<std::size_t>(data[1] | data[2] << 8, size - 4);
  const std::size_t zero_pages = data[3] % 4;
  const std::uint8_t* content = data + 4;
  const Bytes archive(reinterpret_cast<const std::byte*>(content + length), size - 4 - length);

  mproc::detail::UniqueFd fd(::memfd_create("fuzz-segment", MFD_CLOEXEC));
  if (!fd) finding("memfd_create failed");
  const std::size_t segment_bytes = length + zero_pages * 4096;
  if (::ftruncate(fd.get(), static_cast<off_t>(segment_bytes)) != 0) finding("ftruncate failed");
  if (length && ::pwrite(fd.get(), content, length, 0) != static_cast<ssize_t>(length))
    finding("pwrite failed");

  switch (kind) {
    case 0: sync_case<mproc::Lock>(fd.get(), archive); break;
    case 1: sync_case<mproc::RLock>(fd.get(), archive); break;
    case 2: sync_case<mproc::Semaphore>(fd.get(), archive); break;
    case 3: sync_case<mproc::BoundedSemaphore>(fd.get(), archive); break;
    case 4: sync_case<mproc::Event>(fd.get(), archive); break;
    case 5: sync_case<mproc::Condition>(fd.get(), archive); break;
    case 6: sync_case<mproc::Barrier>(fd.get(), archive); break;
    case 7: queue_case(fd.get()); break;
    case 8: shared_memory_case(fd.get(), archive); break;
    case 9:
    case 10: array_case(fd.get(), archive); break;
    case 11: {
      if (segment_bytes == 0) break;
      void* mapping = ::mmap(nullptr, segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
      if (mapping == MAP_FAILED) finding("mmap failed");
      ring_case(static_cast<std::byte*>(mapping), segment_bytes);
      ::munmap(mapping, segment_bytes);
      break;
    }
  }
  return 0;
}
