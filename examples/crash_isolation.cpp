// examples/crash_isolation.cpp — a map over 100 items where items 13 and 77 segfault:
// only those two items fail, each with a crash report; the other 98 results arrive.
//
// Python:
//   import ctypes
//   from multiprocessing import Pool
//
//   def checked_square(x):
//       if x in (13, 77):
//           ctypes.string_at(16)          # segfault
//       return x * x
//
//   with Pool(4) as pool:
//       print(pool.map(checked_square, range(100)))
//
// CPython's Pool replaces the dead worker but never delivers the lost chunk's result, so
// that map hangs for ever (ProcessPoolExecutor instead fails every pending future with
// BrokenProcessPool). mproc splits the chunk that killed its worker until it finds the
// item that does it, and gives every other item its result.
#include <mproc/mproc.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

bool is_poison(int x) { return x == 13 || x == 77; }

int checked_square(int x) {
  if (is_poison(x)) *reinterpret_cast<volatile int*>(std::uintptr_t{16}) = 1;  // SIGSEGV
  return x * x;
}

int main() {
  std::vector<int> items(100);
  for (int i = 0; i < 100; ++i) items[i] = i;

  mproc::Pool pool(4);

  // With `collect`, map never throws for an item: one Result per item, value or error.
  std::vector<mproc::Result<int>> results = pool.map(checked_square, items, mproc::collect);
  int delivered = 0;
  bool as_expected = results.size() == items.size();
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].ok()) {
      ++delivered;
      as_expected = as_expected && !is_poison(items[i]) && results[i].value() == items[i] * items[i];
      continue;
    }
    as_expected = as_expected && is_poison(items[i]);
    try {
      std::rethrow_exception(results[i].error());
    } catch (const mproc::WorkerCrashed& e) {
      const mproc::CrashReport& report = e.report();
      std::printf("item %zu failed: worker %d was killed by %s\n", report.item.value_or(0), report.pid,
                  report.signal_name.c_str());
      as_expected = as_expected && report.item == i && report.signal_name == "SIGSEGV";
    } catch (const std::exception& e) {
      std::printf("item %zu failed unexpectedly: %s\n", i, e.what());
      as_expected = false;
    }
  }
  std::printf("%d of %zu results delivered\n", delivered, items.size());

  // Without `collect`, map throws the first failure: a WorkerCrashed naming the item.
  try {
    pool.map(checked_square, items);
    std::printf("plain map did not throw\n");
    as_expected = false;
  } catch (const mproc::WorkerCrashed& e) {
    std::printf("plain map threw WorkerCrashed: %s\n", e.what());
    as_expected = as_expected && e.report().item && is_poison(static_cast<int>(*e.report().item));
  }

  // The pool is still whole: replacement workers took over.
  as_expected = as_expected && pool.apply(checked_square, 5) == 25;
  std::printf("%s\n", as_expected ? "only the poison items failed" : "UNEXPECTED RESULT");
  return as_expected ? 0 : 1;
}
