// tests/test_progress.cpp — ProgressBar: the line it draws (percentage, counts, ETA, rate),
// its silence off a terminal, its rate limiting, and its use as a map's progress callback.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/progress.hpp"
#include "support/leak_check.hpp"

using namespace std::chrono_literals;
using mproc::Progress;
using mproc::ProgressBar;
using progress_test = mproc_test::LeakCheckedTest;

namespace {

int square(int x) { return x * x; }

/// A pipe whose read end never blocks: the bar writes into it, the test reads it all.
class Pipe {
 public:
  Pipe() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    ::fcntl(fds_[0], F_SETFL, O_NONBLOCK);
  }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int write_end() const { return fds_[1]; }
  /// Everything written so far.
  std::string drain() {
    std::string out;
    char buffer[4096];
    for (;;) {
      ssize_t n = ::read(fds_[0], buffer, sizeof buffer);
      if (n <= 0) return out;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }

 private:
  int fds_[2];
};

/// A pseudo-terminal `columns` wide: the bar sees a real terminal on its slave side.
class Pty {
 public:
  explicit Pty(unsigned short columns) {
    master_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master_ < 0 || ::grantpt(master_) != 0 || ::unlockpt(master_) != 0) throw std::runtime_error("no pty");
    slave_ = ::open(::ptsname(master_), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave_ < 0) throw std::runtime_error("cannot open pty slave");
    termios mode{};
    ::tcgetattr(slave_, &mode);
    ::cfmakeraw(&mode);  // no "\n" → "\r\n" translation
    ::tcsetattr(slave_, TCSANOW, &mode);
    winsize size{};
    size.ws_col = columns;
    size.ws_row = 24;
    ::ioctl(slave_, TIOCSWINSZ, &size);
    ::fcntl(master_, F_SETFL, O_NONBLOCK);
  }
  ~Pty() {
    ::close(slave_);
    ::close(master_);
  }
  int terminal() const { return slave_; }
  std::string drain() {
    std::string out;
    char buffer[4096];
    for (;;) {
      ssize_t n = ::read(master_, buffer, sizeof buffer);
      if (n <= 0) return out;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }

 private:
  int master_ = -1;
  int slave_ = -1;
};

std::size_t columns_of(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

Progress at(std::size_t done, std::size_t total, std::chrono::steady_clock::duration elapsed) {
  return Progress{done, total, elapsed};
}

/// The text after the last '\r' (the line as the terminal finally shows it).
std::string last_line(const std::string& out) {
  auto cr = out.rfind('\r');
  return cr == std::string::npos ? out : out.substr(cr + 1);
}

}  // namespace

TEST_F(progress_test, final_line_shows_full_bar_counts_and_rate) {
  Pipe pipe;
  ProgressBar bar("squares", pipe.write_end(), true);
  ASSERT_TRUE(bar.enabled());
  bar(at(420, 1000, 3s));
  bar(at(1000, 1000, 8s));
  std::string out = pipe.drain();
  std::string line = last_line(out);
  EXPECT_NE(line.find("squares 100% |"), std::string::npos) << line;
  EXPECT_NE(line.find("1000/1000"), std::string::npos) << line;
  EXPECT_NE(line.find("[00:08<00:00, 125.0 it/s]"), std::string::npos) << line;
  EXPECT_EQ(out.back(), '\n');  // finished automatically when done == total
  EXPECT_NE(out.find(" 42% |"), std::string::npos) << out;
  EXPECT_NE(out.find("420/1000 [00:03<00:04, 140.0 it/s]"), std::string::npos) << out;
}

TEST_F(progress_test, line_fits_the_default_width_of_80_columns) {
  Pipe pipe;  // not a terminal: TIOCGWINSZ fails, so the width is 80
  ProgressBar bar("squares", pipe.write_end(), true);
  bar(at(500, 1000, 1s));
  std::string line = last_line(pipe.drain());
  EXPECT_EQ(columns_of(line), 79u) << line;  // the bar takes all but the last column
  EXPECT_NE(line.find("█"), std::string::npos) << line;
}

TEST_F(progress_test, draws_on_a_terminal_within_its_width) {
  Pty pty(40);
  ProgressBar bar("a label far too long for a narrow terminal", pty.terminal());
  ASSERT_TRUE(bar.enabled());
  bar(at(10, 20, 1s));
  bar(at(20, 20, 2s));
  std::string out = pty.drain();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  std::size_t pos = 0;
  while ((pos = out.find('\r', pos)) != std::string::npos) {
    auto end = out.find_first_of("\r\n", pos + 1);
    std::string line = out.substr(pos + 1, end - pos - 1);
    EXPECT_LE(columns_of(line), 39u) << line;  // never wraps
    ++pos;
  }
  EXPECT_NE(last_line(out).find("20/20"), std::string::npos) << out;
}

TEST_F(progress_test, partial_cells_use_eighth_blocks) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  // Over 1000 items every cell holds a fraction that is not a whole eighth at some count:
  // find one drawing that ends its filled part with a partial block.
  bool partial = false;
  for (std::size_t done = 1; done < 100 && !partial; ++done) {
    bar(at(done, 1000, std::chrono::seconds(done)));
    std::string line = last_line(pipe.drain());
    for (const char* block : {"▏", "▎", "▍", "▌", "▋", "▊", "▉"})
      if (line.find(block) != std::string::npos) partial = true;
  }
  EXPECT_TRUE(partial);
}

