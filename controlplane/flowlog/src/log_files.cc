#include "log_files.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

namespace tierwall::flowlog::detail {

bool is_log_file_name(std::string_view name) {
  return name.size() > kFilePrefix.size() + kFileSuffix.size() &&
         name.substr(0, kFilePrefix.size()) == kFilePrefix &&
         name.substr(name.size() - kFileSuffix.size()) == kFileSuffix &&
         name.find('/') == std::string_view::npos;
}

bool list_log_files(const std::string& dir, std::vector<std::string>& names, std::string* error) {
  names.clear();
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (error != nullptr) *error = "cannot read " + dir + ": " + std::strerror(errno);
    return false;
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (is_log_file_name(name)) names.emplace_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return true;
}

std::string key_file_name(std::string_view key_id) { return "key-" + std::string(key_id) + ".pub"; }

std::string join(const std::string& dir, std::string_view name) {
  std::string r = dir;
  if (!r.empty() && r.back() != '/') r += '/';
  r += name;
  return r;
}

LineReader::~LineReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool LineReader::open(const std::string& path, std::string* error) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    if (error != nullptr) *error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  buf_.resize(1U << 20);
  return true;
}

bool LineReader::fill() {
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    scan_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
  for (;;) {
    const ssize_t n = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error_ = true;
      return false;
    }
    if (n == 0) {
      eof_ = true;
      return false;
    }
    end_ += static_cast<std::size_t>(n);
    return true;
  }
}

LineReader::Status LineReader::next(std::string_view& line, bool& complete) {
  if (fd_ < 0 || error_) return Status::Error;
  for (;;) {
    if (scan_ < end_) {
      const void* nl = std::memchr(buf_.data() + scan_, '\n', end_ - scan_);
      if (nl != nullptr) {
        const auto pos = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.data());
        line = std::string_view(buf_.data() + begin_, pos - begin_);
        complete = true;
        offset_ += pos + 1 - begin_;
        begin_ = scan_ = pos + 1;
        return Status::Line;
      }
      scan_ = end_;
    }
    if (end_ - begin_ > kMaxLine) {
      // Skip the rest of this over-long line.
      offset_ += end_ - begin_;
      begin_ = scan_ = end_ = 0;
      for (;;) {
        if (!fill()) return error_ ? Status::Error : Status::TooLong;
        const void* nl = std::memchr(buf_.data(), '\n', end_);
        if (nl != nullptr) {
          const auto pos = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.data());
          offset_ += pos + 1;
          begin_ = scan_ = pos + 1;
          return Status::TooLong;
        }
        offset_ += end_;
        begin_ = scan_ = end_ = 0;
      }
    }
    if (eof_ || !fill()) {
      if (error_) return Status::Error;
      if (begin_ < end_) {
        line = std::string_view(buf_.data() + begin_, end_ - begin_);
        complete = false;
        offset_ += end_ - begin_;
        begin_ = scan_ = end_;
        return Status::Line;
      }
      return Status::End;
    }
  }
}

}  // namespace tierwall::flowlog::detail
