// The log hooks: deny and audit decisions and new connections of `log: true`
// flows reach NFLOG (the configured group) with the deciding rule and the
// generation encoded in the prefix, as the flow log will read them. A small
// nfnetlink_log listener over libmnl stands in for the flow-log reader.
#include <arpa/inet.h>
#include <chrono>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <poll.h>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace {

using namespace tierwall;
using testsupport::BridgeLab;
using testsupport::in_netns;
using testsupport::Outcome;

constexpr std::uint16_t kGroup = 77;

// Binds to one NFLOG group in the calling thread's namespace and collects
// the prefixes of the packets logged to it.
class NflogListener {
 public:
  explicit NflogListener(std::uint16_t group) {
    nl_ = mnl_socket_open(NETLINK_NETFILTER);
    if (nl_ == nullptr || mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
      throw std::runtime_error("cannot open nfnetlink socket");
    }
    config(group, [&](nlmsghdr* nlh) {
      nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
      mnl_attr_put(nlh, NFULA_CFG_CMD, sizeof cmd, &cmd);
    });
    config(group, [&](nlmsghdr* nlh) {
      nfulnl_msg_config_mode mode{};
      mode.copy_range = htonl(0);
      mode.copy_mode = NFULNL_COPY_META;
      mnl_attr_put(nlh, NFULA_CFG_MODE, sizeof mode, &mode);
    });
  }
  ~NflogListener() {
    if (nl_ != nullptr) mnl_socket_close(nl_);
  }
  NflogListener(const NflogListener&) = delete;
  NflogListener& operator=(const NflogListener&) = delete;

  // Prefixes received within `wait`.
  std::multiset<std::string> drain(std::chrono::milliseconds wait) {
    std::multiset<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{mnl_socket_get_fd(nl_), POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      const auto n = mnl_socket_recvfrom(nl_, buf.data(), buf.size());
      if (n <= 0) break;
      mnl_cb_run(buf.data(), static_cast<std::size_t>(n), 0, 0, &NflogListener::on_msg, &out);
    }
    return out;
  }

 private:
  template <typename Fill>
  void config(std::uint16_t group, Fill fill) {
    std::vector<char> buf(static_cast<std::size_t>(MNL_SOCKET_BUFFER_SIZE));
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++seq_;
    auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(group);
    fill(nlh);
    if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) throw std::runtime_error("sendto");
    const auto n = mnl_socket_recvfrom(nl_, buf.data(), buf.size());
    if (n < 0 ||
        mnl_cb_run(buf.data(), static_cast<std::size_t>(n), seq_, 0, nullptr, nullptr) < 0) {
      throw std::runtime_error("NFLOG config rejected");
    }
  }

  static int on_attr(const nlattr* attr, void* data) {
    if (mnl_attr_get_type(attr) == NFULA_PREFIX) {
      *static_cast<std::string*>(data) = mnl_attr_get_str(attr);
    }
    return MNL_CB_OK;
  }
  static int on_msg(const nlmsghdr* nlh, void* data) {
    std::string prefix;
    mnl_attr_parse(nlh, sizeof(nfgenmsg), &NflogListener::on_attr, &prefix);
    static_cast<std::multiset<std::string>*>(data)->insert(prefix);
    return MNL_CB_OK;
  }

  mnl_socket* nl_ = nullptr;
  std::uint32_t seq_ = 0;
};

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: logs}
spec:
  tiers:
    - {name: web, level: 10}
    - {name: api, level: 20, mode: audit}
  assignments:
    - {name: web, match: {labels: {role: web}}, tier: web}
    - {name: api, match: {labels: {role: api}}, tier: api}
  denies:
    - name: no-telnet
      from: {}
      to: {}
      ports: [tcp/23]
  flows:
    - name: web-https
      from: {tier: web}
      to: {tier: web}
      ports: [tcp/443]
      log: true
    - name: web-http
      from: {tier: web}
      to: {tier: web}
      ports: [tcp/80]
)";

