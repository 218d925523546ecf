// mproc/detail/archive.hpp — the cereal archive pair behind serialize.hpp, and the rules that
// decide which types take the memcpy fast path. Internals only: include "mproc/serialize.hpp".
//
// The archives write into a std::vector<std::byte> and read from a std::span<const std::byte>
// with no std::stream in between. The input archive treats its bytes as hostile: every read is
// bounds-checked, every length prefix is checked against the bytes left before anything is
// allocated, a bool must be 0 or 1, nesting is limited, and shared_ptr back-references are
// checked for type and cycles. Every failure is a SerializationError.
#pragma once

#include <array>
#include <bit>
#include <cereal/archives/binary.hpp>  // only as a probe: see has_cereal_functions
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/atomic.hpp>
#include <cereal/types/bitset.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/forward_list.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/queue.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/stack.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/valarray.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>
#include <chrono>
#include <complex>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "mproc/errors.hpp"

namespace mproc::detail {

/// How deeply values may nest, counted in cereal process() calls: two per level of nested
/// containers, five per node of a unique_ptr chain. Bounds the stack that an encoding can make
/// the decoder use (about 64 KiB optimized, 1 MiB with ASan at -O0); the encoder enforces the
/// same limit, so whatever encodes also decodes.
inline constexpr unsigned max_nesting = 1024;

/// A length prefix may claim more elements than bytes are left only up to this count, for
/// elements that encode to nothing (empty classes): anything more is corrupt.
inline constexpr std::uint64_t max_zero_size_elements = 4096;

/// A readable name of T for error messages ("std::vector<int>"), taken from the compiler.
template <class T>
constexpr std::string_view type_name() noexcept {
  constexpr std::string_view f = __PRETTY_FUNCTION__;  // "... [with T = X; ...]" or "... [T = X]"
  constexpr auto start = f.find("T = ");
  if constexpr (start == std::string_view::npos) {
    return "T";
  } else {
    constexpr auto semicolon = f.find(';', start);
    constexpr auto end = semicolon != std::string_view::npos ? semicolon : f.rfind(']');
    return f.substr(start + 4, end - (start + 4));
  }
}

[[noreturn]] inline void throw_too_deep() {
  throw SerializationError("values nest deeper than " + std::to_string(max_nesting) +
                           " levels (recursive data, or corrupt input)");
}

// ---------------------------------------------------------------------------------------------
// The archives

/// Advises the kernel to back [data, data + size) with transparent huge pages where it can
/// (src/huge_pages.cpp); a hint that never fails.
void advise_huge_pages(const void* data, std::size_t size) noexcept;

/// Buffers from this size on are allocated ahead and advised to use huge pages before their
/// first touch (which then costs a fault per 2 MiB instead of per 4 KiB).
inline constexpr std::size_t huge_buffer_bytes = std::size_t{4} << 20;

/// Makes room in `buffer` (a vector or string) for `count` elements in all before they are
/// written, advising huge pages when the new storage is large.
template <class Buffer>
void reserve_bulk(Buffer& buffer, std::size_t count) {
  using E = typename Buffer::value_type;
  if (count <= buffer.capacity()) return;
  buffer.reserve(count);
  if (count * sizeof(E) >= huge_buffer_bytes) advise_huge_pages(buffer.data(), buffer.capacity() * sizeof(E));
}

/// Appends cereal's binary encoding of values to a byte vector.
class OutputArchive : public cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit OutputArchive(std::vector<std::byte>& out) noexcept
      : cereal::OutputArchive<OutputArchive, cereal::AllowEmptyClassElision>(this), out_(out) {}

  /// Appends size bytes. Throws std::bad_alloc when the vector cannot grow.
  void save_binary(const void* data, std::size_t size) {
    if (size == 0) return;  // data may be null (an empty vector's data())
    const auto* p = static_cast<const std::byte*>(data);
    if (size >= huge_buffer_bytes) reserve_bulk(out_, out_.size() + size);
    out_.insert(out_.end(), p, p + size);
  }

