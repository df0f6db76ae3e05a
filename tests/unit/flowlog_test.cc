// Flow log: serialization (golden lines), the hash chain recomputed
// independently, rotation, every kind of tampering, crash recovery (SIGKILL
// of a writing child), queue overflow, folding, fsync policies, keys, and the
// tierctl audit commands.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tierwall/cli/audit_commands.h"
#include "tierwall/flowlog/keys.h"
#include "tierwall/flowlog/record.h"
#include "tierwall/flowlog/verify.h"
#include "tierwall/flowlog/writer.h"
#include "tierwall/testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using namespace tierwall::flowlog;

constexpr std::int64_t kT0 = 1795626000123456;  // 2026-11-25T17:00:00.123456Z

// ---- helpers ---------------------------------------------------------------

using tierwall::testsupport::TempDir;

// Independent SHA-256 (one-shot EVP_Digest, not the library's Sha256).
std::string sha256_hex(std::string_view data) {
  unsigned char md[32];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string r;
  for (unsigned i = 0; i < len; ++i) {
    r += hex[md[i] >> 4];
    r += hex[md[i] & 0xF];
  }
  return r;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> log_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto n = e.path().filename().string();
    if (n.rfind("flows-", 0) == 0 && n.size() > 12 && n.substr(n.size() - 6) == ".jsonl") {
      names.push_back(n);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A JSON string member's value (no escapes expected) or a number's text.
std::string member(const std::string& line, const std::string& key) {
  auto v = find_member(line, key);
  if (!v) return {};
  std::string s(*v);
  if (s.size() >= 2 && s.front() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

std::uint64_t member_u64(const std::string& line, const std::string& key) {
  const auto s = member(line, key);
  return s.empty() ? 0 : std::stoull(s);
}

FlowRecord deny_flow(std::int64_t t, std::uint16_t dport = 5432,
                     const std::string& src = "10.88.0.10") {
  Flow f;
  f.event = FlowEvent::Start;
  f.verdict = Verdict::Deny;
  f.protocol = kProtoTcp;
  f.generation = 42;
  f.src =
      Peer{src, 51234, Entity::Endpoint, "web-1", "3f2a9c", "reg.example/shop/web:1.4", "public"};
  f.dst = Peer{"10.88.0.20", dport, Entity::Endpoint, "db-1", "", "", "restricted"};
  f.rule_kind = RuleKind::DefaultDeny;
  return FlowRecord{t, f};
}

FlowRecord allow_flow(std::int64_t t, std::uint16_t sport) {
  auto r = deny_flow(t);
  auto& f = std::get<Flow>(r.body);
  f.verdict = Verdict::Allow;
  f.src.port = sport;
  f.rule_kind = RuleKind::Flow;
  f.rule_name = "web-to-db";
  return r;
}

struct Fixture {
  TempDir tmp;
  std::string dir = tmp.file("log");
  std::string key = tmp.file("flowlog.key");

  WriterOptions options() const {
    WriterOptions o;
    o.dir = dir;
    o.node = "node-a";
    o.key_path = key;
    o.fsync = FsyncPolicy::None;
    o.fold_window = std::chrono::milliseconds(0);
    return o;
  }
};

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Writes `n` allow records with distinct, increasing times from now on (a
// rotated file is named after its first record, and names must grow).
void write_log(const WriterOptions& o, int n) {
  const std::int64_t t0 = now_us() + 1000;
  FlowLogWriter w;
  std::string err;
  ASSERT_TRUE(w.open(o, &err)) << err;
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(w.submit(allow_flow(t0 + i * 1000, static_cast<std::uint16_t>(1000 + i))));
    if (i % 64 == 63) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  w.stop();
  EXPECT_EQ(w.stats().last_error, "");
}

// ---- serialization ---------------------------------------------------------

TEST(FlowLogRecord, GoldenFlowStart) {
  const auto zero = std::string(kZeroHash);
  std::string hash;
  const auto line = serialize_line(deny_flow(kT0), 1042, "node-a", zero, &hash);
  const std::string body =
      R"({"v":1,"seq":1042,"time":"2026-11-25T17:00:00.123456Z","node":"node-a","type":"flow",)"
      R"("event":"start","verdict":"deny","proto":"tcp","dataplane":"nft","generation":42,)"
      R"("src":{"ip":"10.88.0.10","port":51234,"entity":"endpoint","name":"web-1","id":"3f2a9c",)"
      R"("image":"reg.example/shop/web:1.4","tier":"public"},)"
      R"("dst":{"ip":"10.88.0.20","port":5432,"entity":"endpoint","name":"db-1","tier":"restricted"},)"
      R"("rule":{"kind":"default-deny"},"count":1,"packets":null,"bytes":null,"prev":")" +
      zero + "\"";
  EXPECT_EQ(line, body + ",\"hash\":\"" + sha256_hex(body + "}") + "\"}\n");
  EXPECT_EQ(hash, sha256_hex(body + "}"));
}

TEST(FlowLogRecord, GoldenIcmpEndLossPolicyAgent) {
  const std::string p(kZeroHash);
  const auto strip = [](const std::string& line) {
    return line.substr(0, line.size() - 76);  // `,"hash":"<64>"}` + "\n"
  };
  Flow icmp;
  icmp.verdict = Verdict::Audit;
  icmp.protocol = kProtoIcmp;
  icmp.generation = 7;
  icmp.src = Peer{"192.0.2.1", 0, Entity::Host, "ignored", "", "", "ignored"};
  icmp.dst = Peer{"10.88.0.99", 0, Entity::Endpoint, "", "", "", "quarantine"};
  icmp.icmp_type = 8;
  icmp.rule_kind = RuleKind::Deny;
  icmp.rule_name = "no-\"ping\"";
  icmp.count = 3;
  EXPECT_EQ(
      strip(serialize_line(FlowRecord{kT0, icmp}, 2, "n", p)),
      R"({"v":1,"seq":2,"time":"2026-11-25T17:00:00.123456Z","node":"n","type":"flow",)"
      R"("event":"start","verdict":"audit","proto":"icmp","dataplane":"nft","generation":7,)"
      R"("src":{"ip":"192.0.2.1","entity":"host"},)"
      R"("dst":{"ip":"10.88.0.99","icmpType":8,"icmpCode":0,"entity":"endpoint","tier":"quarantine"},)"
      R"("rule":{"kind":"deny","name":"no-\"ping\""},"count":3,"packets":null,"bytes":null,"prev":")" +
          p + "\"");

  Flow end;
  end.event = FlowEvent::End;
  end.verdict = Verdict::Allow;
  end.protocol = 200;
  end.dataplane = Dataplane::Dpdk;
  end.src = Peer{"fd00::1", 1, Entity::World, "", "", "", ""};
  end.dst = Peer{"fd00::2", 2, Entity::World, "", "", "", ""};
  end.rule_kind = RuleKind::IntraTier;
  end.packets_orig = 10;
  end.packets_reply = 9;
  end.bytes_orig = 1000;
  end.bytes_reply = 900;
  EXPECT_EQ(
      strip(serialize_line(FlowRecord{0, end}, 3, "n", p)),
      R"({"v":1,"seq":3,"time":"1970-01-01T00:00:00.000000Z","node":"n","type":"flow",)"
      R"("event":"end","verdict":"allow","proto":"200","dataplane":"dpdk","generation":0,)"
      R"("src":{"ip":"fd00::1","port":1,"entity":"world"},"dst":{"ip":"fd00::2","port":2,"entity":"world"},)"
      R"("rule":{"kind":"intraTier"},"count":1,"packets":{"orig":10,"reply":9},)"
      R"("bytes":{"orig":1000,"reply":900},"prev":")" +
          p + "\"");

  EXPECT_EQ(strip(serialize_line(FlowRecord{kT0, Loss{LossSource::Nflog, "ENOBUFS", 17, true}}, 4,
                                 "n", p)),
            R"({"v":1,"seq":4,"time":"2026-11-25T17:00:00.123456Z","node":"n","type":"loss",)"
            R"("source":"nflog","reason":"ENOBUFS","count":17,"lowerBound":true,"prev":")" +
                p + "\"");
  EXPECT_EQ(strip(serialize_line(FlowRecord{kT0, Policy{43, "shop", "ab12", "tierctl apply"}}, 5,
                                 "n", p)),
            R"({"v":1,"seq":5,"time":"2026-11-25T17:00:00.123456Z","node":"n","type":"policy",)"
            R"("generation":43,"name":"shop","digest":"ab12","by":"tierctl apply","prev":")" +
                p + "\"");
  EXPECT_EQ(strip(serialize_line(
                FlowRecord{kT0, Agent{AgentEvent::Recovered, "0.1.0",
                                      TornTail{"flows-x.jsonl", 12, std::string("{\"v\":1,\x01")}}},
                6, "n", p)),
            R"({"v":1,"seq":6,"time":"2026-11-25T17:00:00.123456Z","node":"n","type":"agent",)"
            R"("event":"recovered","version":"0.1.0","torn":{"file":"flows-x.jsonl","line":12,)"
            R"("bytes":8,"data":"eyJ2IjoxLAE="},"prev":")" +
                p + "\"");
}

