#include <stdexcept>
#include <string>
#include <vector>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {
namespace {

struct Segment {
  std::string bridge;
  std::string letter;     // container label prefix: "c" on br0, "d" on br1
  std::string v4_prefix;  // "10.88.0."
  std::string v6_prefix;  // "fd00:88::"
  std::string gw_v4;
  std::string gw_v6;
};

void add_containers(BridgeLab& lab, std::deque<BridgeLab::Container>& list, int count,
                    const Segment& segment) {
  for (int i = 0; i < count; ++i) {
    BridgeLab::Container& c = list.emplace_back(segment.letter + std::to_string(i));
    c.v4 = segment.v4_prefix + std::to_string(10 + i);
    c.v6 = segment.v6_prefix + std::to_string(10 + i);
    c.gw_v4 = segment.gw_v4;
    c.gw_v6 = segment.gw_v6;
    c.ifname = "eth0";
    c.bridge = segment.bridge;
    c.node_port = segment.bridge + "p" + std::to_string(i);
    veth(lab.node, c.node_port, c.ns, c.ifname);
    attach(lab.node, c.node_port, c.bridge);
    addr(c.ns, c.ifname, c.v4 + "/24");
    addr(c.ns, c.ifname, c.v6 + "/64");
    route(c.ns, "default via " + c.gw_v4);
    route(c.ns, "default via " + c.gw_v6);
  }
}

}  // namespace

BridgeLab::BridgeLab(BridgeLabOptions options) {
  if (options.br0_containers < 0 || options.br1_containers < 0 || options.br0_containers > 200 ||
      options.br1_containers > 200) {
    throw std::invalid_argument("BridgeLab: 0..200 containers per bridge");
  }
  sysctl(node, "net.ipv4.ip_forward", "1");
  sysctl(node, "net.ipv6.conf.all.forwarding", "1");
  if (options.bridge_nf_call) {
    sysctl(node, "net.bridge.bridge-nf-call-iptables", "1");
    sysctl(node, "net.bridge.bridge-nf-call-ip6tables", "1");
  }

  bridge(node, "br0");
  addr(node, "br0", br0_v4 + "/24");
  addr(node, "br0", br0_v6 + "/64");
  bridge(node, "br1");
  addr(node, "br1", br1_v4 + "/24");
  addr(node, "br1", br1_v6 + "/64");
  add_containers(*this, br0_containers, options.br0_containers,
                 {"br0", "c", "10.88.0.", "fd00:88::", br0_v4, br0_v6});
  add_containers(*this, br1_containers, options.br1_containers,
                 {"br1", "d", "10.89.0.", "fd00:89::", br1_v4, br1_v6});

  veth(node, uplink, world, world_ifname);
  addr(node, uplink, uplink_v4 + "/24");
  addr(node, uplink, uplink_v6 + "/64");
  addr(world, world_ifname, world_v4 + "/24");
  addr(world, world_ifname, world_v6 + "/64");
  for (const std::string& subnet : {br0_subnet_v4, br1_subnet_v4}) {
    route(world, subnet + " via " + uplink_v4);
  }
  for (const std::string& subnet : {br0_subnet_v6, br1_subnet_v6}) {
    route(world, subnet + " via " + uplink_v6);
  }

  // A bridge has carrier once one port forwards; an empty one never does.
  if (!br0_containers.empty()) wait_link_running(node, "br0");
  if (!br1_containers.empty()) wait_link_running(node, "br1");
  wait_link_running(node, uplink);
  wait_link_running(world, world_ifname);
  for (const auto* list : {&br0_containers, &br1_containers}) {
    for (const Container& c : *list) wait_link_running(c.ns, c.ifname);
  }
}

std::vector<const NetNs*> BridgeLab::namespaces() const {
  std::vector<const NetNs*> all = {&node, &world};
  for (const Container& c : br0_containers) all.push_back(&c.ns);
  for (const Container& c : br1_containers) all.push_back(&c.ns);
  return all;
}

}  // namespace tierwall::testsupport
