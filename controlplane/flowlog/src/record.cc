#include "tierwall/flowlog/record.h"

#include <charconv>
#include <cstring>

#include <openssl/evp.h>

namespace tierwall::flowlog {

namespace {

constexpr std::string_view kHexDigits = "0123456789abcdef";

template <typename T>
void append_uint(std::string& out, T value) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

// Howard Hinnant's civil-calendar algorithms (public domain), re-derived:
// days since 1970-01-01 <-> proleptic Gregorian (y, m, d).
void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void put2(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}

// Fills "YYYY-MM-DDTHH:MM:SS" (19 bytes) for a second since the epoch; the
// last second is cached per thread (records arrive many per second).
void second_text(std::int64_t sec, char* out) {
  thread_local std::int64_t cached_sec = -1;
  thread_local char cached[19];
  if (sec != cached_sec) {
    const std::int64_t days = sec >= 0 ? sec / 86400 : (sec - 86399) / 86400;
    const auto rem = static_cast<unsigned>(sec - days * 86400);
    std::int64_t y = 0;
    unsigned m = 0, d = 0;
    civil_from_days(days, y, m, d);
    const auto year = static_cast<unsigned>(y < 0 ? 0 : (y > 9999 ? 9999 : y));
    put2(cached, year / 100);
    put2(cached + 2, year % 100);
    cached[4] = '-';
    put2(cached + 5, m);
    cached[7] = '-';
    put2(cached + 8, d);
    cached[10] = 'T';
    put2(cached + 11, rem / 3600);
    cached[13] = ':';
    put2(cached + 14, rem / 60 % 60);
    cached[16] = ':';
    put2(cached + 17, rem % 60);
    cached_sec = sec;
  }
  std::memcpy(out, cached, sizeof cached);
}

void split_time(std::int64_t time_us, std::int64_t& sec, unsigned& micros) {
  sec = time_us >= 0 ? time_us / 1000000 : (time_us - 999999) / 1000000;
  micros = static_cast<unsigned>(time_us - sec * 1000000);
}

void put6(char* p, unsigned v) {
  for (int i = 5; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

void append_peer(std::string& out, const Peer& p, bool with_port, bool with_icmp, const Flow& f) {
  out += "{\"ip\":";
  append_json_string(out, p.ip);
  if (with_icmp) {
    out += ",\"icmpType\":";
    append_uint(out, static_cast<unsigned>(f.icmp_type));
    out += ",\"icmpCode\":";
    append_uint(out, static_cast<unsigned>(f.icmp_code));
  } else if (with_port) {
    out += ",\"port\":";
    append_uint(out, static_cast<unsigned>(p.port));
  }
  out += ",\"entity\":\"";
  out += to_string(p.entity);
  out += '"';
  if (p.entity == Entity::Endpoint) {
    const auto opt = [&out](std::string_view key, const std::string& v) {
      if (v.empty()) return;
      out += key;
      append_json_string(out, v);
    };
    opt(",\"name\":", p.name);
    opt(",\"id\":", p.id);
    opt(",\"image\":", p.image);
    opt(",\"tier\":", p.tier);
  }
  out += '}';
}

void append_prefix(std::string& out, std::uint64_t seq, std::int64_t time_us, std::string_view node,
                   std::string_view type) {
  out += "{\"v\":1,\"seq\":";
  append_uint(out, seq);
  out += ",\"time\":\"";
  append_time(out, time_us);
  out += "\",\"node\":";
  append_json_string(out, node);
  out += ",\"type\":\"";
  out += type;
  out += '"';
}

void append_prev(std::string& out, std::string_view prev_hex) {
  out += ",\"prev\":\"";
  out += prev_hex;
  out += '"';
}

struct BodyWriter {
  std::string& out;

  void operator()(const Flow& f) const {
    out += ",\"event\":\"";
    out += to_string(f.event);
    out += "\",\"verdict\":\"";
    out += to_string(f.verdict);
    out += "\",\"proto\":\"";
    out += proto_name(f.protocol);
    out += "\",\"dataplane\":\"";
    out += to_string(f.dataplane);
    out += "\",\"generation\":";
    append_uint(out, f.generation);
    const bool icmp = f.protocol == kProtoIcmp || f.protocol == kProtoIcmpv6;
    out += ",\"src\":";
    append_peer(out, f.src, !icmp, false, f);
    out += ",\"dst\":";
    append_peer(out, f.dst, !icmp, icmp, f);
    out += ",\"rule\":{\"kind\":\"";
    out += to_string(f.rule_kind);
    out += '"';
    if (f.rule_kind == RuleKind::Flow || f.rule_kind == RuleKind::Deny) {
      out += ",\"name\":";
      append_json_string(out, f.rule_name);
    }
    out += "},\"count\":";
    append_uint(out, f.count);
    if (f.event == FlowEvent::End) {
      out += ",\"packets\":{\"orig\":";
      append_uint(out, f.packets_orig);
      out += ",\"reply\":";
      append_uint(out, f.packets_reply);
      out += "},\"bytes\":{\"orig\":";
      append_uint(out, f.bytes_orig);
      out += ",\"reply\":";
      append_uint(out, f.bytes_reply);
      out += '}';
    } else {
      out += ",\"packets\":null,\"bytes\":null";
    }
  }

  void operator()(const Loss& l) const {
    out += ",\"source\":\"";
    out += to_string(l.source);
    out += "\",\"reason\":";
    append_json_string(out, l.reason);
    out += ",\"count\":";
    append_uint(out, l.count);
    if (l.lower_bound) out += ",\"lowerBound\":true";
  }

  void operator()(const Policy& p) const {
    out += ",\"generation\":";
    append_uint(out, p.generation);
    out += ",\"name\":";
    append_json_string(out, p.name);
    out += ",\"digest\":";
    append_json_string(out, p.digest);
    out += ",\"by\":";
    append_json_string(out, p.by);
  }

  void operator()(const Agent& a) const {
    out += ",\"event\":\"";
    out += to_string(a.event);
    out += "\",\"version\":";
    append_json_string(out, a.version);
    if (a.event == AgentEvent::Recovered) {
      out += ",\"torn\":{\"file\":";
      append_json_string(out, a.torn.file);
      out += ",\"line\":";
      append_uint(out, a.torn.line);
      out += ",\"bytes\":";
      append_uint(out, a.torn.data.size());
      out += ",\"data\":\"";
      out += base64_encode(a.torn.data);
      out += "\"}";
    }
  }
};

std::string_view type_name(const FlowRecord& r) {
  switch (r.body.index()) {
    case 0:
      return "flow";
    case 1:
      return "loss";
    case 2:
      return "policy";
    default:
      return "agent";
  }
}

bool is_lower_hex(std::string_view s) {
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Index one past the JSON string literal starting at s[i] == '"', or npos.
std::size_t skip_string(std::string_view s, std::size_t i) {
  for (++i; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\') {
      ++i;
    } else if (c == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Index one past the JSON value starting at s[i], or npos. Nested
// objects/arrays are skipped by bracket depth (strings honoured).
std::size_t skip_value(std::string_view s, std::size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    std::size_t depth = 0;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
  return i;
}

bool consume(std::string_view line, std::size_t& i, std::string_view lit) {
  if (line.substr(i, lit.size()) != lit) return false;
  i += lit.size();
  return true;
}

bool fail(std::string* why, const char* message) {
  if (why != nullptr) *why = message;
  return false;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::uint32_t> hex4(std::string_view s, std::size_t i) {
  if (i + 4 > s.size()) return std::nullopt;
  std::uint32_t v = 0;
  for (std::size_t k = 0; k < 4; ++k) {
    const char c = s[i + k];
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= static_cast<std::uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v |= static_cast<std::uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      v |= static_cast<std::uint32_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
  }
  return v;
}

}  // namespace

// ---- text helpers --------------------------------------------------------

void append_time(std::string& out, std::int64_t time_us) {
  std::int64_t sec = 0;
  unsigned micros = 0;
  split_time(time_us, sec, micros);
  char buf[27];
  second_text(sec, buf);
  buf[19] = '.';
  put6(buf + 20, micros);
  buf[26] = 'Z';
  out.append(buf, sizeof buf);
}

std::string file_time(std::int64_t time_us) {
  std::int64_t sec = 0;
  unsigned micros = 0;
  split_time(time_us, sec, micros);
  char buf[19];
  second_text(sec, buf);
  // YYYY-MM-DDTHH:MM:SS -> YYYYMMDDTHHMMSS
  std::string r;
  r.reserve(23);
  for (const char c : std::string_view(buf, sizeof buf)) {
    if (c != '-' && c != ':') r += c;
  }
  char frac[8];
  frac[0] = '.';
  put6(frac + 1, micros);
  frac[7] = 'Z';
  r.append(frac, sizeof frac);
  return r;
}

std::optional<std::int64_t> parse_time(std::string_view t) {
  if (t.size() != 27 || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' ||
      t[16] != ':' || t[19] != '.' || t[26] != 'Z') {
    return std::nullopt;
  }
  const auto num = [&t](std::size_t pos, std::size_t len) -> std::optional<unsigned> {
    unsigned v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (t[i] < '0' || t[i] > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(t[i] - '0');
    }
    return v;
  };
  const auto y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
             s = num(17, 2), us = num(20, 6);
  if (!y || !mo || !d || !h || !mi || !s || !us) return std::nullopt;
  if (*mo < 1 || *mo > 12 || *d < 1 || *d > 31 || *h > 23 || *mi > 59 || *s > 60) {
    return std::nullopt;
  }
  const std::int64_t days = days_from_civil(*y, *mo, *d);
  return ((days * 86400 + *h * 3600 + *mi * 60 + *s) * 1000000) + *us;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (!needs_escape(c)) continue;
    out.append(s.data() + start, i - start);
    start = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', kHexDigits[c >> 4], kHexDigits[c & 0xF]};
        out.append(esc, sizeof esc);
      }
    }
  }
  out.append(s.data() + start, s.size() - start);
  out += '"';
}

std::optional<std::string> unescape_json_string(std::string_view lit) {
  if (lit.size() < 2 || lit.front() != '"' || lit.back() != '"') return std::nullopt;
  std::string out;
  out.reserve(lit.size() - 2);
  for (std::size_t i = 1; i + 1 < lit.size(); ++i) {
    const char c = lit[i];
    if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
    if (c == '"') return std::nullopt;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= lit.size() - 1) return std::nullopt;
    switch (lit[i]) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        auto cp = hex4(lit.substr(0, lit.size() - 1), i + 1);
        if (!cp) return std::nullopt;
        i += 4;
        if (*cp >= 0xD800 && *cp <= 0xDBFF) {
          if (i + 2 >= lit.size() - 1 || lit[i + 1] != '\\' || lit[i + 2] != 'u') {
            return std::nullopt;
          }
          const auto lo = hex4(lit.substr(0, lit.size() - 1), i + 3);
          if (!lo || *lo < 0xDC00 || *lo > 0xDFFF) return std::nullopt;
          i += 6;
          *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*lo - 0xDC00);
        } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
          return std::nullopt;
        }
        append_utf8(out, *cp);
        break;
      }
      default:
        return std::nullopt;
    }
  }
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size) {
  std::string r(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    r[2 * i] = kHexDigits[data[i] >> 4];
    r[2 * i + 1] = kHexDigits[data[i] & 0xF];
  }
  return r;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string r(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < r.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    r[i] = static_cast<char>(hi << 4 | lo);
  }
  return r;
}

