// The nftables dataplane: a Dataplane that programs the kernel of the
// calling thread's network namespace through libnftnl/libmnl batches.
//
// Thread contract: one control thread drives an NftBackend; it is not
// thread-safe. It owns one netlink socket.
#pragma once

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
    Options plan;
    // Addresses local to this namespace. Conntrack entries are judged like
    // the kernel judges them: a local destination is the host (input), a
    // local source is the host (output), anything else is forwarded.
    std::vector<IpAddress> local_addresses;
    // Delete conntrack entries that a new state denies (cut connections).
    bool cut_connections = true;
  };

  static std::variant<std::unique_ptr<NftBackend>, std::string> open(Config config);

  std::optional<DataplaneError> apply(const RuleSet& rules) override;
  std::optional<DataplaneError> update_endpoints(std::span<const EndpointChange> changes) override;
  std::optional<DataplaneError> flush() override;

  // Connections cut by the last apply/update.
  [[nodiscard]] std::size_t last_cut() const { return last_cut_; }
  // Packets/bytes per policy rule id, from the named counters.
  std::map<RuleId, std::pair<std::uint64_t, std::uint64_t>> rule_counters();
  std::optional<KernelCounts> kernel_counts();
  [[nodiscard]] const std::string& table() const { return config_.plan.table; }
  NftSocket& socket() { return socket_; }

 private:
  NftBackend(NftSocket socket, Config config);

  static DataplaneError error_of(const ApplyError& e);
  // Deletes the conntrack entries of `addresses` (all entries when empty)
  // that the current state denies.
  void cut(const std::vector<IpAddress>& addresses);

  NftSocket socket_;
  Config config_;
  std::shared_ptr<const CompiledPolicy> policy_;
  EndpointTable live_;  // the endpoint state the kernel holds now
  std::unordered_map<EndpointId, std::vector<Element>> installed_;
  std::size_t last_cut_ = 0;
};

}  // namespace tierwall::dataplane::nft
