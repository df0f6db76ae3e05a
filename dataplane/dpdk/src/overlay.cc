// See overlay.h. The peer table is a power-of-two open-addressing array of
// peer indexes (load <= 1/4) keyed by the VTEP address; the learning table
// is the Bridge's MacTable (mac_table.h).
#include "tierwall/dataplane/dpdk/overlay.h"

#include <cstring>
#include <utility>

namespace tierwall::dataplane::dpdk {
namespace {

constexpr std::size_t kEthHeader = 14;

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

std::uint64_t address_hash(const IpAddress& a) {
  std::uint64_t w[2];
  std::memcpy(w, a.bytes.data(), sizeof w);
  return mix(w[0] * 0x9E3779B97F4A7C15ULL ^ mix(w[1] + static_cast<std::uint64_t>(a.family)));
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool parse_mac(std::string_view text, MacAddress& out) {
  if (text.size() != 17) return false;
  MacAddress m{};
  for (std::size_t i = 0; i < 6; ++i) {
    const int hi = hex_digit(text[i * 3]);
    const int lo = hex_digit(text[i * 3 + 1]);
    if (hi < 0 || lo < 0) return false;
    if (i < 5 && text[i * 3 + 2] != ':') return false;
    m[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  out = m;
  return true;
}

std::string_view to_string(OverlayRefusal reason) {
  switch (reason) {
    case OverlayRefusal::NotVxlan:
      return "not_vxlan";
    case OverlayRefusal::WrongDestination:
      return "wrong_destination";
    case OverlayRefusal::UntrustedPeer:
      return "untrusted_peer";
    case OverlayRefusal::WrongVni:
      return "wrong_vni";
    case OverlayRefusal::UnknownTag:
      return "unknown_tag";
    case OverlayRefusal::Spoofed:
      return "spoofed";
  }
  return "unknown";
}

SourceCheck check_source(const Generation& g, const PacketInfo& inner) {
  SourceCheck out;
  if (!inner.has(kFlagGbp) || inner.group_id == 0) return out;  // ByAddress
  PeerClass decided;
  switch (g.check_tag(g.resolve(inner.src), inner.group_id, decided)) {
    case TagCheck::ByTag:
      out.kind = SourceCheck::Kind::ByTag;
      out.src_tag = inner.group_id;
      break;
    case TagCheck::UnknownTag:
      out.kind = SourceCheck::Kind::Refused;
      out.refusal = OverlayRefusal::UnknownTag;
      break;
    case TagCheck::Spoofed:
      out.kind = SourceCheck::Kind::Refused;
      out.refusal = OverlayRefusal::Spoofed;
      break;
    case TagCheck::None:
    case TagCheck::ByAddress:
      break;
  }
  return out;
}

std::uint16_t egress_group(const Generation& g, const IpAddress& src) {
  const PeerClass p = g.resolve(src);
  if (p.entity != PeerMatch::Entity::Endpoint) return 0;
  return group_of_tier(static_cast<TierId>(p.cls));
}

Overlay::Overlay(OverlayConfig config) : config_(std::move(config)) {}
Overlay::~Overlay() = default;

std::unique_ptr<Overlay> Overlay::create(const OverlayConfig& config, std::string& error) {
  if (config.vni > 0xffffffU) {
    error = "overlay: VNI above 24 bits";
    return nullptr;
  }
  if (config.udp_port == 0) {
    error = "overlay: UDP port 0";
    return nullptr;
  }
  if (config.peers.empty() || config.peers.size() > kMaxPeers) {
    error = "overlay: 1 to 255 peer VTEPs";
    return nullptr;
  }
  std::unique_ptr<Overlay> o(new Overlay(config));
  std::size_t cap = 16;
  while (cap < config.peers.size() * 4) cap <<= 1;
  o->peer_index_.assign(cap, -1);
  o->peer_mask_ = cap - 1;
  for (std::size_t i = 0; i < config.peers.size(); ++i) {
    const OverlayPeer& p = config.peers[i];
    if (p.vtep.family != config.local_vtep.family) {
      error = "overlay: peer " + p.vtep.to_string() + " is not in the local VTEP's family";
      return nullptr;
    }
    if (p.vtep == config.local_vtep) {
      error = "overlay: peer " + p.vtep.to_string() + " is the local VTEP";
      return nullptr;
    }
    if (o->find_peer(p.vtep) != kNoPeer) {
      error = "overlay: peer " + p.vtep.to_string() + " listed twice";
      return nullptr;
    }
    std::size_t s = address_hash(p.vtep) & o->peer_mask_;
    while (o->peer_index_[s] >= 0) s = (s + 1) & o->peer_mask_;
    o->peer_index_[s] = static_cast<std::int16_t>(i);
  }
  o->macs_.reset(config.mac_capacity);
  return o;
}

int Overlay::find_peer(const IpAddress& vtep) const {
  for (std::size_t s = address_hash(vtep) & peer_mask_;; s = (s + 1) & peer_mask_) {
    const std::int16_t i = peer_index_[s];
    if (i < 0) return kNoPeer;
    if (config_.peers[static_cast<std::size_t>(i)].vtep == vtep) return i;
  }
}

OverlayIngress Overlay::check_ingress(std::span<const std::uint8_t> frame,
                                      const PacketInfo& info) const {
  OverlayIngress r;
  if (!info.has(kFlagVxlan) || frame.size() < kEthHeader) return r;  // NotVxlan
  r.refusal = OverlayRefusal::WrongDestination;
  if (std::memcmp(frame.data(), config_.local_mac.data(), 6) != 0) return r;
  // The parser validated the outer IP header at outer_l3_offset.
  const std::size_t l3 = info.outer_l3_offset;
  const bool v4 = config_.local_vtep.is_v4();
  const std::size_t dst_at = l3 + (v4 ? 16 : 24);
  const std::size_t dst_len = v4 ? 4 : 16;
  if (info.outer_src.family != config_.local_vtep.family || dst_at + dst_len > frame.size() ||
      std::memcmp(frame.data() + dst_at, config_.local_vtep.bytes.data(), dst_len) != 0) {
    return r;
  }
  const int peer = find_peer(info.outer_src);
  if (peer == kNoPeer) {
    r.refusal = OverlayRefusal::UntrustedPeer;
    return r;
  }
  if (info.vni != config_.vni) {
    r.refusal = OverlayRefusal::WrongVni;
    return r;
  }
  r.accepted = true;
  r.peer = static_cast<std::uint16_t>(peer);
  return r;
}

bool Overlay::learn(const std::uint8_t* mac, std::uint16_t peer, std::uint64_t now_ns) {
  return macs_.learn(mac_key(mac), peer, now_ns, config_.mac_ageing_ns) !=
         MacTable<std::uint16_t>::Learned::Full;
}

int Overlay::lookup(const std::uint8_t* mac, std::uint64_t now_ns) const {
  const auto peer = macs_.lookup(mac_key(mac), now_ns, config_.mac_ageing_ns);
  return peer ? *peer : kNoPeer;
}

VxlanGbpParams Overlay::encap_params(std::uint16_t peer, std::uint16_t group,
                                     std::uint16_t src_port) const {
  const OverlayPeer& p = config_.peers[peer];
  VxlanGbpParams v;
  v.dst_mac = p.mac;
  v.src_mac = config_.local_mac;
  v.src_ip = config_.local_vtep;
  v.dst_ip = p.vtep;
  v.src_port = src_port;
  v.dst_port = config_.udp_port;
  v.vni = config_.vni;
  v.group_id = group;
  v.gbp = group != 0;
  v.policy_applied = group != 0;
  v.ttl = config_.ttl;
  return v;
}

}  // namespace tierwall::dataplane::dpdk