std::string base64_encode(std::string_view data) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto byte = [&data](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(data[k]));
  };
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 0x3F];
    out += kAlphabet[(v >> 6) & 0x3F];
    out += kAlphabet[v & 0x3F];
  }
  const std::size_t rest = data.size() - i;
  if (rest > 0) {
    std::uint32_t v = byte(i) << 16;
    if (rest == 2) v |= byte(i + 1) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 0x3F];
    out += rest == 2 ? kAlphabet[(v >> 6) & 0x3F] : '=';
    out += '=';
  }
  return out;
}

std::string_view to_string(FlowEvent e) { return e == FlowEvent::Start ? "start" : "end"; }

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Allow:
      return "allow";
    case Verdict::Deny:
      return "deny";
    case Verdict::Audit:
      return "audit";
  }
  return "deny";
}

std::string_view to_string(Entity e) {
  switch (e) {
    case Entity::Endpoint:
      return "endpoint";
    case Entity::Host:
      return "host";
    case Entity::World:
      return "world";
  }
  return "world";
}

std::string_view to_string(Dataplane d) { return d == Dataplane::Nft ? "nft" : "dpdk"; }

std::string_view to_string(RuleKind k) {
  switch (k) {
    case RuleKind::Flow:
      return "flow";
    case RuleKind::Deny:
      return "deny";
    case RuleKind::IntraTier:
      return "intraTier";
    case RuleKind::DefaultDeny:
      return "default-deny";
    case RuleKind::Self:
      return "self";
  }
  return "default-deny";
}

