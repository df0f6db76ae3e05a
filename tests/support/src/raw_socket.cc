#include "tierwall/testsupport/raw_socket.h"

#include <algorithm>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace tierwall::testsupport {

RawSocket::RawSocket(const NetNs& ns, const std::string& ifname) {
  fd_ = in_netns(ns, [&] {
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) throw std::runtime_error("AF_PACKET socket in " + ns.describe());
    const int buffer = 8 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    sockaddr_ll a{};
    a.sll_family = AF_PACKET;
    a.sll_protocol = htons(ETH_P_ALL);
    a.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
    if (a.sll_ifindex == 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      throw std::runtime_error("AF_PACKET bind " + ifname + " in " + ns.describe());
    }
    ifindex_ = a.sll_ifindex;
    return fd;
  });
}

RawSocket::~RawSocket() {
  if (fd_ >= 0) ::close(fd_);
}

void RawSocket::send(const Frame& frame) const {
  if (frame.size() < 14) throw std::runtime_error("AF_PACKET send: a frame needs 14 bytes");
  sockaddr_ll a{};
  a.sll_family = AF_PACKET;
  a.sll_ifindex = ifindex_;
  a.sll_halen = 6;
  std::copy_n(frame.begin(), 6, a.sll_addr);
  if (::sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a) !=
      static_cast<ssize_t>(frame.size())) {
    throw std::runtime_error("AF_PACKET sendto");
  }
}

std::vector<RawSocket::Frame> RawSocket::drain() const {
  std::vector<Frame> out;
  Frame buf(4096);
  for (;;) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) break;
    sockaddr_ll from{};
    socklen_t len = sizeof from;
    const ssize_t n = ::recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &len);
    if (n <= 0) break;
    if (from.sll_pkttype == PACKET_OUTGOING) continue;
    out.emplace_back(buf.begin(), buf.begin() + n);
  }
  return out;
}

}  // namespace tierwall::testsupport
