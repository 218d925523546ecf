// tests/fuzz/fuzz_queue.cpp — libFuzzer target: the shared byte queue behind Queue<T> when a
// peer rewrites its segment (header fields, the published states, the records in the ring)
// between operations.
//
// Input: byte 0 = ring capacity (16 + 8·n bytes), byte 1 = maxsize, then a script of
// operations (see `Op`). Every operation must succeed, time out at once (timeouts are 0) or
// throw SerializationError (the queue's "shared state is corrupt"), std::invalid_argument (an
// item too large) or std::logic_error (task_done too often); a crash, a sanitizer report, an
// item longer than the ring or a hang is a finding. The robust mutex itself is never
// overwritten: a peer can always deadlock a lock it shares, and that is not a decoding matter.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <stdexcept>
#include <sys/mman.h>
#include <vector>

#include "mproc/errors.hpp"
#include "mproc/queue.hpp"

namespace {

using mproc::detail::ByteQueue;
using std::chrono::nanoseconds;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_queue: %s\n", what);
  std::abort();
}

// The layout of src/queue.cpp's Header: magic, version, header_size, capacity, maxsize and
// type_tag (40 bytes), then the mutex, then `current`, the states and the futex words.
constexpr std::size_t mutex_offset = 40;
constexpr std::size_t after_mutex = mutex_offset + sizeof(pthread_mutex_t);
constexpr std::size_t header_bytes = 4096;
constexpr std::uint64_t type_tag = 0x1234;

enum Op : std::uint8_t {
  op_put,          // u8 size
  op_get,
  op_poke_header,  // u8 word index (the first 256 bytes, mutex excluded), u64 value
  op_poke_ring,    // u8 offset, u64 value
  op_attach,       // a second handle from the descriptor (another process decodes the queue)
  op_task_done,
  op_sizes,        // qsize, unfinished_tasks, join(0)
  op_count
};

struct Script {
  const std::uint8_t* at;
  const std::uint8_t* end;
  bool empty() const { return at == end; }
  std::uint64_t take(std::size_t bytes) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < bytes && at != end; ++i) value |= std::uint64_t{*at++} << (8 * i);
    return value;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  mproc::QueueOptions options;
  options.capacity_bytes = 16 + 8 * static_cast<std::size_t>(data[0] % 64);
  options.maxsize = data[1] % 8;
  ByteQueue queue(options, type_tag);
  ByteQueue reader = queue;
  const std::size_t ring_bytes = queue.capacity_bytes();
  // A second mapping of the same pages: the peer's view.
  void* mapped = ::mmap(nullptr, header_bytes + ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                        queue.fd(), 0);
  if (mapped == MAP_FAILED) finding("cannot map the queue");
  auto* peer = static_cast<std::byte*>(mapped);

  Script script{data + 2, data + size};
  std::vector<std::byte> item;
  std::vector<std::byte> out;
  for (int steps = 0; !script.empty() && steps < 256; ++steps) {
    const auto op = static_cast<Op>(script.take(1) % op_count);
    try {
      switch (op) {
        case op_put:
          item.assign(script.take(1), std::byte{0x5a});
          (void)queue.put(item, nanoseconds::zero());
          break;
        case op_get:
          if (reader.get(out, nanoseconds::zero()) && out.size() > ring_bytes)
            finding("an item longer than the ring");
          break;
        case op_poke_header: {
          std::size_t offset = script.take(1) % 32 * 8;
          const std::uint64_t value = script.take(8);
          if (offset >= mutex_offset && offset < after_mutex) offset = after_mutex;
          std::memcpy(peer + offset, &value, sizeof value);
          break;
        }
        case op_poke_ring: {
          const std::size_t offset = script.take(1) % (ring_bytes / 8) * 8;
          const std::uint64_t value = script.take(8);
          std::memcpy(peer + header_bytes + offset, &value, sizeof value);
          break;
        }
        case op_attach: {
          const int fd = ::dup(queue.fd());
          if (fd < 0) finding("dup failed");
          reader = ByteQueue::attach(fd, type_tag);
          break;
        }
        case op_task_done:
          reader.task_done();
          break;
        case op_sizes:
          (void)reader.qsize();
          (void)reader.unfinished_tasks();
          (void)reader.join(nanoseconds::zero());
          break;
        default:
          break;
      }
    } catch (const mproc::SerializationError&) {
    } catch (const std::invalid_argument&) {
    } catch (const std::logic_error&) {
    }
  }
  ::munmap(mapped, header_bytes + ring_bytes);
  return 0;
}
