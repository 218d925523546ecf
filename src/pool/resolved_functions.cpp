// src/pool/resolved_functions.cpp — a worker's memory of the functions its tasks name: each
// (module, offset) is resolved once per process, and the few a thread uses task after task
// cost a comparison, not a string key, a lock and a map lookup.
#include <array>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mproc/detail/task_entry.hpp"

namespace mproc::detail {
namespace {

// The last few lookups of one thread. A function-pointer task resolves two names per task
// (the entry that decodes its arguments, then the function itself), so one remembered name
// would miss every time; a handful covers a worker that alternates between a few tasks.
template <class Key>
class RecentLookups {
 public:
  template <class Matches>
  void* find(Matches&& matches) const {
    for (const auto& entry : entries_)
      if (entry.address && matches(entry.key)) return entry.address;
    return nullptr;
  }
  void remember(Key key, void* address) {
    entries_[next_] = Entry{std::move(key), address};
    next_ = (next_ + 1) % entries_.size();
  }

 private:
  struct Entry {
    Key key{};
    void* address = nullptr;
  };
  std::array<Entry, 4> entries_{};
  std::size_t next_ = 0;
};

struct NamedOffset {
  std::string module;
  std::uintptr_t offset = 0;
};

}  // namespace

namespace {
// The process's memory of every name resolved so far (shared by its threads).
void* resolve_once_per_process(std::string_view module, std::uintptr_t offset) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<std::string, void*>();  // never freed: used at exit
  std::string key = std::string(module) + '#' + std::to_string(offset);
  std::lock_guard lock(mutex);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  void* address = resolve_function(FunctionId{std::string(module), offset});
  cache->emplace(std::move(key), address);
  return address;
}
}  // namespace

void* resolve_function_cached(std::string_view module, std::uintptr_t offset) {
  thread_local RecentLookups<NamedOffset> recent;
  if (void* address = recent.find([&](const NamedOffset& key) { return key.offset == offset && key.module == module; }))
    return address;
  void* address = resolve_once_per_process(module, offset);
  recent.remember(NamedOffset{std::string(module), offset}, address);
  return address;
}

void* resolve_encoded_function_cached(std::span<const std::byte> encoded) {
  // Keyed by the encoded bytes themselves: a hit decodes nothing and allocates nothing. (A
  // miss goes to the process's memory directly, leaving the named lookups' recent entries to
  // the task entries that use them.)
  thread_local RecentLookups<std::vector<std::byte>> recent;
  if (void* address = recent.find([&](const std::vector<std::byte>& key) {
        return key.size() == encoded.size() && (key.empty() || std::memcmp(key.data(), encoded.data(), key.size()) == 0);
      }))
    return address;
  const auto id = deserialize<FunctionId>(encoded);
  void* address = resolve_once_per_process(id.module, id.offset);
  recent.remember(std::vector<std::byte>(encoded.begin(), encoded.end()), address);
  return address;
}

}  // namespace mproc::detail
