// IPFIX export: a UDP collector on loopback receives the exporter's messages
// and a decoder written here (independent of the exporter's encoder: it
// learns the templates from the wire, like a collector) checks every field of
// IPv4/IPv6 flow starts, ends and denies, sequence numbers, template refresh,
// the message size limit, variable-length strings, send failures, and — when
// tshark is installed — that Wireshark's cflow dissector decodes the standard
// IEs without complaint.
#include "tierwall/ipfix/ipfix.h"

#include <arpa/inet.h>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/flowlog/record.h"

namespace {

using namespace tierwall;
using flowlog::Flow;
using flowlog::FlowRecord;
using ipfix::IpfixExporter;

constexpr std::int64_t kT0 = 1795626000123456;  // 2026-11-25T17:00:00.123456Z
constexpr std::uint32_t kIana = 0;
constexpr std::uint32_t kRev = 29305;
constexpr std::uint32_t kPen = 32473;

// IANA element ids used below.
constexpr std::uint16_t kOctetDelta = 1, kPacketDelta = 2, kDeltaFlowCount = 3, kProto = 4,
                        kSrcPort = 7, kSrcV4 = 8, kDstPort = 11, kDstV4 = 12, kSrcV6 = 27,
                        kDstV6 = 28, kIcmpV4 = 32, kIcmpV6 = 139, kStartMs = 152, kEndMs = 153,
                        kFwEvent = 233;
// Enterprise-specific ids (docs/flowlog.md, "IPFIX export").
constexpr std::uint16_t kSrcTier = 1, kDstTier = 2, kSrcName = 3, kDstName = 4, kRuleName = 5,
                        kRuleKind = 6, kVerdict = 7, kGeneration = 8, kNode = 9, kSrcEntity = 10,
                        kDstEntity = 11;

// ---- an independent decoder -----------------------------------------------

std::uint64_t be(std::string_view b) {
  std::uint64_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
}

struct TemplateField {
  std::uint16_t id = 0;
  std::uint16_t length = 0;
  std::uint32_t pen = 0;
  bool operator==(const TemplateField&) const = default;
};

using Key = std::pair<std::uint32_t, std::uint16_t>;  // (pen, id)

struct DataRecord {
  std::uint16_t template_id = 0;
  std::map<Key, std::string> values;
  std::map<Key, int> prefix_bytes;  // variable-length fields: 1 or 3

  bool has(std::uint32_t pen, std::uint16_t id) const { return values.count({pen, id}) != 0; }
  std::uint64_t u(std::uint32_t pen, std::uint16_t id) const {
    auto it = values.find({pen, id});
    EXPECT_NE(it, values.end()) << "missing IE " << pen << "/" << id;
    return it == values.end() ? ~0ULL : be(it->second);
  }
  std::string s(std::uint16_t id) const {
    auto it = values.find({kPen, id});
    EXPECT_NE(it, values.end()) << "missing enterprise IE " << id;
    return it == values.end() ? "<missing>" : it->second;
  }
  std::string ip(std::uint16_t id) const {
    auto it = values.find({kIana, id});
    if (it == values.end()) return "<missing>";
    char text[INET6_ADDRSTRLEN] = {};
    const int af = it->second.size() == 4 ? AF_INET : AF_INET6;
    ::inet_ntop(af, it->second.data(), text, sizeof text);
    return text;
  }
};

struct Message {
  std::uint16_t version = 0;
  std::uint16_t length = 0;
  std::uint32_t export_time = 0;
  std::uint32_t sequence = 0;
  std::uint32_t domain = 0;
  std::vector<std::uint16_t> set_ids;
  std::vector<std::uint16_t> templates;  // template ids defined in this message
  std::vector<DataRecord> records;
  std::size_t size = 0;
};

class Decoder {
 public:
  // Parses one message; templates persist across messages (per domain).
  std::optional<Message> decode(std::string_view m, std::string& why) {
    Message out;
    out.size = m.size();
    if (m.size() < 16) return fail(why, "short header");
    out.version = static_cast<std::uint16_t>(be(m.substr(0, 2)));
    out.length = static_cast<std::uint16_t>(be(m.substr(2, 2)));
    out.export_time = static_cast<std::uint32_t>(be(m.substr(4, 4)));
    out.sequence = static_cast<std::uint32_t>(be(m.substr(8, 4)));
    out.domain = static_cast<std::uint32_t>(be(m.substr(12, 4)));
    if (out.version != 10) return fail(why, "version");
    if (out.length != m.size()) return fail(why, "length mismatch");
    std::size_t at = 16;
    while (at < m.size()) {
      if (m.size() - at < 4) return fail(why, "short set header");
      const auto set_id = static_cast<std::uint16_t>(be(m.substr(at, 2)));
      const auto set_len = static_cast<std::size_t>(be(m.substr(at + 2, 2)));
      if (set_len < 4 || set_len > m.size() - at) return fail(why, "bad set length");
      out.set_ids.push_back(set_id);
      std::string_view body = m.substr(at + 4, set_len - 4);
      if (set_id == 2) {
        if (!templates(body, out, why)) return std::nullopt;
      } else if (set_id >= 256) {
        if (!data(set_id, body, out, why)) return std::nullopt;
      } else {
        return fail(why, "unexpected set id " + std::to_string(set_id));
      }
      at += set_len;
    }
    return out;
  }

  std::map<std::uint16_t, std::vector<TemplateField>> known;

