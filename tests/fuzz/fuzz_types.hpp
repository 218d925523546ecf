// tests/fuzz/fuzz_types.hpp — the types fuzz_serialize decodes, with sample values that
// make_corpus encodes into the seed corpus. The first input byte picks the case.
#pragma once

#include <array>
#include <bitset>
#include <chrono>
#include <complex>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "mproc/serialize.hpp"

namespace mproc_fuzz {

enum class Color : std::uint8_t { red, green, blue };

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point&) const = default;
};

/// A user type with a serialize member mixing plain data and std containers.
struct Person {
  std::string name;
  int age = 0;
  std::map<std::string, Point> places;
  std::optional<std::set<std::string>> tags;
  std::vector<Color> favourites;
  bool operator==(const Person&) const = default;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, age, places, tags, favourites);
  }
};

/// A save/load pair whose load validates (and throws std::invalid_argument / std::out_of_range).
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
    if (slash == std::string::npos) throw std::invalid_argument("a fraction needs a slash");
    num = std::stoi(text.substr(0, slash));
    den = std::stoi(text.substr(slash + 1));
  }
};

/// Recursive through unique_ptr.
struct ListNode {
  int value = 0;
  std::unique_ptr<ListNode> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, next);
  }
};

/// Shared and weak pointers between nodes.
struct Shared {
  std::string label;
  std::shared_ptr<Shared> child;
  std::weak_ptr<Shared> parent;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(label, child, parent);
  }
};

/// Recursive through a vector.
struct Tree {
  std::vector<Tree> children;
  int tag = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(tag, children);
  }
};

// Each case: the type, whether == is a meaningful check after a round trip (false where
// floating point NaNs or pointer identity get in the way: those compare re-encoded bytes),
// and whether re-encoding must give the same bytes (false for unordered containers).
template <class T, bool ValueEquality, bool ByteEquality = true>
struct Case {
  using type = T;
  static constexpr bool value_equality = ValueEquality;
  static constexpr bool byte_equality = ByteEquality;
};

using Cases =
    std::tuple<Case<std::string, true>,                                          // 0: fast range
               Case<std::vector<int>, true>,                                     // 1: fast range
               Case<std::map<std::string, std::vector<double>>, false>,          // 2
               Case<std::variant<int, std::string, std::optional<bool>>, true>,  // 3
               Case<std::tuple<int, std::string, std::vector<Point>, Color, bool>, true>,  // 4
               Case<Person, true>,                                                         // 5
               Case<std::vector<bool>, true>,                                              // 6
               Case<std::list<std::deque<std::string>>, true>,                             // 7
               Case<std::unique_ptr<ListNode>, false>,                                     // 8
               Case<std::vector<std::shared_ptr<Shared>>, false>,                          // 9
               Case<std::unordered_map<int, std::string>, true, false>,                    // 10
               Case<Tree, false>,                                                          // 11
               Case<std::bitset<100>, true>,                                               // 12
               Case<std::vector<Fraction>, true>,                                          // 13
               Case<std::tuple<std::chrono::milliseconds, std::complex<float>, std::array<bool, 3>>,
                    false>,                                  // 14
               Case<Point, true>,                            // 15: fast
               Case<bool, true>,                             // 16: fast
               Case<std::multimap<int, std::string>, true>,  // 17
               Case<std::vector<std::vector<Point>>, true>,  // 18
               Case<std::pair<std::optional<Point>, std::unique_ptr<std::string>>, false>,  // 19
               Case<std::tuple<std::vector<std::array<bool, 2>>, std::array<int, 0>,
                               std::vector<std::complex<double>>>,
                    false>>;  // 20

inline constexpr std::size_t case_count = std::tuple_size_v<Cases>;

/// Calls f.template operator()<Case>() for the case with this index.
template <class F, std::size_t... I>
void visit_case_impl(std::size_t index, F&& f, std::index_sequence<I...>) {
  ((index == I ? (f.template operator()<std::tuple_element_t<I, Cases>>(), 0) : 0), ...);
}
template <class F>
void visit_case(std::size_t index, F&& f) {
  visit_case_impl(index, f, std::make_index_sequence<case_count>{});
}

}  // namespace mproc_fuzz
