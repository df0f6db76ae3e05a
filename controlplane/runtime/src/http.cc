#include "tierwall/runtime/http.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace tierwall::runtime {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;

const char* to_string(Error::Kind kind) {
  switch (kind) {
    case Error::Kind::Connect:
      return "connect";
    case Error::Kind::Timeout:
      return "timeout";
    case Error::Kind::Closed:
      return "closed";
    case Error::Kind::Io:
      return "io";
    case Error::Kind::Protocol:
      return "protocol";
    case Error::Kind::Http:
      return "http";
    case Error::Kind::Json:
      return "json";
    case Error::Kind::Cancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Milliseconds to wait in poll() for `deadline`: -1 for none, never negative.
int poll_timeout(const Deadline& deadline) {
  if (!deadline) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<long long>(left.count(), 1'000'000'000LL));
}

// Waits until `fd` has `events` or the canceller fires.
Result<bool> wait_fd(int fd, short events, const Canceller* cancel, const Deadline& deadline,
                     const char* what) {
  for (;;) {
    std::array<pollfd, 2> fds{};
    fds[0] = {fd, events, 0};
    nfds_t n = 1;
    if (cancel != nullptr) {
      fds[1] = {cancel->fd(), POLLIN, 0};
      n = 2;
    }
    const int rc = ::poll(fds.data(), n, poll_timeout(deadline));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return Error::make(Error::Kind::Io, std::string("poll: ") + errno_text(errno));
    }
    if (n == 2 && (fds[1].revents & POLLIN) != 0) {
      return Error::make(Error::Kind::Cancelled, std::string(what) + ": cancelled");
    }
    if (rc == 0) {
      return Error::make(Error::Kind::Timeout, std::string(what) + ": timed out");
    }
    // POLLHUP/POLLERR: let the following read/write report what happened.
    return true;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Canceller

Canceller::Canceller() {
  std::array<int, 2> fds{-1, -1};
  if (::pipe2(fds.data(), O_CLOEXEC | O_NONBLOCK) == 0) {
    read_fd_ = fds[0];
    write_fd_ = fds[1];
  }
}

Canceller::~Canceller() {
  if (read_fd_ >= 0) ::close(read_fd_);
  if (write_fd_ >= 0) ::close(write_fd_);
}

void Canceller::cancel() noexcept {
  const char byte = 1;
  // A full pipe is already readable, which is all cancel() needs.
  [[maybe_unused]] const auto n = ::write(write_fd_, &byte, 1);
}

void Canceller::reset() noexcept {
  std::array<char, 64> buf{};
  while (::read(read_fd_, buf.data(), buf.size()) > 0) {
  }
}

bool Canceller::cancelled() const noexcept {
  pollfd p{read_fd_, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN) != 0;
}

bool Canceller::sleep_for(std::chrono::milliseconds duration) const noexcept {
  const auto deadline = Clock::now() + duration;
  for (;;) {
    pollfd p{read_fd_, POLLIN, 0};
    const int rc = ::poll(&p, 1, poll_timeout(deadline));
    if (rc > 0) return false;
    if (rc == 0) return true;
    if (errno != EINTR) return !cancelled();
  }
}

// ---------------------------------------------------------------------------
// HttpResponse

const std::string* HttpResponse::header(std::string_view name) const {
  const std::string key = lower(name);
  for (const auto& [k, v] : headers) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4U]);
      out.push_back(kHex[c & 0xFU]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// HttpConnection: one socket, a read buffer, and the body decoder.

class HttpConnection {
 public:
  HttpConnection(int fd, const Canceller* cancel, std::size_t max_body)
      : fd_(fd), cancel_(cancel), max_body_(max_body) {}
  ~HttpConnection() { ::close(fd_); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  Result<bool> send_all(std::string_view data, const Deadline& deadline) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        auto w = wait_fd(fd_, POLLOUT, cancel_, deadline, "send request");
        if (!w) return w.error();
        continue;
      }
      return Error::make(Error::Kind::Io, "send request: " + errno_text(errno));
    }
    return true;
  }

  Result<HttpResponse> read_head(const Deadline& deadline, std::size_t max_header) {
    HttpResponse head;
    bool status_line = true;
    std::size_t total = 0;
    for (;;) {
      auto line = read_line(deadline, max_header - std::min(total, max_header), "response headers");
      if (!line) return line.error();
      total += line.value().size() + 2;
      std::string_view l = line.value();
      if (status_line) {
        // HTTP/1.1 200 OK
        if (l.size() < 12 || l.substr(0, 7) != "HTTP/1." || l[8] != ' ') {
          return Error::make(Error::Kind::Protocol,
                             "not an HTTP/1.x status line: '" + std::string(l.substr(0, 80)) + "'");
        }
        int status = 0;
        for (std::size_t i = 9; i < 12; ++i) {
          if (std::isdigit(static_cast<unsigned char>(l[i])) == 0) {
            return Error::make(Error::Kind::Protocol,
                               "bad status code in '" + std::string(l) + "'");
          }
          status = status * 10 + (l[i] - '0');
        }
        head.status = status;
        head.reason = std::string(trim(l.substr(12)));
        status_line = false;
        continue;
      }
      if (l.empty()) break;
      const auto colon = l.find(':');
      if (colon == std::string_view::npos || colon == 0 || l.front() == ' ' || l.front() == '\t') {
        return Error::make(Error::Kind::Protocol,
                           "malformed header line '" + std::string(l.substr(0, 80)) + "'");
      }
      head.headers.emplace_back(lower(trim(l.substr(0, colon))),
                                std::string(trim(l.substr(colon + 1))));
    }
    // 1xx interim responses carry no body; we never send Expect, so skip them.
    if (head.status >= 100 && head.status < 200) return read_head(deadline, max_header);
    auto framing = set_framing(head);
    if (!framing) return framing.error();
    return head;
  }

  // Appends decoded body bytes to `out`; returns once at least one byte was
  // appended or the body ended. Result: true while more body may follow.
  Result<bool> read_body_some(std::string& out, const Deadline& deadline) {
    const std::size_t before = out.size();
    for (;;) {
      auto progress = decode(out);
      if (!progress) return progress.error();
      if (mode_ == Mode::Done) return false;
      if (out.size() > before) return true;
      auto n = fill(deadline, "response body");
      if (!n) {
        if (n.error().kind == Error::Kind::Closed && mode_ == Mode::UntilClose) {
          mode_ = Mode::Done;
          return false;
        }
        if (n.error().kind == Error::Kind::Closed) {
          return Error::make(Error::Kind::Closed, "connection closed before the body ended");
        }
        return n.error();
      }
    }
  }

  [[nodiscard]] bool body_done() const { return mode_ == Mode::Done; }
  [[nodiscard]] std::size_t max_body() const { return max_body_; }

 private:
  enum class Mode : std::uint8_t {
    Length,
    UntilClose,
    ChunkSize,
    ChunkData,
    ChunkEnd,
    Trailers,
    Done
  };

  Result<bool> set_framing(const HttpResponse& head) {
    if (head.status == 204 || head.status == 304) {
      mode_ = Mode::Done;
      return true;
    }
    if (const auto* te = head.header("transfer-encoding")) {
      if (lower(*te).find("chunked") == std::string::npos) {
        return Error::make(Error::Kind::Protocol, "unsupported Transfer-Encoding '" + *te + "'");
      }
      mode_ = Mode::ChunkSize;
      return true;
    }
    if (const auto* cl = head.header("content-length")) {
      std::size_t n = 0;
      if (cl->empty() || cl->size() > 18) {
        return Error::make(Error::Kind::Protocol, "bad Content-Length '" + *cl + "'");
      }
      for (const char c : *cl) {
        if (std::isdigit(static_cast<unsigned char>(c)) == 0) {
          return Error::make(Error::Kind::Protocol, "bad Content-Length '" + *cl + "'");
        }
        n = n * 10 + static_cast<std::size_t>(c - '0');
      }
      if (n > max_body_) {
        return Error::make(Error::Kind::Protocol, "body of " + std::to_string(n) +
                                                      " bytes exceeds the limit of " +
                                                      std::to_string(max_body_));
      }
      remaining_ = n;
      mode_ = n == 0 ? Mode::Done : Mode::Length;
      return true;
    }
    mode_ = Mode::UntilClose;
    return true;
  }

  // Moves as much buffered data through the decoder as possible.
  Result<bool> decode(std::string& out) {
    for (;;) {
      const std::size_t avail = buf_.size() - pos_;
      switch (mode_) {
        case Mode::Done:
          return true;
        case Mode::UntilClose:
          out.append(buf_, pos_, avail);
          consume(avail);
          return true;
        case Mode::Length:
        case Mode::ChunkData: {
          const std::size_t take = std::min(avail, remaining_);
          out.append(buf_, pos_, take);
          consume(take);
          remaining_ -= take;
          if (remaining_ != 0) return true;
          mode_ = mode_ == Mode::Length ? Mode::Done : Mode::ChunkEnd;
          continue;
        }
        case Mode::ChunkEnd: {
          auto line = take_line();
          if (!line) return true;
          if (!line->empty()) {
            return Error::make(Error::Kind::Protocol, "chunk not followed by CRLF");
          }
          mode_ = Mode::ChunkSize;
          continue;
        }
        case Mode::ChunkSize: {
          auto line = take_line();
          if (!line) {
            if (avail > 1024) return Error::make(Error::Kind::Protocol, "chunk size line too long");
            return true;
          }
          std::string_view l = *line;
          if (const auto semi = l.find(';'); semi != std::string_view::npos) l = l.substr(0, semi);
          l = trim(l);
          if (l.empty() || l.size() > 15) {
            return Error::make(Error::Kind::Protocol, "bad chunk size '" + *line + "'");
          }
          std::size_t n = 0;
          for (const char c : l) {
            const int d = std::isdigit(static_cast<unsigned char>(c)) != 0 ? c - '0'
                          : (c >= 'a' && c <= 'f')                         ? c - 'a' + 10
                          : (c >= 'A' && c <= 'F')                         ? c - 'A' + 10
                                                                           : -1;
            if (d < 0) return Error::make(Error::Kind::Protocol, "bad chunk size '" + *line + "'");
            n = n * 16 + static_cast<std::size_t>(d);
          }
          body_seen_ += n;
          if (body_seen_ > max_body_) {
            return Error::make(Error::Kind::Protocol, "chunked body exceeds the limit of " +
                                                          std::to_string(max_body_) + " bytes");
          }
          remaining_ = n;
          mode_ = n == 0 ? Mode::Trailers : Mode::ChunkData;
          continue;
        }
        case Mode::Trailers: {
          auto line = take_line();
          if (!line) return true;
          if (line->empty()) mode_ = Mode::Done;
          continue;
        }
      }
    }
  }

  // A complete line from the buffer (CRLF or LF stripped), or nullopt.
  std::optional<std::string> take_line() {
    const auto nl = buf_.find('\n', pos_);
    if (nl == std::string::npos) return std::nullopt;
    std::size_t end = nl;
    if (end > pos_ && buf_[end - 1] == '\r') --end;
    std::string line = buf_.substr(pos_, end - pos_);
    consume(nl + 1 - pos_);
    return line;
  }

  Result<std::string> read_line(const Deadline& deadline, std::size_t max, const char* what) {
    for (;;) {
      if (auto line = take_line()) return std::move(*line);
      if (buf_.size() - pos_ > max) {
        return Error::make(Error::Kind::Protocol,
                           std::string(what) + " exceed " + std::to_string(max) + " bytes");
      }
      auto n = fill(deadline, what);
      if (!n) {
        if (n.error().kind == Error::Kind::Closed) {
          return Error::make(Error::Kind::Closed,
                             std::string("connection closed while reading ") + what);
        }
        return n.error();
      }
    }
  }

  void consume(std::size_t n) {
    pos_ += n;
    if (pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    } else if (pos_ > 64 * 1024) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
  }

  // Reads what the socket has (at least one byte). Closed on EOF.
  Result<std::size_t> fill(const Deadline& deadline, const char* what) {
    std::array<char, 16 * 1024> chunk{};
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
      if (n > 0) {
        buf_.append(chunk.data(), static_cast<std::size_t>(n));
        return static_cast<std::size_t>(n);
      }
      if (n == 0)
        return Error::make(Error::Kind::Closed, std::string(what) + ": connection closed");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        auto w = wait_fd(fd_, POLLIN, cancel_, deadline, what);
        if (!w) return w.error();
        continue;
      }
      if (errno == ECONNRESET) {
        return Error::make(Error::Kind::Closed, std::string(what) + ": connection reset");
      }
      return Error::make(Error::Kind::Io, std::string(what) + ": " + errno_text(errno));
    }
  }

  int fd_;
  const Canceller* cancel_;
  std::size_t max_body_;
  std::string buf_;
  std::size_t pos_ = 0;
  Mode mode_ = Mode::Done;
  std::size_t remaining_ = 0;
  std::size_t body_seen_ = 0;
};

