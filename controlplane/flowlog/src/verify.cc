#include "tierwall/flowlog/verify.h"

#include <array>
#include <charconv>
#include <deque>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

#include "log_files.h"

#include "tierwall/flowlog/keys.h"
#include "tierwall/flowlog/record.h"

namespace tierwall::flowlog {

namespace {

constexpr std::size_t kLookahead = 64;

using Hex = std::array<char, kHashHexLen>;

Hex to_hex_array(std::string_view s) {
  Hex h{};
  for (std::size_t i = 0; i < h.size() && i < s.size(); ++i) h[i] = s[i];
  return h;
}

std::string_view view(const Hex& h) { return {h.data(), h.size()}; }

std::string strip_quotes(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    auto s = unescape_json_string(v);
    return s ? *s : std::string();
  }
  return std::string(v);
}

std::optional<std::uint64_t> to_u64(std::string_view v) {
  std::uint64_t n = 0;
  const auto r = std::from_chars(v.data(), v.data() + v.size(), n);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size()) return std::nullopt;
  return n;
}

// One line of the stream, with what parsing found.
struct Item {
  std::size_t file = 0;  // index into names
  std::uint64_t line = 0;
  std::string text;
  bool complete = true;
  bool too_long = false;
  // parse results
  bool framed = false;   // parse_frame succeeded
  bool self_ok = false;  // framed and the hash matches
  std::string why;       // when !self_ok
  std::uint64_t seq = 0;
  Hex hash{};
  Hex prev{};
  std::string type;
};

class Stream {
 public:
  Stream(const std::string& dir, const std::vector<std::string>& names)
      : dir_(dir), names_(names) {}

  // The next item, parsed; false at the end. error_ is set on I/O failure.
  bool next(Item& it) {
    if (!ahead_.empty()) {
      it = std::move(ahead_.front());
      ahead_.pop_front();
      return true;
    }
    return read(it);
  }

  // The k-th item after the current one (0: the next), or nullptr.
  const Item* peek(std::size_t k) {
    while (ahead_.size() <= k) {
      Item it;
      if (!read(it)) return nullptr;
      ahead_.push_back(std::move(it));
    }
    return &ahead_[k];
  }

  std::uint64_t lines_in(std::size_t file) const { return file < lines_.size() ? lines_[file] : 0; }
  const std::string& error() const { return error_; }

 private:
  bool read(Item& it) {
    for (;;) {
      if (!reader_) {
        if (index_ >= names_.size()) return false;
        reader_ = std::make_unique<detail::LineReader>();
        lines_.push_back(0);
        if (!reader_->open(detail::join(dir_, names_[index_]), &error_)) return false;
      }
      std::string_view line;
      bool complete = true;
      const auto st = reader_->next(line, complete);
      if (st == detail::LineReader::Status::End) {
        reader_.reset();
        ++index_;
        continue;
      }
      if (st == detail::LineReader::Status::Error) {
        error_ = "cannot read " + names_[index_];
        return false;
      }
      it.file = index_;
      it.line = ++lines_[index_];
      it.too_long = st == detail::LineReader::Status::TooLong;
      it.complete = complete;
      if (it.too_long) {
        it.text.clear();
      } else {
        it.text.assign(line);
      }
      parse(it);
      return true;
    }
  }

  void parse(Item& it) {
    it.framed = it.self_ok = false;
    it.why.clear();
    if (it.too_long) {
      it.why = "line longer than 4 MiB";
      return;
    }
    LineFields f;
    if (!parse_frame(it.text, f, &it.why)) {
      it.why = "not a well-formed record (" + it.why + ")";
      return;
    }
    it.framed = true;
    it.seq = f.seq;
    it.hash = to_hex_array(f.hash);
    it.prev = to_hex_array(f.prev);
    it.type.assign(f.type);
    if (!hash_matches(f, sha_)) {
      it.why = "record hash does not match its content";
      return;
    }
    it.self_ok = true;
  }

