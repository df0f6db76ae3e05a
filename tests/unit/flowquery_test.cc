// Reading flow logs: the record parser (fast path and fallback), filters,
// the file reader (chunk boundaries, rotation order, torn lines, follow),
// `tierctl flows` / `tierctl report`, and escaping in the HTML report.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tierwall/cli/flow_commands.h"
#include "tierwall/flowquery/filter.h"
#include "tierwall/flowquery/log_reader.h"
#include "tierwall/flowquery/record.h"
#include "tierwall/flowquery/report_html.h"
#include "tierwall/flowquery/summary.h"
#include "tierwall/flowquery/time.h"
#include "tierwall/testsupport/temp_dir.h"

namespace tierwall::flowquery {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- a generator of valid-format lines (docs/flowlog-format.md); the
// hashes are dummies, the query side never checks them.

const std::string kHash(64, 'a');

struct P {
  std::string ip;
  int port = -1;
  std::string entity = "endpoint";
  std::string name, id, image, tier;
  int icmp_type = -1, icmp_code = 0;
};

P ep(std::string name, std::string ip, std::string tier, int port = -1) {
  P p;
  p.name = std::move(name);
  p.ip = std::move(ip);
  p.tier = std::move(tier);
  p.port = port;
  p.id = "3f2a9c";
  p.image = "reg.example/shop/" + p.name + ":1.4";
  return p;
}
P host(std::string ip, int port = -1) {
  P p;
  p.ip = std::move(ip);
  p.entity = "host";
  p.port = port;
  return p;
}
P world(std::string ip, int port = -1) {
  P p = host(std::move(ip), port);
  p.entity = "world";
  return p;
}
P unknown(std::string ip, int port = -1) {  // inside a container CIDR, no endpoint
  P p;
  p.ip = std::move(ip);
  p.port = port;
  p.tier = "quarantine";
  return p;
}

std::string peer_json(const P& p) {
  std::string s = R"({"ip":")" + p.ip + "\"";
  if (p.port >= 0) s += R"(,"port":)" + std::to_string(p.port);
  if (p.icmp_type >= 0) {
    s += R"(,"icmpType":)" + std::to_string(p.icmp_type) + R"(,"icmpCode":)" +
         std::to_string(p.icmp_code);
  }
  s += R"(,"entity":")" + p.entity + "\"";
  if (p.entity == "endpoint") {
    if (!p.name.empty()) s += R"(,"name":")" + p.name + "\"";
    if (!p.id.empty() && !p.name.empty()) s += R"(,"id":")" + p.id + "\"";
    if (!p.image.empty() && !p.name.empty()) s += R"(,"image":")" + p.image + "\"";
    if (!p.tier.empty()) s += R"(,"tier":")" + p.tier + "\"";
  }
  return s + "}";
}

std::string time_at(int second) {
  return format_time_us(*parse_rfc3339_us("2026-11-25T17:00:00Z") + second * 1'000'000LL + 123);
}

std::string head(std::int64_t seq, int second, const std::string& type) {
  return R"({"v":1,"seq":)" + std::to_string(seq) + R"(,"time":")" + time_at(second) +
         R"(","node":"node-a","type":")" + type + "\"";
}

std::string tail() { return R"(,"prev":")" + kHash + R"(","hash":")" + kHash + "\"}"; }

struct Flow {
  Flow(std::string verdict_, P src_, P dst_, std::string kind_ = "flow", std::string rule_ = "",
       std::int64_t count_ = 1, std::string proto_ = "tcp", std::string event_ = "start")
      : verdict(std::move(verdict_)),
        src(std::move(src_)),
        dst(std::move(dst_)),
        kind(std::move(kind_)),
        rule(std::move(rule_)),
        count(count_),
        proto(std::move(proto_)),
        event(std::move(event_)) {}
  std::string verdict;
  P src, dst;
  std::string kind, rule;
  std::int64_t count;
  std::string proto;
  std::string event;
};

std::string flow(std::int64_t seq, int second, const Flow& f) {
  std::string s = head(seq, second, "flow") + R"(,"event":")" + f.event + R"(","verdict":")" +
                  f.verdict + R"(","proto":")" + f.proto +
                  R"(","dataplane":"nft","generation":42,"src":)" + peer_json(f.src) +
                  R"(,"dst":)" + peer_json(f.dst) + R"(,"rule":{"kind":")" + f.kind + "\"";
  if (!f.rule.empty()) s += R"(,"name":")" + f.rule + "\"";
  s += R"(},"count":)" + std::to_string(f.count);
  if (f.event == "end") {
    s += R"(,"packets":{"orig":10,"reply":8},"bytes":{"orig":1200,"reply":900})";
  } else {
    s += R"(,"packets":null,"bytes":null)";
  }
  return s + tail();
}

