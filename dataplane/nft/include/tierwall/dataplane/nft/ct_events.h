// ConntrackEventSource: accepted connections, from ctnetlink events
// (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY):
//   NEW     -> Start{verdict, rule = ct mark & 0xffff}
//   DESTROY -> End{packets/bytes per direction, conntrack id, start/stop}
// Only connections tierwall accepted are reported: every accepting rule sets
// the low 16 bits of the ct mark to its rule id (plan.h), so a mark whose
// low 16 bits are 0 is somebody else's connection (or one accepted before
// tierwall's table existed) and is skipped.
//
// Allow or audit? The mark holds the deciding rule id, not the verdict. An
// audit-passed connection is accepted by a deny rule (its audited variant,
// a staged deny, or default-deny), an allowed one by a flow or intraTier,
// so the policy tells them apart: Config::classify maps a rule id to the
// verdict (verdict_for_rule() with the current CompiledPolicy is that map);
// without it every event says Allow and the consumer decides from `rule`.
// The generation of a conntrack event is 0 (unknown): there is no room for
// it in the mark; the consumer may stamp the current one (a NEW event is
// sent when the first packet leaves the hook, so it races only with an apply
// in that instant). Audited and `log: true` connections are also reported by
// NFLOG (with the generation): a consumer that wants one Start per
// connection keeps the NFLOG one for those rules.
//
// Kernel settings, per network namespace, needed BEFORE the connections are
// created (the kernel attaches the extensions at creation):
//   net.netfilter.nf_conntrack_acct=1       packets/bytes in DESTROY
//   net.netfilter.nf_conntrack_timestamp=1  start/stop times (else receive
//                                           time stands in)
// enable_conntrack_accounting() sets both. nf_conntrack_events (default 2)
// only gives events to connections created while some socket listens, so
// open the source before traffic starts.
//
// Loss: conntrack events carry no sequence numbers. ENOBUFS on recv becomes
// Loss{Conntrack, Enobufs, count 0, lower_bound = true}: at least one
// event was lost, how many is unknowable. With reliable_destroy the kernel
// keeps undelivered DESTROY events and retries them (NETLINK_BROADCAST_ERROR;
// costs conntrack memory under sustained overload), so only NEW events can
// then be lost. Note that DESTROY of a closed TCP connection arrives when
// conntrack reaps the entry (after TIME_WAIT, 120 s by default), not at FIN.
//
// Threads: not thread-safe; one thread polls fd() and calls drain(). The
// socket lives in the namespace of the thread that opened it and is its
// own: conntrack dumps and deletes (conntrack.h) use other sockets.
// Costs: one recv() per datagram into an owned buffer, O(bytes) parsing.
// Ownership: move-only; the destructor closes the socket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/dataplane/nft/flow_events.h"
#include "tierwall/dataplane/nft/mnl_socket.h"
#include "tierwall/dataplane/ruleset.h"

struct mnl_socket;

namespace tierwall::dataplane::nft {

// Audit when `rule` is a deny rule of `policy` or default-deny (an accepted
// connection decided by a deny was audited), Allow otherwise.
Verdict verdict_for_rule(const CompiledPolicy& policy, RuleId rule);

// Writes 1 to net.netfilter.nf_conntrack_acct (and nf_conntrack_timestamp
// when `timestamps`) of the calling thread's network namespace (/proc/sys/net
// resolves through the opening thread's namespace). Needs CAP_NET_ADMIN
// there. False (and *error) when a write fails.
bool enable_conntrack_accounting(bool timestamps = true, std::string* error = nullptr);

class ConntrackEventSource {
 public:
  struct Config {
    bool new_events = true;
    bool destroy_events = true;
    int receive_buffer = 64 << 20;            // SO_RCVBUFFORCE; the kernel doubles it
    bool reliable_destroy = false;            // NETLINK_BROADCAST_ERROR (see above)
    std::function<Verdict(RuleId)> classify;  // empty: Allow
    std::size_t max_datagrams_per_drain = 0;  // 0: until the socket is empty
  };

  struct Stats {
    std::uint64_t datagrams = 0;
    std::uint64_t messages = 0;   // NEW/DESTROY messages parsed
    std::uint64_t unmarked = 0;   // skipped: not accepted by tierwall
    std::uint64_t malformed = 0;  // skipped: no usable tuple
    std::uint64_t starts = 0;
    std::uint64_t ends = 0;
    std::uint64_t enobufs = 0;  // = Loss events emitted
  };

  using Sink = std::function<void(const RawFlowEvent&)>;

  static std::optional<ConntrackEventSource> open(Config config, std::string* error = nullptr);

  ConntrackEventSource(ConntrackEventSource&&) noexcept = default;
  ConntrackEventSource& operator=(ConntrackEventSource&&) noexcept = default;
  ConntrackEventSource(const ConntrackEventSource&) = delete;
  ConntrackEventSource& operator=(const ConntrackEventSource&) = delete;
  ~ConntrackEventSource() = default;

  [[nodiscard]] int fd() const;
  [[nodiscard]] int receive_buffer() const;
  // Replaces the classifier (e.g. when a new policy generation applies).
  void set_classifier(std::function<Verdict(RuleId)> classify);

  // Reads available datagrams without blocking; calls `sink` for every
  // Start, End and Loss event. Returns the number of events emitted.
  std::size_t drain(const Sink& sink);

  [[nodiscard]] const Stats& stats() const { return stats_; }
  [[nodiscard]] int last_error() const { return last_error_; }

 private:
  ConntrackEventSource(mnl_socket* socket, Config config);

  MnlSocketPtr socket_;
  Config config_;
  std::vector<std::uint8_t> buffer_;
  std::vector<CtEventMessage> parsed_;
  int last_error_ = 0;
  Stats stats_;
};

}  // namespace tierwall::dataplane::nft
