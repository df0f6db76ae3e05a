// The deployment files in docs/deploy are part of the product: the example
// configuration must load, and the systemd unit must be one systemd accepts
// and keep its privileges narrow.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tierwall/agent/config.h"

namespace {

const std::string kDeploy = std::string(TIERWALL_SOURCE_DIR) + "/docs/deploy";

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Deploy, ExampleConfigLoads) {
  tierwall::policy::Diagnostics diags;
  auto config = tierwall::agent::load_config(kDeploy + "/tierwalld.yaml", diags);
  std::ostringstream text;
  diags.print(text);
  ASSERT_TRUE(config.has_value()) << text.str();
  EXPECT_FALSE(diags.has_errors()) << text.str();
  EXPECT_EQ(config->container_cidrs.size(), 2U);
  EXPECT_EQ(config->nft.table, "tierwall");
}

// The commented-out dpdk section (container ports and an overlay uplink)
// is a valid configuration once uncommented.
TEST(Deploy, ExampleDpdkSectionLoads) {
  std::istringstream in(read(kDeploy + "/tierwalld.yaml"));
  std::string text;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# dpdk:", 0) == 0) inside = true;
    if (inside && line.rfind("# ", 0) != 0) inside = false;
    text += (inside ? line.substr(2) : line) + "\n";
  }
  tierwall::policy::Diagnostics diags;
  auto config = tierwall::agent::parse_config(text, kDeploy + "/tierwalld.yaml", diags);
  std::ostringstream out;
  diags.print(out);
  ASSERT_TRUE(config.has_value()) << out.str() << text;
  ASSERT_EQ(config->dpdk.ports.size(), 2U) << text;
  EXPECT_FALSE(config->dpdk.ports[0].overlay);
  ASSERT_TRUE(config->dpdk.ports[1].overlay);
  EXPECT_EQ(config->dpdk.ports[1].overlay->vni, 4242U);
  EXPECT_EQ(config->dpdk.ports[1].overlay->peers.size(), 1U);
}

TEST(Deploy, UnitKeepsPrivilegesNarrow) {
  const std::string unit = read(kDeploy + "/tierwalld.service");
  EXPECT_NE(unit.find("CapabilityBoundingSet=CAP_NET_ADMIN\n"), std::string::npos);
  EXPECT_NE(unit.find("NoNewPrivileges=yes"), std::string::npos);
  EXPECT_NE(unit.find("ProtectSystem=strict"), std::string::npos);
  EXPECT_NE(unit.find("ExecReload=/bin/kill -HUP $MAINPID"), std::string::npos);
  EXPECT_EQ(unit.find("CAP_SYS_ADMIN"), std::string::npos);
}

TEST(Deploy, SystemdAcceptsTheUnit) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "systemd-analyze is not installed";
  }
  // Verify a copy whose ExecStart points at an existing binary: the unit's
  // own path is where an operator installs tierwalld.
  const auto dir =
      std::filesystem::temp_directory_path() / ("tw-unit-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string unit = read(kDeploy + "/tierwalld.service");
  const std::string from = "/usr/local/bin/tierwalld";
  unit.replace(unit.find(from), from.size(), "/bin/true");
  std::ofstream(dir / "tierwalld.service") << unit;
  const std::string cmd =
      "systemd-analyze verify " + (dir / "tierwalld.service").string() + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = ::pclose(p);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out.find("Unknown"), std::string::npos) << out;
}

}  // namespace
