// A tiny non-blocking HTTP/1.0 server without a thread of its own, for the
// agent's metrics/health endpoints (TCP) and its local API (unix socket).
//
// The daemon's poll loop adds the server's fds (add_fds) and hands the
// results back (serve). One request per connection: request line, headers,
// and a body framed by Content-Length (no chunked uploads); the response
// closes the connection. Bounded: headers at most kMaxHeader bytes, the body
// at most Options::max_body, kMaxConnections at once, each connection at
// most kConnectionDeadline from accept to the last byte sent.
//
// On a unix socket every request carries the caller's credentials
// (SO_PEERCRED: pid, uid, gid; SO_PEERGROUPS: supplementary groups), taken
// by the kernel at connect time, so a caller cannot claim another identity.
//
// Thread contract: one thread (the daemon's control thread) calls every
// method, including the handler it runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace tierwall::agent {

struct HostPort;

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (may include gid)
};

struct HttpRequest {
  std::string method;  // GET, HEAD, POST, ... as sent
  std::string path;    // without the query string
  std::string query;   // after '?', undecoded; empty when none
  std::string body;
  std::optional<PeerCredentials> peer;  // unix sockets only
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// "OK", "Not Found", ... for the status codes the agent uses.
std::string_view http_reason(int status);

class HttpServer {
 public:
  static constexpr std::size_t kMaxHeader = 8192;
  static constexpr std::size_t kMaxConnections = 32;
  static constexpr std::chrono::milliseconds kConnectionDeadline{5000};

  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  struct Options {
    std::size_t max_body = 0;  // larger bodies get 413; 0 = no body allowed
  };

  // TCP: binds HOST:PORT (port 0: any; see port()) and listens.
  static std::unique_ptr<HttpServer> open_tcp(const HostPort& address, Options options,
                                              Handler handler, std::string* error);

  struct UnixOptions {
    mode_t mode = 0660;
    std::optional<gid_t> group;  // chown the socket to this group
  };
  // Unix socket at `path` (parent directories created 0755). A stale socket
  // file is replaced; a socket that answers (another agent) is an error.
  // The file is removed again by the destructor.
  static std::unique_ptr<HttpServer> open_unix(const std::string& path, const UnixOptions& unix,
                                               Options options, Handler handler,
                                               std::string* error);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Appends the fds to wait on; serve() must get exactly the entries added.
  void add_fds(std::vector<pollfd>& fds) const;
  // Accepts, reads, answers and expires connections.
  void serve(std::span<const pollfd> fds);
  // The earliest connection deadline, to bound the poll timeout.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> next_deadline() const;
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  struct Connection {
    int fd = -1;
    std::string in;
    std::string out;
    std::size_t sent = 0;
    bool responding = false;
    std::chrono::steady_clock::time_point deadline;
    std::optional<PeerCredentials> peer;
  };
  HttpServer(int fd, std::uint16_t port, std::string unix_path, Options options, Handler handler);
  void accept_all();
  void on_readable(Connection& c);
  void respond(Connection& c, const HttpResponse& r, bool head);
  static bool flush(Connection& c);  // true when done (or failed): close it

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::string unix_path_;  // removed on destruction; empty for TCP
  Options options_;
  Handler handler_;
  std::vector<Connection> connections_;
};

}  // namespace tierwall::agent
