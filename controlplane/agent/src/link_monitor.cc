#include "tierwall/agent/link_monitor.h"

#include <cerrno>
#include <cstring>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <vector>

#include <libmnl/libmnl.h>

namespace tierwall::agent {

struct LinkMonitor::Impl {
  mnl_socket* nl = nullptr;
  ~Impl() {
    if (nl != nullptr) mnl_socket_close(nl);
  }
};

namespace {

int on_attribute(const nlattr* attr, void* data) {
  if (mnl_attr_get_type(attr) == IFLA_MASTER) *static_cast<bool*>(data) = true;
  return MNL_CB_OK;
}

// MNL_CB_OK; sets *attached when the message is a port joining a bridge.
int on_message(const nlmsghdr* nlh, void* data) {
  if (nlh->nlmsg_type != RTM_NEWLINK) return MNL_CB_OK;
  if (mnl_nlmsg_get_payload_len(nlh) < sizeof(ifinfomsg)) return MNL_CB_OK;
  mnl_attr_parse(nlh, sizeof(ifinfomsg), on_attribute, data);
  return MNL_CB_OK;
}

}  // namespace

LinkMonitor::LinkMonitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LinkMonitor::LinkMonitor(LinkMonitor&&) noexcept = default;
LinkMonitor& LinkMonitor::operator=(LinkMonitor&&) noexcept = default;
LinkMonitor::~LinkMonitor() = default;

std::optional<LinkMonitor> LinkMonitor::open(std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (impl->nl == nullptr || mnl_socket_bind(impl->nl, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) {
    if (error) *error = std::string("rtnetlink: ") + std::strerror(errno);
    return std::nullopt;
  }
  return LinkMonitor(std::move(impl));
}

int LinkMonitor::fd() const { return mnl_socket_get_fd(impl_->nl); }

bool LinkMonitor::drain() {
  bool attached = false;
  std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(impl_->nl, buf.data(), buf.size());
    if (n < 0) {
      if (errno == ENOBUFS) {
        attached = true;  // lost notifications: assume the worst
        continue;
      }
      break;  // EAGAIN: all read
    }
    mnl_cb_run(buf.data(), static_cast<std::size_t>(n), 0, 0, on_message, &attached);
  }
  return attached;
}

}  // namespace tierwall::agent
