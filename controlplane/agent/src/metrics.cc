#include "tierwall/agent/metrics.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace tierwall::agent {

void LatencyHistogram::observe(double seconds) {
  ++count;
  sum += seconds;
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets[i];
      return;
    }
  }
}

std::vector<RuleCounter> name_rule_counters(
    const dataplane::CompiledPolicy* policy,
    const std::map<dataplane::RuleId, std::pair<std::uint64_t, std::uint64_t>>& counters) {
  std::map<std::pair<std::string, std::string>, std::pair<std::uint64_t, std::uint64_t>> sums;
  for (const auto& [id, value] : counters) {
    std::string rule;
    std::string kind;
    if (id == dataplane::kRuleSelf) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::Self));
    } else if (id == dataplane::kRuleIntraTier) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::IntraTier));
    } else if (id == dataplane::kRuleDefaultDeny) {
      rule = kind = std::string(dataplane::to_string(dataplane::RuleKind::DefaultDeny));
    } else if (const auto* r = policy ? policy->find_rule(id) : nullptr) {
      rule = r->origin.name.empty() ? "#" + std::to_string(id) : r->origin.name;
      kind = std::string(dataplane::to_string(r->origin.kind));
    } else {
      rule = "#" + std::to_string(id);
      kind = "unknown";
    }
    auto& s = sums[{rule, kind}];
    s.first += value.first;
    s.second += value.second;
  }
  std::vector<RuleCounter> out;
  out.reserve(sums.size());
  for (const auto& [key, value] : sums) {
    out.push_back(RuleCounter{key.first, key.second, value.first, value.second});
  }
  return out;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // The shortest text that reads back the same, without an exponent if one
  // is that short ("10", not "1e+01").
  for (const bool exponent_ok : {false, true}) {
    for (int prec = 1; prec <= 17; ++prec) {
      char t[64];
      std::snprintf(t, sizeof t, "%.*g", prec, v);
      if (!exponent_ok && std::strchr(t, 'e') != nullptr) continue;
      if (std::strtod(t, nullptr) == v) return t;
    }
  }
  return buf;
}

void header(std::ostringstream& o, std::string_view name, std::string_view type,
            std::string_view help) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
}

std::string label(std::string_view name, std::string_view value) {
  return std::string(name) + "=\"" + escape_label_value(value) + "\"";
}

}  // namespace

std::string render_metrics(const ReconcilerStatus& st, const ExtraCounters& extra) {
  std::ostringstream o;
  header(o, "tierwall_endpoints", "gauge", "Endpoints known to the agent, by tier.");
  for (const auto& [tier, n] : st.tier_counts) {
    o << "tierwall_endpoints{" << label("tier", tier) << "} " << n << "\n";
  }
  header(o, "tierwall_policy_generation", "gauge", "Generation of the desired policy (0 = none).");
  o << "tierwall_policy_generation " << st.generation << "\n";
  header(o, "tierwall_policy_applied_generation", "gauge",
         "Last policy generation the dataplane accepted.");
  o << "tierwall_policy_applied_generation " << st.applied_generation << "\n";
  header(o, "tierwall_policy_info", "gauge", "The current policy: name and digest.");
  if (st.generation > 0) {
    o << "tierwall_policy_info{" << label("name", st.policy_name) << ","
      << label("digest", st.policy_digest) << "} 1\n";
  }
  header(o, "tierwall_apply_duration_seconds", "histogram",
         "Latency of dataplane applies and endpoint updates.");
  std::uint64_t cumulative = 0;
  const auto& h = extra.apply_duration;
  for (std::size_t i = 0; i < LatencyHistogram::kBounds.size(); ++i) {
    cumulative += h.buckets[i];
    o << "tierwall_apply_duration_seconds_bucket{le=\"" << number(LatencyHistogram::kBounds[i])
      << "\"} " << cumulative << "\n";
  }
  o << "tierwall_apply_duration_seconds_bucket{le=\"+Inf\"} " << h.count << "\n";
  o << "tierwall_apply_duration_seconds_sum " << number(h.sum) << "\n";
  o << "tierwall_apply_duration_seconds_count " << h.count << "\n";
  header(o, "tierwall_policies_rejected_total", "counter",
         "Policy changes rejected by validation.");
  o << "tierwall_policies_rejected_total " << st.rejected_policies << "\n";
  header(o, "tierwall_drift_repairs_total", "counter",
         "Changes by others to tierwall's table that were repaired.");
  o << "tierwall_drift_repairs_total " << st.drift_repairs << "\n";
  header(o, "tierwall_dataplane_errors_total", "counter", "Failed dataplane applies and updates.");
  o << "tierwall_dataplane_errors_total " << st.dataplane_failures << "\n";
  header(o, "tierwall_dataplane_ok", "gauge", "1 when the dataplane holds the desired state.");
  o << "tierwall_dataplane_ok " << (st.dataplane_ok ? 1 : 0) << "\n";
  header(o, "tierwall_identity_source_connected", "gauge",
         "1 when the identity source is connected.");
  for (std::size_t i = 0; i < kSourceCount; ++i) {
    if (!extra.source_configured[i]) continue;
    o << "tierwall_identity_source_connected{" << label("source", to_string(static_cast<Source>(i)))
      << "} " << (st.sources[i].connected ? 1 : 0) << "\n";
  }
  header(o, "tierwall_rule_packets_total", "counter", "Packets decided by each rule.");
  for (const auto& r : extra.rules) {
    o << "tierwall_rule_packets_total{" << label("rule", r.rule) << "," << label("kind", r.kind)
      << "} " << r.packets << "\n";
  }
  header(o, "tierwall_rule_bytes_total", "counter", "Bytes decided by each rule.");
  for (const auto& r : extra.rules) {
    o << "tierwall_rule_bytes_total{" << label("rule", r.rule) << "," << label("kind", r.kind)
      << "} " << r.bytes << "\n";
  }
  return o.str();
}

