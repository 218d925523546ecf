// src/mpi/driver.cpp — the engine of mproc::mpi::Pool on rank 0: hands tasks to the agents
// under credit-based flow control and turns their answers into results and exceptions.
//
//   user threads                         progress thread (owns MPI; user threads waiting
//   ────────────                         on a future also make progress when they can)
//   apply_async / map / imap             ─────────────────────────────────────────────
//     │ TaskRequest                      dispatch: pending tasks to the agent with the most
//     ▼                                  free credit, batched, one MPI_Isend per agent
//   submit() ──► pending_ ──────────────► tag_tasks ──► agent r ──► its local pool
//   cancel() withdraws a pending task                               │
//   Future ◄── sink ◄── results ◄───────── tag_results ◄────────────┘
//
//   A chunk of several items whose worker died comes back as a crash: it is split in halves
//   that are queued again (poison-item bisection), as the local pool does, until the item
//   that kills is alone; a single task's retries happen on its agent.
//
// An agent's credit is its workers times the tasks each may have queued: enough to cover
// about one millisecond at the shortest recent round trip (2 to 64 per worker), so tiny
// tasks stream while long ones spread over every agent.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "exclusive_turn.hpp"
#include "futex.hpp"
#include "mpi/runtime.hpp"
#include "mpi/wire.hpp"

namespace mproc::mpi::detail {
namespace {

using mproc::detail::ResultKind;
using mproc::detail::TaskRef;
using mproc::detail::TaskRequest;
using mproc::detail::TaskSink;

constexpr unsigned max_processes_per_agent = 1024;
constexpr std::size_t min_credit_per_worker = 2;
constexpr std::size_t max_credit_per_worker = 64;
constexpr std::int64_t queued_work_ns = 1'000'000;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string task_function_name(const TaskRequest& request) {
  if (request.function_name) return *request.function_name;
  if (request.function_address) return mproc::detail::function_name_at(request.function_address);
  return {};
}

class DriverEngine final : public mproc::detail::PoolEngine {
 public:
  DriverEngine(const PoolOptions& options, std::vector<AgentInfo> agents)
      : options_(options), rt_(runtime()) {
    for (auto& info : agents) {
      Agent agent;
      agent.info = std::move(info);
      agent.where = "rank " + std::to_string(agent.info.rank) + " (" + agent.info.host + ")";
      processes_ += agent.info.processes;
      agents_.push_back(std::move(agent));
    }
    rt_.pool_alive = true;
    progress_ = std::thread([this] { run(); });
  }

  ~DriverEngine() override {
    if (progress_.joinable()) {
      terminate();
      join();
    }
    rt_.pool_alive = false;
  }

  std::uint64_t submit(TaskRequest request) override {
    request.own_payload();  // the batches are built from owned bytes only
    if (request.fds && !request.fds->empty())
      throw std::invalid_argument(
          "mproc::mpi::Pool: a task argument carries file descriptors (Queue, Lock, SharedMemory, Pipe, ...), "
          "which cannot cross machines");
    if (request.payload.size() + request.entry.module.size() > static_cast<std::size_t>(INT32_MAX) / 2)
      throw std::invalid_argument("mproc::mpi::Pool: a task's arguments take more than 1 GiB");
    std::uint64_t id;
    {
      std::lock_guard lock(mutex_);
      if (state_ != State::running)
        throw PoolClosed("mproc::mpi::Pool: cannot submit work after close() or terminate()");
      if (request.timeout && *request.timeout <= std::chrono::nanoseconds::zero())
        throw std::invalid_argument("mproc::Pool: a task timeout must be positive");
      id = ++next_id_;
      Task task;
      task.retries_left = request.max_retries.value_or(options_.max_retries);
      task.request = std::move(request);
      tasks_.emplace(id, std::move(task));
      pending_.push_back(id);
    }
    // The task goes out from this thread when no other is doing MPI: no wake-up of the
    // progress thread on the way (it is woken only when this thread cannot send).
    {
      Turn turn(*this, std::try_to_lock);
      if (turn) {
        try {
          dispatch();
          out_.poll();
        } catch (const std::exception& e) {
          abort_job(e.what());
        }
        return id;
      }
    }
    std::lock_guard lock(mutex_);
    wake_locked();
    return id;
  }

