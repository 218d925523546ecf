// tests/test_serialize.cpp — values survive serialize/deserialize, and bad bytes only ever
// produce a SerializationError.
#include <gtest/gtest.h>

#include <bitset>
#include <chrono>
#include <complex>
#include <cstdint>
#include <deque>
#include <forward_list>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <stack>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <valarray>
#include <variant>
#include <vector>

#include "mproc/serialize.hpp"

namespace {

// ---------------------------------------------------------------------------------------------
// Types under test

enum class Color : std::uint8_t { red, green, blue };
enum Legacy { legacy_a = 1, legacy_b = 1000 };

struct Point {
  int x;
  int y;
  bool operator==(const Point&) const = default;
};

struct Empty {
  bool operator==(const Empty&) const = default;
};

/// Trivially copyable but not default-constructible.
struct Money {
  explicit Money(long c) : cents(c) {}
  long cents;
  bool operator==(const Money&) const = default;
};

/// A serialize member, reached through cereal::access for its private members.
class Person {
 public:
  Person() = default;
  Person(std::string name, int age, std::vector<std::string> tags)
      : name_(std::move(name)), age_(age), tags_(std::move(tags)) {}
  bool operator==(const Person&) const = default;

 private:
  friend class cereal::access;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name_, age_, tags_);
  }
  std::string name_;
  int age_ = 0;
  std::vector<std::string> tags_;
};

namespace geo {
/// A free serialize function, found by argument-dependent lookup.
struct Circle {
  Point center;
  double radius = 0;
  std::string label;
  bool operator==(const Circle&) const = default;
};
template <class Archive>
void serialize(Archive& ar, Circle& c) {
  ar(c.center, c.radius, c.label);
}
}  // namespace geo

/// A save/load pair that stores a derived form.
struct Fraction {
  int num = 0;
  int den = 1;
  bool operator==(const Fraction&) const = default;
  template <class Archive>
  void save(Archive& ar) const {
    ar(std::to_string(num) + "/" + std::to_string(den));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string text;
    ar(text);
    const auto slash = text.find('/');
    if (slash == std::string::npos) throw std::invalid_argument("no slash in a fraction");
    num = std::stoi(text.substr(0, slash));
    den = std::stoi(text.substr(slash + 1));
  }
};

/// Trivially copyable, yet its own serialize function wins over the memcpy paths: it stores
/// only `kept`, so decoding proves which path ran.
struct Partial {
  int kept = 0;
  int dropped = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(kept);
  }
};

/// Trivially copyable with a free serialize in another namespace: again not memcpy'd.
namespace units {
struct Meters {
  double value = 0;
  bool operator==(const Meters&) const = default;
};
template <class Archive>
double save_minimal(const Archive&, const Meters& m) {
  return m.value;
}
template <class Archive>
void load_minimal(const Archive&, Meters& m, const double& v) {
  m.value = v;
}
}  // namespace units

/// Plain data and cereal data mixed in one struct.
struct Record {
  Point where;
  Color color = Color::red;
  std::map<std::string, Point> landmarks;
  std::vector<Point> path;
  bool operator==(const Record&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(where, color, landmarks, path);
  }
};

struct Base {
  int id = 0;
  bool operator==(const Base&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id);
  }
};
struct Derived : Base {
  std::string extra;
  bool operator==(const Derived&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(cereal::base_class<Base>(this), extra);
  }
};

struct Counter {
  std::atomic<int> hits{0};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(hits);
  }
};

/// Recursive: every level is one vector inside the next.
struct Tree {
  std::vector<Tree> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(children);
  }
};

struct Node {
  int value = 0;
  std::shared_ptr<Node> next;
  std::weak_ptr<Node> parent;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, next, parent);
  }
};

struct WithMutex {
  std::mutex mutex;
  int value = 0;
};

struct WithoutSerialize {
  std::string text;  // not trivially copyable, and no serialize function
};

// ---------------------------------------------------------------------------------------------
// Helpers

template <class T>
T round_trip(const T& value) {
  return mproc::deserialize<T>(mproc::serialize(value));
}

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

template <class T>
void append_raw(std::vector<std::byte>& out, T value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof value);
}

/// Decoding bytes either succeeds or throws SerializationError: anything else fails the test
/// (and a crash fails the run).
template <class T>
void decode_or_serialization_error(std::span<const std::byte> bytes) {
  try {
    (void)mproc::deserialize<T>(bytes);
  } catch (const mproc::SerializationError&) {
  }
}

