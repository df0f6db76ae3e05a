#include "tierwall/dataplane/dpdk/port.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

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

}  // namespace

std::unique_ptr<Port> Port::open_vdev(const std::string& devargs, const PortOptions& options,
                                      std::string& error) {
  std::unique_ptr<Port> port(new Port());
  port->name_ = devargs.substr(0, devargs.find(','));

  int rc = rte_dev_probe(devargs.c_str());
  if (rc < 0) {
    error = "rte_dev_probe(" + devargs + "): " + errtext(rc);
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
  port->pool_ =
      rte_pktmbuf_pool_create(pool_name, options.mbufs, options.mbuf_cache, 0,
                              RTE_MBUF_DEFAULT_BUF_SIZE, socket < 0 ? SOCKET_ID_ANY : socket);
  if (port->pool_ == nullptr) {
    error = "rte_pktmbuf_pool_create(" + std::to_string(options.mbufs) +
            " mbufs): " + errtext(rte_errno);
    return nullptr;
  }

  rte_eth_conf conf{};
  rc = rte_eth_dev_configure(port->id_, 1, 1, &conf);
  if (rc < 0) {
    error = "rte_eth_dev_configure(" + port->name_ + "): " + errtext(rc);
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
  rc = rte_eth_rx_queue_setup(port->id_, 0, rxd, queue_socket, nullptr, port->pool_);
  if (rc < 0) {
    error = "rte_eth_rx_queue_setup(" + port->name_ + "): " + errtext(rc);
    return nullptr;
  }
  rc = rte_eth_tx_queue_setup(port->id_, 0, txd, queue_socket, nullptr);
  if (rc < 0) {
    error = "rte_eth_tx_queue_setup(" + port->name_ + "): " + errtext(rc);
    return nullptr;
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
