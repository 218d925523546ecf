// mproc/serialize.hpp — how values cross a process boundary: bytes out, the same value back.
//
// Two encodings, chosen at compile time by the type alone (both sides agree by construction):
//   * memcpy fast path: trivially copyable types without cereal functions (int, double, enums,
//     plain structs), and std::array, std::complex and std::chrono durations of them, are their
//     own sizeof(T) bytes; a top-level std::vector or std::basic_string of such elements is the
//     elements' bytes, with no length prefix.
//   * cereal: everything else, through mproc's own binary archives (detail/archive.hpp): types
//     with a serialize(Archive&) member or free function, or save/load pairs, and every std type
//     cereal supports. Plain structs nested inside are copied with one memcpy each.
// The encoding is for processes of the same program on the same machine: no endianness or
// versioning. Decoding never trusts its input: bad bytes give a SerializationError, never a
// crash, undefined behaviour or an allocation larger than the input warrants. The functions
// share no state (except cereal's registry of CEREAL_CLASS_VERSION types): any thread may call
// them at any time.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "mproc/detail/archive.hpp"
#include "mproc/errors.hpp"

namespace mproc {

/// True when values of T can be passed to serialize() and decoded by deserialize<T>().
///
/// That is: T is not (and holds no visible) raw pointer, reference or view, and it is either
/// trivially copyable, or has cereal serialization functions (and is default-constructible and
/// movable), with every element type of a std container qualifying as well. Pointers hidden
/// inside a trivially copyable struct cannot be detected: they would be copied as numbers.
template <class T>
concept Serializable = detail::serializable_value<std::remove_cv_t<T>>;

namespace detail {

/// Fails the build, with a message saying what to do, when T is not Serializable.
template <class T>
constexpr void require_serializable() {
  using U = std::remove_cv_t<T>;
  static_assert(!std::is_pointer_v<U>,
                "mproc: a raw pointer cannot cross a process boundary (the address means nothing "
                "in another process): send the pointee, a std::unique_ptr or a std::shared_ptr");
  static_assert(std::is_pointer_v<U> || !refused<U>::value,
                "mproc: T is or holds a pointer, reference or view (std::string_view, std::span, "
                "...) that cannot cross a process boundary: send an owning type instead");
  static_assert(refused<U>::value || Serializable<U>,
                "mproc: T cannot cross a process boundary: give it a serialize(Archive&) member or "
                "free function, or make it trivially copyable (cereal-serialized types must also "
                "be default-constructible, and so must the elements of std containers)");
}

inline void append_bytes(std::vector<std::byte>& out, const void* data, std::size_t size) {
  if (size == 0) return;
  const auto* p = static_cast<const std::byte*>(data);
  if (size >= huge_buffer_bytes) reserve_bulk(out, out.size() + size);
  out.insert(out.end(), p, p + size);
}

/// Where a fast-path value's bytes begin, and how many there are.
template <class T>
std::span<const std::byte> raw_bytes(const T& value) noexcept {
  if constexpr (raw_value<T>) {
    return {reinterpret_cast<const std::byte*>(std::addressof(value)), sizeof(T)};
  } else {
    using E = typename raw_range<T>::element;
    return {reinterpret_cast<const std::byte*>(value.data()), value.size() * sizeof(E)};
  }
}

template <class T>
void encode(std::vector<std::byte>& out, const T& value) {
  if constexpr (raw_value<T> || raw_range<T>::value) {
    const auto bytes = raw_bytes(value);
    append_bytes(out, bytes.data(), bytes.size());
  } else {
    const std::size_t old_size = out.size();
    try {
      OutputArchive archive(out);
      archive(value);
      archive.serializeDeferments();
    } catch (const SerializationError& e) {
      out.resize(old_size);
      throw SerializationError("cannot encode " + std::string(type_name<T>()) + ": " + e.what());
    } catch (const cereal::Exception& e) {
      out.resize(old_size);
      throw SerializationError("cannot encode " + std::string(type_name<T>()) + ": " + e.what());
    } catch (const std::bad_variant_access&) {
      out.resize(old_size);
      throw SerializationError("cannot encode " + std::string(type_name<T>()) +
                               ": it holds a std::variant that is valueless by exception");
    } catch (...) {
      out.resize(old_size);
      throw;
    }
  }
}

[[noreturn]] inline void throw_size_mismatch(std::string_view type, std::size_t expected,
                                             std::size_t got) {
  const std::string prefix = "cannot decode " + std::string(type) + ": ";
  if (got < expected)
    throw SerializationError(prefix + "truncated: needed " + std::to_string(expected) + " bytes, " +
                             std::to_string(got) + " left");
  throw SerializationError(prefix + std::to_string(got - expected) + " trailing bytes after its " +
                           std::to_string(expected) + "-byte encoding");
}

/// The object whose bytes start at p (which need not be aligned).
template <class T>
T from_bytes(const std::byte* p) noexcept {
  if constexpr (std::is_trivially_default_constructible_v<T>) {
    T value;
    std::memcpy(static_cast<void*>(std::addressof(value)), p, sizeof(T));
    return value;
  } else {
    std::array<std::byte, sizeof(T)> buffer;
    std::memcpy(buffer.data(), p, sizeof(T));
    return std::bit_cast<T>(buffer);
  }
}

template <class T>
T decode_raw(std::span<const std::byte> bytes) {
  if (bytes.size() != sizeof(T)) throw_size_mismatch(type_name<T>(), sizeof(T), bytes.size());
  if constexpr (holds_bool<T>::value) check_bools(bytes);
  return from_bytes<T>(bytes.data());
}

template <class T>
T decode_range(std::span<const std::byte> bytes) {
  using E = typename raw_range<T>::element;
  if (bytes.size() % sizeof(E) != 0)
    throw SerializationError("cannot decode " + std::string(type_name<T>()) + ": " +
                             std::to_string(bytes.size()) + " bytes are not a whole number of " +
                             std::to_string(sizeof(E)) + "-byte elements");
  const std::size_t count = bytes.size() / sizeof(E);
  if constexpr (byte_like<E>) {
    const auto* p = reinterpret_cast<const E*>(bytes.data());
    if (bytes.size() < huge_buffer_bytes) return T(p, p + count);
    T range;
    reserve_bulk(range, count);
    range.assign(p, p + count);
    return range;
  } else if constexpr (std::default_initializable<E>) {
    T range;
    reserve_bulk(range, count);
    range.resize(count);
    if (count != 0) std::memcpy(static_cast<void*>(range.data()), bytes.data(), bytes.size());
    return range;
  } else {
    T range;
    reserve_bulk(range, count);
    for (std::size_t i = 0; i < count; ++i) range.push_back(from_bytes<E>(&bytes[i * sizeof(E)]));
    return range;
  }
}

template <class T>
T decode_cereal(std::span<const std::byte> bytes) {
  const auto fail = [](const char* what) -> SerializationError {
    return SerializationError("cannot decode " + std::string(type_name<T>()) + ": " + what);
  };
  try {
    InputArchive archive(bytes);
    T value{};
    archive(value);
    archive.serializeDeferments();
    if (archive.remaining() != 0)
      throw SerializationError(std::to_string(archive.remaining()) + " trailing bytes after its " +
                               std::to_string(archive.offset()) + "-byte encoding");
    return value;
  } catch (const SerializationError& e) {
    throw fail(e.what());
  } catch (const cereal::Exception& e) {
    throw fail(e.what());
  } catch (const std::logic_error& e) {  // length_error, invalid_argument (std::bitset), ...
    throw fail(e.what());
  } catch (const std::bad_alloc&) {
    throw fail("corrupt input: out of memory while building the value");
  }
}

template <class T>
T decode(std::span<const std::byte> bytes) {
  if constexpr (raw_value<T>) {
    return decode_raw<T>(bytes);
  } else if constexpr (raw_range<T>::value) {
    return decode_range<T>(bytes);
  } else {
    return decode_cereal<T>(bytes);
  }
}

}  // namespace detail

/// Appends the encoding of value to out (which keeps its earlier contents).
///
/// Requires: Serializable<T>; otherwise the program does not compile, with a message saying why.
/// Throws SerializationError when value cannot be encoded (nesting deeper than the limit, a
/// valueless std::variant, an unregistered polymorphic type); out is then left as it was.
/// std::bad_alloc when out cannot grow.
template <class T>
void serialize_to(std::vector<std::byte>& out, const T& value) {
  detail::require_serializable<T>();
  if constexpr (Serializable<T>) detail::encode<std::remove_cv_t<T>>(out, value);
}

/// The encoding of value, as a new byte vector.
///
/// Example:
///   std::vector<std::byte> bytes = mproc::serialize(std::map<std::string, int>{{"a", 1}});
///   auto back = mproc::deserialize<std::map<std::string, int>>(bytes);
/// Throws as serialize_to().
template <class T>
std::vector<std::byte> serialize(const T& value) {
  detail::require_serializable<T>();
  std::vector<std::byte> out;
  if constexpr (Serializable<T>) {
    using U = std::remove_cv_t<T>;
    if constexpr (detail::raw_value<U> || detail::raw_range<U>::value) {
      const auto bytes = detail::raw_bytes<U>(value);
      detail::reserve_bulk(out, bytes.size());
      out.assign(bytes.begin(), bytes.end());
    } else {
      out.reserve(64);  // most messages are small: skip the first few regrowths
      detail::encode<U>(out, value);
    }
  }
  return out;
}

/// The value whose encoding is bytes; all of bytes must be consumed.
///
/// Requires: Serializable<T>. The bytes may come from anywhere, including a crashed or hostile
/// process. Throws SerializationError on truncated, trailing, corrupt or implausible input (a
/// length prefix larger than the bytes left, a bool byte other than 0 or 1, too deep nesting,
/// a bad variant index or shared_ptr id); the message says what was wrong and where. Exceptions
/// that a user's own load function throws, other than std::logic_error, pass through unchanged.
/// Fast-path types are taken as their bytes: an enum or a struct with bool members decoded from
/// garbage may hold a value outside its range — validate such input in a load function.
template <class T>
T deserialize(std::span<const std::byte> bytes) {
  detail::require_serializable<T>();
  if constexpr (Serializable<T>) {
    return detail::decode<std::remove_cv_t<T>>(bytes);
  } else {
    std::abort();  // never compiled: require_serializable has already failed the build
  }
}

}  // namespace mproc
