#include "tierwall/ipfix/ipfix.h"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <netdb.h>
#include <span>
#include <sys/socket.h>
#include <unistd.h>
#include <variant>

namespace tierwall::ipfix {

namespace {

constexpr std::uint16_t kVersion = 10;
constexpr std::size_t kHeaderBytes = 16;
constexpr std::size_t kSetHeaderBytes = 4;
constexpr std::uint16_t kTemplateSetId = 2;
constexpr std::uint16_t kVarLen = 0xFFFF;
constexpr std::size_t kMaxMessage = 65535;
constexpr std::size_t kMinMessage = 1024;  // the four templates take ~580 bytes
constexpr std::size_t kMaxString = 4096;   // 11 strings stay far below 65535

// Which value a template field carries; the encoder switches on it, so the
// templates and the records are produced from the same list.
enum class F : std::uint8_t {
  SrcV4,
  DstV4,
  SrcV6,
  DstV6,
  SrcPort,
  DstPort,
  Proto,
  IcmpV4,
  IcmpV6,
  StartMs,
  EndMs,
  FirewallEvent,
  FlowCount,
  Packets,
  Octets,
  RevPackets,
  RevOctets,
  SrcTier,
  DstTier,
  SrcName,
  DstName,
  RuleName,
  RuleKind,
  Verdict,
  Generation,
  Node,
  SrcEntity,
  DstEntity,
};

enum class Pen : std::uint8_t { Iana, Reverse, Private };

struct FieldSpec {
  std::uint16_t ie;
  std::uint16_t length;
  Pen pen;
};

constexpr FieldSpec spec(F f) {
  switch (f) {
    case F::SrcV4:
      return {8, 4, Pen::Iana};  // sourceIPv4Address
    case F::DstV4:
      return {12, 4, Pen::Iana};  // destinationIPv4Address
    case F::SrcV6:
      return {27, 16, Pen::Iana};  // sourceIPv6Address
    case F::DstV6:
      return {28, 16, Pen::Iana};  // destinationIPv6Address
    case F::SrcPort:
      return {7, 2, Pen::Iana};  // sourceTransportPort
    case F::DstPort:
      return {11, 2, Pen::Iana};  // destinationTransportPort
    case F::Proto:
      return {4, 1, Pen::Iana};  // protocolIdentifier
    case F::IcmpV4:
      return {32, 2, Pen::Iana};  // icmpTypeCodeIPv4
    case F::IcmpV6:
      return {139, 2, Pen::Iana};  // icmpTypeCodeIPv6
    case F::StartMs:
      return {152, 8, Pen::Iana};  // flowStartMilliseconds
    case F::EndMs:
      return {153, 8, Pen::Iana};  // flowEndMilliseconds
    case F::FirewallEvent:
      return {233, 1, Pen::Iana};  // firewallEvent
    case F::FlowCount:
      return {3, 8, Pen::Iana};  // deltaFlowCount
    case F::Packets:
      return {2, 8, Pen::Iana};  // packetDeltaCount
    case F::Octets:
      return {1, 8, Pen::Iana};  // octetDeltaCount
    case F::RevPackets:
      return {2, 8, Pen::Reverse};  // reversePacketDeltaCount
    case F::RevOctets:
      return {1, 8, Pen::Reverse};  // reverseOctetDeltaCount
    case F::SrcTier:
      return {static_cast<std::uint16_t>(TierwallIe::SourceTier), kVarLen, Pen::Private};
    case F::DstTier:
      return {static_cast<std::uint16_t>(TierwallIe::DestinationTier), kVarLen, Pen::Private};
    case F::SrcName:
      return {static_cast<std::uint16_t>(TierwallIe::SourceEndpointName), kVarLen, Pen::Private};
    case F::DstName:
      return {static_cast<std::uint16_t>(TierwallIe::DestinationEndpointName), kVarLen,
              Pen::Private};
    case F::RuleName:
      return {static_cast<std::uint16_t>(TierwallIe::RuleName), kVarLen, Pen::Private};
    case F::RuleKind:
      return {static_cast<std::uint16_t>(TierwallIe::RuleKind), kVarLen, Pen::Private};
    case F::Verdict:
      return {static_cast<std::uint16_t>(TierwallIe::Verdict), kVarLen, Pen::Private};
    case F::Generation:
      return {static_cast<std::uint16_t>(TierwallIe::PolicyGeneration), 8, Pen::Private};
    case F::Node:
      return {static_cast<std::uint16_t>(TierwallIe::NodeName), kVarLen, Pen::Private};
    case F::SrcEntity:
      return {static_cast<std::uint16_t>(TierwallIe::SourceEntity), kVarLen, Pen::Private};
    case F::DstEntity:
      return {static_cast<std::uint16_t>(TierwallIe::DestinationEntity), kVarLen, Pen::Private};
  }
  return {0, 0, Pen::Iana};
}

// Template layouts. Fixed-length fields first, strings last.
constexpr std::array kIpv4Start{F::SrcV4,     F::DstV4,      F::SrcPort,   F::DstPort,
                                F::Proto,     F::IcmpV4,     F::StartMs,   F::FirewallEvent,
                                F::FlowCount, F::Generation, F::SrcTier,   F::DstTier,
                                F::SrcName,   F::DstName,    F::RuleName,  F::RuleKind,
                                F::Verdict,   F::Node,       F::SrcEntity, F::DstEntity};
constexpr std::array kIpv4End{
    F::SrcV4,     F::DstV4,         F::SrcPort,   F::DstPort, F::Proto,     F::IcmpV4,
    F::EndMs,     F::FirewallEvent, F::FlowCount, F::Packets, F::Octets,    F::RevPackets,
    F::RevOctets, F::Generation,    F::SrcTier,   F::DstTier, F::SrcName,   F::DstName,
    F::RuleName,  F::RuleKind,      F::Verdict,   F::Node,    F::SrcEntity, F::DstEntity};
constexpr std::array kIpv6Start{F::SrcV6,     F::DstV6,      F::SrcPort,   F::DstPort,
                                F::Proto,     F::IcmpV6,     F::StartMs,   F::FirewallEvent,
                                F::FlowCount, F::Generation, F::SrcTier,   F::DstTier,
                                F::SrcName,   F::DstName,    F::RuleName,  F::RuleKind,
                                F::Verdict,   F::Node,       F::SrcEntity, F::DstEntity};
constexpr std::array kIpv6End{
    F::SrcV6,     F::DstV6,         F::SrcPort,   F::DstPort, F::Proto,     F::IcmpV6,
    F::EndMs,     F::FirewallEvent, F::FlowCount, F::Packets, F::Octets,    F::RevPackets,
    F::RevOctets, F::Generation,    F::SrcTier,   F::DstTier, F::SrcName,   F::DstName,
    F::RuleName,  F::RuleKind,      F::Verdict,   F::Node,    F::SrcEntity, F::DstEntity};

std::span<const F> layout(std::uint16_t template_id) {
  switch (template_id) {
    case kTemplateIpv4Start:
      return kIpv4Start;
    case kTemplateIpv4End:
      return kIpv4End;
    case kTemplateIpv6Start:
      return kIpv6Start;
    default:
      return kIpv6End;
  }
}

void put8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
void put16(std::string& out, std::uint16_t v) {
  put8(out, static_cast<std::uint8_t>(v >> 8));
  put8(out, static_cast<std::uint8_t>(v));
}
void put32(std::string& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v));
}
void put64(std::string& out, std::uint64_t v) {
  put32(out, static_cast<std::uint32_t>(v >> 32));
  put32(out, static_cast<std::uint32_t>(v));
}
void set16(std::string& out, std::size_t at, std::uint16_t v) {
  out[at] = static_cast<char>(v >> 8);
  out[at + 1] = static_cast<char>(v & 0xFF);
}
void set32(std::string& out, std::size_t at, std::uint32_t v) {
  set16(out, at, static_cast<std::uint16_t>(v >> 16));
  set16(out, at + 2, static_cast<std::uint16_t>(v));
}