std::string loss(std::int64_t seq, int second, const std::string& source, std::int64_t count,
                 bool lower_bound = false) {
  return head(seq, second, "loss") + R"(,"source":")" + source +
         R"(","reason":"ENOBUFS","count":)" + std::to_string(count) +
         (lower_bound ? R"(,"lowerBound":true)" : "") + tail();
}

std::string policy(std::int64_t seq, int second, std::int64_t generation) {
  return head(seq, second, "policy") + R"(,"generation":)" + std::to_string(generation) +
         R"(,"name":"shop","digest":")" + std::string(64, 'd') + R"(","by":"tierctl apply")" +
         tail();
}

std::string agent(std::int64_t seq, int second, const std::string& event) {
  std::string s = head(seq, second, "agent") + R"(,"event":")" + event + R"(","version":"0.1.0")";
  if (event == "recovered")
    s +=
        R"(,"torn":{"file":"flows-20261125T170000.000000Z.jsonl","line":7,"bytes":12,"data":"eyJ2IjoxLA=="})";
  return s + tail();
}

std::string checkpoint(std::int64_t seq, int second) {
  return head(seq, second, "checkpoint") + R"(,"key":")" + std::string(64, 'k') +
         R"(","signature":")" + std::string(128, 's') + "\"" + tail();
}

using tierwall::testsupport::TempDir;

std::string lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& l : v) s += l + "\n";
  return s;
}

// A small log of every kind of record.
std::vector<std::string> sample() {
  const P web = ep("web-1", "10.88.0.10", "public", 51234);
  const P api = ep("api-1", "10.88.0.11", "internal", 8080);
  const P db = ep("db-1", "10.88.0.20", "restricted", 5432);
  const P stray = ep("stray", "10.88.0.99", "quarantine", 40000);
  return {
      agent(1, 0, "start"),
      policy(2, 1, 41),
      flow(3, 10, {"allow", web, api, "flow", "web-api", 1}),
      flow(4, 20, {"deny", web, db, "default-deny", "", 5}),
      flow(5, 30,
           {"audit", api, ep("cache-1", "10.88.0.30", "internal", 6379), "deny", "stage-cache", 2}),
      flow(6, 40,
           {"deny", world("203.0.113.7", 40001), ep("db-1", "10.88.0.20", "restricted", 22), "deny",
            "no-ssh", 3}),
      flow(7, 50, {"allow", host("10.88.0.1", 33000), api, "flow", "health", 1}),
      loss(8, 60, "nflog", 17),
      flow(9, 70, {"deny", stray, unknown("10.88.0.200", 80), "default-deny", "", 1}),
      policy(10, 80, 42),
      flow(11, 90, {"allow", web, api, "flow", "web-api", 1, "tcp", "end"}),
      checkpoint(12, 100),
  };
}

std::vector<std::int64_t> seqs_matching(const FilterSpec& spec,
                                        const std::vector<std::string>& input) {
  std::string error;
  const auto f = Filter::compile(spec, &error);
  EXPECT_TRUE(f) << error;
  std::vector<std::int64_t> out;
  RecordParser parser;
  Record r;
  for (const auto& l : input) {
    const auto res = f->match(l, parser, r, &error);
    EXPECT_NE(res, Filter::Result::Malformed) << l << ": " << error;
    if (res == Filter::Result::Match) out.push_back(r.seq);
  }
  return out;
}

using Seqs = std::vector<std::int64_t>;

// ---- records

TEST(RecordParser, FastPathReadsEveryFieldOfAFlow) {
  const std::string line =
      flow(9, 5,
           {"deny", ep("web-1", "10.88.0.10", "public", 51234),
            ep("db-1", "10.88.0.20", "restricted", 5432), "deny", "no-db", 3, "tcp", "start"});
  RecordParser parser;
  Record r;
  std::string error;
  ASSERT_TRUE(parser.parse(line, r, &error)) << error;
  EXPECT_EQ(parser.fallbacks(), 0u);
  EXPECT_EQ(r.seq, 9);
  EXPECT_EQ(r.time, time_at(5));
  EXPECT_EQ(r.time_us, *parse_rfc3339_us(time_at(5)));
  EXPECT_EQ(r.node, "node-a");
  EXPECT_EQ(r.type, RecordType::Flow);
  EXPECT_EQ(r.verdict, Verdict::Deny);
  EXPECT_EQ(r.proto, "tcp");
  EXPECT_EQ(r.dataplane, "nft");
  EXPECT_EQ(r.generation, 42);
  EXPECT_EQ(r.src.name, "web-1");
  EXPECT_EQ(r.src.port, 51234);
  EXPECT_EQ(r.src.image, "reg.example/shop/web-1:1.4");
  EXPECT_EQ(r.dst.tier, "restricted");
  EXPECT_EQ(r.dst.port, 5432);
  EXPECT_EQ(r.dst.entity, Entity::Endpoint);
  EXPECT_EQ(r.rule_kind, "deny");
  EXPECT_EQ(r.rule_name, "no-db");
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.hash, kHash);
}