std::string_view to_string(LossSource s) {
  switch (s) {
    case LossSource::Nflog:
      return "nflog";
    case LossSource::Conntrack:
      return "conntrack";
    case LossSource::Queue:
      return "queue";
    case LossSource::Dpdk:
      return "dpdk";
  }
  return "queue";
}

std::string_view to_string(AgentEvent e) {
  switch (e) {
    case AgentEvent::Start:
      return "start";
    case AgentEvent::Stop:
      return "stop";
    case AgentEvent::Recovered:
      return "recovered";
  }
  return "start";
}

std::string proto_name(std::uint8_t protocol) {
  switch (protocol) {
    case kProtoTcp:
      return "tcp";
    case kProtoUdp:
      return "udp";
    case kProtoSctp:
      return "sctp";
    case kProtoIcmp:
      return "icmp";
    case kProtoIcmpv6:
      return "icmpv6";
    default:
      return std::to_string(static_cast<unsigned>(protocol));
  }
}

// ---- serialization -------------------------------------------------------

struct Sha256::Ctx {
  EVP_MD* md = nullptr;
  EVP_MD_CTX* ctx = nullptr;
  ~Ctx() {
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
  }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  ctx_->ctx = EVP_MD_CTX_new();
}

Sha256::~Sha256() = default;

