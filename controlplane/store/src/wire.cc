#include "tierwall/store/wire.h"

#include <array>
#include <charconv>

#include <nlohmann/json.hpp>

namespace tierwall::store {

using nlohmann::json;

const char* to_string(Error::Kind kind) {
  switch (kind) {
    case Error::Kind::Unavailable:
      return "unavailable";
    case Error::Kind::Tls:
      return "tls";
    case Error::Kind::Auth:
      return "auth";
    case Error::Kind::Permission:
      return "permission";
    case Error::Kind::NotFound:
      return "not-found";
    case Error::Kind::Compacted:
      return "compacted";
    case Error::Kind::Conflict:
      return "conflict";
    case Error::Kind::Etcd:
      return "etcd";
    case Error::Kind::Protocol:
      return "protocol";
    case Error::Kind::Invalid:
      return "invalid";
    case Error::Kind::Cancelled:
      return "cancelled";
  }
  return "unknown";
}

namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

Error protocol(std::string what) {
  return Error::make(Error::Kind::Protocol, "unexpected answer from etcd: " + std::move(what));
}

// int64 fields arrive as decimal strings (proto3 JSON) or, from some
// writers, as numbers; absent means 0.
bool int_field(const json& obj, const char* key, std::int64_t& out) {
  out = 0;
  if (!obj.is_object()) return false;
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return true;
  if (it->is_number_integer()) {
    out = it->get<std::int64_t>();
    return true;
  }
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && ptr == s.data() + s.size();
  }
  return false;
}

bool bool_field(const json& obj, const char* key) {
  if (!obj.is_object()) return false;
  const auto it = obj.find(key);
  return it != obj.end() && it->is_boolean() && it->get<bool>();
}

std::string string_field(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

bool bytes_field(const json& obj, const char* key, std::string& out) {
  out.clear();
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_string()) return false;
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  if (!decoded) return false;
  out = std::move(*decoded);
  return true;
}

Result<json> parse_object(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    std::string head(body.substr(0, 120));
    return protocol("not a JSON object: " + head);
  }
  return j;
}

Result<KeyValue> decode_kv(const json& j) {
  KeyValue kv;
  if (!j.is_object() || !bytes_field(j, "key", kv.key) || !bytes_field(j, "value", kv.value) ||
      !int_field(j, "create_revision", kv.create_revision) ||
      !int_field(j, "mod_revision", kv.mod_revision) || !int_field(j, "version", kv.version) ||
      !int_field(j, "lease", kv.lease)) {
    return protocol("malformed key-value " + j.dump().substr(0, 120));
  }
  return kv;
}

std::int64_t header_revision(const json& j) {
  std::int64_t rev = 0;
  if (j.contains("header")) int_field(j["header"], "revision", rev);
  return rev;
}

Result<RangeResponse> decode_range_object(const json& j) {
  RangeResponse r;
  r.revision = header_revision(j);
  if (!int_field(j, "count", r.count)) return protocol("malformed count");
  r.more = bool_field(j, "more");
  if (j.contains("kvs")) {
    if (!j["kvs"].is_array()) return protocol("kvs is not a list");
    for (const auto& item : j["kvs"]) {
      auto kv = decode_kv(item);
      if (!kv) return kv.error();
      r.kvs.push_back(std::move(kv.value()));
    }
  }
  return r;
}

std::string i64(std::int64_t v) { return std::to_string(v); }

json op_json(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::Kind::Put: {
      json p = {{"key", base64_encode(op.key)}, {"value", base64_encode(op.value)}};
      if (op.lease != 0) p["lease"] = i64(op.lease);
      return json{{"request_put", p}};
    }
    case TxnOp::Kind::Delete: {
      json d = {{"key", base64_encode(op.key)}};
      if (!op.range_end.empty()) d["range_end"] = base64_encode(op.range_end);
      return json{{"request_delete_range", d}};
    }
    case TxnOp::Kind::Range: {
      json r = {{"key", base64_encode(op.key)}};
      if (!op.range_end.empty()) r["range_end"] = base64_encode(op.range_end);
      return json{{"request_range", r}};
    }
  }
  return json::object();
}

const char* target_name(Compare::Target t) {
  switch (t) {
    case Compare::Target::Version:
      return "VERSION";
    case Compare::Target::Create:
      return "CREATE";
    case Compare::Target::Mod:
      return "MOD";
    case Compare::Target::Value:
      return "VALUE";
    case Compare::Target::Lease:
      return "LEASE";
  }
  return "MOD";
}