TEST_F(progress_test, ascii_bar_when_asked_by_environment) {
  ::setenv("MPROC_ASCII_PROGRESS", "1", 1);
  Pipe pipe;
  ProgressBar bar("ascii", pipe.write_end(), true);
  ::unsetenv("MPROC_ASCII_PROGRESS");
  bar(at(10, 10, 1s));
  std::string line = last_line(pipe.drain());
  EXPECT_NE(line.find("|####"), std::string::npos) << line;
  EXPECT_EQ(line.find("█"), std::string::npos) << line;
}

TEST_F(progress_test, unknown_total_shows_count_without_bar) {
  Pipe pipe;
  ProgressBar bar("lines", pipe.write_end(), true);
  bar(at(420, 0, 3s));
  std::string line = last_line(pipe.drain());
  EXPECT_EQ(line, "lines 420 it [00:03, 140.0 it/s]");
  bar.finish();
  EXPECT_EQ(pipe.drain(), "\n");
  bar.finish();  // idempotent
  EXPECT_EQ(pipe.drain(), "");
}

TEST_F(progress_test, shorter_line_blanks_the_tail_of_the_longer_one) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  bar(at(100000, 0, 1s));  // "100000 it [00:01, 100000.0 it/s]"
  bar(at(100001, 0, 100s));  // "100001 it [01:40, 1000.0 it/s]": two columns shorter
  std::string line = last_line(pipe.drain());
  EXPECT_EQ(line, "100001 it [01:40, 1000.0 it/s]  ");
}

TEST_F(progress_test, silent_when_not_a_terminal) {
  Pipe pipe;
  ProgressBar bar("quiet", pipe.write_end());
  EXPECT_FALSE(bar.enabled());
  bar(at(1, 2, 1s));
  bar(at(2, 2, 2s));
  bar.finish();
  EXPECT_EQ(pipe.drain(), "");
}

TEST_F(progress_test, redraws_are_rate_limited_but_final_state_is_drawn) {
  Pipe pipe;
  ProgressBar bar("fast", pipe.write_end(), true);
  constexpr std::size_t n = 10'000;
  std::size_t redraws = 0;
  for (std::size_t i = 1; i <= n; ++i) {
    bar(at(i, n, std::chrono::microseconds(100) * i));  // 10,000 calls over one second
    // Drain as we go so the pipe never fills, whatever the bar does.
    std::string out = pipe.drain();
    redraws += static_cast<std::size_t>(std::count(out.begin(), out.end(), '\r'));
    if (i == n) {
      EXPECT_NE(out.find("100%"), std::string::npos) << out;
      EXPECT_NE(out.find("10000/10000"), std::string::npos) << out;
    }
  }
  EXPECT_LT(redraws, 1000u);
  EXPECT_GE(redraws, 2u);  // the first and the final state at least
}