/// Every strict prefix of value's encoding is rejected with SerializationError.
template <class T>
void expect_every_prefix_rejected(const T& value) {
  const auto bytes = mproc::serialize(value);
  ASSERT_FALSE(bytes.empty());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW((void)mproc::deserialize<T>(std::span(bytes).first(n)), mproc::SerializationError)
        << "prefix of " << n << " of " << bytes.size() << " bytes";
  }
}

template <class T>
std::string error_of(std::span<const std::byte> bytes) {
  try {
    (void)mproc::deserialize<T>(bytes);
  } catch (const mproc::SerializationError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------------
// Compile-time rules

static_assert(mproc::Serializable<int>);
static_assert(mproc::Serializable<const double>);
static_assert(mproc::Serializable<Point>);
static_assert(mproc::Serializable<Money>);
static_assert(mproc::Serializable<std::string>);
static_assert(mproc::Serializable<std::vector<Point>>);
static_assert(mproc::Serializable<std::map<std::string, std::vector<Point>>>);
static_assert(mproc::Serializable<Person>);
static_assert(mproc::Serializable<geo::Circle>);
static_assert(mproc::Serializable<Fraction>);
static_assert(mproc::Serializable<std::unique_ptr<Person>>);
static_assert(mproc::Serializable<std::variant<std::monostate, int, std::string>>);

static_assert(!mproc::Serializable<int*>);
static_assert(!mproc::Serializable<const char*>);
static_assert(!mproc::Serializable<void (*)()>);
static_assert(!mproc::Serializable<int Point::*>);
static_assert(!mproc::Serializable<std::nullptr_t>);
static_assert(!mproc::Serializable<int&>);
static_assert(!mproc::Serializable<int[4]>);
static_assert(!mproc::Serializable<std::vector<int*>>);
static_assert(!mproc::Serializable<std::pair<int, const char*>>);
static_assert(!mproc::Serializable<std::string_view>);
static_assert(!mproc::Serializable<std::span<const int>>);
static_assert(!mproc::Serializable<std::reference_wrapper<int>>);
static_assert(!mproc::Serializable<WithMutex>);
static_assert(!mproc::Serializable<WithoutSerialize>);
static_assert(!mproc::Serializable<std::vector<WithMutex>>);
static_assert(!mproc::Serializable<std::map<std::string, WithoutSerialize>>);
static_assert(!mproc::Serializable<std::optional<std::mutex>>);
static_assert(!mproc::Serializable<std::atomic<int>>);  // cannot be returned by value

// ---------------------------------------------------------------------------------------------
// The memcpy fast path

// Payloads from 4 MiB on are allocated ahead and advised to use huge pages (a hint): every
// path that does so must still produce exactly the bytes, at sizes on and off 2 MiB pages.
TEST(serialize_test, large_ranges_round_trip_on_every_path) {
  for (std::size_t mib_bytes : {(std::size_t{4} << 20) - 1, std::size_t{4} << 20, (std::size_t{9} << 20) + 13}) {
    std::vector<std::byte> bytes(mib_bytes);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 7 + i / 4096);
    EXPECT_EQ(mproc::serialize(bytes), bytes);                                   // top level, raw
    EXPECT_EQ(mproc::deserialize<std::vector<std::byte>>(mproc::serialize(bytes)), bytes);
    std::vector<int> ints(mib_bytes / sizeof(int));
    for (std::size_t i = 0; i < ints.size(); ++i) ints[i] = static_cast<int>(i * 2654435761u);
    EXPECT_EQ(mproc::deserialize<std::vector<int>>(mproc::serialize(ints)), ints);
    std::string text(mib_bytes, 'x');
    text[mib_bytes / 2] = 'y';
    EXPECT_EQ(mproc::deserialize<std::string>(mproc::serialize(text)), text);
    // Nested (cereal's path, with the size prefix): a vector inside a pair, appended after
    // other bytes, and loaded into a vector that already holds something.
    const auto pair = std::make_pair(std::string("head"), bytes);
    std::vector<std::byte> out(3, std::byte{1});
    mproc::serialize_to(out, pair);
    auto back = mproc::deserialize<std::pair<std::string, std::vector<std::byte>>>(
        std::span<const std::byte>(out).subspan(3));
    EXPECT_EQ(back, pair);
    using Nested = std::vector<std::pair<int, std::vector<int>>>;
    const Nested nested{{1, ints}, {2, {}}};
    EXPECT_EQ(mproc::deserialize<Nested>(mproc::serialize(nested)), nested);
  }
}

TEST(serialize_test, int_is_its_own_bytes) {
  const auto bytes = mproc::serialize(-123456789);
  EXPECT_EQ(bytes.size(), sizeof(int));
  EXPECT_EQ(mproc::deserialize<int>(bytes), -123456789);
}

TEST(serialize_test, arithmetic_types_round_trip_at_their_size) {
  EXPECT_EQ(mproc::serialize(3.25).size(), sizeof(double));
  EXPECT_EQ(round_trip(3.25), 3.25);
  EXPECT_EQ(round_trip(std::uint64_t{1} << 63), std::uint64_t{1} << 63);
  EXPECT_EQ(round_trip('x'), 'x');
  EXPECT_EQ(round_trip(-1.5f), -1.5f);
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(false), false);
  EXPECT_EQ(mproc::serialize(true).size(), 1u);
}

