// tierwall-bench-dpdk: the DPDK dataplane's figures in one run (issue "DPDK
// dataplane": benchmark), TSC cycles per packet and Mpps per core, 64-byte
// frames, 10,000 rules, 100,000 endpoints, 1M flows:
//   established (flow-table hit), new connection (endpoint lookups +
//   decision + insert), the VXLAN-GBP path (outer + inner parse, decision on
//   the inner packet), each as parse + decide and decide only; the overlay
//   (the receiver's peer/VNI and tag checks, a source decided by its tag,
//   the sender's tagging and header writes); the
//   reference evaluator's linear scan as the floor; bytes per flow and per
//   endpoint; and Debian's dpdk-test-acl classifying the same policy
//   exported as an IP-expanded 5-tuple ACL over the traced packets.
//   tierwall-bench dpdk [--json] [--quick] [--flows N] [--acl-dir DIR]
// Shared setup with tierwall-bench-dpdkclassify: dpdk_bench_common.h.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "dpdk_bench_common.h"

#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/testsupport/temp_dir.h"

using namespace tierwall_bench;  // NOLINT(google-build-using-namespace): bench-local helpers

namespace {

constexpr double kTargetEstablished = 80;
constexpr double kTargetNew = 200;
constexpr double kTargetAclRatio = 3;

std::uint32_t v4_value(const IpAddress& a) {
  return (std::uint32_t{a.bytes[0]} << 24) | (std::uint32_t{a.bytes[1]} << 16) |
         (std::uint32_t{a.bytes[2]} << 8) | a.bytes[3];
}

std::string dotted(std::uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 0xff) + "." +
         std::to_string((a >> 8) & 0xff) + "." + std::to_string(a & 0xff);
}

// The benchmark policy's view of an IPv4 address, from its construction
// (dpdk_bench_common.h): an endpoint index with its tier and selectors, or a
// world address.
struct Peer {
  int endpoint = -1;  // -1: world
  dp::TierId tier = 0;
  std::array<dp::SelectorId, 2> selectors{};
};

Peer peer_of(std::uint32_t a) {
  Peer p;
  const std::int64_t i = static_cast<std::int64_t>(a) - endpoint_v4(0);
  if (i >= 0 && i < kEndpoints) {
    p.endpoint = static_cast<int>(i);
    p.tier = tier_of(p.endpoint);
    p.selectors = {static_cast<dp::SelectorId>(p.tier * kSelectorsPerTier +
                                               (p.endpoint / kTiers) % kSelectorsPerTier),
                   static_cast<dp::SelectorId>((kTiers + 1) * kSelectorsPerTier + p.endpoint % 50)};
  }
  return p;
}

bool matches(const dp::PeerMatch& m, const Peer& p, std::uint32_t addr) {
  if (m.entity == dp::PeerMatch::Entity::World) {
    if (p.endpoint >= 0) return false;
    return std::any_of(m.cidrs.begin(), m.cidrs.end(), [&](const Cidr& c) {
      const std::uint32_t mask = c.prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - c.prefix);
      return (addr & mask) == (v4_value(c.base) & mask);
    });
  }
  if (m.entity != dp::PeerMatch::Entity::Endpoint || p.endpoint < 0) return false;
  if (!m.tiers.empty() && !std::binary_search(m.tiers.begin(), m.tiers.end(), p.tier)) {
    return false;
  }
  return !m.selector || *m.selector == p.selectors[0] || *m.selector == p.selectors[1];
}

// The IP-expanded ACL for dpdk-test-acl: per rule (in evaluation order), one
// line per traced (src, dst) pair whose addresses the rule's peers select,
// with the rule's protocol and destination-port ranges; first match wins
// (test-acl gives line n priority MAX - n). Self and intra-tier become
// address-pair lines at their place in the order. Staged denies only turn
// an allow into audit (still passed) and are left out. `pass[n]` is line n's
// action: an enforced deny in an audit-mode tier passes.
struct AclExport {
  std::vector<std::string> lines;
  std::vector<bool> pass;
  std::size_t traced = 0;  // trace packets covered (a prefix of the trace)
};

