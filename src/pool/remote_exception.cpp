// src/pool/remote_exception.cpp — exceptions across the process boundary: a worker
// describes what it caught (type, what(), stack trace); the pool rebuilds the same type
// for std exceptions and registered ones, and a RemoteError for anything else.
#include <cxxabi.h>

#include <boost/stacktrace.hpp>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include "mproc/detail/task_entry.hpp"
#include "mproc/pool.hpp"

namespace mproc::detail {
namespace {

struct ExceptionRegistry {
  std::mutex mutex;
  std::unordered_map<std::string, ExceptionFactory> factories;
};

template <class E>
std::exception_ptr make_with_what(const std::string& what) {
  return std::make_exception_ptr(E(what));
}

ExceptionRegistry& registry() {
  static ExceptionRegistry* r = [] {
    auto* fresh = new ExceptionRegistry();
    auto add = [&](const std::type_info& type, ExceptionFactory factory) {
      fresh->factories.emplace(type.name(), factory);
    };
    add(typeid(std::runtime_error), make_with_what<std::runtime_error>);
    add(typeid(std::logic_error), make_with_what<std::logic_error>);
    add(typeid(std::invalid_argument), make_with_what<std::invalid_argument>);
    add(typeid(std::domain_error), make_with_what<std::domain_error>);
    add(typeid(std::length_error), make_with_what<std::length_error>);
    add(typeid(std::out_of_range), make_with_what<std::out_of_range>);
    add(typeid(std::range_error), make_with_what<std::range_error>);
    add(typeid(std::overflow_error), make_with_what<std::overflow_error>);
    add(typeid(std::underflow_error), make_with_what<std::underflow_error>);
    add(typeid(std::bad_alloc), [](const std::string&) { return std::make_exception_ptr(std::bad_alloc()); });
    return fresh;
  }();
  return *r;
}

}  // namespace

void register_exception_type(const char* type_id, ExceptionFactory factory) {
  auto& r = registry();
  std::lock_guard lock(r.mutex);
  r.factories[type_id] = factory;
}

namespace {
std::uint64_t worker_memory_limit = 0;
bool memory_limit_was_hit = false;
}  // namespace

void set_worker_memory_limit(std::uint64_t bytes) { worker_memory_limit = bytes; }
bool memory_limit_hit() { return std::exchange(memory_limit_was_hit, false); }

bool throw_traces_enabled();
std::string take_throw_trace();

RemoteException capture_current_exception(bool with_trace) {
  RemoteException remote;
  if (std::type_info* type = abi::__cxa_current_exception_type()) {
    remote.type_id = type->name();
    remote.type_name = demangle(type->name());
  } else {
    remote.type_name = "unknown exception";
  }
  try {
    throw;
  } catch (const std::bad_alloc&) {
    if (worker_memory_limit) {
      memory_limit_was_hit = true;
      remote.type_id = memory_limit_type_id;
      remote.type_name = "mproc::MemoryLimitExceeded";
      remote.what = std::to_string(worker_memory_limit);
      take_throw_trace();
      return remote;  // the trace of an allocation failure is not worth another allocation
    }
    remote.what = "std::bad_alloc";
  } catch (const std::exception& e) {
    remote.what = e.what();
  } catch (...) {
  }
  // Formatting a trace reads debug information: done only when asked (the first failure
  // of a chunk, every failed apply), never for each of many failed items.
  std::string thrown_at = take_throw_trace();
  if (!with_trace) return remote;
  if (!thrown_at.empty()) {
    remote.traceback = std::move(thrown_at);
  } else {
    std::ostringstream trace;
    trace << boost::stacktrace::stacktrace();
    remote.traceback = trace.str();
  }
  return remote;
}

std::exception_ptr rebuild_exception(const RemoteException& remote) {
  auto& r = registry();
  ExceptionFactory factory = nullptr;
  {
    std::lock_guard lock(r.mutex);
    auto it = r.factories.find(remote.type_id);
    if (it != r.factories.end()) factory = it->second;
  }
  if (factory) return factory(remote.what);
  if (remote.type_id == memory_limit_type_id) {
    std::size_t limit = 0;
    try {
      limit = std::stoull(remote.what);
    } catch (...) {
    }
    return std::make_exception_ptr(MemoryLimitExceeded(limit, CrashReport{}));
  }
  return std::make_exception_ptr(RemoteError(remote.type_name, remote.what, remote.traceback));
}

}  // namespace mproc::detail
