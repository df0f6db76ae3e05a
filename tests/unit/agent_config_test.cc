// The agent's config file: defaults, every field, located errors with
// did-you-mean, relative paths, and flags overriding the file.
#include <array>
#include <cstdint>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tierwall/agent/config.h"

namespace tierwall::agent {
namespace {

std::string text(const policy::Diagnostics& d) {
  std::ostringstream out;
  d.print(out);
  return out.str();
}

TEST(AgentConfig, EmptyFileGivesDefaults) {
  policy::Diagnostics diags;
  auto c = parse_config("", "/etc/tierwall/agent.yaml", diags);
  ASSERT_TRUE(c.has_value()) << text(diags);
  EXPECT_FALSE(c->node.name.empty());  // the host name
  EXPECT_TRUE(c->node.addresses.empty());
  EXPECT_TRUE(c->container_cidrs.empty());
  EXPECT_TRUE(c->policy.empty());
  EXPECT_FALSE(c->inventory);
  EXPECT_FALSE(c->runtime_socket);
  EXPECT_EQ(c->dataplane, "nft");
  EXPECT_EQ(c->nft.table, "tierwall");
  EXPECT_EQ(c->nft.log_group, 100);
  EXPECT_FALSE(c->flow_log_dir);
  EXPECT_EQ(c->api.socket, "/run/tierwall/api.sock");
  EXPECT_FALSE(c->api.group);
  EXPECT_EQ(c->metrics_address, "127.0.0.1:9641");
}

TEST(AgentConfig, EveryField) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(apiVersion: tierwall.io/v1
kind: AgentConfig
node: {name: n1, addresses: [192.0.2.10, "2001:db8::1"]}
containerCidrs: [10.88.0.0/16, "fd00::/64"]
policy: [policy.d, /abs/extra.yaml]
inventory: inv.yaml
runtime: {socket: /run/podman/podman.sock}
dataplane: nft
nft: {table: tw2, logGroup: 7}
flowLog: {dir: /var/log/tierwall}
api: {socket: /run/tw.sock, group: tierwall}
metrics: {address: "[::1]:9000"}
)",
                        "/etc/tierwall/agent.yaml", diags);
  ASSERT_TRUE(c.has_value()) << text(diags);
  EXPECT_EQ(c->node.name, "n1");
  ASSERT_EQ(c->node.addresses.size(), 2U);
  EXPECT_EQ(c->node.addresses[1].to_string(), "2001:db8::1");
  ASSERT_EQ(c->container_cidrs.size(), 2U);
  EXPECT_EQ(c->container_cidrs[0].to_string(), "10.88.0.0/16");
  EXPECT_EQ(c->policy, (std::vector<std::string>{"/etc/tierwall/policy.d", "/abs/extra.yaml"}));
  EXPECT_EQ(c->inventory, "/etc/tierwall/inv.yaml");
  EXPECT_EQ(c->runtime_socket, "/run/podman/podman.sock");
  EXPECT_EQ(c->nft.table, "tw2");
  EXPECT_EQ(c->nft.log_group, 7);
  EXPECT_EQ(c->flow_log_dir, "/var/log/tierwall");
  EXPECT_EQ(c->api.socket, "/run/tw.sock");
  EXPECT_EQ(c->api.group, "tierwall");
  EXPECT_EQ(c->metrics_address, "[::1]:9000");
}