 private:
  static std::nullopt_t fail(std::string& why, std::string text) {
    why = std::move(text);
    return std::nullopt;
  }

  bool templates(std::string_view b, Message& out, std::string& why) {
    std::size_t at = 0;
    while (b.size() - at >= 4) {
      const auto id = static_cast<std::uint16_t>(be(b.substr(at, 2)));
      const auto count = static_cast<std::size_t>(be(b.substr(at + 2, 2)));
      at += 4;
      if (id < 256) {
        why = "template id < 256";
        return false;
      }
      std::vector<TemplateField> fields;
      for (std::size_t i = 0; i < count; ++i) {
        if (b.size() - at < 4) {
          why = "template truncated";
          return false;
        }
        TemplateField f;
        const auto raw = static_cast<std::uint16_t>(be(b.substr(at, 2)));
        f.length = static_cast<std::uint16_t>(be(b.substr(at + 2, 2)));
        at += 4;
        f.id = static_cast<std::uint16_t>(raw & 0x7FFF);
        if ((raw & 0x8000) != 0) {
          if (b.size() - at < 4) {
            why = "enterprise number truncated";
            return false;
          }
          f.pen = static_cast<std::uint32_t>(be(b.substr(at, 4)));
          at += 4;
        }
        fields.push_back(f);
      }
      known[id] = fields;
      out.templates.push_back(id);
    }
    if (at != b.size()) {
      why = "template set padding";
      return false;
    }
    return true;
  }

  bool data(std::uint16_t set_id, std::string_view b, Message& out, std::string& why) {
    auto t = known.find(set_id);
    if (t == known.end()) {
      why = "data set for unknown template " + std::to_string(set_id);
      return false;
    }
    std::size_t at = 0;
    while (at < b.size()) {
      DataRecord r;
      r.template_id = set_id;
      for (const TemplateField& f : t->second) {
        std::size_t len = f.length;
        int prefix = 0;
        if (f.length == 0xFFFF) {
          if (at >= b.size()) {
            why = "varlen truncated";
            return false;
          }
          len = static_cast<unsigned char>(b[at]);
          at += 1;
          prefix = 1;
          if (len == 255) {
            if (b.size() - at < 2) {
              why = "varlen truncated";
              return false;
            }
            len = static_cast<std::size_t>(be(b.substr(at, 2)));
            at += 2;
            prefix = 3;
          }
        }
        if (b.size() - at < len) {
          why = "field truncated";
          return false;
        }
        r.values[{f.pen, f.id}] = std::string(b.substr(at, len));
        if (prefix != 0) r.prefix_bytes[{f.pen, f.id}] = prefix;
        at += len;
      }
      out.records.push_back(std::move(r));
    }
    return true;
  }
};

// ---- a loopback collector ---------------------------------------------------

class Collector {
 public:
  explicit Collector(int family = AF_INET) {
    fd_ = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    const int buf = 8 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(sockaddr_in);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof(sockaddr_in6);
    }
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) == 0;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                    : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    address_ =
        family == AF_INET ? "127.0.0.1:" + std::to_string(port_) : "[::1]:" + std::to_string(port_);
  }
  ~Collector() { ::close(fd_); }
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  bool ok() const { return ok_; }
  const std::string& address() const { return address_; }

  // The next datagram, nullopt after timeout.
  std::optional<std::string> receive(int timeout_ms = 2000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    std::string buf(65536, '\0');
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    raw.push_back(buf);
    return buf;
  }

  // Receives and decodes one message (test failure when none or malformed).
  Message next() {
    auto m = receive();
    EXPECT_TRUE(m.has_value()) << "no message";
    if (!m) return {};
    std::string why;
    auto d = decoder.decode(*m, why);
    EXPECT_TRUE(d.has_value()) << why;
    return d ? *d : Message{};
  }

  bool idle(int timeout_ms = 100) {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 0;
  }

  Decoder decoder;
  std::vector<std::string> raw;  // every datagram received, in order

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::uint16_t port_ = 0;
  std::string address_;
};

// ---- records ----------------------------------------------------------------

FlowRecord flow_record(std::int64_t time_us, Flow f) {
  FlowRecord r;
  r.time_us = time_us;
  r.body = std::move(f);
  return r;
}

Flow tcp_flow(flowlog::FlowEvent event, flowlog::Verdict verdict) {
  Flow f;
  f.event = event;
  f.verdict = verdict;
  f.protocol = flowlog::kProtoTcp;
  f.generation = 42;
  f.src = {"10.88.0.10", 51234, flowlog::Entity::Endpoint, "web-1", "3f2a9c", "img", "public"};
  f.dst = {"10.88.0.20", 5432, flowlog::Entity::Endpoint, "db-1", "", "", "restricted"};
  f.rule_kind = flowlog::RuleKind::Flow;
  f.rule_name = "web-to-db";
  return f;
}

struct Fixture {
  std::chrono::system_clock::time_point now{std::chrono::microseconds(kT0)};
  IpfixExporter exporter;

  bool open(const std::string& collector, ipfix::ExporterOptions o = {}) {
    o.collector = collector;
    if (o.node.empty()) o.node = "node-a";
    if (o.observation_domain_id == 0) o.observation_domain_id = 7;
    o.clock = [this] { return now; };
    std::string error;
    const bool ok = exporter.open(o, &error);
    EXPECT_TRUE(ok) << error;
    return ok;
  }
};

