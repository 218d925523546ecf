// src/process_registry.hpp — what this process knows about itself and its children:
// its name and parent, the live children it started, and the descriptors that must
// not survive into a forked child.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "mproc/process.hpp"

namespace mproc::detail {

/// Who a child is; travels to the child (in memory for fork, serialized otherwise).
struct ChildIdentity {
  std::string name;       ///< "Process-1:2" or the user's name
  std::string identity;   ///< "1:2": the child-index path that names its own children
  bool daemon = false;
  pid_t parent_pid = 0;
  std::string parent_name;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(name, identity, daemon, parent_pid, parent_name);
  }
};

/// A default name and identity for the next Process this process creates.
ChildIdentity next_child_identity(const ProcessOptions& options);

/// Makes this (freshly started) process the child `identity` describes.
void become_child(const ChildIdentity& identity);

/// Live children, for active_children() and the exit handler.
void track_child(ProcessState* state);
void untrack_child(ProcessState* state);
std::vector<ProcessInfo> list_active_children();

/// Descriptors that belong to this process only: closed in every forked child.
void track_parent_only_fd(int fd);
void untrack_parent_only_fd(int fd);

/// Around fork(): the parent holds the registry lock so the child's copy is consistent;
/// the child then forgets the parent's children and closes the parent's descriptors.
void lock_registry_for_fork();
void unlock_registry_after_fork_in_parent();
void reset_registry_in_forked_child();

}  // namespace mproc::detail