TEST(AgentConfig, ErrorsAreLocatedWithDidYouMean) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(node: {name: n1}
containerCidr: [10.88.0.0/16]
nft: {table: t, logGroup: 70000}
containerCidrs: [10.88.0.1/16, nope]
dataplane: vpp
metrics: {address: "localhost"}
)",
                        "agent.yaml", diags);
  EXPECT_FALSE(c.has_value());
  const auto out = text(diags);
  EXPECT_NE(out.find("agent.yaml:2:1: error: unknown key 'containerCidr'"), std::string::npos)
      << out;
  EXPECT_NE(out.find("did you mean 'containerCidrs'"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:3:"), std::string::npos) << out;
  EXPECT_NE(out.find("0..65535"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:4:18: error: invalid container CIDR '10.88.0.1/16'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("invalid container CIDR 'nope'"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:5:12: error: unknown dataplane 'vpp'; the agent supports 'nft' "
                     "and 'dpdk'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:6:"), std::string::npos) << out;
}

TEST(AgentConfig, NftOverlay) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
nft:
  overlay:
    devices: [tw-vx0]
    peers: [192.0.2.11, "2001:db8::12"]
    port: 8472
)",
                        "agent.yaml", diags);
  ASSERT_TRUE(c.has_value()) << text(diags);
  EXPECT_EQ(c->nft.table, "tierwall");
  EXPECT_EQ(c->nft.overlay.devices, std::vector<std::string>{"tw-vx0"});
  ASSERT_EQ(c->nft.overlay.peers.size(), 2U);
  EXPECT_EQ(c->nft.overlay.peers[1].to_string(), "2001:db8::12");
  EXPECT_EQ(c->nft.overlay.port, 8472);
  // Without the block: no overlay.
  policy::Diagnostics none;
  auto d = parse_config("policy: p.yaml\n", "agent.yaml", none);
  ASSERT_TRUE(d.has_value()) << text(none);
  EXPECT_TRUE(d->nft.overlay.devices.empty());
}

TEST(AgentConfig, NftOverlayErrorsAreLocated) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
nft:
  overlay:
    devices: [tw-vx0, tw-vx0, a-name-far-too-long-for-linux]
    peers: [192.0.2.11, nope, 192.0.2.11]
    port: 0
    mtu: 1450
)",
                        "agent.yaml", diags);
  EXPECT_FALSE(c.has_value());
  const auto out = text(diags);
  EXPECT_NE(out.find("agent.yaml:4:23: error: overlay device 'tw-vx0' is listed twice"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:4:31: error: invalid interface name"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:5:25: error: invalid overlay peer address 'nope'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("overlay peer 192.0.2.11 is listed twice"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:6:11: error: nft.overlay.port 0 is not in 1..65535"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:7:5: error: unknown key 'mtu'"), std::string::npos) << out;

  // Both lists are required: an overlay without peers accepts VXLAN from no
  // node, one without devices tags nothing.
  policy::Diagnostics missing;
  EXPECT_FALSE(
      parse_config("policy: p.yaml\nnft: {overlay: {devices: [vx0]}}\n", "a.yaml", missing));
  EXPECT_NE(text(missing).find("peers"), std::string::npos) << text(missing);
  policy::Diagnostics empty;
  EXPECT_FALSE(parse_config("policy: p.yaml\nnft: {overlay: {devices: [vx0], peers: []}}\n",
                            "a.yaml", empty));
  EXPECT_NE(text(empty).find("nft.overlay.peers is empty"), std::string::npos) << text(empty);
}

TEST(AgentConfig, DpdkSection) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
dataplane: dpdk
dpdk:
  ealArgs: [-l, "3", --no-huge, -m, "512"]
  ports:
    - {devargs: "net_af_packet0,iface=veth0", name: web}
    - devargs: "net_af_packet1,iface=veth1"
  workers: 2
  idleSleepUs: 20
  flowTableCapacity: 1048576
)",
                        "/etc/tierwall/a.yaml", diags);
  ASSERT_TRUE(c) << text(diags);
  EXPECT_EQ(c->dataplane, "dpdk");
  ASSERT_TRUE(c->dpdk.eal_args);
  EXPECT_EQ(*c->dpdk.eal_args, (std::vector<std::string>{"-l", "3", "--no-huge", "-m", "512"}));
  ASSERT_EQ(c->dpdk.ports.size(), 2U);
  EXPECT_EQ(c->dpdk.ports[0].devargs, "net_af_packet0,iface=veth0");
  EXPECT_EQ(c->dpdk.ports[0].name, "web");
  EXPECT_EQ(c->dpdk.ports[1].devargs, "net_af_packet1,iface=veth1");
  EXPECT_EQ(c->dpdk.ports[1].name, "");
  EXPECT_EQ(c->dpdk.workers, 2U);
  EXPECT_EQ(c->dpdk.idle_sleep_us, 20U);
  EXPECT_EQ(c->dpdk.flow_capacity, 1048576U);
  EXPECT_TRUE(apply_overrides(*c, Overrides{}, diags)) << text(diags);

  // Defaults: no EAL arguments given (the dataplane's own), busy poll.
  policy::Diagnostics d2;
  auto dflt = parse_config("dpdk: {ports: [{devargs: net_null0}]}\n", "a.yaml", d2);
  ASSERT_TRUE(dflt) << text(d2);
  EXPECT_EQ(dflt->dataplane, "nft");
  EXPECT_FALSE(dflt->dpdk.eal_args);
  EXPECT_EQ(dflt->dpdk.workers, 1U);
  EXPECT_EQ(dflt->dpdk.idle_sleep_us, 0U);
  EXPECT_EQ(dflt->dpdk.flow_capacity, kDefaultDpdkFlowCapacity);
}

