// src/function_identity.cpp — (module, offset) identities of functions across processes.
#include "mproc/detail/function_identity.hpp"
#include "mproc/serialize.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <boost/stacktrace.hpp>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <cstdlib>
#include <memory>
#include <stdexcept>

namespace mproc::detail {
namespace {

struct ModuleLookup {
  const char* name = nullptr;  // nullptr: the main executable
  std::uintptr_t base = 0;
  std::uintptr_t end = 0;  // one past the highest loaded segment
  bool found = false;
};

// dl_iterate_phdr visits the main executable first, with an empty name.
int find_module(dl_phdr_info* info, std::size_t, void* data) {
  auto* lookup = static_cast<ModuleLookup*>(data);
  bool is_main = info->dlpi_name == nullptr || info->dlpi_name[0] == '\0';
  bool match = lookup->name == nullptr
                   ? is_main
                   : (!is_main && std::string_view(info->dlpi_name) == lookup->name);
  if (!match) return 0;
  lookup->base = info->dlpi_addr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD)
      lookup->end = std::max<std::uintptr_t>(lookup->end, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
  }
  lookup->found = true;
  return 1;
}

ModuleLookup lookup_module(const char* name) {
  ModuleLookup lookup;
  lookup.name = name;
  dl_iterate_phdr(find_module, &lookup);
  return lookup;
}

}  // namespace

FunctionId function_id_of(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) == 0 || info.dli_fbase == nullptr)
    throw std::invalid_argument("mproc: the target function is not in any loaded module");
  auto base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  FunctionId id;
  id.offset = reinterpret_cast<std::uintptr_t>(address) - base;
  // The main executable's base is what dl_iterate_phdr reports for the unnamed entry.
  ModuleLookup main = lookup_module(nullptr);
  if (!(main.found && main.base == base)) id.module = info.dli_fname ? info.dli_fname : "";
  return id;
}

const std::vector<std::byte>& encoded_function_id_of(const void* address) {
  // A pool names its task's function on every submission: the last one is remembered per
  // thread (dladdr and dl_iterate_phdr take the loader's lock and walk every module).
  thread_local const void* last_address = nullptr;
  thread_local std::vector<std::byte> last_bytes;
  if (address == nullptr || address != last_address) {
    std::vector<std::byte> bytes = serialize(function_id_of(address));
    last_bytes.swap(bytes);
    last_address = address;
  }
  return last_bytes;
}

void* resolve_function(const FunctionId& id) {
  ModuleLookup lookup = lookup_module(id.module.empty() ? nullptr : id.module.c_str());
  if (!lookup.found && !id.module.empty()) {
    // The parent loaded a plugin this process has not: load it the same way.
    if (dlopen(id.module.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr)
      throw std::runtime_error("mproc: cannot load module " + id.module + ": " + dlerror());
    lookup = lookup_module(id.module.c_str());
  }
  if (!lookup.found)
    throw std::runtime_error("mproc: module " + (id.module.empty() ? "<main>" : id.module) +
                             " is not loaded in this process");
  if (lookup.base + id.offset >= lookup.end)
    throw std::runtime_error("mproc: function offset lies outside module " +
                             (id.module.empty() ? "<main>" : id.module) +
                             " (is this the same program?)");
  return reinterpret_cast<void*>(lookup.base + id.offset);
}

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> text(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                              std::free);
  return status == 0 && text ? std::string(text.get()) : std::string(mangled);
}

namespace {

std::string look_up_function_name(const void* address) {
  // dladdr is cheap and knows exported symbols. Boost.Stacktrace (libbacktrace) reads the
  // symbol table and debug information — megabytes, once per process — so it is asked only
  // for functions with internal linkage, which dladdr cannot see.
  Dl_info exported{};
  if (dladdr(address, &exported) != 0 && exported.dli_sname) return demangle(exported.dli_sname);
  std::string name = boost::stacktrace::frame(reinterpret_cast<boost::stacktrace::frame::native_frame_ptr_t>(address)).name();
  if (!name.empty()) return name;
  Dl_info info{};
  if (dladdr(address, &info) == 0) return "<unknown function>";
  if (info.dli_sname) return demangle(info.dli_sname);
  char offset[32];
  std::snprintf(offset, sizeof offset, "+0x%zx",
                static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(address) -
                                         reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
  return std::string(info.dli_fname ? info.dli_fname : "<module>") + offset;
}

}  // namespace

const std::string& function_name_at(const void* address) {
  static std::mutex mutex;
  static auto* names = new std::unordered_map<const void*, std::string>();  // never freed: used at exit
  std::lock_guard lock(mutex);
  auto it = names->find(address);
  if (it == names->end()) it = names->emplace(address, look_up_function_name(address)).first;
  return it->second;
}

}  // namespace mproc::detail