  void enter_nested() {
    if (++depth_ > max_nesting) throw_too_deep();
  }
  void leave_nested() noexcept { --depth_; }

 private:
  std::vector<std::byte>& out_;
  unsigned depth_ = 0;
};

/// Reads values back from bytes that may be truncated, corrupt or malicious.
class InputArchive : public cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit InputArchive(std::span<const std::byte> bytes) noexcept
      : cereal::InputArchive<InputArchive, cereal::AllowEmptyClassElision>(this),
        begin_(bytes.data()),
        cur_(bytes.data()),
        end_(bytes.data() + bytes.size()) {}

  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - cur_); }
  std::size_t offset() const noexcept { return static_cast<std::size_t>(cur_ - begin_); }

  /// Consumes the next size bytes. Throws SerializationError when fewer are left.
  std::span<const std::byte> take(std::uint64_t size) {
    if (size > remaining()) throw_truncated(size);
    const std::byte* p = cur_;
    cur_ += size;
    return {p, static_cast<std::size_t>(size)};
  }

  /// Reads size bytes into data. Throws SerializationError when fewer are left.
  void load_binary(void* data, std::size_t size) {
    const auto bytes = take(size);
    if (size != 0) std::memcpy(data, bytes.data(), size);
  }

  /// The next 4 bytes as a uint32, without consuming them.
  std::uint32_t peek_u32() const {
    if (remaining() < sizeof(std::uint32_t)) throw_truncated(sizeof(std::uint32_t));
    std::uint32_t v;
    std::memcpy(&v, cur_, sizeof v);
    return v;
  }

  /// Checks a length prefix before a container is sized from it: count elements must fit in
  /// the bytes left, except that up to max_zero_size_elements are allowed for elements that
  /// encode to nothing. Throws SerializationError.
  void check_count(std::uint64_t count) const {
    if (count > remaining() && count > max_zero_size_elements) throw_bad_count(count, 0);
  }

  /// Checks a length prefix of elements that encode to exactly element_size bytes each.
  void check_count(std::uint64_t count, std::size_t element_size) const {
    if (count > remaining() / element_size) throw_bad_count(count, element_size);
  }

  void enter_nested() {
    if (++depth_ > max_nesting) throw_too_deep();
  }
  void leave_nested() noexcept { --depth_; }

  /// The next shared_ptr loaded belongs to a std::weak_ptr, so it may refer to an object that
  /// is still being decoded (a weak back-edge, as in a tree's parent links).
  void permit_weak_reference() noexcept { weak_next_ = true; }

  /// Validates the shared_ptr id at hand before cereal acts on it. cereal itself would
  /// static_pointer_cast a back-reference to whatever object had that id (type confusion on
  /// forged input), and would build strong cycles that leak.
  void begin_shared_pointer(std::uint32_t id, const std::type_info& type) {
    const bool weak = weak_next_;
    weak_next_ = false;
    if (id == 0) return;  // a null pointer
    const std::uint32_t key = id & ~cereal::detail::msb_32bit;
    auto it = shared_.find(key);
    if (id & cereal::detail::msb_32bit) {
      if (it != shared_.end()) throw_shared("defined twice", key);
      shared_.emplace(key, SharedEntry{&type, true});
      return;
    }
    if (it == shared_.end()) throw_shared("referred to before it was defined", key);
    if (*it->second.type != type) throw_shared("refers to an object of another type", key);
    if (it->second.loading && !weak)
      throw_shared("closes a cycle of std::shared_ptr (it would leak; use std::weak_ptr)", key);
  }

  void end_shared_pointer(std::uint32_t id) noexcept {
    if (!(id & cereal::detail::msb_32bit)) return;
    auto it = shared_.find(id & ~cereal::detail::msb_32bit);
    if (it != shared_.end()) it->second.loading = false;
  }

 private:
  struct SharedEntry {
    const std::type_info* type;
    bool loading;
  };

  [[noreturn]] void throw_truncated(std::uint64_t needed) const {
    throw SerializationError("truncated: needed " + std::to_string(needed) + " bytes at offset " +
                             std::to_string(offset()) + ", " + std::to_string(remaining()) +
                             " left");
  }
  [[noreturn]] void throw_bad_count(std::uint64_t count, std::size_t element_size) const {
    std::string what = "length prefix of " + std::to_string(count) + " elements";
    if (element_size != 0) what += " of " + std::to_string(element_size) + " bytes";
    throw SerializationError(what + " before offset " + std::to_string(offset()) + " exceeds the " +
                             std::to_string(remaining()) +
                             " bytes left (truncated or corrupt input)");
  }
  [[noreturn]] void throw_shared(const char* what, std::uint32_t key) const {
    throw SerializationError("shared_ptr id " + std::to_string(key) + " " + what +
                             " (before offset " + std::to_string(offset()) + ")");
  }

  const std::byte* begin_;
  const std::byte* cur_;
  const std::byte* end_;
  unsigned depth_ = 0;
  bool weak_next_ = false;
  std::unordered_map<std::uint32_t, SharedEntry> shared_;  // allocates only if shared_ptrs occur
};

}  // namespace mproc::detail

