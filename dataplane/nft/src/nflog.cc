// See nflog.h. The socket is libmnl's; messages are parsed by
// parse_nflog_datagram() (flow_events.cc).
#include "tierwall/dataplane/nft/nflog.h"

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <poll.h>
#include <span>
#include <sys/socket.h>
#include <utility>

#include <libmnl/libmnl.h>

namespace tierwall::dataplane::nft {

namespace {

constexpr std::size_t kMinBuffer = 256 * 1024;  // > the largest batch the kernel sends
constexpr int kAckTimeoutMs = 5000;

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

// Sets the receive buffer, forcing past net.core.rmem_max when allowed.
void set_receive_buffer(int fd, int bytes) {
  if (bytes <= 0) return;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
}

// The errno of the NLMSG_ERROR answering `seq` in a datagram: 0 for an ACK,
// -1 when the datagram holds no answer to it.
int ack_of(std::span<const std::uint8_t> datagram, std::uint32_t seq) {
  std::size_t off = 0;
  while (datagram.size() - off >= sizeof(nlmsghdr)) {
    nlmsghdr h{};
    std::memcpy(&h, datagram.data() + off, sizeof h);
    if (h.nlmsg_len < sizeof h || h.nlmsg_len > datagram.size() - off) return -1;
    if (h.nlmsg_type == NLMSG_ERROR && h.nlmsg_seq == seq &&
        h.nlmsg_len >= sizeof h + sizeof(int)) {
      int err = 0;
      std::memcpy(&err, datagram.data() + off + sizeof h, sizeof err);
      return err < 0 ? -err : err;
    }
    off += std::min<std::size_t>(NLMSG_ALIGN(h.nlmsg_len), datagram.size() - off);
  }
  return -1;
}

}  // namespace

std::optional<NflogSource> NflogSource::open(const Config& config, std::string* error) {
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == nullptr) {
    set_error(error, std::string("nflog: socket: ") + std::strerror(errno));
    return std::nullopt;
  }
  NflogSource source(nl, config);
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    set_error(error, std::string("nflog: bind: ") + std::strerror(errno));
    return std::nullopt;
  }
  const int fd = mnl_socket_get_fd(nl);
  set_receive_buffer(fd, config.receive_buffer);

  // One config message: bind the group, then mode, batching and flags apply
  // to the instance the same message created.
  std::array<char, 256> msg{};
  nlmsghdr* nlh = mnl_nlmsg_put_header(msg.data());
  nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = 1;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = AF_UNSPEC;
  nfg->version = NFNETLINK_V0;
  nfg->res_id = htons(config.group);
  const nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
  mnl_attr_put(nlh, NFULA_CFG_CMD, sizeof cmd, &cmd);
  nfulnl_msg_config_mode mode{};
  mode.copy_range = htonl(config.copy_range);
  mode.copy_mode = NFULNL_COPY_PACKET;
  mnl_attr_put(nlh, NFULA_CFG_MODE, sizeof mode, &mode);
  mnl_attr_put_u32(nlh, NFULA_CFG_NLBUFSIZ, htonl(config.batch_bytes));
  mnl_attr_put_u32(nlh, NFULA_CFG_TIMEOUT, htonl(config.flush_timeout_cs));
  mnl_attr_put_u32(nlh, NFULA_CFG_QTHRESH, htonl(config.queue_threshold));
  mnl_attr_put_u16(nlh, NFULA_CFG_FLAGS, htons(NFULNL_CFG_F_SEQ));
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
    set_error(error, std::string("nflog: send config: ") + std::strerror(errno));
    return std::nullopt;
  }
  // Wait for the ACK. Packet datagrams that overtake it (the instance logs
  // from the moment it exists) are kept for the first drain().
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, kAckTimeoutMs) <= 0) {
      set_error(error, "nflog: no answer to the config message");
      return std::nullopt;
    }
    const ssize_t n = recv(fd, source.buffer_.data(), source.buffer_.size(), 0);
    if (n < 0) {
      if (errno == EINTR || errno == ENOBUFS) continue;
      set_error(error, std::string("nflog: recv: ") + std::strerror(errno));
      return std::nullopt;
    }
    const std::span<const std::uint8_t> got(source.buffer_.data(), static_cast<std::size_t>(n));
    const int err = ack_of(got, nlh->nlmsg_seq);
    if (err > 0) {
      set_error(error,
                "nflog: bind group " + std::to_string(config.group) + ": " + std::strerror(err));
      return std::nullopt;
    }
    if (err == 0) break;
    parse_nflog_datagram(got, source.parsed_);
  }
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    set_error(error, std::string("nflog: O_NONBLOCK: ") + std::strerror(errno));
    return std::nullopt;
  }
  return source;
}

