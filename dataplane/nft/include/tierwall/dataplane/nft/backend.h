// The nftables dataplane: a Dataplane that programs the kernel of the
// calling thread's network namespace through libnftnl/libmnl batches.
//
// Thread contract: one control thread drives an NftBackend; it is not
// thread-safe. It owns one netlink socket.
// Costs: apply() is one batch with the whole table (linear in rules and
// endpoint addresses); update_endpoints() one batch of the changed
// endpoints' elements (tier sets, selector sets and, with an overlay, the
// tag map); both may dump conntrack to cut connections.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "tierwall/dataplane/dataplane.h"
#include "tierwall/dataplane/nft/conntrack.h"
#include "tierwall/dataplane/nft/netlink.h"
#include "tierwall/dataplane/nft/plan.h"

namespace tierwall::dataplane::nft {

class NftBackend final : public Dataplane {
 public:
  struct Config {
    // The table, log group, priority and the overlay (plan.overlay: vxlan-gbp
    // devices and trusted peers; empty: no overlay, the plain ruleset).
    Options plan;
    // Addresses local to this namespace. Conntrack entries are judged like
    // the kernel judges them: a local destination is the host (input), a
    // local source is the host (output), anything else is forwarded.
    std::vector<IpAddress> local_addresses;
    // Delete conntrack entries that a new state denies (cut connections).
    bool cut_connections = true;
    // Test seam: runs between reading the ruleset generation id and
    // committing a batch (to put a foreign commit exactly there).
    std::function<void()> before_commit;
  };

  static std::variant<std::unique_ptr<NftBackend>, std::string> open(Config config);

  std::optional<DataplaneError> apply(const RuleSet& rules) override;
  std::optional<DataplaneError> update_endpoints(std::span<const EndpointChange> changes) override;
  std::optional<DataplaneError> flush() override;

  // Connections cut by the last apply/update.
  [[nodiscard]] std::size_t last_cut() const { return last_cut_; }
  // Packets/bytes per policy rule id, from the named counters, plus what
  // they held before the table was last re-created for the same generation
  // (so they never go backwards while the generation lasts).
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> rule_counters();
  std::optional<KernelCounts> kernel_counts();
  // Packets dropped by the overlay's trust checks, by counter name:
  // ovl_untrusted (VXLAN from a non-peer), ovl_spoof (a known address with
  // another tier's tag), ovl_badtag (a tag naming no tier). Empty without
  // an overlay. One netlink dump.
  std::map<std::string, std::uint64_t> overlay_counters();
  [[nodiscard]] const std::string& table() const { return config_.plan.table; }
  NftSocket& socket() { return socket_; }

 private:
  NftBackend(NftSocket socket, Config config);

  // A commit that lost a race with another nftables writer (ERESTART) is
  // sent again, with a fresh generation id, up to this many times in all.
  static constexpr int kConcurrentRetries = 5;

  static DataplaneError error_of(const ApplyError& e);
  template <typename Attempt>
  std::optional<ApplyError> with_retries(Attempt&& attempt);
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> kernel_rule_counters();
  // Deletes the conntrack entries of `addresses` (all entries when empty)
  // that the current state denies.
  void cut(const std::vector<IpAddress>& addresses);

  NftSocket socket_;
  Config config_;
  std::shared_ptr<const CompiledPolicy> policy_;
  EndpointTable live_;  // the endpoint state the kernel holds now
  std::unordered_map<EndpointId, std::vector<Element>> installed_;
  std::size_t last_cut_ = 0;
  // Counters of carried_policy_'s rules from tables since replaced.
  std::shared_ptr<const CompiledPolicy> carried_policy_;
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> carried_;
};

}  // namespace tierwall::dataplane::nft
