#include "tierwall/dataplane/dpdk/port.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

namespace tierwall::dataplane::dpdk {
namespace {

std::string errtext(int rc) {
  const int e = rc < 0 ? -rc : rc;
  return std::string(rte_strerror(e)) + " (" + std::to_string(rc) + ")";
}

std::atomic<unsigned> pool_serial{0};

// af_packet takes its queue count from `qpairs=` at probe time.
std::string with_queues(const std::string& devargs, std::uint16_t queues) {
  if (queues <= 1 || devargs.rfind("net_af_packet", 0) != 0 ||
      devargs.find("qpairs=") != std::string::npos) {
    return devargs;
  }
  return devargs + ",qpairs=" + std::to_string(queues);
}

// A symmetric RSS key: with the 16-bit pattern repeated, the Toeplitz hash
// of (a, b, pa, pb) equals that of (b, a, pb, pa).
constexpr std::uint8_t kSymmetricKeyByte[2] = {0x6d, 0x5a};

}  // namespace

std::unique_ptr<Port> Port::open_vdev(const std::string& devargs, const PortOptions& options,
                                      std::string& error) {
  if (options.queues < 1 || options.queues > kMaxQueues) {
    error = "a port has 1 to " + std::to_string(kMaxQueues) + " queues, not " +
            std::to_string(options.queues);
    return nullptr;
  }
  std::unique_ptr<Port> port(new Port());
  port->name_ = devargs.substr(0, devargs.find(','));
  port->queues_ = options.queues;
  const std::string args = with_queues(devargs, options.queues);

  int rc = rte_dev_probe(args.c_str());
  if (rc < 0) {
    error = "rte_dev_probe(" + args + "): " + errtext(rc);
    return nullptr;
  }
  port->probed_ = true;
  rc = rte_eth_dev_get_port_by_name(port->name_.c_str(), &port->id_);
  if (rc < 0) {
    error = "no ethdev named " + port->name_ + " after probing " + devargs + ": " + errtext(rc);
    return nullptr;
  }

  // Mempool names are memzone names: short and unique in the process.
  char pool_name[RTE_MEMPOOL_NAMESIZE];
  std::snprintf(pool_name, sizeof(pool_name), "twp%u_%u", static_cast<unsigned>(port->id_),
                pool_serial.fetch_add(1));
  const int socket = rte_eth_dev_socket_id(port->id_);
  // Every queue's descriptors may hold a buffer: room for them all plus
  // a burst in flight per queue, as 2^k - 1.
  std::uint32_t mbufs = options.mbufs;
  const std::uint32_t need = std::uint32_t{options.queues} *
                             (std::uint32_t{options.rx_descriptors} + options.tx_descriptors + 64U);
  while (mbufs < need) mbufs = mbufs * 2 + 1;
  port->pool_ =
      rte_pktmbuf_pool_create(pool_name, mbufs, options.mbuf_cache, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                              socket < 0 ? SOCKET_ID_ANY : socket);
  if (port->pool_ == nullptr) {
    error = "rte_pktmbuf_pool_create(" + std::to_string(mbufs) + " mbufs): " + errtext(rte_errno);
    return nullptr;
  }

  rte_eth_dev_info info{};
  rc = rte_eth_dev_info_get(port->id_, &info);
  if (rc < 0) {
    error = "rte_eth_dev_info_get(" + port->name_ + "): " + errtext(rc);
    return nullptr;
  }
  const std::uint16_t nq = options.queues;
  if (info.max_rx_queues < nq || info.max_tx_queues < nq) {
    error = "port " + port->name_ + " has at most " + std::to_string(info.max_rx_queues) +
            " RX and " + std::to_string(info.max_tx_queues) + " TX queues; " + std::to_string(nq) +
            " workers need " + std::to_string(nq) + " of each";
    if (info.driver_name != nullptr &&
        std::string(info.driver_name).find("af_packet") != std::string::npos) {
      error += " (its devargs' qpairs= is below the worker count)";
    }
    return nullptr;
  }
  rte_eth_conf conf{};
  std::vector<std::uint8_t> key;
  const std::uint64_t rss_hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP |
                                                              RTE_ETH_RSS_UDP | RTE_ETH_RSS_SCTP);
  if (nq > 1 && rss_hf != 0) {
    key.resize(info.hash_key_size > 0 ? info.hash_key_size : 40);
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = kSymmetricKeyByte[i % 2];
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = key.data();
    conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<std::uint8_t>(key.size());
    conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
    port->rss_ = true;
  }
  rc = rte_eth_dev_configure(port->id_, nq, nq, &conf);
  if (rc < 0) {
    error = "rte_eth_dev_configure(" + port->name_ + ", " + std::to_string(nq) +
            " queues): " + errtext(rc);
    return nullptr;
  }
  port->configured_ = true;
  std::uint16_t rxd = options.rx_descriptors;
  std::uint16_t txd = options.tx_descriptors;
  rc = rte_eth_dev_adjust_nb_rx_tx_desc(port->id_, &rxd, &txd);
  if (rc < 0) {
    error = "rte_eth_dev_adjust_nb_rx_tx_desc(" + port->name_ + "): " + errtext(rc);
    return nullptr;
  }
  const unsigned queue_socket =
      socket < 0 ? static_cast<unsigned>(SOCKET_ID_ANY) : static_cast<unsigned>(socket);
  for (std::uint16_t q = 0; q < nq; ++q) {
    rc = rte_eth_rx_queue_setup(port->id_, q, rxd, queue_socket, nullptr, port->pool_);
    if (rc < 0) {
      error =
          "rte_eth_rx_queue_setup(" + port->name_ + ", " + std::to_string(q) + "): " + errtext(rc);
      return nullptr;
    }
    rc = rte_eth_tx_queue_setup(port->id_, q, txd, queue_socket, nullptr);
    if (rc < 0) {
      error =
          "rte_eth_tx_queue_setup(" + port->name_ + ", " + std::to_string(q) + "): " + errtext(rc);
      return nullptr;
    }
  }
  if (options.promiscuous) {
    rc = rte_eth_promiscuous_enable(port->id_);
    if (rc < 0) {
      error = "rte_eth_promiscuous_enable(" + port->name_ + "): " + errtext(rc);
      return nullptr;
    }
  }
  rc = rte_eth_dev_start(port->id_);
  if (rc < 0) {
    error = "rte_eth_dev_start(" + port->name_ + "): " + errtext(rc);
    return nullptr;
  }
  port->started_ = true;
  return port;
}

Port::~Port() {
  if (started_) rte_eth_dev_stop(id_);
  if (probed_) {
    rte_eth_dev_info info{};
    const bool have_info = rte_eth_dev_info_get(id_, &info) == 0 && info.device != nullptr;
    if (configured_) rte_eth_dev_close(id_);
    if (have_info) {
      rte_dev_remove(info.device);
    } else {
      rte_eal_hotplug_remove("vdev", name_.c_str());
    }
  }
  if (pool_ != nullptr) rte_mempool_free(pool_);
}

std::string Port::mac() const {
  rte_ether_addr a{};
  if (rte_eth_macaddr_get(id_, &a) != 0) return {};
  char buf[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(buf, sizeof(buf), &a);
  return buf;
}

PortStats Port::stats() const {
  rte_eth_stats s{};
  PortStats out;
  if (rte_eth_stats_get(id_, &s) != 0) return out;
  out.ipackets = s.ipackets;
  out.opackets = s.opackets;
  out.imissed = s.imissed;
  out.ierrors = s.ierrors;
  out.oerrors = s.oerrors;
  out.rx_nombuf = s.rx_nombuf;
  return out;
}

}  // namespace tierwall::dataplane::dpdk
