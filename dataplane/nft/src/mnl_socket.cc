#include "tierwall/dataplane/nft/mnl_socket.h"

#include <libmnl/libmnl.h>

namespace tierwall::dataplane::nft {

void MnlSocketCloser::operator()(mnl_socket* socket) const noexcept {
  if (socket != nullptr) mnl_socket_close(socket);
}

}  // namespace tierwall::dataplane::nft