TEST(RecordParser, FastPathReadsEveryRecordType) {
  RecordParser parser;
  Record r;
  std::string error;
  Flow icmp{"allow", host("10.88.0.1"), ep("web-1", "10.88.0.10", "public"), "flow", "ping"};
  icmp.proto = "icmp";
  icmp.dst.icmp_type = 8;
  std::vector<std::string> all = sample();
  all.push_back(flow(20, 5, icmp));
  all.push_back(loss(21, 5, "queue", 100, true));
  all.push_back(agent(22, 5, "recovered"));
  for (const auto& l : all) ASSERT_TRUE(parser.parse(l, r, &error)) << l << ": " << error;
  EXPECT_EQ(parser.fallbacks(), 0u);

  ASSERT_TRUE(parser.parse(all[all.size() - 3], r, &error));
  EXPECT_EQ(r.dst.port, -1);
  EXPECT_EQ(r.dst.icmp_type, 8);
  EXPECT_EQ(r.dst.icmp_code, 0);
  EXPECT_EQ(r.src.entity, Entity::Host);
  ASSERT_TRUE(parser.parse(all[all.size() - 2], r, &error));
  EXPECT_EQ(r.type, RecordType::Loss);
  EXPECT_EQ(r.count, 100);
  EXPECT_TRUE(r.lower_bound);
  EXPECT_EQ(r.source, "queue");
  ASSERT_TRUE(parser.parse(all[10], r, &error));  // flow end
  EXPECT_EQ(r.bytes_orig, 1200);
  EXPECT_EQ(r.packets_reply, 8);
  ASSERT_TRUE(parser.parse(all[1], r, &error));
  EXPECT_EQ(r.type, RecordType::Policy);
  EXPECT_EQ(r.generation, 41);
  EXPECT_EQ(r.by, "tierctl apply");
}

TEST(RecordParser, FallsBackOnOddKeyOrderAndEscapes) {
  // Same record, keys in another order: the full parse decides.
  const std::string reordered =
      R"({"seq":5,"v":1,"type":"flow","time":"2026-11-25T17:00:05.000000Z","node":"n",)"
      R"("verdict":"deny","event":"start","proto":"udp","dataplane":"nft","generation":3,)"
      R"("dst":{"ip":"10.88.0.20","port":53,"entity":"endpoint","name":"dns-1","tier":"infra"},)"
      R"("src":{"entity":"world","ip":"198.51.100.1","port":999},"rule":{"name":"x","kind":"deny"},)"
      R"("count":2,"packets":null,"bytes":null,"prev":"p","hash":"h"})";
  RecordParser parser;
  Record r;
  std::string error;
  ASSERT_TRUE(parser.parse(reordered, r, &error)) << error;
  EXPECT_EQ(parser.fallbacks(), 1u);
  EXPECT_EQ(r.verdict, Verdict::Deny);
  EXPECT_EQ(r.dst.name, "dns-1");
  EXPECT_EQ(r.dst.port, 53);
  EXPECT_EQ(r.src.entity, Entity::World);
  EXPECT_EQ(r.rule_name, "x");
  EXPECT_EQ(r.count, 2);

  // An escaped quote in a name: the fast path steps aside, the name is decoded.
  P odd = ep(R"(we\"b)", "10.88.0.10", "public", 1);
  ASSERT_TRUE(parser.parse(flow(6, 1, {"allow", odd, odd, "self"}), r, &error)) << error;
  EXPECT_EQ(parser.fallbacks(), 2u);
  EXPECT_EQ(r.src.name, "we\"b");

  // The filter reaches the same decision through the fallback.
  FilterSpec spec;
  spec.verdicts = {Verdict::Deny};
  spec.tiers = {"infra"};
  EXPECT_EQ(seqs_matching(spec, {reordered}), Seqs{5});
  spec.tiers = {"public"};
  EXPECT_EQ(seqs_matching(spec, {reordered}), Seqs{});
}

