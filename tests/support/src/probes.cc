// TCP/UDP/ICMP probes and echo servers. Sockets are created on a thread
// inside the target namespace (in_netns) and stay bound to it afterwards, so
// the echo loops themselves run on ordinary threads.
#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <mutex>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <ostream>
#include <poll.h>
#include <random>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "internal.h"

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {
namespace {

using Clock = std::chrono::steady_clock;

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

// Numeric literal (with an optional "%ifname" scope for IPv6) to sockaddr.
// Must run inside the namespace when a scope is given.
std::optional<SockAddr> to_sockaddr(const std::string& address, std::uint16_t port) {
  std::string host = address;
  std::string scope;
  if (const std::size_t pct = address.find('%'); pct != std::string::npos) {
    host = address.substr(0, pct);
    scope = address.substr(pct + 1);
  }
  SockAddr out;
  sockaddr_in v4{};
  if (scope.empty() && ::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    std::memcpy(&out.storage, &v4, sizeof(v4));
    out.len = sizeof(v4);
    out.family = AF_INET;
    return out;
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    if (!scope.empty()) {
      v6.sin6_scope_id = ::if_nametoindex(scope.c_str());
      if (v6.sin6_scope_id == 0) return std::nullopt;
    }
    std::memcpy(&out.storage, &v6, sizeof(v6));
    out.len = sizeof(v6);
    out.family = AF_INET6;
    return out;
  }
  return std::nullopt;
}

std::string numeric_host(const sockaddr_storage& storage) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  if (storage.ss_family == AF_INET) {
    sockaddr_in v4{};
    std::memcpy(&v4, &storage, sizeof(v4));
    ::inet_ntop(AF_INET, &v4.sin_addr, text.data(), text.size());
  } else if (storage.ss_family == AF_INET6) {
    sockaddr_in6 v6{};
    std::memcpy(&v6, &storage, sizeof(v6));
    ::inet_ntop(AF_INET6, &v6.sin6_addr, text.data(), text.size());
  }
  return text.data();
}

std::uint16_t bound_port(int fd) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0) return 0;
  if (storage.ss_family == AF_INET) {
    sockaddr_in v4{};
    std::memcpy(&v4, &storage, sizeof(v4));
    return ntohs(v4.sin_port);
  }
  sockaddr_in6 v6{};
  std::memcpy(&v6, &storage, sizeof(v6));
  return ntohs(v6.sin6_port);
}

Outcome classify(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
      return Outcome::kRefused;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case EACCES:
    case EPERM:  // a local netfilter drop on output
      return Outcome::kUnreachable;
    case ETIMEDOUT:
      return Outcome::kTimeout;
    default:
      return Outcome::kError;
  }
}

// Milliseconds left until `deadline`, rounded up, ≥ 0.
int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<Millis>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

void set_int_option(int fd, int level, int name, int value) {
  ::setsockopt(fd, level, name, &value, sizeof(value));
}

std::string random_token() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string token(16, ' ');
  for (char& c : token) c = kAlphabet[rng() % kAlphabet.size()];
  return token;
}

// A non-blocking socket for `dst`'s family, bound to `source` if given.
// Returns an invalid Fd when the source is not usable.
Fd open_socket(const SockAddr& dst, int type, int protocol, const std::string& source) {
  Fd fd(::socket(dst.family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol));
  if (fd.get() < 0 || source.empty()) return fd;
  const auto src = to_sockaddr(source, 0);
  if (!src || src->family != dst.family || ::bind(fd.get(), src->get(), src->len) != 0) {
    return Fd();
  }
  return fd;
}

// Asks for ICMP errors (also the "soft" host/net unreachable ones) to be
// reported on the socket instead of being ignored.
void want_icmp_errors(int fd, int family) {
  if (family == AF_INET) {
    set_int_option(fd, IPPROTO_IP, IP_RECVERR, 1);
  } else {
    set_int_option(fd, IPPROTO_IPV6, IPV6_RECVERR, 1);
  }
}

