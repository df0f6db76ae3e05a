// verify_log: proves a flow-log directory intact, or names the first record
// that is not (docs/flowlog.md, "What verify reports").
//
// It streams every DIR/flows-*.jsonl in name order, line by line (bounded
// memory, never a whole file), and checks for each line: the frame parses and
// its hash matches its bytes; it chains (seq = previous + 1, prev = previous
// hash), across files too; every checkpoint's Ed25519 signature verifies with
// the expected key; a rotated file ends with its closing checkpoint. At the
// end, DIR/head.json (signed) must name a record the files hold.
//
// The expected key: the PEM public key given (pubkey_path), else the key
// named by the log's first checkpoint, read from DIR/key-<id>.pub - which an
// attacker able to rewrite DIR could replace too; the report says which one
// was used (KeySource). Every checkpoint must be signed by that one key.
//
// A break is classified from the records around it (one record of
// lookahead, up to 64 to find a displaced record): edited, deleted,
// inserted, reordered, truncated, bad-signature; an incomplete last line of
// the newest file is torn-tail (a crash, not tampering). Only the first
// problem is reported.
//
// Thread contract: a pure function of the directory's content; safe to call
// from several threads. Costs: linear in the log size, ~1 SHA-256 per line
// (>= 1M records/s on SHA-NI hardware), memory bounded by the longest line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tierwall::flowlog {

enum class ProblemKind : std::uint8_t {
  Edited,        // a record's hash does not match its bytes (or it does not parse)
  Deleted,       // records missing: seq gap
  Inserted,      // a record that is not part of the chain
  Reordered,     // records out of order
  Truncated,     // head.json names more than the files hold; a file ends mid-chain
  BadSignature,  // a checkpoint or head.json signature fails, or another key signed it
  TornTail,      // the newest file ends in an incomplete line (crash, not tampering)
};
std::string_view to_string(ProblemKind kind);

struct Problem {
  std::string file;  // file name in DIR (no directory)
  std::uint64_t line = 0;
  ProblemKind kind = ProblemKind::Edited;
  std::string message;
};

// An agent "recovered" record: a writer restarted after a crash and
// preserved a torn tail (valid, reported as information).
struct RecoveredTail {
  std::string file;  // where the recovered record is
  std::uint64_t line = 0;
  std::string torn_file;  // where the torn bytes were
  std::uint64_t torn_line = 0;
  std::uint64_t torn_bytes = 0;
};

enum class KeySource : std::uint8_t {
  None,          // no key: signatures could not be checked
  PubkeyFile,    // the key the caller gave
  LogDirectory,  // DIR/key-<id>.pub, named by the first checkpoint
};

struct VerifyReport {
  bool ok = false;
  std::string error;  // non-empty: verification could not run (unreadable DIR, bad key file)
  std::uint64_t records = 0;
  std::uint64_t files = 0;
  std::uint64_t checkpoints_total = 0;
  std::uint64_t checkpoints_verified = 0;
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
  std::uint64_t unsigned_tail = 0;  // records after the last checkpoint
  std::string key_id;
  KeySource key_source = KeySource::None;
  bool head_checked = false;
  std::optional<Problem> problem;
  std::vector<RecoveredTail> recovered;
  std::vector<std::string> notes;  // information for the auditor
};

VerifyReport verify_log(const std::string& dir, const std::optional<std::string>& pubkey_path);

}  // namespace tierwall::flowlog
