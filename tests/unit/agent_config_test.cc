// The agent's config file: defaults, every field, located errors with
// did-you-mean, relative paths, and flags overriding the file.
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
dataplane: dpdk
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
  EXPECT_NE(out.find("agent.yaml:5:12: error: unknown dataplane 'dpdk'"), std::string::npos) << out;
  EXPECT_NE(out.find("agent.yaml:6:"), std::string::npos) << out;
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