Sha256::Digest Sha256::digest(std::string_view a, std::string_view b) {
  Digest d{};
  unsigned len = 0;
  // A failure here (out of memory) leaves an all-zero digest, which never
  // verifies: the error surfaces as a bad hash rather than a crash.
  if (ctx_->md == nullptr || ctx_->ctx == nullptr ||
      EVP_DigestInit_ex2(ctx_->ctx, ctx_->md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx_->ctx, a.data(), a.size()) != 1 ||
      (!b.empty() && EVP_DigestUpdate(ctx_->ctx, b.data(), b.size()) != 1) ||
      EVP_DigestFinal_ex(ctx_->ctx, d.data(), &len) != 1) {
    d.fill(0);
  }
  return d;
}

void append_body(std::string& out, const FlowRecord& r, std::uint64_t seq, std::string_view node,
                 std::string_view prev_hex) {
  append_prefix(out, seq, r.time_us, node, type_name(r));
  std::visit(BodyWriter{out}, r.body);
  append_prev(out, prev_hex);
}

void append_checkpoint_body(std::string& out, std::int64_t time_us, std::uint64_t seq,
                            std::string_view node, const Checkpoint& c, std::string_view prev_hex) {
  append_prefix(out, seq, time_us, node, "checkpoint");
  out += ",\"key\":\"";
  out += c.key;
  out += "\",\"signature\":\"";
  out += c.signature;
  out += '"';
  append_prev(out, prev_hex);
}

void finish_line(std::string& out, std::size_t body_start, Sha256& sha,
                 std::array<char, kHashHexLen>& hash_hex) {
  const std::string_view body(out.data() + body_start, out.size() - body_start);
  const auto d = sha.digest(body, "}");
  for (std::size_t i = 0; i < d.size(); ++i) {
    hash_hex[2 * i] = kHexDigits[d[i] >> 4];
    hash_hex[2 * i + 1] = kHexDigits[d[i] & 0xF];
  }
  out += ",\"hash\":\"";
  out.append(hash_hex.data(), hash_hex.size());
  out += "\"}\n";
}

std::string serialize_line(const FlowRecord& r, std::uint64_t seq, std::string_view node,
                           std::string_view prev_hex, std::string* hash_hex) {
  std::string out;
  append_body(out, r, seq, node, prev_hex);
  Sha256 sha;
  std::array<char, kHashHexLen> h{};
  finish_line(out, 0, sha, h);
  if (hash_hex != nullptr) hash_hex->assign(h.data(), h.size());
  return out;
}

std::string checkpoint_message(std::string_view node, std::uint64_t seq,
                               std::string_view prev_hex) {
  std::string m = "tierwall-checkpoint-v1\n";
  m += node;
  m += '\n';
  append_uint(m, seq);
  m += '\n';
  m += prev_hex;
  return m;
}

