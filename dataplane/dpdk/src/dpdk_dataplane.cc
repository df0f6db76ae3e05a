#include "tierwall/dataplane/dpdk/dpdk_dataplane.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <utility>

#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/overlay.h"

namespace tierwall::dataplane::dpdk {
namespace {

constexpr unsigned kEventSize = sizeof(FlowEventRecord);

std::atomic<unsigned> ring_serial{0};

// The workers' side of the event ring: one non-blocking multi-producer
// enqueue per event; a full ring refuses (the emitter counts it lost).
// Once forwarding has stopped (`finishing`), the last events (the ends of
// every remembered flow) wait for room instead, up to kFinishWait, while
// the control thread drains.
constexpr std::chrono::seconds kFinishWait{2};

class RingSink final : public FlowEventSink {
 public:
  explicit RingSink(rte_ring* ring) : ring_(ring) {}
  bool push(const FlowEventRecord& event) override {
    auto* obj = const_cast<FlowEventRecord*>(&event);
    if (rte_ring_mp_enqueue_elem(ring_, obj, kEventSize) == 0) return true;
    if (!finishing.load(std::memory_order_relaxed)) return false;
    const auto deadline = std::chrono::steady_clock::now() + kFinishWait;
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
      if (rte_ring_mp_enqueue_elem(ring_, obj, kEventSize) == 0) return true;
    }
    return false;
  }
  std::atomic<bool> finishing{false};

 private:
  rte_ring* ring_;
};

// The RuleSet of a flush: no rules, no endpoints: every IP packet is denied
// by default.
RuleSet deny_all() {
  auto policy = std::make_shared<CompiledPolicy>();
  policy->name = "flushed";
  policy->tiers.push_back(TierInfo{std::string(kQuarantineName), -1, Mode::Enforce, false});
  return RuleSet{std::move(policy), std::make_shared<EndpointTable>()};
}

}  // namespace

struct DpdkDataplane::Impl {
  DpdkDataplaneConfig config;
  std::vector<std::unique_ptr<Port>> ports;
  std::vector<std::string> port_names;
  GenerationStore store;
  rte_ring* ring = nullptr;
  std::unique_ptr<RingSink> sink;
  std::vector<std::unique_ptr<Bridge>> bridges;  // worker i: queue i of every port
  std::atomic<bool> stop{false};
  std::atomic<unsigned> running{0};  // workers whose run() has not returned
  std::vector<std::thread> workers;
  RuleSet rules;  // the last applied (null halves before the first apply)
  std::atomic<std::uint64_t> generation{0};
  std::atomic<std::uint64_t> drained{0};

  std::optional<DataplaneError> publish(const RuleSet& next) {
    auto built = build_generation(next);
    if (!built.generation) return DataplaneError{"DPDK generation build: " + built.error};
    generation.store(built.generation->id(), std::memory_order_relaxed);
    store.publish(std::move(built.generation));
    return std::nullopt;
  }

  void halt() {
    stop.store(true);
    for (auto& w : workers) {
      if (w.joinable()) w.join();
    }
    workers.clear();
  }

  ~Impl() {
    halt();
    bridges.clear();
    sink.reset();
    ports.clear();  // stops and closes the ports before the ring goes
    if (ring != nullptr) rte_ring_free(ring);
  }
};

DpdkDataplane::DpdkDataplane() : impl_(std::make_unique<Impl>()) {}

DpdkDataplane::~DpdkDataplane() = default;