  const std::string& dir_;
  const std::vector<std::string>& names_;
  std::size_t index_ = 0;
  std::unique_ptr<detail::LineReader> reader_;
  std::vector<std::uint64_t> lines_;
  std::deque<Item> ahead_;
  std::string error_;
  Sha256 sha_;
};

struct Last {
  bool have = false;
  std::size_t file = 0;
  std::uint64_t line = 0;
  std::uint64_t seq = 0;
  Hex hash{};
  Hex prev{};
  std::string type;
};

bool chains(const Item& it, const Last& l) {
  return it.self_ok && it.seq == l.seq + 1 && view(it.prev) == view(l.hash);
}

class Verifier {
 public:
  Verifier(const std::string& dir, const std::optional<std::string>& pubkey)
      : dir_(dir), pubkey_path_(pubkey) {}

  VerifyReport run() {
    struct stat st {};
    if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      r_.error = "no log directory " + dir_;
      return r_;
    }
    if (pubkey_path_) {
      std::string why;
      key_ = PublicKey::load(*pubkey_path_, &why);
      if (!key_) {
        r_.error = "public key: " + why;
        return r_;
      }
      r_.key_id = key_->id();
      r_.key_source = KeySource::PubkeyFile;
    }
    if (!detail::list_log_files(dir_, names_, &r_.error)) return r_;
    r_.files = names_.size();
    read_head();
    if (!r_.error.empty()) return r_;
    stream_all();
    if (!r_.error.empty()) return r_;
    if (!r_.problem) check_head();
    if (!r_.problem && torn_) r_.problem = std::move(torn_);
    finish_notes();
    r_.ok = !r_.problem && r_.error.empty();
    return r_;
  }

 private:
  void problem(std::size_t file, std::uint64_t line, ProblemKind kind, std::string message) {
    if (r_.problem) return;
    r_.problem = Problem{file < names_.size() ? names_[file] : std::string(detail::kHeadFile), line,
                         kind, std::move(message)};
  }

  std::string where(std::size_t file, std::uint64_t line) const {
    return names_[file] + ":" + std::to_string(line);
  }

  void stream_all() {
    Stream s(dir_, names_);
    Item it;
    while (!r_.problem && s.next(it)) {
      if (!it.complete) {
        const bool newest = it.file + 1 == names_.size();
        if (newest) {
          torn_ = Problem{names_[it.file], it.line, ProblemKind::TornTail,
                          "incomplete last line (" + std::to_string(it.text.size()) +
                              " bytes without a newline): the writer stopped mid-record, e.g. a "
                              "crash; not tampering - the writer's next start recovers it"};
        } else {
          problem(it.file, it.line, ProblemKind::Truncated,
                  "file ends in an incomplete line, but a newer file follows: it was cut");
        }
        break;
      }
      if (!last_.have && it.self_ok) {
        if (it.seq == 1 && view(it.prev) != kZeroHash) {
          problem(it.file, it.line, ProblemKind::Inserted,
                  "the record with seq 1 must chain from the zero hash");
          break;
        }
        if (it.seq != 1) {
          r_.notes.push_back("the log starts at seq " + std::to_string(it.seq) + " (" +
                             where(it.file, it.line) +
                             "): older records were removed (e.g. retention); that they existed "
                             "cannot be checked");
        }
        r_.first_seq = it.seq;
      } else if (!chains(it, last_)) {
        classify(s, it);
        break;
      }
      if (last_.have && it.file != last_.file && last_.type != "checkpoint") {
        problem(last_.file, last_.line + 1, ProblemKind::Truncated,
                names_[last_.file] + " ends at seq " + std::to_string(last_.seq) +
                    " without its closing checkpoint: the end of the file was cut");
        break;
      }
      accept(it);
    }
    if (!s.error().empty() && r_.error.empty()) r_.error = s.error();
  }

  void accept(const Item& it) {
    ++r_.records;
    r_.last_seq = it.seq;
    last_.have = true;
    last_.file = it.file;
    last_.line = it.line;
    last_.seq = it.seq;
    last_.hash = it.hash;
    last_.prev = it.prev;
    last_.type = it.type;
    ++r_.unsigned_tail;
    if (head_ && it.seq == head_->seq) {
      head_found_ = true;
      head_match_ = view(it.hash) == head_->hash;
      head_file_ = it.file;
      head_line_ = it.line;
    }
    if (it.type == "checkpoint") {
      check_checkpoint(it);
      r_.unsigned_tail = 0;
    } else if (it.type == "agent") {
      const auto event = find_member(it.text, "event");
      if (event && *event == "\"recovered\"") {
        RecoveredTail t;
        t.file = names_[it.file];
        t.line = it.line;
        if (const auto torn = find_member(it.text, "torn")) {
          if (const auto v = find_member(*torn, "file")) t.torn_file = strip_quotes(*v);
          if (const auto v = find_member(*torn, "line")) t.torn_line = to_u64(*v).value_or(0);
          if (const auto v = find_member(*torn, "bytes")) t.torn_bytes = to_u64(*v).value_or(0);
        }
        r_.recovered.push_back(std::move(t));
      }
    }
  }

  // The expected key for signatures, found lazily at the first checkpoint.
  const PublicKey* expected_key(std::string_view id) {
    if (key_) return &*key_;
    if (key_looked_up_) return nullptr;
    key_looked_up_ = true;
    r_.key_id = std::string(id);
    const std::string path = detail::join(dir_, detail::key_file_name(id));
    std::string why;
    key_ = PublicKey::load(path, &why);
    if (key_ && key_->id() != id) key_.reset();
    if (!key_) {
      r_.notes.push_back("no public key for key id " + std::string(id) + " in " + dir_ +
                         " (key-<id>.pub): signatures were NOT checked; pass --pubkey");
      return nullptr;
    }
    r_.key_source = KeySource::LogDirectory;
    return &*key_;
  }

  void check_checkpoint(const Item& it) {
    ++r_.checkpoints_total;
    const auto key = find_member(it.text, "key");
    const auto sig = find_member(it.text, "signature");
    if (!key || !sig) {
      problem(it.file, it.line, ProblemKind::BadSignature, "checkpoint without key or signature");
      return;
    }
    const std::string id = strip_quotes(*key);
    const PublicKey* k = expected_key(id);
    if (r_.key_source == KeySource::None && !k) return;
    if (id != r_.key_id) {
      problem(it.file, it.line, ProblemKind::BadSignature,
              "checkpoint signed by key " + id + ", expected key " + r_.key_id);
      return;
    }
    LineFields f;
    if (k == nullptr || !parse_frame(it.text, f) ||
        !k->verify(checkpoint_message(f.node, it.seq, view(it.prev)), strip_quotes(*sig))) {
      problem(it.file, it.line, ProblemKind::BadSignature,
              "checkpoint signature does not verify with key " + r_.key_id);
      return;
    }
    ++r_.checkpoints_verified;
  }

  // The chain breaks at `it` (or `it` is not a record): say how.
  void classify(Stream& s, const Item& it) {
    const std::string range_missing = [&] {
      if (!it.self_ok || it.seq <= last_.seq + 1) return std::string();
      return "records " + std::to_string(last_.seq + 1) + ".." + std::to_string(it.seq - 1);
    }();
    const Item* next = s.peek(0);
    if (next != nullptr && chains(*next, last_)) {
      if (it.self_ok && it.seq == next->seq + 1 && view(it.prev) == view(next->hash)) {
        problem(it.file, it.line, ProblemKind::Reordered,
                "seq " + std::to_string(it.seq) + " comes before seq " + std::to_string(next->seq) +
                    " (" + where(next->file, next->line) + "): the two records were swapped");
      } else {
        problem(it.file, it.line, ProblemKind::Inserted,
                "this line is not part of the chain: the next record continues from " +
                    where(last_.file, last_.line) +
                    (it.self_ok ? std::string() : " (" + it.why + ")"));
      }
      return;
    }
    if (!it.self_ok) {
      problem(it.file, it.line, ProblemKind::Edited, it.why);
      return;
    }
    if (it.seq == last_.seq && view(it.prev) == view(last_.prev)) {
      // Two records claim the same place: the one the chain does not continue
      // from is the extra one.
      const bool continues_here = next == nullptr || (next->self_ok && next->seq == it.seq + 1 &&
                                                      view(next->prev) == view(it.hash));
      if (continues_here) {
        problem(last_.file, last_.line, ProblemKind::Inserted,
                "an extra record: " + where(it.file, it.line) + " has the same seq " +
                    std::to_string(it.seq) + " and predecessor, and the chain continues from it");
      } else {
        problem(it.file, it.line, ProblemKind::Inserted,
                "an extra record: seq " + std::to_string(it.seq) + " repeats " +
                    where(last_.file, last_.line));
      }
      return;
    }
    if (it.seq > last_.seq + 1) {
      for (std::size_t k = 0; k < kLookahead; ++k) {
        const Item* later = s.peek(k);
        if (later == nullptr) break;
        if (later->self_ok && later->seq > last_.seq && later->seq < it.seq) {
          problem(it.file, it.line, ProblemKind::Reordered,
                  "seq " + std::to_string(it.seq) + " comes before seq " +
                      std::to_string(later->seq) + " (" + where(later->file, later->line) +
                      "): records were moved");
          return;
        }
      }
      if (it.file != last_.file && it.line == 1) {
        if (last_.type == "checkpoint") {
          problem(it.file, it.line, ProblemKind::Deleted,
                  range_missing + " are missing between " + names_[last_.file] + " and " +
                      names_[it.file] + ": a whole file was deleted");
        } else {
          problem(last_.file, last_.line + 1, ProblemKind::Truncated,
                  names_[last_.file] + " ends mid-chain at seq " + std::to_string(last_.seq) +
                      " (no closing checkpoint); " + names_[it.file] + " starts at seq " +
                      std::to_string(it.seq) + ": " + range_missing + " were cut");
        }
        return;
      }
      problem(it.file, it.line, ProblemKind::Deleted,
              range_missing + " are missing before this line");
      return;
    }
    if (it.seq == last_.seq + 1) {
      problem(last_.file, last_.line, ProblemKind::Edited,
              "record seq " + std::to_string(last_.seq) + " was changed and its hash recomputed: " +
                  where(it.file, it.line) + " chains from a different hash");
      return;
    }
    problem(it.file, it.line, ProblemKind::Inserted,
            "an extra record: seq " + std::to_string(it.seq) + " after seq " +
                std::to_string(last_.seq));
  }

  struct Head {
    std::uint64_t seq = 0;
    std::string hash, file, key, signature, node, time;
    std::uint64_t line = 0;
  };

  void read_head() {
    const std::string path = detail::join(dir_, detail::kHeadFile);
    detail::LineReader reader;
    if (::access(path.c_str(), F_OK) != 0) return;
    if (!reader.open(path, &r_.error)) return;
    std::string_view line;
    bool complete = true;
    Head h;
    bool ok = reader.next(line, complete) == detail::LineReader::Status::Line;
    const auto get = [&](std::string_view key) -> std::string {
      const auto v = ok ? find_member(line, key) : std::nullopt;
      if (!v) {
        ok = false;
        return {};
      }
      return strip_quotes(*v);
    };
    if (ok) {
      const auto seq = to_u64(get("seq"));
      h.hash = get("hash");
      h.file = get("file");
      const auto l = to_u64(get("line"));
      h.time = get("time");
      h.key = get("key");
      h.signature = get("signature");
      h.node = get("node");
      ok = ok && seq && l && h.hash.size() == kHashHexLen;
      h.seq = seq.value_or(0);
      h.line = l.value_or(0);
    }
    if (!ok) {
      head_bad_ = true;
      return;
    }
    head_ = std::move(h);
  }

  void check_head() {
    if (head_bad_) {
      problem(names_.size(), 0, ProblemKind::BadSignature, "head.json is not a valid signed head");
      return;
    }
    if (!head_) {
      if (r_.checkpoints_total > 0) {
        problem(names_.size(), 0, ProblemKind::Truncated,
                "head.json is missing although the log has checkpoints: the end of the log "
                "cannot be checked (it may have been cut)");
      } else if (r_.records > 0) {
        r_.notes.push_back("no head.json and no checkpoint yet: nothing is signed");
      }
      return;
    }
    const Head& h = *head_;
    const PublicKey* k = key_ ? &*key_ : expected_key(h.key);
    if (k != nullptr) {
      if (h.key != k->id()) {
        problem(names_.size(), 0, ProblemKind::BadSignature,
                "head.json signed by key " + h.key + ", expected key " + k->id());
        return;
      }
      if (!k->verify(head_message(h.node, h.seq, h.hash), h.signature)) {
        problem(names_.size(), 0, ProblemKind::BadSignature,
                "head.json signature does not verify with key " + k->id());
        return;
      }
    }
    r_.head_checked = true;
    if (h.seq > r_.last_seq || r_.records == 0) {
      const std::size_t file = names_.empty() ? 0 : names_.size() - 1;
      problem(file, r_.records == 0 ? 1 : last_.line + 1, ProblemKind::Truncated,
              "head.json (signed " + h.time + ") names seq " + std::to_string(h.seq) + " in " +
                  h.file + ":" + std::to_string(h.line) + ", but the log ends at seq " +
                  std::to_string(r_.last_seq) + ": records " + std::to_string(r_.last_seq + 1) +
                  ".." + std::to_string(h.seq) + " were removed");
      return;
    }
    if (!head_found_) {
      r_.notes.push_back("head.json names seq " + std::to_string(h.seq) +
                         ", before the oldest record kept");
      return;
    }
    if (!head_match_) {
      problem(head_file_, head_line_, ProblemKind::Edited,
              "head.json (signed) names another hash for seq " + std::to_string(h.seq) +
                  ": the chain was rewritten after it was signed");
    }
  }

  void finish_notes() {
    if (r_.key_source == KeySource::LogDirectory) {
      r_.notes.push_back("signatures checked with " + detail::key_file_name(r_.key_id) + " from " +
                         dir_ +
                         " (the key named by the first checkpoint); anyone able to rewrite the "
                         "directory could replace it: pass --pubkey for a trusted key");
    }
    if (r_.records > 0 && r_.checkpoints_total == 0) {
      r_.notes.push_back("no checkpoint: the chain is not signed");
    } else if (r_.unsigned_tail > 0) {
      r_.notes.push_back(std::to_string(r_.unsigned_tail) +
                         " record(s) after the last checkpoint are covered by the hash chain "
                         "only, not yet by a signature");
    }
  }

  const std::string& dir_;
  const std::optional<std::string>& pubkey_path_;
  std::optional<PublicKey> key_;
  bool key_looked_up_ = false;
  std::vector<std::string> names_;
  VerifyReport r_;
  Last last_;
  std::optional<Problem> torn_;
  std::optional<Head> head_;
  bool head_bad_ = false;
  bool head_found_ = false;
  bool head_match_ = false;
  std::size_t head_file_ = 0;
  std::uint64_t head_line_ = 0;
};

}  // namespace

std::string_view to_string(ProblemKind kind) {
  switch (kind) {
    case ProblemKind::Edited:
      return "edited";
    case ProblemKind::Deleted:
      return "deleted";
    case ProblemKind::Inserted:
      return "inserted";
    case ProblemKind::Reordered:
      return "reordered";
    case ProblemKind::Truncated:
      return "truncated";
    case ProblemKind::BadSignature:
      return "bad-signature";
    case ProblemKind::TornTail:
      return "torn-tail";
  }
  return "edited";
}

VerifyReport verify_log(const std::string& dir, const std::optional<std::string>& pubkey_path) {
  return Verifier(dir, pubkey_path).run();
}

}  // namespace tierwall::flowlog