NflogSource::NflogSource(mnl_socket* socket, const Config& config)
    : socket_(socket),
      config_(config),
      buffer_(std::max<std::size_t>(kMinBuffer, config.batch_bytes * 2U)) {
  parsed_.reserve(1024);
}

int NflogSource::fd() const { return mnl_socket_get_fd(socket_.get()); }

int NflogSource::receive_buffer() const {
  int value = 0;
  socklen_t len = sizeof value;
  getsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &value, &len);
  return value;
}

void NflogSource::emit_loss(LossReason reason, std::uint64_t count, bool lower_bound,
                            WallClock::time_point now, const Sink& sink) {
  RawFlowEvent e;
  e.kind = FlowEventKind::Loss;
  e.time = now;
  e.loss_source = LossSource::Nflog;
  e.loss_reason = reason;
  e.loss_count = count;
  e.lower_bound = lower_bound;
  stats_.lost += count;
  ++stats_.loss_events;
  sink(e);
}

void NflogSource::account(const NflogMessage& m, WallClock::time_point now, const Sink& sink) {
  ++stats_.messages;
  if (m.has_seq) {
    const std::uint32_t gap = m.seq - expected_seq_;  // modulo 2^32
    if (gap >= 0x80000000U) {
      ++stats_.reordered;  // older than one already seen: no loss, keep the mark
    } else {
      if (gap > 0) {
        // The ENOBUFS that announced a drop is read before the older
        // datagrams still queued, so it names the first gap after it.
        emit_loss(enobufs_pending_ ? LossReason::Enobufs : LossReason::SequenceGap, gap, false, now,
                  sink);
        enobufs_pending_ = false;
      }
      expected_seq_ = m.seq + 1;
    }
  }
  if (m.malformed) ++stats_.malformed;
  if (!m.ours) {
    ++stats_.foreign;
    return;
  }
  ++stats_.events;
  if (m.event.kernel_time) {
    sink(m.event);
  } else {
    RawFlowEvent e = m.event;
    e.time = now;
    sink(e);
  }
}

std::size_t NflogSource::drain(const Sink& sink) {
  const std::uint64_t before = stats_.events + stats_.loss_events;
  // Datagrams that overtook the config ACK in open().
  if (!parsed_.empty()) {
    const auto now = WallClock::now();
    for (const auto& m : parsed_) account(m, now, sink);
    parsed_.clear();
  }
  const int socket_fd = fd();
  for (std::size_t reads = 0;
       config_.max_datagrams_per_drain == 0 || reads < config_.max_datagrams_per_drain; ++reads) {
    const ssize_t n = recv(socket_fd, buffer_.data(), buffer_.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        ++stats_.enobufs;
        enobufs_pending_ = true;
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) last_error_ = errno;
      break;
    }
    ++stats_.datagrams;
    std::size_t len = static_cast<std::size_t>(n);
    if (len > buffer_.size()) {
      ++stats_.truncated;  // the cut-off messages show up as a sequence gap
      len = buffer_.size();
    }
    const auto now = WallClock::now();
    parsed_.clear();
    if (!parse_nflog_datagram(std::span<const std::uint8_t>(buffer_.data(), len), parsed_))
      ++stats_.malformed;
    for (const auto& m : parsed_) account(m, now, sink);
    parsed_.clear();
  }
  return static_cast<std::size_t>(stats_.events + stats_.loss_events - before);
}

void NflogSource::finish(const Sink& sink) {
  if (!enobufs_pending_) return;
  enobufs_pending_ = false;
  emit_loss(LossReason::Enobufs, 0, true, WallClock::now(), sink);
}

}  // namespace tierwall::dataplane::nft