CEREAL_REGISTER_ARCHIVE(mproc::detail::OutputArchive)
CEREAL_REGISTER_ARCHIVE(mproc::detail::InputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mproc::detail::InputArchive, mproc::detail::OutputArchive)

namespace mproc::detail {

// ---------------------------------------------------------------------------------------------
// Type rules

/// Types that must never cross a process boundary: pointers, references and views, also when
/// they are a template argument of another type (std::vector<int*>, std::pair<int&, int>).
template <class T>
struct refused;

template <class T>
struct refused_impl : std::bool_constant<std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                                         std::is_null_pointer_v<T> || std::is_reference_v<T>> {};
template <class T>
struct refused_impl<T[]> : refused<T> {};
template <class T, std::size_t N>
struct refused_impl<T[N]> : refused<T> {};
template <class T, std::size_t N>
struct refused_impl<std::array<T, N>> : refused<T> {};
template <class C, class Tr>
struct refused_impl<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N>
struct refused_impl<std::span<T, N>> : std::true_type {};
template <class T>
struct refused_impl<std::reference_wrapper<T>> : std::true_type {};
template <class T>
struct refused_impl<std::initializer_list<T>> : std::true_type {};
template <template <class...> class Tmpl, class... Args>
struct refused_impl<Tmpl<Args...>> : std::disjunction<refused<Args>...> {};

template <class T>
struct refused : refused_impl<std::remove_cv_t<T>> {};

/// cereal's own wrapper types (name-value pairs, size tags, base_class<>, ...), which must
/// never be mistaken for plain data.
template <class T>
inline constexpr bool is_cereal_helper = std::is_base_of_v<cereal::detail::NameValuePairCore, T> ||
                                         std::is_base_of_v<cereal::detail::DeferredDataCore, T> ||
                                         std::is_base_of_v<cereal::traits::detail::BaseCastBase, T>;
template <class T>
inline constexpr bool is_cereal_helper<cereal::SizeTag<T>> = true;
template <class T>
inline constexpr bool is_cereal_helper<cereal::BinaryData<T>> = true;
template <class K, class V>
inline constexpr bool is_cereal_helper<cereal::MapItem<K, V>> = true;
template <class T>
inline constexpr bool is_cereal_helper<cereal::memory_detail::PtrWrapper<T>> = true;

/// Whether T has any cereal serialize/save/load function (a user's member or free function,
/// or one of cereal's for a std type). Probed with cereal's binary archives rather than
/// mproc's: mproc's archives have memcpy overloads whose constraints ask this very question.
template <class T>
inline constexpr bool has_cereal_functions =
    cereal::traits::detail::count_output_serializers<T, cereal::BinaryOutputArchive>::value != 0 ||
    cereal::traits::detail::count_input_serializers<T, cereal::BinaryInputArchive>::value != 0;

template <class T>
concept class_or_union = std::is_class_v<T> || std::is_union_v<T>;

/// Types whose bytes are their encoding: trivially copyable, holding no pointer we can see,
/// and either arithmetic, an enum, or a class without any cereal function. Copy-constructible
/// too: GCC calls a type whose copies are all deleted (std::mutex) trivially copyable.
template <class T>
concept raw_copyable =
    std::is_trivially_copyable_v<T> && std::is_copy_constructible_v<T> && !std::is_array_v<T> &&
    !refused<T>::value && !is_cereal_helper<T> &&
    (std::is_arithmetic_v<T> || std::is_enum_v<T> ||
     (class_or_union<T> && !has_cereal_functions<T>));

/// raw_copyable classes inside cereal-encoded values: saved and loaded with one memcpy. Empty
/// classes are left to cereal, which elides them.
template <class T>
concept bulk_class = class_or_union<T> && !std::is_empty_v<T> && raw_copyable<T>;

/// Element types a std::vector inside a cereal-encoded value copies in one block.
template <class T>
concept bulk_element = raw_copyable<T> && !std::is_empty_v<T>;

/// Types whose cereal encoding is exactly their sizeof(T) bytes, so that arrays of them are
/// copied in one block: bulk_element types, and the std types cereal writes field by field
/// with no padding (std::array, std::complex, std::chrono durations and time points).
template <class T>
struct byte_encoded : std::bool_constant<bulk_element<T>> {};
template <class E, std::size_t N>
struct byte_encoded<std::array<E, N>> : std::bool_constant<(N > 0) && byte_encoded<E>::value> {};
template <class T>
struct byte_encoded<std::complex<T>> : std::is_arithmetic<T> {};
template <class R, class P>
struct byte_encoded<std::chrono::duration<R, P>> : std::is_arithmetic<R> {};
template <class C, class D>
struct byte_encoded<std::chrono::time_point<C, D>> : byte_encoded<D> {};

/// byte_encoded types that hold bools, whose bytes must be checked before they are copied.
template <class T>
struct holds_bool : std::is_same<T, bool> {};
template <class E, std::size_t N>
struct holds_bool<std::array<E, N>> : holds_bool<E> {};

/// Top-level values that are their own bytes (the memcpy fast path).
template <class T>
concept raw_value = raw_copyable<T> || byte_encoded<T>::value;

/// Element types whose arrays may be read through a pointer to them from std::byte storage.
template <class T>
concept byte_like =
    std::same_as<T, char> || std::same_as<T, unsigned char> || std::same_as<T, std::byte>;

[[noreturn]] inline void throw_bad_bool(std::byte b) {
  throw SerializationError("a bool is encoded as byte " + std::to_string(static_cast<int>(b)) +
                           " (must be 0 or 1)");
}

/// Throws SerializationError unless every byte is a valid bool (0 or 1).
inline void check_bools(std::span<const std::byte> bytes) {
  for (std::byte b : bytes)
    if (static_cast<unsigned char>(b) > 1) throw_bad_bool(b);
}

// ---------------------------------------------------------------------------------------------
// Archive functions, found by cereal through argument-dependent lookup on the archive types.
// Each names a concrete mproc archive, so it is more specialized than cereal's generic
// template for the same type and wins overload resolution without ambiguity.

template <class T>
void prologue(OutputArchive& ar, const T&) {
  ar.enter_nested();
}
template <class T>
void epilogue(OutputArchive& ar, const T&) noexcept {
  ar.leave_nested();
}
template <class T>
void prologue(InputArchive& ar, const T&) {
  ar.enter_nested();
}
template <class T>
void epilogue(InputArchive& ar, const T&) noexcept {
  ar.leave_nested();
}

template <class T>
requires std::is_arithmetic_v<T>
void save(OutputArchive& ar, const T& value) {
  ar.save_binary(std::addressof(value), sizeof(T));
}

template <class T>
requires std::is_arithmetic_v<T>
void load(InputArchive& ar, T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    // Never memcpy a byte into a bool: any value but 0 or 1 is undefined behaviour.
    const std::byte b = ar.take(1)[0];
    if (static_cast<unsigned char>(b) > 1) throw_bad_bool(b);
    value = b == std::byte{1};
  } else {
    ar.load_binary(std::addressof(value), sizeof(T));
  }
}