  bool cancel(std::uint64_t id) override {
    std::lock_guard lock(mutex_);
    auto it = std::find(pending_.begin(), pending_.end(), id);
    if (it == pending_.end()) return false;
    pending_.erase(it);
    tasks_.erase(id);
    return true;
  }

  bool cancel_all(const std::vector<std::uint64_t>& ids) override {
    std::lock_guard lock(mutex_);
    for (auto id : ids) {
      auto task = tasks_.find(id);
      if (task == tasks_.end()) continue;          // finished
      if (task->second.agent >= 0) return false;   // sent to an agent: nothing is withdrawn
    }
    for (auto id : ids) {
      auto it = std::find(pending_.begin(), pending_.end(), id);
      if (it != pending_.end()) pending_.erase(it);
      tasks_.erase(id);
    }
    return true;
  }

  unsigned processes() const override { return processes_; }

  void close() override {
    std::lock_guard lock(mutex_);
    if (state_ == State::running) state_ = State::closed;
    wake_locked();
  }

  void terminate() override {
    Completions done;
    {
      std::lock_guard lock(mutex_);
      if (state_ == State::terminated) return;
      state_ = State::terminated;
      auto error = std::make_exception_ptr(PoolTerminated("mproc::Pool was terminated"));
      for (auto& [id, task] : tasks_)
        done.push_back({task.request.sink, TaskRef{id, task.request.begin, task.request.end}, error, {}, {}});
      stats_.tasks_failed += tasks_.size();
      tasks_.clear();
      pending_.clear();
      for (auto& agent : agents_) agent.in_flight = 0;
      wake_locked();
    }
    Turn turn(*this);
    complete(done);
  }

  void join() override {
    {
      std::lock_guard lock(mutex_);
      if (state_ == State::running) throw std::logic_error("mproc::Pool::join: call close() or terminate() first");
    }
    std::lock_guard lock(join_mutex_);
    if (progress_.joinable()) {
      if (progress_.get_id() == std::this_thread::get_id())
        throw std::logic_error("mproc::Pool::join: called from the pool's own thread (a callback)");
      progress_.join();
    }
  }

  PoolStats stats() const override {
    std::lock_guard lock(mutex_);
    PoolStats stats = stats_;
    for (const auto& agent : agents_) {
      stats.tasks_retried += agent.stats.tasks_retried;
      stats.workers_started += agent.stats.workers_started;
      stats.workers_died += agent.stats.workers_died;
      stats.workers_recycled += agent.stats.workers_recycled;
    }
    return stats;
  }

  // A result crosses two ranks and a worker (~10-40 µs on 2 busy cores): a waiter that gave
  // up after a local pool's 30 µs would nearly always pay a sleep and a wake-up on top
  // (measured: p50 46 µs with 30 µs of spin, 20 µs with 200 µs).
  std::chrono::nanoseconds spin_time() const noexcept override { return std::chrono::microseconds(200); }

  // A waiter that spins makes progress itself (below); one that gives up and goes to sleep
  // hands the work back to the progress thread, which then spins for it.
  void waiter_arrives() noexcept override { spinning_waiters_.fetch_add(1, std::memory_order_relaxed); }
  void waiter_leaves(bool satisfied) noexcept override {
    spinning_waiters_.fetch_sub(1, std::memory_order_relaxed);
    if (satisfied) return;
    std::lock_guard lock(mutex_);
    hand_over_ = true;
    wake_locked();
  }

  // A thread waiting on a future receives results itself when no other thread is doing so:
  // the result then costs no wake-up of the progress thread.
  bool make_progress() noexcept override {
    Turn turn(*this, std::try_to_lock);
    if (!turn) return false;
    try {
      return step(false);
    } catch (const std::exception& e) {
      abort_job(e.what());
    }
  }

 private:
  enum class State { running, closed, terminated };