// The four templates as one Template Set (RFC 7011 §3.4.1).
std::string encode_template_set(std::uint32_t private_pen) {
  std::string out;
  put16(out, kTemplateSetId);
  put16(out, 0);
  for (std::uint16_t id :
       {kTemplateIpv4Start, kTemplateIpv4End, kTemplateIpv6Start, kTemplateIpv6End}) {
    const auto fields = layout(id);
    put16(out, id);
    put16(out, static_cast<std::uint16_t>(fields.size()));
    for (F f : fields) {
      const FieldSpec s = spec(f);
      if (s.pen == Pen::Iana) {
        put16(out, s.ie);
        put16(out, s.length);
      } else {
        put16(out, static_cast<std::uint16_t>(s.ie | 0x8000U));
        put16(out, s.length);
        put32(out, s.pen == Pen::Reverse ? kReversePen : private_pen);
      }
    }
  }
  set16(out, 2, static_cast<std::uint16_t>(out.size()));
  return out;
}

// Longest prefix of s not above max bytes that does not split a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0U) == 0x80U) --n;
  return s.substr(0, n);
}

struct Addresses {
  bool v6 = false;
  std::array<std::uint8_t, 16> src{};
  std::array<std::uint8_t, 16> dst{};
};

// IPv4 as 4 bytes, or IPv6 (IPv4 mapped into ::ffff:0:0/96 when mixed).
bool parse_addresses(const std::string& src, const std::string& dst, Addresses& out) {
  std::array<std::uint8_t, 4> s4{}, d4{};
  const bool src4 = ::inet_pton(AF_INET, src.c_str(), s4.data()) == 1;
  const bool dst4 = ::inet_pton(AF_INET, dst.c_str(), d4.data()) == 1;
  if (src4 && dst4) {
    std::memcpy(out.src.data(), s4.data(), 4);
    std::memcpy(out.dst.data(), d4.data(), 4);
    out.v6 = false;
    return true;
  }
  auto as_v6 = [](bool is4, const std::array<std::uint8_t, 4>& a4, const std::string& text,
                  std::array<std::uint8_t, 16>& a16) {
    if (is4) {
      a16.fill(0);
      a16[10] = 0xFF;
      a16[11] = 0xFF;
      std::memcpy(a16.data() + 12, a4.data(), 4);
      return true;
    }
    return ::inet_pton(AF_INET6, text.c_str(), a16.data()) == 1;
  };
  out.v6 = true;
  return as_v6(src4, s4, src, out.src) && as_v6(dst4, d4, dst, out.dst);
}

