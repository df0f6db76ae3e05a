// Packet fixture table through the DPDK forwarding path: input frame ->
// verdict and output. Every row's frame is written to a pcap file that the
// pcap PMD replays into port 0 of a Bridge (tw_dpdk_forward) on a real EAL;
// port 1 writes what it transmits to another pcap file. After the run, port
// 1's file must hold exactly the rows expected to pass, each once and byte
// for byte (the bridge never rewrites a frame), port 0's file nothing, and
// the bridge's counters must account for every dropped row by its reason
// (policy, malformed, non-first fragment). docs/dpdk.md, "Forwarding".
//
// All frames enter on port 0 with a source MAC that never appears as a
// destination, so every forwarded frame floods to port 1: the table tests
// the policy and the parser, not the learning.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/dpdk.h"
#include "tests/common/frames.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/bridge.h"
#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/dataplane/dpdk/generation_store.h"
#include "tierwall/dataplane/dpdk/port.h"
#include "tierwall/testsupport/temp_dir.h"

namespace tierwall::dataplane::dpdk {
namespace {

using namespace testkit::frames;  // NOLINT(google-build-using-namespace): the fixture DSL

constexpr const char* kPolicy = R"(apiVersion: tierwall.io/v1
kind: SegmentationPolicy
metadata: {name: dpdk-fixtures}
spec:
  tiers:
    - {name: a, level: 10}
    - {name: b, level: 20}
  assignments:
    - {name: a, match: {labels: {role: a}}, tier: a}
    - {name: b, match: {labels: {role: b}}, tier: b}
  flows:
    - name: a-to-b
      from: {tier: a}
      to: {tier: b}
      ports: [tcp/8080, udp/53, sctp/3868, icmp/echo-request]
)";

constexpr const char* kInventory = R"(apiVersion: tierwall.io/v1
kind: Inventory
node: {name: node, addresses: [10.77.0.254]}
endpoints:
  - {name: a-1, labels: {role: a}, addresses: [10.77.0.1, "fd77::1"]}
  - {name: b-1, labels: {role: b}, addresses: [10.77.0.2, "fd77::2"]}
)";

enum class Expect : std::uint8_t { Pass, PolicyDrop, Malformed, Fragment };

struct Row {
  const char* name;
  Bytes frame;
  Expect expect;
};

constexpr const char* kA = "10.77.0.1";
constexpr const char* kB = "10.77.0.2";
constexpr std::uint8_t kAck = 0x10;
constexpr std::uint16_t kMoreFragments = 0x2000;

Bytes v4(std::uint8_t proto, const char* src, const char* dst, const Bytes& l4,
         std::uint16_t frag = 0) {
  return eth(0x0800, ipv4({.proto = proto, .src = src, .dst = dst, .frag = frag}, l4));
}
Bytes v6(std::uint8_t next, const char* src, const char* dst, const Bytes& l4) {
  return eth(0x86DD, ipv6(next, l4, src, dst));
}