template <class T>
void save(OutputArchive& ar, const cereal::NameValuePair<T>& nvp) {
  ar(nvp.value);
}
template <class T>
void load(InputArchive& ar, cereal::NameValuePair<T>& nvp) {
  ar(nvp.value);
}

template <class T>
void save(OutputArchive& ar, const cereal::SizeTag<T>& tag) {
  const auto size = static_cast<cereal::size_type>(tag.size);
  ar.save_binary(&size, sizeof size);
}
template <class T>
void load(InputArchive& ar, cereal::SizeTag<T>& tag) {
  cereal::size_type size;
  ar.load_binary(&size, sizeof size);
  ar.check_count(size);  // before the container is resized to it
  tag.size = static_cast<std::remove_reference_t<decltype(tag.size)>>(size);
}

template <class T>
void save(OutputArchive& ar, const cereal::BinaryData<T>& data) {
  ar.save_binary(data.data, static_cast<std::size_t>(data.size));
}
template <class T>
void load(InputArchive& ar, cereal::BinaryData<T>& data) {
  using Element = std::remove_cv_t<std::remove_pointer_t<std::remove_reference_t<T>>>;
  const auto bytes = ar.take(data.size);
  if constexpr (std::is_same_v<Element, bool>) check_bools(bytes);
  if (!bytes.empty()) std::memcpy(data.data, bytes.data(), bytes.size());
}