const char* op_name(Compare::Op o) {
  switch (o) {
    case Compare::Op::Equal:
      return "EQUAL";
    case Compare::Op::Greater:
      return "GREATER";
    case Compare::Op::Less:
      return "LESS";
    case Compare::Op::NotEqual:
      return "NOT_EQUAL";
  }
  return "EQUAL";
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto byte = [&bytes](std::size_t k) {
    return static_cast<unsigned>(static_cast<unsigned char>(bytes[k]));
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    const unsigned v = byte(i) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (rest == 2) {
    const unsigned v = (byte(i) << 16) | (byte(i + 1) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  unsigned acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = sextet(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

TxnOp TxnOp::put(std::string key, std::string value, std::int64_t lease) {
  TxnOp op;
  op.kind = Kind::Put;
  op.key = std::move(key);
  op.value = std::move(value);
  op.lease = lease;
  return op;
}

TxnOp TxnOp::erase(std::string key, std::string range_end) {
  TxnOp op;
  op.kind = Kind::Delete;
  op.key = std::move(key);
  op.range_end = std::move(range_end);
  return op;
}

TxnOp TxnOp::range(std::string key, std::string range_end) {
  TxnOp op;
  op.kind = Kind::Range;
  op.key = std::move(key);
  op.range_end = std::move(range_end);
  return op;
}

std::string encode_range(const RangeRequest& request) {
  json j = {{"key", base64_encode(request.key)}};
  if (!request.range_end.empty()) j["range_end"] = base64_encode(request.range_end);
  if (request.revision != 0) j["revision"] = i64(request.revision);
  if (request.limit != 0) j["limit"] = i64(request.limit);
  if (request.keys_only) j["keys_only"] = true;
  if (request.count_only) j["count_only"] = true;
  return j.dump();
}

std::string encode_put(std::string_view key, std::string_view value, std::int64_t lease) {
  json j = {{"key", base64_encode(key)}, {"value", base64_encode(value)}};
  if (lease != 0) j["lease"] = i64(lease);
  return j.dump();
}

std::string encode_delete(std::string_view key, std::string_view range_end) {
  json j = {{"key", base64_encode(key)}};
  if (!range_end.empty()) j["range_end"] = base64_encode(range_end);
  return j.dump();
}

std::string encode_txn(const TxnRequest& request) {
  json compare = json::array();
  for (const auto& c : request.compare) {
    json cj = {{"key", base64_encode(c.key)},
               {"target", target_name(c.target)},
               {"result", op_name(c.op)}};
    switch (c.target) {
      case Compare::Target::Version:
        cj["version"] = i64(c.number);
        break;
      case Compare::Target::Create:
        cj["create_revision"] = i64(c.number);
        break;
      case Compare::Target::Mod:
        cj["mod_revision"] = i64(c.number);
        break;
      case Compare::Target::Lease:
        cj["lease"] = i64(c.number);
        break;
      case Compare::Target::Value:
        cj["value"] = base64_encode(c.value);
        break;
    }
    compare.push_back(std::move(cj));
  }
  json success = json::array();
  for (const auto& op : request.success) success.push_back(op_json(op));
  json failure = json::array();
  for (const auto& op : request.failure) failure.push_back(op_json(op));
  return json{{"compare", compare}, {"success", success}, {"failure", failure}}.dump();
}

std::string encode_watch_create(const WatchRequest& request) {
  json c = {{"key", base64_encode(request.key)}};
  if (!request.range_end.empty()) c["range_end"] = base64_encode(request.range_end);
  if (request.start_revision != 0) c["start_revision"] = i64(request.start_revision);
  if (request.prev_kv) c["prev_kv"] = true;
  if (request.progress_notify) c["progress_notify"] = true;
  return json{{"create_request", c}}.dump();
}

Result<RangeResponse> decode_range(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  return decode_range_object(*j);
}

Result<std::int64_t> decode_header_revision(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  return header_revision(*j);
}

Result<std::int64_t> decode_deleted(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  std::int64_t deleted = 0;
  if (!int_field(*j, "deleted", deleted)) return protocol("malformed deleted count");
  return deleted;
}

Result<TxnResponse> decode_txn(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  TxnResponse r;
  r.revision = header_revision(*j);
  r.succeeded = bool_field(*j, "succeeded");
  if (j->contains("responses")) {
    const auto& list = (*j)["responses"];
    if (!list.is_array()) return protocol("txn responses is not a list");
    for (const auto& item : list) {
      if (item.contains("response_range")) {
        auto range = decode_range_object(item["response_range"]);
        if (!range) return range.error();
        r.responses.push_back(std::move(range.value()));
      } else {
        RangeResponse empty;
        for (const char* k : {"response_put", "response_delete_range"}) {
          if (item.contains(k)) empty.revision = header_revision(item[k]);
        }
        r.responses.push_back(std::move(empty));
      }
    }
  }
  return r;
}

Result<WatchResponse> decode_watch_line(std::string_view line) {
  auto j = parse_object(line);
  if (!j) return j.error();
  if (j->contains("error")) {
    const json& e = (*j)["error"];
    Error err =
        Error::make(Error::Kind::Etcd, "etcd ended the watch: " +
                                           (e.is_object() ? string_field(e, "message") : e.dump()));
    if (e.is_object()) {
      std::int64_t code = 0;
      int_field(e, "grpc_code", code);
      if (code == 0) int_field(e, "http_code", code);
      err.etcd_error = string_field(e, "message");
    }
    return err;
  }
  if (!j->contains("result") || !(*j)["result"].is_object()) {
    return protocol("watch line without result: " + std::string(line.substr(0, 120)));
  }
  const json& r = (*j)["result"];
  WatchResponse w;
  w.revision = header_revision(r);
  if (!int_field(r, "watch_id", w.watch_id) ||
      !int_field(r, "compact_revision", w.compact_revision)) {
    return protocol("malformed watch header");
  }
  w.created = bool_field(r, "created");
  w.canceled = bool_field(r, "canceled");
  w.cancel_reason = string_field(r, "cancel_reason");
  if (r.contains("events")) {
    if (!r["events"].is_array()) return protocol("watch events is not a list");
    for (const auto& ev : r["events"]) {
      WatchEvent e;
      const std::string type = string_field(ev, "type");
      if (type.empty() || type == "PUT") {
        e.type = WatchEvent::Type::Put;
      } else if (type == "DELETE") {
        e.type = WatchEvent::Type::Delete;
      } else {
        return protocol("unknown watch event type " + type);
      }
      auto kv = decode_kv(ev.value("kv", json::object()));
      if (!kv) return kv.error();
      e.kv = std::move(kv.value());
      if (ev.contains("prev_kv")) {
        auto prev = decode_kv(ev["prev_kv"]);
        if (!prev) return prev.error();
        e.prev_kv = std::move(prev.value());
      }
      w.events.push_back(std::move(e));
    }
  }
  return w;
}

Result<LeaseGrant> decode_lease_grant(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  LeaseGrant g;
  if (!int_field(*j, "ID", g.id) || !int_field(*j, "TTL", g.ttl) || g.id == 0) {
    return protocol("malformed lease grant " + std::string(body.substr(0, 120)));
  }
  if (const auto err = string_field(*j, "error"); !err.empty()) {
    return Error::make(Error::Kind::Etcd, "etcd refused the lease: " + err);
  }
  return g;
}

Result<std::int64_t> decode_keepalive(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  if (j->contains("error")) {
    const json& e = (*j)["error"];
    return Error::make(
        Error::Kind::Etcd,
        "etcd refused the keepalive: " + (e.is_object() ? string_field(e, "message") : e.dump()));
  }
  const json& r = j->contains("result") ? (*j)["result"] : *j;
  std::int64_t ttl = 0;
  if (!int_field(r, "TTL", ttl)) return protocol("malformed keepalive answer");
  if (ttl <= 0) {
    Error e = Error::make(Error::Kind::NotFound, "the lease has expired or was revoked");
    e.etcd_error = "etcdserver: requested lease not found";
    return e;
  }
  return ttl;
}

Result<std::string> decode_token(std::string_view body) {
  auto j = parse_object(body);
  if (!j) return j.error();
  std::string token = string_field(*j, "token");
  if (token.empty()) {
    return Error::make(Error::Kind::Auth,
                       "etcd returned no token: is authentication enabled on the cluster?");
  }
  return token;
}

Error decode_error(int http_status, std::string_view body, const std::string& endpoint) {
  Error e;
  e.endpoint = endpoint;
  e.http_status = http_status;
  json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    e.etcd_error = string_field(j, "error");
    if (e.etcd_error.empty()) e.etcd_error = string_field(j, "message");
    std::int64_t code = 0;
    int_field(j, "code", code);
    e.etcd_code = static_cast<int>(code);
  } else {
    std::string text(body.substr(0, 200));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    e.etcd_error = text;
  }
  // gRPC codes: 5 NotFound, 7 PermissionDenied, 11 OutOfRange (compacted),
  // 14 Unavailable, 16 Unauthenticated.
  const std::string& t = e.etcd_error;
  if (e.etcd_code == 7 || t.find("permission denied") != std::string::npos) {
    e.kind = Error::Kind::Permission;
  } else if (e.etcd_code == 16 || t.find("authentication failed") != std::string::npos ||
             t.find("invalid auth token") != std::string::npos ||
             t.find("user name is empty") != std::string::npos) {
    e.kind = Error::Kind::Auth;
  } else if (t.find("compacted") != std::string::npos) {
    e.kind = Error::Kind::Compacted;
  } else if (e.etcd_code == 5) {
    e.kind = Error::Kind::NotFound;
  } else if (e.etcd_code == 14 || http_status == 503) {
    e.kind = Error::Kind::Unavailable;
  } else {
    e.kind = Error::Kind::Etcd;
  }
  e.message = "etcd at " + endpoint + " answered HTTP " + std::to_string(http_status) + ": " +
              (t.empty() ? std::string("(no error text)") : t);
  if (e.kind == Error::Kind::Permission) {
    e.message += " (the user's roles do not grant this key range)";
  } else if (t.find("CommonName of client") != std::string::npos) {
    e.message +=
        " (with authentication on, etcd's gateway refuses client certificates that carry a "
        "CommonName: use one without, see docs/cluster.md)";
  } else if (t.find("user name is empty") != std::string::npos) {
    e.message += " (authentication is enabled: give --store-user and a password)";
  }
  return e;
}

}  // namespace tierwall::store
