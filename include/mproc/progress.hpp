// mproc/progress.hpp — ProgressBar: a tqdm-like progress line (percentage, bar, count,
// elapsed time, ETA, rate) drawn on a terminal from a map's or imap's progress callback.
#pragma once

#include <memory>
#include <string>

#include "mproc/pool.hpp"

namespace mproc {

namespace detail {
struct ProgressBarState;
}

/// Draws a progress bar with rate and ETA on a terminal, like tqdm:
///
///   pool.map(f, items, mproc::MapOptions{.progress = mproc::ProgressBar("squares")});
///
/// prints, redrawn in place on one line,
///
///   squares  42% |██████████▍               | 420/1000 [00:03<00:04, 123.4 it/s]
///
/// and, when the total is unknown (imap), `squares 420 it [00:03, 123.4 it/s]`.
/// Silent when the output is not a terminal (isatty false), so logs and CI stay clean.
/// Set the environment variable MPROC_ASCII_PROGRESS=1 to draw the bar with '#'.
///
/// Redraws at most about ten times a second, going by Progress::elapsed; the final state
/// (done == total) is always drawn, followed by a newline. For imap, whose total is
/// unknown, and for a map that ends with an exception, call finish() to end the line.
/// A call after the bar finished starts a new line, so one bar can serve several maps.
///
/// Copies share one state, so the bar can be passed by value as a ProgressCallback and
/// finished through the original. Thread-safe: every member may be called from any thread.
/// Each redraw is a single write(2) to the descriptor; write errors are ignored (a
/// progress bar never makes a map fail).
class ProgressBar {
 public:
  /// A bar named `label` drawn on descriptor `fd`, enabled only when `fd` is a terminal.
  explicit ProgressBar(std::string label = {}, int fd = 2);
  /// Like the above, but draws even when `fd` is not a terminal if `force_enabled` (tests).
  ProgressBar(std::string label, int fd, bool force_enabled);

  /// Records `p` and redraws the line if the last redraw is 0.1 s old (by p.elapsed) or
  /// if p is final (done >= total > 0), in which case the line is also finished.
  void operator()(const Progress& p);
  /// Draws the last recorded state, if not yet drawn, and ends the line with a newline.
  /// Does nothing if no progress was recorded or the line is already finished.
  void finish();
  /// Whether this bar writes anything at all.
  bool enabled() const;

 private:
  std::shared_ptr<detail::ProgressBarState> state_;
};

}  // namespace mproc
