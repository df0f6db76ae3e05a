// Flow-log records: the typed input of the writer and the canonical line
// serializer (docs/flowlog.md, "Record format").
//
// A record is one JSON object on one "\n"-terminated line, keys in a fixed
// order, no spaces:
//   {"v":1,"seq":N,"time":"...","node":"...","type":"...",<type keys>,
//    "prev":"<64 hex>","hash":"<64 hex>"}
// hash = SHA-256 over the line without its `,"hash":"..."` member, i.e. over
// the bytes BODY + "}" where the line is BODY + `,"hash":"<hex>"}` + "\n".
// Verification works on the raw bytes, never on a re-serialization, so the
// serializer below is the only producer of these bytes.
//
// The serializer is hand-written for the writer's hot path: it appends to a
// caller-owned buffer, never allocates beyond the buffer's growth, and
// escapes strings as RFC 8259 requires (", \, control characters; bytes
// >= 0x80 are copied as they are: callers pass UTF-8).
//
// Thread contract: everything here is a pure function or a value type; a
// Sha256 object belongs to one thread.
// Costs: serialization is linear in the record's size (~0.3 us for a typical
// flow record); hashing runs at SHA-256 speed (SHA-NI: ~1 GB/s).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tierwall::flowlog {

inline constexpr std::size_t kHashHexLen = 64;
inline constexpr std::string_view kZeroHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

enum class FlowEvent : std::uint8_t { Start, End };
enum class Verdict : std::uint8_t { Allow, Deny, Audit };
enum class Entity : std::uint8_t { Endpoint, Host, World };
enum class Dataplane : std::uint8_t { Nft, Dpdk };
enum class RuleKind : std::uint8_t { Flow, Deny, IntraTier, DefaultDeny, Self };
enum class LossSource : std::uint8_t { Nflog, Conntrack, Queue, Dpdk };
enum class AgentEvent : std::uint8_t { Start, Stop, Recovered };

// Well-known IP protocol numbers (anything else is written as a decimal string).
inline constexpr std::uint8_t kProtoIcmp = 1;
inline constexpr std::uint8_t kProtoTcp = 6;
inline constexpr std::uint8_t kProtoUdp = 17;
inline constexpr std::uint8_t kProtoIcmpv6 = 58;
inline constexpr std::uint8_t kProtoSctp = 132;

// One side of a flow. name/id/image/tier are written only for
// Entity::Endpoint, each only when non-empty (an unknown address inside a
// container CIDR: Endpoint with tier "quarantine" and nothing else).
struct Peer {
  std::string ip;  // textual address as the dataplane reports it
  std::uint16_t port = 0;
  Entity entity = Entity::World;
  std::string name;
  std::string id;
  std::string image;
  std::string tier;
};

// type "flow". For icmp/icmpv6 no port is written: dst carries icmp_type /
// icmp_code instead. packets/bytes are written only for FlowEvent::End.
struct Flow {
  FlowEvent event = FlowEvent::Start;
  Verdict verdict = Verdict::Deny;
  std::uint8_t protocol = kProtoTcp;
  Dataplane dataplane = Dataplane::Nft;
  std::uint64_t generation = 0;
  Peer src;
  Peer dst;
  std::uint8_t icmp_type = 0;
  std::uint8_t icmp_code = 0;
  RuleKind rule_kind = RuleKind::DefaultDeny;
  std::string rule_name;    // written for RuleKind::Flow / RuleKind::Deny only
  std::uint64_t count = 1;  // >= 1; the writer's folding raises it
  std::uint64_t packets_orig = 0, packets_reply = 0;
  std::uint64_t bytes_orig = 0, bytes_reply = 0;
};

// type "loss": events the node knows it missed.
struct Loss {
  LossSource source = LossSource::Nflog;
  std::string reason;  // "ENOBUFS", "sequence gap", "queue full", ...
  std::uint64_t count = 0;
  bool lower_bound = false;  // count is a lower bound (the kernel cannot say)
};

// type "policy": a policy generation took effect.
struct Policy {
  std::uint64_t generation = 0;
  std::string name;
  std::string digest;  // hex SHA-256
  std::string by;      // who/what applied it
};

// The incomplete tail a crashed writer left behind (agent "recovered").
struct TornTail {
  std::string file;        // file name (no directory)
  std::uint64_t line = 0;  // 1-based line the torn bytes started on
  std::string data;        // the raw torn bytes (serialized as base64)
};

// type "agent". `torn` only for AgentEvent::Recovered.
struct Agent {
  AgentEvent event = AgentEvent::Start;
  std::string version;
  TornTail torn;
};