std::uint8_t firewall_event(const flowlog::Flow& f) {
  if (f.event == flowlog::FlowEvent::End) return 2;   // flow deleted
  if (f.verdict == flowlog::Verdict::Deny) return 3;  // flow denied
  return 1;  // flow created (allow; audit passes too, Verdict says "audit")
}

std::int64_t to_us(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

}  // namespace

bool parse_collector(std::string_view text, std::string& host, std::uint16_t& port) {
  port = kDefaultPort;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(text.substr(1, close - 1));
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port_text = rest.substr(1);
      if (port_text.empty()) return false;
    }
  } else if (text.find(':') != text.rfind(':')) {
    host = std::string(text);  // bare IPv6 address, default port
  } else {
    const std::size_t colon = text.find(':');
    host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      if (port_text.empty()) return false;
    }
  }
  if (host.empty()) return false;
  if (!port_text.empty()) {
    unsigned value = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return false;
    }
    port = static_cast<std::uint16_t>(value);
  }
  return true;
}

struct IpfixExporter::Impl {
  Options opts;
  int fd = -1;
  std::string templates;  // the encoded Template Set
  std::string msg;        // the message being filled; empty: none
  std::string rec;        // scratch: one encoded data record
  std::size_t set_start = 0;
  std::uint16_t set_id = 0;  // template id of the open Data Set, 0: none
  std::uint32_t msg_records = 0;
  bool msg_has_templates = false;
  bool templates_sent = false;
  std::chrono::system_clock::time_point last_templates{};
  std::uint32_t messages_since_templates = 0;
  std::uint32_t sequence = 0;

  std::atomic<std::uint64_t> messages{0}, records{0}, template_sets{0}, bytes{0},
      dropped_messages{0}, dropped_records{0}, invalid{0}, truncated{0};
  std::atomic<std::uint32_t> sequence_out{0};
  std::atomic<int> last_errno{0};

  std::chrono::system_clock::time_point now() const {
    return opts.clock ? opts.clock() : std::chrono::system_clock::now();
  }

  static void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  void put_string(std::string_view s) {
    const std::string_view v = utf8_prefix(s, opts.max_string_bytes);
    if (v.size() < s.size()) bump(truncated);
    if (v.size() < 255) {
      put8(rec, static_cast<std::uint8_t>(v.size()));
    } else {
      put8(rec, 255);
      put16(rec, static_cast<std::uint16_t>(v.size()));
    }
    rec.append(v);
  }