template <class T>
requires bulk_class<T>
void save(OutputArchive& ar, const T& value) {
  ar.save_binary(std::addressof(value), sizeof(T));
}
template <class T>
requires bulk_class<T>
void load(InputArchive& ar, T& value) {
  ar.load_binary(std::addressof(value), sizeof(T));
}

// std::vector: one memcpy for byte_encoded elements (cereal's own does that for arithmetic types
// only), and a length check that knows the element size. vector<bool> stays with cereal.
template <class T, class A>
requires(!std::is_same_v<T, bool>) void save(OutputArchive& ar, const std::vector<T, A>& vector) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(vector.size())));
  if constexpr (byte_encoded<T>::value) {
    ar.save_binary(vector.data(), vector.size() * sizeof(T));
  } else {
    for (const auto& element : vector) ar(element);
  }
}
template <class T, class A>
requires(!std::is_same_v<T, bool>) void load(InputArchive& ar, std::vector<T, A>& vector) {
  cereal::size_type size;
  ar(cereal::make_size_tag(size));
  if constexpr (byte_encoded<T>::value) {
    ar.check_count(size, sizeof(T));
    const auto bytes = ar.take(static_cast<std::size_t>(size) * sizeof(T));
    if constexpr (holds_bool<T>::value) check_bools(bytes);
    if constexpr (byte_like<T>) {
      const auto* p = reinterpret_cast<const T*>(bytes.data());
      vector.clear();
      reserve_bulk(vector, static_cast<std::size_t>(size));
      vector.assign(p, p + size);
    } else {
      vector.clear();
      reserve_bulk(vector, static_cast<std::size_t>(size));
      vector.resize(static_cast<std::size_t>(size));
      if (!bytes.empty()) std::memcpy(vector.data(), bytes.data(), bytes.size());
    }
  } else {
    vector.resize(static_cast<std::size_t>(size));
    for (auto& element : vector) ar(element);
  }
}

