// tests/package/consumer/main.cpp — proves an installed or vendored mproc links and runs:
// a child under every start method (spawn re-enters this very binary before main).
#include <mproc/mproc.hpp>

#include <cstdio>
#include <cstdlib>

int main() {
  int failures = 0;
  for (auto method : {mproc::StartMethod::fork, mproc::StartMethod::forkserver,
                      mproc::StartMethod::spawn}) {
    mproc::Process p(mproc::ProcessOptions{.start_method = method},
                     [](int code) { std::exit(code); }, 42);
    p.start();
    p.join();
    std::printf("%s: exit code %d\n", mproc::to_string(method), p.exitcode().value_or(-1));
    if (p.exitcode() != 42) ++failures;
  }
  return failures == 0 ? 0 : 1;
}
