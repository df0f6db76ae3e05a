// One flow-log record (docs/flowlog-format.md) as views into its line, and
// the parser that extracts them.
//
// The writer emits keys in a fixed order with no spaces, so the parser reads
// a line front to back without building a document: it checks each expected
// key and slices each value. Callers that only need the first fields (seq,
// time, node, type, then a flow's verdict) stop early, which is what lets a
// filter skip most lines after a few dozen bytes. A line of any other shape
// (keys reordered, escapes in a string, an unknown type) goes to a full JSON
// parse instead, so the fast path never has to be right about odd input:
// it either matches the exact shape or steps aside.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tierwall::flowquery {

enum class RecordType : std::uint8_t { Flow, Loss, Policy, Agent, Checkpoint, Other };
enum class Verdict : std::uint8_t { None, Allow, Deny, Audit };
enum class Entity : std::uint8_t { None, Endpoint, Host, World };

std::string_view to_string(RecordType t);
std::string_view to_string(Verdict v);
std::optional<RecordType> parse_record_type(std::string_view text);
std::optional<Verdict> parse_verdict(std::string_view text);

struct Peer {
  std::string_view ip;
  std::string_view entity_text;
  std::string_view name, id, image, tier;  // empty when absent
  Entity entity = Entity::None;
  std::int32_t port = -1;  // -1: none (icmp)
  std::int32_t icmp_type = -1, icmp_code = -1;
};

// Every view points into the line or into the parser that filled the record;
// both must outlive it (a record is valid until the parser's next line).
struct Record {
  std::string_view line;
  std::int64_t seq = 0;
  std::string_view time;
  std::int64_t time_us = 0;
  std::string_view node;
  std::string_view type_text;
  RecordType type = RecordType::Other;

  // flow (event also for agent)
  std::string_view event;
  Verdict verdict = Verdict::None;
  std::string_view proto, dataplane;
  std::int64_t generation = -1;  // flow and policy
  Peer src, dst;
  std::string_view rule_kind, rule_name;
  std::int64_t count = 0;  // flow and loss
  std::int64_t packets_orig = -1, packets_reply = -1, bytes_orig = -1, bytes_reply = -1;

  // loss
  std::string_view source, reason;
  bool lower_bound = false;
  // policy
  std::string_view name, digest, by;
  // agent
  std::string_view version;
  // checkpoint
  std::string_view key;

  std::string_view prev, hash;
};

// Not thread-safe; one per reading thread. Allocation-free on the fast path.
class RecordParser {
 public:
  // How far the fields of the current line have been extracted.
  enum class Stage : std::uint8_t {
    None,      // nothing yet, or the fast path gave up (call parse_full)
    Header,    // seq, time, node, type
    FlowHead,  // + event, verdict, proto, dataplane, generation (flow only)
    Complete,  // every field
  };

  // Fast path, step by step. Each returns false when the line is not of the
  // expected shape; the record is then incomplete and parse_full decides.
  bool header(std::string_view line, Record& r);
  bool flow_head(Record& r);  // after header(), for type flow
  bool rest(Record& r);       // after header() (and flow_head() for flows)

  // Full JSON parse of any key order; false with a reason when the line is
  // not a record (not JSON, not an object, no valid time/type).
  bool parse_full(std::string_view line, Record& r, std::string* error);

  // Everything: the fast path, else parse_full.
  bool parse(std::string_view line, Record& r, std::string* error);
  // Completes a record whose extraction stopped at some stage.
  bool complete(Record& r, std::string* error);

  [[nodiscard]] Stage stage() const { return stage_; }
  // Lines the fast path handed to parse_full (for tests and figures).
  [[nodiscard]] std::uint64_t fallbacks() const { return fallbacks_; }

 private:
  const char* pos_ = nullptr;
  const char* end_ = nullptr;
  Stage stage_ = Stage::None;
  std::uint64_t fallbacks_ = 0;
  nlohmann::json doc_;  // the fallback's document; records view its strings
};

}  // namespace tierwall::flowquery