// std::array: one memcpy for byte_encoded elements. (cereal's own copies sizeof(array) bytes
// from data(), which is null for std::array<T, 0>.)
template <class T, std::size_t N>
void save(OutputArchive& ar, const std::array<T, N>& array) {
  if constexpr (byte_encoded<T>::value) {
    ar.save_binary(array.data(), N * sizeof(T));
  } else {
    for (const auto& element : array) ar(element);
  }
}
template <class T, std::size_t N>
void load(InputArchive& ar, std::array<T, N>& array) {
  if constexpr (byte_encoded<T>::value) {
    const auto bytes = ar.take(N * sizeof(T));
    if constexpr (holds_bool<T>::value) check_bools(bytes);
    if constexpr (N != 0) std::memcpy(static_cast<void*>(array.data()), bytes.data(), bytes.size());
  } else {
    for (auto& element : array) ar(element);
  }
}

// std::basic_string: copy straight from the input (cereal's resizes, zero-fills, then copies).
template <class C, class Tr, class A>
void load(InputArchive& ar, std::basic_string<C, Tr, A>& string) {
  cereal::size_type size;
  ar(cereal::make_size_tag(size));
  ar.check_count(size, sizeof(C));
  const auto bytes = ar.take(static_cast<std::size_t>(size) * sizeof(C));
  if constexpr (byte_like<C>) {
    string.assign(reinterpret_cast<const C*>(bytes.data()), static_cast<std::size_t>(size));
  } else {
    string.resize(static_cast<std::size_t>(size));
    if (!bytes.empty()) std::memcpy(string.data(), bytes.data(), bytes.size());
  }
}

// std::multimap / std::multiset: cereal inserts each element before the previous one, which
// reverses the order of equal keys; appending at the end keeps it (and is O(1) for the sorted
// input an encoding is).
template <class K, class V, class C, class A>
void load(InputArchive& ar, std::multimap<K, V, C, A>& map) {
  cereal::size_type size;
  ar(cereal::make_size_tag(size));
  map.clear();
  for (cereal::size_type i = 0; i < size; ++i) {
    K key;
    V value;
    ar(cereal::make_map_item(key, value));
    map.emplace_hint(map.end(), std::move(key), std::move(value));
  }
}
template <class K, class C, class A>
void load(InputArchive& ar, std::multiset<K, C, A>& set) {
  cereal::size_type size;
  ar(cereal::make_size_tag(size));
  set.clear();
  for (cereal::size_type i = 0; i < size; ++i) {
    K key;
    ar(key);
    set.emplace_hint(set.end(), std::move(key));
  }
}

// std::shared_ptr / std::weak_ptr: validate ids, then let cereal do the work. The qualified
// call with explicit template arguments reaches cereal's function, not these overloads.
template <class T>
void load(InputArchive& ar, cereal::memory_detail::PtrWrapper<std::shared_ptr<T>&>& wrapper) {
  const std::uint32_t id = ar.peek_u32();
  ar.begin_shared_pointer(id, typeid(std::remove_const_t<T>));
  ::cereal::load<InputArchive, T>(ar, wrapper);
  ar.end_shared_pointer(id);
}
template <class T>
requires(!std::is_polymorphic_v<T>) void load(InputArchive& ar, std::weak_ptr<T>& pointer) {
  ar.permit_weak_reference();
  ::cereal::load<InputArchive, T>(ar, pointer);
}

// ---------------------------------------------------------------------------------------------
// What can be serialized

/// T goes through mproc's cereal archives in both directions.
template <class T>
concept cereal_serializable = cereal::traits::is_output_serializable<T, OutputArchive>::value &&
    cereal::traits::is_input_serializable<T, InputArchive>::value;

template <class T>
struct children_serializable;

/// T can be an element or member of a serialized std type: encodable, decodable, default-
/// constructible (cereal builds elements, then loads into them).
template <class T>
struct nested_serializable
    : std::bool_constant<std::is_object_v<T> && !std::is_array_v<T> && !refused<T>::value &&
                         std::default_initializable<T> &&
                         (raw_copyable<T> ||
                          (cereal_serializable<T> && children_serializable<T>::value))> {};