std::vector<Row> rows() {
  Bytes arp = eth(0x0806, Bytes(28));
  Bytes truncated = v4(kTcp, kA, kB, tcp(40000, 8080, kSyn));
  truncated.resize(14 + 12);  // the IPv4 header cut short
  return {
      {"tcp syn a->b 8080 allowed", v4(kTcp, kA, kB, tcp(40000, 8080, kSyn)), Expect::Pass},
      {"tcp reply b->a of that flow", v4(kTcp, kB, kA, tcp(8080, 40000, kSyn | kAck)),
       Expect::Pass},
      {"tcp syn a->b 9090 denied", v4(kTcp, kA, kB, tcp(40001, 9090, kSyn)), Expect::PolicyDrop},
      {"tcp syn b->a 8080 denied (no flow that way)", v4(kTcp, kB, kA, tcp(40002, 8080, kSyn)),
       Expect::PolicyDrop},
      {"udp a->b 53 allowed", v4(kUdp, kA, kB, udp(5353, 53, Bytes(12))), Expect::Pass},
      {"udp a->b 54 denied", v4(kUdp, kA, kB, udp(5353, 54, Bytes(12))), Expect::PolicyDrop},
      {"sctp a->b 3868 allowed", v4(kSctp, kA, kB, sctp(3868, 3868)), Expect::Pass},
      {"icmp echo request a->b allowed", v4(kIcmp, kA, kB, icmp(8, 0, 7)), Expect::Pass},
      {"icmp echo reply b->a of that flow", v4(kIcmp, kB, kA, icmp(0, 0, 7)), Expect::Pass},
      {"icmp timestamp a->b denied", v4(kIcmp, kA, kB, icmp(13, 0, 9, 20)), Expect::PolicyDrop},
      {"unknown container 10.77.0.9 -> b quarantined",
       v4(kTcp, "10.77.0.9", kB, tcp(40003, 8080, kSyn)), Expect::PolicyDrop},
      {"802.1Q tagged tcp a->b 8080 allowed",
       eth(0x8100,
           tag(7, 0x0800, ipv4({.proto = kTcp, .src = kA, .dst = kB}, tcp(40004, 8080, kSyn)))),
       Expect::Pass},
      {"ipv6 tcp a->b 8080 allowed", v6(kTcp, "fd77::1", "fd77::2", tcp(40005, 8080, kSyn)),
       Expect::Pass},
      {"ipv6 with hop-by-hop, tcp a->b 9090 denied",
       v6(0, "fd77::1", "fd77::2", ext8(kTcp, tcp(40006, 9090, kSyn))), Expect::PolicyDrop},
      {"ipv6 neighbour solicitation passes without policy",
       v6(kIcmp6, "fd77::9", "ff02::1:ff00:2", icmp(135, 0, 0, 24)), Expect::Pass},
      {"arp passes without policy", arp, Expect::Pass},
      {"ipv4 non-first fragment dropped", v4(kUdp, kA, kB, Bytes(16), 0x0002 | kMoreFragments),
       Expect::Fragment},
      {"truncated ipv4 header dropped", truncated, Expect::Malformed},
  };
}