std::vector<TemplateField> expected_template(bool v6, bool end) {
  std::vector<TemplateField> t = {
      {v6 ? kSrcV6 : kSrcV4, static_cast<std::uint16_t>(v6 ? 16 : 4), 0},
      {v6 ? kDstV6 : kDstV4, static_cast<std::uint16_t>(v6 ? 16 : 4), 0},
      {kSrcPort, 2, 0},
      {kDstPort, 2, 0},
      {kProto, 1, 0},
      {v6 ? kIcmpV6 : kIcmpV4, 2, 0},
      {end ? kEndMs : kStartMs, 8, 0},
      {kFwEvent, 1, 0},
      {kDeltaFlowCount, 8, 0}};
  if (end) {
    t.push_back({kPacketDelta, 8, 0});
    t.push_back({kOctetDelta, 8, 0});
    t.push_back({kPacketDelta, 8, kRev});
    t.push_back({kOctetDelta, 8, kRev});
  }
  t.push_back({kGeneration, 8, kPen});
  for (std::uint16_t id : {kSrcTier, kDstTier, kSrcName, kDstName, kRuleName, kRuleKind, kVerdict,
                           kNode, kSrcEntity, kDstEntity}) {
    t.push_back({id, 0xFFFF, kPen});
  }
  return t;
}

// ---- tests ------------------------------------------------------------------

TEST(IpfixCollectorSyntax, Parses) {
  std::string host;
  std::uint16_t port = 0;
  ASSERT_TRUE(ipfix::parse_collector("10.0.0.1:2055", host, port));
  EXPECT_EQ(host, "10.0.0.1");
  EXPECT_EQ(port, 2055);
  ASSERT_TRUE(ipfix::parse_collector("10.0.0.1", host, port));
  EXPECT_EQ(port, 4739);
  ASSERT_TRUE(ipfix::parse_collector("[2001:db8::1]:9995", host, port));
  EXPECT_EQ(host, "2001:db8::1");
  EXPECT_EQ(port, 9995);
  ASSERT_TRUE(ipfix::parse_collector("[::1]", host, port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 4739);
  ASSERT_TRUE(ipfix::parse_collector("2001:db8::2", host, port));
  EXPECT_EQ(host, "2001:db8::2");
  EXPECT_EQ(port, 4739);
  ASSERT_TRUE(ipfix::parse_collector("collector.example:4740", host, port));
  EXPECT_EQ(host, "collector.example");
  EXPECT_EQ(port, 4740);
  for (const char* bad : {"", ":4739", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:x",
                          "[::1", "[::1]x", "[::1]:", "[]:4739"}) {
    EXPECT_FALSE(ipfix::parse_collector(bad, host, port)) << bad;
  }
}

TEST(IpfixExporter, OpenReportsBadCollector) {
  IpfixExporter e;
  ipfix::ExporterOptions o;
  o.collector = "10.0.0.1:notaport";
  std::string error;
  EXPECT_FALSE(e.open(o, &error));
  EXPECT_NE(error.find("bad collector"), std::string::npos) << error;
  EXPECT_FALSE(e.is_open());
  e.export_record(flow_record(kT0, tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Allow)));
  e.flush();  // no-ops before open
  EXPECT_EQ(e.stats().messages, 0U);
}

TEST(IpfixExporter, Ipv4StartEveryField) {
  Collector c;
  ASSERT_TRUE(c.ok());
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  fx.exporter.export_record(
      flow_record(kT0, tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Allow)));
  EXPECT_TRUE(c.idle()) << "sent before flush";
  fx.exporter.flush();
  const Message m = c.next();
  EXPECT_EQ(m.version, 10);
  EXPECT_EQ(m.sequence, 0U);
  EXPECT_EQ(m.domain, 7U);
  EXPECT_EQ(m.export_time, static_cast<std::uint32_t>(kT0 / 1000000));
  ASSERT_EQ(m.set_ids, (std::vector<std::uint16_t>{2, 256}));
  EXPECT_EQ(m.templates, (std::vector<std::uint16_t>{256, 257, 258, 259}));
  EXPECT_EQ(c.decoder.known[256], expected_template(false, false));
  EXPECT_EQ(c.decoder.known[257], expected_template(false, true));
  EXPECT_EQ(c.decoder.known[258], expected_template(true, false));
  EXPECT_EQ(c.decoder.known[259], expected_template(true, true));
  ASSERT_EQ(m.records.size(), 1U);
  const DataRecord& r = m.records[0];
  EXPECT_EQ(r.values.size(), 20U);
  EXPECT_EQ(r.ip(kSrcV4), "10.88.0.10");
  EXPECT_EQ(r.ip(kDstV4), "10.88.0.20");
  EXPECT_EQ(r.u(kIana, kSrcPort), 51234U);
  EXPECT_EQ(r.u(kIana, kDstPort), 5432U);
  EXPECT_EQ(r.u(kIana, kProto), 6U);
  EXPECT_EQ(r.u(kIana, kIcmpV4), 0U);
  EXPECT_EQ(r.u(kIana, kStartMs), static_cast<std::uint64_t>(kT0 / 1000));
  EXPECT_FALSE(r.has(kIana, kEndMs));
  EXPECT_FALSE(r.has(kIana, kPacketDelta));
  EXPECT_EQ(r.u(kIana, kFwEvent), 1U);
  EXPECT_EQ(r.u(kIana, kDeltaFlowCount), 1U);
  EXPECT_EQ(r.u(kPen, kGeneration), 42U);
  EXPECT_EQ(r.s(kSrcTier), "public");
  EXPECT_EQ(r.s(kDstTier), "restricted");
  EXPECT_EQ(r.s(kSrcName), "web-1");
  EXPECT_EQ(r.s(kDstName), "db-1");
  EXPECT_EQ(r.s(kRuleName), "web-to-db");
  EXPECT_EQ(r.s(kRuleKind), "flow");
  EXPECT_EQ(r.s(kVerdict), "allow");
  EXPECT_EQ(r.s(kNode), "node-a");
  EXPECT_EQ(r.s(kSrcEntity), "endpoint");
  EXPECT_EQ(r.s(kDstEntity), "endpoint");
  const auto s = fx.exporter.stats();
  EXPECT_EQ(s.messages, 1U);
  EXPECT_EQ(s.records, 1U);
  EXPECT_EQ(s.template_sets, 1U);
  EXPECT_EQ(s.bytes, m.size);
  EXPECT_EQ(s.sequence, 1U);
  EXPECT_EQ(s.dropped_messages, 0U);
  fx.exporter.flush();  // nothing buffered: nothing sent
  EXPECT_TRUE(c.idle());
}