// What a producer submits. Checkpoints are writer-internal (see below).
struct FlowRecord {
  std::int64_t time_us = 0;  // UTC microseconds since the epoch; 0: stamped at submit
  std::variant<Flow, Loss, Policy, Agent> body;
};

// type "checkpoint": key id and signature (both lowercase hex).
struct Checkpoint {
  std::string key;
  std::string signature;
};

// ---- text helpers --------------------------------------------------------

// "2026-11-25T17:00:00.123456Z" (27 bytes) appended to out.
void append_time(std::string& out, std::int64_t time_us);
// "20261125T170000.123456Z", the time part of a file name.
std::string file_time(std::int64_t time_us);
// Inverse of append_time; nullopt unless `text` is exactly that format.
std::optional<std::int64_t> parse_time(std::string_view text);
// `s` as a JSON string literal (quotes included) appended to out.
void append_json_string(std::string& out, std::string_view s);
// The value of a JSON string literal (quotes included); nullopt if malformed.
// \uXXXX escapes are decoded to UTF-8 (surrogate pairs included).
std::optional<std::string> unescape_json_string(std::string_view literal);
std::string to_hex(const std::uint8_t* data, std::size_t size);
// nullopt unless `hex` is an even number of lowercase/uppercase hex digits.
std::optional<std::string> from_hex(std::string_view hex);
std::string base64_encode(std::string_view data);
std::string_view to_string(FlowEvent e);
std::string_view to_string(Verdict v);
std::string_view to_string(Entity e);
std::string_view to_string(Dataplane d);
std::string_view to_string(RuleKind k);
std::string_view to_string(LossSource s);
std::string_view to_string(AgentEvent e);
// "tcp", "udp", "sctp", "icmp", "icmpv6", else the decimal number.
std::string proto_name(std::uint8_t protocol);

// ---- serialization -------------------------------------------------------

// SHA-256 with a reusable context (no per-call algorithm fetch).
class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  // SHA-256 over a + b.
  Digest digest(std::string_view a, std::string_view b = {});

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Appends BODY of a record: everything from "{" through the "prev" member
// (no closing brace). `node` is the raw (unescaped) node name.
void append_body(std::string& out, const FlowRecord& r, std::uint64_t seq, std::string_view node,
                 std::string_view prev_hex);
void append_checkpoint_body(std::string& out, std::int64_t time_us, std::uint64_t seq,
                            std::string_view node, const Checkpoint& c, std::string_view prev_hex);

// Completes the line whose BODY is out[body_start, out.size()): appends
// `,"hash":"<hex>"}\n` and returns the hash (hex) in hash_hex.
void finish_line(std::string& out, std::size_t body_start, Sha256& sha,
                 std::array<char, kHashHexLen>& hash_hex);

// One whole line, "\n" included (tests, tools; not the hot path).
std::string serialize_line(const FlowRecord& r, std::uint64_t seq, std::string_view node,
                           std::string_view prev_hex, std::string* hash_hex = nullptr);

// The signed statements (docs/flowlog.md "Signatures").
std::string checkpoint_message(std::string_view node, std::uint64_t seq, std::string_view prev_hex);
std::string head_message(std::string_view node, std::uint64_t seq, std::string_view hash_hex);

// ---- parsing (verification) ----------------------------------------------

// The fields verification needs, extracted from one raw line (no "\n").
// Views point into the line.
struct LineFields {
  std::uint64_t seq = 0;
  std::string_view time;  // as written, without quotes
  std::string node;       // unescaped
  std::string_view type;  // "flow", "loss", "policy", "agent", "checkpoint", or unknown
  std::string_view prev;  // 64 hex
  std::string_view hash;  // 64 hex, as written
  std::string_view body;  // the line without `,"hash":"..."}`: hashed as body + "}"
};

// Extracts the fixed frame of a line: prefix {"v":1,"seq":N,"time":"..",
// "node":"..","type":"..", and suffix ,"prev":"<hex>","hash":"<hex>"}.
// Returns false (and why) when the line does not have that shape.
bool parse_frame(std::string_view line, LineFields& out, std::string* why = nullptr);

// True when the line's hash member equals SHA-256(body + "}").
bool hash_matches(const LineFields& f, Sha256& sha);

// The raw value of top-level member `key` of a one-line JSON object (a string
// value keeps its quotes), nullopt when absent or the object is malformed.
// Linear in the line's length; used for the rare record types only.
std::optional<std::string_view> find_member(std::string_view line, std::string_view key);

}  // namespace tierwall::flowlog