TEST(RecordParser, RejectsLinesThatAreNotRecords) {
  RecordParser parser;
  Record r;
  std::string error;
  EXPECT_FALSE(parser.parse("not json", r, &error));
  EXPECT_FALSE(parser.parse("[1,2]", r, &error));
  EXPECT_FALSE(parser.parse(R"({"v":1,"seq":1,"type":"flow"})", r, &error));  // no time
  EXPECT_THAT(error, HasSubstr("time"));
  // Truncated after the verdict: the fast path fails, so does the full parse.
  const std::string full = sample()[3];
  EXPECT_FALSE(parser.parse(full.substr(0, full.size() / 2), r, &error));
}

TEST(Time, ParsesRfc3339AndRelative) {
  const auto t = parse_rfc3339_us("2026-11-25T17:00:00.123456Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(format_time_us(*t), "2026-11-25T17:00:00.123456Z");
  EXPECT_EQ(parse_rfc3339_us("2026-11-25T18:00:00+01:00"),
            parse_rfc3339_us("2026-11-25T17:00:00Z"));
  EXPECT_EQ(*parse_rfc3339_us("2026-11-25T17:00:00.5Z") - *parse_rfc3339_us("2026-11-25T17:00:00Z"),
            500'000);
  EXPECT_EQ(*parse_rfc3339_us("1970-01-01T00:00:00Z"), 0);
  EXPECT_FALSE(parse_rfc3339_us("2026-02-30T00:00:00Z"));
  EXPECT_FALSE(parse_rfc3339_us("2026-11-25T17:00:00"));
  EXPECT_FALSE(parse_rfc3339_us("2026-11-25T17:00:00Zjunk"));
  const std::int64_t now = *t;
  EXPECT_EQ(parse_time_spec("15m", now), now - 15 * 60'000'000LL);
  EXPECT_EQ(parse_time_spec("2h", now), now - 2 * 3600'000'000LL);
  EXPECT_EQ(parse_time_spec("now", now), now);
  EXPECT_EQ(parse_time_spec("2026-11-25", now), parse_rfc3339_us("2026-11-25T00:00:00Z"));
  EXPECT_FALSE(parse_time_spec("15x", now));
  EXPECT_FALSE(parse_time_spec("m", now));
  EXPECT_FALSE(parse_time_spec("-5m", now));
}

// ---- filters, each on the sample log

TEST(Filter, DefaultIsFlowAndLoss) {
  EXPECT_EQ(seqs_matching({}, sample()), (Seqs{3, 4, 5, 6, 7, 8, 9, 11}));
}

TEST(Filter, Types) {
  FilterSpec s;
  s.types = {RecordType::Policy, RecordType::Checkpoint, RecordType::Agent};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{1, 2, 10, 12}));
}

TEST(Filter, TimeRange) {
  FilterSpec s;
  s.since_us = parse_rfc3339_us(time_at(20));
  s.until_us = parse_rfc3339_us(time_at(60));  // exclusive
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 5, 6, 7}));
}

TEST(Filter, Verdict) {
  FilterSpec s;
  s.verdicts = {Verdict::Deny, Verdict::Audit};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 5, 6, 9}));
}

TEST(Filter, Tiers) {
  FilterSpec s;
  s.tiers = {"restricted"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 6}));
  s.tiers = {"world", "host"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{6, 7}));
  s = {};
  s.src_tiers = {"public"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{3, 4, 11}));
  s = {};
  s.dst_tiers = {"internal"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{3, 5, 7, 11}));
  s.src_tiers = {"host"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{7}));
}

TEST(Filter, EndpointGlob) {
  FilterSpec s;
  s.endpoints = {"db-*"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 6}));
  s.endpoints = {"cache-?", "str*"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{5, 9}));
}

TEST(Filter, Rule) {
  FilterSpec s;
  s.rules = {"web-api"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{3, 11}));
  s.rules = {"default-deny"};  // unnamed rules match by kind
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 9}));
  s.rules = {"no-*"};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{6}));
}

TEST(Filter, AddressAndCidr) {
  FilterSpec s;
  s.addresses = {*Cidr::parse("10.88.0.20")};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 6}));
  s.addresses = {*Cidr::parse("203.0.113.0/24")};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{6}));
  s.addresses = {*Cidr::parse("10.88.0.192/26")};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{9}));
}

TEST(Filter, Port) {
  FilterSpec s;
  s.ports = {*parse_port_range("5432", nullptr), *parse_port_range("20-22", nullptr)};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{4, 6}));
  EXPECT_FALSE(parse_port_range("70000", nullptr));
  EXPECT_FALSE(parse_port_range("9-1", nullptr));
}