TEST(IpfixExporter, Ipv4EndDenyAuditIcmp) {
  Collector c;
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  Flow end = tcp_flow(flowlog::FlowEvent::End, flowlog::Verdict::Allow);
  end.packets_orig = 10;
  end.bytes_orig = 1000;
  end.packets_reply = 8;
  end.bytes_reply = 64000;
  Flow deny = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  deny.rule_kind = flowlog::RuleKind::DefaultDeny;
  deny.rule_name.clear();
  deny.count = 17;
  deny.src.entity = flowlog::Entity::World;
  deny.src.name.clear();
  deny.src.tier.clear();
  Flow audit = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Audit);
  audit.rule_kind = flowlog::RuleKind::Deny;
  audit.rule_name = "no-ssh";
  Flow ping = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  ping.protocol = flowlog::kProtoIcmp;
  ping.icmp_type = 8;
  ping.icmp_code = 3;
  ping.dst.entity = flowlog::Entity::Host;
  fx.exporter.export_record(flow_record(kT0 + 5000000, end));
  fx.exporter.export_record(flow_record(kT0 + 6000000, deny));
  fx.exporter.export_record(flow_record(kT0 + 7000000, audit));
  fx.exporter.export_record(flow_record(kT0 + 8000000, ping));
  fx.exporter.flush();
  const Message m = c.next();
  EXPECT_EQ(m.set_ids, (std::vector<std::uint16_t>{2, 257, 256}));
  ASSERT_EQ(m.records.size(), 4U);

  const DataRecord& e = m.records[0];
  EXPECT_EQ(e.template_id, 257);
  EXPECT_EQ(e.values.size(), 24U);
  EXPECT_EQ(e.u(kIana, kEndMs), static_cast<std::uint64_t>((kT0 + 5000000) / 1000));
  EXPECT_FALSE(e.has(kIana, kStartMs));
  EXPECT_EQ(e.u(kIana, kFwEvent), 2U);
  EXPECT_EQ(e.u(kIana, kPacketDelta), 10U);
  EXPECT_EQ(e.u(kIana, kOctetDelta), 1000U);
  EXPECT_EQ(e.u(kRev, kPacketDelta), 8U);
  EXPECT_EQ(e.u(kRev, kOctetDelta), 64000U);
  EXPECT_EQ(e.u(kIana, kSrcPort), 51234U);
  EXPECT_EQ(e.s(kVerdict), "allow");

  const DataRecord& d = m.records[1];
  EXPECT_EQ(d.template_id, 256);
  EXPECT_EQ(d.u(kIana, kFwEvent), 3U);
  EXPECT_EQ(d.u(kIana, kDeltaFlowCount), 17U);
  EXPECT_EQ(d.s(kVerdict), "deny");
  EXPECT_EQ(d.s(kRuleKind), "default-deny");
  EXPECT_EQ(d.s(kRuleName), "");
  EXPECT_EQ(d.s(kSrcEntity), "world");
  EXPECT_EQ(d.s(kSrcName), "");
  EXPECT_EQ(d.s(kSrcTier), "");
  EXPECT_EQ(d.prefix_bytes.at({kPen, kSrcName}), 1);

  const DataRecord& a = m.records[2];
  EXPECT_EQ(a.u(kIana, kFwEvent), 1U);
  EXPECT_EQ(a.s(kVerdict), "audit");
  EXPECT_EQ(a.s(kRuleKind), "deny");
  EXPECT_EQ(a.s(kRuleName), "no-ssh");

  const DataRecord& p = m.records[3];
  EXPECT_EQ(p.u(kIana, kProto), 1U);
  EXPECT_EQ(p.u(kIana, kIcmpV4), 8U * 256U + 3U);
  EXPECT_EQ(p.u(kIana, kSrcPort), 0U);
  EXPECT_EQ(p.u(kIana, kDstPort), 0U);
  EXPECT_EQ(p.u(kIana, kFwEvent), 3U);
  EXPECT_EQ(p.s(kDstEntity), "host");
  EXPECT_EQ(p.u(kIana, kStartMs), static_cast<std::uint64_t>((kT0 + 8000000) / 1000));
}

