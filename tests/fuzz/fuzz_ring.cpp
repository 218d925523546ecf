// tests/fuzz/fuzz_ring.cpp — libFuzzer target: an SpscRing whose shared memory a hostile or
// buggy peer rewrites between operations (header words, positions, record headers, payload).
//
// Input: byte 0 picks the ring's capacity (4096 or 8192), the rest is a script of operations
// (see `Op`): a producer writes records, a consumer reads and pops them, and "peer" steps
// overwrite any 8-byte word of the header or the data area, or re-attach to the memory. The
// ring must answer every operation, return records that lie inside its data area, or throw
// SerializationError (std::invalid_argument for a record too large to write); a crash, a
// sanitizer report or a hang is a finding. The memory is exactly header + data: ASan reports
// any read past it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>

#include "mproc/errors.hpp"
#include "spsc_ring.hpp"

namespace {

using mproc::detail::SpscRing;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_ring: %s\n", what);
  std::abort();
}

enum Op : std::uint8_t {
  op_write,         // u16 size: try_begin_write, fill, commit (commit_write of a smaller size)
  op_read,          // try_read, then pop
  op_read_no_pop,   // try_read without pop (the consumer dies before pop)
  op_poke_header,   // u8 word index, u64 value: a peer rewrites a header word
  op_poke_data,     // u16 offset, u64 value: a peer rewrites a word of the data area
  op_attach,        // attach a fresh handle (another process opens the ring)
  op_wait,          // wait_readable / wait_writable with a zero timeout, and the hint
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

struct AlignedFree {
  void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{128}); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t capacity = (data[0] & 1) ? 8192 : 4096;
  const std::size_t bytes = SpscRing::required_bytes(capacity);
  std::unique_ptr<std::byte, AlignedFree> memory(
      static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{128})));
  std::memset(memory.get(), 0, bytes);
  const std::span<std::byte> region(memory.get(), bytes);
  const std::size_t header_bytes = bytes - capacity;
  const std::byte* data_begin = memory.get() + header_bytes;
  const std::byte* data_end = memory.get() + bytes;

  SpscRing producer = SpscRing::create(region, capacity);
  SpscRing consumer = SpscRing::attach(region);
  Script script{data + 1, data + size};
  for (int steps = 0; !script.empty() && steps < 512; ++steps) {
    const auto op = static_cast<Op>(script.take(1) % op_count);
    try {
      switch (op) {
        case op_write: {
          const std::size_t length = script.take(2) % (producer.max_record_size() + 64);
          std::byte* at = producer.try_begin_write(length);
          if (!at) break;
          if (at < data_begin || at + length > data_end) finding("write space outside the ring");
          std::memset(at, 0xab, length);
          if (producer.commit_write(length / 2 + length % 2)) producer.wake_consumer();
          break;
        }
        case op_read:
        case op_read_no_pop: {
          std::optional<std::span<const std::byte>> record = consumer.try_read();
          if (!record) break;
          if (record->data() < data_begin || record->data() + record->size() > data_end)
            finding("a record outside the ring");
          // Touch every byte, so that ASan checks the whole span.
          volatile std::byte sum{};
          for (std::byte b : *record) sum = sum ^ b;
          if (op == op_read) consumer.pop();
          break;
        }
        case op_poke_header: {
          const std::size_t word = script.take(1) % (header_bytes / 8);
          const std::uint64_t value = script.take(8);
          std::memcpy(memory.get() + word * 8, &value, sizeof value);
          break;
        }
        case op_poke_data: {
          const std::size_t offset = script.take(2) % (capacity / 8) * 8;
          const std::uint64_t value = script.take(8);
          std::memcpy(memory.get() + header_bytes + offset, &value, sizeof value);
          break;
        }
        case op_attach:
          consumer = SpscRing::attach(region);
          break;
        case op_wait:
          (void)consumer.wait_readable(std::chrono::nanoseconds(0));
          (void)producer.wait_writable(16, std::chrono::nanoseconds(0));
          (void)consumer.records_available_hint();
          break;
        default:
          break;
      }
    } catch (const mproc::SerializationError&) {
      // Corruption detected: the expected answer to most pokes.
    } catch (const std::invalid_argument&) {
      // A record larger than max_record_size().
    } catch (const std::logic_error&) {
      // commit/pop without reservation cannot happen here, but attach after corruption can
      // leave a handle the script keeps using: only SerializationError/invalid_argument are
      // documented, so any other logic_error is a finding.
      finding("unexpected std::logic_error");
    }
  }
  return 0;
}
