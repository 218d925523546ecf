// examples/pool_map.cpp — a pool of 4 processes maps square over [1, 2, 3, 4, 5].
//
// Python:                                    C++ with mproc:
//   def square(x): return x * x                int square(int x) { return x * x; }
//   with Pool(4) as pool:                      mproc::Pool pool(4);
//       print(pool.map(square, [1,2,3,4,5]))   auto results = pool.map(square, std::vector{1, 2, 3, 4, 5});
#include <cstdio>
#include <mproc/mproc.hpp>
#include <vector>

int square(int x) { return x * x; }

int main() {
  mproc::Pool pool(4);
  std::vector<int> results = pool.map(square, std::vector{1, 2, 3, 4, 5});
  std::printf("Results: [");
  for (std::size_t i = 0; i < results.size(); ++i) std::printf("%s%d", i ? ", " : "", results[i]);
  std::printf("]\n");
}