TEST(FlowLogRecord, EscapingAndParsing) {
  std::string out;
  append_json_string(out, std::string("a\"b\\c\n\t\x01\x1f é"));
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f é\"");
  EXPECT_EQ(unescape_json_string(out), std::string("a\"b\\c\n\t\x01\x1f é"));
  EXPECT_EQ(unescape_json_string("\"\\ud83d\\ude00\""), "\xF0\x9F\x98\x80");
  EXPECT_FALSE(unescape_json_string("\"\\ud83d\""));
  EXPECT_FALSE(unescape_json_string("\"abc\\\""));
  EXPECT_EQ(file_time(kT0), "20261125T170000.123456Z");
  EXPECT_EQ(parse_time("2026-11-25T17:00:00.123456Z"), kT0);

  const auto line = serialize_line(deny_flow(kT0), 9, "we\"ird", kZeroHash);
  LineFields f;
  ASSERT_TRUE(parse_frame(std::string_view(line).substr(0, line.size() - 1), f));
  EXPECT_EQ(f.seq, 9U);
  EXPECT_EQ(f.node, "we\"ird");
  EXPECT_EQ(f.type, "flow");
  EXPECT_EQ(f.prev, kZeroHash);
  Sha256 sha;
  EXPECT_TRUE(hash_matches(f, sha));
  EXPECT_EQ(member(line, "verdict"), "deny");
  EXPECT_EQ(find_member(line, "src").value_or("").substr(0, 8), "{\"ip\":\"1");
  EXPECT_FALSE(find_member("{\"a\":", "a"));
}