TEST(serialize_test, enums_round_trip_at_their_size) {
  EXPECT_EQ(mproc::serialize(Color::blue).size(), sizeof(Color));
  EXPECT_EQ(round_trip(Color::blue), Color::blue);
  EXPECT_EQ(mproc::serialize(legacy_b).size(), sizeof(Legacy));
  EXPECT_EQ(round_trip(legacy_b), legacy_b);
}

TEST(serialize_test, plain_struct_is_its_own_bytes) {
  const Point p{3, -4};
  const auto bytes = mproc::serialize(p);
  EXPECT_EQ(bytes.size(), sizeof(Point));
  EXPECT_EQ(mproc::deserialize<Point>(bytes), p);
  EXPECT_EQ(round_trip(Money{1999}), Money{1999});
  EXPECT_EQ(mproc::serialize(Empty{}).size(), sizeof(Empty));
}

TEST(serialize_test, string_is_its_characters) {
  const std::string text("hello\0world", 11);
  const auto bytes = mproc::serialize(text);
  EXPECT_EQ(bytes.size(), text.size());
  EXPECT_EQ(mproc::deserialize<std::string>(bytes), text);
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_EQ(round_trip(std::u32string(U"wide")), U"wide");
}

TEST(serialize_test, vector_of_ints_round_trips) {
  const std::vector<int> values{1, -2, 3, 1 << 30};
  const auto bytes = mproc::serialize(values);
  EXPECT_EQ(bytes.size(), values.size() * sizeof(int));
  EXPECT_EQ(mproc::deserialize<std::vector<int>>(bytes), values);
  EXPECT_EQ(round_trip(std::vector<int>{}), std::vector<int>{});
}

TEST(serialize_test, byte_vectors_round_trip) {
  const std::vector<std::byte> blob = bytes_of({0, 1, 2, 255});
  EXPECT_EQ(round_trip(blob), blob);
  const std::vector<unsigned char> chars{9, 8, 7};
  EXPECT_EQ(round_trip(chars), chars);
}