AclExport export_acl(const Setup& s, std::span<const dpdk::FlowPacket> trace, std::size_t cap) {
  const dp::CompiledPolicy& pol = *s.rules.policy;
  auto audited = [&](const Peer& a, const Peer& b) {
    bool any = false;
    for (const Peer* p : {&a, &b}) {
      if (p->endpoint < 0) continue;
      any = true;
      if (pol.tiers[p->tier].mode != dp::Mode::Audit) return false;
    }
    return any || pol.mode == dp::Mode::Audit;
  };
  struct Pair {
    std::uint32_t src, dst;
    Peer ps, pd;
  };
  // Distinct pairs, bucketed by (src tier, dst tier), tier 0 = world.
  std::vector<Pair> pairs;
  std::unordered_map<std::uint64_t, std::size_t> seen;
  std::vector<std::vector<std::uint32_t>> bucket((kTiers + 1) * (kTiers + 1));
  auto add_pairs_until = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t a = v4_value(trace[i].src);
      const std::uint32_t b = v4_value(trace[i].dst);
      if (!seen.emplace((std::uint64_t{a} << 32) | b, pairs.size()).second) continue;
      const Peer pa = peer_of(a);
      const Peer pb = peer_of(b);
      bucket[static_cast<std::size_t>(pa.tier) * (kTiers + 1) + pb.tier].push_back(
          static_cast<std::uint32_t>(pairs.size()));
      pairs.push_back({a, b, pa, pb});
    }
  };
  auto port_text = [](const tierwall::PortMatch& pm) {
    if (pm.any) return std::string("0 : 65535 0 : 65535 0/0");
    return "0 : 65535 " + std::to_string(pm.lo) + " : " + std::to_string(pm.hi) + " " +
           std::to_string(pm.protocol) + "/0xff";
  };
  auto tiers_of = [&](const dp::PeerMatch& m) {
    std::vector<int> out;
    if (m.entity == dp::PeerMatch::Entity::World) {
      out.push_back(0);
    } else if (m.tiers.empty()) {
      for (int t = 1; t <= kTiers; ++t) out.push_back(t);
    } else {
      out.assign(m.tiers.begin(), m.tiers.end());
    }
    return out;
  };
  auto expand = [&](AclExport& out) {
    auto emit = [&](const Pair& p, const std::string& ports, bool pass) {
      out.lines.push_back("@" + dotted(p.src) + "/32 " + dotted(p.dst) + "/32 " + ports);
      out.pass.push_back(pass);
    };
    for (const Pair& p : pairs) {
      if (p.src == p.dst && p.ps.endpoint >= 0) emit(p, "0 : 65535 0 : 65535 0/0", true);
    }
    auto rule_lines = [&](const dp::Rule& r, bool deny) {
      for (int ts : tiers_of(r.from)) {
        for (int td : tiers_of(r.to)) {
          for (std::uint32_t k : bucket[static_cast<std::size_t>(ts * (kTiers + 1) + td)]) {
            const Pair& p = pairs[k];
            if (!matches(r.from, p.ps, p.src) || !matches(r.to, p.pd, p.dst)) continue;
            for (const auto& pm : r.ports) emit(p, port_text(pm), !deny || audited(p.ps, p.pd));
          }
        }
      }
    };
    for (const dp::Rule& r : pol.denies) {
      if (!r.staged) rule_lines(r, true);
    }
    for (const dp::Rule& r : pol.flows) rule_lines(r, false);
    if (pol.intra_tier_allow) {
      for (const Pair& p : pairs) {
        if (p.ps.endpoint >= 0 && p.pd.endpoint >= 0 && p.ps.tier == p.pd.tier &&
            pol.tiers[p.ps.tier].declared) {
          emit(p, "0 : 65535 0 : 65535 0/0", true);
        }
      }
    }
  };
  // Halve the traced prefix until the expansion fits the cap.
  std::size_t n = trace.size();
  for (;;) {
    pairs.clear();
    seen.clear();
    for (auto& b : bucket) b.clear();
    add_pairs_until(n);
    AclExport out;
    expand(out);
    if (out.lines.size() <= cap || n <= 256) {
      out.traced = n;
      return out;
    }
    n /= 2;
  }
}

struct AclRun {
  std::optional<double> cycles;
  std::string reason;  // why cycles is null
  std::size_t rules = 0;
  std::size_t traces = 0;
  std::size_t agree = 0;  // traced packets whose verdict equals ours
  double build_s = 0;
  std::vector<double> runs;  // each timing run's cycles/packet; cycles is the least
};

