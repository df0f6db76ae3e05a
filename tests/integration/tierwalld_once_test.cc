// `tierwalld --once` and `tierwalld --flush` as an operator runs them, in a
// network namespace of the test's own: the rules stay enforced after exit, an
// invalid policy changes nothing, and flush removes tierwall's table only.
#include <gtest/gtest.h>

#include "tierwall/testsupport/netns.h"

namespace {

using tierwall::testsupport::NetNs;

const std::string kRoot = TIERWALL_SOURCE_DIR;
const std::string kTierwalld = TIERWALLD_BINARY;

std::string once_cmd(const std::string& example) {
  const std::string dir = kRoot + "/policies/" + example;
  return kTierwalld + " --policy " + dir + "/policy --inventory " + dir +
         "/inventory.yaml --container-cidr 10.88.0.0/16 --container-cidr fd00::/64 --once";
}

class TierwalldOnce : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = tierwall::testsupport::netns_unavailable_reason()) GTEST_SKIP() << *why;
    ns_ = std::make_unique<NetNs>("once");
  }
  std::unique_ptr<NetNs> ns_;
};

TEST_F(TierwalldOnce, AppliesAndLeavesRulesEnforced) {
  ns_->check("nft add table inet other && nft add chain inet other keep");
  auto r = ns_->run(once_cmd("nist-800-190"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("applied policy nist-800-190-baseline"), std::string::npos) << r.out;
  const auto listing = ns_->check("nft list table inet tierwall").out;
  EXPECT_NE(listing.find("chain fwd4"), std::string::npos);
  EXPECT_NE(listing.find("hook forward priority filter - 10"), std::string::npos) << listing;
  EXPECT_EQ(ns_->check("cat /proc/sys/net/bridge/bridge-nf-call-iptables").out, "1\n");

  // Re-applying another policy replaces the table.
  r = ns_->run(once_cmd("pci-cardholder"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(ns_->check("nft list table inet tierwall").out, listing);
  EXPECT_EQ(ns_->run("nft list chain inet other keep").exit_code, 0);
}

TEST_F(TierwalldOnce, InvalidPolicyChangesNothing) {
  ASSERT_EQ(ns_->run(once_cmd("dev-test-prod")).exit_code, 0);
  const auto before = ns_->check("nft list table inet tierwall").out;
  const auto r =
      ns_->run(kTierwalld + " --policy " + kRoot + "/tests/data/bad/five-errors.yaml --once");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nothing was applied"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("five-errors.yaml:"), std::string::npos) << r.err;
  EXPECT_EQ(ns_->check("nft list table inet tierwall").out, before);
}

TEST_F(TierwalldOnce, FlushRemovesOnlyTierwallsTable) {
  ns_->check("nft add table inet other && nft add table ip nat && nft add table bridge br");
  ASSERT_EQ(ns_->run(once_cmd("nist-800-190")).exit_code, 0);
  auto r = ns_->run(kTierwalld + " --flush");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const auto tables = ns_->check("nft list tables").out;
  EXPECT_EQ(tables.find("tierwall"), std::string::npos) << tables;
  EXPECT_NE(tables.find("table inet other"), std::string::npos);
  EXPECT_NE(tables.find("table ip nat"), std::string::npos);
  EXPECT_NE(tables.find("table bridge br"), std::string::npos);
  // Flushing again is not an error.
  EXPECT_EQ(ns_->run(kTierwalld + " --flush").exit_code, 0);
}

TEST_F(TierwalldOnce, UsageErrors) {
  EXPECT_EQ(ns_->run(kTierwalld + " --bogus").exit_code, 2);
  EXPECT_EQ(ns_->run(kTierwalld + " --once").exit_code, 2);
  EXPECT_EQ(ns_->run(kTierwalld + " --policy x --once --container-cidr 10.0.0.1/8").exit_code, 2);
  EXPECT_EQ(ns_->run(kTierwalld + " --help").exit_code, 0);
}

}  // namespace
