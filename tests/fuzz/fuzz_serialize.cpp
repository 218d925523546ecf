// tests/fuzz/fuzz_serialize.cpp — libFuzzer target: decoding arbitrary bytes either fails with
// SerializationError or gives a value that survives another round trip unchanged.
//
// Input: byte 0 picks the type (see fuzz_types.hpp), the rest is its encoding. A crash, a
// sanitizer report, a leak, an exception other than SerializationError escaping, or a round
// trip that changes the value is a finding.
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>

#include "fuzz_types.hpp"

namespace {

[[noreturn]] void finding(const char* what, std::size_t case_index) {
  std::fprintf(stderr, "fuzz_serialize: case %zu: %s\n", case_index, what);
  std::abort();
}

template <class T>
std::optional<T> try_decode(std::span<const std::byte> bytes) {
  try {
    return mproc::deserialize<T>(bytes);
  } catch (const mproc::SerializationError&) {
    return std::nullopt;  // the expected outcome for most inputs
  }
}

template <class C>
void run_case(std::size_t index, std::span<const std::byte> payload) {
  using T = typename C::type;
  std::optional<T> first = try_decode<T>(payload);
  if (!first) return;

  // What decoded must re-encode, and decode again to the same value. Errors here are findings:
  // they escape as exceptions, which libFuzzer reports.
  const std::vector<std::byte> encoded = mproc::serialize(*first);
  const T second = mproc::deserialize<T>(encoded);
  if constexpr (C::value_equality) {
    if (!(second == *first)) finding("the value changed in a round trip", index);
  }
  if constexpr (C::byte_equality) {
    if (mproc::serialize(second) != encoded) finding("re-encoding changed the bytes", index);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t index = data[0] % mproc_fuzz::case_count;
  const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  mproc_fuzz::visit_case(index, [&]<class C>() { run_case<C>(index, payload); });
  return 0;
}
