#include "tierwall/cli/flow_commands.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tierwall/cli/commands.h"
#include "tierwall/flowquery/filter.h"
#include "tierwall/flowquery/log_reader.h"
#include "tierwall/flowquery/record.h"
#include "tierwall/flowquery/report_html.h"
#include "tierwall/flowquery/time.h"

namespace tierwall::cli {

namespace fq = flowquery;

namespace {

constexpr std::size_t kMaxMalformedShown = 20;

std::vector<std::string> split_values(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    std::size_t start = 0;
    while (start <= v.size()) {
      const auto comma = v.find(',', start);
      const auto end = comma == std::string::npos ? v.size() : comma;
      if (end > start) out.push_back(v.substr(start, end - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

bool time_bound(const std::optional<std::string>& text, const char* flag, std::int64_t now,
                std::optional<std::int64_t>& bound, std::ostream& err) {
  if (!text) return true;
  bound = fq::parse_time_spec(*text, now);
  if (!bound) {
    err << "tierctl: " << flag << " '" << *text
        << "': expected RFC 3339 (2026-11-25T17:00:00Z), a date, now, or a duration ago "
           "(90s, 15m, 2h, 7d)\n";
    return false;
  }
  return true;
}

// The flags as a filter; nullopt after printing the usage error.
std::optional<fq::Filter> build_filter(const FlowsOptions& o, std::ostream& err) {
  fq::FilterSpec spec;
  const std::int64_t now = o.now_us.value_or(fq::now_us());
  if (!time_bound(o.since, "--since", now, spec.since_us, err) ||
      !time_bound(o.until, "--until", now, spec.until_us, err)) {
    return std::nullopt;
  }
  for (const auto& v : split_values(o.verdicts)) {
    const auto verdict = fq::parse_verdict(v);
    if (!verdict) {
      err << "tierctl: --verdict '" << v << "': expected allow, deny or audit\n";
      return std::nullopt;
    }
    spec.verdicts.push_back(*verdict);
  }
  for (const auto& v : split_values(o.types)) {
    if (v == "all") {
      spec.types = {fq::RecordType::Flow,  fq::RecordType::Loss,       fq::RecordType::Policy,
                    fq::RecordType::Agent, fq::RecordType::Checkpoint, fq::RecordType::Other};
      continue;
    }
    const auto type = fq::parse_record_type(v);
    if (!type) {
      err << "tierctl: --type '" << v
          << "': expected flow, loss, policy, agent, checkpoint or all\n";
      return std::nullopt;
    }
    spec.types.push_back(*type);
  }
  spec.tiers = split_values(o.tiers);
  spec.src_tiers = split_values(o.src_tiers);
  spec.dst_tiers = split_values(o.dst_tiers);
  spec.endpoints = split_values(o.endpoints);
  spec.rules = split_values(o.rules);
  for (const auto& v : split_values(o.addresses)) {
    std::string why;
    auto cidr = Cidr::parse(v, &why);
    if (!cidr) {
      err << "tierctl: --address '" << v << "': " << (why.empty() ? "not an address" : why) << "\n";
      return std::nullopt;
    }
    spec.addresses.push_back(*cidr);
  }
  for (const auto& v : split_values(o.ports)) {
    std::string why;
    const auto range = fq::parse_port_range(v, &why);
    if (!range) {
      err << "tierctl: --port " << why << "\n";
      return std::nullopt;
    }
    spec.ports.push_back(*range);
  }
  std::string why;
  auto filter = fq::Filter::compile(spec, &why);
  if (!filter) err << "tierctl: " << why << "\n";
  return filter;
}

// Text from the log goes to a terminal: control characters (C0, DEL and the
// C1 range as UTF-8) become '?', so a container name cannot move the cursor
// or rewrite earlier lines.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += '?';
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
      out += '?';
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string peer_text(const fq::Peer& p) {
  std::string out;
  if (!p.name.empty()) out += std::string(p.name) + "/";
  out += std::string(p.ip);
  if (p.port >= 0) {
    out += (p.ip.find(':') != std::string_view::npos ? "." : ":") + std::to_string(p.port);
  } else if (p.icmp_type >= 0) {
    out += " type " + std::to_string(p.icmp_type) + "/" + std::to_string(p.icmp_code);
  }
  if (p.entity == fq::Entity::Endpoint) {
    out += " (" + (p.tier.empty() ? std::string("?") : std::string(p.tier)) + ")";
  } else if (!p.entity_text.empty()) {
    out += " (" + std::string(p.entity_text) + ")";
  }
  return printable(out);
}

struct Row {
  std::string verdict, proto, src, dst, rule, count;
};

Row row_of(const fq::Record& r) {
  Row row;
  switch (r.type) {
    case fq::RecordType::Flow:
      row.verdict = std::string(fq::to_string(r.verdict));
      if (r.event == "end") row.verdict += "/end";
      row.proto = printable(r.proto);
      row.src = peer_text(r.src);
      row.dst = peer_text(r.dst);
      row.rule = printable(r.rule_name.empty() ? r.rule_kind : r.rule_name);
      row.count = std::to_string(r.count);
      break;
    case fq::RecordType::Loss:
      row.verdict = "LOSS";
      row.src = printable(r.source);
      row.dst = printable(r.reason);
      row.count = std::to_string(r.count) + (r.lower_bound ? "+" : "");
      break;
    case fq::RecordType::Policy:
      row.verdict = "POLICY";
      row.src = "generation " + std::to_string(r.generation) + " " + printable(r.name);
      row.dst = "digest " + printable(r.digest.substr(0, 12));
      row.rule = "by " + printable(r.by);
      break;
    case fq::RecordType::Agent:
      row.verdict = "AGENT";
      row.src = printable(r.event);
      row.dst = "version " + printable(r.version);
      break;
    case fq::RecordType::Checkpoint:
      row.verdict = "CHECKPT";
      row.src = "key " + printable(r.key.substr(0, 16));
      break;
    case fq::RecordType::Other:
      row.verdict = printable(r.type_text);
      break;
  }
  return row;
}

void pad(std::ostream& out, const std::string& s, std::size_t width) {
  out << s;
  for (std::size_t i = s.size(); i < width; ++i) out << ' ';
  out << ' ';
}

constexpr std::size_t kTimeW = 27, kVerdictW = 9, kProtoW = 5, kPeerW = 42, kRuleW = 20;

void table_header(std::ostream& out) {
  pad(out, "TIME", kTimeW);
  pad(out, "VERDICT", kVerdictW);
  pad(out, "PROTO", kProtoW);
  pad(out, "SOURCE", kPeerW);
  pad(out, "DESTINATION", kPeerW);
  pad(out, "RULE", kRuleW);
  out << "COUNT\n";
}

void table_row(const fq::Record& r, std::ostream& out) {
  const Row row = row_of(r);
  pad(out, printable(r.time), kTimeW);
  pad(out, row.verdict, kVerdictW);
  pad(out, row.proto, kProtoW);
  pad(out, row.src, kPeerW);
  pad(out, row.dst, kPeerW);
  pad(out, row.rule, kRuleW);
  out << row.count << '\n';
}

}  // namespace

int flows(const FlowsOptions& options, std::ostream& out, std::ostream& err) {
  if (options.log_dir.empty()) {
    err << "tierctl flows: --log DIR is required\n";
    return kExitUsage;
  }
  if (options.output != "table" && options.output != "json") {
    err << "tierctl flows: -o " << options.output << ": expected table or json\n";
    return kExitUsage;
  }
  const auto filter = build_filter(options, err);
  if (!filter) return kExitUsage;
  if (options.limit && *options.limit == 0) return kExitOk;

  std::string list_error;
  const auto initial = fq::list_log_files(options.log_dir, &list_error);
  if (!list_error.empty()) {
    err << "tierctl: " << list_error << "\n";
    return kExitInvalid;
  }
  if (initial.empty() && !options.follow) {
    err << "tierctl: no flow log files (flows-*.jsonl) in " << options.log_dir << "\n";
    return kExitOk;
  }

  fq::StreamOptions so;
  so.follow = options.follow;
  so.buffer_size = options.buffer_size;
  so.stop = options.stop;
  so.poll_interval = std::chrono::milliseconds(options.stop != nullptr ? 50 : 500);
  so.on_wait = [&out] { out.flush(); };
  so.on_torn = [&err](const std::string& file, std::uint64_t line, std::size_t bytes) {
    err << "tierctl: " << file << ":" << line << ": incomplete last line (" << bytes
        << " bytes, no newline) not shown\n";
  };
  fq::LogStream stream(options.log_dir, std::move(so));
  fq::RecordParser parser;
  fq::Record record;
  fq::LogStream::Line line;
  std::string why;
  std::uint64_t matches = 0, malformed = 0;
  const bool json = options.output == "json";
  if (!json) table_header(out);

  for (;;) {
    const auto status = stream.next(line, &why);
    if (status == fq::LogStream::Status::End || status == fq::LogStream::Status::Stopped) break;
    if (status == fq::LogStream::Status::Error) {
      err << "tierctl: " << why << "\n";
      out.flush();
      return kExitInvalid;
    }
    switch (filter->match(line.text, parser, record, &why)) {
      case fq::Filter::Result::NoMatch:
        continue;
      case fq::Filter::Result::Malformed:
        if (++malformed <= kMaxMalformedShown) {
          err << "tierctl: " << *line.file << ":" << line.number << ": not a flow-log record ("
              << why << ")\n";
        }
        continue;
      case fq::Filter::Result::Match:
        break;
    }
    if (json) {
      out.write(line.text.data(), static_cast<std::streamsize>(line.text.size()));
      out.put('\n');
    } else {
      table_row(record, out);
    }
    if (options.limit && ++matches >= *options.limit) break;
  }
  out.flush();
  if (malformed > kMaxMalformedShown)
    err << "tierctl: " << malformed << " lines in all are not flow-log records\n";
  return malformed > 0 ? kExitInvalid : kExitOk;
}

namespace {

// Writes next to `path` and renames, so that a reader never sees half a
// report.
bool write_atomically(const std::string& path, const std::string& content, std::ostream& err) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << content;
    f.flush();
    if (!f) {
      err << "tierctl: cannot write " << tmp << "\n";
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    err << "tierctl: cannot write " << path << ": " << ec.message() << "\n";
    std::filesystem::remove(tmp, ec);
    return false;
  }
  return true;
}

}  // namespace

int report(const ReportOptions& options, std::ostream& out, std::ostream& err) {
  if (options.log_dir.empty()) {
    err << "tierctl report: --log DIR is required\n";
    return kExitUsage;
  }
  if (options.format != "html" && options.format != "json") {
    err << "tierctl report: --format " << options.format << ": expected html or json\n";
    return kExitUsage;
  }
  const std::int64_t now = options.now_us.value_or(fq::now_us());
  fq::FilterSpec spec;
  if (!time_bound(options.since, "--since", now, spec.since_us, err) ||
      !time_bound(options.until, "--until", now, spec.until_us, err)) {
    return kExitUsage;
  }
  spec.types = {fq::RecordType::Flow,  fq::RecordType::Loss,       fq::RecordType::Policy,
                fq::RecordType::Agent, fq::RecordType::Checkpoint, fq::RecordType::Other};
  std::string why;
  const auto filter = fq::Filter::compile(spec, &why);
  if (!filter) {
    err << "tierctl: " << why << "\n";
    return kExitUsage;
  }
  std::string list_error;
  fq::list_log_files(options.log_dir, &list_error);
  if (!list_error.empty()) {
    err << "tierctl: " << list_error << "\n";
    return kExitInvalid;
  }

  fq::SummaryBuilder builder(options.top);
  fq::StreamOptions so;
  so.on_torn = [&builder](const std::string& file, std::uint64_t line, std::size_t bytes) {
    builder.add_torn(file, line, bytes);
  };
  fq::LogStream stream(options.log_dir, std::move(so));
  fq::RecordParser parser;
  fq::Record record;
  fq::LogStream::Line line;
  for (;;) {
    const auto status = stream.next(line, &why);
    if (status != fq::LogStream::Status::Line) {
      if (status == fq::LogStream::Status::Error) {
        err << "tierctl: " << why << "\n";
        return kExitInvalid;
      }
      break;
    }
    switch (filter->match(line.text, parser, record, &why)) {
      case fq::Filter::Result::Match:
        builder.add(record);
        break;
      case fq::Filter::Result::Malformed:
        builder.add_malformed(*line.file, line.number, why);
        break;
      case fq::Filter::Result::NoMatch:
        break;
    }
  }
  fq::Verification verification =
      options.verify ? options.verify(options.log_dir) : options.verification;
  const fq::Summary summary =
      std::move(builder).finish(options.log_dir, stream.files(), std::move(verification));

  std::ostringstream doc;
  if (options.format == "json") {
    doc << fq::to_json(summary).dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
  } else {
    fq::HtmlOptions html;
    html.generated_at = fq::format_time_us(now).substr(0, 19) + "Z";
    fq::render_html(summary, html, doc);
  }
  if (options.output == "-") {
    out << doc.str();
    out.flush();
  } else {
    if (!write_atomically(options.output, doc.str(), err)) return kExitInvalid;
    out << "report: " << options.output << " (" << summary.records << " records, "
        << summary.files.size() << " files)\n";
  }
  for (const auto& t : summary.torn)
    err << "tierctl: " << t << ": incomplete last line, not counted\n";
  if (summary.malformed > 0) {
    err << "tierctl: " << summary.malformed << " lines are not flow-log records";
    if (!summary.malformed_examples.empty()) err << ", first " << summary.malformed_examples[0];
    err << "\n";
  }
  if (summary.verification.ran && !summary.verification.ok) {
    err << "tierctl: the log failed verification: "
        << (summary.verification.first_problem.empty() ? summary.verification.message
                                                       : summary.verification.first_problem)
        << "\n";
    return kExitInvalid;
  }
  return summary.malformed > 0 ? kExitInvalid : kExitOk;
}

}  // namespace tierwall::cli
