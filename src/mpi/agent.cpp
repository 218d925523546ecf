// src/mpi/agent.cpp — the life of a rank ≥ 1: it builds the local worker pool the driver
// asks for, feeds it the tasks that arrive, and sends every outcome back, until shutdown.
//
//   MPI (this thread only)            local PoolCore (workers forked from the early zygote)
//   tag_tasks ──► submit() ─────────► task rings ──► workers
//   tag_results ◄── outbox ◄── sink ◄── result rings (drained by this thread through
//                                        make_progress(), or by the pool's supervisor)
//
// The loop spins for a short while after any activity and then sleeps in short slices
// (woken early when a result lands in the outbox), so a busy agent answers in microseconds
// and an idle one costs next to no CPU.
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <mutex>

#include "futex.hpp"
#include "mpi/runtime.hpp"
#include "mpi/wire.hpp"
#include "pool/pool_core.hpp"

namespace mproc::mpi::detail {
namespace {

using mproc::detail::PoolEngine;
using mproc::detail::ResultKind;
using mproc::detail::TaskRef;
using mproc::detail::TaskRequest;

// Results waiting to be sent to the driver, filled by sinks from whichever thread completes
// a task (this one in make_progress(), or the local pool's supervisor).
struct Outbox {
  std::mutex mutex;
  std::condition_variable filled;
  std::vector<std::byte> records;
  std::uint32_t count = 0;

  void add(std::uint64_t id, Outcome outcome, std::span<const std::byte> payload) {
    ResultRecord record;
    record.id = id;
    record.outcome = static_cast<std::uint32_t>(outcome);
    record.payload_length = payload.size();
    std::lock_guard lock(mutex);
    put(records, record);
    put_bytes(records, payload.data(), payload.size());
    if (count++ == 0) filled.notify_one();
  }
  void add_failure(std::uint64_t id, std::exception_ptr error) {
    std::vector<std::byte> bytes;
    try {
      bytes = serialize(WireError::from(error));
    } catch (...) {
      WireError fallback;
      fallback.what = "mproc::mpi: an agent could not encode a task's failure";
      bytes = serialize(fallback);
    }
    add(id, Outcome::failure, bytes);
  }
};

class AgentSink final : public mproc::detail::TaskSink {
 public:
  AgentSink(std::shared_ptr<Outbox> outbox, std::uint64_t id) : outbox_(std::move(outbox)), id_(id) {}
  void deliver(const TaskRef&, ResultKind kind, std::span<const std::byte> payload) override {
    outbox_->add(id_, static_cast<Outcome>(kind), payload);
  }
  void fail(const TaskRef&, std::exception_ptr error) override { outbox_->add_failure(id_, error); }

 private:
  std::shared_ptr<Outbox> outbox_;
  std::uint64_t id_;
};

// The driver's initializer, run in each worker: its spawn target names the entry that
// decodes the arguments and calls the user's function (same program, same offsets).
void run_forwarded_initializer(std::string module, std::uint64_t offset, std::vector<std::byte> payload) {
  mproc::detail::SpawnTarget target;
  target.entry.module = std::move(module);
  target.entry.offset = static_cast<std::uintptr_t>(offset);
  target.payload = std::move(payload);
  mproc::detail::run_spawn_target(target);
}

// A zygote forked after MPI_Init. Open MPI's handlers of fatal signals (which print a
// backtrace) would be inherited by every worker: the zygote is forked with the default
// dispositions, which are then restored here.
constexpr int inherited_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGPIPE};

mproc::detail::LaunchedChild start_late_zygote() {
  constexpr auto& signals = inherited_signals;
  struct sigaction saved[std::size(signals)];
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (std::size_t i = 0; i < std::size(signals); ++i) ::sigaction(signals[i], &default_action, &saved[i]);
  struct Restore {
    const struct sigaction* saved;
    ~Restore() {
      for (std::size_t i = 0; i < std::size(inherited_signals); ++i)
        ::sigaction(inherited_signals[i], &saved[i], nullptr);
    }
  } restore{saved};
  return mproc::detail::start_zygote();
}

class Agent {
 public:
  Agent() : rt_(runtime()), outbox_(std::make_shared<Outbox>()) {}