TEST(AgentConfig, DpdkErrorsAreLocated) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(dpdk:
  ealArg: [-l, "0"]
  ports:
    - {devarg: "net_af_packet0,iface=veth0"}
    - {devargs: ""}
  idleSleepUs: -1
  flowTableCapacity: 10
  workers: 0
)",
                        "agent.yaml", diags);
  EXPECT_FALSE(c);
  const auto out = text(diags);
  EXPECT_NE(out.find("agent.yaml:2:3: error: unknown key 'ealArg'"), std::string::npos) << out;
  EXPECT_NE(out.find("did you mean 'ealArgs'"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:4:8: error: unknown key 'devarg'"), std::string::npos) << out;
  EXPECT_NE(out.find("did you mean 'devargs'"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:5:17: error: dpdk.ports[].devargs must not be empty"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:6:16: error: dpdk.idleSleepUs -1 is not in 0..1000000"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:7:22: error: dpdk.flowTableCapacity 10"), std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:8:12: error: dpdk.workers 0 is not in 1..16"), std::string::npos)
      << out;
  policy::Diagnostics many_workers;
  EXPECT_FALSE(
      parse_config("dpdk: {ports: [{devargs: net_null0}], workers: 17}\n", "a.yaml", many_workers));
  EXPECT_NE(text(many_workers).find("dpdk.workers 17 is not in 1..16"), std::string::npos)
      << text(many_workers);

  policy::Diagnostics many;
  std::string nine = "dpdk:\n  ports:\n";
  for (int i = 0; i < 9; ++i) nine += "    - {devargs: net_null" + std::to_string(i) + "}\n";
  EXPECT_FALSE(parse_config(nine, "a.yaml", many));
  EXPECT_NE(text(many).find("a.yaml:3:5: error: dpdk.ports has 9 ports"), std::string::npos)
      << text(many);
}

TEST(AgentConfig, DpdkOverlayUplink) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
dataplane: dpdk
dpdk:
  ports:
    - {devargs: "net_af_packet0,iface=c0", name: web}
    - devargs: "net_af_packet1,iface=uplink"
      name: uplink
      overlay:
        localVtep: 192.168.77.1
        vni: 4242
        udpPort: 8472
        peers:
          - {vtep: 192.168.77.2, mac: "02:00:00:00:77:02"}
          - {vtep: 192.168.77.3, mac: "0A:BB:cc:dd:ee:ff"}
        macAgeingSeconds: 60
    - devargs: "net_af_packet2,iface=uplink6"
      overlay:
        localVtep: "fd00:77::1"
        vni: 16777215
        peers: [{vtep: "fd00:77::2", mac: "02:00:00:00:77:12"}]
)",
                        "/etc/tierwall/a.yaml", diags);
  ASSERT_TRUE(c) << text(diags);
  ASSERT_EQ(c->dpdk.ports.size(), 3U);
  EXPECT_FALSE(c->dpdk.ports[0].overlay);
  ASSERT_TRUE(c->dpdk.ports[1].overlay);
  const auto& o = *c->dpdk.ports[1].overlay;
  EXPECT_EQ(o.local_vtep.to_string(), "192.168.77.1");
  EXPECT_EQ(o.vni, 4242U);
  EXPECT_EQ(o.udp_port, 8472);
  EXPECT_EQ(o.mac_ageing_seconds, 60U);
  ASSERT_EQ(o.peers.size(), 2U);
  EXPECT_EQ(o.peers[0].vtep.to_string(), "192.168.77.2");
  EXPECT_EQ(o.peers[0].mac, (std::array<std::uint8_t, 6>{0x02, 0, 0, 0, 0x77, 0x02}));
  EXPECT_EQ(o.peers[1].mac, (std::array<std::uint8_t, 6>{0x0a, 0xbb, 0xcc, 0xdd, 0xee, 0xff}));
  // Defaults: the IANA port, 300 s ageing.
  ASSERT_TRUE(c->dpdk.ports[2].overlay);
  const auto& v6 = *c->dpdk.ports[2].overlay;
  EXPECT_FALSE(v6.local_vtep.is_v4());
  EXPECT_EQ(v6.vni, kMaxVni);
  EXPECT_EQ(v6.udp_port, kDefaultVxlanUdpPort);
  EXPECT_EQ(v6.mac_ageing_seconds, kDefaultMacAgeingSeconds);
  ASSERT_EQ(v6.peers.size(), 1U);
  EXPECT_EQ(v6.peers[0].vtep.to_string(), "fd00:77::2");
  EXPECT_TRUE(apply_overrides(*c, Overrides{}, diags)) << text(diags);
}