std::unique_ptr<DpdkDataplane> DpdkDataplane::open(const DpdkDataplaneConfig& config,
                                                   std::string& error) {
  if (config.ports.empty() || config.ports.size() > Bridge::kMaxPorts) {
    error = "the DPDK dataplane needs 1 to " + std::to_string(Bridge::kMaxPorts) + " ports";
    return nullptr;
  }
  if (config.workers < 1 || config.workers > Port::kMaxQueues) {
    error = "the DPDK dataplane runs 1 to " + std::to_string(Port::kMaxQueues) +
            " forwarding workers, not " + std::to_string(config.workers);
    return nullptr;
  }
  // An uplink's queues are spread by the outer header (the underlay's
  // addresses and the sender's UDP source port), a container port's by the
  // inner one, so a connection's two directions would meet on different
  // workers.
  if (config.workers > 1 && std::any_of(config.ports.begin(), config.ports.end(),
                                        [](const DpdkPortConfig& p) { return p.overlay; })) {
    error =
        "an overlay uplink needs workers: 1 (its queues are spread by the outer VXLAN "
        "header, a container port's by the inner packet: a connection's two directions "
        "would meet different workers)";
    return nullptr;
  }
  error = Eal::init(config.eal_args.empty() ? Eal::default_args() : config.eal_args);
  if (!error.empty()) return nullptr;

  std::unique_ptr<DpdkDataplane> dp(new DpdkDataplane());
  Impl& d = *dp->impl_;
  d.config = config;
  std::vector<BridgeOverlay> overlays;
  PortOptions port_options = config.port;
  port_options.queues = static_cast<std::uint16_t>(config.workers);
  for (const auto& p : config.ports) {
    auto port = Port::open_vdev(p.devargs, port_options, error);
    if (!port) return nullptr;
    d.port_names.push_back(p.name.empty() ? port->name() : p.name);
    if (p.overlay) {
      // The uplink's outer MAC is the port's own: what the underlay
      // delivers to it, and the source of what it sends.
      BridgeOverlay uplink{d.ports.size(), *p.overlay};
      if (!parse_mac(port->mac(), uplink.config.local_mac)) {
        error = "port " + d.port_names.back() + ": unreadable MAC '" + port->mac() + "'";
        return nullptr;
      }
      // Checked here so that the error names the port.
      if (!Overlay::create(uplink.config, error)) {
        error = "port " + d.port_names.back() + ": " + error;
        return nullptr;
      }
      overlays.push_back(std::move(uplink));
    }
    d.ports.push_back(std::move(port));
  }
  if (!overlays.empty() && overlays.size() == d.ports.size()) {
    error = "every port is an overlay uplink: an uplink needs a container port to bridge to";
    return nullptr;
  }

  const std::string ring_name = "tw_events" + std::to_string(ring_serial.fetch_add(1));
  d.ring =
      rte_ring_create_elem(ring_name.c_str(), kEventSize,
                           static_cast<unsigned>(std::max<std::size_t>(config.event_ring_size, 64)),
                           SOCKET_ID_ANY, RING_F_SC_DEQ | RING_F_EXACT_SZ);
  if (d.ring == nullptr) {
    error = "rte_ring_create_elem(" + ring_name + "): " + rte_strerror(rte_errno);
    return nullptr;
  }
  d.sink = std::make_unique<RingSink>(d.ring);

  BridgeOptions options;
  options.flows.capacity = config.flow_capacity;
  options.idle_sleep_us = config.idle_sleep_us;
  options.events = d.sink.get();
  options.event_options = config.events;
  options.overlays = std::move(overlays);
  std::vector<Port*> raw;
  raw.reserve(d.ports.size());
  for (auto& p : d.ports) raw.push_back(p.get());
  try {
    for (std::uint32_t w = 0; w < config.workers; ++w) {
      options.queue = static_cast<std::uint16_t>(w);
      // Flow ids distinct across workers: the flow log pairs a
      // connection's start and end by its id.
      options.flows.id_first = w + 1;
      options.flows.id_stride = config.workers;
      d.bridges.push_back(std::make_unique<Bridge>(raw, d.store, options));
    }
  } catch (const std::exception& e) {
    error = std::string("DPDK bridge: ") + e.what();
    return nullptr;
  }
  Impl* impl = dp->impl_.get();
  d.running.store(config.workers);
  for (auto& b : d.bridges) {
    Bridge* bridge = b.get();
    d.workers.emplace_back([impl, bridge] {
      // An lcore id of its own gives the worker the mempools' per-lcore
      // caches (an unregistered thread takes every mbuf from the shared
      // ring); without a free id it runs uncached, still correct.
      const bool registered = rte_thread_register() == 0;
      bridge->run(impl->stop);
      if (registered) rte_thread_unregister();
      impl->running.fetch_sub(1);
    });
  }
  return dp;
}