// ---- keys ------------------------------------------------------------------

TEST(FlowLogKeys, CreateLoadSignVerify) {
  TempDir tmp;
  const auto path = tmp.file("k.key");
  std::string err;
  auto k = SigningKey::load_or_create(path, &err);
  ASSERT_TRUE(k) << err;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  EXPECT_EQ(read_file(path).rfind("-----BEGIN PRIVATE KEY-----", 0), 0U);

  // Key id: SHA-256 of the raw public key, computed here independently.
  const auto pem = read_file(path + ".pub");
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pk = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  ASSERT_NE(pk, nullptr);
  unsigned char raw[32];
  std::size_t len = sizeof raw;
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(pk, raw, &len), 1);
  EVP_PKEY_free(pk);
  BIO_free(bio);
  EXPECT_EQ(k->id(), sha256_hex(std::string_view(reinterpret_cast<const char*>(raw), len)));

  auto again = SigningKey::load_or_create(path, &err);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id(), k->id());
  const auto sig = k->sign_hex("hello");
  EXPECT_EQ(sig.size(), kSignatureHexLen);
  auto pub = PublicKey::load(path + ".pub", &err);
  ASSERT_TRUE(pub) << err;
  EXPECT_TRUE(pub->verify("hello", sig));
  EXPECT_FALSE(pub->verify("hellO", sig));

  ::chmod(path.c_str(), 0644);
  EXPECT_FALSE(SigningKey::load(path, &err));
  EXPECT_NE(err.find("chmod 600"), std::string::npos);

  std::ostringstream out, errs;
  EXPECT_EQ(tierwall::cli::audit_pubkey(path, out, errs), 0);
  EXPECT_EQ(out.str(), pem);
}

// ---- writer: chain, rotation -----------------------------------------------

// Recomputes every hash and link without the library's parser.
void check_chain_independently(const std::string& dir, std::uint64_t* records = nullptr) {
  std::string prev(kZeroHash);
  std::uint64_t seq = 0;
  for (const auto& name : log_files(dir)) {
    const auto lines = read_lines(dir + "/" + name);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const auto& l = lines[i];
      const auto at = l.rfind(",\"hash\":\"");
      ASSERT_NE(at, std::string::npos);
      ASSERT_EQ(at + 9 + 64 + 2, l.size());
      EXPECT_EQ(l.substr(at + 9, 64), sha256_hex(l.substr(0, at) + "}")) << name << ":" << i + 1;
      EXPECT_EQ(member(l, "prev"), prev) << name << ":" << i + 1;
      EXPECT_EQ(member_u64(l, "seq"), ++seq) << name << ":" << i + 1;
      prev = l.substr(at + 9, 64);
    }
  }
  if (records != nullptr) *records = seq;
}

