#include "tierwall/dataplane/dpdk/bridge.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <time.h>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "tierwall/dataplane/dpdk/mac_table.h"
#include "tierwall/dataplane/dpdk/worker_counters.h"

namespace tierwall::dataplane::dpdk {
namespace {

enum Counter : std::size_t {
  kRx,
  kTx,
  kTxFailed,
  kForwarded,
  kFlooded,
  kFiltered,
  kNonIp,
  kIpAllowed,
  kPolicyDropped,
  kPolicyCut,
  kNoGeneration,
  kFragmentsDropped,
  kMalformed,
  kLearned,
  kLearnFull,
  kBursts,
  kOverlayDecapsulated,
  kOverlayEncapsulated,
  kOverlayEncapFailed,
  kOverlayByTag,
  kOverlayRefused,
  kStatusBase,
  kOverlayRefusedBase = kStatusBase + kParseStatusCount,
  kCounterCount = kOverlayRefusedBase + kOverlayRefusalCount,
};

constexpr std::size_t kTxCapacity = 2 * Bridge::kBurst;  // per egress port
// Flow-table slots looked at for expired flows per iteration (with events).
constexpr std::size_t kSweepSlots = 64;

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * kNsPerSecond +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// The flow table counts per flow when connection ends are reported.
FlowTableOptions flow_options(const BridgeOptions& o) {
  FlowTableOptions f = o.flows;
  if (o.events != nullptr) f.count = true;
  return f;
}

bool is_neighbour_discovery(const PacketInfo& p) {
  return p.ip_version == 6 && p.protocol == 58 && p.has(kFlagIcmp) && p.icmp_type >= 133 &&
         p.icmp_type <= 137;
}

}  // namespace

struct Bridge::Impl {
  MacTable<std::uint8_t> macs;  // the port behind a MAC
  WorkerCounters<kCounterCount> counts;

  std::array<std::array<rte_mbuf*, kTxCapacity>, kMaxPorts> txq{};
  std::array<std::uint16_t, kMaxPorts> txn{};

  std::array<rte_mbuf*, kBurst> rx{};
  std::array<PacketInfo, kBurst> info{};
  std::array<FlowPacket, kBurst> flow{};
  std::array<FlowResult, kBurst> result{};
  std::array<std::uint16_t, kBurst> ip_index{};

  // Flow events (BridgeOptions::events) and the flow table's counters as
  // other threads see them.
  std::unique_ptr<FlowEventEmitter> events;
  std::array<std::atomic<std::uint64_t>, 7> flow_published{};

  void publish_flows(const FlowCounters& f) {
    const std::uint64_t values[7] = {f.hits, f.rechecks, f.inserts, f.denied,
                                     f.cuts, f.expired,  f.evicted};
    for (std::size_t i = 0; i < flow_published.size(); ++i) {
      flow_published[i].store(values[i], std::memory_order_relaxed);
    }
  }

  // Overlay uplinks: null for container ports. Parse options per port
  // (only uplinks decapsulate).
  std::array<std::unique_ptr<Overlay>, kMaxPorts> overlay{};
  std::array<ParseOptions, kMaxPorts> parse{};

  void refuse(OverlayRefusal reason) {
    ++counts[kOverlayRefused];
    ++counts[kOverlayRefusedBase + static_cast<std::size_t>(reason)];
  }

  // Port index of `key`, or -1 (unknown or aged out).
  int lookup(std::uint64_t key, std::uint64_t now, std::uint64_t ageing) const {
    const auto port = macs.lookup(key, now, ageing);
    return port ? *port : -1;
  }

