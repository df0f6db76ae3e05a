// Shared pieces of the DPDK root tests: the fixture that skips (or fails,
// under CI) without network namespaces and brings up the EAL, and a policy
// compiled straight into a classifier Generation.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/common/compile.h"
#include <gtest/gtest.h>

#include "tierwall/dataplane/dpdk/classify.h"
#include "tierwall/dataplane/dpdk/eal.h"
#include "tierwall/testsupport/netns.h"

namespace tierwall::testkit {

// Namespaces and af_packet ports need root: skipped without them, failed
// under CI (where they must run). The EAL is initialised once per process.
class DpdkNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = testsupport::netns_unavailable_reason()) {
      if (std::getenv("CI") != nullptr) FAIL() << *why;
      GTEST_SKIP() << *why;
    }
    const std::string err = dataplane::dpdk::Eal::init(dataplane::dpdk::Eal::default_args());
    ASSERT_TRUE(err.empty()) << err;
  }
};

// compile_yaml, then build_generation: the Generation, or null after a test
// failure naming what went wrong.
inline std::unique_ptr<const dataplane::dpdk::Generation> dpdk_generation(
    std::string_view policy_yaml, std::string_view inventory_yaml, std::uint64_t generation,
    std::vector<Cidr> container_cidrs) {
  const auto rules =
      compile_yaml(policy_yaml, inventory_yaml, generation, std::move(container_cidrs));
  if (!rules) return nullptr;
  auto built = dataplane::dpdk::build_generation(*rules);
  if (!built.generation) ADD_FAILURE() << built.error;
  return std::move(built.generation);
}

}  // namespace tierwall::testkit
