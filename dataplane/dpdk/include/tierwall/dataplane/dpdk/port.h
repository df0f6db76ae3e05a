// One DPDK ethdev port created from a virtual device, e.g. the af_packet
// PMD on a Linux interface ("net_af_packet0,iface=veth0"), with one RX and
// one TX queue, its own mbuf pool, promiscuous mode, started.
//
// The device is hotplugged (rte_dev_probe) in the calling thread's network
// namespace: af_packet opens its socket there, so a test opens the port
// from a thread inside the namespace that holds the interface, and the
// forwarding loop may then run on any thread. The destructor stops and
// closes the port, removes the device and frees the pool.
//
// Memory: the pool holds `mbufs` buffers of RTE_MBUF_DEFAULT_BUF_SIZE
// (2176 bytes), about 9 MB for the default 4095, taken from the EAL's
// memory (`-m`), which works without hugepages.
//
// Thread contract: open/close on the control thread; rx/tx (through
// Bridge) from one forwarding thread at a time.
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
  // Hotplugs `devargs` (the device name before the first ','), configures
  // and starts it. Null with `error` set on failure (nothing left behind).
  static std::unique_ptr<Port> open_vdev(const std::string& devargs, const PortOptions& options,
                                         std::string& error);
  ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  [[nodiscard]] std::uint16_t id() const { return id_; }
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] rte_mempool* pool() const { return pool_; }
  // The port's MAC address, "aa:bb:cc:dd:ee:ff".
  [[nodiscard]] std::string mac() const;
  [[nodiscard]] PortStats stats() const;

 private:
  Port() = default;
  std::uint16_t id_ = 0;
  std::string name_;
  rte_mempool* pool_ = nullptr;
  bool probed_ = false;
  bool configured_ = false;
  bool started_ = false;
};

}  // namespace tierwall::dataplane::dpdk