  // Encodes f into rec; returns the template id, 0 when not exportable.
  std::uint16_t encode(const flowlog::FlowRecord& r, const flowlog::Flow& f) {
    Addresses a;
    if (!parse_addresses(f.src.ip, f.dst.ip, a)) return 0;
    const bool end = f.event == flowlog::FlowEvent::End;
    const std::uint16_t id = a.v6 ? (end ? kTemplateIpv6End : kTemplateIpv6Start)
                                  : (end ? kTemplateIpv4End : kTemplateIpv4Start);
    const bool icmp = f.protocol == flowlog::kProtoIcmp || f.protocol == flowlog::kProtoIcmpv6;
    const std::int64_t us = r.time_us != 0 ? r.time_us : to_us(now());
    const auto ms = static_cast<std::uint64_t>(us < 0 ? 0 : us / 1000);
    const auto icmp_code = static_cast<std::uint16_t>((f.icmp_type << 8U) | f.icmp_code);
    rec.clear();
    for (F field : layout(id)) {
      switch (field) {
        case F::SrcV4:
          rec.append(reinterpret_cast<const char*>(a.src.data()), 4);
          break;
        case F::DstV4:
          rec.append(reinterpret_cast<const char*>(a.dst.data()), 4);
          break;
        case F::SrcV6:
          rec.append(reinterpret_cast<const char*>(a.src.data()), 16);
          break;
        case F::DstV6:
          rec.append(reinterpret_cast<const char*>(a.dst.data()), 16);
          break;
        case F::SrcPort:
          put16(rec, icmp ? 0 : f.src.port);
          break;
        case F::DstPort:
          put16(rec, icmp ? 0 : f.dst.port);
          break;
        case F::Proto:
          put8(rec, f.protocol);
          break;
        case F::IcmpV4:
        case F::IcmpV6:
          put16(rec, icmp ? icmp_code : 0);
          break;
        case F::StartMs:
        case F::EndMs:
          put64(rec, ms);
          break;
        case F::FirewallEvent:
          put8(rec, firewall_event(f));
          break;
        case F::FlowCount:
          put64(rec, f.count);
          break;
        case F::Packets:
          put64(rec, f.packets_orig);
          break;
        case F::Octets:
          put64(rec, f.bytes_orig);
          break;
        case F::RevPackets:
          put64(rec, f.packets_reply);
          break;
        case F::RevOctets:
          put64(rec, f.bytes_reply);
          break;
        case F::SrcTier:
          put_string(f.src.tier);
          break;
        case F::DstTier:
          put_string(f.dst.tier);
          break;
        case F::SrcName:
          put_string(f.src.name);
          break;
        case F::DstName:
          put_string(f.dst.name);
          break;
        case F::RuleName:
          put_string(f.rule_name);
          break;
        case F::RuleKind:
          put_string(flowlog::to_string(f.rule_kind));
          break;
        case F::Verdict:
          put_string(flowlog::to_string(f.verdict));
          break;
        case F::Generation:
          put64(rec, f.generation);
          break;
        case F::Node:
          put_string(opts.node);
          break;
        case F::SrcEntity:
          put_string(flowlog::to_string(f.src.entity));
          break;
        case F::DstEntity:
          put_string(flowlog::to_string(f.dst.entity));
          break;
      }
    }
    return id;
  }

  void begin_message() {
    msg.assign(kHeaderBytes, '\0');
    set_id = 0;
    msg_records = 0;
    const auto t = now();
    msg_has_templates = !templates_sent || t - last_templates >= opts.template_refresh ||
                        (opts.template_refresh_messages != 0 &&
                         messages_since_templates >= opts.template_refresh_messages);
    if (msg_has_templates) {
      msg += templates;
      templates_sent = true;
      last_templates = t;
      messages_since_templates = 0;
    }
  }

  void close_set() {
    if (set_id != 0) set16(msg, set_start + 2, static_cast<std::uint16_t>(msg.size() - set_start));
    set_id = 0;
  }