TEST(Filter, CriteriaCombine) {
  FilterSpec s;
  s.verdicts = {Verdict::Deny};
  s.tiers = {"restricted"};
  s.ports = {{22, 22}};
  EXPECT_EQ(seqs_matching(s, sample()), (Seqs{6}));
}

// ---- files

TEST(LineReader, LinesSpanningChunks) {
  TempDir dir;
  std::vector<std::string> want;
  std::string content;
  for (int i = 0; i < 300; ++i) {
    want.push_back(std::string(static_cast<std::size_t>(i * 7 % 181), 'x') + std::to_string(i));
    content += want.back() + "\n";
  }
  want.push_back("");  // an empty line is a line
  content += "\n";
  dir.write("f", content);
  for (const std::size_t buffer : {16u, 64u, 100u, 333u, 4096u, 1u << 20}) {
    LineReader reader(buffer);
    std::string error;
    ASSERT_TRUE(reader.open(dir.file("f"), &error)) << error;
    std::vector<std::string> got;
    std::string_view line;
    while (reader.next(line, &error) == LineReader::Status::Line) {
      got.emplace_back(line);
      EXPECT_EQ(reader.line_number(), got.size());
    }
    EXPECT_EQ(got, want) << "buffer " << buffer;
    EXPECT_EQ(reader.pending_bytes(), 0u);
  }
}

TEST(LogStream, RotatedFilesInNameOrderWithLineNumbers) {
  TempDir dir;
  // Written newest first, so that creation order is not name order.
  dir.write("flows-20261125T180000.000000Z.jsonl", "c1\nc2\n");
  dir.write("flows-20261125T170000.000000Z.jsonl", "a1\n");
  dir.write("flows-20261125T173000.000000Z.jsonl", "b1\nb2\nb3\n");
  dir.write("head.json", "{}\n");
  dir.write("flows-x.jsonl.tmp", "junk\n");
  std::string error;
  EXPECT_EQ(list_log_files(dir.path(), &error),
            (std::vector<std::string>{"flows-20261125T170000.000000Z.jsonl",
                                      "flows-20261125T173000.000000Z.jsonl",
                                      "flows-20261125T180000.000000Z.jsonl"}));
  StreamOptions o;
  o.buffer_size = 16;
  LogStream stream(dir.path(), o);
  LogStream::Line line;
  std::vector<std::string> got;
  while (stream.next(line, &error) == LogStream::Status::Line) {
    got.push_back(std::string(line.text) + "@" + line.file->substr(15, 4) + ":" +
                  std::to_string(line.number));
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a1@1700:1", "b1@1730:1", "b2@1730:2", "b3@1730:3",
                                           "c1@1800:1", "c2@1800:2"}));
  EXPECT_EQ(stream.files().size(), 3u);
}

TEST(LogStream, TornLastLineIsHeldBackAndReported) {
  TempDir dir;
  const auto all = sample();
  dir.write("flows-1.jsonl", lines({all[0], all[1]}) + "{\"v\":1,\"seq\":3,\"ti");  // crash
  dir.write("flows-2.jsonl", lines({all[2]}) + all[3].substr(0, 40));
  std::vector<std::string> torn;
  StreamOptions o;
  o.on_torn = [&](const std::string& file, std::uint64_t line, std::size_t bytes) {
    torn.push_back(file + ":" + std::to_string(line) + ":" + std::to_string(bytes));
  };
  LogStream stream(dir.path(), o);
  LogStream::Line line;
  std::string error;
  std::vector<std::string> got;
  while (stream.next(line, &error) == LogStream::Status::Line) got.emplace_back(line.text);
  EXPECT_EQ(got, (std::vector<std::string>{all[0], all[1], all[2]}));
  EXPECT_EQ(torn, (std::vector<std::string>{"flows-1.jsonl:3:18", "flows-2.jsonl:2:40"}));
}

