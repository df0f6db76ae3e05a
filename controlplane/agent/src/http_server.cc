#include "tierwall/agent/http_server.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <utility>

#include "tierwall/agent/config.h"

namespace tierwall::agent {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

std::optional<PeerCredentials> peer_of(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  PeerCredentials p;
  p.pid = cred.pid;
  p.uid = cred.uid;
  p.gid = cred.gid;
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      p.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;
    groups.resize(glen / sizeof(gid_t) + 1);
  }
  return p;
}

}  // namespace

std::string_view http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 422:
      return "Unprocessable Entity";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

HttpServer::HttpServer(int fd, std::uint16_t port, std::string unix_path, Options options,
                       Handler handler)
    : listen_fd_(fd),
      port_(port),
      unix_path_(std::move(unix_path)),
      options_(options),
      handler_(std::move(handler)) {}

HttpServer::~HttpServer() {
  for (auto& c : connections_) ::close(c.fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

std::unique_ptr<HttpServer> HttpServer::open_tcp(const HostPort& address, Options options,
                                                 Handler handler, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(address.port);
  const int gai = ::getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(), port.c_str(),
                                &hints, &res);
  if (gai != 0) {
    if (error) *error = "cannot resolve " + address.host + ": " + ::gai_strerror(gai);
    return nullptr;
  }
  std::string last = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      last = std::string("bind ") + address.host + ":" + port + ": " + std::strerror(errno);
      ::close(fd);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    std::uint16_t actual = address.port;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
      actual = bound.ss_family == AF_INET6
                   ? ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port)
                   : ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
    }
    ::freeaddrinfo(res);
    return std::unique_ptr<HttpServer>(
        new HttpServer(fd, actual, std::string(), options, std::move(handler)));
  }
  ::freeaddrinfo(res);
  if (error) *error = last;
  return nullptr;
}

std::unique_ptr<HttpServer> HttpServer::open_unix(const std::string& path, const UnixOptions& unix,
                                                  Options options, Handler handler,
                                                  std::string* error) {
  auto fail = [&](const std::string& what) -> std::unique_ptr<HttpServer> {
    if (error) *error = what;
    return nullptr;
  };
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail("socket path '" + path + "' is empty or longer than " +
                std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return fail("cannot create " + parent.string() + ": " + ec.message());
  }
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail(path + " exists and is not a socket");
    // Someone answering there is another agent: never steal its socket.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = probe >= 0 && ::connect(probe, sa, sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) return fail(path + " is in use (is another tierwalld running?)");
    ::unlink(path.c_str());  // stale, from an agent that did not stop cleanly
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(std::string("socket: ") + std::strerror(errno));
  // Bind with a restrictive umask, then set the mode: no moment where the
  // socket is more open than configured.
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd, sa, sizeof addr);
  ::umask(old);
  if (rc != 0) {
    const std::string why = std::string("bind ") + path + ": " + std::strerror(errno);
    ::close(fd);
    return fail(why);
  }
  auto server = std::unique_ptr<HttpServer>(
      new HttpServer(fd, 0, path, options, std::move(handler)));  // unlinks on failure below
  if (unix.group && ::chown(path.c_str(), static_cast<uid_t>(-1), *unix.group) != 0) {
    return fail("chown " + path + " to gid " + std::to_string(*unix.group) + ": " +
                std::strerror(errno));
  }
  if (::chmod(path.c_str(), unix.mode) != 0) {
    return fail("chmod " + path + ": " + std::strerror(errno));
  }
  if (::listen(fd, 16) != 0) return fail(std::string("listen: ") + std::strerror(errno));
  return server;
}

void HttpServer::add_fds(std::vector<pollfd>& fds) const {
  fds.push_back(pollfd{listen_fd_, POLLIN, 0});
  for (const auto& c : connections_) {
    fds.push_back(pollfd{c.fd, static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
  }
}

std::optional<std::chrono::steady_clock::time_point> HttpServer::next_deadline() const {
  std::optional<std::chrono::steady_clock::time_point> d;
  for (const auto& c : connections_) {
    if (!d || c.deadline < *d) d = c.deadline;
  }
  return d;
}

void HttpServer::accept_all() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a transient error: poll again
    if (connections_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    Connection c;
    c.fd = fd;
    c.deadline = std::chrono::steady_clock::now() + kConnectionDeadline;
    if (!unix_path_.empty()) c.peer = peer_of(fd);
    connections_.push_back(std::move(c));
  }
}

bool HttpServer::flush(Connection& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    c.sent += static_cast<std::size_t>(n);
  }
  return true;
}

