#include "tierwall/cli/audit_commands.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "tierwall/cli/commands.h"
#include "tierwall/flowlog/keys.h"
#include "tierwall/flowlog/verify.h"

namespace tierwall::cli {

namespace {

using nlohmann::json;
namespace fl = tierwall::flowlog;

std::string_view key_source(fl::KeySource s) {
  switch (s) {
    case fl::KeySource::None:
      return "none";
    case fl::KeySource::PubkeyFile:
      return "pubkey";
    case fl::KeySource::LogDirectory:
      return "log-directory";
  }
  return "none";
}

json to_json(const fl::VerifyReport& r) {
  json j;
  j["ok"] = r.ok;
  j["records"] = r.records;
  j["files"] = r.files;
  j["firstSeq"] = r.first_seq;
  j["lastSeq"] = r.last_seq;
  j["checkpoints"] = {{"verified", r.checkpoints_verified}, {"total", r.checkpoints_total}};
  j["unsignedTail"] = r.unsigned_tail;
  j["key"] = {{"id", r.key_id}, {"source", key_source(r.key_source)}};
  j["headChecked"] = r.head_checked;
  if (r.problem) {
    j["problem"] = {{"file", r.problem->file},
                    {"line", r.problem->line},
                    {"kind", fl::to_string(r.problem->kind)},
                    {"message", r.problem->message}};
  } else {
    j["problem"] = nullptr;
  }
  j["recovered"] = json::array();
  for (const auto& t : r.recovered) {
    j["recovered"].push_back({{"file", t.file},
                              {"line", t.line},
                              {"tornFile", t.torn_file},
                              {"tornLine", t.torn_line},
                              {"tornBytes", t.torn_bytes}});
  }
  j["notes"] = r.notes;
  return j;
}

void print_text(const fl::VerifyReport& r, std::ostream& out) {
  if (r.problem) {
    out << r.problem->file << ":" << r.problem->line << ": " << fl::to_string(r.problem->kind)
        << ": " << r.problem->message << "\n";
  }
  for (const auto& t : r.recovered) {
    out << t.file << ":" << t.line << ": info: writer recovered after a crash: " << t.torn_bytes
        << " torn byte(s) from " << t.torn_file << ":" << t.torn_line
        << " preserved in this record\n";
  }
  for (const auto& n : r.notes) out << "note: " << n << "\n";
  out << (r.ok ? "flow log intact" : "flow log NOT intact") << ": " << r.records << " record(s) in "
      << r.files << " file(s)";
  if (r.records > 0) out << ", seq " << r.first_seq << ".." << r.last_seq;
  out << ", checkpoints " << r.checkpoints_verified << "/" << r.checkpoints_total << " verified";
  if (!r.key_id.empty()) out << " (key " << r.key_id << ", " << key_source(r.key_source) << ")";
  out << (r.head_checked ? ", head.json verified" : "") << "\n";
}

}  // namespace

int audit_verify(const AuditVerifyOptions& options, std::ostream& out, std::ostream& err) {
  if (options.output != "text" && options.output != "json") {
    err << "tierctl: audit verify: unknown output format '" << options.output
        << "' (text or json)\n";
    return kExitUsage;
  }
  struct stat st {};
  if (options.dir.empty() || ::stat(options.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    err << "tierctl: audit verify: no such log directory '" << options.dir << "'\n";
    return kExitUsage;
  }
  const auto report = fl::verify_log(options.dir, options.pubkey);
  if (!report.error.empty()) {
    err << "tierctl: audit verify: " << report.error << "\n";
    return kExitUsage;
  }
  if (options.output == "json") {
    out << to_json(report).dump(2) << "\n";
  } else {
    print_text(report, out);
  }
  return report.ok ? kExitOk : kExitInvalid;
}

int audit_pubkey(const std::string& key_path, std::ostream& out, std::ostream& err) {
  std::string why;
  if (auto pub = fl::PublicKey::load(key_path + ".pub", &why)) {
    out << pub->pem();
    return kExitOk;
  }
  auto key = fl::SigningKey::load(key_path, &why);
  if (!key) {
    err << "tierctl: audit pubkey: " << why << "\n";
    return kExitUsage;
  }
  out << key->public_key().pem();
  return kExitOk;
}

flowquery::Verification report_verification(const std::string& dir,
                                            const std::optional<std::string>& pubkey) {
  flowquery::Verification v;
  const auto report = fl::verify_log(dir, pubkey);
  v.ran = report.error.empty();
  if (!v.ran) {
    v.message = report.error;
    return v;
  }
  v.ok = report.ok;
  v.message = std::to_string(report.records) + " records in " + std::to_string(report.files) +
              " file(s), " + std::to_string(report.checkpoints_verified) + "/" +
              std::to_string(report.checkpoints_total) + " checkpoints verified" +
              (pubkey ? " with the given public key" : " with the key named in the log");
  if (report.problem) {
    v.first_problem = report.problem->file + ":" + std::to_string(report.problem->line) + ": " +
                      std::string(fl::to_string(report.problem->kind)) + ": " +
                      report.problem->message;
  }
  return v;
}

}  // namespace tierwall::cli
