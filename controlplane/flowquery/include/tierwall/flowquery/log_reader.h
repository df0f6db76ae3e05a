// Reading a flow-log directory: its files in order, their lines one by one
// through a fixed buffer (a file is never loaded whole), and --follow: after
// the last line, wait (inotify on the directory) for appends and for the
// next rotated file.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tierwall::flowquery {

// "flows-<time>.jsonl" (docs/flowlog-format.md).
bool is_log_file_name(std::string_view name);

// The log files of `dir` (file names, not paths), in name order, which is
// time order. An unreadable directory sets `error` and returns nothing.
std::vector<std::string> list_log_files(const std::string& dir, std::string* error);

// The complete lines of one file, read with read(2) into a buffer of
// `buffer_size` bytes (grown only for a line longer than the buffer).
// A line is returned without its '\n'; bytes after the last '\n' are held
// back as pending (a torn or still-being-written line). After End, calling
// next() again reads whatever was appended since.
class LineReader {
 public:
  static constexpr std::size_t kDefaultBufferSize = 1 << 20;
  static constexpr std::size_t kMaxLineSize = 64 << 20;

  explicit LineReader(std::size_t buffer_size = kDefaultBufferSize);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool open(const std::string& path, std::string* error);
  void close();
  [[nodiscard]] bool is_open() const { return fd_ >= 0; }

  enum class Status : std::uint8_t { Line, End, Error };
  // `line` stays valid until the next call.
  Status next(std::string_view& line, std::string* error);

  // 1-based number of the line last returned.
  [[nodiscard]] std::uint64_t line_number() const { return line_number_; }
  // Bytes after the last newline read so far.
  [[nodiscard]] std::size_t pending_bytes() const { return end_ - begin_; }

 private:
  int fd_ = -1;
  std::vector<char> buf_;
  std::size_t begin_ = 0, scan_ = 0, end_ = 0;
  std::uint64_t line_number_ = 0;
};

struct StreamOptions {
  bool follow = false;
  std::size_t buffer_size = LineReader::kDefaultBufferSize;
  // Follow mode re-checks at least this often even without inotify events.
  std::chrono::milliseconds poll_interval{500};
  // Follow mode returns Stopped once this is set (checked while waiting).
  const std::atomic<bool>* stop = nullptr;
  // Called before follow mode blocks (e.g. to flush output).
  std::function<void()> on_wait;
  // A line that will never be completed: the file is not the newest any
  // more, or (without follow) the stream ended. `line` is its 1-based
  // number, `bytes` its length so far.
  std::function<void(const std::string& file, std::uint64_t line, std::size_t bytes)> on_torn;
};

// Every line of every log file of a directory, in order, as one stream.
class LogStream {
 public:
  LogStream(std::string dir, StreamOptions options);
  ~LogStream();
  LogStream(const LogStream&) = delete;
  LogStream& operator=(const LogStream&) = delete;

  struct Line {
    std::string_view text;     // valid until the next call
    const std::string* file;   // file name within the directory
    std::uint64_t number = 0;  // 1-based line number within the file
  };
  enum class Status : std::uint8_t { Line, End, Stopped, Error };
  // Without follow: End after the last line of the newest file. With follow:
  // blocks for more; returns only Line, Stopped or Error.
  Status next(Line& line, std::string* error);

  // Files opened so far, in order.
  [[nodiscard]] const std::vector<std::string>& files() const { return files_; }

 private:
  bool open_next(bool& opened, std::string* error);
  bool wait(std::string* error);

  std::string dir_;
  StreamOptions options_;
  LineReader reader_;
  std::vector<std::string> files_;
  int inotify_fd_ = -1;
  bool started_ = false;
};

}  // namespace tierwall::flowquery
