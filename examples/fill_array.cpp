// examples/fill_array.cpp — four worker processes fill one shared Array<double> in place, a
// quarter each; the parent, which copied nothing, prints a checksum of the whole array.
#include <mproc/process.hpp>
#include <mproc/shared_memory.hpp>

#include <cstddef>
#include <cstdio>
#include <vector>

// The value element i should hold; the parent recomputes it to check the workers' work.
double element(std::size_t i) { return 0.5 * static_cast<double>(i); }

// Runs in a child: writes straight into the shared pages, which the parent sees.
void fill(mproc::Array<double> data, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i) data[i] = element(i);
}

int main() {
  constexpr std::size_t size = 1'000'000;
  constexpr std::size_t workers = 4;
  mproc::Array<double> data(size);  // zeros, in shared memory

  std::vector<mproc::Process> processes;
  for (std::size_t w = 0; w < workers; ++w)
    processes.emplace_back(fill, data, w * size / workers, (w + 1) * size / workers);
  for (auto& p : processes) p.start();
  for (auto& p : processes) p.join();
  for (auto& p : processes)
    if (p.exitcode() != 0) return 1;

  double checksum = 0, expected = 0;
  for (std::size_t i = 0; i < size; ++i) {
    checksum += data[i];
    expected += element(i);
  }
  std::printf("Checksum: %.1f (%zu elements filled by %zu processes)\n", checksum, size, workers);
  return checksum == expected ? 0 : 1;
}
