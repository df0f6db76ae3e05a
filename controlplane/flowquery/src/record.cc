#include "tierwall/flowquery/record.h"

#include <charconv>
#include <cstring>

#include "tierwall/flowquery/time.h"

namespace tierwall::flowquery {

std::string_view to_string(RecordType t) {
  switch (t) {
    case RecordType::Flow:
      return "flow";
    case RecordType::Loss:
      return "loss";
    case RecordType::Policy:
      return "policy";
    case RecordType::Agent:
      return "agent";
    case RecordType::Checkpoint:
      return "checkpoint";
    case RecordType::Other:
      break;
  }
  return "other";
}

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Allow:
      return "allow";
    case Verdict::Deny:
      return "deny";
    case Verdict::Audit:
      return "audit";
    case Verdict::None:
      break;
  }
  return "";
}

std::optional<RecordType> parse_record_type(std::string_view text) {
  if (text == "flow") return RecordType::Flow;
  if (text == "loss") return RecordType::Loss;
  if (text == "policy") return RecordType::Policy;
  if (text == "agent") return RecordType::Agent;
  if (text == "checkpoint") return RecordType::Checkpoint;
  return std::nullopt;
}

std::optional<Verdict> parse_verdict(std::string_view text) {
  if (text == "allow") return Verdict::Allow;
  if (text == "deny") return Verdict::Deny;
  if (text == "audit") return Verdict::Audit;
  return std::nullopt;
}

namespace {

Entity entity_of(std::string_view s) {
  if (s == "endpoint") return Entity::Endpoint;
  if (s == "host") return Entity::Host;
  if (s == "world") return Entity::World;
  return Entity::None;
}

// Reads the exact shape of a record line. Every method consumes on success
// and may leave the position anywhere on failure (the line is abandoned).
struct Cursor {
  const char*& p;
  const char* e;

  bool lit(std::string_view s) {
    if (static_cast<std::size_t>(e - p) < s.size() || std::memcmp(p, s.data(), s.size()) != 0)
      return false;
    p += s.size();
    return true;
  }
  bool peek(char c) const { return p < e && *p == c; }
  // A string without escapes; a backslash sends the line to the full parse.
  bool str(std::string_view& out) {
    if (p >= e || *p != '"') return false;
    const char* start = p + 1;
    const auto* q =
        static_cast<const char*>(std::memchr(start, '"', static_cast<std::size_t>(e - start)));
    if (q == nullptr) return false;
    const auto n = static_cast<std::size_t>(q - start);
    if (std::memchr(start, '\\', n) != nullptr) return false;
    out = std::string_view(start, n);
    p = q + 1;
    return true;
  }
  bool num(std::int64_t& out) {
    const auto [q, ec] = std::from_chars(p, e, out);
    if (ec != std::errc() || q == p) return false;
    p = q;
    return true;
  }
  bool num32(std::int32_t& out) {
    std::int64_t v = 0;
    if (!num(v) || v < 0 || v > 0x7fffffff) return false;
    out = static_cast<std::int32_t>(v);
    return true;
  }
  // null, or {"orig":N,"reply":N}
  bool directions(std::int64_t& orig, std::int64_t& reply) {
    if (lit("null")) return true;
    return lit(R"({"orig":)") && num(orig) && lit(R"(,"reply":)") && num(reply) && lit("}");
  }
  bool peer(Peer& peer) {
    peer = Peer{};
    if (!lit(R"({"ip":)") || !str(peer.ip)) return false;
    if (lit(R"(,"port":)") && !num32(peer.port)) return false;
    if (lit(R"(,"icmpType":)")) {
      if (!num32(peer.icmp_type) || !lit(R"(,"icmpCode":)") || !num32(peer.icmp_code)) return false;
    }
    if (!lit(R"(,"entity":)") || !str(peer.entity_text)) return false;
    peer.entity = entity_of(peer.entity_text);
    if (lit(R"(,"name":)") && !str(peer.name)) return false;
    if (lit(R"(,"id":)") && !str(peer.id)) return false;
    if (lit(R"(,"image":)") && !str(peer.image)) return false;
    if (lit(R"(,"tier":)") && !str(peer.tier)) return false;
    return lit("}");
  }
  // ,"prev":"..","hash":".."} and nothing after.
  bool tail(Record& r) {
    return lit(R"(,"prev":)") && str(r.prev) && lit(R"(,"hash":)") && str(r.hash) && lit("}") &&
           p == e;
  }
};

}  // namespace