std::optional<DataplaneError> DpdkDataplane::apply(const RuleSet& rules) {
  if (!rules.policy || !rules.endpoints) return DataplaneError{"apply: an incomplete RuleSet"};
  if (auto e = impl_->publish(rules)) return e;
  impl_->rules = rules;
  return std::nullopt;
}

std::optional<DataplaneError> DpdkDataplane::update_endpoints(
    std::span<const EndpointChange> changes) {
  Impl& d = *impl_;
  if (!d.rules.policy || !d.rules.endpoints) {
    return DataplaneError{"endpoint update before the first apply"};
  }
  auto table = std::make_shared<EndpointTable>(*d.rules.endpoints);
  // Removals first, so that an address moving between endpoints in one
  // batch is free when its new holder is added.
  for (const auto& c : changes) table->remove(c.id);
  for (const auto& c : changes) {
    if (c.removed) continue;
    if (!table->upsert(c.id, c.addresses, c.tier, c.selectors)) {
      return DataplaneError{"endpoint " + std::to_string(c.id) +
                            ": an address belongs to another endpoint"};
    }
  }
  RuleSet next{d.rules.policy, std::move(table)};
  if (auto e = d.publish(next)) return e;
  d.rules = std::move(next);
  return std::nullopt;
}

std::optional<DataplaneError> DpdkDataplane::flush() {
  if (auto e = impl_->publish(deny_all())) return e;
  impl_->rules = RuleSet{};
  return std::nullopt;
}

std::size_t DpdkDataplane::drain_events(const std::function<void(const FlowEventRecord&)>& fn,
                                        std::size_t max) {
  Impl& d = *impl_;
  d.store.reclaim();
  constexpr unsigned kChunk = 64;
  FlowEventRecord buf[kChunk];
  std::size_t total = 0;
  while (total < max) {
    const unsigned want = static_cast<unsigned>(std::min<std::size_t>(kChunk, max - total));
    const unsigned n = rte_ring_sc_dequeue_burst_elem(d.ring, buf, kEventSize, want, nullptr);
    for (unsigned i = 0; i < n; ++i) fn(buf[i]);
    total += n;
    if (n < want) break;
  }
  d.drained.fetch_add(total, std::memory_order_relaxed);
  return total;
}

void DpdkDataplane::stop(const std::function<void(const FlowEventRecord&)>& fn) {
  Impl& d = *impl_;
  if (d.workers.empty()) return;
  // Waiting for room only makes sense while someone drains.
  d.sink->finishing.store(static_cast<bool>(fn));
  d.stop.store(true);
  // The lcore ends every remembered flow now: make room for those events.
  while (d.running.load() != 0) {
    if (fn && drain_events(fn) != 0) continue;
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  d.halt();
  if (fn) drain_events(fn, SIZE_MAX);
}

std::size_t DpdkDataplane::port_count() const { return impl_->ports.size(); }

DpdkStats DpdkDataplane::stats() const {
  const Impl& d = *impl_;
  DpdkStats s;
  for (const auto& b : d.bridges) {
    DpdkWorkerStats w{b->counters(), b->flow_counters(), b->event_counters()};
    s.bridge += w.bridge;
    s.flows += w.flows;
    s.events += w.events;
    s.workers.push_back(w);
  }
  for (std::size_t i = 0; i < d.ports.size(); ++i) {
    s.ports.push_back(DpdkPortStats{d.port_names[i], d.ports[i]->stats()});
  }
  s.ring_capacity = rte_ring_get_capacity(d.ring);
  s.ring_used = rte_ring_count(d.ring);
  s.drained = d.drained.load(std::memory_order_relaxed);
  s.generation = d.generation.load(std::memory_order_relaxed);
  return s;
}

}  // namespace tierwall::dataplane::dpdk
