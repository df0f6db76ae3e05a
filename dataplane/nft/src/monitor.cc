#include "tierwall/dataplane/nft/monitor.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <utility>
#include <vector>

#include <libmnl/libmnl.h>

namespace tierwall::dataplane::nft {
namespace {

const char* event_name(std::uint16_t msg) {
  switch (msg) {
    case NFT_MSG_NEWTABLE:
      return "add table";
    case NFT_MSG_DELTABLE:
      return "delete table";
    case NFT_MSG_NEWCHAIN:
      return "add chain";
    case NFT_MSG_DELCHAIN:
      return "delete chain";
    case NFT_MSG_NEWRULE:
      return "add rule";
    case NFT_MSG_DELRULE:
      return "delete rule";
    case NFT_MSG_NEWSET:
      return "add set";
    case NFT_MSG_DELSET:
      return "delete set";
    case NFT_MSG_NEWSETELEM:
      return "add element";
    case NFT_MSG_DELSETELEM:
      return "delete element";
    case NFT_MSG_NEWOBJ:
      return "add object";
    case NFT_MSG_DELOBJ:
      return "delete object";
    case NFT_MSG_NEWFLOWTABLE:
      return "add flowtable";
    case NFT_MSG_DELFLOWTABLE:
      return "delete flowtable";
    default:
      return nullptr;
  }
}

// Attribute 1 of every message above names the table (NFTA_TABLE_NAME,
// NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
// NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
static_assert(NFTA_TABLE_NAME == 1 && NFTA_CHAIN_TABLE == 1 && NFTA_RULE_TABLE == 1 &&
              NFTA_SET_TABLE == 1 && NFTA_SET_ELEM_LIST_TABLE == 1 && NFTA_OBJ_TABLE == 1 &&
              NFTA_FLOWTABLE_TABLE == 1);

struct Attrs {
  const nlattr* at[8] = {};
};

int collect(const nlattr* attr, void* data) {
  auto* a = static_cast<Attrs*>(data);
  const auto type = mnl_attr_get_type(attr);
  if (type < 8) a->at[type] = attr;
  return MNL_CB_OK;
}

std::optional<std::string> attr_string(const nlattr* a) {
  if (a == nullptr) return std::nullopt;
  const auto len = mnl_attr_get_payload_len(a);
  const char* p = static_cast<const char*>(mnl_attr_get_payload(a));
  return std::string(p, strnlen(p, len));
}

std::optional<std::uint32_t> attr_u32(const nlattr* a) {
  if (a == nullptr || mnl_attr_get_payload_len(a) < sizeof(std::uint32_t)) return std::nullopt;
  return ntohl(mnl_attr_get_u32(a));
}

}  // namespace

std::string ChangeReport::describe() const {
  std::string s;
  for (const auto& [what, n] : events) {
    if (!s.empty()) s += ", ";
    if (n > 1) s += std::to_string(n) + "x ";
    s += what;
  }
  if (overrun) s += std::string(s.empty() ? "" : ", ") + "notifications lost (ENOBUFS)";
  return s;
}

std::optional<ChangeMonitor> ChangeMonitor::open(std::string table, std::uint32_t own_portid,
                                                 std::string* error) {
  mnl_socket* nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (nl == nullptr) {
    if (error != nullptr) *error = std::string("netlink socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  if (mnl_socket_bind(nl, 1U << (NFNLGRP_NFTABLES - 1), MNL_SOCKET_AUTOPID) < 0) {
    if (error != nullptr)
      *error = std::string("netlink bind (NFNLGRP_NFTABLES): ") + std::strerror(errno);
    mnl_socket_close(nl);
    return std::nullopt;
  }
  // A full apply announces every element it adds: room for large tables.
  const int fd = mnl_socket_get_fd(nl);
  const int want = 16 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  }
  return ChangeMonitor(nl, std::move(table), own_portid);
}

ChangeMonitor::ChangeMonitor(mnl_socket* socket, std::string table, std::uint32_t own_portid)
    : socket_(socket), table_(std::move(table)), own_portid_(own_portid) {}

int ChangeMonitor::fd() const { return mnl_socket_get_fd(socket_.get()); }

ChangeReport ChangeMonitor::drain() {
  ChangeReport report;
  std::vector<char> buf(256 * 1024);
  for (;;) {
    const ssize_t n = ::recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        report.overrun = true;
        continue;
      }
      break;  // EAGAIN: empty
    }
    if (n == 0) break;
    int len = static_cast<int>(n);
    for (const nlmsghdr* nlh = static_cast<const nlmsghdr*>(static_cast<const void*>(buf.data()));
         mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
      if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) continue;
      if (nlh->nlmsg_pid == own_portid_ && own_portid_ != 0) continue;
      const auto msg = static_cast<std::uint16_t>(NFNL_MSG_TYPE(nlh->nlmsg_type));
      if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) continue;
      Attrs attrs;
      if (mnl_attr_parse(nlh, sizeof(nfgenmsg), collect, &attrs) < 0) continue;
      if (msg == NFT_MSG_NEWGEN) {
        if (report.changed && nlh->nlmsg_pid == report.portid) {
          report.complete = true;
          report.genid = attr_u32(attrs.at[NFTA_GEN_ID]);
          report.pid = attr_u32(attrs.at[NFTA_GEN_PROC_PID]);
          report.process = attr_string(attrs.at[NFTA_GEN_PROC_NAME]).value_or("");
        }
        continue;
      }
      const char* what = event_name(msg);
      if (what == nullptr) continue;
      const auto* gen = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
      if (gen->nfgen_family != NFPROTO_INET) continue;
      if (attr_string(attrs.at[1]) != table_) continue;
      report.changed = true;
      report.complete = false;
      report.portid = nlh->nlmsg_pid;
      ++report.events[what];
    }
  }
  return report;
}

}  // namespace tierwall::dataplane::nft