  [[noreturn]] void run() {
    IdleBackoff backoff;
    // While this loop spins it drains the local pool's result rings itself, and tells the
    // pool so: its supervisor then asks the workers for no wake-up per result (which would
    // cost a cross-CPU wake-up, ~45 µs, and a third runnable thread on the agent's cores).
    std::shared_ptr<PoolEngine> spinning_on;
    for (;;) {
      if (spinning_on != pool_) {
        if (spinning_on) spinning_on->waiter_leaves(false);
        spinning_on = pool_;
        if (spinning_on) spinning_on->waiter_arrives();
      }
      bool busy = receive_all();
      if (pool_ && pool_->make_progress()) busy = true;
      busy |= send_results();
      busy |= out_.poll();
      if (busy) {
        backoff.active();
        continue;
      }
      auto sleep = backoff.next_sleep();
      if (sleep.count() == 0) {
        backoff.pause();
        continue;
      }
      if (spinning_on) {
        spinning_on->waiter_leaves(false);  // the supervisor delivers while this loop sleeps
        spinning_on.reset();
      }
      std::unique_lock lock(outbox_->mutex);
      outbox_->filled.wait_for(lock, sleep, [&] { return outbox_->count != 0; });
    }
  }

 private:
  bool receive_all() {
    bool any = false;
    for (;;) {
      int flag = 0;
      MPI_Status status;
      check(MPI_Iprobe(0, MPI_ANY_TAG, rt_.comm, &flag, &status), "MPI_Iprobe from the driver");
      if (!flag) return any;
      any = true;
      receive(status, rt_.comm, buffer_);
      switch (status.MPI_TAG) {
        case tag_configure: configure(); break;
        case tag_tasks: submit_tasks(); break;
        case tag_end_pool: end_pool(!buffer_.empty() && buffer_[0] != std::byte{0}); break;
        case tag_shutdown: shutdown();
        default: abort_job("rank " + std::to_string(rt_.rank) + " got a message with unknown tag " +
                           std::to_string(status.MPI_TAG));
      }
    }
  }

  void configure() {
    AgentHello hello;
    hello.host = rt_.host;
    hello.pid = ::getpid();
    try {
      auto config = deserialize<AgentConfig>(buffer_);
      PoolOptions options;
      options.processes = config.processes;
      options.max_tasks_per_child = config.max_tasks_per_child;
      options.max_memory_per_child = config.max_memory_per_child;
      if (config.task_timeout_ns) options.task_timeout = std::chrono::nanoseconds(*config.task_timeout_ns);
      options.max_retries = config.max_retries;
      options.start_method = StartMethod::fork;
      if (config.has_initializer)
        options.initializer = Initializer(&run_forwarded_initializer, config.initializer_entry.module,
                                          static_cast<std::uint64_t>(config.initializer_entry.offset),
                                          config.initializer_payload);
      // The first pool takes the zygote made before MPI_Init. A later pool's zygote is
      // forked now, from this MPI-initialised process: Open MPI allows it, and the zygote
      // only ever forks workers, never touching MPI.
      mproc::detail::LaunchedChild zygote = rt_.zygote.pidfd ? std::move(rt_.zygote) : start_late_zygote();
      mproc::detail::WorkerWaitPolicy wait;
      wait.spin_for_tasks = workers_have_cpus(config.processes ? config.processes : cpu_count());
      pool_ = mproc::detail::make_pool_core(options, std::move(zygote), wait);
      hello.processes = pool_->processes();
    } catch (const std::exception& e) {
      pool_.reset();
      hello.error = e.what();
    }
    out_.send(serialize(hello), 0, tag_ready, rt_.comm);
  }

  // Whether this host has a CPU for every process of the job that spins on it: each rank's
  // progress loop, and the workers of every agent here (all agents have as many). Where it
  // has not, an idle worker that spins for its next task takes the CPU its agent needs to
  // hand that task over: the workers sleep at once instead, and the agent's futex wake-up
  // is the cheaper hop (measured on 2 CPUs, driver + 2 agents of 1 worker: apply round trip
  // p50 ~25 µs with spinning workers, ~16 µs without).
  bool workers_have_cpus(unsigned workers_per_agent) const {
    const unsigned ranks = static_cast<unsigned>(rt_.ranks_on_host);
    const unsigned agents = ranks - (rt_.driver_on_host ? 1 : 0);
    return ranks + agents * workers_per_agent <= cpu_count();
  }

