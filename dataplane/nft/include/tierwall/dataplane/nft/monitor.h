// Change notifications of nftables (netlink group NFNLGRP_NFTABLES): lets
// the agent notice when someone else changes its table (drift).
//
// Every commit is announced as one message per object it touched (table,
// chain, rule, set, elements, object), then one NFT_MSG_NEWGEN carrying the
// new generation id and the committing process. Messages caused by a
// commit of a given netlink socket carry that socket's port id in
// nlmsg_pid, so the agent's own commits (NftSocket::portid()) are told
// apart from everybody else's.
//
// Threads: not thread-safe; one control thread polls fd() and calls drain().
// The socket lives in the network namespace of the thread that opened it.
// Ownership: move-only; the destructor closes the socket.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "tierwall/dataplane/nft/mnl_socket.h"

struct mnl_socket;

namespace tierwall::dataplane::nft {

// What one drain() saw of changes by others to the watched table.
struct ChangeReport {
  // A message from another port id named table inet <table>.
  bool changed = false;
  // The last such change was followed by its commit's NEWGEN: the foreign
  // commit is complete (a later drain() would see nothing more of it).
  bool complete = false;
  // The socket overflowed (ENOBUFS): notifications were lost, anything may
  // have changed.
  bool overrun = false;
  // Foreign messages about the table: "delete rule" -> count, ...
  std::map<std::string, std::size_t> events;
  std::uint32_t portid = 0;            // nlmsg_pid of the last foreign change
  std::optional<std::uint32_t> pid;    // process that committed it (NEWGEN)
  std::string process;                 // its name (NEWGEN), when given
  std::optional<std::uint32_t> genid;  // generation its commit produced

  // "delete table, 3x delete rule"
  [[nodiscard]] std::string describe() const;
};

class ChangeMonitor {
 public:
  // Opens a NETLINK_NETFILTER socket subscribed to NFNLGRP_NFTABLES,
  // non-blocking, with a large receive buffer (SO_RCVBUFFORCE when
  // permitted). `own_portid`: messages carrying it are ignored.
  static std::optional<ChangeMonitor> open(std::string table, std::uint32_t own_portid,
                                           std::string* error = nullptr);

  ChangeMonitor(ChangeMonitor&&) noexcept = default;
  ChangeMonitor& operator=(ChangeMonitor&&) noexcept = default;
  ChangeMonitor(const ChangeMonitor&) = delete;
  ChangeMonitor& operator=(const ChangeMonitor&) = delete;
  ~ChangeMonitor() = default;

  // For poll(POLLIN).
  [[nodiscard]] int fd() const;

  // Reads every queued notification without blocking. Changes to other
  // tables or families, and our own, are skipped.
  ChangeReport drain();

 private:
  ChangeMonitor(mnl_socket* socket, std::string table, std::uint32_t own_portid);

  MnlSocketPtr socket_;
  std::string table_;
  std::uint32_t own_portid_ = 0;
};

}  // namespace tierwall::dataplane::nft
