// src/pool/overflow.cpp — large payloads in their own reusable shared-memory segment.
#include "pool/overflow.hpp"

#include <bit>
#include <cstring>
#include <string>

#include "futex.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail {

OverflowChannel OverflowChannel::create() {
  OverflowChannel channel;
  channel.segment_ = ShmSegment::create(4096, "mproc-pool-overflow");
  new (channel.segment_.data()) Header{};
  return channel;
}

OverflowChannel OverflowChannel::attach(UniqueFd fd) {
  OverflowChannel channel;
  channel.segment_ = ShmSegment::attach(std::move(fd));
  if (channel.segment_.size() < data_offset) throw SerializationError("overflow segment is too small");
  return channel;
}

bool OverflowChannel::busy() const noexcept { return header()->busy.load(std::memory_order_acquire) != 0; }

void OverflowChannel::wait_free() {
  while (header()->busy.load(std::memory_order_acquire) != 0) futex_wait(header()->busy, 1);
}

void OverflowChannel::write(std::span<const std::byte> payload) {
  std::byte* data = prepare(payload.size());
  if (!payload.empty()) std::memcpy(data, payload.data(), payload.size());
  commit(payload.size());
}

std::byte* OverflowChannel::prepare(std::size_t length) {
  const std::size_t needed = data_offset + length;
  if (needed > segment_.size()) segment_.grow(std::bit_ceil(needed));
  return segment_.data() + data_offset;
}

void OverflowChannel::commit(std::size_t length) {
  header()->length.store(length, std::memory_order_relaxed);
  header()->busy.store(1, std::memory_order_release);
}

std::span<const std::byte> OverflowChannel::read(std::uint64_t length) {
  segment_.refresh();
  if (header()->busy.load(std::memory_order_acquire) != 1)
    throw SerializationError("a ring record points to an overflow payload that is not there");
  if (header()->length.load(std::memory_order_relaxed) != length || data_offset + length > segment_.size())
    throw SerializationError("an overflow payload of " + std::to_string(length) +
                             " bytes does not match its segment");
  return {segment_.data() + data_offset, static_cast<std::size_t>(length)};
}

void OverflowChannel::release() {
  header()->busy.store(0, std::memory_order_release);
  futex_wake(header()->busy);
}

}  // namespace mproc::detail
