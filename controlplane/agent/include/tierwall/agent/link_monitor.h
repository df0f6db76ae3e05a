// Early warning of new containers: a rtnetlink listener (RTNLGRP_LINK) in
// the agent's network namespace that reports when a network port joins a
// bridge (a container's veth being attached by the runtime's network
// backend). The agent answers with RuntimeSource::rescan(), so a container
// is identified from the runtime's listing before its (possibly late)
// start event arrives.
//
// Only a hint: nothing is decided from links, and a missed hint costs only
// latency (the start event still comes). Lost notifications (ENOBUFS)
// count as a hint.
//
// Thread contract: one thread (the daemon's control thread) owns it.
#pragma once

#include <memory>
#include <optional>
#include <string>

namespace tierwall::agent {

class LinkMonitor {
 public:
  // nullopt with `error` set when the netlink socket cannot be opened.
  static std::optional<LinkMonitor> open(std::string* error);
  LinkMonitor(LinkMonitor&&) noexcept;
  LinkMonitor& operator=(LinkMonitor&&) noexcept;
  ~LinkMonitor();

  [[nodiscard]] int fd() const;
  // Reads every pending notification (non-blocking). True when one of them
  // shows a port attached to a bridge (RTM_NEWLINK with IFLA_MASTER), or
  // notifications were lost.
  bool drain();

 private:
  struct Impl;
  explicit LinkMonitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierwall::agent
