// bench/proc_stats.hpp — what /proc says about a process's memory (RSS, USS), for the
// benchmarks and for idle_memory_probe, which links nothing but mproc.
#pragma once

#include <sys/types.h>

#include <fstream>
#include <string>

namespace bench {

/// The value in kB of `key` (e.g. "VmRSS:") in a /proc file of "key value kB" lines; 0 if absent.
inline double proc_kib(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::stod(line.substr(key.size()));
  return 0;
}

inline double rss_kib(pid_t pid) {
  return proc_kib("/proc/" + std::to_string(pid) + "/status", "VmRSS:");
}

/// Unique set size: the pages only this process maps (Private_Clean + Private_Dirty).
inline double uss_kib(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  return proc_kib(path, "Private_Clean:") + proc_kib(path, "Private_Dirty:");
}

}  // namespace bench