  struct Agent {
    AgentInfo info;
    std::string where;
    std::size_t in_flight = 0;
    std::int64_t round_trip_ns = 0;  // the shortest recent one, from send to result
    AgentStats stats;
    bool ended = false;
    std::size_t credit() const {
      std::size_t per_worker = round_trip_ns == 0 ? min_credit_per_worker
                                                  : std::clamp<std::size_t>(static_cast<std::size_t>(
                                                                                queued_work_ns / round_trip_ns),
                                                                            min_credit_per_worker,
                                                                            max_credit_per_worker);
      return per_worker * info.processes;
    }
  };

  struct Task {
    TaskRequest request;
    unsigned retries_left = 0;
    int agent = -1;  // index into agents_ once sent
    std::int64_t sent_at = 0;
  };

  struct Completion {
    std::shared_ptr<TaskSink> sink;
    TaskRef ref;
    std::exception_ptr error;  // or a result:
    ResultKind kind{};
    std::span<const std::byte> payload;
  };
  using Completions = std::vector<Completion>;

  // The consumer role (MPI calls, running sinks) is held by one thread at a time, and never
  // re-entered by the thread holding it (a callback that waits on another future).
  class Turn : public mproc::detail::ExclusiveTurn {
   public:
    explicit Turn(DriverEngine& engine) : ExclusiveTurn(engine.turn_mutex_, &engine) {}
    Turn(DriverEngine& engine, std::try_to_lock_t) : ExclusiveTurn(engine.turn_mutex_, &engine, std::try_to_lock) {}
  };

  void wake_locked() {
    work_ = true;
    if (sleeping_) wake_.notify_one();
  }

  static void complete(Completions& done) {
    for (auto& c : done) {
      try {
        if (c.error)
          c.sink->fail(c.ref, c.error);
        else
          c.sink->deliver(c.ref, c.kind, c.payload);
      } catch (...) {
        // A sink never throws on purpose; a user callback that does must not stop the pool.
      }
    }
    done.clear();
  }

  // The progress thread: steps until every agent has ended its pool.
  void run() {
    IdleBackoff backoff;
    try {
      for (;;) {
        bool busy = false;
        {
          // A turn held elsewhere is a user thread making progress (a waiter spinning on a
          // future, or submit() sending): this thread then counts the round as idle instead
          // of blocking on the mutex, which would make every one of that thread's unlocks a
          // futex wake-up and put this thread on a core once per result (measured: a quarter
          // of the MPI round trip on 2 CPUs).
          Turn turn(*this, std::try_to_lock);
          if (turn) {
            busy = step(true);
            if (ended_) break;
          }
        }
        if (busy) {
          backoff.active();
          continue;
        }
        auto sleep = backoff.next_sleep();
        // A user thread that spins on a future makes progress itself: spinning beside it
        // would only take a core from it (or from an agent on the same machine).
        if (spinning_waiters_.load(std::memory_order_relaxed) > 0)
          sleep = std::max(sleep, IdleBackoff::first_slice);
        if (sleep.count() == 0) {
          backoff.pause();
          continue;
        }
        std::unique_lock lock(mutex_);
        sleeping_ = true;
        wake_.wait_for(lock, sleep, [&] { return work_; });
        sleeping_ = false;
        work_ = false;
        if (hand_over_) {
          hand_over_ = false;
          backoff.active();  // a waiter went to sleep: its result is this thread's to catch
        }
      }
      out_.drain();
    } catch (const std::exception& e) {
      abort_job(e.what());
    }
  }

  // One round: receive what arrived, hand out work, and (progress thread) end the pool when
  // it is time. Requires the turn. Returns whether anything happened.
  bool step(bool progress_thread) {
    bool busy = receive_all();
    busy |= dispatch();
    busy |= out_.poll();
    if (progress_thread) busy |= maybe_end();
    return busy;
  }