bool RecordParser::header(std::string_view line, Record& r) {
  r = Record{};
  r.line = line;
  stage_ = Stage::None;
  pos_ = line.data();
  end_ = line.data() + line.size();
  Cursor c{pos_, end_};
  if (!c.lit(R"({"v":1,"seq":)") || !c.num(r.seq) || !c.lit(R"(,"time":)") || !c.str(r.time) ||
      !c.lit(R"(,"node":)") || !c.str(r.node) || !c.lit(R"(,"type":)") || !c.str(r.type_text)) {
    return false;
  }
  const auto t = parse_record_type(r.type_text);
  if (!t) return false;  // unknown types go to the full parse
  const auto us = parse_rfc3339_us(r.time);
  if (!us) return false;
  r.type = *t;
  r.time_us = *us;
  stage_ = Stage::Header;
  return true;
}

bool RecordParser::flow_head(Record& r) {
  if (stage_ != Stage::Header || r.type != RecordType::Flow) return stage_ >= Stage::FlowHead;
  Cursor c{pos_, end_};
  std::string_view verdict;
  if (!c.lit(R"(,"event":)") || !c.str(r.event) || !c.lit(R"(,"verdict":)") || !c.str(verdict) ||
      !c.lit(R"(,"proto":)") || !c.str(r.proto) || !c.lit(R"(,"dataplane":)") ||
      !c.str(r.dataplane) || !c.lit(R"(,"generation":)") || !c.num(r.generation)) {
    stage_ = Stage::None;
    return false;
  }
  const auto v = parse_verdict(verdict);
  if (!v) {
    stage_ = Stage::None;
    return false;
  }
  r.verdict = *v;
  stage_ = Stage::FlowHead;
  return true;
}

bool RecordParser::rest(Record& r) {
  if (stage_ == Stage::Complete) return true;
  if (stage_ == Stage::Header && r.type == RecordType::Flow && !flow_head(r)) return false;
  if (stage_ == Stage::None) return false;
  Cursor c{pos_, end_};
  bool ok = false;
  switch (r.type) {
    case RecordType::Flow:
      ok = c.lit(R"(,"src":)") && c.peer(r.src) && c.lit(R"(,"dst":)") && c.peer(r.dst) &&
           c.lit(R"(,"rule":{"kind":)") && c.str(r.rule_kind) &&
           (!c.lit(R"(,"name":)") || c.str(r.rule_name)) && c.lit(R"(},"count":)") &&
           c.num(r.count) && c.lit(R"(,"packets":)") &&
           c.directions(r.packets_orig, r.packets_reply) && c.lit(R"(,"bytes":)") &&
           c.directions(r.bytes_orig, r.bytes_reply) && c.tail(r);
      break;
    case RecordType::Loss:
      ok = c.lit(R"(,"source":)") && c.str(r.source) && c.lit(R"(,"reason":)") && c.str(r.reason) &&
           c.lit(R"(,"count":)") && c.num(r.count);
      if (ok && c.lit(R"(,"lowerBound":true)")) r.lower_bound = true;
      ok = ok && c.tail(r);
      break;
    case RecordType::Policy:
      ok = c.lit(R"(,"generation":)") && c.num(r.generation) && c.lit(R"(,"name":)") &&
           c.str(r.name) && c.lit(R"(,"digest":)") && c.str(r.digest) && c.lit(R"(,"by":)") &&
           c.str(r.by) && c.tail(r);
      break;
    case RecordType::Agent: {
      ok = c.lit(R"(,"event":)") && c.str(r.event) && c.lit(R"(,"version":)") && c.str(r.version);
      if (ok && c.lit(R"(,"torn":{"file":)")) {
        std::string_view file, data;
        std::int64_t n = 0;
        ok = c.str(file) && c.lit(R"(,"line":)") && c.num(n) && c.lit(R"(,"bytes":)") && c.num(n) &&
             c.lit(R"(,"data":)") && c.str(data) && c.lit("}");
      }
      ok = ok && c.tail(r);
      break;
    }
    case RecordType::Checkpoint: {
      std::string_view signature;
      ok = c.lit(R"(,"key":)") && c.str(r.key) && c.lit(R"(,"signature":)") && c.str(signature) &&
           c.tail(r);
      break;
    }
    case RecordType::Other:
      break;
  }
  stage_ = ok ? Stage::Complete : Stage::None;
  return ok;
}

