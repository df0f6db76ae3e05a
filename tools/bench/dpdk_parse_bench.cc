// tierwall-bench-dpdkparse: the cost of parse_packet() (the DPDK dataplane's
// packet parser, dataplane/dpdk) per frame, for the common frames of the
// fast path (and an ICMP echo request, which takes the general walk), in ns
// and TSC cycles per packet, over bursts of 32 frames as rx_burst hands
// them. For docs/dpdk.md; build it in a Release tree:
//   cmake --build build/release --target tierwall-bench-dpdkparse
//   tierwall-bench-dpdkparse [--json] [--iterations N]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "tierwall/dataplane/dpdk/encap.h"
#include "tierwall/dataplane/dpdk/parser.h"

namespace dpdk = tierwall::dataplane::dpdk;
using Bytes = std::vector<std::uint8_t>;

namespace {

void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

// Ethernet + IP (+ optional 802.1Q) + an L4 header (TCP: 20 bytes, UDP:
// 8, ICMP echo request: 8) and 64 bytes.
Bytes l4_frame(bool v6, bool vlan, std::uint8_t proto) {
  const std::size_t l3 = vlan ? 18 : 14;
  const std::size_t ip = v6 ? 40 : 20;
  const std::size_t l4 = proto == 6 ? 20 : 8;
  Bytes f(l3 + ip + l4 + 64);
  f[0] = 2;
  f[6] = 2;
  f[11] = 1;
  if (vlan) {
    put16(&f[12], 0x8100);
    put16(&f[14], 100);
  }
  put16(&f[l3 - 2], v6 ? 0x86DD : 0x0800);
  std::uint8_t* h = &f[l3];
  if (v6) {
    h[0] = 0x60;
    put16(h + 4, static_cast<std::uint32_t>(l4 + 64));
    h[6] = proto;
    h[7] = 64;
    h[8] = 0xfd;
    h[23] = 1;
    h[24] = 0xfd;
    h[39] = 2;
  } else {
    h[0] = 0x45;
    put16(h + 2, static_cast<std::uint32_t>(20 + l4 + 64));
    h[8] = 64;
    h[9] = proto;
    h[12] = 10;
    h[15] = 1;
    h[16] = 10;
    h[19] = 2;
  }
  std::uint8_t* t = h + ip;
  if (proto == 1) {
    t[0] = 8;  // echo request
    put16(t + 4, 7);
    return f;
  }
  put16(t, 40000);
  put16(t + 2, proto == 6 ? 443 : 53);
  if (proto == 6) {
    t[12] = 0x50;
    t[13] = 0x10;
  } else {
    put16(t + 4, 8 + 64);
  }
  return f;
}
Bytes tcp_frame(bool v6, bool vlan) { return l4_frame(v6, vlan, 6); }

Bytes vxlan_frame(const Bytes& inner) {
  dpdk::VxlanGbpParams p;
  p.src_ip = *tierwall::IpAddress::parse("192.0.2.1");
  p.dst_ip = *tierwall::IpAddress::parse("192.0.2.2");
  p.vni = 42;
  p.group_id = 7;
  Bytes out(dpdk::vxlan_overhead(p) + inner.size());
  dpdk::encap_vxlan_gbp(out, inner, p);
  return out;
}

struct Result {
  std::string name;
  double ns = 0;
  double cycles = 0;
};

Result measure(const std::string& name, const Bytes& frame, long iterations) {
  // A burst of 32 copies, as rx_burst hands them.
  constexpr int kBurst = 32;
  std::vector<Bytes> burst(kBurst, frame);
  if (dpdk::parse_packet(frame).status != dpdk::ParseStatus::Ok) {
    std::fprintf(stderr, "tierwall-bench-dpdkparse: %s does not parse\n", name.c_str());
    std::exit(1);
  }
  std::uint64_t sink = 0;
  const auto run = [&](long rounds) {
    for (long r = 0; r < rounds; ++r) {
      for (const Bytes& b : burst) {
        const dpdk::PacketInfo info = dpdk::parse_packet(b);
        sink += std::uint64_t{info.dst_port} + info.l4_offset + info.src.bytes[3];
      }
    }
  };
  run(iterations / 10 + 1);  // warm up
  const auto t0 = std::chrono::steady_clock::now();
#if defined(__x86_64__)
  const std::uint64_t c0 = __rdtsc();
#endif
  run(iterations);
#if defined(__x86_64__)
  const std::uint64_t c1 = __rdtsc();
#endif
  const auto t1 = std::chrono::steady_clock::now();
  const double packets = static_cast<double>(iterations) * kBurst;
  Result r{name, std::chrono::duration<double, std::nano>(t1 - t0).count() / packets, 0};
#if defined(__x86_64__)
  r.cycles = static_cast<double>(c1 - c0) / packets;
#endif
  if (sink == 42) std::puts("");  // keeps the loop observable
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  long iterations = 200000;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::strtol(argv[++i], nullptr, 10);
      if (iterations <= 0) iterations = 1;
    } else {
      std::fprintf(stderr, "usage: tierwall-bench-dpdkparse [--json] [--iterations N]\n");
      return 2;
    }
  }
  const std::vector<Result> results = {
      measure("ipv4_tcp", tcp_frame(false, false), iterations),
      measure("vlan_ipv4_tcp", tcp_frame(false, true), iterations),
      measure("ipv6_tcp", tcp_frame(true, false), iterations),
      measure("vxlan_gbp_ipv4_tcp", vxlan_frame(tcp_frame(false, false)), iterations),
      measure("ipv4_udp", l4_frame(false, false, 17), iterations),
      measure("ipv6_udp", l4_frame(true, false, 17), iterations),
      measure("ipv4_icmp_echo", l4_frame(false, false, 1), iterations),
  };
  if (json) {
    std::printf("{\"parse_per_packet\": {");
    for (std::size_t i = 0; i < results.size(); ++i) {
      std::printf("%s\"%s\": {\"ns\": %.2f, \"tsc_cycles\": %.1f}", i == 0 ? "" : ", ",
                  results[i].name.c_str(), results[i].ns, results[i].cycles);
    }
    std::printf("}}\n");
  } else {
    std::printf("%-22s %10s %12s\n", "frame", "ns/packet", "tsc/packet");
    for (const Result& r : results) {
      std::printf("%-22s %10.2f %12.1f\n", r.name.c_str(), r.ns, r.cycles);
    }
  }
  return 0;
}
