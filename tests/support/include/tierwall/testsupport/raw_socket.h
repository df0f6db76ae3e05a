// An AF_PACKET socket on one interface of a test namespace: captures the
// frames the interface receives and injects frames onto it, for tests that
// check or forge what crosses a link (VXLAN-GBP uplinks, ...).
//
// The socket is opened inside the namespace (in_netns) and works from any
// thread afterwards. Errors throw std::runtime_error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {

class RawSocket {
 public:
  using Frame = std::vector<std::uint8_t>;

  // Binds to `ifname` in `ns` (all protocols, 8 MB receive buffer).
  RawSocket(const NetNs& ns, const std::string& ifname);
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  // Sends one Ethernet frame (destination MAC first) out of the interface.
  void send(const Frame& frame) const;
  // Every frame received since the last call (frames this host sent on the
  // interface are skipped); returns once nothing arrived for 50 ms.
  [[nodiscard]] std::vector<Frame> drain() const;

 private:
  int fd_ = -1;
  int ifindex_ = 0;
};

}  // namespace tierwall::testsupport