TEST(IpfixExporter, Ipv6OverIpv6Collector) {
  Collector c(AF_INET6);
  if (!c.ok()) GTEST_SKIP() << "no IPv6 loopback";
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  Flow start = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Allow);
  start.src.ip = "fd00::10";
  start.dst.ip = "2001:db8::20";
  Flow end = start;
  end.event = flowlog::FlowEvent::End;
  end.packets_orig = 1;
  end.bytes_orig = 2;
  end.packets_reply = 3;
  end.bytes_reply = 4;
  Flow deny = start;
  deny.verdict = flowlog::Verdict::Deny;
  deny.protocol = flowlog::kProtoIcmpv6;
  deny.icmp_type = 128;
  deny.icmp_code = 0;
  Flow mixed = start;
  mixed.dst.ip = "192.0.2.1";
  Flow udp = start;
  udp.protocol = flowlog::kProtoUdp;
  udp.src.port = 5353;
  udp.dst.port = 53;
  for (const Flow& f : {start, end, deny, mixed, udp}) {
    fx.exporter.export_record(flow_record(kT0, f));
  }
  fx.exporter.flush();
  const Message m = c.next();
  EXPECT_EQ(m.set_ids, (std::vector<std::uint16_t>{2, 258, 259, 258}));
  ASSERT_EQ(m.records.size(), 5U);
  const DataRecord& s = m.records[0];
  EXPECT_EQ(s.template_id, 258);
  EXPECT_EQ(s.ip(kSrcV6), "fd00::10");
  EXPECT_EQ(s.ip(kDstV6), "2001:db8::20");
  EXPECT_FALSE(s.has(kIana, kSrcV4));
  EXPECT_EQ(s.u(kIana, kIcmpV6), 0U);
  EXPECT_EQ(s.u(kIana, kFwEvent), 1U);
  EXPECT_EQ(s.u(kIana, kStartMs), static_cast<std::uint64_t>(kT0 / 1000));
  EXPECT_EQ(s.s(kSrcTier), "public");
  const DataRecord& e = m.records[1];
  EXPECT_EQ(e.template_id, 259);
  EXPECT_EQ(e.u(kIana, kFwEvent), 2U);
  EXPECT_EQ(e.u(kIana, kEndMs), static_cast<std::uint64_t>(kT0 / 1000));
  EXPECT_EQ(e.u(kIana, kPacketDelta), 1U);
  EXPECT_EQ(e.u(kIana, kOctetDelta), 2U);
  EXPECT_EQ(e.u(kRev, kPacketDelta), 3U);
  EXPECT_EQ(e.u(kRev, kOctetDelta), 4U);
  const DataRecord& d = m.records[2];
  EXPECT_EQ(d.u(kIana, kFwEvent), 3U);
  EXPECT_EQ(d.u(kIana, kProto), 58U);
  EXPECT_EQ(d.u(kIana, kIcmpV6), 128U * 256U);
  EXPECT_EQ(d.u(kIana, kDstPort), 0U);
  EXPECT_EQ(m.records[3].ip(kDstV6), "::ffff:192.0.2.1");
  EXPECT_EQ(m.records[4].u(kIana, kProto), 17U);
  EXPECT_EQ(m.records[4].u(kIana, kSrcPort), 5353U);
  EXPECT_EQ(m.records[4].u(kIana, kDstPort), 53U);
}

TEST(IpfixExporter, IgnoresOtherTypesAndCountsInvalid) {
  Collector c;
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  FlowRecord loss;
  loss.body = flowlog::Loss{flowlog::LossSource::Nflog, "ENOBUFS", 3, false};
  FlowRecord policy;
  policy.body = flowlog::Policy{4, "p", "abc", "me"};
  FlowRecord agent;
  agent.body = flowlog::Agent{};
  fx.exporter.export_record(loss);
  fx.exporter.export_record(policy);
  fx.exporter.export_record(agent);
  Flow bad = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  bad.src.ip = "not-an-ip";
  fx.exporter.export_record(flow_record(kT0, bad));
  bad.src.ip = "";
  fx.exporter.export_record(flow_record(kT0, bad));
  fx.exporter.flush();
  EXPECT_TRUE(c.idle());
  auto s = fx.exporter.stats();
  EXPECT_EQ(s.messages, 0U);
  EXPECT_EQ(s.invalid, 2U);
  EXPECT_EQ(s.sequence, 0U);

  // time_us == 0: stamped with the exporter's clock.
  fx.now += std::chrono::seconds(3);
  fx.exporter.export_record(
      flow_record(0, tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny)));
  fx.exporter.flush();
  const Message m = c.next();
  ASSERT_EQ(m.records.size(), 1U);
  EXPECT_EQ(m.records[0].u(kIana, kStartMs), static_cast<std::uint64_t>(kT0 / 1000 + 3000));
  EXPECT_EQ(m.export_time, static_cast<std::uint32_t>(kT0 / 1000000 + 3));
}

