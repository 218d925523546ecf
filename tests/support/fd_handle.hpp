// tests/support/fd_handle.hpp — the smallest shareable object: one descriptor that
// travels with SCM_RIGHTS when passed to a spawn/forkserver Process or a pool task.
#pragma once

#include <unistd.h>

#include <string>

#include "mproc/detail/fd_transfer.hpp"

namespace mproc_test {

struct FdHandle {
  int fd = -1;

  template <class Archive>
  void save(Archive& archive) const {
    mproc::detail::save_fd(archive, fd);
  }
  template <class Archive>
  void load(Archive& archive) {
    fd = mproc::detail::load_fd(archive);
  }
  void write_text(const std::string& text) const { (void)!::write(fd, text.data(), text.size()); }
};

}  // namespace mproc_test