TEST(AgentConfig, DpdkOverlayErrorsAreLocated) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(dpdk:
  ports:
    - {devargs: net_null0}
    - devargs: net_null1
      overlay:
        localVtep: 192.168.77.300
        vni: 16777216
        udpPort: 0
        macAgeingSecond: 10
        peers: [{vtep: 192.168.77.2, mac: "02:00:00:00:77:02"}]
    - devargs: net_null2
      overlay:
        localVtep: 192.168.77.1
        vni: 7
        peers:
          - {vtep: "fd00::2", mac: "02:00:00:00:77:02"}
          - {vtep: 192.168.77.2, mac: "02:00:00:00:77:02"}
          - {vtep: 192.168.77.2, mac: "02:00:00:00:77:03"}
          - {vtep: 192.168.77.1, mac: "02:00:00:00:77:04"}
          - {vtep: 192.168.77.5, mac: "01:00:5e:00:00:01"}
          - {vtep: 192.168.77.6, mac: "02:00:00:00:77"}
          - {vtep: 224.0.0.1, mac: "02:00:00:00:77:07"}
          - {vtep: 192.168.77.8}
          - {vtep: 192.168.77.9, mac: "02:00:00:00:77:09", vni: 1}
    - devargs: net_null3
      overlay: {vni: 1, peers: []}
    - devargs: net_null4
      overlay: {localVtep: 10.0.0.1, vni: 1, peers: [{vtep: 10.0.0.2, mac: "02:00:00:00:00:02"}]}
      overlay: {localVtep: 10.0.0.1, vni: 2, peers: [{vtep: 10.0.0.3, mac: "02:00:00:00:00:03"}]}
)",
                        "agent.yaml", diags);
  EXPECT_FALSE(c);
  const auto out = text(diags);
  auto has = [&](const std::string& s) { return out.find(s) != std::string::npos; };
  EXPECT_TRUE(
      has("agent.yaml:6:20: error: invalid overlay.localVtep '192.168.77.300': not an "
          "IPv4 or IPv6 address"))
      << out;
  EXPECT_TRUE(
      has("agent.yaml:7:14: error: overlay.vni 16777216 does not fit in 24 bits "
          "(0..16777215)"))
      << out;
  EXPECT_TRUE(has("agent.yaml:8:18: error: overlay.udpPort 0 is not in 1..65535")) << out;
  EXPECT_TRUE(has("agent.yaml:9:9: error: unknown key 'macAgeingSecond'")) << out;
  EXPECT_TRUE(has("did you mean 'macAgeingSeconds'")) << out;
  EXPECT_TRUE(
      has("agent.yaml:16:20: error: overlay peer fd00::2 is IPv6 but localVtep "
          "192.168.77.1 is IPv4"))
      << out;
  EXPECT_TRUE(
      has("agent.yaml:18:20: error: overlay peer 192.168.77.2 is listed twice (first at "
          "17:20)"))
      << out;
  EXPECT_TRUE(has("agent.yaml:19:20: error: overlay peer 192.168.77.1 is the localVtep itself"))
      << out;
  EXPECT_TRUE(
      has("agent.yaml:20:39: error: invalid overlay.peers[].mac '01:00:5e:00:00:01': "
          "frames to a peer need a unicast MAC"))
      << out;
  EXPECT_TRUE(
      has("agent.yaml:21:39: error: invalid overlay.peers[].mac '02:00:00:00:77': "
          "expected aa:bb:cc:dd:ee:ff"))
      << out;
  EXPECT_TRUE(
      has("agent.yaml:22:20: error: invalid overlay.peers[].vtep '224.0.0.1': a VTEP "
          "needs a unicast address"))
      << out;
  EXPECT_TRUE(has("agent.yaml:23:13: error: an overlay peer is missing required key 'mac'")) << out;
  EXPECT_TRUE(has("agent.yaml:24:60: error: unknown key 'vni'")) << out;
  EXPECT_TRUE(
      has("agent.yaml:26:16: error: dpdk.ports[].overlay is missing required key "
          "'localVtep'"))
      << out;
  EXPECT_TRUE(has("agent.yaml:26:32: error: overlay.peers has 0 peers; an uplink needs 1 to 255"))
      << out;
  // Two overlays on one port.
  EXPECT_TRUE(has("agent.yaml:29:7: error: duplicate key 'overlay' in a DPDK port")) << out;

  // An uplink needs a container port to bridge to.
  policy::Diagnostics alone;
  EXPECT_FALSE(parse_config(R"(dpdk:
  ports:
    - devargs: net_null0
      overlay: {localVtep: 10.0.0.1, vni: 1, peers: [{vtep: 10.0.0.2, mac: "02:00:00:00:00:02"}]}
)",
                            "a.yaml", alone));
  EXPECT_NE(text(alone).find("a.yaml:4:16: error: every DPDK port is an overlay uplink: an "
                             "uplink needs at least one container port"),
            std::string::npos)
      << text(alone);

  // An uplink with several workers: its queues would be spread by the outer
  // header, a container port's by the inner packet.
  policy::Diagnostics workers;
  EXPECT_FALSE(parse_config(R"(dpdk:
  ports:
    - devargs: net_null0
    - devargs: net_null1
      overlay: {localVtep: 10.0.0.1, vni: 1, peers: [{vtep: 10.0.0.2, mac: "02:00:00:00:00:02"}]}
  workers: 2
)",
                            "a.yaml", workers));
  EXPECT_NE(text(workers).find("a.yaml:6:12: error: dpdk.workers 2 with an overlay uplink: an "
                               "uplink needs workers: 1"),
            std::string::npos)
      << text(workers);

  // Required keys, and a peer list that is too long.
  policy::Diagnostics bare;
  EXPECT_FALSE(
      parse_config("dpdk: {ports: [{devargs: a}, {devargs: b, overlay: {}}]}\n", "a.yaml", bare));
  const auto b = text(bare);
  EXPECT_NE(b.find("missing required key 'localVtep'"), std::string::npos) << b;
  EXPECT_NE(b.find("missing required key 'vni'"), std::string::npos) << b;
  EXPECT_NE(b.find("missing required key 'peers'"), std::string::npos) << b;
  std::string many =
      "dpdk:\n  ports:\n    - {devargs: a}\n    - devargs: b\n      overlay:\n"
      "        localVtep: 10.1.0.1\n        vni: 1\n        peers:\n";
  for (int i = 0; i < 256; ++i) {
    many += "          - {vtep: 10.2." + std::to_string(i / 200) + "." + std::to_string(i % 200) +
            ", mac: \"02:00:00:00:00:02\"}\n";
  }
  policy::Diagnostics too_many;
  EXPECT_FALSE(parse_config(many, "a.yaml", too_many));
  EXPECT_NE(text(too_many).find("a.yaml:9:11: error: overlay.peers has 256 peers; an uplink needs "
                                "1 to 255"),
            std::string::npos)
      << text(too_many);
}