TEST(IpfixExporter, SequenceNumbersAndTemplateRefresh) {
  Collector c;
  Fixture fx;
  ipfix::ExporterOptions o;
  o.template_refresh = std::chrono::seconds(60);
  o.template_refresh_messages = 4;
  ASSERT_TRUE(fx.open(c.address(), o));
  const Flow f = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  std::uint32_t sent = 0;
  std::vector<bool> had_templates;
  // 12 messages of 1..12 records; 1 s apart.
  for (std::uint32_t i = 1; i <= 12; ++i) {
    for (std::uint32_t k = 0; k < i % 5 + 1; ++k) fx.exporter.export_record(flow_record(kT0, f));
    fx.exporter.flush();
    const Message m = c.next();
    EXPECT_EQ(m.sequence, sent) << "message " << i;
    EXPECT_EQ(m.records.size(), i % 5 + 1);
    had_templates.push_back(!m.templates.empty());
    sent += static_cast<std::uint32_t>(m.records.size());
    fx.now += std::chrono::seconds(1);
  }
  // Every 4th message (counting from the last one with templates).
  EXPECT_EQ(had_templates, (std::vector<bool>{true, false, false, false, true, false, false, false,
                                              true, false, false, false}));
  EXPECT_EQ(fx.exporter.stats().sequence, sent);
  EXPECT_EQ(fx.exporter.stats().template_sets, 3U);

  // Time-based refresh: 60 s after the last templates.
  fx.exporter.export_record(flow_record(kT0, f));
  fx.exporter.flush();  // message 13 -> templates by count (4 since)
  EXPECT_FALSE(c.next().templates.empty());
  fx.now += std::chrono::seconds(59);
  fx.exporter.export_record(flow_record(kT0, f));
  fx.exporter.flush();
  EXPECT_TRUE(c.next().templates.empty());
  fx.now += std::chrono::seconds(1);
  fx.exporter.export_record(flow_record(kT0, f));
  fx.exporter.flush();
  EXPECT_FALSE(c.next().templates.empty());
}

TEST(IpfixExporter, TimeOnlyRefresh) {
  Collector c;
  Fixture fx;
  ipfix::ExporterOptions o;
  o.template_refresh = std::chrono::seconds(10);
  o.template_refresh_messages = 0;
  ASSERT_TRUE(fx.open(c.address(), o));
  const Flow f = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  std::vector<bool> had;
  for (int i = 0; i < 25; ++i) {
    fx.exporter.export_record(flow_record(kT0, f));
    fx.exporter.flush();
    had.push_back(!c.next().templates.empty());
    fx.now += std::chrono::seconds(1);
  }
  for (int i = 0; i < 25; ++i) EXPECT_EQ(had[static_cast<std::size_t>(i)], i % 10 == 0) << i;
}

TEST(IpfixExporter, SizeLimitSplitsWithoutLoss) {
  Collector c;
  Fixture fx;
  ipfix::ExporterOptions o;
  o.template_refresh_messages = 0;
  ASSERT_TRUE(fx.open(c.address(), o));
  constexpr std::uint64_t kRecords = 2000;
  for (std::uint64_t i = 0; i < kRecords; ++i) {
    Flow f = tcp_flow(i % 3 == 0 ? flowlog::FlowEvent::End : flowlog::FlowEvent::Start,
                      flowlog::Verdict::Allow);
    f.generation = i;  // identifies the record
    if (i % 7 == 0) f.src.ip = "fd00::" + std::to_string(i % 100);
    if (i % 7 == 0) f.dst.ip = "fd00::1";
    f.src.name = std::string(i % 50, 'n');
    fx.exporter.export_record(flow_record(kT0, f));
  }
  fx.exporter.flush();
  const auto s = fx.exporter.stats();
  std::uint64_t next = 0;
  std::uint32_t sequence = 0;
  std::size_t messages = 0;
  while (next < kRecords) {
    const Message m = c.next();
    if (m.records.empty()) break;
    ++messages;
    EXPECT_LE(m.size, 1400U);
    EXPECT_EQ(m.sequence, sequence);
    sequence += static_cast<std::uint32_t>(m.records.size());
    for (const DataRecord& r : m.records) {
      EXPECT_EQ(r.u(kPen, kGeneration), next);
      EXPECT_EQ(r.s(kSrcName).size(), next % 50);
      EXPECT_EQ(r.template_id,
                next % 7 == 0 ? (next % 3 == 0 ? 259 : 258) : (next % 3 == 0 ? 257 : 256));
      ++next;
    }
  }
  EXPECT_EQ(next, kRecords);
  EXPECT_TRUE(c.idle());
  EXPECT_GT(messages, 50U);
  EXPECT_EQ(s.messages, messages);
  EXPECT_EQ(s.records, kRecords);
  EXPECT_EQ(s.dropped_records, 0U);
  EXPECT_EQ(s.sequence, kRecords);
  EXPECT_EQ(s.template_sets, 1U);
  // Messages are filled: all but the last leave no room for another record.
  for (std::size_t i = 0; i + 1 < c.raw.size(); ++i) EXPECT_GT(c.raw[i].size(), 1400U - 200U);
}