/// For the std templates cereal supports, whether their element types are serializable too
/// (cereal's own checks stop at the outer type). Other types are trusted to their functions.
template <class T>
struct children_serializable : std::true_type {};
template <class T, class A>
struct children_serializable<std::vector<T, A>> : nested_serializable<T> {};
template <class T, class A>
struct children_serializable<std::deque<T, A>> : nested_serializable<T> {};
template <class T, class A>
struct children_serializable<std::list<T, A>> : nested_serializable<T> {};
template <class T, class A>
struct children_serializable<std::forward_list<T, A>> : nested_serializable<T> {};
template <class T>
struct children_serializable<std::valarray<T>> : nested_serializable<T> {};
template <class T, std::size_t N>
struct children_serializable<std::array<T, N>> : nested_serializable<T> {};
template <class K, class C, class A>
struct children_serializable<std::set<K, C, A>> : nested_serializable<K> {};
template <class K, class C, class A>
struct children_serializable<std::multiset<K, C, A>> : nested_serializable<K> {};
template <class K, class H, class E, class A>
struct children_serializable<std::unordered_set<K, H, E, A>> : nested_serializable<K> {};
template <class K, class H, class E, class A>
struct children_serializable<std::unordered_multiset<K, H, E, A>> : nested_serializable<K> {};
template <class K, class V, class C, class A>
struct children_serializable<std::map<K, V, C, A>>
    : std::conjunction<nested_serializable<K>, nested_serializable<V>> {};
template <class K, class V, class C, class A>
struct children_serializable<std::multimap<K, V, C, A>>
    : std::conjunction<nested_serializable<K>, nested_serializable<V>> {};
template <class K, class V, class H, class E, class A>
struct children_serializable<std::unordered_map<K, V, H, E, A>>
    : std::conjunction<nested_serializable<K>, nested_serializable<V>> {};
template <class K, class V, class H, class E, class A>
struct children_serializable<std::unordered_multimap<K, V, H, E, A>>
    : std::conjunction<nested_serializable<K>, nested_serializable<V>> {};
template <class T>
struct children_serializable<std::optional<T>> : nested_serializable<T> {};
template <class... Ts>
struct children_serializable<std::variant<Ts...>> : std::conjunction<nested_serializable<Ts>...> {};
template <class... Ts>
struct children_serializable<std::tuple<Ts...>> : std::conjunction<nested_serializable<Ts>...> {};
template <class A, class B>
struct children_serializable<std::pair<A, B>>
    : std::conjunction<nested_serializable<A>, nested_serializable<B>> {};
template <class T, class D>
struct children_serializable<std::unique_ptr<T, D>> : nested_serializable<T> {};
template <class T>
struct children_serializable<std::shared_ptr<T>> : nested_serializable<T> {};
template <class T>
struct children_serializable<std::weak_ptr<T>> : nested_serializable<T> {};
template <class T, class C>
struct children_serializable<std::queue<T, C>> : nested_serializable<C> {};
template <class T, class C>
struct children_serializable<std::stack<T, C>> : nested_serializable<C> {};
template <class T, class C, class Cmp>
struct children_serializable<std::priority_queue<T, C, Cmp>> : nested_serializable<C> {};

/// A top-level std::vector or std::basic_string of raw_value elements: its encoding is the
/// elements' bytes, with no length prefix. (A std::array of them is itself a raw_value.)
template <class T>
struct raw_range : std::false_type {};
template <class E, class A>
requires(raw_value<E> && !std::is_same_v<E, bool>) struct raw_range<std::vector<E, A>>
    : std::true_type {
  using element = E;
};
template <class E, class Tr, class A>
requires raw_value<E>
struct raw_range<std::basic_string<E, Tr, A>> : std::true_type {
  using element = E;
};

/// Serializable, for a cv-unqualified T.
template <class T>
concept serializable_value = std::is_object_v<T> && !std::is_array_v<T> && !refused<T>::value &&
                             (raw_value<T> || raw_range<T>::value ||
                              (std::default_initializable<T> && std::move_constructible<T> &&
                               cereal_serializable<T> && children_serializable<T>::value));

}  // namespace mproc::detail