TEST(FlowLogWriter, ChainAndHead) {
  Fixture fx;
  write_log(fx.options(), 500);
  std::uint64_t n = 0;
  check_chain_independently(fx.dir, &n);
  // agent start, checkpoint, 500 flows, agent stop, checkpoint
  EXPECT_EQ(n, 504U);
  const auto files = log_files(fx.dir);
  ASSERT_EQ(files.size(), 1U);
  const auto lines = read_lines(fx.dir + "/" + files[0]);
  EXPECT_EQ(files[0],
            "flows-" + file_time(parse_time(member(lines[0], "time")).value_or(0)) + ".jsonl");
  EXPECT_EQ(member(lines[0], "type"), "agent");
  EXPECT_EQ(member(lines[0], "event"), "start");
  EXPECT_EQ(member(lines[1], "type"), "checkpoint");
  EXPECT_EQ(member(lines[lines.size() - 2], "event"), "stop");
  const auto head = read_file(fx.dir + "/head.json");
  EXPECT_EQ(member(head, "seq"), "504");
  EXPECT_EQ(member(head, "line"), "504");
  EXPECT_EQ(member(head, "file"), files[0]);
  EXPECT_EQ(member(head, "hash"), member(lines.back(), "hash"));

  const auto r = verify_log(fx.dir, fx.key + ".pub");
  EXPECT_TRUE(r.ok) << (r.problem ? r.problem->message : r.error);
  EXPECT_EQ(r.records, 504U);
  EXPECT_EQ(r.checkpoints_total, 2U);
  EXPECT_EQ(r.checkpoints_verified, 2U);
  EXPECT_TRUE(r.head_checked);
  EXPECT_EQ(r.key_source, KeySource::PubkeyFile);

  // Without --pubkey: the key the log directory holds, and the report says so.
  const auto r2 = verify_log(fx.dir, std::nullopt);
  EXPECT_TRUE(r2.ok);
  EXPECT_EQ(r2.key_source, KeySource::LogDirectory);
  EXPECT_EQ(r2.checkpoints_verified, 2U);

  // Reopening continues the chain.
  write_log(fx.options(), 10);
  check_chain_independently(fx.dir, &n);
  EXPECT_EQ(n, 504U + 14U);
  EXPECT_TRUE(verify_log(fx.dir, fx.key + ".pub").ok);
}

TEST(FlowLogWriter, RotationKeepsTheChain) {
  Fixture fx;
  auto o = fx.options();
  o.rotate_bytes = 4000;
  write_log(o, 300);
  const auto files = log_files(fx.dir);
  ASSERT_GT(files.size(), 5U);
  check_chain_independently(fx.dir);
  for (std::size_t i = 0; i + 1 < files.size(); ++i) {
    const auto a = read_lines(fx.dir + "/" + files[i]);
    const auto b = read_lines(fx.dir + "/" + files[i + 1]);
    EXPECT_EQ(member(a.back(), "type"), "checkpoint") << files[i];
    EXPECT_EQ(member(b.front(), "prev"), member(a.back(), "hash"));
    // The name is the time of the file's first record.
    const auto t = parse_time(member(b.front(), "time"));
    ASSERT_TRUE(t);
    EXPECT_EQ(files[i + 1], "flows-" + file_time(*t) + ".jsonl");
  }
  const auto r = verify_log(fx.dir, fx.key + ".pub");
  EXPECT_TRUE(r.ok) << (r.problem ? r.problem->file + ":" + std::to_string(r.problem->line) + " " +
                                        r.problem->message
                                  : r.error);
  EXPECT_EQ(r.files, files.size());
  EXPECT_EQ(r.checkpoints_verified, r.checkpoints_total);
}

TEST(FlowLogWriter, FsyncPoliciesAccepted) {
  for (const char* name : {"none", "checkpoint", "interval", "every-record"}) {
    const auto p = parse_fsync_policy(name);
    ASSERT_TRUE(p) << name;
    EXPECT_EQ(to_string(*p), name);
    Fixture fx;
    auto o = fx.options();
    o.fsync = *p;
    o.checkpoint_every_records = 50;
    write_log(o, 200);
    const auto r = verify_log(fx.dir, fx.key + ".pub");
    EXPECT_TRUE(r.ok) << name;
    EXPECT_GE(r.checkpoints_total, 5U) << name;
  }
  EXPECT_FALSE(parse_fsync_policy("always"));
}

// ---- tampering ---------------------------------------------------------------

struct Tampered {
  Fixture fx;
  std::vector<std::string> files;

  Tampered() {
    auto o = fx.options();
    o.rotate_bytes = 6000;
    write_log(o, 120);
    files = log_files(fx.dir);
  }
  std::string path(std::size_t i) const { return fx.dir + "/" + files.at(i); }
  VerifyReport verify() const { return verify_log(fx.dir, fx.key + ".pub"); }
};