TEST(IpfixExporter, StringsRawUtf8AndLong) {
  Collector c;
  Fixture fx;
  ipfix::ExporterOptions o;
  o.node = "nöde-ü \"quoted\" back\\slash\nnewline\ttab";
  o.max_string_bytes = 1000;
  ASSERT_TRUE(fx.open(c.address(), o));
  Flow f = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  f.src.name = std::string("web\0zero", 8);
  f.dst.name = "データベース-1 🚀";
  f.src.tier = std::string(254, 'a');  // longest 1-byte length
  f.dst.tier = std::string(255, 'b');  // shortest 3-byte length
  f.rule_name = std::string(300, 'r');
  std::string long_utf8;
  while (long_utf8.size() < 1200) long_utf8 += "é";  // 2 bytes each
  Flow g = f;
  g.rule_name = long_utf8;                   // cut to 1000 bytes = 500 characters
  g.src.name = std::string(999, 'x') + "€";  // 3-byte char straddles 1000: cut to 999
  fx.exporter.export_record(flow_record(kT0, f));
  fx.exporter.export_record(flow_record(kT0, g));
  fx.exporter.flush();
  Message m = c.next();
  std::vector<DataRecord> records = m.records;
  if (records.size() < 2) {  // g (~2.6 KB) exceeds 1400 bytes: sent alone
    const Message m2 = c.next();
    records.insert(records.end(), m2.records.begin(), m2.records.end());
    EXPECT_GT(m2.size, 1400U);
    EXPECT_EQ(m2.sequence, 1U);
  }
  ASSERT_EQ(records.size(), 2U);
  const DataRecord& r = records[0];
  EXPECT_EQ(r.s(kNode), o.node);
  EXPECT_EQ(r.s(kSrcName), std::string("web\0zero", 8));
  EXPECT_EQ(r.s(kDstName), "データベース-1 🚀");
  EXPECT_EQ(r.s(kSrcTier), std::string(254, 'a'));
  EXPECT_EQ(r.prefix_bytes.at({kPen, kSrcTier}), 1);
  EXPECT_EQ(r.s(kDstTier), std::string(255, 'b'));
  EXPECT_EQ(r.prefix_bytes.at({kPen, kDstTier}), 3);
  EXPECT_EQ(r.s(kRuleName), std::string(300, 'r'));
  EXPECT_EQ(r.prefix_bytes.at({kPen, kRuleName}), 3);
  const DataRecord& t = records[1];
  EXPECT_EQ(t.s(kRuleName), long_utf8.substr(0, 1000));
  EXPECT_EQ(t.s(kSrcName), std::string(999, 'x'));
  EXPECT_EQ(fx.exporter.stats().truncated_strings, 2U);
  EXPECT_EQ(fx.exporter.stats().records, 2U);
}

TEST(IpfixExporter, EnterpriseNumberConfigurable) {
  Collector c;
  Fixture fx;
  ipfix::ExporterOptions o;
  o.enterprise_number = 99999;
  ASSERT_TRUE(fx.open(c.address(), o));
  fx.exporter.export_record(
      flow_record(kT0, tcp_flow(flowlog::FlowEvent::End, flowlog::Verdict::Allow)));
  fx.exporter.flush();
  const Message m = c.next();
  ASSERT_EQ(m.records.size(), 1U);
  std::size_t private_fields = 0;
  for (const TemplateField& f : c.decoder.known[257]) {
    EXPECT_TRUE(f.pen == 0 || f.pen == kRev || f.pen == 99999) << f.pen;
    if (f.pen == 99999) ++private_fields;
  }
  EXPECT_EQ(private_fields, 11U);
  EXPECT_EQ(m.records[0].values.at({99999, kNode}), "node-a");
}

TEST(IpfixExporter, SendFailureCountsDropsAndAdvancesSequence) {
  std::string address;
  {
    Collector gone;  // bound then closed: nobody listens on the port
    address = gone.address();
  }
  Fixture fx;
  ASSERT_TRUE(fx.open(address));
  const Flow f = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  for (int i = 0; i < 10; ++i) {
    fx.exporter.export_record(flow_record(kT0, f));
    fx.exporter.export_record(flow_record(kT0, f));
    fx.exporter.flush();  // must not block
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto s = fx.exporter.stats();
  EXPECT_GE(s.dropped_messages, 1U);  // ICMP port unreachable -> ECONNREFUSED
  EXPECT_EQ(s.messages + s.dropped_messages, 10U);
  EXPECT_EQ(s.records + s.dropped_records, 20U);
  EXPECT_EQ(s.sequence, 20U);
  EXPECT_EQ(s.last_errno, ECONNREFUSED);
  fx.exporter.close();
  EXPECT_FALSE(fx.exporter.is_open());
  fx.exporter.close();  // idempotent
}

TEST(IpfixExporter, CloseFlushes) {
  Collector c;
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  fx.exporter.export_record(
      flow_record(kT0, tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Allow)));
  fx.exporter.close();
  EXPECT_EQ(c.next().records.size(), 1U);
}

// ---- tshark as an independent validator ------------------------------------

std::string run(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

void le32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void be16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}

// A pcap (LINKTYPE_IPV4) holding each payload in an IPv4/UDP packet to port 4739.
std::string pcap_of(const std::vector<std::string>& payloads) {
  std::string out;
  le32(out, 0xa1b2c3d4);
  out += std::string("\x02\x00\x04\x00", 4);  // version 2.4
  le32(out, 0);
  le32(out, 0);
  le32(out, 65535);
  le32(out, 228);  // LINKTYPE_IPV4
  std::uint32_t t = static_cast<std::uint32_t>(kT0 / 1000000);
  for (const std::string& p : payloads) {
    std::string ip;
    const auto total = static_cast<std::uint16_t>(20 + 8 + p.size());
    ip += std::string("\x45\x00", 2);
    be16(ip, total);
    ip += std::string("\x00\x01\x40\x00\x40\x11\x00\x00", 8);  // id, DF, ttl 64, udp
    ip += std::string("\x7f\x00\x00\x01\x7f\x00\x00\x01", 8);
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(be(ip.substr(i, 2)));
    while (sum > 0xFFFF) sum = (sum & 0xFFFF) + (sum >> 16);
    const auto check = static_cast<std::uint16_t>(~sum & 0xFFFF);
    ip[10] = static_cast<char>(check >> 8);
    ip[11] = static_cast<char>(check & 0xFF);
    be16(ip, 40000);
    be16(ip, 4739);
    be16(ip, static_cast<std::uint16_t>(8 + p.size()));
    be16(ip, 0);  // no UDP checksum (IPv4)
    ip += p;
    le32(out, t++);
    le32(out, 0);
    le32(out, static_cast<std::uint32_t>(ip.size()));
    le32(out, static_cast<std::uint32_t>(ip.size()));
    out += ip;
  }
  return out;
}