std::string find_test_acl() {
  if (const char* e = std::getenv("DPDK_TEST_ACL"); e != nullptr && *e != 0) return e;
  for (const char* d : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
    const std::string p = std::string(d) + "/dpdk-test-acl";
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

// Runs `cmd` through the shell; its stdout+stderr and exit status.
int run_capture(const std::string& cmd, std::string& out) {
  out.clear();
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return -1;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::string last_lines(const std::string& s, int n) {
  std::size_t pos = s.size();
  for (int i = 0; i <= n && pos > 0; ++i) {
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) return s;
  }
  return s.substr(pos + 1);
}

AclRun run_test_acl(const Setup& s, const dpdk::Generation& g,
                    std::span<const dpdk::FlowPacket> trace, std::size_t cap, int iters, int runs,
                    const std::string& keep_dir) {
  AclRun r;
  const std::string bin = find_test_acl();
  if (bin.empty()) {
    r.reason = "dpdk-test-acl not found (apt-get install dpdk, or set DPDK_TEST_ACL)";
    return r;
  }
  const AclExport acl = export_acl(s, trace, cap);
  r.rules = acl.lines.size();
  r.traces = acl.traced;
  // The files go in `keep_dir` (kept for running dpdk-test-acl by hand), or
  // in a temporary directory removed on return.
  std::optional<tierwall::testsupport::TempDir> tmp;
  std::string dir = keep_dir;
  try {
    if (dir.empty()) {
      tmp.emplace("tw-dpdk-bench");
      dir = tmp->path().string();
    } else {
      std::filesystem::create_directories(dir);
    }
  } catch (const std::exception& e) {
    r.reason = std::string("ACL directory: ") + e.what();
    return r;
  }
  const std::string rules_path = dir + "/rules.acl";
  const std::string trace_path = dir + "/trace.acl";
  {
    FILE* f = std::fopen(rules_path.c_str(), "w");
    FILE* t = std::fopen(trace_path.c_str(), "w");
    if (f == nullptr || t == nullptr) {
      r.reason = "cannot write the ACL files in " + dir;
      if (f != nullptr) std::fclose(f);
      if (t != nullptr) std::fclose(t);
      return r;
    }
    std::fprintf(f, "# tierwall-bench dpdk: IP-expanded 5-tuple ACL, %zu lines\n", r.rules);
    for (const auto& l : acl.lines) std::fprintf(f, "%s\n", l.c_str());
    for (std::size_t i = 0; i < acl.traced; ++i) {
      const auto& p = trace[i];
      std::fprintf(t, "0x%08x 0x%08x %u %u %u\n", v4_value(p.src), v4_value(p.dst),
                   unsigned{p.src_port}, unsigned{p.dst_port}, unsigned{p.protocol});
    }
    std::fclose(f);
    std::fclose(t);
  }
  const std::string base = "timeout 200 " + bin +
                           " --no-huge --no-pci -l 0 -m 2048 --log-level=lib.eal:error -- "
                           "--rulesf=" +
                           rules_path + " --tracef=" + trace_path +
                           " --rulenum=" + std::to_string(r.rules + 1) +
                           " --tracenum=" + std::to_string(acl.traced) + " --tracestep=32";
  // 1. Verdicts: one pass with every packet's matching line.
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  int rc = run_capture(base + " --iter=1 --verbose=2", out);
  r.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) {
    r.reason = "dpdk-test-acl exited with " + std::to_string(rc) + ": " + last_lines(out, 3);
    return r;
  }
  std::vector<std::int64_t> line_of(acl.traced, -2);
  for (std::size_t pos = 0; (pos = out.find("ipv4_5tuple: ", pos)) != std::string::npos;) {
    unsigned long k = 0, cat = 0, res = 0;
    if (std::sscanf(out.c_str() + pos, "ipv4_5tuple: %lu, category: %lu, result: %lu", &k, &cat,
                    &res) == 3 &&
        k >= 1 && k <= acl.traced) {
      line_of[k - 1] = res >= acl.lines.size() ? -1 : static_cast<std::int64_t>(res);
    }
    pos += 12;
  }
  for (std::size_t i = 0; i < acl.traced; ++i) {
    const auto& p = trace[i];
    const bool ours =
        g.classify(p.src, p.dst, p.protocol, p.decision_port).verdict != dp::Verdict::Deny;
    bool theirs = false;
    if (line_of[i] >= 0) {
      theirs = acl.pass[static_cast<std::size_t>(line_of[i])];
    } else if (line_of[i] == -1) {  // no line: default deny, audited or not
      const dpdk::FastDecision d = g.classify(p.src, p.dst, p.protocol, p.decision_port);
      theirs = d.kind == dp::RuleKind::DefaultDeny && d.verdict == dp::Verdict::Audit;
    } else {
      continue;  // not reported
    }
    if (ours == theirs) ++r.agree;
  }
  // 2. Timing: --iter passes over the trace, bursts of 32 (as our trace loop
  // below), `runs` times: its best, as ours is a best of repetitions. Its
  // figure moves far more from run to run than ours (its trie is in 4 KiB
  // pages under --no-huge), so every run's figure is kept too.
  for (int run = 0; run < runs; ++run) {
    rc = run_capture(base + " --iter=" + std::to_string(iters) + " --verbose=0", out);
    if (rc != 0) {
      r.reason = "dpdk-test-acl exited with " + std::to_string(rc) + ": " + last_lines(out, 3);
      break;
    }
    const std::size_t pos = out.find(" cycles/pkt");
    if (pos == std::string::npos) {
      r.reason = "no cycles/pkt in dpdk-test-acl output: " + last_lines(out, 3);
      break;
    }
    std::size_t b = out.rfind(", ", pos);
    b = b == std::string::npos ? 0 : b + 2;
    r.runs.push_back(std::strtod(out.c_str() + b, nullptr));
  }
  if (r.runs.size() == static_cast<std::size_t>(runs)) {
    r.cycles = *std::min_element(r.runs.begin(), r.runs.end());
  }
  return r;
}

std::string num(std::optional<double> v) {
  if (!v) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.2f", *v);
  return b;
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      o += ' ';
    } else {
      o += c;
    }
  }
  return o + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  bool quick = false;
  std::size_t flows = 0;
  std::string acl_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--flows" && i + 1 < argc) {
      flows = std::max<std::size_t>(1000, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--acl-dir" && i + 1 < argc) {
      acl_dir = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: tierwall-bench dpdk [--json] [--quick] [--flows N] [--acl-dir DIR]\n"
                   "  --acl-dir DIR  keep the exported ACL (DIR/rules.acl) and trace\n"
                   "                 (DIR/trace.acl) for running dpdk-test-acl by hand\n");
      return 2;
    }
  }
  if (flows == 0) flows = quick ? 100000 : 1000000;
  const int reps = quick ? 2 : 3;
  const double hz = tsc_hz(quick ? 50 : 200);

  std::mt19937 rng(20261125);
  const Setup s = make_ruleset(rng);
  auto built = dpdk::build_generation(s.rules);
  if (!built.generation) {
    std::fprintf(stderr, "tierwall-bench-dpdk: %s\n", built.error.c_str());
    return 1;
  }
  const dpdk::Generation& g = *built.generation;
  auto packets = make_flows(s, flows, rng);
  // A reply to source port 4789 would be a VXLAN packet to the parser.
  for (auto& p : packets) {
    if (p.src_port == dpdk::kVxlanPort) ++p.src_port;
  }
  // Replies of the same flows, shuffled: the established path.
  const std::vector<dpdk::FlowPacket> replies = shuffled_replies(packets, rng);
  // 64-byte frames of both, and the replies in VXLAN-GBP (IPv4 underlay,
  // group id = the sender's tier, as a tierwall peer node would send them).
  std::vector<std::uint8_t> syn_frames(flows * 64);
  std::vector<std::uint8_t> reply_frames(flows * 64);
  constexpr std::size_t kVxlanFrame = 64 + dpdk::kVxlanOverheadV4;
  std::vector<std::uint8_t> vxlan_frames(flows * kVxlanFrame);
  std::vector<std::uint8_t> vxlan_syn_frames(flows * kVxlanFrame);
  dpdk::VxlanGbpParams vp;
  vp.src_ip = v4(0xc0a80002U);
  vp.dst_ip = v4(0xc0a80001U);
  vp.vni = 42;
  for (std::size_t i = 0; i < flows; ++i) {
    write_frame64(&syn_frames[i * 64], packets[i]);
    write_frame64(&reply_frames[i * 64], replies[i]);
    for (int k = 0; k < 2; ++k) {
      const std::span<const std::uint8_t> inner(
          k == 0 ? &reply_frames[i * 64] : &syn_frames[i * 64], 64);
      const auto& fp = k == 0 ? replies[i] : packets[i];
      const Peer src = peer_of(v4_value(fp.src));
      vp.group_id = dpdk::group_of_tier(src.tier);
      vp.gbp = src.endpoint >= 0;
      vp.src_port = static_cast<std::uint16_t>(0xc000 | (i & 0x3fff));
      auto& dst = k == 0 ? vxlan_frames : vxlan_syn_frames;
      dpdk::encap_vxlan_gbp(std::span(&dst[i * kVxlanFrame], kVxlanFrame), inner, vp);
    }
  }

  std::uint64_t sink = 0;
  dpdk::FlowTableOptions fo;
  fo.capacity = flows * 2;
  dpdk::FlowTable table(fo);
  std::uint64_t now = 1;
  std::vector<dpdk::FlowResult> results(dpdk::FlowTable::kMaxBurst);
  std::vector<dpdk::FlowPacket> burst(dpdk::FlowTable::kMaxBurst);
  std::size_t parse_errors = 0;
  auto decide_bursts = [&](const std::vector<dpdk::FlowPacket>& in) {
    for (std::size_t i = 0; i < in.size(); i += dpdk::FlowTable::kMaxBurst) {
      const std::size_t n = std::min(dpdk::FlowTable::kMaxBurst, in.size() - i);
      table.process_burst(g, std::span(in.data() + i, n), results, now);
      for (std::size_t j = 0; j < n; ++j) sink += results[j].decision.rule_id;
    }
  };
  // Parse a burst of frames of `size` bytes, then decide it (the lcore loop).
  auto parse_decide_bursts = [&](const std::vector<std::uint8_t>& frames, std::size_t size) {
    const std::size_t count = frames.size() / size;
    for (std::size_t i = 0; i < count; i += dpdk::FlowTable::kMaxBurst) {
      const std::size_t n = std::min(dpdk::FlowTable::kMaxBurst, count - i);
      for (std::size_t j = 0; j < n; ++j) {
        const dpdk::PacketInfo info =
            dpdk::parse_packet(std::span(frames.data() + (i + j) * size, size));
        parse_errors += info.status != dpdk::ParseStatus::Ok;
        burst[j] = dpdk::flow_packet(info);
      }
      table.process_burst(g, std::span(burst.data(), n), results, now);
      for (std::size_t j = 0; j < n; ++j) sink += results[j].decision.rule_id;
    }
  };
  // The overlay receiver (docs/dpdk.md, "Overlay"): parse, peer/VNI check,
  // tag check against the generation, decide (the Bridge's uplink path
  // without the mbuf work).
  dpdk::OverlayConfig oc;
  oc.local_vtep = vp.dst_ip;
  oc.local_mac = vp.dst_mac;
  oc.vni = vp.vni;
  oc.peers = {{vp.src_ip, vp.src_mac}};
  std::string overlay_error;
  const auto overlay = dpdk::Overlay::create(oc, overlay_error);
  if (!overlay) {
    std::fprintf(stderr, "tierwall-bench-dpdk: %s\n", overlay_error.c_str());
    return 1;
  }
  std::size_t overlay_refused = 0;
  auto receive_bursts = [&](const std::vector<std::uint8_t>& frames, std::size_t size) {
    const std::size_t count = frames.size() / size;
    for (std::size_t i = 0; i < count; i += dpdk::FlowTable::kMaxBurst) {
      const std::size_t n = std::min(dpdk::FlowTable::kMaxBurst, count - i);
      for (std::size_t j = 0; j < n; ++j) {
        const std::span<const std::uint8_t> frame(frames.data() + (i + j) * size, size);
        const dpdk::PacketInfo info = dpdk::parse_packet(frame);
        parse_errors += info.status != dpdk::ParseStatus::Ok;
        overlay_refused += overlay->check_ingress(frame, info).accepted ? 0U : 1U;
        burst[j] = dpdk::flow_packet(info);
        if (info.has(dpdk::kFlagGbp)) burst[j].src_tag = info.group_id;
      }
      table.process_burst(g, std::span(burst.data(), n), results, now);
      for (std::size_t j = 0; j < n; ++j) {
        sink += results[j].decision.rule_id;
        overlay_refused += results[j].tag == dpdk::TagCheck::Spoofed ||
                           results[j].tag == dpdk::TagCheck::UnknownTag;
      }
    }
  };
  // New connections tagged by a trusted peer: sources known here (the tag
  // is checked against the endpoint's tier), and sources this node does not
  // know (decided by the tag: Generation::tagged_peer), from 100.64.0.0/10.
  std::vector<dpdk::FlowPacket> tag_checked = packets;
  std::vector<dpdk::FlowPacket> by_tag = packets;
  for (std::size_t i = 0; i < packets.size(); ++i) {
    const Peer src = peer_of(v4_value(packets[i].src));
    if (src.endpoint < 0) continue;
    tag_checked[i].src_tag = dpdk::group_of_tier(src.tier);
    by_tag[i].src_tag = tag_checked[i].src_tag;
    by_tag[i].src = v4(0x64400000U | static_cast<std::uint32_t>(i & 0x3fffffU));
  }
  auto clear = [&] { table.clear(); };
  auto nothing = [] {};

  // The overlay paths first: the new-connection paths below start from an
  // empty table and leave the flows the established paths hit.
  const double vxlan_rx_new = best_of(
      reps, flows, [&] { receive_bursts(vxlan_syn_frames, kVxlanFrame); }, clear);
  const double tag_checked_new = best_of(
      reps, flows, [&] { decide_bursts(tag_checked); }, clear);
  const double by_tag_new = best_of(
      reps, flows, [&] { decide_bursts(by_tag); }, clear);
  // The overlay sender: the source's group id under the generation, the
  // parameters, the 50 header bytes before the 64-byte frame.
  std::vector<std::uint8_t> encap_out(kVxlanFrame);
  const double encap = best_of(
      reps, flows,
      [&] {
        for (std::size_t i = 0; i < flows; ++i) {
          const std::uint16_t group = dpdk::egress_group(g, packets[i].src);
          const dpdk::VxlanGbpParams params =
              overlay->encap_params(0, group, static_cast<std::uint16_t>(0xc000U | (i & 0x3fffU)));
          sink += dpdk::write_vxlan_gbp_headers(
              std::span(encap_out.data(), dpdk::kVxlanOverheadV4),
              std::span<const std::uint8_t>(&syn_frames[i * 64], 64), params);
          sink += encap_out[46];
        }
      },
      nothing);
  // New connections: decide only, then parse + decide, into an empty table.
  const double new_decide = best_of(
      reps, flows, [&] { decide_bursts(packets); }, clear);
  const double new_full = best_of(
      reps, flows, [&] { parse_decide_bursts(syn_frames, 64); }, clear);
  const double vxlan_new = best_of(
      reps, flows, [&] { parse_decide_bursts(vxlan_syn_frames, kVxlanFrame); }, clear);
  const std::size_t remembered = table.live(now);
  now += 1000;
  // Established: the replies of the flows the SYNs left (the flows the
  // policy allowed; a denied SYN leaves none, and its "reply" is a new
  // connection, decided again). The mixed trace of every reply is timed
  // too, for comparison with earlier records.
  std::vector<dpdk::FlowPacket> est_replies;
  std::vector<std::uint8_t> est_frames;
  std::vector<std::uint8_t> est_vxlan_frames;
  est_replies.reserve(remembered);
  for (std::size_t i = 0; i < flows; ++i) {
    dpdk::FastDecision d;
    if (!table.peek(replies[i], now, d)) continue;
    est_replies.push_back(replies[i]);
    est_frames.insert(est_frames.end(), &reply_frames[i * 64], &reply_frames[(i + 1) * 64]);
    est_vxlan_frames.insert(est_vxlan_frames.end(), &vxlan_frames[i * kVxlanFrame],
                            &vxlan_frames[(i + 1) * kVxlanFrame]);
  }
  const std::size_t est_n = est_replies.size();
  const std::uint64_t hits0 = table.counters().hits;
  const double est_decide = best_of(
      reps, est_n, [&] { decide_bursts(est_replies); }, nothing);
  const double est_full = best_of(
      reps, est_n, [&] { parse_decide_bursts(est_frames, 64); }, nothing);
  const double vxlan_est = best_of(
      reps, est_n, [&] { parse_decide_bursts(est_vxlan_frames, kVxlanFrame); }, nothing);
  const double hit_share = static_cast<double>(table.counters().hits - hits0) /
                           (3.0 * reps * static_cast<double>(est_n));
  const double mixed_full = best_of(
      reps, flows, [&] { parse_decide_bursts(reply_frames, 64); }, nothing);
  // The overlay receiver on established flows (hits: no tag check).
  const double vxlan_rx_est = best_of(
      reps, est_n, [&] { receive_bursts(est_vxlan_frames, kVxlanFrame); }, nothing);
  // Parse alone (same frames, in order).
  const double parse64 = best_of(
      reps, flows,
      [&] {
        for (std::size_t i = 0; i < flows; ++i) {
          sink += dpdk::parse_packet(std::span(&reply_frames[i * 64], 64)).dst_port;
        }
      },
      nothing);
  const double parse_vxlan = best_of(
      reps, flows,
      [&] {
        for (std::size_t i = 0; i < flows; ++i) {
          sink +=
              dpdk::parse_packet(std::span(&vxlan_frames[i * kVxlanFrame], kVxlanFrame)).group_id;
        }
      },
      nothing);
  // The floor: the reference evaluator's linear scan.
  const std::size_t naive_n = std::min<std::size_t>(flows, quick ? 2000 : 20000);
  const double linear = best_of(
      1, naive_n,
      [&] {
        for (std::size_t i = 0; i < naive_n; ++i) {
          const auto& p = packets[i];
          sink += dp::decide(s.rules, dp::Connection{p.src, p.dst, p.protocol, p.decision_port})
                      .rule_id();
        }
      },
      nothing);

  // dpdk-test-acl on the same new-connection packets.
  const std::size_t trace_n = std::min<std::size_t>(flows, quick ? 8192 : 65536);
  const AclRun acl = run_test_acl(s, g, std::span(packets.data(), trace_n), quick ? 20000 : 120000,
                                  quick ? 20 : 200, reps, acl_dir);

  // Our decision alone (no flow table) on exactly test-acl's trace, as many
  // passes: the like-for-like figure (same packets, same working set).
  const std::size_t acl_n = acl.traces > 0 ? acl.traces : trace_n;
  const int trace_passes = quick ? 20 : 200;
  const double trace_decide = best_of(
      reps, acl_n * static_cast<std::size_t>(trace_passes),
      [&] {
        for (int pass = 0; pass < trace_passes; ++pass) {
          for (std::size_t i = 0; i < acl_n; i += 32) {
            const std::size_t n = std::min<std::size_t>(32, acl_n - i);
            for (std::size_t j = 0; j < n; ++j) {
              g.prefetch(packets[i + j].src);
              g.prefetch(packets[i + j].dst);
            }
            std::array<std::array<dpdk::PeerClass, 2>, 32> cls;
            for (std::size_t j = 0; j < n; ++j) {
              cls[j][0] = g.resolve(packets[i + j].src);
              cls[j][1] = g.resolve(packets[i + j].dst);
              g.prefetch_pair(cls[j][0], cls[j][1], packets[i + j].protocol);
            }
            for (std::size_t j = 0; j < n; ++j) {
              g.prefetch_candidates(cls[j][0], cls[j][1], packets[i + j].protocol);
            }
            for (std::size_t j = 0; j < n; ++j) {
              const auto& p = packets[i + j];
              sink += g.decide(cls[j][0], cls[j][1], p.protocol, p.decision_port).rule_id;
            }
          }
        }
      },
      nothing);

  const auto& st = g.stats();
  const double per_flow_slot =
      static_cast<double>(table.memory_bytes()) / static_cast<double>(table.capacity());
  const double per_flow = static_cast<double>(table.memory_bytes()) /
                          static_cast<double>(std::max<std::size_t>(remembered, 1));
  const double per_endpoint =
      static_cast<double>(st.hash_bytes + st.profile_bytes) / static_cast<double>(kEndpoints);
  auto mpps = [&](double c) { return hz / c / 1e6; };
  std::optional<double> ratio;        // vs our new-connection path (decide + insert)
  std::optional<double> ratio_trace;  // vs our decision on the same trace: the target's
  std::optional<double> ratio_est;    // vs our established path (decide only)
  if (acl.cycles && *acl.cycles > 0) {
    ratio = *acl.cycles / new_decide;
    ratio_trace = *acl.cycles / trace_decide;
    ratio_est = *acl.cycles / est_decide;
  }
  const bool est_met = est_full <= kTargetEstablished;
  const bool new_met = new_full <= kTargetNew;
  if (sink == 42) std::puts("");

  std::string runs_json = "[";
  std::string runs_text;
  for (std::size_t i = 0; i < acl.runs.size(); ++i) {
    runs_json += (i > 0 ? ", " : "") + num(acl.runs[i]);
    runs_text += (i > 0 ? ", " : "") + num(acl.runs[i]);
  }
  runs_json += "]";
  if (json) {
    std::printf(
        "{\"rules\": %d, \"endpoints\": %d, \"flows\": %zu, \"quick\": %s, \"tsc_hz\": %.0f, "
        "\"frame_bytes\": 64, \"burst\": %zu,\n"
        " \"established_cycles_per_packet\": %.1f, \"established_decide_cycles_per_packet\": "
        "%.1f, \"all_replies_cycles_per_packet\": %.1f,\n"
        " \"new_cycles_per_packet\": %.1f, \"new_decide_cycles_per_packet\": %.1f,\n"
        " \"vxlan_cycles_per_packet\": %.1f, \"vxlan_new_cycles_per_packet\": %.1f, "
        "\"vxlan_frame_bytes\": %zu,\n"
        " \"overlay_rx_new_cycles_per_packet\": %.1f, "
        "\"overlay_rx_established_cycles_per_packet\": "
        "%.1f, \"tag_checked_new_decide_cycles_per_packet\": %.1f, "
        "\"by_tag_new_decide_cycles_per_packet\": %.1f, \"overlay_encap_cycles_per_packet\": %.1f, "
        "\"overlay_refused\": %zu,\n"
        " \"parse_cycles_per_packet\": %.1f, \"vxlan_parse_cycles_per_packet\": %.1f,\n"
        " \"linear_cycles_per_packet\": %.1f, \"test_acl_cycles_per_packet\": %s,\n"
        " \"mpps_per_core\": {\"established\": %.2f, \"established_decide\": %.2f, \"new\": %.2f, "
        "\"new_decide\": %.2f, \"vxlan\": %.2f, \"vxlan_new\": %.2f, \"linear\": %.4f, "
        "\"test_acl\": %s},\n"
        " \"test_acl\": {\"rules\": %zu, \"traces\": %zu, \"verdicts_equal\": %zu, \"runs\": %s, "
        "\"reason\": %s},\n"
        " \"trace_decide_cycles_per_packet\": %.1f,\n"
        " \"ratios\": {\"test_acl_over_new_decide\": %s, \"test_acl_over_trace_decide\": %s, "
        "\"test_acl_over_established_decide\": %s, \"linear_over_new_decide\": %.1f},\n"
        " \"targets\": {\"established_max\": %.0f, \"established_met\": %s, \"new_max\": %.0f, "
        "\"new_met\": %s, \"test_acl_ratio_min\": %.0f, \"test_acl_met\": %s},\n"
        " \"bytes_per_flow\": %.1f, \"bytes_per_flow_slot\": %.1f, \"bytes_per_endpoint\": %.1f, "
        "\"flows_remembered\": %zu, \"established_hit_share\": %.3f, \"parse_errors\": %zu}\n",
        kRules, kEndpoints, flows, quick ? "true" : "false", hz, dpdk::FlowTable::kMaxBurst,
        est_full, est_decide, mixed_full, new_full, new_decide, vxlan_est, vxlan_new, kVxlanFrame,
        vxlan_rx_new, vxlan_rx_est, tag_checked_new, by_tag_new, encap, overlay_refused, parse64,
        parse_vxlan, linear, num(acl.cycles).c_str(), mpps(est_full), mpps(est_decide),
        mpps(new_full), mpps(new_decide), mpps(vxlan_est), mpps(vxlan_new), mpps(linear),
        acl.cycles ? num(mpps(*acl.cycles)).c_str() : "null", acl.rules, acl.traces, acl.agree,
        runs_json.c_str(), acl.cycles ? "null" : json_str(acl.reason).c_str(), trace_decide,
        num(ratio).c_str(), num(ratio_trace).c_str(), num(ratio_est).c_str(), linear / new_decide,
        kTargetEstablished, est_met ? "true" : "false", kTargetNew, new_met ? "true" : "false",
        kTargetAclRatio,
        ratio_trace ? (*ratio_trace >= kTargetAclRatio ? "true" : "false") : "null", per_flow,
        per_flow_slot, per_endpoint, remembered, hit_share, parse_errors);
    return 0;
  }
  std::printf(
      "DPDK dataplane: %d rules, %d endpoints, %zu flows, 64-byte frames, bursts of %zu, "
      "TSC %.3f GHz\n",
      kRules, kEndpoints, flows, dpdk::FlowTable::kMaxBurst, hz / 1e9);
  std::printf("%-46s %12s %10s\n", "path", "cycles/pkt", "Mpps/core");
  auto row = [&](const char* name, double c, const char* note) {
    std::printf("%-46s %12.1f %10.2f  %s\n", name, c, mpps(c), note);
  };
  row("established, parse + decide", est_full,
      est_met ? "(target <= 80: met)" : "(target <= 80: missed)");
  row("established, decide only", est_decide, "");
  char mixed_note[96];
  std::snprintf(mixed_note, sizeof mixed_note, "(parse + decide; %.0f%% of them have no entry)",
                100.0 * static_cast<double>(flows - est_n) / static_cast<double>(flows));
  row("every reply, denied flows' too", mixed_full, mixed_note);
  row("new connection, parse + decide + insert", new_full,
      new_met ? "(target <= 200: met)" : "(target <= 200: missed)");
  row("new connection, decide + insert only", new_decide, "");
  row("VXLAN-GBP established, parse outer+inner + decide", vxlan_est, "");
  row("VXLAN-GBP new connection", vxlan_new, "");
  row("overlay receiver, new connection", vxlan_rx_new, "(+ peer/VNI/tag checks)");
  row("overlay receiver, established", vxlan_rx_est, "");
  row("new connection, tag checked (known source)", tag_checked_new, "(decide + insert)");
  row("new connection, decided by tag (unknown source)", by_tag_new, "(decide + insert)");
  row("overlay sender: group id + 50 header bytes", encap, "");
  row("parse 64-byte IPv4/TCP", parse64, "");
  row("parse VXLAN-GBP (114 bytes)", parse_vxlan, "");
  row("floor: reference evaluator (linear scan)", linear, "");
  row("decide only, test-acl's trace (no flow table)", trace_decide, "");
  if (acl.cycles) {
    const std::string runs_note =
        "(best of " + std::to_string(acl.runs.size()) + " runs: " + runs_text + ")";
    row("dpdk-test-acl (same packets, IP-expanded ACL)", *acl.cycles, runs_note.c_str());
    std::printf(
        "test-acl: %zu ACL lines over %zu traced packets, verdicts equal %zu/%zu; "
        "test-acl / our decision on the same trace = %.2fx (like for like: both classify "
        "its 5-tuples, no state; target >= 3: %s); / our new-connection decide + insert = "
        "%.2fx; / our established decide = %.2fx\n",
        acl.rules, acl.traces, acl.agree, acl.traces, *ratio_trace,
        *ratio_trace >= kTargetAclRatio ? "met" : "missed", *ratio, *ratio_est);
  } else {
    std::printf("dpdk-test-acl: not measured: %s\n", acl.reason.c_str());
  }
  std::printf(
      "bytes per flow: %.0f per remembered flow (%.0f per slot, %zu remembered); bytes per "
      "endpoint: %.0f\n",
      per_flow, per_flow_slot, remembered, per_endpoint);
  return 0;
}
