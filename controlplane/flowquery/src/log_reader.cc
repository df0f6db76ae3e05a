#include "tierwall/flowquery/log_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

namespace tierwall::flowquery {

namespace {

std::string errno_text(std::string_view what, const std::string& path) {
  return std::string(what) + " " + path + ": " + std::strerror(errno);
}

}  // namespace

bool is_log_file_name(std::string_view name) {
  constexpr std::string_view kPrefix = "flows-", kSuffix = ".jsonl";
  return name.size() > kPrefix.size() + kSuffix.size() && name.starts_with(kPrefix) &&
         name.ends_with(kSuffix);
}

std::vector<std::string> list_log_files(const std::string& dir, std::string* error) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (error) *error = errno_text("cannot open directory", dir);
    return names;
  }
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (is_log_file_name(name)) names.emplace_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

LineReader::LineReader(std::size_t buffer_size) : buf_(std::max<std::size_t>(buffer_size, 16)) {}

LineReader::~LineReader() { close(); }

bool LineReader::open(const std::string& path, std::string* error) {
  close();
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    if (error) *error = errno_text("cannot open", path);
    return false;
  }
  return true;
}

void LineReader::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  begin_ = scan_ = end_ = 0;
  line_number_ = 0;
}

LineReader::Status LineReader::next(std::string_view& line, std::string* error) {
  if (fd_ < 0) {
    if (error) *error = "no file open";
    return Status::Error;
  }
  for (;;) {
    if (scan_ < end_) {
      const auto* nl =
          static_cast<const char*>(std::memchr(buf_.data() + scan_, '\n', end_ - scan_));
      if (nl != nullptr) {
        const auto at = static_cast<std::size_t>(nl - buf_.data());
        line = std::string_view(buf_.data() + begin_, at - begin_);
        begin_ = scan_ = at + 1;
        ++line_number_;
        return Status::Line;
      }
      scan_ = end_;
    }
    // No newline in [begin_, end_): make room and read more.
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      scan_ = end_;
      begin_ = 0;
    }
    if (end_ == buf_.size()) {
      if (buf_.size() >= kMaxLineSize) {
        if (error) *error = "line " + std::to_string(line_number_ + 1) + " is longer than 64 MiB";
        return Status::Error;
      }
      buf_.resize(std::min(buf_.size() * 2, kMaxLineSize));
    }
    const ssize_t n = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (error) *error = std::string("read: ") + std::strerror(errno);
      return Status::Error;
    }
    if (n == 0) return Status::End;
    end_ += static_cast<std::size_t>(n);
  }
}

LogStream::LogStream(std::string dir, StreamOptions options)
    : dir_(std::move(dir)), options_(std::move(options)), reader_(options_.buffer_size) {}

LogStream::~LogStream() {
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
}

// Opens the first file named after the current one, if there is one.
bool LogStream::open_next(bool& opened, std::string* error) {
  opened = false;
  std::string list_error;
  const auto names = list_log_files(dir_, &list_error);
  if (!list_error.empty()) {
    if (error) *error = list_error;
    return false;
  }
  auto it = names.begin();
  if (!files_.empty()) it = std::upper_bound(names.begin(), names.end(), files_.back());
  if (it == names.end()) return true;
  if (!reader_.open(dir_ + "/" + *it, error)) return false;
  files_.push_back(*it);
  opened = true;
  return true;
}

bool LogStream::wait(std::string* error) {
  if (options_.on_wait) options_.on_wait();
  pollfd p{inotify_fd_, POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(options_.poll_interval.count()));
  if (r < 0 && errno != EINTR) {
    if (error) *error = std::string("poll: ") + std::strerror(errno);
    return false;
  }
  if (r > 0) {
    alignas(inotify_event) char events[4096];
    while (::read(inotify_fd_, events, sizeof events) > 0) {
    }
  }
  return true;
}

LogStream::Status LogStream::next(Line& line, std::string* error) {
  if (!started_) {
    started_ = true;
    if (options_.follow) {
      // Watch before the first listing so that nothing written in between
      // is missed.
      inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (inotify_fd_ < 0 ||
          ::inotify_add_watch(inotify_fd_, dir_.c_str(),
                              IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        if (error) *error = errno_text("cannot watch", dir_);
        return Status::Error;
      }
    }
  }
  for (;;) {
    if (options_.stop != nullptr && options_.stop->load(std::memory_order_relaxed))
      return Status::Stopped;
    if (reader_.is_open()) {
      std::string_view text;
      switch (reader_.next(text, error)) {
        case LineReader::Status::Line:
          line = Line{text, &files_.back(), reader_.line_number()};
          return Status::Line;
        case LineReader::Status::Error:
          if (error) *error = dir_ + "/" + files_.back() + ": " + *error;
          return Status::Error;
        case LineReader::Status::End:
          break;
      }
    }
    // The end of the current file (or none open yet): is there a newer one?
    const bool had_file = reader_.is_open();
    bool opened = false;
    const std::string previous = files_.empty() ? std::string() : files_.back();
    const std::uint64_t previous_line = reader_.line_number();
    const std::size_t before = reader_.pending_bytes();
    if (had_file) {
      // Peek at the listing without leaving the current file yet: the
      // writer finishes a file before it creates the next, so drain the
      // current one once more after seeing a newer name.
      std::string list_error;
      const auto names = list_log_files(dir_, &list_error);
      const bool newer = std::upper_bound(names.begin(), names.end(), previous) != names.end();
      if (newer) {
        std::string_view text;
        const auto s = reader_.next(text, error);
        if (s == LineReader::Status::Line) {
          line = Line{text, &files_.back(), reader_.line_number()};
          return Status::Line;
        }
        if (s == LineReader::Status::Error) return Status::Error;
        if (reader_.pending_bytes() > 0 && options_.on_torn)
          options_.on_torn(previous, reader_.line_number() + 1, reader_.pending_bytes());
        if (!open_next(opened, error)) return Status::Error;
        continue;
      }
    } else if (!open_next(opened, error)) {
      return Status::Error;
    }
    if (opened) continue;
    if (!options_.follow) {
      if (had_file && before > 0 && options_.on_torn)
        options_.on_torn(previous, previous_line + 1, before);
      return Status::End;
    }
    if (!wait(error)) return Status::Error;
  }
}

}  // namespace tierwall::flowquery
