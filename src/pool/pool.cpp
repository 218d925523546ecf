// src/pool/pool.cpp — mproc::Pool's non-template members: construction, shutdown, stats.
#include "mproc/pool.hpp"

#include <exception>
#include <utility>

namespace mproc {

Pool::Pool(unsigned processes) : Pool(PoolOptions{.processes = processes}) {}

Pool::Pool(const PoolOptions& options) : Pool(detail::make_pool_core(options)) {}

Pool::Pool(std::shared_ptr<detail::PoolEngine> engine)
    : engine_(std::move(engine)), uncaught_at_construction_(std::uncaught_exceptions()) {}

Pool::~Pool() {
  if (!engine_) return;
  try {
    if (std::uncaught_exceptions() > uncaught_at_construction_)
      engine_->terminate();  // unwinding: do not wait for work nobody will collect
    else
      engine_->close();
    engine_->join();
  } catch (...) {
  }
}

void Pool::close() { engine_->close(); }
void Pool::join() { engine_->join(); }
void Pool::terminate() { engine_->terminate(); }
unsigned Pool::processes() const { return engine_->processes(); }
PoolStats Pool::stats() const { return engine_->stats(); }

}  // namespace mproc