  bool receive_all() {
    bool any = false;
    for (;;) {
      int flag = 0;
      MPI_Status status;
      check(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, rt_.comm, &flag, &status), "MPI_Iprobe");
      if (!flag) return any;
      any = true;
      std::vector<std::byte> bytes;
      receive(status, rt_.comm, bytes);
      const int index = status.MPI_SOURCE - 1;
      if (index < 0 || index >= static_cast<int>(agents_.size()))
        abort_job("a message from unexpected rank " + std::to_string(status.MPI_SOURCE));
      if (status.MPI_TAG == tag_results) {
        handle_results(agents_[static_cast<std::size_t>(index)], bytes);
      } else if (status.MPI_TAG == tag_pool_ended) {
        Agent& agent = agents_[static_cast<std::size_t>(index)];
        Reader reader(bytes);
        const auto final_stats = reader.get<AgentStats>();
        std::lock_guard lock(mutex_);
        agent.stats = final_stats;
        agent.ended = true;
      } else {
        abort_job("unexpected message tag " + std::to_string(status.MPI_TAG) + " from rank " +
                  std::to_string(status.MPI_SOURCE));
      }
    }
  }

  void handle_results(Agent& agent, const std::vector<std::byte>& bytes) {
    Reader reader(bytes);
    const auto header = reader.get<BatchHeader>();
    Completions done;
    const std::int64_t now = now_ns();
    {
      std::lock_guard lock(mutex_);
      agent.stats = header.stats;
      for (std::uint32_t i = 0; i < header.count; ++i) {
        const auto record = reader.get<ResultRecord>();
        auto payload = reader.take(record.payload_length);
        if (agent.in_flight > 0) --agent.in_flight;
        auto it = tasks_.find(record.id);
        if (it == tasks_.end()) continue;  // terminated meanwhile
        Task& task = it->second;
        // The shortest recent round trip: the task's run time plus the way there and back,
        // without the time it queued behind others (which the credit itself causes). It
        // follows a lasting rise slowly, a fall at once.
        const std::int64_t round_trip = std::max<std::int64_t>(1, now - task.sent_at);
        if (agent.round_trip_ns == 0 || round_trip < agent.round_trip_ns)
          agent.round_trip_ns = round_trip;
        else
          agent.round_trip_ns += (round_trip - agent.round_trip_ns) / 64;
        TaskRef ref{record.id, task.request.begin, task.request.end};
        const auto outcome = static_cast<Outcome>(record.outcome);
        if (outcome != Outcome::failure) {
          if (outcome == Outcome::exception)
            ++stats_.tasks_failed;
          else
            ++stats_.tasks_done;
          done.push_back({std::move(task.request.sink), ref, nullptr, static_cast<ResultKind>(outcome), payload});
          tasks_.erase(it);
          continue;
        }
        std::exception_ptr error;
        try {
          auto wire = deserialize<WireError>(payload);
          const std::size_t items = task.request.end - task.request.begin;
          if (wire.is_crash() && task.request.chunk && items > 1) {
            bisect_locked(it);
            continue;
          }
          std::optional<std::size_t> item;
          if (task.request.chunk) item = task.request.begin;
          error = rebuild(wire, task_function_name(task.request), item, agent.where);
          if (wire.kind == WireError::timed_out) ++stats_.tasks_timed_out;
        } catch (...) {
          error = std::current_exception();
        }
        ++stats_.tasks_failed;
        done.push_back({std::move(task.request.sink), ref, error, {}, {}});
        tasks_.erase(it);
      }
    }
    complete(done);  // the payloads live in `bytes` until here
  }

  // Poison-item isolation: a chunk that killed its worker is split into halves, queued first.
  void bisect_locked(std::unordered_map<std::uint64_t, Task>::iterator it) {
    Task& task = it->second;
    const std::size_t middle = task.request.begin + (task.request.end - task.request.begin) / 2;
    for (auto [begin, end] : {std::pair{middle, task.request.end}, std::pair{task.request.begin, middle}}) {
      Task half;
      half.request = mproc::detail::chunk_part(task.request, begin, end);
      half.retries_left = task.retries_left;
      const std::uint64_t id = ++next_id_;
      tasks_.emplace(id, std::move(half));
      pending_.push_front(id);  // the first half ends up first
    }
    tasks_.erase(it);
  }