// ---------------------------------------------------------------------------
// HttpStream

HttpStream::HttpStream(std::unique_ptr<HttpConnection> conn, HttpResponse head)
    : conn_(std::move(conn)), head_(std::move(head)) {}
HttpStream::HttpStream(HttpStream&&) noexcept = default;
HttpStream& HttpStream::operator=(HttpStream&&) noexcept = default;
HttpStream::~HttpStream() = default;

Result<std::string> HttpStream::next_line(std::optional<std::chrono::milliseconds> idle) {
  const Deadline deadline = idle ? Deadline(Clock::now() + *idle) : std::nullopt;
  for (;;) {
    if (const auto nl = pending_.find('\n'); nl != std::string::npos) {
      std::size_t end = nl;
      if (end > 0 && pending_[end - 1] == '\r') --end;
      std::string line = pending_.substr(0, end);
      pending_.erase(0, nl + 1);
      if (line.empty()) continue;
      return line;
    }
    if (conn_->body_done()) {
      if (!pending_.empty()) return std::exchange(pending_, {});
      return Error::make(Error::Kind::Closed, "stream ended");
    }
    if (pending_.size() > conn_->max_body()) {
      return Error::make(Error::Kind::Protocol,
                         "stream line exceeds " + std::to_string(conn_->max_body()) + " bytes");
    }
    auto more = conn_->read_body_some(pending_, deadline);
    if (!more) {
      if (more.error().kind != Error::Kind::Closed || pending_.empty()) return more.error();
      // Hand out what arrived before the end; the next call reports it.
      if (pending_.find('\n') != std::string::npos) continue;
      return std::exchange(pending_, {});  // an unterminated last line is still a line
    }
  }
}