// Classic pcap (microsecond timestamps, Ethernet link type).
void put32le(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put16le(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void write_pcap(const std::filesystem::path& path, const std::vector<Bytes>& frames) {
  std::string out;
  put32le(out, 0xa1b2c3d4);
  put16le(out, 2);
  put16le(out, 4);
  put32le(out, 0);
  put32le(out, 0);
  put32le(out, 65535);
  put32le(out, 1);
  std::uint32_t usec = 0;
  for (const Bytes& f : frames) {
    put32le(out, 1);
    put32le(out, usec++);
    put32le(out, static_cast<std::uint32_t>(f.size()));
    put32le(out, static_cast<std::uint32_t>(f.size()));
    out.append(f.begin(), f.end());
  }
  std::ofstream(path, std::ios::binary) << out;
}
std::uint32_t get32le(const std::string& in, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(in[at + static_cast<std::size_t>(i)]);
  return v;
}
// The frames of a classic pcap file (either timestamp resolution); fails the test on a malformed
// file.
std::vector<Bytes> read_pcap(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<Bytes> frames;
  // Microsecond (ours) or nanosecond (the pcap PMD's) timestamps.
  if (in.size() < 24 || (get32le(in, 0) != 0xa1b2c3d4 && get32le(in, 0) != 0xa1b23c4d)) {
    ADD_FAILURE() << path << ": not a little-endian pcap (" << in.size() << " bytes)";
    return frames;
  }
  std::size_t at = 24;
  while (at + 16 <= in.size()) {
    const std::uint32_t len = get32le(in, at + 8);
    at += 16;
    if (at + len > in.size()) {
      ADD_FAILURE() << path << ": truncated record";
      break;
    }
    frames.emplace_back(in.begin() + static_cast<std::ptrdiff_t>(at),
                        in.begin() + static_cast<std::ptrdiff_t>(at + len));
    at += len;
  }
  return frames;
}

std::string hex(const Bytes& b) {
  std::string s;
  char buf[4];
  for (std::uint8_t c : b) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    s += buf;
  }
  return s;
}

TEST(DpdkPcapFixtures, EveryRowGivesItsVerdictAndOutput) {
  const std::string eal = Eal::init(Eal::default_args());
  ASSERT_TRUE(eal.empty()) << eal;

  auto generation = testkit::dpdk_generation(
      kPolicy, kInventory, 1, {*Cidr::parse("10.77.0.0/24"), *Cidr::parse("fd77::/64")});
  ASSERT_TRUE(generation);

  const std::vector<Row> table = rows();
  std::vector<Bytes> input;
  std::vector<Bytes> want_out;
  std::uint64_t want_policy = 0, want_malformed = 0, want_fragment = 0;
  for (const Row& r : table) {
    input.push_back(r.frame);
    switch (r.expect) {
      case Expect::Pass:
        want_out.push_back(r.frame);
        break;
      case Expect::PolicyDrop:
        ++want_policy;
        break;
      case Expect::Malformed:
        ++want_malformed;
        break;
      case Expect::Fragment:
        ++want_fragment;
        break;
    }
  }

  const tierwall::testsupport::TempDir dir("tw-pcap");
  const auto in0 = dir.path() / "in0.pcap", in1 = dir.path() / "in1.pcap";
  const auto out0 = dir.path() / "out0.pcap", out1 = dir.path() / "out1.pcap";
  write_pcap(in0, input);
  write_pcap(in1, {});

  GenerationStore store;
  store.publish(std::move(generation));
  BridgeCounters counters;
  {
    std::string error;
    auto port0 = Port::open_vdev(
        "net_pcap_fx0,rx_pcap=" + in0.string() + ",tx_pcap=" + out0.string(), {}, error);
    ASSERT_TRUE(port0) << error;
    auto port1 = Port::open_vdev(
        "net_pcap_fx1,rx_pcap=" + in1.string() + ",tx_pcap=" + out1.string(), {}, error);
    ASSERT_TRUE(port1) << error;
    Port* ports[] = {port0.get(), port1.get()};
    Bridge bridge(ports, store);
    store.online(bridge.reader());
    // The pcap PMD delivers the file once; poll until every frame came in
    // (and a few more times: nothing else may arrive).
    for (int i = 0; i < 1000 && bridge.counters().rx < input.size(); ++i) bridge.poll_once();
    for (int i = 0; i < 10; ++i) bridge.poll_once();
    store.offline(bridge.reader());
    counters = bridge.counters();
  }  // closing the ports flushes their tx_pcap files

  EXPECT_EQ(counters.rx, input.size());
  EXPECT_EQ(counters.policy_dropped, want_policy);
  EXPECT_EQ(counters.malformed, want_malformed);
  EXPECT_EQ(counters.fragments_dropped, want_fragment);
  EXPECT_EQ(counters.no_generation, 0U);

  const std::vector<Bytes> got = read_pcap(out1);
  EXPECT_TRUE(read_pcap(out0).empty()) << "a frame went back out of its ingress port";
  // Row by row: a passing row's frame leaves port 1 exactly once, byte for
  // byte; a dropped row's frame never. (Order across rows is not asserted:
  // the bridge sends frames it passes without policy before the burst's IP
  // frames are decided; within a flow nothing is reordered.)
  for (const Row& r : table) {
    const auto copies = static_cast<std::size_t>(std::count(got.begin(), got.end(), r.frame));
    if (r.expect == Expect::Pass) {
      EXPECT_EQ(copies, 1U) << r.name << ": not forwarded unchanged (" << hex(r.frame) << ")";
    } else {
      EXPECT_EQ(copies, 0U) << r.name << ": dropped row was forwarded";
    }
  }
  EXPECT_EQ(got.size(), want_out.size());
  std::printf(
      "fixtures: %zu rows, %zu forwarded, %llu policy drops, %llu malformed, %llu fragments\n",
      table.size(), got.size(), static_cast<unsigned long long>(counters.policy_dropped),
      static_cast<unsigned long long>(counters.malformed),
      static_cast<unsigned long long>(counters.fragments_dropped));
  store.synchronize();
}

}  // namespace
}  // namespace tierwall::dataplane::dpdk