TEST(LogStream, FollowSeesAppendsCompletedLinesAndNewFiles) {
  TempDir dir;
  const auto all = sample();
  dir.write("flows-1.jsonl", lines({all[0]}));
  std::atomic<bool> stop{false};
  std::atomic<int> step{0};
  std::thread writer([&] {
    auto wait_for = [&](int s) {
      for (int i = 0; i < 1000 && step.load() < s; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    };
    wait_for(1);
    dir.append("flows-1.jsonl", all[1].substr(0, 30));  // a torn write in progress
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    dir.append("flows-1.jsonl", all[1].substr(30) + "\n");  // completed
    wait_for(2);
    dir.append("flows-1.jsonl", lines({all[2]}));
    dir.write("flows-2.jsonl", lines({all[3], all[4]}));  // rotation
    wait_for(5);
    dir.append("flows-2.jsonl", lines({all[5]}));
  });
  std::thread watchdog([&] {
    for (int i = 0; i < 200 && !stop.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stop = true;
  });
  StreamOptions o;
  o.follow = true;
  o.stop = &stop;
  o.buffer_size = 64;
  o.poll_interval = std::chrono::milliseconds(1000);  // inotify must wake it, not the timeout
  std::vector<std::string> torn;
  o.on_torn = [&](const std::string& f, std::uint64_t, std::size_t) { torn.push_back(f); };
  LogStream stream(dir.path(), o);
  LogStream::Line line;
  std::string error;
  std::vector<std::string> got;
  std::vector<std::string> where;
  while (got.size() < 6) {
    const auto st = stream.next(line, &error);
    if (st != LogStream::Status::Line) break;
    got.emplace_back(line.text);
    where.push_back(*line.file + ":" + std::to_string(line.number));
    step = static_cast<int>(got.size());
  }
  stop = true;
  writer.join();
  watchdog.join();
  EXPECT_EQ(got, (std::vector<std::string>{all[0], all[1], all[2], all[3], all[4], all[5]}));
  EXPECT_EQ(where,
            (std::vector<std::string>{"flows-1.jsonl:1", "flows-1.jsonl:2", "flows-1.jsonl:3",
                                      "flows-2.jsonl:1", "flows-2.jsonl:2", "flows-2.jsonl:3"}));
  EXPECT_TRUE(torn.empty());
}

// ---- tierctl flows

struct CmdResult {
  int code = 0;
  std::string out, err;
};

CmdResult run_flows(const cli::FlowsOptions& o) {
  std::ostringstream out, err;
  CmdResult r;
  r.code = cli::flows(o, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(FlowsCommand, JsonPrintsMatchingLinesAsTheyAre) {
  TempDir dir;
  const auto all = sample();
  dir.write("flows-20261125T170000.000000Z.jsonl", lines(all));
  cli::FlowsOptions o;
  o.log_dir = dir.path();
  o.output = "json";
  o.verdicts = {"deny,audit"};
  const CmdResult r = run_flows(o);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, lines({all[3], all[4], all[5], all[8]}));
  o.limit = 2;
  EXPECT_EQ(run_flows(o).out, lines({all[3], all[4]}));
}

TEST(FlowsCommand, TableShowsOneRowPerRecord) {
  TempDir dir;
  dir.write("flows-1.jsonl", lines(sample()));
  cli::FlowsOptions o;
  o.log_dir = dir.path();
  o.tiers = {"restricted"};
  const CmdResult r = run_flows(o);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("TIME"));
  EXPECT_THAT(r.out, HasSubstr("web-1/10.88.0.10:51234 (public)"));
  EXPECT_THAT(r.out, HasSubstr("db-1/10.88.0.20:5432 (restricted)"));
  EXPECT_THAT(r.out, HasSubstr("203.0.113.7:40001 (world)"));
  EXPECT_THAT(r.out, HasSubstr("no-ssh"));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3);  // header + 2 rows
}

TEST(FlowsCommand, TableNeutralisesControlCharacters) {
  TempDir dir;
  P evil = ep("x\\u001b[2Jy", "10.88.0.10", "public", 1);  // ESC, escaped in JSON
  dir.write("flows-1.jsonl", lines({flow(1, 1, {"deny", evil, evil, "default-deny"})}));
  cli::FlowsOptions o;
  o.log_dir = dir.path();
  const CmdResult r = run_flows(o);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("x?[2Jy"));
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
}

TEST(FlowsCommand, UsageAndInputErrors) {
  TempDir dir;
  cli::FlowsOptions o;
  EXPECT_EQ(run_flows(o).code, 2);  // no --log
  o.log_dir = dir.path();
  o.verdicts = {"maybe"};
  EXPECT_EQ(run_flows(o).code, 2);
  o.verdicts = {};
  o.since = "yesterday-ish";
  EXPECT_EQ(run_flows(o).code, 2);
  o.since.reset();
  o.addresses = {"10.0.0.1/8"};
  EXPECT_EQ(run_flows(o).code, 2);
  o.addresses = {};
  o.output = "yaml";
  EXPECT_EQ(run_flows(o).code, 2);
  o.output = "json";
  o.log_dir = dir.file("missing");
  EXPECT_EQ(run_flows(o).code, 1);
  o.log_dir = dir.path();
  dir.write("flows-1.jsonl", lines({sample()[2], "garbage", sample()[3]}));
  const CmdResult r = run_flows(o);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("flows-1.jsonl:2: not a flow-log record"));
  EXPECT_EQ(r.out, lines({sample()[2], sample()[3]}));
}