void expect_problem(const VerifyReport& r, ProblemKind kind, const std::string& file,
                    std::uint64_t line) {
  ASSERT_FALSE(r.ok);
  ASSERT_TRUE(r.problem) << r.error;
  EXPECT_EQ(to_string(r.problem->kind), to_string(kind)) << r.problem->message;
  EXPECT_EQ(r.problem->file, file) << r.problem->message;
  EXPECT_EQ(r.problem->line, line) << r.problem->message;
}

TEST(FlowLogTamper, EditOneByte) {
  Tampered t;
  ASSERT_GE(t.files.size(), 3U);
  auto lines = read_lines(t.path(1));
  const auto at = lines[4].find("10.88.0.20");
  ASSERT_NE(at, std::string::npos);
  lines[4][at + 9] = '1';
  write_lines(t.path(1), lines);
  expect_problem(t.verify(), ProblemKind::Edited, t.files[1], 5);
  EXPECT_NE(t.verify().problem->message.find("hash does not match"), std::string::npos);
}

TEST(FlowLogTamper, DeleteALine) {
  Tampered t;
  auto lines = read_lines(t.path(1));
  lines.erase(lines.begin() + 4);
  write_lines(t.path(1), lines);
  expect_problem(t.verify(), ProblemKind::Deleted, t.files[1], 5);
}

TEST(FlowLogTamper, InsertAForgedLineWithItsOwnHash) {
  Tampered t;
  auto lines = read_lines(t.path(1));
  // The strongest forgery: seq and prev continue from line 4, hash correct.
  const auto forged = serialize_line(deny_flow(kT0), member_u64(lines[3], "seq") + 1, "node-a",
                                     member(lines[3], "hash"));
  lines.insert(lines.begin() + 4, forged.substr(0, forged.size() - 1));
  write_lines(t.path(1), lines);
  expect_problem(t.verify(), ProblemKind::Inserted, t.files[1], 5);

  // A careless forgery (arbitrary seq/prev) is an insertion too.
  Tampered u;
  auto l2 = read_lines(u.path(1));
  const auto junk = serialize_line(deny_flow(kT0), 7777, "node-a", kZeroHash);
  l2.insert(l2.begin() + 4, junk.substr(0, junk.size() - 1));
  write_lines(u.path(1), l2);
  expect_problem(u.verify(), ProblemKind::Inserted, u.files[1], 5);
}

TEST(FlowLogTamper, SwapTwoLines) {
  Tampered t;
  auto lines = read_lines(t.path(1));
  std::swap(lines[4], lines[5]);
  write_lines(t.path(1), lines);
  expect_problem(t.verify(), ProblemKind::Reordered, t.files[1], 5);
}

TEST(FlowLogTamper, TruncateTheTail) {
  Tampered t;
  const auto last = t.files.size() - 1;
  auto lines = read_lines(t.path(last));
  ASSERT_GT(lines.size(), 2U);
  lines.resize(lines.size() - 2);  // whole lines: the chain itself stays valid
  write_lines(t.path(last), lines);
  const auto r = t.verify();
  expect_problem(r, ProblemKind::Truncated, t.files[last], lines.size() + 1);
  EXPECT_NE(r.problem->message.find("head.json"), std::string::npos);
}

TEST(FlowLogTamper, CutTheEndOfARotatedFile) {
  Tampered t;
  auto lines = read_lines(t.path(1));
  lines.resize(lines.size() - 2);
  write_lines(t.path(1), lines);
  expect_problem(t.verify(), ProblemKind::Truncated, t.files[1], lines.size() + 1);
}

TEST(FlowLogTamper, DeleteAMiddleFile) {
  Tampered t;
  ASSERT_GE(t.files.size(), 3U);
  fs::remove(t.path(1));
  expect_problem(t.verify(), ProblemKind::Deleted, t.files[2], 1);
}

TEST(FlowLogTamper, HeadJsonRemovedOrForged) {
  Tampered t;
  const auto head = read_file(t.fx.dir + "/head.json");
  fs::remove(t.fx.dir + "/head.json");
  expect_problem(t.verify(), ProblemKind::Truncated, "head.json", 0);
  auto forged = head;
  forged[forged.find("\"seq\":") + 6] = '9';
  std::ofstream(t.fx.dir + "/head.json") << forged;
  expect_problem(t.verify(), ProblemKind::BadSignature, "head.json", 0);
}