TEST(serialize_test, vector_of_plain_structs_round_trips) {
  const std::vector<Point> points{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(mproc::serialize(points).size(), 3 * sizeof(Point));
  EXPECT_EQ(round_trip(points), points);
  const std::vector<Money> money{Money{1}, Money{2}};
  EXPECT_EQ(round_trip(money), money);
  EXPECT_EQ(round_trip(std::vector<Empty>(3)), std::vector<Empty>(3));
}

TEST(serialize_test, std_array_is_its_elements) {
  const std::array<double, 3> a{1.5, 2.5, 3.5};
  EXPECT_EQ(mproc::serialize(a).size(), sizeof a);
  EXPECT_EQ(round_trip(a), a);
  const std::array<Point, 2> points{Point{1, 2}, Point{3, 4}};
  EXPECT_EQ(round_trip(points), points);
  const std::array<std::string, 2> strings{"a", "bc"};
  EXPECT_EQ(round_trip(strings), strings);
}

TEST(serialize_test, std_types_stored_as_their_fields_take_the_fast_path) {
  EXPECT_EQ(mproc::serialize(std::complex<double>(1, 2)).size(), sizeof(std::complex<double>));
  const std::vector<std::complex<double>> signal{{1, 2}, {3, 4}};
  EXPECT_EQ(mproc::serialize(signal).size(), 2 * sizeof(std::complex<double>));
  EXPECT_EQ(round_trip(signal), signal);
  const std::vector<std::array<float, 3>> vertices{{1, 2, 3}, {4, 5, 6}};
  EXPECT_EQ(mproc::serialize(vertices).size(), 6 * sizeof(float));
  EXPECT_EQ(round_trip(vertices), vertices);
  const std::vector<std::chrono::microseconds> times{std::chrono::microseconds(5)};
  EXPECT_EQ(round_trip(times), times);
}

TEST(serialize_test, arrays_inside_cereal_values_round_trip) {
  const auto value = std::make_tuple(std::array<int, 0>{}, std::array<Point, 2>{Point{1, 2}},
                                     std::vector<std::array<bool, 2>>{{true, false}},
                                     std::array<std::string, 1>{"s"});
  EXPECT_EQ(round_trip(value), value);
}

TEST(serialize_test, serialize_to_appends) {
  std::vector<std::byte> out = bytes_of({7});
  mproc::serialize_to(out, 5);
  mproc::serialize_to(out, std::string("ab"));
  mproc::serialize_to(out, std::vector<std::string>{"x"});
  ASSERT_EQ(out.size(), 1 + sizeof(int) + 2 + 8 + 8 + 1);
  EXPECT_EQ(out[0], std::byte{7});
  EXPECT_EQ(mproc::deserialize<int>(std::span(out).subspan(1, sizeof(int))), 5);
  EXPECT_EQ(mproc::deserialize<std::vector<std::string>>(std::span(out).subspan(7)),
            std::vector<std::string>{"x"});
}

// ---------------------------------------------------------------------------------------------
// Through cereal

TEST(serialize_test, vector_of_strings_round_trips) {
  const std::vector<std::string> values{"", "one", std::string(1000, 'z')};
  EXPECT_EQ(round_trip(values), values);
}

TEST(serialize_test, vector_of_bools_round_trips) {
  const std::vector<bool> values{true, false, false, true, true};
  EXPECT_EQ(round_trip(values), values);
  EXPECT_EQ(round_trip(std::vector<bool>{}), std::vector<bool>{});
}

TEST(serialize_test, associative_containers_round_trip) {
  const std::map<std::string, int> map{{"a", 1}, {"b", 2}};
  EXPECT_EQ(round_trip(map), map);
  const std::unordered_map<int, std::string> umap{{1, "one"}, {2, "two"}, {3, "three"}};
  EXPECT_EQ(round_trip(umap), umap);
  const std::set<std::string> set{"x", "y", "z"};
  EXPECT_EQ(round_trip(set), set);
  const std::unordered_set<long> uset{5, 6, 7};
  EXPECT_EQ(round_trip(uset), uset);
  const std::multimap<int, int> multimap{{1, 1}, {1, 2}, {2, 3}, {1, 0}};
  EXPECT_EQ(round_trip(multimap), multimap);  // equal keys keep their order
  const std::multiset<std::string> multiset{"b", "a", "b"};
  EXPECT_EQ(round_trip(multiset), multiset);
}

TEST(serialize_test, sequence_containers_round_trip) {
  const std::deque<int> deque{1, 2, 3};
  EXPECT_EQ(round_trip(deque), deque);
  const std::list<std::string> list{"a", "b"};
  EXPECT_EQ(round_trip(list), list);
  const std::forward_list<double> flist{1.5, 2.5};
  EXPECT_EQ(round_trip(flist), flist);
  const std::valarray<int> valarray{4, 5, 6};
  const auto back = round_trip(valarray);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[2], 6);
}

TEST(serialize_test, adaptors_round_trip) {
  std::queue<int> queue;
  queue.push(1);
  queue.push(2);
  EXPECT_EQ(round_trip(queue), queue);
  std::stack<std::string> stack;
  stack.push("bottom");
  stack.push("top");
  EXPECT_EQ(round_trip(stack), stack);
}