// The errno of the first queued ICMP error (IP_RECVERR), if any.
std::optional<int> pop_queued_error(int fd) {
  std::array<char, 512> payload{};
  alignas(cmsghdr) std::array<char, 512> control{};
  iovec iov{payload.data(), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  if (::recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return std::nullopt;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
        (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
      sock_extended_err ee{};
      std::memcpy(&ee, CMSG_DATA(c), sizeof(ee));
      return static_cast<int>(ee.ee_errno);
    }
  }
  return std::nullopt;
}

// Non-blocking connect bounded by `deadline`; must run inside the ns.
//
// ICMP errors are taken from the error queue as well as SO_ERROR: when the
// error comes back while connect() still holds the socket (everything in
// one softirq on veth), the kernel records it only as a soft error and
// would otherwise report it after the first SYN retransmit, a second later.
std::pair<Outcome, Fd> tcp_open(const std::string& address, std::uint16_t port,
                                const std::string& source, Clock::time_point deadline) {
  const auto dst = to_sockaddr(address, port);
  if (!dst) return {Outcome::kError, Fd()};
  Fd fd = open_socket(*dst, SOCK_STREAM, 0, source);
  if (fd.get() < 0) return {Outcome::kError, Fd()};
  set_int_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1);
  want_icmp_errors(fd.get(), dst->family);
  if (::connect(fd.get(), dst->get(), dst->len) == 0) return {Outcome::kOk, std::move(fd)};
  if (errno != EINPROGRESS) return {classify(errno), Fd()};
  for (;;) {
    pollfd pfd{fd.get(), POLLOUT, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready == 0) return {Outcome::kTimeout, Fd()};
    if (ready < 0) {
      if (errno == EINTR) continue;
      return {Outcome::kError, Fd()};
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      return {Outcome::kError, Fd()};
    }
    if (err != 0) return {classify(err), Fd()};
    if (const auto queued = pop_queued_error(fd.get())) return {classify(*queued), Fd()};
    if ((pfd.revents & POLLOUT) != 0) break;
  }
  // Only errors of the handshake matter here; established connections
  // (TcpSession) learn about loss from exchange().
  set_int_option(fd.get(), dst->family == AF_INET ? int{IPPROTO_IP} : int{IPPROTO_IPV6},
                 dst->family == AF_INET ? IP_RECVERR : IPV6_RECVERR, 0);
  return {Outcome::kOk, std::move(fd)};
}

// Sends `byte` and waits until it comes back; other bytes are skipped.
Outcome echo_byte(int fd, std::uint8_t byte, Clock::time_point deadline) {
  if (::send(fd, &byte, 1, MSG_NOSIGNAL) != 1) {
    return errno == EAGAIN ? Outcome::kTimeout : classify(errno);
  }
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(deadline));
    if (ready == 0) return Outcome::kTimeout;
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Outcome::kError;
    }
    std::array<std::uint8_t, 256> buf{};
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n == 0) return Outcome::kRefused;  // the peer closed
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return classify(errno);
    }
    const auto end = buf.begin() + n;
    if (std::find(buf.begin(), end, byte) != end) return Outcome::kOk;
  }
}

// Shared datagram loop for UDP and ping: sends `make_packet(attempt)` every
// `interval` until `accept(reply)` or the deadline.
template <typename Make, typename Accept>
Outcome datagram_exchange(int fd, Millis timeout, Make make_packet, Accept accept) {
  const auto deadline = Clock::now() + timeout;
  const Millis interval = std::max(Millis{50}, timeout / 4);
  auto next_send = Clock::now();
  for (int attempt = 0;;) {
    if (Clock::now() >= next_send) {
      const std::string packet = make_packet(attempt++);
      if (::send(fd, packet.data(), packet.size(), MSG_NOSIGNAL) < 0 && errno != EAGAIN) {
        return classify(errno);
      }
      next_send += interval;
    }
    const auto wake = std::min(deadline, next_send);
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, remaining_ms(wake));
    if (ready < 0 && errno != EINTR) return Outcome::kError;
    if (ready > 0) {
      std::array<char, 2048> buf{};
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return classify(errno);
      if (n >= 0 && accept(std::string_view(buf.data(), static_cast<std::size_t>(n)))) {
        return Outcome::kOk;
      }
    }
    if (Clock::now() >= deadline) return Outcome::kTimeout;
  }
}

void make_wake_pipe(int (&fds)[2]) {
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
}