  void submit_tasks() {
    Reader reader(buffer_);
    const auto header = reader.get<BatchHeader>();
    for (std::uint32_t i = 0; i < header.count; ++i) {
      const auto record = reader.get<TaskRecord>();
      auto module = reader.take(record.module_length);
      auto payload = reader.take(record.payload_length);
      TaskRequest request;
      request.entry.module.assign(reinterpret_cast<const char*>(module.data()), module.size());
      request.entry.offset = static_cast<std::uintptr_t>(record.entry_offset);
      request.payload.assign(payload.begin(), payload.end());
      request.sink = std::make_shared<AgentSink>(outbox_, record.id);
      if (record.timeout_ns >= 0) request.timeout = std::chrono::nanoseconds(record.timeout_ns);
      request.max_retries = record.max_retries;
      try {
        if (!pool_) throw PoolBroken("mproc::mpi: the agent has no pool");
        pool_->submit(std::move(request));
      } catch (...) {
        outbox_->add_failure(record.id, std::current_exception());
      }
    }
  }

  bool send_results() {
    std::vector<std::byte> batch;
    BatchHeader header;
    {
      std::lock_guard lock(outbox_->mutex);
      if (outbox_->count == 0) return false;
      header.count = outbox_->count;
      batch.reserve(sizeof header + outbox_->records.size());
      put(batch, header);  // placeholder, rewritten below with the stats
      put_bytes(batch, outbox_->records.data(), outbox_->records.size());
      outbox_->records.clear();
      outbox_->count = 0;
    }
    header.stats = stats();
    std::memcpy(batch.data(), &header, sizeof header);
    out_.send(std::move(batch), 0, tag_results, rt_.comm);
    return true;
  }

  AgentStats stats() const {
    AgentStats stats;
    if (!pool_) return stats;
    const PoolStats local = pool_->stats();
    stats.tasks_retried = local.tasks_retried;
    stats.workers_started = local.workers_started;
    stats.workers_died = local.workers_died;
    stats.workers_recycled = local.workers_recycled;
    return stats;
  }

  // The driver sends this once all of the pool's results have reached it (close), or
  // after it failed every task itself (terminate).
  void end_pool(bool terminate) {
    AgentStats final_stats;
    if (pool_) {
      try {
        if (terminate)
          pool_->terminate();
        else
          pool_->close();
        pool_->join();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "mproc::mpi: rank %d: ending its pool: %s\n", rt_.rank, e.what());
      }
      final_stats = stats();
      pool_.reset();
    }
    {
      // Outcomes the driver no longer waits for (terminate): dropped.
      std::lock_guard lock(outbox_->mutex);
      outbox_->records.clear();
      outbox_->count = 0;
    }
    std::vector<std::byte> bytes;
    put(bytes, final_stats);
    out_.send(std::move(bytes), 0, tag_pool_ended, rt_.comm);
  }

  [[noreturn]] void shutdown() {
    if (pool_) end_pool(true);
    if (rt_.zygote.pidfd) mproc::detail::stop_server(rt_.zygote);
    try {
      out_.drain();
    } catch (...) {
    }
    MPI_Comm_free(&rt_.comm);
    if (rt_.spawn_link != MPI_COMM_NULL) MPI_Comm_disconnect(&rt_.spawn_link);
    MPI_Finalize();
    std::fflush(nullptr);
    std::exit(0);
  }

  Runtime& rt_;
  std::shared_ptr<Outbox> outbox_;
  std::shared_ptr<PoolEngine> pool_;
  Outgoing out_;
  std::vector<std::byte> buffer_;
};

}  // namespace

void agent_main() {
  try {
    Agent agent;
    agent.run();
  } catch (const std::exception& e) {
    abort_job("rank " + std::to_string(runtime().rank) + " (" + runtime().host + "): " + e.what());
  }
}

}  // namespace mproc::mpi::detail