  void learn(std::uint64_t key, std::uint8_t port, std::uint64_t now, std::uint64_t ageing) {
    switch (macs.learn(key, port, now, ageing)) {
      case MacTable<std::uint8_t>::Learned::Refreshed:
        break;
      case MacTable<std::uint8_t>::Learned::Learned:
        ++counts[kLearned];
        break;
      case MacTable<std::uint8_t>::Learned::Full:
        ++counts[kLearnFull];
        break;
    }
  }
};

Bridge::Bridge(std::span<Port* const> ports, GenerationStore& store, const BridgeOptions& options)
    : ports_(ports.begin(), ports.end()),
      store_(store),
      options_(options),
      flows_(flow_options(options)),
      impl_(std::make_unique<Impl>()) {
  if (ports_.empty() || ports_.size() > kMaxPorts) {
    throw std::invalid_argument("Bridge: 1 to 8 ports");
  }
  for (const Port* p : ports_) {
    if (options_.queue >= p->queues()) {
      throw std::invalid_argument("Bridge: queue " + std::to_string(options_.queue) + " of port " +
                                  p->name() + ", which has " + std::to_string(p->queues()));
    }
  }
  impl_->macs.reset(options_.mac_capacity);
  if (options_.events != nullptr) {
    impl_->events = std::make_unique<FlowEventEmitter>(*options_.events, options_.event_options);
    flows_.set_end_sink(impl_->events.get());
  }
  for (std::size_t p = 0; p < ports_.size(); ++p) {
    impl_->parse[p] = options_.parse;
    impl_->parse[p].vxlan_port = 0;  // container ports never decapsulate
  }
  for (const BridgeOverlay& o : options_.overlays) {
    if (o.port >= ports_.size() || impl_->overlay[o.port]) {
      throw std::invalid_argument("Bridge: overlay on a missing or already overlaid port");
    }
    std::string error;
    impl_->overlay[o.port] = Overlay::create(o.config, error);
    if (!impl_->overlay[o.port]) throw std::invalid_argument("Bridge: " + error);
    impl_->parse[o.port] = impl_->overlay[o.port]->parse_options(options_.parse);
  }
  reader_ = store_.register_reader();
  if (reader_ < 0) throw std::runtime_error("Bridge: no free GenerationStore reader");
}

Bridge::~Bridge() {
  for (std::size_t p = 0; p < ports_.size(); ++p) {
    for (std::uint16_t i = 0; i < impl_->txn[p]; ++i) rte_pktmbuf_free(impl_->txq[p][i]);
    impl_->txn[p] = 0;
  }
  store_.unregister_reader(reader_);
}

void Bridge::run(const std::atomic<bool>& stop) {
  store_.online(reader_);
  while (!stop.load(std::memory_order_relaxed)) {
    const std::size_t received = poll_once();
    store_.quiescent(reader_);
    if (received == 0 && options_.idle_sleep_us != 0) usleep(options_.idle_sleep_us);
  }
  store_.offline(reader_);
  if (impl_->events) {
    flows_.end_all(now_ns());
    impl_->events->flush();
    impl_->events->publish();
    impl_->publish_flows(flows_.counters());
  }
}

std::size_t Bridge::poll_once() {
  Impl& d = *impl_;
  const std::size_t nports = ports_.size();
  const std::uint64_t ageing = options_.mac_ageing_ns;
  const std::uint16_t queue = options_.queue;
  std::size_t total = 0;

  auto flush = [&](std::size_t p) {
    const std::uint16_t n = d.txn[p];
    if (n == 0) return;
    const std::uint16_t sent = rte_eth_tx_burst(ports_[p]->id(), queue, d.txq[p].data(), n);
    for (std::uint16_t i = sent; i < n; ++i) rte_pktmbuf_free(d.txq[p][i]);
    d.counts[kTx] += sent;
    d.counts[kTxFailed] += static_cast<std::uint64_t>(n - sent);
    d.txn[p] = 0;
  };
  auto enqueue = [&](std::size_t p, rte_mbuf* m) {
    if (d.txn[p] == kTxCapacity) flush(p);
    d.txq[p][d.txn[p]++] = m;
  };
  const Generation* burst_generation = nullptr;  // the generation deciding the current burst
  // Encapsulates `m` (ours alone: not queued or shared) to `peer` of the
  // uplink `port` and queues it; drops it when that is not possible.
  auto encap_send = [&](rte_mbuf* m, std::size_t port, std::uint16_t peer, std::uint16_t group,
                        std::uint16_t src_port) {
    const VxlanGbpParams params = d.overlay[port]->encap_params(peer, group, src_port);
    const std::size_t overhead = vxlan_overhead(params);
    const std::uint32_t inner = rte_pktmbuf_pkt_len(m);
    std::uint8_t* hdr = nullptr;
    if (m->nb_segs == 1) {
      hdr = reinterpret_cast<std::uint8_t*>(
          rte_pktmbuf_prepend(m, static_cast<std::uint16_t>(overhead)));
    }
    if (hdr == nullptr || write_vxlan_gbp_headers(
                              std::span<std::uint8_t>(hdr, overhead),
                              std::span<const std::uint8_t>(hdr + overhead, inner), params) == 0) {
      ++d.counts[kOverlayEncapFailed];
      rte_pktmbuf_free(m);
      return;
    }
    ++d.counts[kOverlayEncapsulated];
    enqueue(port, m);
  };
  // A copy of `m` (which stays untouched) encapsulated to `peer`.
  auto encap_copy = [&](const rte_mbuf* m, std::size_t port, std::uint16_t peer,
                        std::uint16_t group, std::uint16_t src_port) {
    rte_mbuf* c = rte_pktmbuf_copy(m, ports_[port]->pool(), 0, UINT32_MAX);
    if (c == nullptr) {
      ++d.counts[kOverlayEncapFailed];
      return;
    }
    encap_send(c, port, peer, group, src_port);
  };
  // The group id and UDP source port of a frame from a container port:
  // `ip` is its parsed packet when the policy decided it (else untagged).
  auto egress_tag = [&](const PacketInfo* ip, std::uint16_t& group, std::uint16_t& src_port) {
    group = ip != nullptr && burst_generation != nullptr ? egress_group(*burst_generation, ip->src)
                                                         : std::uint16_t{0};
    src_port = vxlan_source_port(ip != nullptr ? *ip : PacketInfo{});
  };
  // L2 forwarding of a frame received on `in` (at least 14 bytes); `ip` is
  // the parsed packet of a frame the policy decided (egress tags).
  auto forward = [&](rte_mbuf* m, std::size_t in, std::uint64_t now,
                     const PacketInfo* ip = nullptr) {
    const auto* eth = rte_pktmbuf_mtod(m, const std::uint8_t*);
    const bool from_uplink = d.overlay[in] != nullptr;
    int out = -1;
    if ((eth[0] & 1) == 0) out = d.lookup(mac_key(eth), now, ageing);
    if (out >= 0) {
      const auto port = static_cast<std::size_t>(out);
      // Split horizon: what came from the overlay never goes back to it.
      if (port == in || (from_uplink && d.overlay[port] != nullptr)) {
        ++d.counts[kFiltered];
        rte_pktmbuf_free(m);
        return;
      }
      ++d.counts[kForwarded];
      if (d.overlay[port] == nullptr) {
        enqueue(port, m);
        return;
      }
      std::uint16_t group = 0;
      std::uint16_t src_port = 0;
      egress_tag(ip, group, src_port);
      const Overlay& ov = *d.overlay[port];
      const int peer = ov.lookup(eth, now);
      const bool exclusive = rte_mbuf_refcnt_read(m) == 1 && RTE_MBUF_DIRECT(m);
      if (peer != Overlay::kNoPeer && exclusive) {
        encap_send(m, port, static_cast<std::uint16_t>(peer), group, src_port);
        return;
      }
      // Peer unknown (aged out of the overlay's table): every peer gets it.
      for (std::size_t p = 0; p < ov.peer_count(); ++p) {
        if (peer == Overlay::kNoPeer || static_cast<std::size_t>(peer) == p) {
          encap_copy(m, port, static_cast<std::uint16_t>(p), group, src_port);
        }
      }
      rte_pktmbuf_free(m);
      return;
    }
    std::size_t local_targets = 0;
    bool uplink_targets = false;
    for (std::size_t p = 0; p < nports; ++p) {
      if (p == in) continue;
      if (d.overlay[p] == nullptr) {
        ++local_targets;
      } else if (!from_uplink) {
        uplink_targets = true;
      }
    }
    if (local_targets == 0 && !uplink_targets) {
      rte_pktmbuf_free(m);
      return;
    }
    ++d.counts[kFlooded];
    if (uplink_targets) {
      // Head-end replication: copies first, while `m` is not queued yet.
      std::uint16_t group = 0;
      std::uint16_t src_port = 0;
      egress_tag(ip, group, src_port);
      for (std::size_t p = 0; p < nports; ++p) {
        if (p == in || d.overlay[p] == nullptr) continue;
        for (std::size_t peer = 0; peer < d.overlay[p]->peer_count(); ++peer) {
          encap_copy(m, p, static_cast<std::uint16_t>(peer), group, src_port);
        }
      }
    }
    if (local_targets == 0) {
      rte_pktmbuf_free(m);
      return;
    }
    rte_mbuf_refcnt_update(m, static_cast<std::int16_t>(local_targets - 1));
    for (std::size_t p = 0; p < nports; ++p) {
      if (p != in && d.overlay[p] == nullptr) enqueue(p, m);
    }
  };

  for (std::size_t in = 0; in < nports; ++in) {
    const std::uint16_t n = rte_eth_rx_burst(ports_[in]->id(), queue, d.rx.data(), kBurst);
    if (n == 0) continue;
    total += n;
    ++d.counts[kBursts];
    d.counts[kRx] += n;
    const std::uint64_t now = now_ns();
    const Generation* generation = store_.current();  // one generation per burst
    burst_generation = generation;
    Overlay* overlay = d.overlay[in].get();
    const ParseOptions& parse = d.parse[in];

    std::uint16_t ip = 0;
    for (std::uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = d.rx[i];
      const auto* frame = rte_pktmbuf_mtod(m, const std::uint8_t*);
      const std::size_t len = rte_pktmbuf_data_len(m);
      // Constructed in place: the parser writes the slot itself (assigning
      // its result would copy a temporary with loads wider than the
      // parser's stores, which the store buffer cannot forward).
      static_assert(std::is_trivially_destructible_v<PacketInfo>);
      PacketInfo& pi = *::new (static_cast<void*>(&d.info[i])) PacketInfo(
          parse_packet(std::span<const std::uint8_t>(frame, len), parse));
      ++d.counts[kStatusBase + static_cast<std::size_t>(pi.status)];
      if (is_malformed(pi.status)) {
        ++d.counts[kMalformed];
        rte_pktmbuf_free(m);
        d.rx[i] = nullptr;
        continue;
      }
      if (overlay != nullptr) {
        // An uplink: only VXLAN from a trusted peer with our VNI; the
        // inner frame is what is learned, decided and forwarded.
        const OverlayIngress ingress =
            overlay->check_ingress(std::span<const std::uint8_t>(frame, len), pi);
        if (!ingress.accepted) {
          d.refuse(ingress.refusal);
          rte_pktmbuf_free(m);
          d.rx[i] = nullptr;
          continue;
        }
        ++d.counts[kOverlayDecapsulated];
        rte_pktmbuf_adj(m, pi.inner_l2_offset);
        frame = rte_pktmbuf_mtod(m, const std::uint8_t*);
        if ((frame[6] & 1) == 0 && !pi.has(kFlagGbpDontLearn)) {
          overlay->learn(frame + 6, ingress.peer, now);
        }
      }
      // Not malformed implies a whole Ethernet header.
      if ((frame[6] & 1) == 0)
        d.learn(mac_key(frame + 6), static_cast<std::uint8_t>(in), now, ageing);
      if (pi.status == ParseStatus::NotIp || is_neighbour_discovery(pi)) {
        ++d.counts[kNonIp];
        forward(m, in, now);
        d.rx[i] = nullptr;
        continue;
      }
      if (pi.status == ParseStatus::NonFirstFragment) {
        ++d.counts[kFragmentsDropped];
        rte_pktmbuf_free(m);
        d.rx[i] = nullptr;
        continue;
      }
      if (generation == nullptr) {
        ++d.counts[kNoGeneration];
        rte_pktmbuf_free(m);
        d.rx[i] = nullptr;
        continue;
      }
      d.flow[ip] = flow_packet(pi);
      // From a trusted peer, the group id names the source tier; the flow
      // table checks it against the generation on a connection's first
      // packet (FlowResult::tag).
      if (overlay != nullptr && pi.has(kFlagGbp)) d.flow[ip].src_tag = pi.group_id;
      d.ip_index[ip] = i;
      ++ip;
    }

    if (ip != 0) {
      flows_.process_burst(*generation, std::span<const FlowPacket>(d.flow.data(), ip),
                           std::span<FlowResult>(d.result.data(), ip), now);
      for (std::uint16_t k = 0; k < ip; ++k) {
        rte_mbuf* m = d.rx[d.ip_index[k]];
        const FlowResult& r = d.result[k];
        if (d.events) {
          const PacketInfo& pi = d.info[d.ip_index[k]];
          const auto port = static_cast<std::uint8_t>(in);
          if (r.outcome == FlowOutcome::New && r.pass()) {
            d.events->start(pi, r.decision, generation->id(), port, now, r.flow_id);
          } else if (r.outcome == FlowOutcome::Denied) {
            d.events->deny(pi, r.decision, generation->id(), port, now);
          } else if (r.outcome == FlowOutcome::Cut) {
            d.events->cut(pi, r.decision, generation->id(), port, now);
          }
        }
        if (r.tag == TagCheck::ByTag) ++d.counts[kOverlayByTag];
        if (r.tag == TagCheck::Spoofed || r.tag == TagCheck::UnknownTag) {
          d.refuse(r.tag == TagCheck::Spoofed ? OverlayRefusal::Spoofed
                                              : OverlayRefusal::UnknownTag);
          rte_pktmbuf_free(m);
          continue;
        }
        if (r.pass()) {
          ++d.counts[kIpAllowed];
          forward(m, in, now, &d.info[d.ip_index[k]]);
        } else {
          ++d.counts[kPolicyDropped];
          if (r.outcome == FlowOutcome::Cut) ++d.counts[kPolicyCut];
          rte_pktmbuf_free(m);
        }
      }
    }
    for (std::size_t p = 0; p < nports; ++p) flush(p);
  }
  d.counts.publish();
  if (d.events) {
    const std::uint64_t now = now_ns();
    flows_.sweep(now, kSweepSlots);
    d.events->tick(now);
    d.events->publish();
  }
  d.publish_flows(flows_.counters());
  return total;
}

FlowCounters Bridge::flow_counters() const {
  const auto get = [this](std::size_t i) {
    return impl_->flow_published[i].load(std::memory_order_relaxed);
  };
  FlowCounters f;
  f.hits = get(0);
  f.rechecks = get(1);
  f.inserts = get(2);
  f.denied = get(3);
  f.cuts = get(4);
  f.expired = get(5);
  f.evicted = get(6);
  return f;
}

FlowEventCounters Bridge::event_counters() const {
  return impl_->events ? impl_->events->counters() : FlowEventCounters{};
}

BridgeCounters Bridge::counters() const {
  const auto get = [this](std::size_t i) { return impl_->counts.published(i); };
  BridgeCounters c;
  c.rx = get(kRx);
  c.tx = get(kTx);
  c.tx_failed = get(kTxFailed);
  c.forwarded = get(kForwarded);
  c.flooded = get(kFlooded);
  c.filtered = get(kFiltered);
  c.non_ip = get(kNonIp);
  c.ip_allowed = get(kIpAllowed);
  c.policy_dropped = get(kPolicyDropped);
  c.policy_cut = get(kPolicyCut);
  c.no_generation = get(kNoGeneration);
  c.fragments_dropped = get(kFragmentsDropped);
  c.malformed = get(kMalformed);
  c.learned = get(kLearned);
  c.learn_full = get(kLearnFull);
  c.bursts = get(kBursts);
  for (std::size_t s = 0; s < kParseStatusCount; ++s) c.by_status[s] = get(kStatusBase + s);
  c.overlay_decapsulated = get(kOverlayDecapsulated);
  c.overlay_encapsulated = get(kOverlayEncapsulated);
  c.overlay_encap_failed = get(kOverlayEncapFailed);
  c.overlay_by_tag = get(kOverlayByTag);
  c.overlay_refused = get(kOverlayRefused);
  for (std::size_t r = 0; r < kOverlayRefusalCount; ++r) {
    c.overlay_refused_by[r] = get(kOverlayRefusedBase + r);
  }
  return c;
}

BridgeCounters& BridgeCounters::operator+=(const BridgeCounters& other) {
  rx += other.rx;
  tx += other.tx;
  tx_failed += other.tx_failed;
  forwarded += other.forwarded;
  flooded += other.flooded;
  filtered += other.filtered;
  non_ip += other.non_ip;
  ip_allowed += other.ip_allowed;
  policy_dropped += other.policy_dropped;
  policy_cut += other.policy_cut;
  no_generation += other.no_generation;
  fragments_dropped += other.fragments_dropped;
  for (std::size_t i = 0; i < by_status.size(); ++i) by_status[i] += other.by_status[i];
  malformed += other.malformed;
  learned += other.learned;
  learn_full += other.learn_full;
  bursts += other.bursts;
  overlay_decapsulated += other.overlay_decapsulated;
  overlay_encapsulated += other.overlay_encapsulated;
  overlay_encap_failed += other.overlay_encap_failed;
  overlay_by_tag += other.overlay_by_tag;
  overlay_refused += other.overlay_refused;
  for (std::size_t i = 0; i < overlay_refused_by.size(); ++i) {
    overlay_refused_by[i] += other.overlay_refused_by[i];
  }
  return *this;
}

}  // namespace tierwall::dataplane::dpdk
