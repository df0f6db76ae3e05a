// See ct_events.h. The socket is libmnl's; messages are parsed by
// parse_ct_datagram() (flow_events.cc).
#include "tierwall/dataplane/nft/ct_events.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <span>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

#include <libmnl/libmnl.h>

namespace tierwall::dataplane::nft {

namespace {

constexpr std::size_t kBuffer = 256 * 1024;

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

constexpr unsigned group_bit(unsigned group) { return 1U << (group - 1); }

bool write_sysctl(const char* path, std::string* error) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    set_error(error, std::string(path) + ": " + std::strerror(errno));
    return false;
  }
  const bool ok = ::write(fd, "1\n", 2) == 2;
  if (!ok) set_error(error, std::string(path) + ": " + std::strerror(errno));
  ::close(fd);
  return ok;
}

}  // namespace

Verdict verdict_for_rule(const CompiledPolicy& policy, RuleId rule) {
  if (rule == kRuleDefaultDeny) return Verdict::Audit;
  for (const auto& r : policy.denies) {
    if (r.id == rule) return Verdict::Audit;
  }
  return Verdict::Allow;
}

bool enable_conntrack_accounting(bool timestamps, std::string* error) {
  if (!write_sysctl("/proc/sys/net/netfilter/nf_conntrack_acct", error)) return false;
  return !timestamps || write_sysctl("/proc/sys/net/netfilter/nf_conntrack_timestamp", error);
}

std::optional<ConntrackEventSource> ConntrackEventSource::open(Config config, std::string* error) {
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == nullptr) {
    set_error(error, std::string("conntrack events: socket: ") + std::strerror(errno));
    return std::nullopt;
  }
  ConntrackEventSource source(nl, std::move(config));
  const Config& c = source.config_;
  unsigned groups = 0;
  if (c.new_events) groups |= group_bit(NFNLGRP_CONNTRACK_NEW);
  if (c.destroy_events) groups |= group_bit(NFNLGRP_CONNTRACK_DESTROY);
  if (mnl_socket_bind(nl, groups, MNL_SOCKET_AUTOPID) < 0) {
    set_error(error, std::string("conntrack events: bind: ") + std::strerror(errno));
    return std::nullopt;
  }
  const int fd = mnl_socket_get_fd(nl);
  if (c.receive_buffer > 0) {
    const int bytes = c.receive_buffer;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  if (c.reliable_destroy) {
    int on = 1;
    if (mnl_socket_setsockopt(nl, NETLINK_BROADCAST_ERROR, &on, sizeof on) < 0) {
      set_error(error,
                std::string("conntrack events: NETLINK_BROADCAST_ERROR: ") + std::strerror(errno));
      return std::nullopt;
    }
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    set_error(error, std::string("conntrack events: O_NONBLOCK: ") + std::strerror(errno));
    return std::nullopt;
  }
  return source;
}

ConntrackEventSource::ConntrackEventSource(mnl_socket* socket, Config config)
    : socket_(socket), config_(std::move(config)), buffer_(kBuffer) {
  parsed_.reserve(256);
}

int ConntrackEventSource::fd() const { return mnl_socket_get_fd(socket_.get()); }

int ConntrackEventSource::receive_buffer() const {
  int value = 0;
  socklen_t len = sizeof value;
  getsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &value, &len);
  return value;
}

void ConntrackEventSource::set_classifier(std::function<Verdict(RuleId)> classify) {
  config_.classify = std::move(classify);
}

std::size_t ConntrackEventSource::drain(const Sink& sink) {
  std::size_t emitted = 0;
  const int socket_fd = fd();
  for (std::size_t reads = 0;
       config_.max_datagrams_per_drain == 0 || reads < config_.max_datagrams_per_drain; ++reads) {
    const ssize_t n = recv(socket_fd, buffer_.data(), buffer_.size(), MSG_DONTWAIT | MSG_TRUNC);
    const auto now = WallClock::now();
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        ++stats_.enobufs;
        RawFlowEvent e;
        e.kind = FlowEventKind::Loss;
        e.time = now;
        e.loss_source = LossSource::Conntrack;
        e.loss_reason = LossReason::Enobufs;
        e.loss_count = 0;
        e.lower_bound = true;
        sink(e);
        ++emitted;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) last_error_ = errno;
      break;
    }
    ++stats_.datagrams;
    const std::size_t len = std::min(static_cast<std::size_t>(n), buffer_.size());
    parsed_.clear();
    if (!parse_ct_datagram(std::span<const std::uint8_t>(buffer_.data(), len), parsed_))
      ++stats_.malformed;
    for (auto& m : parsed_) {
      ++stats_.messages;
      if (m.malformed) {
        ++stats_.malformed;
        continue;
      }
      if ((m.mark & 0xffffU) == 0) {
        ++stats_.unmarked;
        continue;
      }
      RawFlowEvent& e = m.event;
      if (!e.kernel_time) e.time = now;
      e.verdict = config_.classify ? config_.classify(e.rule) : Verdict::Allow;
      ++(m.destroy ? stats_.ends : stats_.starts);
      sink(e);
      ++emitted;
    }
    parsed_.clear();
  }
  return emitted;
}

}  // namespace tierwall::dataplane::nft