TEST(AgentConfig, DataplaneFlagOverridesTheFile) {
  policy::Diagnostics diags;
  auto c = parse_config("policy: p.yaml\ndpdk: {ports: [{devargs: net_null0}]}\n", "a.yaml", diags);
  ASSERT_TRUE(c) << text(diags);
  Overrides flags;
  flags.dataplane = "dpdk";
  ASSERT_TRUE(apply_overrides(*c, flags, diags)) << text(diags);
  EXPECT_EQ(c->dataplane, "dpdk");

  // dpdk without ports, and an unknown value.
  auto bare = parse_config("policy: p.yaml\n", "a.yaml", diags);
  ASSERT_TRUE(bare);
  policy::Diagnostics d1;
  EXPECT_FALSE(apply_overrides(*bare, flags, d1));
  EXPECT_NE(text(d1).find("<command line>: error: the DPDK dataplane needs at least one port"),
            std::string::npos)
      << text(d1);
  policy::Diagnostics d2;
  flags.dataplane = "xdp";
  EXPECT_FALSE(apply_overrides(*bare, flags, d2));
  EXPECT_NE(text(d2).find("invalid --dataplane 'xdp': expected nft or dpdk"), std::string::npos)
      << text(d2);
}

TEST(AgentConfig, SyntaxErrorAndWrongKind) {
  policy::Diagnostics diags;
  EXPECT_FALSE(parse_config("node: [\n", "a.yaml", diags));
  EXPECT_TRUE(diags.has_errors());
  policy::Diagnostics d2;
  EXPECT_FALSE(parse_config("kind: SegmentationPolicy\n", "a.yaml", d2));
  EXPECT_NE(text(d2).find("a.yaml:1:7: error: kind must be 'AgentConfig'"), std::string::npos)
      << text(d2);
  policy::Diagnostics d3;
  EXPECT_FALSE(load_config("/nonexistent/agent.yaml", d3));
  EXPECT_TRUE(d3.has_errors());
}

