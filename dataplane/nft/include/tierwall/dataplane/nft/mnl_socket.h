// An owned libmnl socket: closed when the owner goes, movable, not copyable.
#pragma once

#include <memory>

struct mnl_socket;

namespace tierwall::dataplane::nft {

struct MnlSocketCloser {
  void operator()(mnl_socket* socket) const noexcept;
};
using MnlSocketPtr = std::unique_ptr<mnl_socket, MnlSocketCloser>;

}  // namespace tierwall::dataplane::nft