TEST(FlowsCommand, RelativeSince) {
  TempDir dir;
  dir.write("flows-1.jsonl", lines(sample()));
  cli::FlowsOptions o;
  o.log_dir = dir.path();
  o.output = "json";
  o.now_us = *parse_rfc3339_us(time_at(100));
  o.since = "35s";  // since second 65
  EXPECT_EQ(run_flows(o).out, lines({sample()[8], sample()[10]}));
}

TEST(FlowsCommand, FollowWithLimitReturnsOnceEnoughArrived) {
  TempDir dir;
  const auto all = sample();
  dir.write("flows-1.jsonl", lines({all[2]}));
  std::atomic<bool> stop{false};
  cli::FlowsOptions o;
  o.log_dir = dir.path();
  o.output = "json";
  o.follow = true;
  o.limit = 3;
  o.verdicts = {"deny"};
  o.stop = &stop;  // only a safety net here
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dir.append("flows-1.jsonl", lines({all[3]}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dir.write("flows-2.jsonl", lines({all[4], all[5]}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dir.append("flows-2.jsonl", lines({all[7], all[8], all[3]}));
  });
  std::thread watchdog([&] {
    for (int i = 0; i < 200 && !stop.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stop = true;
  });
  const CmdResult r = run_flows(o);
  stop = true;
  writer.join();
  watchdog.join();
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, lines({all[3], all[5], all[8]}));
}

// ---- summary and report

Summary summarize(const std::vector<std::string>& input, Verification v = {}) {
  SummaryBuilder b;
  RecordParser parser;
  Record r;
  std::string error;
  for (const auto& l : input) {
    if (parser.parse(l, r, &error)) b.add(r);
  }
  return std::move(b).finish("/var/log/tierwall", {"flows-1.jsonl"}, std::move(v));
}

TEST(Summary, AddsUpTheLog) {
  const Summary s = summarize(sample());
  EXPECT_EQ(s.records, 12u);
  EXPECT_EQ(s.nodes, std::vector<std::string>{"node-a"});
  EXPECT_EQ(s.first_time, time_at(0));
  EXPECT_EQ(s.last_time, time_at(100));
  EXPECT_EQ(s.peers, (std::vector<std::string>{"internal", "public", "restricted", "quarantine",
                                               "host", "world"}));
  EXPECT_EQ(s.cell("public", "internal").allowed, 1u);  // the end record is not counted again
  EXPECT_EQ(s.cell("public", "restricted").denied, 5u);
  EXPECT_EQ(s.cell("internal", "internal").audited, 2u);
  EXPECT_EQ(s.cell("world", "restricted").denied, 3u);
  EXPECT_EQ(s.cell("host", "internal").allowed, 1u);
  EXPECT_EQ(s.cell("quarantine", "quarantine").denied, 1u);
  EXPECT_EQ(s.totals.denied, 9u);
  ASSERT_EQ(s.top_denied.size(), 3u);
  EXPECT_EQ(s.top_denied[0].src_name, "web-1");
  EXPECT_EQ(s.top_denied[0].dst_name, "db-1");
  EXPECT_EQ(s.top_denied[0].port, 5432);
  EXPECT_EQ(s.top_denied[0].count, 5u);
  EXPECT_EQ(s.top_denied[1].src_name, "203.0.113.7");
  ASSERT_EQ(s.top_denied_rules.size(), 2u);
  EXPECT_EQ(s.top_denied_rules[0].kind, "default-deny");
  EXPECT_EQ(s.top_denied_rules[0].count, 6u);
  ASSERT_EQ(s.quarantined.size(), 1u);
  EXPECT_EQ(s.quarantined[0].name, "stray");
  ASSERT_EQ(s.unassigned.size(), 1u);
  EXPECT_EQ(s.unassigned[0].ip, "10.88.0.200");
  ASSERT_EQ(s.policies.size(), 2u);
  EXPECT_EQ(s.policies[1].generation, 42);
  EXPECT_EQ(s.loss_events, 17u);
  ASSERT_EQ(s.loss_by_source.size(), 1u);
  EXPECT_EQ(s.loss_by_source[0].source, "nflog");

  const auto j = to_json(s);
  EXPECT_EQ(j["totals"]["denied"], 9);
  EXPECT_EQ(j["topDenied"][0]["dst"]["port"], 5432);
  EXPECT_EQ(j["loss"]["events"], 17);
  EXPECT_EQ(j["verification"]["ran"], false);
}

TEST(ReportHtml, EscapesEverythingFromTheLog) {
  const std::string evil = "<script>alert(1)</script>";
  auto all = sample();
  all.push_back(flow(
      13, 110,
      {"deny", ep(evil, "10.88.0.66", "quarantine", 1),
       ep("db-1", "10.88.0.20", "<b>tier</b>", 5432), "deny", "<img src=x onerror=alert(2)>", 1}));
  // Escaped in JSON too (the fallback path): a quote and a closing tag.
  P quoted = ep(R"(\"><svg onload=alert(3)>)", "10.88.0.67", "public", 1);
  all.push_back(flow(14, 111, {"deny", quoted, quoted, "default-deny"}));
  Verification v{true, false, "chain broken", "flows-1.jsonl:3: <i>hash</i> mismatch"};
  std::ostringstream html;
  render_html(summarize(all, v), {}, html);
  const std::string page = html.str();
  EXPECT_THAT(page, Not(HasSubstr("<script>alert")));
  EXPECT_THAT(page, Not(HasSubstr("<img src=x")));
  EXPECT_THAT(page, Not(HasSubstr("<svg onload")));
  EXPECT_THAT(page, Not(HasSubstr("<b>tier")));
  EXPECT_THAT(page, Not(HasSubstr("<i>hash")));
  EXPECT_THAT(page, HasSubstr("&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_THAT(page, HasSubstr("&quot;&gt;&lt;svg onload=alert(3)&gt;"));
  EXPECT_THAT(page, HasSubstr("&lt;i&gt;hash&lt;/i&gt; mismatch"));
  EXPECT_THAT(page, Not(HasSubstr("<script")));  // and no script of our own
  EXPECT_THAT(page, HasSubstr("Content-Security-Policy"));
  EXPECT_THAT(page, HasSubstr("class=\"badge broken\""));
}

TEST(ReportHtml, HeatmapHasACellPerPairAndTheBadgeFollowsVerification) {
  const Summary s = summarize(sample(), Verification{true, true, "12 records verified", ""});
  std::ostringstream html;
  render_html(s, {}, html);
  const std::string page = html.str();
  std::size_t cells = 0;
  for (auto p = page.find("<rect class=\"cell\""); p != std::string::npos;
       p = page.find("<rect class=\"cell\"", p + 1)) {
    ++cells;
  }
  EXPECT_EQ(cells, 3 * s.peers.size() * s.peers.size());
  EXPECT_THAT(page, HasSubstr("class=\"badge intact\""));
  EXPECT_THAT(page, HasSubstr("12 records verified"));
  EXPECT_THAT(page, HasSubstr("id=\"policy-timeline\""));
  EXPECT_THAT(page, HasSubstr("data-from=\"public\" data-to=\"restricted\" data-count=\"5\""));

  std::ostringstream unverified;
  render_html(summarize(sample()), {}, unverified);
  EXPECT_THAT(unverified.str(), HasSubstr("class=\"badge unverified\""));
}

TEST(ReportCommand, WritesHtmlOrJsonAndCallsTheVerifier) {
  TempDir dir;
  dir.write("flows-1.jsonl", lines(sample()));
  cli::ReportOptions o;
  o.log_dir = dir.path();
  o.output = dir.file("report.html");
  std::string verified_dir;
  o.verify = [&](const std::string& d) {
    verified_dir = d;
    return Verification{true, true, "ok", ""};
  };
  std::ostringstream out, err;
  EXPECT_EQ(cli::report(o, out, err), 0) << err.str();
  EXPECT_EQ(verified_dir, dir.path());
  std::ifstream f(o.output);
  const std::string page((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_THAT(page, HasSubstr("badge intact"));
  EXPECT_THAT(page, HasSubstr("</html>"));

  o.output = "-";
  o.format = "json";
  o.verify = nullptr;
  o.verification = Verification{true, false, "broken", "flows-1.jsonl:4: hash mismatch"};
  std::ostringstream jout, jerr;
  EXPECT_EQ(cli::report(o, jout, jerr), 1);  // written, but the check failed
  const auto j = nlohmann::json::parse(jout.str());
  EXPECT_EQ(j["records"]["total"], 12);
  EXPECT_EQ(j["verification"]["firstProblem"], "flows-1.jsonl:4: hash mismatch");
  EXPECT_THAT(jerr.str(), HasSubstr("hash mismatch"));
}

}  // namespace
}  // namespace tierwall::flowquery