// --- HTTP ------------------------------------------------------------------

MetricsServer::Response health_response(std::string_view path,
                                        const std::function<std::string()>& render,
                                        const std::function<std::string()>& not_ready) {
  MetricsServer::Response r;
  if (path == "/metrics") {
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = render();
  } else if (path == "/healthz") {
    r.body = "ok\n";
  } else if (path == "/readyz") {
    const std::string why = not_ready();
    if (why.empty()) {
      r.body = "ok\n";
    } else {
      r.status = 503;
      r.body = why + "\n";
    }
  } else {
    r.status = 404;
    r.body = "not found\n";
  }
  return r;
}

MetricsServer::MetricsServer(int fd, std::uint16_t port, Handler handler)
    : listen_fd_(fd), port_(port), handler_(std::move(handler)) {}

MetricsServer::~MetricsServer() {
  for (auto& c : connections_) ::close(c.fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

std::unique_ptr<MetricsServer> MetricsServer::open(const HostPort& address, Handler handler,
                                                   std::string* error) {
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
    return std::unique_ptr<MetricsServer>(new MetricsServer(fd, actual, std::move(handler)));
  }
  ::freeaddrinfo(res);
  if (error) *error = last;
  return nullptr;
}

void MetricsServer::add_fds(std::vector<pollfd>& fds) const {
  fds.push_back(pollfd{listen_fd_, POLLIN, 0});
  for (const auto& c : connections_) {
    fds.push_back(pollfd{c.fd, static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
  }
}

std::optional<std::chrono::steady_clock::time_point> MetricsServer::next_deadline() const {
  std::optional<std::chrono::steady_clock::time_point> d;
  for (const auto& c : connections_) {
    if (!d || c.deadline < *d) d = c.deadline;
  }
  return d;
}

void MetricsServer::accept_all() {
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
    connections_.push_back(std::move(c));
  }
}

bool MetricsServer::flush(Connection& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR ? true : false;
    c.sent += static_cast<std::size_t>(n);
  }
  return true;
}

void MetricsServer::respond(Connection& c, const Response& r, bool head) {
  const char* reason = r.status == 200   ? "OK"
                       : r.status == 400 ? "Bad Request"
                       : r.status == 404 ? "Not Found"
                       : r.status == 405 ? "Method Not Allowed"
                       : r.status == 431 ? "Request Header Fields Too Large"
                       : r.status == 503 ? "Service Unavailable"
                                         : "Error";
  c.out = "HTTP/1.0 " + std::to_string(r.status) + " " + reason +
          "\r\nContent-Type: " + r.content_type +
          "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n";
  if (!head) c.out += r.body;
  c.responding = true;
  c.in.clear();
}

void MetricsServer::on_readable(Connection& c) {
  char buf[2048];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      c.in.append(buf, static_cast<std::size_t>(n));
      if (c.in.size() > kMaxRequest) {
        Response r;
        r.status = 431;
        r.body = "request too large\n";
        respond(c, r, false);
        return;
      }
      continue;
    }
    if (n == 0) {
      // The peer finished sending: answer what we have if it is a request line.
      if (c.in.find('\n') == std::string::npos) c.deadline = {};
      break;
    }
    break;  // EAGAIN or an error
  }
  const bool complete =
      c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos;
  if (!complete) return;
  const auto eol = c.in.find_first_of("\r\n");
  const std::string line = c.in.substr(0, eol);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos) {
    respond(c, Response{400, "text/plain; charset=utf-8", "bad request\n"}, false);
    return;
  }
  const std::string method = line.substr(0, sp1);
  std::string target =
      line.substr(sp1 + 1, sp2 == std::string::npos ? std::string::npos : sp2 - sp1 - 1);
  if (const auto q = target.find('?'); q != std::string::npos) target.resize(q);
  if (method != "GET" && method != "HEAD") {
    respond(c, Response{405, "text/plain; charset=utf-8", "method not allowed\n"}, false);
    return;
  }
  respond(c, handler_(target), method == "HEAD");
}

void MetricsServer::serve(std::span<const pollfd> fds) {
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
