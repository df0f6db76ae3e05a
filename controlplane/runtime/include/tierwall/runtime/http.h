// A minimal HTTP/1.1 client over an AF_UNIX stream socket: enough for the
// Docker Engine API (and Podman's compatible service), nothing more.
//
//   - one connection per request (`Connection: close`), so there is no
//     connection state to get wrong after an error;
//   - bodies framed by Content-Length, chunked transfer coding, or the end
//     of the connection;
//   - every blocking wait is a poll() on the socket and on the caller's
//     Canceller, with a deadline: nothing blocks forever unless the caller
//     asks for it, and a Canceller wakes every wait at once;
//   - no exceptions; failures are Error values that say what and where.
//
// Thread contract: UnixHttpClient is immutable after construction and may
// be used from several threads at once. An HttpStream belongs to one thread.
// Canceller::cancel() may be called from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tierwall/runtime/result.h"

namespace tierwall::runtime {

// A self-pipe: cancel() makes its fd readable for good, which wakes every
// poll() that includes it. reset() re-arms it (only when nobody waits).
class Canceller {
 public:
  Canceller();
  ~Canceller();
  Canceller(const Canceller&) = delete;
  Canceller& operator=(const Canceller&) = delete;

  void cancel() noexcept;
  void reset() noexcept;
  [[nodiscard]] bool cancelled() const noexcept;
  [[nodiscard]] int fd() const noexcept { return read_fd_; }

  // Sleeps up to `duration`; false when cancelled (before or during).
  bool sleep_for(std::chrono::milliseconds duration) const noexcept;

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
};

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;                                          // de-chunked

  // The first header of that (case-insensitive) name, or nullptr.
  [[nodiscard]] const std::string* header(std::string_view name) const;
};

class HttpConnection;

// A response whose body is read incrementally (a long-lived event stream).
// Move-only; closing it (destruction) closes the connection.
class HttpStream {
 public:
  HttpStream(HttpStream&&) noexcept;
  HttpStream& operator=(HttpStream&&) noexcept;
  ~HttpStream();

  [[nodiscard]] int status() const { return head_.status; }
  [[nodiscard]] const HttpResponse& head() const { return head_; }

  // The next '\n'-terminated line of the decoded body, without the line
  // terminator; empty lines are skipped. Waits at most `idle` for data
  // (std::nullopt: until data, end of stream or cancellation).
  // Errors: Timeout (nothing arrived in `idle`; the stream stays usable),
  // Closed (the body ended; a final unterminated line is returned first),
  // Cancelled, Io, Protocol.
  Result<std::string> next_line(std::optional<std::chrono::milliseconds> idle);

  // Reads what is left of the body (up to the client's body limit).
  Result<std::string> read_all(std::chrono::milliseconds timeout);

 private:
  friend class UnixHttpClient;
  HttpStream(std::unique_ptr<HttpConnection> conn, HttpResponse head);

  std::unique_ptr<HttpConnection> conn_;
  HttpResponse head_;
  std::string pending_;  // decoded body bytes not yet returned as lines
};

class UnixHttpClient {
 public:
  struct Options {
    std::string socket_path;
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds request_timeout{10000};  // whole request, headers and body
    std::string host = "localhost";                    // the Host header
    std::size_t max_header_bytes = 64 * 1024;
    std::size_t max_body_bytes = 64 * 1024 * 1024;
  };

  // `cancel`, when given, must outlive the client and every stream it opens.
  explicit UnixHttpClient(Options options, const Canceller* cancel = nullptr);

  // A complete request: sends it, reads the response and its whole body.
  // Any status is a success here; callers decide which statuses they accept.
  [[nodiscard]] Result<HttpResponse> request(std::string_view method,
                                             std::string_view target) const;
  // The same with a JSON request body (sent with Content-Length).
  [[nodiscard]] Result<HttpResponse> request(std::string_view method, std::string_view target,
                                             std::string_view body) const;

  // GET `target`, returning once the status line and headers arrived; the
  // body is then read from the stream.
  [[nodiscard]] Result<HttpStream> stream(std::string_view target) const;

  [[nodiscard]] const Options& options() const { return options_; }

 private:
  Result<std::unique_ptr<HttpConnection>> connect_and_send(
      std::string_view method, std::string_view target, std::string_view body,
      std::chrono::steady_clock::time_point deadline) const;

  Options options_;
  const Canceller* cancel_;
};

// Percent-encodes everything but RFC 3986 unreserved characters, for
// query values and path segments.
[[nodiscard]] std::string percent_encode(std::string_view text);

}  // namespace tierwall::runtime