Result<std::string> HttpStream::read_all(std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  std::string body = std::exchange(pending_, {});
  while (!conn_->body_done()) {
    auto more = conn_->read_body_some(body, deadline);
    if (!more) return more.error();
    if (body.size() > conn_->max_body()) {
      return Error::make(Error::Kind::Protocol,
                         "body exceeds " + std::to_string(conn_->max_body()) + " bytes");
    }
  }
  return body;
}

// ---------------------------------------------------------------------------
// UnixHttpClient

UnixHttpClient::UnixHttpClient(Options options, const Canceller* cancel)
    : options_(std::move(options)), cancel_(cancel) {}

Result<std::unique_ptr<HttpConnection>> UnixHttpClient::connect_and_send(
    std::string_view method, std::string_view target, std::string_view body,
    Clock::time_point deadline) const {
  const std::string where = "unix://" + options_.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options_.socket_path.empty() || options_.socket_path.size() >= sizeof(addr.sun_path)) {
    return Error::make(Error::Kind::Connect, where + ": socket path empty or longer than " +
                                                 std::to_string(sizeof(addr.sun_path) - 1) +
                                                 " bytes");
  }
  std::memcpy(addr.sun_path, options_.socket_path.data(), options_.socket_path.size());

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Error::make(Error::Kind::Connect, where + ": socket: " + errno_text(errno));
  auto conn = std::make_unique<HttpConnection>(fd, cancel_, options_.max_body_bytes);

  const auto connect_deadline = std::min(deadline, Clock::now() + options_.connect_timeout);
  for (;;) {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the sockets API
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      // The listener's backlog is full; AF_UNIX gives no completion event.
      if (Clock::now() >= connect_deadline) {
        return Error::make(Error::Kind::Timeout, where + ": connect: backlog full until timeout");
      }
      if (cancel_ != nullptr && !cancel_->sleep_for(std::chrono::milliseconds(5))) {
        return Error::make(Error::Kind::Cancelled, where + ": connect: cancelled");
      }
      if (cancel_ == nullptr) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    if (err == EINPROGRESS) {
      auto w = wait_fd(fd, POLLOUT, cancel_, connect_deadline, "connect");
      if (!w) return Error::make(w.error().kind, where + ": " + w.error().message);
      int so_error = 0;
      socklen_t len = sizeof(so_error);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error != 0) {
        return Error::make(Error::Kind::Connect, where + ": connect: " + errno_text(so_error));
      }
      break;
    }
    return Error::make(Error::Kind::Connect, where + ": connect: " + errno_text(err));
  }

  std::string req;
  req.reserve(160 + target.size());
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  req.append("Host: ").append(options_.host).append("\r\n");
  req.append("User-Agent: tierwall\r\nAccept: application/json\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    req.append("Content-Type: application/json\r\nContent-Length: ")
        .append(std::to_string(body.size()))
        .append("\r\n");
  }
  req.append("\r\n").append(body);
  auto sent = conn->send_all(req, deadline);
  if (!sent) return Error::make(sent.error().kind, where + ": " + sent.error().message);
  return conn;
}