TEST(NftNflog, DecisionsReachTheConfiguredGroupWithRuleAndGeneration) {
  if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  testsupport::BridgeLabOptions lab_options;
  lab_options.br0_containers = 4;
  lab_options.br1_containers = 0;
  lab_options.bridge_nf_call = true;
  BridgeLab lab(lab_options);
  auto& c0 = lab.br0_containers[0];
  auto& c1 = lab.br0_containers[1];
  auto& c2 = lab.br0_containers[2];
  auto& c3 = lab.br0_containers[3];

  const std::string inventory =
      "apiVersion: tierwall.io/v1\nkind: Inventory\n"
      "node: {name: n, addresses: [10.88.0.1]}\nendpoints:\n"
      "  - {name: w0, labels: {role: web}, addresses: [" +
      c0.v4 +
      "]}\n"
      "  - {name: w1, labels: {role: web}, addresses: [" +
      c1.v4 +
      "]}\n"
      "  - {name: a2, labels: {role: api}, addresses: [" +
      c2.v4 +
      "]}\n"
      "  - {name: a3, labels: {role: api}, addresses: [" +
      c3.v4 + "]}\n";
  policy::Diagnostics d;
  auto pol = policy::parse_policy(kPolicy, "logs.yaml", d);
  auto inv = identity::parse_inventory(inventory, "inv.yaml", d);
  ASSERT_TRUE(pol && inv);
  const auto rules = compiler::compile(*pol, *inv, 42, {*Cidr::parse("10.88.0.0/16")});
  const auto rule_id = [&](const char* name) {
    return rules.policy->find_rule(std::string_view(name))->id;
  };

  testsupport::TcpServer s443(c1.ns, c1.v4, 443), s80(c1.ns, c1.v4, 80), s23(c1.ns, c1.v4, 23);
  testsupport::TcpServer a80(c2.ns, c2.v4, 80), b80(c3.ns, c3.v4, 80);

  dataplane::nft::NftBackend::Config config;
  config.plan.log_group = kGroup;
  config.local_addresses = {*IpAddress::parse(lab.br0_v4)};
  std::unique_ptr<dataplane::nft::NftBackend> backend;
  std::unique_ptr<NflogListener> listener;
  in_netns(lab.node, [&] {
    auto opened = dataplane::nft::NftBackend::open(config);
    backend = std::move(std::get<std::unique_ptr<dataplane::nft::NftBackend>>(opened));
    listener = std::make_unique<NflogListener>(kGroup);
    return 0;
  });
  ASSERT_FALSE(in_netns(lab.node, [&] { return backend->apply(rules); }).has_value());

  using std::chrono::milliseconds;
  EXPECT_EQ(testsupport::tcp_probe(c0.ns, c1.v4, 443, milliseconds(1500)), Outcome::kOk);
  EXPECT_EQ(testsupport::tcp_probe(c0.ns, c1.v4, 80, milliseconds(1500)), Outcome::kOk);
  EXPECT_EQ(testsupport::tcp_probe(c0.ns, c1.v4, 23, milliseconds(300)), Outcome::kTimeout);
  // web -> api: default-deny, enforced (web enforces).
  EXPECT_EQ(testsupport::tcp_probe(c0.ns, c2.v4, 80, milliseconds(300)), Outcome::kTimeout);
  // api -> api: both ends in an audit tier, so the default deny is audited:
  // the connection passes and the log says audit.
  EXPECT_EQ(testsupport::tcp_probe(c2.ns, c3.v4, 80, milliseconds(1500)), Outcome::kOk);

  const auto got = in_netns(lab.node, [&] { return listener->drain(milliseconds(500)); });
  const auto tag = [](char v, dataplane::RuleId id) {
    return dataplane::nft::log_prefix(v, id, 42);
  };
  EXPECT_EQ(got.count(tag('l', rule_id("web-https"))), 1U) << "one log per new connection";
  EXPECT_EQ(got.count(tag('l', rule_id("web-http"))), 0U) << "flows without log: true are silent";
  EXPECT_GE(got.count(tag('d', rule_id("no-telnet"))), 1U);
  EXPECT_GE(got.count(tag('d', dataplane::kRuleDefaultDeny)), 1U);
  EXPECT_EQ(got.count(tag('a', dataplane::kRuleDefaultDeny)), 1U);
  for (const auto& p : got) {
    EXPECT_TRUE(dataplane::nft::parse_log_prefix(p).has_value()) << p;
  }
  in_netns(lab.node, [&] {
    backend->flush();
    backend.reset();
    listener.reset();
    return 0;
  });
}

}  // namespace