TEST_F(progress_test, finish_draws_a_state_skipped_by_rate_limiting) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  bar(at(1, 0, 0s));
  bar(at(7, 0, 10ms));  // too soon after the first drawing: recorded, not drawn
  EXPECT_EQ(last_line(pipe.drain()).substr(0, 4), "1 it");
  bar.finish();
  std::string out = pipe.drain();
  EXPECT_EQ(last_line(out).substr(0, 4), "7 it") << out;
  EXPECT_EQ(out.back(), '\n');
}

TEST_F(progress_test, eta_and_elapsed_in_hours) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  bar(at(1, 3726, 1s));  // 1 it/s, 3725 left
  EXPECT_NE(pipe.drain().find("[00:01<1:02:05, 1.00 it/s]"), std::string::npos);
  bar.finish();
  pipe.drain();
  bar(at(3725, 0, 3725s));
  EXPECT_EQ(last_line(pipe.drain()), "3725 it [1:02:05, 1.00 it/s]");
}

TEST_F(progress_test, unknown_rate_at_zero_elapsed) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  bar(at(0, 10, 0s));
  std::string line = last_line(pipe.drain());
  EXPECT_NE(line.find("  0% |"), std::string::npos) << line;
  EXPECT_NE(line.find("0/10 [00:00<?, ? it/s]"), std::string::npos) << line;
}

TEST_F(progress_test, copies_share_state_and_bar_is_reusable) {
  Pipe pipe;
  ProgressBar bar("run", pipe.write_end(), true);
  mproc::ProgressCallback callback = bar;  // a copy, as MapOptions holds it
  callback(at(3, 0, 1s));
  bar.finish();
  EXPECT_EQ(pipe.drain(), "\rrun 3 it [00:01, 3.00 it/s]\n");
  callback(at(1, 2, 1s));  // a second run starts a new line
  callback(at(2, 2, 2s));
  std::string out = pipe.drain();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(last_line(out).find("100%"), std::string::npos) << out;
}

TEST_F(progress_test, concurrent_calls_and_finish_do_not_interleave) {
  Pipe pipe;
  ProgressBar bar({}, pipe.write_end(), true);
  std::thread reporter([bar]() mutable {
    for (std::size_t i = 1; i <= 2000; ++i) bar(at(i, 0, std::chrono::milliseconds(i)));
  });
  std::string out;
  for (int i = 0; i < 50; ++i) {
    bar.finish();
    out += pipe.drain();
  }
  reporter.join();
  bar.finish();
  out += pipe.drain();
  // Every drawing is "\r<line>" followed by optional blanks and a newline: no drawing is
  // split by another one.
  std::size_t pos = 0;
  while ((pos = out.find('\r', pos)) != std::string::npos) {
    auto end = out.find_first_of("\r\n", pos + 1);
    std::string line = out.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    EXPECT_NE(line.find(" it ["), std::string::npos) << line;
    EXPECT_NE(line.find(" it/s]"), std::string::npos) << line;
    pos += 1;
  }
  EXPECT_EQ(out.back(), '\n');
}

TEST_F(progress_test, map_reports_through_the_bar) {
  Pipe pipe;
  mproc::Pool pool(2);
  std::vector<int> input(100);
  for (int i = 0; i < 100; ++i) input[static_cast<std::size_t>(i)] = i;
  mproc::MapOptions options;
  options.chunksize = 10;
  options.progress = ProgressBar("squares", pipe.write_end(), true);
  auto squares = pool.map(square, input, options);
  ASSERT_EQ(squares.size(), 100u);
  EXPECT_EQ(squares[9], 81);
  pool.close();
  pool.join();
  std::string out = pipe.drain();
  std::string line = last_line(out);
  EXPECT_NE(line.find("squares 100% |"), std::string::npos) << out;
  EXPECT_NE(line.find("100/100"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n');
}
