// src/pool/pool.cpp — mproc::Pool's non-template members: construction, shutdown, stats.
#include "mproc/pool.hpp"

#include <exception>

namespace mproc {

Pool::Pool(unsigned processes) : Pool(PoolOptions{.processes = processes}) {}

Pool::Pool(const PoolOptions& options)
    : core_(detail::make_pool_core(options)), uncaught_at_construction_(std::uncaught_exceptions()) {}

Pool::~Pool() {
  if (!core_) return;
  try {
    if (std::uncaught_exceptions() > uncaught_at_construction_)
      detail::pool_terminate(*core_);  // unwinding: do not wait for work nobody will collect
    else
      detail::pool_close(*core_);
    detail::pool_join(*core_);
  } catch (...) {
  }
}

void Pool::close() { detail::pool_close(*core_); }
void Pool::join() { detail::pool_join(*core_); }
void Pool::terminate() { detail::pool_terminate(*core_); }
unsigned Pool::processes() const { return detail::pool_processes(*core_); }
PoolStats Pool::stats() const { return detail::pool_stats(*core_); }

}  // namespace mproc
