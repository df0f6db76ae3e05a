#include "tierwall/testsupport/podman.h"

#include <arpa/inet.h>
#include <array>
#include <cstdint>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace tierwall::testsupport {

ShellResult shell(const std::string& cmd, Millis timeout) {
  const CommandResult r = run_argv({"sh", "-c", "exec 2>&1; " + cmd}, timeout);
  ShellResult out;
  out.rc = r.timed_out ? 128 + 9 : r.exit_code;
  out.out = r.out + r.err;
  if (r.timed_out) out.out += "\n(killed after " + std::to_string(timeout.count()) + " ms)\n";
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool wait_until(const std::function<bool()>& pred, Millis timeout, Millis poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
  auto* sa = reinterpret_cast<sockaddr*>(&a);
  int port = 0;
  if (::bind(fd, sa, sizeof(a)) == 0 && ::getsockname(fd, sa, &len) == 0) port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::optional<HttpResponse> http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return std::nullopt;
  }
  std::string resp;
  std::array<char, 8192> buf{};
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    resp.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto body = resp.find("\r\n\r\n");
  // "HTTP/1.0 200 OK"
  if (resp.rfind("HTTP/1.", 0) != 0 || body == std::string::npos || resp.size() < 12) {
    return std::nullopt;
  }
  HttpResponse r;
  try {
    r.status = std::stoi(resp.substr(9, 3));
  } catch (...) {
    return std::nullopt;
  }
  r.body = resp.substr(body + 4);
  return r;
}

std::map<std::string, long> tier_counts(const std::string& metrics) {
  std::map<std::string, long> out;
  const std::string prefix = "tierwall_endpoints{tier=\"";
  for (const auto& line : split_lines(metrics)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto q = line.find('"', prefix.size());
    const auto sp = line.rfind(' ');
    if (q == std::string::npos || sp == std::string::npos) continue;
    out[line.substr(prefix.size(), q - prefix.size())] = std::stol(line.substr(sp + 1));
  }
  return out;
}

std::optional<double> metric_value(const std::string& metrics, const std::string& series) {
  for (const auto& line : split_lines(metrics)) {
    if (line.size() <= series.size() + 1 || line.rfind(series, 0) != 0 ||
        line[series.size()] != ' ') {
      continue;
    }
    try {
      return std::stod(line.substr(series.size() + 1));
    } catch (...) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace tierwall::testsupport