namespace {

using nlohmann::json;

std::string_view sv(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

std::int64_t int_or(const json& j, const char* key, std::int64_t fallback) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return fallback;
  return it->get<std::int64_t>();
}

std::int32_t int32_or(const json& j, const char* key) {
  const auto v = int_or(j, key, -1);
  return v < 0 || v > 0x7fffffff ? -1 : static_cast<std::int32_t>(v);
}

void peer_from(const json& j, Peer& p) {
  p = Peer{};
  if (!j.is_object()) return;
  p.ip = sv(j, "ip");
  p.port = int32_or(j, "port");
  p.icmp_type = int32_or(j, "icmpType");
  p.icmp_code = int32_or(j, "icmpCode");
  p.entity_text = sv(j, "entity");
  p.entity = entity_of(p.entity_text);
  p.name = sv(j, "name");
  p.id = sv(j, "id");
  p.image = sv(j, "image");
  p.tier = sv(j, "tier");
}

void directions_from(const json& j, const char* key, std::int64_t& orig, std::int64_t& reply) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return;
  orig = int_or(*it, "orig", -1);
  reply = int_or(*it, "reply", -1);
}

}  // namespace

bool RecordParser::parse_full(std::string_view line, Record& r, std::string* error) {
  ++fallbacks_;
  r = Record{};
  r.line = line;
  stage_ = Stage::None;
  doc_ = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (doc_.is_discarded() || !doc_.is_object()) {
    if (error) *error = "not a JSON object";
    return false;
  }
  const json& j = doc_;
  r.seq = int_or(j, "seq", 0);
  r.time = sv(j, "time");
  const auto us = parse_rfc3339_us(r.time);
  if (!us) {
    if (error) *error = "no valid \"time\"";
    return false;
  }
  r.time_us = *us;
  r.node = sv(j, "node");
  r.type_text = sv(j, "type");
  if (r.type_text.empty()) {
    if (error) *error = "no \"type\"";
    return false;
  }
  r.type = parse_record_type(r.type_text).value_or(RecordType::Other);
  r.event = sv(j, "event");
  r.verdict = parse_verdict(sv(j, "verdict")).value_or(Verdict::None);
  r.proto = sv(j, "proto");
  r.dataplane = sv(j, "dataplane");
  r.generation = int_or(j, "generation", -1);
  if (const auto it = j.find("src"); it != j.end()) peer_from(*it, r.src);
  if (const auto it = j.find("dst"); it != j.end()) peer_from(*it, r.dst);
  if (const auto it = j.find("rule"); it != j.end() && it->is_object()) {
    r.rule_kind = sv(*it, "kind");
    r.rule_name = sv(*it, "name");
  }
  r.count = int_or(j, "count", 0);
  directions_from(j, "packets", r.packets_orig, r.packets_reply);
  directions_from(j, "bytes", r.bytes_orig, r.bytes_reply);
  r.source = sv(j, "source");
  r.reason = sv(j, "reason");
  if (const auto it = j.find("lowerBound"); it != j.end() && it->is_boolean())
    r.lower_bound = it->get<bool>();
  r.name = sv(j, "name");
  r.digest = sv(j, "digest");
  r.by = sv(j, "by");
  r.version = sv(j, "version");
  r.key = sv(j, "key");
  r.prev = sv(j, "prev");
  r.hash = sv(j, "hash");
  if (r.type == RecordType::Flow && r.verdict == Verdict::None) {
    if (error) *error = "flow record without a valid \"verdict\"";
    return false;
  }
  stage_ = Stage::Complete;
  return true;
}

bool RecordParser::parse(std::string_view line, Record& r, std::string* error) {
  if (header(line, r) && rest(r)) return true;
  return parse_full(line, r, error);
}

bool RecordParser::complete(Record& r, std::string* error) {
  if (stage_ == Stage::Complete) return true;
  if (stage_ != Stage::None && rest(r)) return true;
  return parse_full(r.line, r, error);
}

}  // namespace tierwall::flowquery
