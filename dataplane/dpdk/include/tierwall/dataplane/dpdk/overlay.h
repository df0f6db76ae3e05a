// The VXLAN-GBP overlay of the DPDK dataplane: what a Bridge port declared
// an overlay uplink does with the frames it receives and sends. Pure C++ on
// byte spans and parsed packets (no DPDK), so that every decision is tested
// without an EAL; the Bridge (bridge.h) only calls it. docs/dpdk.md,
// "Overlay", has the trust model and the counters.
//
//  * Peer table: the trusted peer VTEPs (outer IP + MAC, no ARP), fixed at
//    construction, found by outer source address through a small hash.
//  * Ingress (check_ingress): only VXLAN to our UDP port, outer destination
//    = our MAC and VTEP address, outer source = a trusted peer, our VNI, is
//    accepted; anything else is refused with a reason the caller counts.
//  * Learning: inner source MAC -> the peer VTEP it came from (unless the
//    GBP D bit says not to), open addressing with ageing like the Bridge's.
//  * Tags: group id = TierId + 1 of the RuleSet (0 = untagged); quarantine
//    (TierId 0) is group 1. A received group id becomes FlowPacket::src_tag;
//    the flow table checks it on a connection's first packet
//    (Generation::check_tag, on the address lookup it makes anyway);
//    check_source() is the same rule for one packet. egress_group() is the
//    group id a sent frame carries.
//  * Egress: encap_params() are the VXLAN-GBP headers for one peer.
//
// Thread contract: construction on the control thread; then one forwarding
// thread at a time (learn() mutates the learning table). The const
// functions are pure and may run on any thread.
// Costs: check_ingress() is one hash probe over the peers plus a few byte
// compares; learn()/lookup() probe at most 16 slots; check_source() and
// egress_group() are one Generation::resolve() (the Bridge's receive path
// leaves the check to the flow table, which makes that lookup anyway).
// No allocation, lock, log or
// system call after construction.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/mac_table.h"
#include "tierwall/dataplane/dpdk/parser.h"
#include "tierwall/dataplane/ruleset.h"

namespace tierwall::dataplane::dpdk {

using MacAddress = std::array<std::uint8_t, 6>;

// "aa:bb:cc:dd:ee:ff" -> MAC; false on a malformed string.
bool parse_mac(std::string_view text, MacAddress& out);

// A trusted remote VTEP: its outer address and the MAC frames to it are
// sent to (the next hop on the underlay; no ARP is done).
struct OverlayPeer {
  IpAddress vtep;
  MacAddress mac{};
};

struct OverlayConfig {
  IpAddress local_vtep;    // outer source of what we send, destination we accept
  MacAddress local_mac{};  // the uplink port's MAC: outer source / destination
  std::uint32_t vni = 0;   // 24 bits
  std::uint16_t udp_port = kVxlanPort;
  std::vector<OverlayPeer> peers;   // same family as local_vtep, distinct
  std::size_t mac_capacity = 4096;  // learning-table slots (rounded up to 2^k)
  std::uint64_t mac_ageing_ns = 300ULL * 1'000'000'000ULL;
  std::uint8_t ttl = 64;
};

// Why a frame received on an uplink was refused (dropped and counted).
enum class OverlayRefusal : std::uint8_t {
  NotVxlan,          // not VXLAN to our UDP port (ARP, other IP traffic...)
  WrongDestination,  // outer destination MAC or IP is not ours
  UntrustedPeer,     // outer source is not a configured peer VTEP
  WrongVni,          // another VXLAN network
  UnknownTag,        // GBP group id naming no tier of the current generation
  Spoofed,           // tagged, but the inner source is a known endpoint of
                     // another tier (or this node's own address)
};
inline constexpr std::size_t kOverlayRefusalCount = 6;
std::string_view to_string(OverlayRefusal reason);

// Tier <-> GBP group id. Group ids are TierId + 1 so that 0 stays
// "untagged"; they name the same tier on every node that runs the same
// policy (TierIds number the policy's tiers in source order, quarantine 0).
constexpr std::uint16_t group_of_tier(TierId tier) { return static_cast<std::uint16_t>(tier + 1U); }
// The TierId a nonzero group id names (group - 1); check it against the
// generation's tier_count().
constexpr TierId tier_of_group(std::uint16_t group) { return static_cast<TierId>(group - 1U); }

// How the inner source of an accepted frame is decided.
struct SourceCheck {
  enum class Kind : std::uint8_t {
    ByAddress,  // untagged, or tagged by the known endpoint's own tier
    ByTag,      // tagged, source unknown here: decide as tagged_peer(tier)
    Refused,    // `refusal` says why (UnknownTag, Spoofed)
  };
  Kind kind = Kind::ByAddress;
  std::uint16_t src_tag = 0;  // ByTag: FlowPacket::src_tag (the group id)
  OverlayRefusal refusal = OverlayRefusal::Spoofed;
};

// How the inner packet `inner` (status Ok) of a frame check_ingress()
// accepted is decided under generation `g`, the rule the flow table applies
// to a new connection with FlowPacket::src_tag = the group id (for tests and
// tools; the Bridge leaves it to the flow table, which resolves the source
// address anyway):
//  * no G bit, or group id 0: ByAddress (decided like local traffic);
//  * a group id naming no tier of `g`: Refused(UnknownTag);
//  * source = this node's address: Refused(Spoofed);
//  * source = a known endpoint: ByAddress when its tier is the tag, else
//    Refused(Spoofed);
//  * otherwise (a remote endpoint not known here): ByTag.
SourceCheck check_source(const Generation& g, const PacketInfo& inner);

// The group id a frame from `src` carries to the overlay under `g`: the
// endpoint's tier + 1, quarantine (1) for an unknown address in a container
// network; 0 (untagged) for the host and world addresses.
std::uint16_t egress_group(const Generation& g, const IpAddress& src);

struct OverlayIngress {
  bool accepted = false;
  OverlayRefusal refusal = OverlayRefusal::NotVxlan;  // when !accepted
  std::uint16_t peer = 0;                             // when accepted
};

class Overlay {
 public:
  static constexpr std::size_t kMaxPeers = 255;
  static constexpr int kNoPeer = -1;