  void send_message() {
    if (msg.empty()) return;
    if (msg_records == 0) {  // nothing but templates: not worth a datagram
      msg.clear();
      return;
    }
    close_set();
    const auto export_s =
        std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count();
    set16(msg, 0, kVersion);
    set16(msg, 2, static_cast<std::uint16_t>(msg.size()));
    set32(msg, 4, static_cast<std::uint32_t>(export_s < 0 ? 0 : export_s));
    set32(msg, 8, sequence);
    set32(msg, 12, opts.observation_domain_id);
    ssize_t n = -1;
    do {
      n = ::send(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(msg.size())) {
      bump(messages);
      bump(records, msg_records);
      bump(bytes, msg.size());
      if (msg_has_templates) bump(template_sets);
    } else {
      last_errno.store(n < 0 ? errno : EMSGSIZE, std::memory_order_relaxed);
      bump(dropped_messages);
      bump(dropped_records, msg_records);
      if (msg_has_templates) templates_sent = false;  // resend with the next message
    }
    // Advanced even on failure: the collector sees the gap (RFC 7011 §10.3.2).
    sequence += msg_records;
    sequence_out.store(sequence, std::memory_order_relaxed);
    ++messages_since_templates;
    msg.clear();
    set_id = 0;
    msg_records = 0;
  }

  void add(const flowlog::FlowRecord& r, const flowlog::Flow& f) {
    const std::uint16_t id = encode(r, f);
    if (id == 0) {
      bump(invalid);
      return;
    }
    const std::size_t need = rec.size() + (id == set_id ? 0 : kSetHeaderBytes);
    if (msg_records > 0 && msg.size() + need > opts.max_message_bytes) send_message();
    if (msg.empty()) begin_message();
    if (id != set_id) {
      close_set();
      set_start = msg.size();
      put16(msg, id);
      put16(msg, 0);
      set_id = id;
    }
    msg += rec;
    ++msg_records;
    if (msg.size() >= opts.max_message_bytes) send_message();
  }
};

IpfixExporter::IpfixExporter() : impl_(std::make_unique<Impl>()) {}
IpfixExporter::~IpfixExporter() { close(); }

bool IpfixExporter::open(const Options& options, std::string* error) {
  auto fail = [&](std::string why) {
    if (error != nullptr) *error = std::move(why);
    return false;
  };
  close();
  std::string host;
  std::uint16_t port = 0;
  if (!parse_collector(options.collector, host, port)) {
    return fail("ipfix: bad collector \"" + options.collector + "\" (want HOST:PORT)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_protocol = IPPROTO_UDP;
  hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc == EAI_NONAME || rc == EAI_ADDRFAMILY) {  // AI_ADDRCONFIG hides loopback-only hosts
    hints.ai_flags = AI_NUMERICSERV;
    rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  }
  if (rc != 0 || res == nullptr) {
    return fail("ipfix: cannot resolve collector \"" + host + "\": " + ::gai_strerror(rc));
  }
  std::string last_error;
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    last_error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd < 0) return fail("ipfix: collector " + options.collector + ": " + last_error);

  auto& s = *impl_;
  s.opts = options;
  s.opts.max_message_bytes = std::clamp(options.max_message_bytes, kMinMessage, kMaxMessage);
  s.opts.max_string_bytes = std::min(options.max_string_bytes, kMaxString);
  s.fd = fd;
  s.templates = encode_template_set(options.enterprise_number);
  s.msg.clear();
  s.msg.reserve(s.opts.max_message_bytes);
  s.rec.reserve(512);
  s.templates_sent = false;
  s.messages_since_templates = 0;
  return true;
}

void IpfixExporter::export_record(const flowlog::FlowRecord& record) {
  if (impl_->fd < 0) return;
  if (const auto* flow = std::get_if<flowlog::Flow>(&record.body)) impl_->add(record, *flow);
}

void IpfixExporter::flush() {
  if (impl_->fd >= 0) impl_->send_message();
}

void IpfixExporter::close() {
  if (impl_->fd < 0) return;
  impl_->send_message();
  ::close(impl_->fd);
  impl_->fd = -1;
}

bool IpfixExporter::is_open() const { return impl_->fd >= 0; }

ExporterStats IpfixExporter::stats() const {
  const auto& s = *impl_;
  constexpr auto r = std::memory_order_relaxed;
  ExporterStats out;
  out.messages = s.messages.load(r);
  out.records = s.records.load(r);
  out.template_sets = s.template_sets.load(r);
  out.bytes = s.bytes.load(r);
  out.dropped_messages = s.dropped_messages.load(r);
  out.dropped_records = s.dropped_records.load(r);
  out.invalid = s.invalid.load(r);
  out.truncated_strings = s.truncated.load(r);
  out.sequence = s.sequence_out.load(r);
  out.last_errno = s.last_errno.load(r);
  return out;
}

}  // namespace tierwall::ipfix