void HttpServer::respond(Connection& c, const HttpResponse& r, bool head) {
  c.out = "HTTP/1.0 " + std::to_string(r.status) + " " + std::string(http_reason(r.status)) +
          "\r\nContent-Type: " + r.content_type +
          "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n";
  if (!head) c.out += r.body;
  c.responding = true;
  c.in.clear();
  c.in.shrink_to_fit();
}

void HttpServer::on_readable(Connection& c) {
  auto text = [](int status, std::string body) {
    return HttpResponse{status, "text/plain; charset=utf-8", std::move(body)};
  };
  char buf[8192];
  bool eof = false;
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<std::size_t>(n));
      if (c.in.size() > kMaxHeader + options_.max_body) {
        respond(c, text(413, "request too large\n"), false);
        return;
      }
      continue;
    }
    if (n == 0) eof = true;
    break;  // EAGAIN or an error
  }
  std::size_t head_end = c.in.find("\r\n\r\n");
  std::size_t body_start = head_end == std::string::npos ? head_end : head_end + 4;
  if (head_end == std::string::npos) {
    head_end = c.in.find("\n\n");
    body_start = head_end == std::string::npos ? head_end : head_end + 2;
  }
  if (head_end == std::string::npos) {
    if (c.in.size() > kMaxHeader) {
      respond(c, text(431, "request header too large\n"), false);
    } else if (eof) {
      c.deadline = {};  // the peer gave up before a whole request: close
    }
    return;
  }
  if (head_end > kMaxHeader) {
    respond(c, text(431, "request header too large\n"), false);
    return;
  }
  const std::string_view head(c.in.data(), head_end);
  const auto eol = head.find('\n');
  std::string line = trim(head.substr(0, eol));
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos) {
    respond(c, text(400, "bad request\n"), false);
    return;
  }
  HttpRequest req;
  req.method = line.substr(0, sp1);
  std::string target =
      line.substr(sp1 + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp1 - 1);
  if (const auto q = target.find('?'); q != std::string::npos) {
    req.query = target.substr(q + 1);
    target.resize(q);
  }
  req.path = std::move(target);
  std::optional<std::size_t> length;
  std::size_t pos = eol == std::string_view::npos ? head.size() : eol + 1;
  while (pos < head.size()) {
    auto next = head.find('\n', pos);
    if (next == std::string_view::npos) next = head.size();
    const auto header = head.substr(pos, next - pos);
    pos = next + 1;
    const auto colon = header.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string name = lower(trim(header.substr(0, colon)));
    const std::string value = trim(header.substr(colon + 1));
    if (name == "content-length") {
      std::size_t v = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || p != value.data() + value.size()) {
        respond(c, text(400, "bad Content-Length\n"), false);
        return;
      }
      length = v;
    } else if (name == "transfer-encoding") {
      respond(c, text(411, "send the body with Content-Length\n"), false);
      return;
    }
  }
  const std::size_t want = length.value_or(0);
  if (want > options_.max_body) {
    respond(c,
            text(413, "request body larger than " + std::to_string(options_.max_body) + " bytes\n"),
            false);
    return;
  }
  if (c.in.size() - body_start < want) {
    if (eof) c.deadline = {};  // truncated body: close without acting on it
    return;
  }
  req.body = c.in.substr(body_start, want);
  req.peer = c.peer;
  const bool is_head = req.method == "HEAD";
  respond(c, handler_(req), is_head);
}

void HttpServer::serve(std::span<const pollfd> fds) {
  if (fds.empty()) return;
  // fds[0] is the listener, fds[1 + i] is connections_[i] (as add_fds built them).
  for (std::size_t i = 0; i < connections_.size() && i + 1 < fds.size(); ++i) {
    auto& c = connections_[i];
    const short ev = fds[i + 1].revents;
    if (ev == 0 || fds[i + 1].fd != c.fd) continue;
    if (!c.responding && (ev & (POLLIN | POLLHUP | POLLERR)) != 0) on_readable(c);
    if (c.responding && flush(c)) c.deadline = {};  // done: closed below
    if ((ev & (POLLERR | POLLNVAL)) != 0) c.deadline = {};
  }
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(connections_, [&](const Connection& c) {
    if (c.deadline <= now) {
      ::close(c.fd);
      return true;
    }
    return false;
  });
  if ((fds[0].revents & POLLIN) != 0) accept_all();
}

}  // namespace tierwall::agent