TEST(serialize_test, optional_round_trips_empty_and_set) {
  EXPECT_EQ(round_trip(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(round_trip(std::optional<int>{42}), 42);
  EXPECT_EQ(round_trip(std::optional<std::string>{"x"}), "x");
  EXPECT_EQ(round_trip(std::optional<bool>{false}), false);
}

TEST(serialize_test, variant_round_trips_each_alternative) {
  using V = std::variant<std::monostate, int, std::string, std::vector<Point>>;
  for (const V& v : {V{}, V{7}, V{std::string("s")}, V{std::vector<Point>{{1, 2}}}})
    EXPECT_EQ(round_trip(v), v);
}

TEST(serialize_test, tuple_and_pair_round_trip) {
  const auto tuple = std::make_tuple(1, std::string("two"), 3.0, Point{4, 5}, Color::green);
  EXPECT_EQ(round_trip(tuple), tuple);
  const auto pair = std::make_pair(std::string("k"), std::vector<int>{1, 2});
  EXPECT_EQ(round_trip(pair), pair);
  EXPECT_EQ(round_trip(std::tuple<>{}), std::tuple<>{});
}

TEST(serialize_test, nested_containers_round_trip) {
  const std::map<std::string, std::vector<std::map<int, std::set<std::string>>>> value{
      {"a", {{{1, {"x", "y"}}}, {}}}, {"b", {}}};
  EXPECT_EQ(round_trip(value), value);
  const std::vector<std::vector<Point>> grid{{{1, 1}}, {}, {{2, 2}, {3, 3}}};
  EXPECT_EQ(round_trip(grid), grid);
}

TEST(serialize_test, plain_structs_nested_in_cereal_values_round_trip) {
  const std::map<std::string, Point> landmarks{{"home", {1, 2}}, {"work", {3, 4}}};
  EXPECT_EQ(round_trip(landmarks), landmarks);
  const std::optional<Point> maybe = Point{9, 9};
  EXPECT_EQ(round_trip(maybe), maybe);
  const std::vector<std::pair<Point, Color>> tagged{{{1, 2}, Color::red}};
  EXPECT_EQ(round_trip(tagged), tagged);
}

TEST(serialize_test, struct_with_serialize_member_round_trips) {
  const Person p("Ada", 36, {"math", "engines"});
  EXPECT_EQ(round_trip(p), p);
  const std::vector<Person> people{p, Person("Bob", 1, {})};
  EXPECT_EQ(round_trip(people), people);
}

TEST(serialize_test, struct_with_free_serialize_round_trips) {
  const geo::Circle c{{1, 2}, 2.5, "unit"};
  EXPECT_EQ(round_trip(c), c);
  const std::map<int, geo::Circle> circles{{1, c}};
  EXPECT_EQ(round_trip(circles), circles);
}

TEST(serialize_test, struct_with_save_and_load_round_trips) {
  const Fraction f{3, 4};
  EXPECT_EQ(round_trip(f), f);
  EXPECT_EQ(round_trip(std::vector<Fraction>{{1, 2}, {5, 6}}),
            (std::vector<Fraction>{{1, 2}, {5, 6}}));
}

TEST(serialize_test, trivially_copyable_struct_with_serialize_uses_its_function) {
  const Partial p{5, 6};
  EXPECT_EQ(mproc::serialize(p).size(), sizeof(int));
  const Partial back = round_trip(p);
  EXPECT_EQ(back.kept, 5);
  EXPECT_EQ(back.dropped, 0);
  const auto many = round_trip(std::vector<Partial>{{1, 2}, {3, 4}});
  ASSERT_EQ(many.size(), 2u);
  EXPECT_EQ(many[1].kept, 3);
  EXPECT_EQ(many[1].dropped, 0);
  EXPECT_EQ(round_trip(units::Meters{2.5}), units::Meters{2.5});
  EXPECT_EQ(round_trip(std::vector<units::Meters>{{1.0}}), std::vector<units::Meters>{{1.0}});
}

TEST(serialize_test, struct_mixing_plain_and_cereal_members_round_trips) {
  const Record r{{1, 2}, Color::blue, {{"a", {3, 4}}}, {{5, 6}, {7, 8}}};
  EXPECT_EQ(round_trip(r), r);
}

TEST(serialize_test, base_class_members_round_trip) {
  Derived d;
  d.id = 7;
  d.extra = "more";
  EXPECT_EQ(round_trip(d), d);
}

TEST(serialize_test, atomic_member_round_trips_behind_a_pointer) {
  // A type with an atomic member cannot be returned by value, but can be sent owned.
  auto c = std::make_unique<Counter>();
  c->hits = 12;
  EXPECT_EQ(round_trip(c)->hits.load(), 12);
}

TEST(serialize_test, unique_ptr_round_trips) {
  EXPECT_EQ(round_trip(std::unique_ptr<int>()), nullptr);
  const auto back = round_trip(std::make_unique<std::string>("owned"));
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(*back, "owned");
}

TEST(serialize_test, shared_ptr_round_trips_and_keeps_sharing) {
  const auto shared = std::make_shared<Person>("Eve", 5, std::vector<std::string>{});
  const auto back = round_trip(std::vector<std::shared_ptr<Person>>{shared, nullptr, shared});
  ASSERT_EQ(back.size(), 3u);
  ASSERT_NE(back[0], nullptr);
  EXPECT_EQ(*back[0], *shared);
  EXPECT_EQ(back[1], nullptr);
  EXPECT_EQ(back[0], back[2]);  // one object, two owners, as before
}

TEST(serialize_test, weak_back_references_round_trip) {
  auto root = std::make_shared<Node>();
  root->value = 1;
  root->next = std::make_shared<Node>();
  root->next->value = 2;
  root->next->parent = root;
  const auto back = round_trip(root);
  ASSERT_NE(back->next, nullptr);
  EXPECT_EQ(back->next->value, 2);
  EXPECT_EQ(back->next->parent.lock(), back);
}

TEST(serialize_test, chrono_values_round_trip) {
  EXPECT_EQ(round_trip(std::chrono::milliseconds(1500)), std::chrono::milliseconds(1500));
  EXPECT_EQ(round_trip(std::chrono::duration<double>(0.25)), std::chrono::duration<double>(0.25));
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(round_trip(now), now);
  EXPECT_EQ(mproc::serialize(std::chrono::nanoseconds(1)).size(), sizeof(std::int64_t));
}

TEST(serialize_test, complex_and_bitset_round_trip) {
  EXPECT_EQ(round_trip(std::complex<double>(1, -2)), std::complex<double>(1, -2));
  EXPECT_EQ(round_trip(std::bitset<70>("1011")), std::bitset<70>("1011"));
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(serialize_test, every_truncation_is_a_serialization_error) {
  expect_every_prefix_rejected(12345);
  expect_every_prefix_rejected(Point{1, 2});
  expect_every_prefix_rejected(std::vector<std::string>{"abc", "", "defgh"});
  expect_every_prefix_rejected(std::map<std::string, std::vector<double>>{{"k", {1.0, 2.0}}});
  expect_every_prefix_rejected(std::make_tuple(1, std::string("x"), std::optional<bool>(true)));
  expect_every_prefix_rejected(std::variant<int, std::string>(std::string("alt")));
  expect_every_prefix_rejected(Person("Ada", 36, {"x"}));
  expect_every_prefix_rejected(std::vector<std::shared_ptr<int>>{std::make_shared<int>(1)});
  expect_every_prefix_rejected(std::make_unique<geo::Circle>(geo::Circle{{1, 2}, 3, "c"}));
  expect_every_prefix_rejected(std::vector<bool>{true, false});
  expect_every_prefix_rejected(std::map<int, Point>{{1, {2, 3}}});
}

TEST(serialize_test, truncation_message_says_what_was_missing) {
  using T = std::tuple<int, double>;
  auto bytes = mproc::serialize(T{1, 2.0});
  bytes.resize(bytes.size() - 2);
  const std::string what = error_of<T>(bytes);
  EXPECT_NE(what.find("cannot decode"), std::string::npos) << what;
  EXPECT_NE(what.find("truncated: needed 8 bytes at offset 4, 6 left"), std::string::npos) << what;
  auto strings = mproc::serialize(std::vector<std::string>{"abcdef"});
  strings.resize(strings.size() - 2);
  const std::string string_what = error_of<std::vector<std::string>>(strings);
  EXPECT_NE(string_what.find("truncated or corrupt"), std::string::npos) << string_what;
}

TEST(serialize_test, garbage_is_rejected_or_decoded_never_crashes) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 2000; ++round) {
    std::vector<std::byte> bytes(rng() % 48);
    for (auto& b : bytes) b = static_cast<std::byte>(rng() % 4 == 0 ? rng() : rng() % 3);
    decode_or_serialization_error<std::vector<std::string>>(bytes);
    decode_or_serialization_error<std::map<std::string, std::vector<double>>>(bytes);
    decode_or_serialization_error<std::variant<int, std::string, std::optional<bool>>>(bytes);
    decode_or_serialization_error<std::tuple<int, std::string, std::vector<Point>>>(bytes);
    decode_or_serialization_error<Person>(bytes);
    decode_or_serialization_error<Fraction>(bytes);
    decode_or_serialization_error<std::vector<bool>>(bytes);
    decode_or_serialization_error<std::list<std::deque<int>>>(bytes);
    decode_or_serialization_error<std::unique_ptr<Node>>(bytes);
    decode_or_serialization_error<std::vector<std::shared_ptr<std::string>>>(bytes);
    decode_or_serialization_error<std::bitset<40>>(bytes);
    decode_or_serialization_error<Tree>(bytes);
    decode_or_serialization_error<bool>(bytes);
    decode_or_serialization_error<std::array<bool, 3>>(bytes);
  }
}

TEST(serialize_test, huge_length_prefix_is_rejected_before_allocating) {
  // A vector of one string whose length prefix claims 2^62 bytes.
  std::vector<std::byte> bytes;
  append_raw<std::uint64_t>(bytes, 1);
  append_raw<std::uint64_t>(bytes, std::uint64_t{1} << 62);
  bytes.resize(bytes.size() + 16, std::byte{'a'});
  const std::string what = error_of<std::vector<std::string>>(bytes);
  EXPECT_NE(what.find("length prefix"), std::string::npos) << what;

  std::vector<std::byte> huge_vector;
  append_raw<std::uint64_t>(huge_vector, ~std::uint64_t{0} / 2);
  EXPECT_THROW((void)mproc::deserialize<std::list<int>>(huge_vector), mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<std::deque<std::string>>(huge_vector),
               mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<Person>(huge_vector), mproc::SerializationError);
  EXPECT_THROW(((void)mproc::deserialize<std::map<int, int>>(huge_vector)),
               mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<std::unordered_set<int>>(huge_vector),
               mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<std::valarray<double>>(huge_vector),
               mproc::SerializationError);
  // 3 elements of 8 bytes with 16 bytes left: the element size is taken into account.
  std::vector<std::byte> short_vector;
  append_raw<std::uint64_t>(short_vector, 3);
  short_vector.resize(short_vector.size() + 16);
  EXPECT_THROW((void)mproc::deserialize<std::tuple<std::vector<double>>>(short_vector),
               mproc::SerializationError);
}

TEST(serialize_test, elements_that_encode_to_nothing_have_a_bounded_count) {
  const auto back = round_trip(std::tuple<std::vector<Empty>>(std::vector<Empty>(100)));
  EXPECT_EQ(std::get<0>(back).size(), 100u);
  std::vector<std::byte> bytes;
  append_raw<std::uint64_t>(bytes, mproc::detail::max_zero_size_elements + 1);
  EXPECT_THROW((void)mproc::deserialize<std::tuple<std::vector<Empty>>>(bytes),
               mproc::SerializationError);
}

TEST(serialize_test, bool_byte_other_than_0_or_1_is_rejected) {
  EXPECT_THROW((void)mproc::deserialize<bool>(bytes_of({7})), mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<std::optional<bool>>(bytes_of({0, 7})),
               mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<std::optional<int>>(bytes_of({2})),
               mproc::SerializationError);  // the "empty" flag is a bool too
  std::vector<std::byte> vec;
  append_raw<std::uint64_t>(vec, 2);
  vec.push_back(std::byte{1});
  vec.push_back(std::byte{7});
  const std::string what = error_of<std::vector<bool>>(vec);
  EXPECT_NE(what.find("0 or 1"), std::string::npos) << what;
  EXPECT_THROW(((void)mproc::deserialize<std::array<bool, 2>>(bytes_of({1, 7}))),
               mproc::SerializationError);
  EXPECT_THROW(((void)mproc::deserialize<std::tuple<std::array<bool, 2>>>(bytes_of({0, 9}))),
               mproc::SerializationError);
  std::vector<std::byte> arrays;
  append_raw<std::uint64_t>(arrays, 1);
  arrays.push_back(std::byte{1});
  arrays.push_back(std::byte{3});
  EXPECT_THROW(((void)mproc::deserialize<std::tuple<std::vector<std::array<bool, 2>>>>(arrays)),
               mproc::SerializationError);
}

TEST(serialize_test, wrong_size_fast_path_input_is_rejected) {
  EXPECT_THROW((void)mproc::deserialize<int>(bytes_of({1, 2, 3})), mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<double>(bytes_of({})), mproc::SerializationError);
  EXPECT_THROW((void)mproc::deserialize<Point>(bytes_of({1, 2, 3, 4, 5, 6, 7, 8, 9})),
               mproc::SerializationError);
  const std::string what = error_of<std::vector<int>>(bytes_of({1, 2, 3, 4, 5}));
  EXPECT_NE(what.find("whole number"), std::string::npos) << what;
  EXPECT_THROW((void)mproc::deserialize<std::u16string>(bytes_of({1})), mproc::SerializationError);
  EXPECT_THROW(((void)mproc::deserialize<std::array<int, 2>>(bytes_of({1, 2, 3, 4}))),
               mproc::SerializationError);
}

TEST(serialize_test, trailing_bytes_are_rejected) {
  auto bytes = mproc::serialize(std::vector<std::string>{"a"});
  bytes.push_back(std::byte{0});
  bytes.push_back(std::byte{0});
  const std::string what = error_of<std::vector<std::string>>(bytes);
  EXPECT_NE(what.find("2 trailing bytes"), std::string::npos) << what;
  auto fast = mproc::serialize(7);
  fast.push_back(std::byte{0});
  const std::string fast_what = error_of<int>(fast);
  EXPECT_NE(fast_what.find("1 trailing bytes"), std::string::npos) << fast_what;
}

TEST(serialize_test, bad_variant_index_is_rejected) {
  std::vector<std::byte> bytes;
  append_raw<std::int32_t>(bytes, 5);
  append_raw<std::int32_t>(bytes, 0);
  using V = std::variant<int, std::string>;
  EXPECT_THROW((void)mproc::deserialize<V>(bytes), mproc::SerializationError);
  bytes.clear();
  append_raw<std::int32_t>(bytes, -1);
  append_raw<std::int32_t>(bytes, 0);
  EXPECT_THROW((void)mproc::deserialize<V>(bytes), mproc::SerializationError);
}

TEST(serialize_test, forged_shared_ptr_back_reference_is_rejected) {
  // A pair whose second pointer claims to be the first object, but with another type:
  // cereal alone would static_pointer_cast an int to a std::string.
  auto bytes = mproc::serialize(std::make_pair(std::make_shared<int>(1), std::make_shared<int>(2)));
  using Forged = std::pair<std::shared_ptr<int>, std::shared_ptr<std::string>>;
  std::vector<std::byte> forged(bytes.begin(), bytes.begin() + 8);  // id 1 (new) + the int
  append_raw<std::uint32_t>(forged, 1);                             // back-reference to id 1
  const std::string what = error_of<Forged>(forged);
  EXPECT_NE(what.find("another type"), std::string::npos) << what;
  // A reference to an id never defined.
  std::vector<std::byte> dangling;
  append_raw<std::uint32_t>(dangling, 9);
  EXPECT_THROW((void)mproc::deserialize<std::shared_ptr<int>>(dangling), mproc::SerializationError);
}

TEST(serialize_test, strong_shared_ptr_cycle_is_rejected) {
  // Node 1 whose `next` refers back to node 1: decoding it would leak.
  std::vector<std::byte> bytes;
  append_raw<std::uint32_t>(bytes, 0x80000001u);  // new object, id 1
  append_raw<int>(bytes, 5);                      // value
  append_raw<std::uint32_t>(bytes, 1);            // next -> id 1 (still being decoded)
  append_raw<std::uint32_t>(bytes, 0);            // parent: null
  const std::string what = error_of<std::shared_ptr<Node>>(bytes);
  EXPECT_NE(what.find("cycle"), std::string::npos) << what;
}

TEST(serialize_test, nesting_beyond_the_limit_is_rejected_both_ways) {
  Tree deep;
  Tree* leaf = &deep;
  for (int i = 0; i < 5000; ++i) {
    leaf->children.emplace_back();
    leaf = &leaf->children.back();
  }
  std::vector<std::byte> out = bytes_of({1, 2});
  EXPECT_THROW(mproc::serialize_to(out, deep), mproc::SerializationError);
  EXPECT_EQ(out, bytes_of({1, 2}));  // left as it was
  // Decoding: a million levels of "one child" must fail cleanly, not overflow the stack.
  std::vector<std::byte> bytes;
  for (int i = 0; i < 1000000; ++i) append_raw<std::uint64_t>(bytes, 1);
  const std::string what = error_of<Tree>(bytes);
  EXPECT_NE(what.find("nest deeper"), std::string::npos) << what;
  // Unwind the tree iteratively: its recursive destructor would be as deep as the tree.
  while (!deep.children.empty()) {
    Tree child = std::move(deep.children.back());
    deep.children = std::move(child.children);
  }
}

TEST(serialize_test, moderate_nesting_round_trips) {
  Tree tree;
  Tree* leaf = &tree;
  for (int i = 0; i < 100; ++i) {
    leaf->children.emplace_back();
    leaf = &leaf->children.back();
  }
  const Tree back = round_trip(tree);
  int depth = 0;
  for (const Tree* t = &back; !t->children.empty(); t = &t->children.front()) ++depth;
  EXPECT_EQ(depth, 100);
}

TEST(serialize_test, user_load_logic_error_becomes_serialization_error) {
  std::vector<std::byte> bytes;
  append_raw<std::uint64_t>(bytes, 3);
  bytes.insert(bytes.end(), {std::byte{'1'}, std::byte{'2'}, std::byte{'3'}});
  const std::string what = error_of<Fraction>(bytes);
  EXPECT_NE(what.find("no slash"), std::string::npos) << what;
}

TEST(serialize_test, bitset_with_bad_characters_is_rejected) {
  std::vector<std::byte> bytes;
  bytes.push_back(std::byte{2});  // cereal's "string" representation
  append_raw<std::uint64_t>(bytes, 2);
  bytes.insert(bytes.end(), {std::byte{'1'}, std::byte{'x'}});
  EXPECT_THROW((void)mproc::deserialize<std::bitset<8>>(bytes), mproc::SerializationError);
}

}  // namespace
