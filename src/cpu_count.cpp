// src/cpu_count.cpp — cpu_count(): the CPUs this process may actually use, from its
// affinity mask and its cgroup's CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us).
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "mproc/process.hpp"

namespace mproc {
namespace {

unsigned affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
}

std::optional<double> quota_from_cpu_max(const std::string& path) {
  std::ifstream file(path);
  std::string quota;
  double period = 0;
  if (!(file >> quota >> period) || quota == "max" || period <= 0) return std::nullopt;
  try {
    return std::stod(quota) / period;
  } catch (...) {
    return std::nullopt;
  }
}

// The tightest quota on the path from this process's cgroup up to the root.
std::optional<double> cgroup_quota() {
  std::ifstream self("/proc/self/cgroup");
  std::string line;
  std::optional<double> best;
  auto tighten = [&](std::optional<double> q) {
    if (q && (!best || *q < *best)) best = q;
  };
  while (std::getline(self, line)) {
    // "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1)
    auto first = line.find(':');
    auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    std::string controllers = line.substr(first + 1, second - first - 1);
    std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      for (std::string p = path;; p = p.substr(0, p.rfind('/'))) {
        tighten(quota_from_cpu_max("/sys/fs/cgroup" + p + "/cpu.max"));
        if (p.empty() || p == "/") break;
      }
    } else if (controllers.find("cpu") != std::string::npos) {
      for (const char* dir : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
        std::ifstream q(std::string(dir) + path + "/cpu.cfs_quota_us");
        std::ifstream per(std::string(dir) + path + "/cpu.cfs_period_us");
        double quota = -1, period = 0;
        if ((q >> quota) && (per >> period) && quota > 0 && period > 0) tighten(quota / period);
      }
    }
  }
  return best;
}

}  // namespace

unsigned cpu_count() {
  unsigned cpus = affinity_cpus();
  if (auto quota = cgroup_quota())
    cpus = std::min(cpus, static_cast<unsigned>(std::max(1.0, std::ceil(*quota))));
  return std::max(1u, cpus);
}

}  // namespace mproc
