// The example policies as the kernel holds them: each is applied with
// NftBackend in a fresh network namespace and `nft list table inet tierwall`
// is compared with tests/golden/kernel/<example>.nft. Where
// tests/golden/<example>.nft pins what tierwall renders, these pin what
// the kernel accepted and what nft prints back (expression encoding, set
// flags, interval merging, priorities), so an encoding change shows up as a
// reviewable diff. Regenerate with TIERWALL_UPDATE_GOLDEN=1.
//
// Only what is not deterministic is normalised: counter values (the
// packets/bytes of named counters; no traffic flows here, but they are
// runtime state). Nothing else. Applying the same policy twice must give a
// byte-identical dump.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall::dataplane::nft {
namespace {

using testsupport::NetNs;

RuleSet compile_example(const std::string& name) {
  const std::string dir = std::string(TIERWALL_SOURCE_DIR) + "/policies/" + name;
  policy::Diagnostics diags;
  auto p = policy::load_policy({dir + "/policy"}, diags);
  auto inv = identity::load_inventory(dir + "/inventory.yaml", diags);
  if (!p || !inv || diags.has_errors()) {
    std::ostringstream out;
    diags.print(out);
    throw std::runtime_error("cannot load example " + name + ":\n" + out.str());
  }
  return compiler::compile(*p, *inv, 1, {*Cidr::parse("10.88.0.0/16"), *Cidr::parse("fd00::/64")});
}

// Counter values are runtime state: `packets N bytes M` -> 0.
std::string normalise(const std::string& dump) {
  static const std::regex kCounter("packets [0-9]+ bytes [0-9]+");
  return std::regex_replace(dump, kCounter, "packets 0 bytes 0");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The first line where two texts differ, for a readable failure.
std::string first_difference(const std::string& got, const std::string& want) {
  std::istringstream g(got);
  std::istringstream w(want);
  std::string gl;
  std::string wl;
  for (int line = 1;; ++line) {
    const bool more_g = static_cast<bool>(std::getline(g, gl));
    const bool more_w = static_cast<bool>(std::getline(w, wl));
    if (!more_g && !more_w) return "no difference";
    if (gl != wl || more_g != more_w)
      return "line " + std::to_string(line) + ":\n  kernel: " + (more_g ? gl : "<end>") +
             "\n  golden: " + (more_w ? wl : "<end>");
  }
}

// `ip netns exec NS nft list table inet tierwall`, read through a blocking
// pipe (popen). NetNs::run() is not used: its pipes are non-blocking on the
// child's side too, and nft drops output when a large listing fills one.
std::string listing(const NetNs& ns) {
  const std::string cmd = "ip netns exec " + ns.name() + " nft list table inet tierwall 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return "popen failed";
  std::string out;
  std::array<char, 65536> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(f);
  if (status != 0) out += "\n(exit status " + std::to_string(status) + ")";
  return out;
}

class NftGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (auto why = testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
  }
};

TEST_P(NftGoldenTest, KernelRulesetMatchesGoldenAndIsIdempotent) {
  const std::string name = GetParam();
  NetNs ns("golden");
  std::string first;
  std::string second;
  testsupport::in_netns(ns, [&] {
    auto opened = NftBackend::open(NftBackend::Config{});
    ASSERT_TRUE(std::holds_alternative<std::unique_ptr<NftBackend>>(opened))
        << std::get<std::string>(opened);
    NftBackend& backend = *std::get<std::unique_ptr<NftBackend>>(opened);
    const auto e1 = backend.apply(compile_example(name));
    ASSERT_FALSE(e1) << e1->message;
    first = listing(ns);
    // The same policy again, compiled afresh: the kernel must end up with
    // the very same table.
    const auto e2 = backend.apply(compile_example(name));
    ASSERT_FALSE(e2) << e2->message;
    second = listing(ns);
  });
  if (HasFatalFailure()) return;
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first, second) << "applying " << name
                           << " twice changed the dump: " << first_difference(second, first);

  const std::string golden_dir = std::string(TIERWALL_SOURCE_DIR) + "/tests/golden/kernel";
  const std::string golden = golden_dir + "/" + name + ".nft";
  const std::string got = normalise(first);
  if (std::getenv("TIERWALL_UPDATE_GOLDEN") != nullptr) {
    std::filesystem::create_directories(golden_dir);
    std::ofstream(golden, std::ios::binary) << got;
  }
  const std::string want = read_file(golden);
  ASSERT_FALSE(want.empty()) << "missing " << golden << " (run with TIERWALL_UPDATE_GOLDEN=1)";
  EXPECT_TRUE(got == want)
      << name << ": the kernel's ruleset differs from " << golden << " at "
      << first_difference(got, want)
      << "\n(if the change is intended, regenerate with TIERWALL_UPDATE_GOLDEN=1 and review "
         "the diff)";
}

INSTANTIATE_TEST_SUITE_P(Examples, NftGoldenTest,
                         ::testing::Values("nist-800-190", "dev-test-prod", "pci-cardholder"),
                         [](const ::testing::TestParamInfo<std::string>& example) {
                           std::string s = example.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace tierwall::dataplane::nft
