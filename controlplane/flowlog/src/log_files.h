// Internal: the log directory's layout and a streaming line reader, shared by
// the writer (recovery) and the verifier.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tierwall::flowlog::detail {

inline constexpr std::string_view kFilePrefix = "flows-";
inline constexpr std::string_view kFileSuffix = ".jsonl";
inline constexpr std::string_view kHeadFile = "head.json";
// Longest line the reader returns whole (a recovered record carries up to
// 1 MiB of torn bytes, 1.4 MiB in base64).
inline constexpr std::size_t kMaxLine = 4U << 20;
// Most torn bytes the writer recovers.
inline constexpr std::size_t kMaxTorn = 1U << 20;

// "flows-<time>.jsonl"
bool is_log_file_name(std::string_view name);
// Sorted names (no directory) of DIR's log files.
bool list_log_files(const std::string& dir, std::vector<std::string>& names, std::string* error);
// DIR/key-<id>.pub: the public key the writer leaves next to the log.
std::string key_file_name(std::string_view key_id);
std::string join(const std::string& dir, std::string_view name);

// Reads a file line by line with a bounded buffer (never the whole file).
class LineReader {
 public:
  enum class Status { Line, End, TooLong, Error };

  LineReader() = default;
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool open(const std::string& path, std::string* error);
  // Line: `line` (without "\n") is valid until the next call; complete is
  // false for a last line without "\n". TooLong: a line over kMaxLine (the
  // reader skips to the next "\n"). offset(): file offset of the next line.
  Status next(std::string_view& line, bool& complete);
  std::size_t offset() const { return offset_; }

 private:
  bool fill();
  int fd_ = -1;
  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0, scan_ = 0;
  std::size_t offset_ = 0;
  bool eof_ = false;
  bool error_ = false;
};

}  // namespace tierwall::flowlog::detail
