// tests/fuzz/make_corpus.cpp — writes the seed corpus of fuzz_serialize: valid encodings of
// sample values, each prefixed with its case byte. Usage: make_corpus <output directory>.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "fuzz_types.hpp"

namespace {

using namespace mproc_fuzz;

std::string out_dir;

/// Writes <case>-<name>.bin holding the case byte and value's encoding.
template <std::size_t Case, class T>
void seed(const char* name, const T& value) {
  static_assert(std::is_same_v<T, typename std::tuple_element_t<Case, Cases>::type>);
  std::vector<std::byte> bytes{static_cast<std::byte>(Case)};
  mproc::serialize_to(bytes, value);
  const std::string path = out_dir + "/" + std::to_string(Case) + "-" + name + ".bin";
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  if (!file) {
    std::cerr << "make_corpus: cannot write " << path << "\n";
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus <output directory>\n";
    return 2;
  }
  out_dir = argv[1];

  seed<0>("string", std::string("hello, world"));
  seed<1>("ints", std::vector<int>{1, -1, 1 << 20});
  seed<2>("map", std::map<std::string, std::vector<double>>{{"pi", {3.14159}}, {"e", {2.7, 1.0}}});
  using V = std::variant<int, std::string, std::optional<bool>>;
  seed<3>("variant-int", V{42});
  seed<3>("variant-string", V{std::string("text")});
  seed<3>("variant-optional", V{std::optional<bool>(true)});
  seed<4>("tuple", std::make_tuple(7, std::string("seven"), std::vector<Point>{{1, 2}, {3, 4}},
                                   Color::green, true));
  seed<5>(
      "person",
      Person{
          "Ada", 36, {{"home", {1, 2}}}, std::set<std::string>{"math"}, {Color::red, Color::blue}});
  seed<6>("bools", std::vector<bool>{true, false, true});
  seed<7>("lists", std::list<std::deque<std::string>>{{"a", "b"}, {}, {"c"}});
  {
    auto list = std::make_unique<ListNode>();
    list->value = 1;
    list->next = std::make_unique<ListNode>();
    list->next->value = 2;
    seed<8>("linked-list", list);
  }
  {
    auto root = std::make_shared<Shared>();
    root->label = "root";
    root->child = std::make_shared<Shared>();
    root->child->label = "child";
    root->child->parent = root;
    seed<9>("shared", std::vector<std::shared_ptr<Shared>>{root, root->child, nullptr});
  }
  seed<10>("unordered", std::unordered_map<int, std::string>{{1, "one"}, {2, "two"}});
  {
    Tree tree;
    tree.tag = 1;
    tree.children.resize(2);
    tree.children[0].children.resize(1);
    seed<11>("tree", tree);
  }
  seed<12>("bitset", std::bitset<100>().set(3).set(99));
  seed<13>("fractions", std::vector<Fraction>{{1, 2}, {-3, 4}});
  seed<14>("chrono", std::make_tuple(std::chrono::milliseconds(1500), std::complex<float>(1, 2),
                                     std::array<bool, 3>{true, false, true}));
  seed<15>("point", Point{5, -5});
  seed<16>("bool", true);
  seed<17>("multimap", std::multimap<int, std::string>{{1, "a"}, {1, "b"}, {0, "c"}});
  seed<18>("grid", std::vector<std::vector<Point>>{{{1, 1}}, {}, {{2, 2}}});
  seed<19>("pair", std::make_pair(std::optional<Point>(Point{1, 1}),
                                  std::make_unique<std::string>("owned")));
  seed<20>("arrays",
           std::make_tuple(std::vector<std::array<bool, 2>>{{true, false}}, std::array<int, 0>{},
                           std::vector<std::complex<double>>{{1, -1}}));
  return 0;
}