void close_pair(int (&fds)[2]) {
  for (int& fd : fds) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

// Socket of `type` bound to address:port inside `ns`; throws on failure.
Fd bind_in(const NetNs& ns, const std::string& address, std::uint16_t port, int type) {
  return in_netns(ns, [&]() -> Fd {
    const auto local = to_sockaddr(address, port);
    if (!local) throw std::invalid_argument("not a numeric address: '" + address + "'");
    Fd fd(::socket(local->family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (::bind(fd.get(), local->get(), local->len) != 0) {
      throw std::runtime_error("bind " + address + " port " + std::to_string(port) + " in " +
                               ns.describe() + ": " + std::strerror(errno));
    }
    return fd;
  });
}

}  // namespace

std::string_view to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kRefused:
      return "refused";
    case Outcome::kUnreachable:
      return "unreachable";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kError:
      return "error";
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, Outcome outcome) { return os << to_string(outcome); }

// ---------------------------------------------------------------------------
// TCP

TcpServer::TcpServer(const NetNs& ns, const std::string& address, std::uint16_t port) {
  Fd listener = bind_in(ns, address, port, SOCK_STREAM);
  if (::listen(listener.get(), 128) != 0) {
    throw std::runtime_error(std::string("listen: ") + std::strerror(errno));
  }
  port_ = bound_port(listener.get());
  make_wake_pipe(wake_fds_);
  listen_fd_ = listener.release();
  thread_ = std::thread([this] { loop(); });
}

TcpServer::~TcpServer() { stop(); }

void TcpServer::stop() {
  if (thread_.joinable()) {
    const char byte = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fds_[1], &byte, 1);
    thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  close_pair(wake_fds_);
}

std::size_t TcpServer::accepted() const {
  std::lock_guard lock(mu_);
  return peers_.size();
}

std::vector<std::string> TcpServer::peers() const {
  std::lock_guard lock(mu_);
  return peers_;
}

void TcpServer::loop() {
  std::vector<Fd> conns;
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fds_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const Fd& conn : conns) fds.push_back({conn.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) return;
    std::vector<Fd> alive;
    for (std::size_t i = 0; i < conns.size(); ++i) {
      const short revents = fds[i + 2].revents;
      if (revents == 0) {
        alive.push_back(std::move(conns[i]));
        continue;
      }
      std::array<char, 4096> buf{};
      const ssize_t n = ::recv(conns[i].get(), buf.data(), buf.size(), 0);
      if (n > 0) {
        // Best effort: the probes send a byte at a time.
        ::send(conns[i].get(), buf.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL);
        alive.push_back(std::move(conns[i]));
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        alive.push_back(std::move(conns[i]));
      }
    }
    conns = std::move(alive);
    if (fds[1].revents != 0) {
      for (;;) {
        sockaddr_storage peer{};
        socklen_t len = sizeof(peer);
        Fd conn(::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                          SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn.get() < 0) break;
        set_int_option(conn.get(), IPPROTO_TCP, TCP_NODELAY, 1);
        {
          std::lock_guard lock(mu_);
          peers_.push_back(numeric_host(peer));
        }
        conns.push_back(std::move(conn));
      }
    }
  }
}

Outcome tcp_probe(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                  const std::string& source) {
  return in_netns(ns, [&] {
    const auto deadline = Clock::now() + timeout;
    auto [outcome, fd] = tcp_open(address, port, source, deadline);
    if (outcome != Outcome::kOk) return outcome;
    return echo_byte(fd.get(), 0x5a, deadline);
  });
}

bool tcp_connect(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                 const std::string& source) {
  return tcp_probe(ns, address, port, timeout, source) == Outcome::kOk;
}

TcpSession::TcpSession(const NetNs& ns, const std::string& address, std::uint16_t port,
                       Millis timeout, const std::string& source) {
  auto [outcome, fd] =
      in_netns(ns, [&] { return tcp_open(address, port, source, Clock::now() + timeout); });
  if (outcome != Outcome::kOk) {
    throw std::runtime_error("TcpSession from " + ns.describe() + " to " + address + " port " +
                             std::to_string(port) + ": " + std::string(to_string(outcome)));
  }
  local_port_ = bound_port(fd.get());
  fd_ = fd.release();
}

TcpSession::~TcpSession() {
  if (fd_ >= 0) ::close(fd_);
}

Outcome TcpSession::exchange_probe(Millis timeout) {
  next_ = static_cast<std::uint8_t>(next_ == 0xff ? 1 : next_ + 1);
  return echo_byte(fd_, next_, Clock::now() + timeout);
}

// ---------------------------------------------------------------------------
// UDP

UdpEchoServer::UdpEchoServer(const NetNs& ns, const std::string& address, std::uint16_t port) {
  Fd sock = bind_in(ns, address, port, SOCK_DGRAM);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  ::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&local), &len);
  if (local.ss_family == AF_INET) {
    set_int_option(sock.get(), IPPROTO_IP, IP_PKTINFO, 1);
  } else {
    set_int_option(sock.get(), IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
  }
  port_ = bound_port(sock.get());
  make_wake_pipe(wake_fds_);
  fd_ = sock.release();
  thread_ = std::thread([this] { loop(); });
}

UdpEchoServer::~UdpEchoServer() { stop(); }

void UdpEchoServer::stop() {
  if (thread_.joinable()) {
    const char byte = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fds_[1], &byte, 1);
    thread_.join();
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  close_pair(wake_fds_);
}