TEST(AgentConfig, ApiRolesAndDisabledSocket) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
api:
  socket: ""
  group: tierwall
  roles:
    admin: {users: [alice, "1001"]}
    operator: {groups: tierwall}
    auditor: {users: [bob], groups: [audit, "600"]}
)",
                        "/etc/tierwall/a.yaml", diags);
  ASSERT_TRUE(c) << diags.items().front().to_string();
  EXPECT_EQ(c->api.socket, "");
  EXPECT_EQ(c->api.group, "tierwall");
  EXPECT_EQ(c->api.roles[2].users, (std::vector<std::string>{"alice", "1001"}));
  EXPECT_EQ(c->api.roles[1].groups, (std::vector<std::string>{"tierwall"}));
  EXPECT_EQ(c->api.roles[0].users, (std::vector<std::string>{"bob"}));
  EXPECT_EQ(c->api.roles[0].groups, (std::vector<std::string>{"audit", "600"}));

  policy::Diagnostics bad;
  EXPECT_FALSE(parse_config("api: {roles: {admins: {users: [a]}}}\n", "a.yaml", bad));
  ASSERT_TRUE(bad.has_errors());
  EXPECT_NE(bad.items().front().message.find("admin"), std::string::npos);
  policy::Diagnostics bad2;
  EXPECT_FALSE(parse_config("api: {roles: {admin: {user: [a]}}}\n", "a.yaml", bad2));
  EXPECT_TRUE(bad2.has_errors());
}

