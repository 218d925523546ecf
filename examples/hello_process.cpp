// examples/hello_process.cpp — one child process prints its pid; the parent joins it.
//
// Python:                                   C++ with mproc:
//   def worker():                             mproc::Process p([] {
//       print(f"Worker process ID: {os.getpid()}")   std::printf("Worker process ID: %d\n", getpid());
//   p = Process(target=worker)                });
//   p.start(); p.join()                       p.start(); p.join();
//   print("Main process is done.")            std::printf("Main process is done.\n");
#include <unistd.h>

#include <cstdio>
#include <mproc/mproc.hpp>

int main() {
  mproc::Process p([] { std::printf("Worker process ID: %d\n", ::getpid()); });
  p.start();
  p.join();
  std::printf("Main process is done.\n");
  return p.exitcode() == 0 ? 0 : 1;
}
