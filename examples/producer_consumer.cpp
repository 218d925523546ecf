// examples/producer_consumer.cpp — two producer processes and two consumer processes share one
// Queue<std::string>; each consumer stops at its sentinel (an empty string) and reports what it
// got on a second queue; the parent joins everyone and prints the totals.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"

namespace {

constexpr int items_per_producer = 1000;
constexpr int producers = 2;
constexpr int consumers = 2;

void produce(mproc::Queue<std::string> jobs, int producer) {
  for (int i = 0; i < items_per_producer; ++i)
    jobs.put("job " + std::to_string(producer) + "-" + std::to_string(i));
}

/// Counts items and their characters until the sentinel, then reports {items, characters}.
void consume(mproc::Queue<std::string> jobs, mproc::Queue<std::pair<long, long>> report) {
  long items = 0, characters = 0;
  for (std::string job; !(job = jobs.get()).empty();) {
    ++items;
    characters += static_cast<long>(job.size());
  }
  report.put({items, characters});
}

}  // namespace

int main() {
  mproc::Queue<std::string> jobs(100);  // producers wait while 100 jobs are queued
  mproc::Queue<std::pair<long, long>> report;

  std::vector<mproc::Process> workers;
  for (int p = 0; p < producers; ++p) workers.emplace_back(produce, jobs, p);
  for (int c = 0; c < consumers; ++c) workers.emplace_back(consume, jobs, report);
  for (auto& w : workers) w.start();

  for (int p = 0; p < producers; ++p) workers[p].join();
  for (int c = 0; c < consumers; ++c) jobs.put("");  // one sentinel per consumer

  long items = 0, characters = 0;
  for (int c = 0; c < consumers; ++c) {
    auto [n, chars] = report.get();
    std::printf("consumer report: %ld items, %ld characters\n", n, chars);
    items += n;
    characters += chars;
  }
  for (auto& w : workers) w.join();
  std::printf("Total: %ld items (expected %d), %ld characters\n", items,
              producers * items_per_producer, characters);
  return items == producers * items_per_producer ? 0 : 1;
}
