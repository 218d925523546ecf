// examples/mpi_map.cpp — the Pool on MPI: rank 0 maps over every agent rank's workers, and a
// task that segfaults on some rank costs that task only.
//
//   mpirun -np 3 ./mpi_map          (one driver, two agents; see docs/mpi.md)
#include <cstdio>
#include <string>
#include <vector>

#include "mproc/mpi.hpp"

int square(int x) { return x * x; }

int crash_on_3(int x) {
  if (x == 3) {
    volatile int* null = nullptr;
    *null = 0;  // a segfault in a worker of some agent
  }
  return x;
}

int main(int argc, char** argv) {
  mproc::mpi::init(argc, argv);  // ranks >= 1 become agents here and never return

  mproc::mpi::Pool pool(2);  // two workers on each agent
  for (const auto& agent : pool.agents())
    std::printf("agent rank %d on %s: %u workers\n", agent.rank, agent.host.c_str(), agent.processes);

  std::vector<int> squares = pool.map(square, std::vector{1, 2, 3, 4, 5});
  std::printf("Results: [");
  for (std::size_t i = 0; i < squares.size(); ++i) std::printf(i ? ", %d" : "%d", squares[i]);
  std::printf("]\n");

  auto results = pool.map(crash_on_3, std::vector{1, 2, 3, 4, 5}, mproc::collect);
  for (const auto& result : results) {
    try {
      std::printf("%d\n", result.value());
    } catch (const mproc::WorkerCrashed& e) {
      std::printf("crashed: %s\n", e.what());
    }
  }
  std::printf("the job lives on: 7 * 7 = %d\n", pool.apply(square, 7));
}  // the pool finishes its work; MPI is finalized at exit and the agents exit