Result<HttpResponse> UnixHttpClient::request(std::string_view method,
                                             std::string_view target) const {
  return request(method, target, std::string_view());
}

Result<HttpResponse> UnixHttpClient::request(std::string_view method, std::string_view target,
                                             std::string_view body) const {
  const auto deadline = Clock::now() + options_.request_timeout;
  auto conn = connect_and_send(method, target, body, deadline);
  if (!conn) return conn.error();
  auto head = conn.value()->read_head(deadline, options_.max_header_bytes);
  const std::string what = std::string(method) + " " + std::string(target);
  if (!head) return Error::make(head.error().kind, what + ": " + head.error().message);
  HttpResponse response = std::move(head.value());
  while (!conn.value()->body_done()) {
    auto more = conn.value()->read_body_some(response.body, deadline);
    if (!more) return Error::make(more.error().kind, what + ": " + more.error().message);
  }
  return response;
}

Result<HttpStream> UnixHttpClient::stream(std::string_view target) const {
  const auto deadline = Clock::now() + options_.request_timeout;
  auto conn = connect_and_send("GET", target, std::string_view(), deadline);
  if (!conn) return conn.error();
  auto head = conn.value()->read_head(deadline, options_.max_header_bytes);
  if (!head) {
    return Error::make(head.error().kind,
                       "GET " + std::string(target) + ": " + head.error().message);
  }
  return HttpStream(std::move(conn.value()), std::move(head.value()));
}

}  // namespace tierwall::runtime
