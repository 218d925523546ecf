// src/progress.cpp — ProgressBar: renders one tqdm-like line from a Progress and redraws
// it in place with '\r', rate-limited, in a single write(2) per redraw.
#include "mproc/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <utility>

#include "syscall.hpp"

namespace mproc::detail {

struct ProgressBarState {
  // Fixed at construction.
  std::string label;
  int fd = 2;
  bool enabled = false;
  bool ascii = false;

  std::mutex mutex;
  // The current line: last recorded progress, and what was last drawn of it.
  bool has_progress = false;  // a Progress arrived since the line began
  bool latest_drawn = false;  // `last` is what the terminal shows
  bool has_drawn = false;     // something of this line is on the terminal
  bool finished = false;      // the line was ended with a newline
  Progress last;
  std::chrono::steady_clock::duration last_draw_elapsed{};
  std::size_t last_columns = 0;  // width of the previous drawing, to blank its tail
};

namespace {

using namespace std::chrono_literals;

constexpr auto redraw_interval = 100ms;
constexpr std::size_t default_columns = 80;
// UTF-8 left blocks for 1/8 … 7/8 of a cell; a full cell is "█".
constexpr const char* partial_blocks[] = {"▏", "▎", "▍", "▌", "▋", "▊", "▉"};
constexpr const char* full_block = "█";

/// Display columns of a UTF-8 string, counting one per code point (no wide characters).
std::size_t columns_of(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

/// The first `columns` code points of `s`.
std::string truncate_columns(const std::string& s, std::size_t columns) {
  std::size_t seen = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (seen++ == columns) return s.substr(0, i);
  }
  return s;
}

std::size_t terminal_columns(int fd) {
  winsize size{};
  if (::ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return default_columns;
}

/// done * scale / total, clamped to scale, without overflowing for large counts.
std::size_t scaled(std::size_t done, std::size_t total, std::size_t scale) {
  if (done >= total) return scale;
  if (done <= std::numeric_limits<std::size_t>::max() / scale) return done * scale / total;
  return static_cast<std::size_t>(static_cast<double>(done) / static_cast<double>(total) * static_cast<double>(scale));
}

/// 65 → "01:05", 3725 → "1:02:05", like tqdm.
std::string format_interval(long long seconds) {
  seconds = std::max(0LL, seconds);
  char buffer[32];
  long long hours = seconds / 3600, minutes = seconds / 60 % 60, secs = seconds % 60;
  if (hours > 0)
    std::snprintf(buffer, sizeof buffer, "%lld:%02lld:%02lld", hours, minutes, secs);
  else
    std::snprintf(buffer, sizeof buffer, "%02lld:%02lld", minutes, secs);
  return buffer;
}

std::string format_rate(double rate) {
  if (!(rate > 0) || !std::isfinite(rate)) return "? it/s";
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, rate < 10 ? "%.2f it/s" : "%.1f it/s", rate);
  return buffer;
}

std::string render_bar(std::size_t done, std::size_t total, std::size_t width, bool ascii) {
  std::size_t eighths = scaled(done, total, width * 8);
  std::size_t full = eighths / 8, partial = ascii ? 0 : eighths % 8;
  std::string bar;
  for (std::size_t i = 0; i < full; ++i) bar += ascii ? "#" : full_block;
  if (partial > 0) bar += partial_blocks[partial - 1];
  bar.append(width - full - (partial > 0 ? 1 : 0), ' ');
  return bar;
}

/// The whole line for `p`, at most `budget` columns wide when the terminal allows.
std::string render(const ProgressBarState& state, const Progress& p, std::size_t budget) {
  double seconds = std::chrono::duration<double>(p.elapsed).count();
  double rate = seconds > 0 ? static_cast<double>(p.done) / seconds : 0;
  std::string elapsed = format_interval(static_cast<long long>(std::floor(seconds)));
  std::string label = state.label;

  if (p.total == 0) {
    std::string rest = std::to_string(p.done) + " it [" + elapsed + ", " + format_rate(rate) + "]";
    if (!label.empty()) {
      std::size_t room = budget > columns_of(rest) + 1 ? budget - columns_of(rest) - 1 : 0;
      label = truncate_columns(label, room);
    }
    return label.empty() ? rest : label + " " + rest;
  }

  std::size_t done = std::min(p.done, p.total);
  std::string eta = "?";
  if (rate > 0) eta = format_interval(std::llround(static_cast<double>(p.total - done) / rate));
  char percent[8];
  std::snprintf(percent, sizeof percent, "%3zu%%", scaled(done, p.total, 100));
  std::string counts = " " + std::to_string(p.done) + "/" + std::to_string(p.total) + " [" + elapsed + "<" + eta +
                       ", " + format_rate(rate) + "]";

  // Fit the line in the budget: the bar takes what is left; below a few cells it goes,
  // and then the label is shortened so the line never wraps (a wrapped line cannot be
  // redrawn with '\r').
  constexpr std::size_t min_bar = 4;
  std::size_t fixed = columns_of(percent) + columns_of(counts);
  std::size_t label_columns = label.empty() ? 0 : columns_of(label) + 1;
  constexpr std::size_t frame = 3;  // " |" and "|" around the bar
  if (fixed + label_columns + frame + min_bar <= budget) {
    std::size_t width = budget - fixed - label_columns - frame;
    std::string line = label.empty() ? "" : label + " ";
    return line + percent + " |" + render_bar(done, p.total, width, state.ascii) + "|" + counts;
  }
  if (!label.empty()) {
    std::size_t room = budget > fixed + 1 ? budget - fixed - 1 : 0;
    label = truncate_columns(label, room);
  }
  return (label.empty() ? "" : label + " ") + percent + counts;
}

/// Writes `text` with as few write(2) calls as the descriptor allows (one, in practice);
/// errors are dropped: a broken terminal must not fail the map reporting to it.
void write_text(int fd, const std::string& text) {
  const char* data = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = retry_eintr([&] { return ::write(fd, data, left); });
    if (n <= 0) return;
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

/// Redraws the line from state.last; with `end_line`, also ends it with a newline.
/// Requires state.mutex held.
void draw(ProgressBarState& state, bool end_line) {
  std::size_t columns = terminal_columns(state.fd);
  std::size_t budget = columns > 1 ? columns - 1 : 1;  // the last column makes some terminals wrap
  std::string line = render(state, state.last, budget);
  std::size_t width = columns_of(line);
  std::string text = "\r" + line;
  // Blank what is left of a longer previous drawing (an unknown total's line can shrink).
  if (state.last_columns > width) text.append(std::min(state.last_columns, budget) - std::min(width, budget), ' ');
  if (end_line) text += '\n';
  write_text(state.fd, text);
  state.last_columns = width;
  state.last_draw_elapsed = state.last.elapsed;
  state.has_drawn = true;
  state.latest_drawn = true;
  if (end_line) state.finished = true;
}

}  // namespace
}  // namespace mproc::detail

namespace mproc {

ProgressBar::ProgressBar(std::string label, int fd) : ProgressBar(std::move(label), fd, false) {}

ProgressBar::ProgressBar(std::string label, int fd, bool force_enabled)
    : state_(std::make_shared<detail::ProgressBarState>()) {
  state_->label = std::move(label);
  state_->fd = fd;
  state_->enabled = force_enabled || ::isatty(fd) == 1;
  const char* ascii = std::getenv("MPROC_ASCII_PROGRESS");
  state_->ascii = ascii != nullptr && std::strcmp(ascii, "1") == 0;
}

void ProgressBar::operator()(const Progress& p) {
  if (!state_->enabled) return;
  std::lock_guard lock(state_->mutex);
  auto& state = *state_;
  if (state.finished) {
    // The bar is being reused for another map: start a fresh line.
    state.finished = false;
    state.has_drawn = false;
    state.last_columns = 0;
  }
  state.last = p;
  state.has_progress = true;
  state.latest_drawn = false;
  bool final = p.total > 0 && p.done >= p.total;
  if (final || !state.has_drawn || p.elapsed - state.last_draw_elapsed >= detail::redraw_interval)
    detail::draw(state, final);
}

void ProgressBar::finish() {
  if (!state_->enabled) return;
  std::lock_guard lock(state_->mutex);
  auto& state = *state_;
  if (!state.has_progress || state.finished) return;
  if (state.latest_drawn) {
    detail::write_text(state.fd, "\n");
    state.finished = true;
  } else {
    detail::draw(state, true);
  }
}

bool ProgressBar::enabled() const { return state_->enabled; }

}  // namespace mproc