void UdpEchoServer::loop() {
  for (;;) {
    std::array<pollfd, 2> fds{{{wake_fds_[0], POLLIN, 0}, {fd_, POLLIN, 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) return;
    if (fds[1].revents == 0) continue;

    std::array<char, 2048> buf{};
    sockaddr_storage peer{};
    alignas(cmsghdr) std::array<char, 256> control{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &peer;
    msg.msg_namelen = sizeof(peer);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(fd_, &msg, 0);
    if (n < 0) continue;
    received_.fetch_add(1);

    // Reply from the address the datagram was sent to: keep only the
    // destination from the received pktinfo and let routing pick the
    // interface (the ifindex is kept for link-local IPv6).
    alignas(cmsghdr) std::array<char, 256> reply_control{};
    std::size_t reply_control_len = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo info{};
        std::memcpy(&info, CMSG_DATA(c), sizeof(info));
        info.ipi_spec_dst = info.ipi_addr;
        info.ipi_ifindex = 0;
        cmsghdr header{};
        header.cmsg_level = IPPROTO_IP;
        header.cmsg_type = IP_PKTINFO;
        header.cmsg_len = CMSG_LEN(sizeof(info));
        std::memcpy(reply_control.data(), &header, sizeof(header));
        std::memcpy(reply_control.data() + CMSG_LEN(0), &info, sizeof(info));
        reply_control_len = CMSG_SPACE(sizeof(info));
      } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo info{};
        std::memcpy(&info, CMSG_DATA(c), sizeof(info));
        if (!IN6_IS_ADDR_LINKLOCAL(&info.ipi6_addr)) info.ipi6_ifindex = 0;
        cmsghdr header{};
        header.cmsg_level = IPPROTO_IPV6;
        header.cmsg_type = IPV6_PKTINFO;
        header.cmsg_len = CMSG_LEN(sizeof(info));
        std::memcpy(reply_control.data(), &header, sizeof(header));
        std::memcpy(reply_control.data() + CMSG_LEN(0), &info, sizeof(info));
        reply_control_len = CMSG_SPACE(sizeof(info));
      }
    }
    iovec reply_iov{buf.data(), static_cast<std::size_t>(n)};
    msghdr reply{};
    reply.msg_name = &peer;
    reply.msg_namelen = msg.msg_namelen;
    reply.msg_iov = &reply_iov;
    reply.msg_iovlen = 1;
    reply.msg_control = reply_control_len > 0 ? reply_control.data() : nullptr;
    reply.msg_controllen = reply_control_len;
    if (::sendmsg(fd_, &reply, MSG_NOSIGNAL) < 0 && reply_control_len > 0) {
      reply.msg_control = nullptr;
      reply.msg_controllen = 0;
      ::sendmsg(fd_, &reply, MSG_NOSIGNAL);
    }
  }
}

Outcome udp_probe(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                  const std::string& source) {
  return in_netns(ns, [&] {
    const auto dst = to_sockaddr(address, port);
    if (!dst) return Outcome::kError;
    Fd fd = open_socket(*dst, SOCK_DGRAM, 0, source);
    if (fd.get() < 0) return Outcome::kError;
    want_icmp_errors(fd.get(), dst->family);
    if (::connect(fd.get(), dst->get(), dst->len) != 0) return classify(errno);
    const std::string token = random_token();
    return datagram_exchange(
        fd.get(), timeout, [&](int) { return token; },
        [&](std::string_view reply) { return reply == token; });
  });
}

bool udp_echo(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
              const std::string& source) {
  return udp_probe(ns, address, port, timeout, source) == Outcome::kOk;
}

// ---------------------------------------------------------------------------
// ICMP

Outcome ping_probe(const NetNs& ns, const std::string& address, Millis timeout,
                   const std::string& source) {
  return in_netns(ns, [&] {
    const auto dst = to_sockaddr(address, 0);
    if (!dst) return Outcome::kError;
    const bool v4 = dst->family == AF_INET;
    Fd fd = open_socket(*dst, SOCK_DGRAM, v4 ? int{IPPROTO_ICMP} : int{IPPROTO_ICMPV6}, source);
    if (fd.get() < 0) return Outcome::kError;
    want_icmp_errors(fd.get(), dst->family);
    if (::connect(fd.get(), dst->get(), dst->len) != 0) return classify(errno);

    // type, code, checksum (2), identifier (2, set by the kernel), sequence
    // (2), payload; the kernel fills in identifier and checksum.
    const char request_type = v4 ? 8 : static_cast<char>(128);
    const char reply_type = v4 ? 0 : static_cast<char>(129);
    const std::string token = random_token();
    return datagram_exchange(
        fd.get(), timeout,
        [&](int attempt) {
          std::string packet(8, '\0');
          packet[0] = request_type;
          packet[6] = static_cast<char>((attempt >> 8) & 0xff);
          packet[7] = static_cast<char>(attempt & 0xff);
          return packet + token;
        },
        [&](std::string_view reply) {
          return reply.size() == 8 + token.size() && reply[0] == reply_type &&
                 reply.substr(8) == token;
        });
  });
}

bool ping(const NetNs& ns, const std::string& address, Millis timeout, const std::string& source) {
  return ping_probe(ns, address, timeout, source) == Outcome::kOk;
}

}  // namespace tierwall::testsupport
