// src/mpi/runtime.cpp — mproc::mpi::init/finalize/rank/size: starting MPI so that agents'
// workers never descend from an MPI-initialised process, and ending it at exit.
#include "mpi/runtime.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "mpi/spawned_agents.hpp"
#include "mpi/wire.hpp"

namespace mproc::mpi {
namespace detail {

Runtime& runtime() {
  static Runtime state;
  return state;
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
  throw std::runtime_error(std::string("mproc::mpi: ") + what + " failed: " + std::string(text, length));
}

void abort_job(const std::string& message) noexcept {
  std::fprintf(stderr, "mproc::mpi: %s\n", message.c_str());
  std::fflush(stderr);
  // rt.comm spans every rank of mproc's job: in spawn mode MPI_COMM_WORLD is one process.
  const MPI_Comm everyone = runtime().comm != MPI_COMM_NULL ? runtime().comm : MPI_COMM_WORLD;
  MPI_Abort(everyone, 1);
  std::_Exit(1);
}

void Outgoing::send(std::vector<std::byte> bytes, int dest, int tag, MPI_Comm comm) {
  if (bytes.size() > static_cast<std::size_t>(INT32_MAX))
    throw std::length_error("mproc::mpi: a message of more than 2 GiB cannot be sent");
  auto buffer = std::make_unique<std::vector<std::byte>>(std::move(bytes));
  MPI_Request request;
  check(MPI_Isend(buffer->data(), static_cast<int>(buffer->size()), MPI_BYTE, dest, tag, comm, &request),
        "MPI_Isend");
  requests_.push_back(request);
  buffers_.push_back(std::move(buffer));
}

bool Outgoing::poll() {
  bool any = false;
  for (std::size_t i = 0; i < requests_.size();) {
    int done = 0;
    check(MPI_Test(&requests_[i], &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (!done) {
      ++i;
      continue;
    }
    any = true;
    requests_[i] = requests_.back();
    requests_.pop_back();
    buffers_[i] = std::move(buffers_.back());
    buffers_.pop_back();
  }
  return any;
}

void Outgoing::drain() {
  if (requests_.empty()) return;
  check(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  requests_.clear();
  buffers_.clear();
}

void receive(const MPI_Status& status, MPI_Comm comm, std::vector<std::byte>& into) {
  int count = 0;
  check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
  into.resize(static_cast<std::size_t>(count));
  check(MPI_Recv(into.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, comm, MPI_STATUS_IGNORE),
        "MPI_Recv");
}

namespace {

// The rank this process will have, from the launcher's environment, before MPI_Init:
// Open MPI's mpirun, PMIx (srun --mpi=pmix), PMI (srun --mpi=pmi2, MPICH), Slurm. -1: unknown.
int rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* value = std::getenv(name); value && *value) {
      char* end = nullptr;
      long rank = std::strtol(value, &end, 10);
      if (end && *end == '\0' && rank >= 0) return static_cast<int>(rank);
    }
  }
  return -1;
}

// Spawn mode: this process (a job of one) starts `agents` copies of its own program on this
// host, which find their parent in init() and become agents 1..agents of the merged
// communicator. Their argv is the driver's (without the program name).
void spawn_agents(Runtime& rt, unsigned agents, int argc, char** argv) {
  char self[4096] = {};
  if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0)
    throw std::runtime_error("mproc::mpi::init: cannot find this program to spawn agents (/proc/self/exe)");
  std::vector<char*> child_argv;
  for (int i = 1; i < argc; ++i) child_argv.push_back(argv[i]);
  child_argv.push_back(nullptr);
  std::vector<int> errors(agents, MPI_SUCCESS);
  check(MPI_Comm_spawn(self, child_argv.data(), static_cast<int>(agents), MPI_INFO_NULL, 0, MPI_COMM_SELF,
                       &rt.spawn_link, errors.data()),
        "MPI_Comm_spawn");
  for (int error : errors) check(error, "MPI_Comm_spawn (an agent)");
  check(MPI_Intercomm_merge(rt.spawn_link, 0, &rt.comm), "MPI_Intercomm_merge");
}

// Which ranks share this host (MPI-3's shared-memory split; collective over rt.comm): an
// agent's workers spin for their next task only when every spinning process here has a CPU.
void find_ranks_on_host(Runtime& rt) {
  MPI_Comm local = MPI_COMM_NULL;
  check(MPI_Comm_split_type(rt.comm, MPI_COMM_TYPE_SHARED, rt.rank, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
  check(MPI_Comm_size(local, &rt.ranks_on_host), "MPI_Comm_size");
  MPI_Group all = MPI_GROUP_NULL, here = MPI_GROUP_NULL;
  check(MPI_Comm_group(rt.comm, &all), "MPI_Comm_group");
  check(MPI_Comm_group(local, &here), "MPI_Comm_group");
  const int driver = 0;
  int driver_here = MPI_UNDEFINED;
  check(MPI_Group_translate_ranks(all, 1, &driver, here, &driver_here), "MPI_Group_translate_ranks");
  rt.driver_on_host = driver_here != MPI_UNDEFINED;
  MPI_Group_free(&all);
  MPI_Group_free(&here);
  MPI_Comm_free(&local);
}

void finalize_at_exit() {
  try {
    finalize();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc::mpi: at exit: %s\n", e.what());
  }
}

}  // namespace
}  // namespace detail

void init(int& argc, char**& argv) {
  init(argc, argv, 0);
}

void init(int& argc, char**& argv, unsigned spawn_agents) {
  auto& rt = detail::runtime();
  if (rt.initialized || rt.finalized) throw std::logic_error("mproc::mpi::init: called twice");
  int already = 0;
  MPI_Initialized(&already);
  if (already)
    throw std::logic_error("mproc::mpi::init: MPI is already initialised: call mproc::mpi::init first, "
                           "before anything else uses MPI");

  // An agent's workers are forked from this zygote: a copy of the process as it is now,
  // single-threaded and without MPI, so no worker inherits MPI's state or threads.
  if (detail::rank_from_environment() > 0) rt.zygote = mproc::detail::start_zygote();
  // A rank writes to sockets and pipes whose reader may die (a worker, a peer): that must
  // be an error code, not a signal that kills the rank and with it the whole job.
  ::signal(SIGPIPE, SIG_IGN);

  int provided = 0;
  detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  if (provided < MPI_THREAD_SERIALIZED)
    detail::abort_job("this MPI library does not provide MPI_THREAD_SERIALIZED, which mproc needs");
  MPI_Comm parent = MPI_COMM_NULL;
  detail::check(MPI_Comm_get_parent(&parent), "MPI_Comm_get_parent");
  int world_size = 1;
  detail::check(MPI_Comm_size(MPI_COMM_WORLD, &world_size), "MPI_Comm_size");
  if (parent != MPI_COMM_NULL) {
    // Spawned by a driver in spawn mode: agents come after it in the merged communicator.
    rt.spawn_link = parent;
    detail::check(MPI_Intercomm_merge(parent, 1, &rt.comm), "MPI_Intercomm_merge");
  } else if (world_size == 1 && spawn_agents > 0) {
    detail::spawn_agents(rt, spawn_agents, argc, argv);
  } else {
    detail::check(MPI_Comm_dup(MPI_COMM_WORLD, &rt.comm), "MPI_Comm_dup");
  }
  // Failures come back as error codes, which mproc turns into a message naming the peer.
  detail::check(MPI_Comm_set_errhandler(rt.comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  detail::check(MPI_Comm_rank(rt.comm, &rt.rank), "MPI_Comm_rank");
  detail::check(MPI_Comm_size(rt.comm, &rt.size), "MPI_Comm_size");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  rt.host = host;
  detail::find_ranks_on_host(rt);
  rt.initialized = true;
  if (rt.spawn_link != MPI_COMM_NULL) {
    // Spawn mode has no mpirun to end the job when an agent dies: the driver watches them.
    long pid = static_cast<long>(::getpid());
    std::vector<long> pids(rt.rank == 0 ? static_cast<std::size_t>(rt.size) : 0);
    detail::check(MPI_Gather(&pid, 1, MPI_LONG, pids.data(), 1, MPI_LONG, 0, rt.comm), "MPI_Gather");
    if (rt.rank == 0)
      rt.spawned_agents_watch =
          std::make_unique<detail::SpawnedAgentsWatch>(std::vector<long>(pids.begin() + 1, pids.end()));
  }

  if (rt.rank != 0) {
    // The launcher's environment did not tell the rank: the zygote is made now (fork after
    // MPI_Init is safe with Open MPI; the zygote never touches MPI).
    if (!rt.zygote.pidfd) rt.zygote = mproc::detail::start_zygote();
    detail::agent_main();
  }
  if (rt.zygote.pidfd) mproc::detail::stop_server(rt.zygote);  // rank 0 after all
  std::atexit(detail::finalize_at_exit);
}

void finalize() {
  auto& rt = detail::runtime();
  if (!rt.initialized || rt.finalized) return;
  if (rt.pool_alive)
    throw std::logic_error("mproc::mpi::finalize: an mproc::mpi::Pool is still alive; destroy it first");
  rt.spawned_agents_watch.reset();  // the agents are about to exit, as they should
  if (rt.rank == 0) {
    detail::Outgoing out;
    for (int r = 1; r < rt.size; ++r) out.send({}, r, detail::tag_shutdown, rt.comm);
    out.drain();
  }
  MPI_Comm_free(&rt.comm);
  if (rt.spawn_link != MPI_COMM_NULL) MPI_Comm_disconnect(&rt.spawn_link);
  MPI_Finalize();
  rt.initialized = false;
  rt.finalized = true;
}

bool initialized() noexcept { return detail::runtime().initialized; }

int rank() {
  if (!initialized()) throw std::logic_error("mproc::mpi::rank: call mproc::mpi::init first");
  return detail::runtime().rank;
}

int size() {
  if (!initialized()) throw std::logic_error("mproc::mpi::size: call mproc::mpi::init first");
  return detail::runtime().size;
}

}  // namespace mproc::mpi