// Rewrites every record from `edit_line` (of file 0) on with new hashes and
// checkpoints signed by `key`, and a matching head.json: a consistent chain
// by someone without the node's key.
void rewrite_chain(const std::string& dir, const SigningKey& key) {
  std::string prev(kZeroHash);
  std::string last_file;
  std::uint64_t last_line = 0, last_seq = 0;
  for (const auto& name : log_files(dir)) {
    auto lines = read_lines(dir + "/" + name);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      std::string body = lines[i].substr(0, lines[i].rfind(",\"hash\":\""));
      if (const auto at = body.find("\"10.88.0.20\""); at != std::string::npos) {
        body.replace(at, 12, "\"10.88.0.21\"");  // the attacker's edit
      }
      body.replace(body.size() - 65, 64, prev);  // `"prev":"<64>"`
      const auto seq = member_u64(lines[i], "seq");
      if (member(lines[i], "type") == "checkpoint") {
        const auto k = body.find(",\"key\":\"");
        const auto sig = key.sign_hex(checkpoint_message("node-a", seq, prev));
        body = body.substr(0, k) + ",\"key\":\"" + key.id() + "\",\"signature\":\"" + sig +
               "\",\"prev\":\"" + prev + "\"";
      }
      const auto h = sha256_hex(body + "}");
      lines[i] = body + ",\"hash\":\"" + h + "\"}";
      prev = h;
      last_file = name;
      last_line = i + 1;
      last_seq = seq;
    }
    write_lines(dir + "/" + name, lines);
  }
  std::ofstream(dir + "/head.json")
      << "{\"seq\":" << last_seq << ",\"hash\":\"" << prev << "\",\"file\":\"" << last_file
      << "\",\"line\":" << last_line << ",\"time\":\"2026-11-25T17:00:00.000000Z\",\"key\":\""
      << key.id() << "\",\"signature\":\"" << key.sign_hex(head_message("node-a", last_seq, prev))
      << "\",\"node\":\"node-a\"}\n";
  std::ofstream(dir + "/key-" + key.id() + ".pub") << key.public_key().pem();
}

TEST(FlowLogTamper, RewriteTheWholeChainWithAnotherKey) {
  Tampered t;
  std::string err;
  auto attacker = SigningKey::load_or_create(t.fx.tmp.file("attacker.key"), &err);
  ASSERT_TRUE(attacker) << err;
  rewrite_chain(t.fx.dir, *attacker);
  // Hashes and links are consistent again ...
  check_chain_independently(t.fx.dir);
  // ... but not signed by the node's key: the first checkpoint fails.
  const auto r = t.verify();
  expect_problem(r, ProblemKind::BadSignature, t.files[0], 2);
  EXPECT_NE(r.problem->message.find(attacker->id()), std::string::npos);
  // Without --pubkey the key in the directory is trusted, and the report
  // says which key that was (the documented limit).
  const auto r2 = verify_log(t.fx.dir, std::nullopt);
  EXPECT_TRUE(r2.ok);
  EXPECT_EQ(r2.key_source, KeySource::LogDirectory);
  EXPECT_EQ(r2.key_id, attacker->id());
}

TEST(FlowLogTamper, TornTailIsReportedDistinctly) {
  Tampered t;
  const auto last = t.files.size() - 1;
  std::ofstream(t.path(last), std::ios::app) << "{\"v\":1,\"seq\":9999,\"time\":\"20";
  const auto n = read_lines(t.path(last)).size();
  expect_problem(t.verify(), ProblemKind::TornTail, t.files[last], n);
}

// ---- crash recovery ----------------------------------------------------------

