#include "tierwall/dataplane/ports.h"

#include <cstdint>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace tierwall {
namespace {

struct PortOk {
  std::string input;
  PortMatch expected;
  std::string canonical;
};

class PortParses : public ::testing::TestWithParam<PortOk> {};

TEST_P(PortParses, ValueAndCanonicalSpelling) {
  const PortOk& c = GetParam();
  std::string error;
  const auto m = PortMatch::parse(c.input, &error);
  ASSERT_TRUE(m.has_value()) << c.input << ": " << error;
  EXPECT_EQ(*m, c.expected) << c.input;
  EXPECT_EQ(m->to_string(), c.canonical) << c.input;
  // to_string is the inverse of parse.
  EXPECT_EQ(PortMatch::parse(c.canonical), m) << c.canonical;
}

constexpr std::uint8_t kTcp = proto::kTcp;
constexpr std::uint8_t kUdp = proto::kUdp;
constexpr std::uint8_t kSctp = proto::kSctp;
constexpr std::uint8_t kIcmp = proto::kIcmp;
constexpr std::uint8_t kIcmp6 = proto::kIcmpv6;

INSTANTIATE_TEST_SUITE_P(
    Table, PortParses,
    ::testing::Values(
        PortOk{"any", PortMatch::any_port(), "any"},
        PortOk{"tcp/80", {false, kTcp, 80, 80}, "tcp/80"},
        PortOk{"tcp/1", {false, kTcp, 1, 1}, "tcp/1"},
        PortOk{"tcp/65535", {false, kTcp, 65535, 65535}, "tcp/65535"},
        PortOk{"tcp/1000-2000", {false, kTcp, 1000, 2000}, "tcp/1000-2000"},
        PortOk{"tcp/1-65535", {false, kTcp, 1, 65535}, "tcp/1-65535"},
        PortOk{"tcp/443-443", {false, kTcp, 443, 443}, "tcp/443"},
        PortOk{"tcp/0080", {false, kTcp, 80, 80}, "tcp/80"},
        PortOk{"udp/53", {false, kUdp, 53, 53}, "udp/53"},
        PortOk{"udp/30000-32767", {false, kUdp, 30000, 32767}, "udp/30000-32767"},
        PortOk{"sctp/3868", {false, kSctp, 3868, 3868}, "sctp/3868"},
        PortOk{"icmp", {false, kIcmp, 0, 255}, "icmp"},
        PortOk{"icmp/echo-request", {false, kIcmp, 8, 8}, "icmp/echo-request"},
        PortOk{"icmp/8", {false, kIcmp, 8, 8}, "icmp/echo-request"},
        PortOk{"icmp/0", {false, kIcmp, 0, 0}, "icmp/echo-reply"},
        PortOk{"icmp/255", {false, kIcmp, 255, 255}, "icmp/255"},
        PortOk{"icmp/42", {false, kIcmp, 42, 42}, "icmp/42"},
        PortOk{
            "icmp/destination-unreachable", {false, kIcmp, 3, 3}, "icmp/destination-unreachable"},
        PortOk{"icmpv6", {false, kIcmp6, 0, 255}, "icmpv6"},
        PortOk{"icmpv6/echo-request", {false, kIcmp6, 128, 128}, "icmpv6/echo-request"},
        PortOk{"icmpv6/135", {false, kIcmp6, 135, 135}, "icmpv6/nd-neighbor-solicit"},
        PortOk{"icmpv6/packet-too-big", {false, kIcmp6, 2, 2}, "icmpv6/packet-too-big"},
        PortOk{"icmpv6/8", {false, kIcmp6, 8, 8}, "icmpv6/8"}));

struct PortBad {
  std::string input;
  std::string error;
};

class PortRejects : public ::testing::TestWithParam<PortBad> {};

TEST_P(PortRejects, WithMessage) {
  const PortBad& c = GetParam();
  std::string error;
  EXPECT_FALSE(PortMatch::parse(c.input, &error).has_value()) << c.input;
  EXPECT_EQ(error, c.error) << c.input;
  EXPECT_FALSE(PortMatch::parse(c.input).has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Table, PortRejects,
    ::testing::Values(
        PortBad{"tpc/80", "unknown protocol 'tpc' (did you mean 'tcp'?)"},
        PortBad{"upd/53", "unknown protocol 'upd' (did you mean 'udp'?)"},
        PortBad{"icpm", "unknown protocol 'icpm' (did you mean 'icmp'?)"},
        PortBad{"http/80", "unknown protocol 'http'"},
        PortBad{"TCP/80", "unknown protocol 'TCP' (did you mean 'tcp'?)"},
        PortBad{"Any", "unknown protocol 'Any' (did you mean 'any'?)"},
        PortBad{"", "empty port specification"}, PortBad{"/80", "missing protocol in '/80'"},
        PortBad{"tcp/70000", "port 70000 out of range 1-65535"},
        PortBad{"tcp/65536", "port 65536 out of range 1-65535"},
        PortBad{"tcp/0", "port 0 out of range 1-65535"},
        PortBad{"udp/0-100", "port 0 out of range 1-65535"},
        PortBad{"tcp/1-70000", "port 70000 out of range 1-65535"},
        PortBad{"tcp/99999999999999999999999", "port 99999999999999999999999 out of range 1-65535"},
        PortBad{"tcp/2000-1000", "port range 2000-1000 is reversed (did you mean 1000-2000?)"},
        PortBad{"tcp", "'tcp' needs a port or range (e.g. 'tcp/443' or 'tcp/1024-65535')"},
        PortBad{"tcp/", "missing port in 'tcp/'"}, PortBad{"tcp/80-", "missing port in 'tcp/80-'"},
        PortBad{"tcp/-80", "missing port in 'tcp/-80'"},
        PortBad{"tcp/http", "invalid port 'http' in 'tcp/http' (expected a number 1-65535)"},
        PortBad{"tcp/+80", "invalid port '+80' in 'tcp/+80' (expected a number 1-65535)"},
        PortBad{"tcp/ 80", "invalid port ' 80' in 'tcp/ 80' (expected a number 1-65535)"},
        PortBad{"tcp/80-90-100",
                "invalid port '90-100' in 'tcp/80-90-100' (expected a number 1-65535)"},
        PortBad{"any/80", "'any' takes no port or type (write 'any', or e.g. 'tcp/80')"},
        PortBad{"icmp/echo-reqest",
                "unknown icmp type 'echo-reqest' (did you mean 'echo-request'?)"},
        PortBad{"icmp/Echo-Request",
                "unknown icmp type 'Echo-Request' (did you mean 'echo-request'?)"},
        PortBad{"icmp/nd-neighbor-solicit", "unknown icmp type 'nd-neighbor-solicit'"},
        PortBad{"icmpv6/router-advertisement", "unknown icmpv6 type 'router-advertisement'"},
        PortBad{"icmpv6/nd-router-advertisement",
                "unknown icmpv6 type 'nd-router-advertisement' (did you mean 'nd-router-advert'?)"},
        PortBad{"icmp/256", "icmp type 256 out of range 0-255"},
        PortBad{"icmpv6/1000", "icmpv6 type 1000 out of range 0-255"},
        PortBad{"icmp/", "missing icmp type after 'icmp/'"},
        PortBad{"icmp/-1", "unknown icmp type '-1'"}));

// Every name in the nft tables, both ways.
struct IcmpName {
  std::uint8_t protocol;
  std::string name;
  std::uint8_t type;
};

class IcmpNames : public ::testing::TestWithParam<IcmpName> {};

TEST_P(IcmpNames, BothWays) {
  const IcmpName& c = GetParam();
  EXPECT_EQ(icmp_type_from_name(c.protocol, c.name), c.type) << c.name;
  EXPECT_EQ(icmp_type_name(c.protocol, c.type), c.name) << int{c.type};
}

INSTANTIATE_TEST_SUITE_P(
    Icmp, IcmpNames,
    ::testing::Values(
        IcmpName{kIcmp, "echo-reply", 0}, IcmpName{kIcmp, "destination-unreachable", 3},
        IcmpName{kIcmp, "source-quench", 4}, IcmpName{kIcmp, "redirect", 5},
        IcmpName{kIcmp, "echo-request", 8}, IcmpName{kIcmp, "router-advertisement", 9},
        IcmpName{kIcmp, "router-solicitation", 10}, IcmpName{kIcmp, "time-exceeded", 11},
        IcmpName{kIcmp, "parameter-problem", 12}, IcmpName{kIcmp, "timestamp-request", 13},
        IcmpName{kIcmp, "timestamp-reply", 14}, IcmpName{kIcmp, "info-request", 15},
        IcmpName{kIcmp, "info-reply", 16}, IcmpName{kIcmp, "address-mask-request", 17},
        IcmpName{kIcmp, "address-mask-reply", 18}));

INSTANTIATE_TEST_SUITE_P(
    Icmpv6, IcmpNames,
    ::testing::Values(
        IcmpName{kIcmp6, "destination-unreachable", 1}, IcmpName{kIcmp6, "packet-too-big", 2},
        IcmpName{kIcmp6, "time-exceeded", 3}, IcmpName{kIcmp6, "parameter-problem", 4},
        IcmpName{kIcmp6, "echo-request", 128}, IcmpName{kIcmp6, "echo-reply", 129},
        IcmpName{kIcmp6, "mld-listener-query", 130}, IcmpName{kIcmp6, "mld-listener-report", 131},
        IcmpName{kIcmp6, "mld-listener-done", 132}, IcmpName{kIcmp6, "nd-router-solicit", 133},
        IcmpName{kIcmp6, "nd-router-advert", 134}, IcmpName{kIcmp6, "nd-neighbor-solicit", 135},
        IcmpName{kIcmp6, "nd-neighbor-advert", 136}, IcmpName{kIcmp6, "nd-redirect", 137},
        IcmpName{kIcmp6, "mld2-listener-report", 143}));

TEST(IcmpNames, UnknownAndWrongProtocol) {
  EXPECT_EQ(icmp_type_from_name(kIcmp, "ECHO-REQUEST"), std::nullopt);
  EXPECT_EQ(icmp_type_from_name(kTcp, "echo-request"), std::nullopt);
  EXPECT_EQ(icmp_type_from_name(kIcmp, ""), std::nullopt);
  EXPECT_EQ(icmp_type_name(kIcmp, 1), std::nullopt);
  EXPECT_EQ(icmp_type_name(kIcmp6, 0), std::nullopt);
  EXPECT_EQ(icmp_type_name(kUdp, 8), std::nullopt);
}

TEST(ProtocolName, KnownAndNumeric) {
  EXPECT_EQ(protocol_name(kTcp), "tcp");
  EXPECT_EQ(protocol_name(kUdp), "udp");
  EXPECT_EQ(protocol_name(kSctp), "sctp");
  EXPECT_EQ(protocol_name(kIcmp), "icmp");
  EXPECT_EQ(protocol_name(kIcmp6), "icmpv6");
  EXPECT_EQ(protocol_name(47), "47");
  EXPECT_EQ(protocol_name(0), "0");
}

struct Within {
  std::string inner;
  std::string outer;
  bool within;
};

class PortWithin : public ::testing::TestWithParam<Within> {};

TEST_P(PortWithin, Table) {
  const Within& c = GetParam();
  const auto inner = PortMatch::parse(c.inner);
  const auto outer = PortMatch::parse(c.outer);
  ASSERT_TRUE(inner && outer);
  EXPECT_EQ(inner->within(*outer), c.within) << c.inner << " within " << c.outer;
}

INSTANTIATE_TEST_SUITE_P(
    Table, PortWithin,
    ::testing::Values(
        Within{"tcp/80", "any", true}, Within{"any", "any", true},
        Within{"any", "tcp/1-65535", false}, Within{"tcp/80", "tcp/80", true},
        Within{"tcp/80", "tcp/1-1024", true}, Within{"tcp/1000-2000", "tcp/1000-2000", true},
        Within{"tcp/1000-2001", "tcp/1000-2000", false},
        Within{"tcp/999-2000", "tcp/1000-2000", false}, Within{"tcp/1-1024", "tcp/80", false},
        Within{"udp/53", "tcp/53", false}, Within{"icmp/echo-request", "icmp", true},
        Within{"icmp", "icmp/echo-request", false}, Within{"icmpv6/echo-request", "icmp", false},
        Within{"icmp/8", "icmpv6/8", false}));

TEST(PortMatch, Matches) {
  const auto range = *PortMatch::parse("tcp/1000-2000");
  EXPECT_TRUE(range.matches(kTcp, 1000));
  EXPECT_TRUE(range.matches(kTcp, 2000));
  EXPECT_FALSE(range.matches(kTcp, 999));
  EXPECT_FALSE(range.matches(kTcp, 2001));
  EXPECT_FALSE(range.matches(kUdp, 1500));
  EXPECT_TRUE(PortMatch::any_port().matches(kUdp, 7));
  EXPECT_TRUE(PortMatch::any_port().matches(47, 0));
  const auto echo = *PortMatch::parse("icmp/echo-request");
  EXPECT_TRUE(echo.is_icmp());
  EXPECT_TRUE(echo.matches(kIcmp, 8));
  EXPECT_FALSE(echo.matches(kIcmp, 0));
  EXPECT_FALSE(range.is_icmp());
}

TEST(PortMatch, ErrorUntouchedOnSuccess) {
  std::string error = "unchanged";
  EXPECT_TRUE(PortMatch::parse("tcp/80", &error).has_value());
  EXPECT_EQ(error, "unchanged");
}

}  // namespace
}  // namespace tierwall