std::string head_message(std::string_view node, std::uint64_t seq, std::string_view hash_hex) {
  std::string m = "tierwall-head-v1\n";
  m += node;
  m += '\n';
  append_uint(m, seq);
  m += '\n';
  m += hash_hex;
  return m;
}

// ---- parsing -------------------------------------------------------------

bool parse_frame(std::string_view line, LineFields& out, std::string* why) {
  // `,"prev":"` 64 `","hash":"` 64 `"}`
  constexpr std::size_t kSuffix = 9 + kHashHexLen + 10 + kHashHexLen + 2;
  constexpr std::size_t kHashMember = 9 + kHashHexLen + 2;
  std::size_t i = 0;
  if (!consume(line, i, "{\"v\":1,\"seq\":")) return fail(why, "not a v1 record");
  std::uint64_t seq = 0;
  const auto* first = line.data() + i;
  const auto r = std::from_chars(first, line.data() + line.size(), seq);
  if (r.ec != std::errc() || r.ptr == first || (*first == '0')) {
    return fail(why, "bad seq");
  }
  i += static_cast<std::size_t>(r.ptr - first);
  if (!consume(line, i, ",\"time\":\"")) return fail(why, "missing time");
  const std::size_t time_end = line.find('"', i);
  if (time_end == std::string_view::npos) return fail(why, "bad time");
  out.time = line.substr(i, time_end - i);
  i = time_end + 1;
  if (!consume(line, i, ",\"node\":")) return fail(why, "missing node");
  if (i >= line.size() || line[i] != '"') return fail(why, "bad node");
  const std::size_t node_end = skip_string(line, i);
  if (node_end == std::string_view::npos) return fail(why, "bad node");
  auto node = unescape_json_string(line.substr(i, node_end - i));
  if (!node) return fail(why, "bad node");
  i = node_end;
  if (!consume(line, i, ",\"type\":\"")) return fail(why, "missing type");
  const std::size_t type_end = line.find('"', i);
  if (type_end == std::string_view::npos) return fail(why, "bad type");
  out.type = line.substr(i, type_end - i);
  i = type_end + 1;
  if (line.size() < kSuffix || i > line.size() - kSuffix) return fail(why, "missing prev/hash");
  const std::string_view suffix = line.substr(line.size() - kSuffix);
  if (suffix.substr(0, 9) != ",\"prev\":\"" ||
      suffix.substr(9 + kHashHexLen, 10) != "\",\"hash\":\"" ||
      suffix.substr(kSuffix - 2) != "\"}") {
    return fail(why, "missing prev/hash");
  }
  out.prev = suffix.substr(9, kHashHexLen);
  out.hash = suffix.substr(9 + kHashHexLen + 10, kHashHexLen);
  if (!is_lower_hex(out.prev) || !is_lower_hex(out.hash)) return fail(why, "bad prev/hash");
  out.seq = seq;
  out.node = std::move(*node);
  out.body = line.substr(0, line.size() - kHashMember);
  return true;
}

bool hash_matches(const LineFields& f, Sha256& sha) {
  const auto d = sha.digest(f.body, "}");
  if (f.hash.size() != 2 * d.size()) return false;
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (f.hash[2 * i] != kHexDigits[d[i] >> 4] || f.hash[2 * i + 1] != kHexDigits[d[i] & 0xF]) {
      return false;
    }
  }
  return true;
}

std::optional<std::string_view> find_member(std::string_view line, std::string_view key) {
  if (line.empty() || line[0] != '{') return std::nullopt;
  std::size_t i = 1;
  while (i < line.size()) {
    if (line[i] != '"') return std::nullopt;
    const std::size_t key_end = skip_string(line, i);
    if (key_end == std::string_view::npos || key_end >= line.size() || line[key_end] != ':') {
      return std::nullopt;
    }
    const std::string_view k = line.substr(i + 1, key_end - i - 2);
    const std::size_t v = key_end + 1;
    const std::size_t v_end = skip_value(line, v);
    if (v_end == std::string_view::npos || v_end >= line.size()) return std::nullopt;
    if (k == key) return line.substr(v, v_end - v);
    if (line[v_end] == '}') return std::nullopt;
    if (line[v_end] != ',') return std::nullopt;
    i = v_end + 1;
  }
  return std::nullopt;
}

}  // namespace tierwall::flowlog