TEST(FlowLogCrash, SigkillRoundsThenRecover) {
  Fixture fx;
  auto o = fx.options();
  o.rotate_bytes = 32 * 1024;
  o.checkpoint_every_records = 300;
  std::mt19937 rng(12345);
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      FlowLogWriter w;
      std::string err;
      if (!w.open(o, &err)) ::_exit(3);
      (void)!::write(ready[1], "r", 1);
      for (std::uint16_t i = 0;; ++i) {
        w.submit(allow_flow(0, i));
        if (i % 32 == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    char c = 0;
    ::close(ready[1]);
    ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the child could not open the log";
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 60));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round << " status " << status;
    const auto r = verify_log(fx.dir, fx.key + ".pub");
    // A kill may leave a torn tail; anything else is a bug.
    if (!r.ok) {
      ASSERT_TRUE(r.problem);
      EXPECT_EQ(r.problem->kind, ProblemKind::TornTail) << r.problem->message;
    }
  }
  // A torn line written by hand, as a crash mid-write leaves it.
  auto files = log_files(fx.dir);
  const std::string torn = "{\"v\":1,\"seq\":12,\"time\":\"2026-11-25T17:0";
  std::ofstream(fx.dir + "/" + files.back(), std::ios::app) << torn;
  const auto before = verify_log(fx.dir, fx.key + ".pub");
  ASSERT_TRUE(before.problem);
  EXPECT_EQ(before.problem->kind, ProblemKind::TornTail);

  FlowLogWriter w;
  std::string err;
  ASSERT_TRUE(w.open(o, &err)) << err;
  ASSERT_TRUE(w.recovered());
  EXPECT_EQ(w.recovered()->data, torn);
  EXPECT_EQ(w.recovered()->file, files.back());
  w.stop();

  std::uint64_t n = 0;
  check_chain_independently(fx.dir, &n);
  const auto r = verify_log(fx.dir, fx.key + ".pub");
  EXPECT_TRUE(r.ok) << (r.problem ? r.problem->message : r.error);
  EXPECT_EQ(r.records, n);
  ASSERT_FALSE(r.recovered.empty());
  EXPECT_EQ(r.recovered.back().torn_bytes, torn.size());
  EXPECT_EQ(r.recovered.back().torn_file, files.back());
  // One start per round plus the last open; every start follows a good record.
  std::uint64_t starts = 0;
  for (const auto& name : log_files(fx.dir)) {
    for (const auto& l : read_lines(fx.dir + "/" + name)) {
      if (member(l, "type") == "agent" && member(l, "event") == "start") ++starts;
    }
  }
  EXPECT_EQ(starts, static_cast<std::uint64_t>(kRounds + 1));
}

// ---- loss and folding --------------------------------------------------------

struct Counts {
  std::uint64_t flow_events = 0;  // sum of count over flow records
  std::uint64_t flow_records = 0;
  std::uint64_t lost = 0;  // sum of count over loss records from the queue
  std::uint64_t loss_records = 0;
  std::map<std::string, std::uint64_t> by_verdict;  // records per verdict
};

Counts count_log(const std::string& dir) {
  Counts c;
  for (const auto& name : log_files(dir)) {
    for (const auto& l : read_lines(dir + "/" + name)) {
      const auto type = member(l, "type");
      if (type == "flow") {
        c.flow_events += member_u64(l, "count");
        ++c.flow_records;
        ++c.by_verdict[member(l, "verdict") + "/" + member(l, "event")];
      } else if (type == "loss") {
        EXPECT_EQ(member(l, "source"), "queue");
        EXPECT_EQ(member(l, "reason"), "queue full");
        c.lost += member_u64(l, "count");
        ++c.loss_records;
      }
    }
  }
  return c;
}

TEST(FlowLogWriter, QueueOverflowIsCountedExactly) {
  Fixture fx;
  auto o = fx.options();
  o.queue_capacity = 4;
  FlowLogWriter w;
  std::string err;
  ASSERT_TRUE(w.open(o, &err)) << err;
  constexpr std::uint64_t kEvents = 50000;
  std::uint64_t rejected = 0;
  for (std::uint64_t i = 0; i < kEvents; ++i) {
    if (!w.submit(allow_flow(kT0, static_cast<std::uint16_t>(i)))) ++rejected;
  }
  w.stop();
  ASSERT_GT(rejected, 0U) << "the writer kept up with a queue of 4; no overflow to test";
  const auto c = count_log(fx.dir);
  EXPECT_EQ(c.lost, rejected);
  EXPECT_EQ(w.stats().lost_queue, rejected);
  EXPECT_EQ(c.flow_events + c.lost, kEvents);
  EXPECT_GE(c.loss_records, 1U);
  EXPECT_TRUE(verify_log(fx.dir, fx.key + ".pub").ok);
}

