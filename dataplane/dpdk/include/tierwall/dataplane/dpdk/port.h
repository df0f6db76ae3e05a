// One DPDK ethdev port created from a virtual device, e.g. the af_packet
// PMD on a Linux interface ("net_af_packet0,iface=veth0"), with
// PortOptions::queues RX and TX queues (one per forwarding worker), its own
// mbuf pool, promiscuous mode, started.
//
// Several queues: queue i is worker i's, and a stateful worker must see both
// directions of a connection, so the port must spread packets by a
// symmetric hash of the 5-tuple:
//  * af_packet: `qpairs=N` (added to the devargs when absent) opens N
//    sockets in a PACKET_FANOUT_HASH group; the kernel's fanout hash is the
//    symmetric flow hash, the same on every interface, so a connection's two
//    directions land on the same queue index of any two ports;
//  * a device with RSS: RSS over IP/TCP/UDP/SCTP with a symmetric key
//    (0x6d5a repeated), the same on every port;
//  * any other device (null, ring, pcap): whatever it puts on queue i.
// A packet that arrives on another worker than its connection's is decided
// there as a new connection (fail closed: a reply is denied unless the
// policy allows it in that direction).
//
// The device is hotplugged (rte_dev_probe) in the calling thread's network
// namespace: af_packet opens its socket there, so a test opens the port
// from a thread inside the namespace that holds the interface, and the
// forwarding loop may then run on any thread. The destructor stops and
// closes the port, removes the device and frees the pool.
//
// Memory: the pool holds `mbufs` buffers of RTE_MBUF_DEFAULT_BUF_SIZE
// (2176 bytes), about 9 MB for the default 4095 (doubled, as 2^k - 1, until
// every queue's descriptors fit: 4 queues of 512 + 512 take 8191), taken
// from the EAL's memory (`-m`), which works without hugepages.
//
// Thread contract: open/close on the control thread; rx/tx on queue i
// (through Bridge) from one forwarding thread at a time per queue.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

struct rte_mempool;

namespace tierwall::dataplane::dpdk {

struct PortOptions {
  std::uint16_t rx_descriptors = 512;
  std::uint16_t tx_descriptors = 512;
  std::uint32_t mbufs = 4095;  // 2^k - 1 is the mempool's optimum
  std::uint32_t mbuf_cache = 128;
  bool promiscuous = true;
  std::uint16_t queues = 1;  // RX and TX queues, 1..kMaxQueues (one per worker)
};

// rte_eth_stats of the port (what the PMD counted).
struct PortStats {
  std::uint64_t ipackets = 0;
  std::uint64_t opackets = 0;
  std::uint64_t imissed = 0;
  std::uint64_t ierrors = 0;
  std::uint64_t oerrors = 0;
  std::uint64_t rx_nombuf = 0;
};

class Port {
 public:
  static constexpr std::uint16_t kMaxQueues = 16;

  // Hotplugs `devargs` (the device name before the first ','), configures
  // and starts it. Null with `error` set on failure (nothing left behind).
  static std::unique_ptr<Port> open_vdev(const std::string& devargs, const PortOptions& options,
                                         std::string& error);
  ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  [[nodiscard]] std::uint16_t id() const { return id_; }
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::uint16_t queues() const { return queues_; }
  // Whether the port spreads its queues by RSS (set up with the symmetric
  // key); false for one queue and for devices without RSS.
  [[nodiscard]] bool rss() const { return rss_; }
  [[nodiscard]] rte_mempool* pool() const { return pool_; }
  // The port's MAC address, "aa:bb:cc:dd:ee:ff".
  [[nodiscard]] std::string mac() const;
  [[nodiscard]] PortStats stats() const;

 private:
  Port() = default;
  std::uint16_t id_ = 0;
  std::uint16_t queues_ = 1;
  bool rss_ = false;
  std::string name_;
  rte_mempool* pool_ = nullptr;
  bool probed_ = false;
  bool configured_ = false;
  bool started_ = false;
};

}  // namespace tierwall::dataplane::dpdk