  bool dispatch() {
    {
      std::lock_guard lock(mutex_);
      if (pending_.empty()) return false;
    }
    std::vector<std::vector<std::byte>> batches(agents_.size());
    std::vector<std::uint32_t> counts(agents_.size(), 0);
    bool any = false;
    {
      std::lock_guard lock(mutex_);
      if (state_ == State::terminated) return false;
      const std::int64_t now = now_ns();
      while (!pending_.empty()) {
        const std::uint64_t id = pending_.front();
        auto it = tasks_.find(id);
        if (it == tasks_.end()) {
          pending_.pop_front();
          continue;
        }
        // The agent with the most free credit (fewest queued tasks per worker wins ties).
        Agent* best = nullptr;
        std::size_t best_free = 0;
        for (auto& agent : agents_) {
          const std::size_t credit = agent.credit();
          if (agent.in_flight >= credit) continue;
          const std::size_t free = credit - agent.in_flight;
          if (!best || free > best_free) {
            best = &agent;
            best_free = free;
          }
        }
        if (!best) break;
        pending_.pop_front();
        const std::size_t index = static_cast<std::size_t>(best - agents_.data());
        Task& task = it->second;
        const TaskRequest& request = task.request;
        auto& batch = batches[index];
        if (batch.empty()) put(batch, BatchHeader{});
        TaskRecord record;
        record.id = id;
        record.entry_offset = request.entry.offset;
        record.timeout_ns = request.timeout ? request.timeout->count() : -1;
        // Several items: a crash comes back at once, to be bisected here; one: the agent retries.
        const bool splittable = request.chunk && request.end - request.begin > 1;
        record.max_retries = splittable ? 0 : task.retries_left;
        record.module_length = static_cast<std::uint32_t>(request.entry.module.size());
        record.payload_length = request.payload.size();
        put(batch, record);
        put_bytes(batch, request.entry.module.data(), request.entry.module.size());
        put_bytes(batch, request.payload.data(), request.payload.size());
        ++counts[index];
        ++best->in_flight;
        task.agent = static_cast<int>(index);
        task.sent_at = now;
        // A big batch goes now; the rest of the queue goes in the next one.
        if (batch.size() > (std::size_t{8} << 20)) break;
      }
    }
    for (std::size_t i = 0; i < agents_.size(); ++i) {
      if (counts[i] == 0) continue;
      BatchHeader header;
      header.count = counts[i];
      std::memcpy(batches[i].data(), &header, sizeof header);
      out_.send(std::move(batches[i]), agents_[i].info.rank, tag_tasks, rt_.comm);
      any = true;
    }
    return any;
  }

  // After close(), once every task has its outcome, or after terminate(): each agent ends
  // its pool and reports its final counters; the progress thread ends when all have.
  bool maybe_end() {
    bool terminate_them;
    {
      std::lock_guard lock(mutex_);
      if (ended_) return false;
      if (end_sent_) {
        for (const auto& agent : agents_)
          if (!agent.ended) return false;
        ended_ = true;
        return true;
      }
      if (state_ == State::running || (state_ == State::closed && !tasks_.empty())) return false;
      terminate_them = state_ == State::terminated;
      end_sent_ = true;
    }
    for (const auto& agent : agents_)
      out_.send({std::byte{terminate_them ? std::uint8_t{1} : std::uint8_t{0}}}, agent.info.rank, tag_end_pool,
                rt_.comm);
    return true;
  }

  const PoolOptions options_;
  Runtime& rt_;
  unsigned processes_ = 0;

  mutable std::mutex mutex_;  // everything below but agents_' MPI-side fields and out_
  State state_ = State::running;
  std::uint64_t next_id_ = 0;
  std::unordered_map<std::uint64_t, Task> tasks_;
  std::deque<std::uint64_t> pending_;
  std::vector<Agent> agents_;
  PoolStats stats_;
  bool end_sent_ = false;
  bool ended_ = false;
  std::condition_variable wake_;
  bool sleeping_ = false;
  bool work_ = false;

