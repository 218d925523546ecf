// tests/support/test_main.cpp — main() of every test binary.
#include <gtest/gtest.h>
#include <signal.h>

int main(int argc, char** argv) {
  // A test that kills a peer must see EPIPE, never die of SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