  // Validates `config` (families, VNI, peers distinct and not ourselves,
  // 1..kMaxPeers peers); null with `error` set when invalid.
  static std::unique_ptr<Overlay> create(const OverlayConfig& config, std::string& error);
  ~Overlay();
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  [[nodiscard]] const OverlayConfig& config() const { return config_; }
  [[nodiscard]] std::size_t peer_count() const { return config_.peers.size(); }
  // The parse options of the uplink: decapsulate at our UDP port.
  [[nodiscard]] ParseOptions parse_options(ParseOptions base) const {
    base.vxlan_port = config_.udp_port;
    return base;
  }
  // Index of the peer whose VTEP address is `vtep`, or kNoPeer.
  [[nodiscard]] int find_peer(const IpAddress& vtep) const;

  // The verdict on `frame`, received on the uplink and parsed into `info`
  // (with parse_options(); not malformed). Reads the outer destination
  // MAC and address from `frame`.
  [[nodiscard]] OverlayIngress check_ingress(std::span<const std::uint8_t> frame,
                                             const PacketInfo& info) const;

  // Learning: inner source MAC `mac` was seen behind `peer` at `now_ns`.
  // Returns false when the table has no room (the MAC is then flooded to).
  bool learn(const std::uint8_t* mac, std::uint16_t peer, std::uint64_t now_ns);
  // The peer a MAC was learned behind, or kNoPeer (unknown or aged out).
  [[nodiscard]] int lookup(const std::uint8_t* mac, std::uint64_t now_ns) const;

  // Encapsulation parameters towards `peer`: outer MACs and addresses from
  // the configuration, our VNI and UDP port, `group` (0: no G bit, plain
  // VXLAN), A bit set (the sender enforced the policy), D bit clear.
  [[nodiscard]] VxlanGbpParams encap_params(std::uint16_t peer, std::uint16_t group,
                                            std::uint16_t src_port) const;

 private:
  explicit Overlay(OverlayConfig config);
  OverlayConfig config_;
  std::vector<std::int16_t> peer_index_;  // open addressing over peer VTEPs
  std::size_t peer_mask_ = 0;
  MacTable<std::uint16_t> macs_;  // the peer behind a MAC
};

}  // namespace tierwall::dataplane::dpdk
