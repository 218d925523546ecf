// examples/process_per_number.cpp — four processes, one per number; the parent joins all.
#include <unistd.h>

#include <cstdio>
#include <mproc/mproc.hpp>
#include <vector>

void print_number(int number) {
  std::printf("Process ID: %d, Number: %d\n", ::getpid(), number);
}

int main() {
  std::vector<mproc::Process> processes;
  for (int number : {1, 2, 3, 4}) processes.emplace_back(print_number, number);
  for (auto& p : processes) p.start();
  for (auto& p : processes) p.join();
  std::printf("All processes have finished.\n");
  for (auto& p : processes)
    if (p.exitcode() != 0) return 1;
  return 0;
}