TEST(FlowLogWriter, FoldingKeepsExactCounts) {
  Fixture fx;
  auto o = fx.options();
  o.fold_window = std::chrono::milliseconds(5000);
  const std::int64_t t0 = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  FlowLogWriter w;
  std::string err;
  ASSERT_TRUE(w.open(o, &err)) << err;
  std::uint64_t submitted = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = deny_flow(t0 + i);
    std::get<Flow>(r.body).src.port =
        static_cast<std::uint16_t>(40000 + i);  // src port not in the key
    ASSERT_TRUE(w.submit(r));
    ++submitted;
    auto a = deny_flow(t0 + i, 443);
    std::get<Flow>(a.body).verdict = Verdict::Audit;
    ASSERT_TRUE(w.submit(a));
    ++submitted;
    if (i % 10 == 0) {
      ASSERT_TRUE(w.submit(allow_flow(t0 + i, 80)));  // allows are never folded
      auto e = allow_flow(t0 + i, 80);
      std::get<Flow>(e.body).event = FlowEvent::End;
      ASSERT_TRUE(w.submit(e));  // nor are ends
      submitted += 2;
    }
  }
  // Another destination: its own group; after the window: a new record.
  ASSERT_TRUE(w.submit(deny_flow(t0, 22)));
  ASSERT_TRUE(w.submit(deny_flow(t0 + 6'000'000)));
  submitted += 2;
  w.stop();
  auto c = count_log(fx.dir);
  EXPECT_EQ(c.flow_events, submitted);
  EXPECT_EQ(c.by_verdict["deny/start"], 3U);
  EXPECT_EQ(c.by_verdict["audit/start"], 1U);
  EXPECT_EQ(c.by_verdict["allow/start"], 100U);
  EXPECT_EQ(c.by_verdict["allow/end"], 100U);
  std::vector<std::uint64_t> deny_counts;
  for (const auto& name : log_files(fx.dir)) {
    for (const auto& l : read_lines(fx.dir + "/" + name)) {
      if (member(l, "verdict") == "deny") deny_counts.push_back(member_u64(l, "count"));
    }
  }
  std::sort(deny_counts.begin(), deny_counts.end());
  EXPECT_EQ(deny_counts, (std::vector<std::uint64_t>{1, 1, 1000}));
  EXPECT_EQ(w.stats().folded, 999U + 999U);
  EXPECT_TRUE(verify_log(fx.dir, fx.key + ".pub").ok);
}

// ---- tierctl audit -------------------------------------------------------------

TEST(FlowLogCli, AuditVerifyExitCodesAndMessages) {
  Tampered t;
  tierwall::cli::AuditVerifyOptions o;
  o.dir = t.fx.dir;
  o.pubkey = t.fx.key + ".pub";
  std::ostringstream out, err;
  EXPECT_EQ(tierwall::cli::audit_verify(o, out, err), 0) << out.str() << err.str();
  EXPECT_NE(out.str().find("flow log intact"), std::string::npos);

  auto lines = read_lines(t.path(0));
  lines[3][lines[3].find("\"allow\"") + 1] = 'A';
  write_lines(t.path(0), lines);
  std::ostringstream out2, err2;
  EXPECT_EQ(tierwall::cli::audit_verify(o, out2, err2), 1);
  EXPECT_EQ(out2.str().rfind(t.files[0] + ":4: edited: record hash does not match its content", 0),
            0U)
      << out2.str();

  o.output = "json";
  std::ostringstream out3, err3;
  EXPECT_EQ(tierwall::cli::audit_verify(o, out3, err3), 1);
  EXPECT_NE(out3.str().find("\"kind\": \"edited\""), std::string::npos) << out3.str();

  o.dir = t.fx.tmp.file("nope");
  std::ostringstream out4, err4;
  EXPECT_EQ(tierwall::cli::audit_verify(o, out4, err4), 2);
  EXPECT_NE(err4.str().find("no such log directory"), std::string::npos);
}

// ---- throughput ----------------------------------------------------------------

// Prints the writer's and the verifier's rates (records/s). In sanitizer
// builds these are far below release figures; the release figures are in
// docs/flowlog.md. TIERWALL_FLOWLOG_BENCH_RECORDS overrides the size.
TEST(FlowLogThroughput, WriterAndVerify) {
  std::uint64_t n = 200000;
  if (const char* env = std::getenv("TIERWALL_FLOWLOG_BENCH_RECORDS")) n = std::stoull(env);
  Fixture fx;
  auto o = fx.options();
  o.queue_capacity = static_cast<std::size_t>(n) + 16;
  o.fsync = FsyncPolicy::Interval;
  std::vector<FlowRecord> records;
  records.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    records.push_back(
        allow_flow(kT0 + static_cast<std::int64_t>(i), static_cast<std::uint16_t>(i)));
  }
  FlowLogWriter w;
  std::string err;
  ASSERT_TRUE(w.open(o, &err)) << err;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& r : records) ASSERT_TRUE(w.submit(std::move(r)));
  w.stop();
  const double wsec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(w.stats().lost_queue, 0U);
  const auto t1 = std::chrono::steady_clock::now();
  const auto r = verify_log(fx.dir, fx.key + ".pub");
  const double vsec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_TRUE(r.ok);
  std::printf("flowlog: writer %.0f records/s (%llu records, %.1f MB), verify %.0f records/s\n",
              static_cast<double>(n) / wsec, static_cast<unsigned long long>(n),
              static_cast<double>(w.stats().bytes_written) / 1e6,
              static_cast<double>(r.records) / vsec);
}

}  // namespace
