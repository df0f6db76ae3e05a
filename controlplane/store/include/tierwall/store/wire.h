// The etcd v3 JSON gateway's wire format as values and pure functions:
// base64 for keys and values, int64 fields as decimal strings, the request
// bodies we send and the answers we accept. No I/O here, so every encoding
// and every error path is unit-tested without an etcd (tests/unit/store_test).
//
// Costs: every function is linear in the size of its input; decoding a
// range answer copies each key and value once (base64 decode).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/store/result.h"

namespace tierwall::store {

// RFC 4648 base64 with padding, as protobuf's JSON mapping writes `bytes`.
[[nodiscard]] std::string base64_encode(std::string_view bytes);
// Accepts padded or unpadded standard base64 (and the URL-safe alphabet,
// which the JSON mapping also allows); nullopt on any other character.
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view text);

// The range_end that selects every key starting with `prefix`: the prefix
// with its last byte below 0xff incremented. "\0" (every key) when the
// prefix is empty or all 0xff.
[[nodiscard]] std::string prefix_end(std::string_view prefix);

struct KeyValue {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;
  std::int64_t lease = 0;
};

struct RangeRequest {
  std::string key;
  std::string range_end;      // empty: only `key`; prefix_end(p): the prefix
  std::int64_t revision = 0;  // 0: the latest
  std::int64_t limit = 0;     // 0: no limit
  bool keys_only = false;
  bool count_only = false;
};

struct RangeResponse {
  std::int64_t revision = 0;  // the store's revision the answer was read at
  std::vector<KeyValue> kvs;
  std::int64_t count = 0;  // keys in the range (even with a limit or count_only)
  bool more = false;       // the limit cut the answer short
};

struct Compare {
  enum class Target : std::uint8_t { Version, Create, Mod, Value, Lease };
  enum class Op : std::uint8_t { Equal, Greater, Less, NotEqual };
  std::string key;
  Target target = Target::Mod;
  Op op = Op::Equal;
  std::int64_t number = 0;  // Version, Create, Mod, Lease
  std::string value;        // Value
};

struct TxnOp {
  enum class Kind : std::uint8_t { Put, Delete, Range };
  Kind kind = Kind::Put;
  std::string key;
  std::string value;       // Put
  std::string range_end;   // Delete, Range
  std::int64_t lease = 0;  // Put

  static TxnOp put(std::string key, std::string value, std::int64_t lease = 0);
  static TxnOp erase(std::string key, std::string range_end = {});
  static TxnOp range(std::string key, std::string range_end = {});
};

struct TxnRequest {
  std::vector<Compare> compare;  // all must hold (AND)
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct TxnResponse {
  std::int64_t revision = 0;
  bool succeeded = false;
  // One entry per executed op, in order; only Range ops carry kvs.
  std::vector<RangeResponse> responses;
};

struct WatchRequest {
  std::string key;
  std::string range_end;
  std::int64_t start_revision = 0;  // 0: from now on
  bool prev_kv = false;
  bool progress_notify = false;
};

struct WatchEvent {
  enum class Type : std::uint8_t { Put, Delete };
  Type type = Type::Put;
  KeyValue kv;                      // for a Delete: key and mod_revision only
  std::optional<KeyValue> prev_kv;  // when asked for
};

struct WatchResponse {
  std::int64_t revision = 0;  // header revision (0 in a compaction answer)
  std::int64_t watch_id = 0;
  bool created = false;
  bool canceled = false;
  std::int64_t compact_revision = 0;  // > 0: the start revision was compacted
  std::string cancel_reason;
  std::vector<WatchEvent> events;  // empty: created, canceled or a progress notification
};

// Request bodies.
[[nodiscard]] std::string encode_range(const RangeRequest& request);
[[nodiscard]] std::string encode_put(std::string_view key, std::string_view value,
                                     std::int64_t lease);
[[nodiscard]] std::string encode_delete(std::string_view key, std::string_view range_end);
[[nodiscard]] std::string encode_txn(const TxnRequest& request);
[[nodiscard]] std::string encode_watch_create(const WatchRequest& request);

// Successful (HTTP 200) answers. Errors are Kind::Protocol with the reason.
[[nodiscard]] Result<RangeResponse> decode_range(std::string_view body);
[[nodiscard]] Result<std::int64_t> decode_header_revision(std::string_view body);
[[nodiscard]] Result<std::int64_t> decode_deleted(std::string_view body);
[[nodiscard]] Result<TxnResponse> decode_txn(std::string_view body);
// One line of the watch stream: {"result": {...}} or {"error": {...}}.
[[nodiscard]] Result<WatchResponse> decode_watch_line(std::string_view line);

struct LeaseGrant {
  std::int64_t id = 0;
  std::int64_t ttl = 0;  // seconds
};
[[nodiscard]] Result<LeaseGrant> decode_lease_grant(std::string_view body);
// A keepalive answer ({"result": {"ID", "TTL"}}). A lease that no longer
// exists is answered with TTL 0 (or none): Kind::NotFound.
[[nodiscard]] Result<std::int64_t> decode_keepalive(std::string_view body);
[[nodiscard]] Result<std::string> decode_token(std::string_view body);

// An error answer (any status but 200): {"error", "message", "code"} as
// the gateway writes them, classified. `endpoint` names the member.
[[nodiscard]] Error decode_error(int http_status, std::string_view body,
                                 const std::string& endpoint);

}  // namespace tierwall::store
