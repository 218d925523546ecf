// mproc/detail/function_identity.hpp — names a function so another process running the
// same program can find it: (module, offset from the module's load base). This is how
// function pointers and captureless lambdas cross spawn and forkserver, where addresses
// differ (ASLR) and nothing can be pickled.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <typeinfo>
#include <vector>

namespace mproc::detail {

struct FunctionId {
  std::string module;         ///< path of the shared object; empty for the main executable
  std::uintptr_t offset = 0;  ///< address minus the module's load base

  template <class Archive>
  void serialize(Archive& archive) {
    archive(module, offset);
  }
  friend bool operator==(const FunctionId&, const FunctionId&) = default;
};

/// The identity of the code at `address`. Throws std::invalid_argument when the
/// address is in no loaded module (e.g. JIT code).
FunctionId function_id_of(const void* address);

/// serialize(function_id_of(address)), remembered for the last address per thread (a pool
/// encodes its task's function on every submission). Valid until this thread's next call.
const std::vector<std::byte>& encoded_function_id_of(const void* address);

/// The address of `id` in this process, loading its module when needed.
/// Throws std::runtime_error when the module cannot be found or the offset is outside it.
void* resolve_function(const FunctionId& id);

/// A readable name for a type (demangled typeid name).
std::string demangle(const char* mangled);
/// The demangled name of T, computed once.
template <class T>
const std::string& demangled_type_name() {
  static const std::string name = demangle(typeid(T).name());
  return name;
}

/// A readable name for the function at `address` (from the symbol table, so static
/// functions are named too; "module+0xoffset" when it has no symbol). Cached: the
/// reference stays valid for the life of the process.
const std::string& function_name_at(const void* address);

}  // namespace mproc::detail
