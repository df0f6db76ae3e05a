// libFuzzer harness for the flow-log verifier: arbitrary bytes as a log file.
//
// The input is written as the only file of a scratch log directory
// (flows-<time>.jsonl) and verify_log() runs over it, without and with a
// public key. Beyond "no crash, no leak, no UB" it checks (a violation
// traps): a report is either ok or names a problem, never both; a problem
// names a file and, for a log file, a line >= 1.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <unistd.h>

#include "tierwall/flowlog/keys.h"
#include "tierwall/flowlog/verify.h"

namespace {

namespace fl = tierwall::flowlog;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

struct Scratch {
  std::string dir;
  std::string file;
  std::string pub;
  Scratch() {
    std::string tmpl = "/tmp/flowlog-fuzz.XXXXXX";
    dir = ::mkdtemp(tmpl.data());
    file = dir + "/flows-20261125T170000.000000Z.jsonl";
    std::string err;
    const auto key = fl::SigningKey::load_or_create(dir + ".key", &err);
    check(key.has_value());
    pub = dir + ".key.pub";
  }
};

void check_report(const fl::VerifyReport& r) {
  if (!r.error.empty()) return;
  check(r.ok != r.problem.has_value());
  if (r.problem) {
    check(!r.problem->file.empty());
    check(r.problem->file == "head.json" || r.problem->line >= 1);
  }
  check(r.checkpoints_verified <= r.checkpoints_total);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Scratch scratch;
  {
    std::ofstream out(scratch.file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  check_report(fl::verify_log(scratch.dir, std::nullopt));
  check_report(fl::verify_log(scratch.dir, scratch.pub));
  return 0;
}