  std::mutex turn_mutex_;  // the consumer role: MPI calls and sinks
  std::atomic<int> spinning_waiters_{0};  // user threads spinning on make_progress()
  bool hand_over_ = false;                // (under mutex_) a waiter went to sleep
  Outgoing out_;
  std::thread progress_;
  std::mutex join_mutex_;
};


AgentConfig config_of(const PoolOptions& options) {
  AgentConfig config;
  config.processes = options.processes;
  config.max_tasks_per_child = options.max_tasks_per_child;
  config.max_memory_per_child = options.max_memory_per_child;
  if (options.task_timeout) config.task_timeout_ns = options.task_timeout->count();
  config.max_retries = options.max_retries;
  if (const auto& init = options.initializer.target()) {
    if (init->fds && !init->fds->empty())
      throw std::invalid_argument(
          "mproc::mpi::Pool: the initializer's arguments carry file descriptors, which cannot cross machines");
    config.has_initializer = true;
    config.initializer_entry = init->entry;
    config.initializer_payload = init->payload;
    config.initializer_name = options.initializer.name();
  }
  return config;
}

// Ends the pools of agents that started one, when another agent could not.
void end_started_pools(const std::vector<int>& ranks) {
  auto& rt = runtime();
  Outgoing out;
  for (int rank : ranks) out.send({std::byte{1}}, rank, tag_end_pool, rt.comm);
  out.drain();
  std::vector<std::byte> bytes;
  for (int rank : ranks) {
    MPI_Status status;
    check(MPI_Probe(rank, tag_pool_ended, rt.comm, &status), "MPI_Probe");
    receive(status, rt.comm, bytes);
  }
}

}  // namespace

mproc::mpi::Pool::Started start_driver_engine(const PoolOptions& options) {
  auto& rt = runtime();
  if (!rt.initialized) throw std::logic_error("mproc::mpi::Pool: call mproc::mpi::init(argc, argv) first");
  if (rt.rank != 0) throw std::logic_error("mproc::mpi::Pool: only rank 0 (the driver) has pools");
  if (rt.pool_alive) throw std::logic_error("mproc::mpi::Pool: one mproc::mpi::Pool exists at a time");
  if (rt.size < 2)
    throw std::logic_error("mproc::mpi::Pool: the MPI job has no agents; run the program with mpirun -np N, N >= 2");
  if (options.processes > max_processes_per_agent)
    throw std::invalid_argument("mproc::mpi::Pool: " + std::to_string(options.processes) +
                                " processes per agent is more than the " + std::to_string(max_processes_per_agent) +
                                " an agent may have");
  if (options.task_timeout && *options.task_timeout <= std::chrono::nanoseconds::zero())
    throw std::invalid_argument("mproc::Pool: task_timeout must be positive");

  const auto config = serialize(config_of(options));
  Outgoing out;
  for (int r = 1; r < rt.size; ++r) out.send(config, r, tag_configure, rt.comm);
  out.drain();
  std::vector<AgentInfo> agents;
  std::vector<int> started;
  std::string errors;
  std::vector<std::byte> bytes;
  for (int r = 1; r < rt.size; ++r) {
    MPI_Status status;
    check(MPI_Probe(r, tag_ready, rt.comm, &status), "MPI_Probe");
    receive(status, rt.comm, bytes);
    auto hello = deserialize<AgentHello>(bytes);
    if (!hello.error.empty()) {
      errors += (errors.empty() ? "" : "; ") + ("rank " + std::to_string(r) + " (" + hello.host + "): " + hello.error);
      continue;
    }
    started.push_back(r);
    agents.push_back(AgentInfo{r, hello.host, static_cast<long>(hello.pid), hello.processes});
  }
  if (!errors.empty()) {
    end_started_pools(started);
    throw PoolBroken("mproc::mpi::Pool: an agent cannot start its workers: " + errors);
  }
  auto engine = std::make_shared<DriverEngine>(options, agents);
  return {std::move(engine), std::move(agents)};
}

}  // namespace mproc::mpi::detail

namespace mproc::mpi {

Pool::Pool(unsigned processes_per_agent) : Pool(PoolOptions{.processes = processes_per_agent}) {}
Pool::Pool(const PoolOptions& options) : Pool(detail::start_driver_engine(options)) {}
Pool::Pool(Started started) : mproc::Pool(std::move(started.engine)), agents_(std::move(started.agents)) {}

}  // namespace mproc::mpi
