// tests/support/leak_check.cpp — finds leftover processes, zombies and /dev/shm entries.
#include "support/leak_check.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <algorithm>
#include <map>
#include <sstream>
#include <thread>

#include "launch/launcher.hpp"

namespace mproc_test {
namespace {

struct ProcEntry {
  pid_t ppid;
  char state;
  std::string comm;
};

std::map<pid_t, ProcEntry> process_table() {
  std::map<pid_t, ProcEntry> table;
  DIR* proc = opendir("/proc");
  if (!proc) return table;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
    std::string text;
    if (!std::getline(stat, text)) continue;
    // "pid (comm) state ppid ..." — comm may contain spaces and parentheses.
    auto open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    ProcEntry e{};
    rest >> e.state >> e.ppid;
    e.comm = text.substr(open + 1, close - open - 1);
    table[static_cast<pid_t>(pid)] = e;
  }
  closedir(proc);
  return table;
}

std::string describe(pid_t pid, const std::map<pid_t, ProcEntry>& table) {
  auto it = table.find(pid);
  if (it == table.end()) return std::to_string(pid);
  return std::to_string(pid) + " (" + it->second.comm + ", state " + it->second.state +
         ", parent " + std::to_string(it->second.ppid) + ")";
}

}  // namespace

std::vector<pid_t> descendants() {
  auto table = process_table();
  auto helpers = mproc::detail::helper_pids();
  std::vector<pid_t> result;
  std::vector<pid_t> frontier{::getpid()};
  while (!frontier.empty()) {
    pid_t parent = frontier.back();
    frontier.pop_back();
    for (auto& [pid, e] : table) {
      if (e.ppid != parent) continue;
      frontier.push_back(pid);
      if (std::find(helpers.begin(), helpers.end(), pid) == helpers.end()) result.push_back(pid);
    }
  }
  return result;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  for (auto& [pid, e] : process_table())
    if (e.ppid == parent && e.state != 'Z') children.push_back(pid);
  return children;
}

std::set<std::string> shm_entries() {
  std::set<std::string> names;
  if (DIR* dir = opendir("/dev/shm")) {
    while (dirent* entry = readdir(dir))
      if (entry->d_name[0] != '.') names.insert(entry->d_name);
    closedir(dir);
  }
  return names;
}

void LeakCheckedTest::SetUp() { shm_before_ = shm_entries(); }

void LeakCheckedTest::TearDown() {
  using namespace std::chrono_literals;
  // A generous bound: a child that was just killed needs a moment to be reaped. This loop
  // only waits for a condition; nothing is assumed to have happened after a delay.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::vector<pid_t> left;
  std::set<std::string> new_shm;
  for (;;) {
    left = descendants();
    new_shm.clear();
    for (auto& name : shm_entries())
      if (!shm_before_.count(name)) new_shm.insert(name);
    if ((left.empty() && new_shm.empty()) || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(5ms);
  }
  if (!left.empty()) {
    auto table = process_table();
    std::string text;
    for (pid_t pid : left) text += " " + describe(pid, table);
    ADD_FAILURE() << "the test left processes behind:" << text;
    for (pid_t pid : left) ::kill(pid, SIGKILL);
    for (pid_t pid : left) ::waitpid(pid, nullptr, WNOHANG);
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }
  if (!new_shm.empty()) {
    std::string text;
    for (auto& name : new_shm) text += " /dev/shm/" + name;
    ADD_FAILURE() << "the test left shared memory behind:" << text;
  }
}

}  // namespace mproc_test