TEST(AgentConfig, FlowLogOptions) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(policy: p.yaml
flowLog:
  dir: flows
  key: /var/lib/tierwall/k
  fsync: every-record
  receiveBuffer: 65536
  ipfix: {collector: "[2001:db8::9]:4739"}
)",
                        "/etc/tierwall/a.yaml", diags);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->flow_log_dir, "/etc/tierwall/flows");
  EXPECT_EQ(c->flow_log_key, "/var/lib/tierwall/k");
  EXPECT_EQ(c->flow_log_fsync, "every-record");
  EXPECT_EQ(c->flow_log_receive_buffer, 65536);
  EXPECT_EQ(c->ipfix_collector, "[2001:db8::9]:4739");
  policy::Diagnostics bad;
  EXPECT_FALSE(parse_config("flowLog: {fsync: sometimes, receiveBuffer: 1}\n", "a.yaml", bad));
  EXPECT_EQ(bad.error_count(), 2U);
  // IPFIX without a flow log is refused.
  auto d = parse_config("policy: p.yaml\n", "/etc/a.yaml", diags);
  ASSERT_TRUE(d);
  Overrides o;
  o.ipfix = "127.0.0.1:4739";
  policy::Diagnostics flags;
  EXPECT_FALSE(apply_overrides(*d, o, flags));
}

TEST(AgentConfig, FlagsOverrideTheFile) {
  policy::Diagnostics diags;
  auto c = parse_config(
      "policy: p.yaml\ncontainerCidrs: [10.88.0.0/16]\nmetrics: {address: 127.0.0.1:1}\n",
      "/etc/a.yaml", diags);
  ASSERT_TRUE(c.has_value()) << text(diags);
  Overrides flags;
  flags.policy = {"other.yaml"};
  flags.container_cidrs = {"10.89.0.0/16", "10.90.0.0/16"};
  flags.inventory = "inv.yaml";
  flags.runtime_socket = "/run/docker.sock";
  flags.api_socket = "/tmp/api.sock";
  flags.metrics = "0.0.0.0:9999";
  ASSERT_TRUE(apply_overrides(*c, flags, diags)) << text(diags);
  EXPECT_EQ(c->policy, std::vector<std::string>{"other.yaml"});
  ASSERT_EQ(c->container_cidrs.size(), 2U);
  EXPECT_EQ(c->container_cidrs[1].to_string(), "10.90.0.0/16");
  EXPECT_EQ(c->inventory, "inv.yaml");
  EXPECT_EQ(c->runtime_socket, "/run/docker.sock");
  EXPECT_EQ(c->api.socket, "/tmp/api.sock");
  EXPECT_EQ(c->metrics_address, "0.0.0.0:9999");

  // Unset flags keep the file's values.
  auto d = parse_config("policy: p.yaml\n", "/etc/a.yaml", diags);
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(apply_overrides(*d, Overrides{}, diags));
  EXPECT_EQ(d->policy, std::vector<std::string>{"/etc/p.yaml"});
}