TEST(IpfixTshark, DissectorDecodesStandardElements) {
  if (run("command -v tshark").empty()) {
    // CI installs it (scripts/install-deps.sh): there its absence fails.
    if (std::getenv("CI") != nullptr) FAIL() << "tshark not installed";
    GTEST_SKIP() << "tshark not installed";
  }
  Collector c;
  Fixture fx;
  ASSERT_TRUE(fx.open(c.address()));
  Flow start = tcp_flow(flowlog::FlowEvent::Start, flowlog::Verdict::Deny);
  Flow end = tcp_flow(flowlog::FlowEvent::End, flowlog::Verdict::Allow);
  end.packets_orig = 10;
  end.bytes_orig = 1000;
  end.packets_reply = 8;
  end.bytes_reply = 64000;
  Flow v6 = start;
  v6.src.ip = "fd00::10";
  v6.dst.ip = "2001:db8::20";
  v6.protocol = flowlog::kProtoUdp;
  v6.dst.port = 53;
  v6.rule_name = std::string(300, 'r');  // 3-byte length in the capture too
  fx.exporter.export_record(flow_record(kT0, start));
  fx.exporter.export_record(flow_record(kT0 + 1000, end));
  fx.exporter.export_record(flow_record(kT0 + 2000, v6));
  fx.exporter.flush();
  for (int i = 0; i < 60; ++i) fx.exporter.export_record(flow_record(kT0, start));
  fx.exporter.flush();
  while (c.receive(500)) {
  }
  ASSERT_GE(c.raw.size(), 3U);

  const auto path = std::filesystem::temp_directory_path() /
                    ("ipfix_test_" + std::to_string(::getpid()) + ".pcap");
  {
    std::ofstream out(path, std::ios::binary);
    const std::string pcap = pcap_of(c.raw);
    out.write(pcap.data(), static_cast<std::streamsize>(pcap.size()));
  }
  const std::string base = "tshark -n -r " + path.string() + " -d udp.port==4739,cflow ";
  const std::string verbose = run(base + "-V 2>&1");
  EXPECT_EQ(verbose.find("Malformed"), std::string::npos) << verbose;
  EXPECT_EQ(verbose.find("Expert Info (Warn"), std::string::npos) << verbose;
  EXPECT_EQ(verbose.find("Expert Info (Error"), std::string::npos) << verbose;
  EXPECT_EQ(verbose.find("not found"), std::string::npos) << verbose;  // unknown template
  // One line per message; ';' between fields, ',' between a message's values.
  const std::string fields =
      run(base +
          "-Y cflow -T fields -E separator=';' -e cflow.version -e cflow.od_id -e cflow.sequence "
          "-e cflow.srcaddr -e cflow.dstaddr -e cflow.srcaddrv6 -e cflow.dstaddrv6 "
          "-e cflow.srcport -e cflow.dstport -e cflow.protocol -e cflow.firewall_event "
          "-e cflow.packets -e cflow.octets 2>/dev/null");
  std::vector<std::string> lines;
  std::size_t start_at = 0;
  for (std::size_t nl; (nl = fields.find('\n', start_at)) != std::string::npos; start_at = nl + 1) {
    lines.push_back(fields.substr(start_at, nl - start_at));
  }
  ASSERT_EQ(lines.size(), c.raw.size()) << fields;
  EXPECT_EQ(lines[0],
            "10;7;0;10.88.0.10,10.88.0.10;10.88.0.20,10.88.0.20;fd00::10;2001:db8::20;"
            "51234,51234,51234;5432,5432,53;6,6,17;3,2,3;10,8;1000,64000");
  std::uint32_t sequence = 3;
  Decoder d;
  std::string why;
  ASSERT_TRUE(d.decode(c.raw[0], why).has_value()) << why;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const auto m = d.decode(c.raw[i], why);
    ASSERT_TRUE(m.has_value()) << why;
    auto times = [&](const std::string& v) {
      std::string out;
      for (std::size_t k = 0; k < m->records.size(); ++k) out += (k == 0 ? "" : ",") + v;
      return out;
    };
    EXPECT_EQ(lines[i], "10;7;" + std::to_string(sequence) + ";" + times("10.88.0.10") + ";" +
                            times("10.88.0.20") + ";;;" + times("51234") + ";" + times("5432") +
                            ";" + times("6") + ";" + times("3") + ";;");
    sequence += static_cast<std::uint32_t>(m->records.size());
  }
  EXPECT_EQ(sequence, 63U);
  std::filesystem::remove(path);
}

}  // namespace