TEST(AgentConfig, BadFlagsAndMissingPolicy) {
  AgentConfig c = default_config();
  Overrides flags;
  flags.container_cidrs = {"10.0.0.1/8"};
  flags.metrics = "9641";
  policy::Diagnostics diags;
  EXPECT_FALSE(apply_overrides(c, flags, diags));
  const auto out = text(diags);
  EXPECT_NE(out.find("<command line>: error: invalid --container-cidr '10.0.0.1/8'"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("invalid --metrics '9641'"), std::string::npos) << out;
  EXPECT_NE(out.find("no policy given"), std::string::npos) << out;
}

TEST(AgentConfig, HostPort) {
  EXPECT_EQ(parse_host_port("127.0.0.1:9641")->port, 9641);
  EXPECT_EQ(parse_host_port("[::1]:80")->host, "::1");
  EXPECT_EQ(parse_host_port("localhost:0")->port, 0);
  EXPECT_FALSE(parse_host_port("::1:80"));
  EXPECT_FALSE(parse_host_port("host:70000"));
  EXPECT_FALSE(parse_host_port(":80"));
  EXPECT_FALSE(parse_host_port("host:"));
}

}  // namespace
TEST(AgentConfig, ClusterSection) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(node: {name: node-a}
cluster:
  store: ["http://10.0.0.1:2379,http://10.0.0.2:2379", "https://10.0.0.3:2379"]
  name: prod
  user: tierwall-node-node-a
  passwordFile: etcd.pw
  ca: ca.pem
  cert: node.pem
  key: node-key.pem
  leaseTtl: 6
)",
                        "/etc/tierwall/agent.yaml", diags);
  ASSERT_TRUE(c.has_value()) << text(diags);
  EXPECT_TRUE(c->cluster_mode());
  EXPECT_EQ(c->cluster.store,
            (std::vector<std::string>{"http://10.0.0.1:2379", "http://10.0.0.2:2379",
                                      "https://10.0.0.3:2379"}));
  EXPECT_EQ(c->cluster.name, "prod");
  EXPECT_EQ(c->cluster.user, "tierwall-node-node-a");
  EXPECT_EQ(c->cluster.password_file, "/etc/tierwall/etcd.pw");
  EXPECT_EQ(c->cluster.ca_file, "/etc/tierwall/ca.pem");
  EXPECT_EQ(c->cluster.lease_ttl_seconds, 6);
  // No local policy is needed in cluster mode.
  EXPECT_TRUE(apply_overrides(*c, Overrides{}, diags)) << text(diags);
}

TEST(AgentConfig, ClusterErrorsAreLocated) {
  policy::Diagnostics diags;
  auto c = parse_config(R"(cluster:
  store: ftp://x
  name: Prod_1
  cert: node.pem
  leaseTtl: 1
  lease: 5
)",
                        "agent.yaml", diags);
  EXPECT_FALSE(c.has_value());
  const std::string out = text(diags);
  EXPECT_NE(out.find("agent.yaml:2:10: error: invalid cluster.store 'ftp://x'"), std::string::npos)
      << out;
  EXPECT_NE(out.find("agent.yaml:3:9: error: invalid cluster.name 'Prod_1'"), std::string::npos)
      << out;
  EXPECT_NE(out.find("cluster.cert and cluster.key go together"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:5:13: error: cluster.leaseTtl must be between 2 and 3600"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("leaseTtl"), std::string::npos) << out;  // did-you-mean for `lease`
}

TEST(AgentConfig, StoreFlagsAndTheOnePolicyRule) {
  policy::Diagnostics diags;
  AgentConfig c = default_config();
  c.node.name = "node-a";
  Overrides flags;
  flags.store = "http://127.0.0.1:2379";
  flags.cluster = "staging";
  EXPECT_TRUE(apply_overrides(c, flags, diags)) << text(diags);
  EXPECT_EQ(c.cluster.name, "staging");
  EXPECT_EQ(c.cluster.store, std::vector<std::string>{"http://127.0.0.1:2379"});

  // A local policy and a store: refused, so a node never enforces anything
  // but what the cluster published.
  policy::Diagnostics both;
  flags.policy = {"/etc/tierwall/policy.d"};
  EXPECT_FALSE(apply_overrides(c, flags, both));
  EXPECT_NE(text(both).find("both a local policy and a cluster store"), std::string::npos)
      << text(both);

  policy::Diagnostics bad;
  AgentConfig d = default_config();
  d.node.name = "Node_A";
  Overrides f2;
  f2.store = "http://127.0.0.1:2379";
  f2.cluster = "UPPER";
  EXPECT_FALSE(apply_overrides(d, f2, bad));
  std::string out = text(bad);
  EXPECT_NE(out.find("invalid --cluster 'UPPER'"), std::string::npos) << out;
  EXPECT_NE(out.find("node name 'Node_A'"), std::string::npos) << out;

  policy::Diagnostics bad_url;
  AgentConfig e = default_config();
  Overrides f3;
  f3.store = "http://127.0.0.1:2379/path";
  EXPECT_FALSE(apply_overrides(e, f3, bad_url));
  out = text(bad_url);
  EXPECT_NE(out.find("<command line>: error: invalid --store"), std::string::npos) << out;
}

}  // namespace tierwall::agent
