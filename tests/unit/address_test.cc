#include "tierwall/dataplane/address.h"

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace tierwall {
namespace {

// ---------------------------------------------------------------- IpAddress

struct RoundTrip {
  std::string input;
  std::string canonical;
  IpAddress::Family family;
};

class AddressRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

TEST_P(AddressRoundTrip, ParsesAndPrintsCanonically) {
  const RoundTrip& c = GetParam();
  const auto a = IpAddress::parse(c.input);
  ASSERT_TRUE(a.has_value()) << c.input;
  EXPECT_EQ(a->family, c.family) << c.input;
  EXPECT_EQ(a->to_string(), c.canonical) << c.input;
  // The canonical form parses back to the same value.
  const auto again = IpAddress::parse(c.canonical);
  ASSERT_TRUE(again.has_value()) << c.canonical;
  EXPECT_EQ(*again, *a);
}

constexpr auto kV4 = IpAddress::Family::V4;
constexpr auto kV6 = IpAddress::Family::V6;

INSTANTIATE_TEST_SUITE_P(
    Table, AddressRoundTrip,
    ::testing::Values(
        RoundTrip{"0.0.0.0", "0.0.0.0", kV4}, RoundTrip{"10.88.0.10", "10.88.0.10", kV4},
        RoundTrip{"255.255.255.255", "255.255.255.255", kV4},
        RoundTrip{"192.0.2.1", "192.0.2.1", kV4},
        // IPv6 compression (RFC 5952 section 4).
        RoundTrip{"::", "::", kV6}, RoundTrip{"::1", "::1", kV6}, RoundTrip{"1::", "1::", kV6},
        RoundTrip{"2001:db8::10", "2001:db8::10", kV6},
        RoundTrip{"2001:0DB8:0000:0000:0000:0000:0000:0010", "2001:db8::10", kV6},
        RoundTrip{"fd00::10", "fd00::10", kV6},
        // A single zero group is not compressed.
        RoundTrip{"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", kV6},
        // The longest run wins; on a tie the first one.
        RoundTrip{"2001:0:0:1:0:0:0:1", "2001:0:0:1::1", kV6},
        RoundTrip{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", kV6},
        RoundTrip{"1:0:0:0:0:0:0:0", "1::", kV6}, RoundTrip{"0:0:0:0:0:0:0:1", "::1", kV6},
        RoundTrip{"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8", kV6},
        RoundTrip{"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0", kV6},
        RoundTrip{"::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8", kV6},
        RoundTrip{"FE80::ABCD", "fe80::abcd", kV6}, RoundTrip{"0fe8::0001", "fe8::1", kV6},
        // IPv4-mapped (RFC 5952 section 5) and other embedded IPv4.
        RoundTrip{"::ffff:192.0.2.1", "::ffff:192.0.2.1", kV6},
        RoundTrip{"::FFFF:c000:0201", "::ffff:192.0.2.1", kV6},
        RoundTrip{"0:0:0:0:0:ffff:10.0.0.1", "::ffff:10.0.0.1", kV6},
        RoundTrip{"64:ff9b::192.0.2.33", "64:ff9b::c000:221", kV6},
        RoundTrip{"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304", kV6}));

class AddressRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(AddressRejects, Invalid) { EXPECT_FALSE(IpAddress::parse(GetParam()).has_value()); }

INSTANTIATE_TEST_SUITE_P(Table, AddressRejects,
                         ::testing::Values("", " ", "1", "1.2.3", "1.2.3.4.5", "1.2.3.256",
                                           "01.2.3.4", "1.2.3.04", "1..2.3", "1.2.3.4.", ".1.2.3",
                                           "1.2.3.-4", "1.2.3.4 ", "a.b.c.d", "1.2.3.1000", ":",
                                           ":::", "1:::2", "1::2::3", ":1::2",
                                           "1::2:", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
                                           "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
                                           "12345::", "g::1", "fe80::1%eth0", "[::1]", "::1.2.3",
                                           "::1.2.3.4:5", "1:2:3:4:5:6:7:1.2.3.4", "::01.2.3.4",
                                           "1:2:3:4:5:6:7:8:", "1.2.3.4/32"));

TEST(IpAddress, V4FromHostOrder) {
  const IpAddress a = IpAddress::v4(0xC0000201U);
  EXPECT_TRUE(a.is_v4());
  EXPECT_EQ(a.size(), 4U);
  EXPECT_EQ(a.to_string(), "192.0.2.1");
  EXPECT_EQ(a, *IpAddress::parse("192.0.2.1"));
  // The unused tail stays zero so comparison and hashing are total.
  for (std::size_t i = 4; i < a.bytes.size(); ++i) EXPECT_EQ(a.bytes[i], 0) << i;
}

TEST(IpAddress, OrderingAndFamilies) {
  const auto v4 = *IpAddress::parse("10.0.0.1");
  const auto v4b = *IpAddress::parse("10.0.0.2");
  const auto v6 = *IpAddress::parse("::a00:1");
  const auto mapped = *IpAddress::parse("::ffff:10.0.0.1");
  EXPECT_LT(v4, v4b);
  EXPECT_LT(v4, v6);      // family V4 sorts first
  EXPECT_NE(v4, mapped);  // a mapped address is an IPv6 value
  EXPECT_EQ(v6.size(), 16U);
  EXPECT_FALSE(v6.is_v4());
}

TEST(IpAddressHash, EqualValuesHashEqualAndSetsWork) {
  IpAddressHash h;
  EXPECT_EQ(h(*IpAddress::parse("2001:db8::1")), h(*IpAddress::parse("2001:DB8:0::0:1")));
  std::unordered_set<IpAddress, IpAddressHash> set;
  for (const char* s : {"10.0.0.1", "10.0.0.2", "::a00:1", "::ffff:10.0.0.1", "10.0.0.1"}) {
    set.insert(*IpAddress::parse(s));
  }
  EXPECT_EQ(set.size(), 4U);
  EXPECT_NE(h(*IpAddress::parse("10.0.0.1")), h(*IpAddress::parse("10.0.0.2")));
}

// --------------------------------------------------------------------- Cidr

struct CidrOk {
  std::string input;
  std::string canonical;
  unsigned prefix;
};

class CidrParses : public ::testing::TestWithParam<CidrOk> {};

TEST_P(CidrParses, Valid) {
  const CidrOk& c = GetParam();
  std::string error;
  const auto cidr = Cidr::parse(c.input, &error);
  ASSERT_TRUE(cidr.has_value()) << c.input << ": " << error;
  EXPECT_EQ(cidr->prefix, c.prefix);
  EXPECT_EQ(cidr->to_string(), c.canonical);
  EXPECT_EQ(Cidr::parse(c.canonical), cidr);
}

INSTANTIATE_TEST_SUITE_P(Table, CidrParses,
                         ::testing::Values(CidrOk{"10.0.0.0/8", "10.0.0.0/8", 8},
                                           CidrOk{"0.0.0.0/0", "0.0.0.0/0", 0},
                                           CidrOk{"::/0", "::/0", 0},
                                           CidrOk{"10.88.0.10", "10.88.0.10/32", 32},
                                           CidrOk{"10.88.0.10/32", "10.88.0.10/32", 32},
                                           CidrOk{"2001:db8::10", "2001:db8::10/128", 128},
                                           CidrOk{"2001:DB8::/32", "2001:db8::/32", 32},
                                           CidrOk{"192.168.1.128/25", "192.168.1.128/25", 25},
                                           CidrOk{"fd00::/8", "fd00::/8", 8},
                                           CidrOk{"2001:db8:8000::/33", "2001:db8:8000::/33", 33},
                                           CidrOk{"::ffff:0.0.0.0/96", "::ffff:0.0.0.0/96", 96}));

struct CidrBad {
  std::string input;
  std::string error;
};

class CidrRejects : public ::testing::TestWithParam<CidrBad> {};

TEST_P(CidrRejects, WithMessage) {
  const CidrBad& c = GetParam();
  std::string error;
  EXPECT_FALSE(Cidr::parse(c.input, &error).has_value()) << c.input;
  EXPECT_EQ(error, c.error) << c.input;
  // The error pointer is optional.
  EXPECT_FALSE(Cidr::parse(c.input).has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Table, CidrRejects,
    ::testing::Values(
        CidrBad{"10.0.0.1/8", "host bits set in 10.0.0.1/8 (did you mean 10.0.0.0/8?)"},
        CidrBad{"192.168.1.1/24", "host bits set in 192.168.1.1/24 (did you mean 192.168.1.0/24?)"},
        CidrBad{"10.0.0.0/0", "host bits set in 10.0.0.0/0 (did you mean 0.0.0.0/0?)"},
        CidrBad{"2001:db8::1/64", "host bits set in 2001:db8::1/64 (did you mean 2001:db8::/64?)"},
        CidrBad{"10.0.0.0/33", "prefix length 33 out of range for IPv4"},
        CidrBad{"::/129", "prefix length 129 out of range for IPv6"},
        CidrBad{"10.0.0.0/99999999999999999999",
                "prefix length 99999999999999999999 out of range for IPv4"},
        CidrBad{"10.0.0.0/", "invalid prefix length '' in CIDR '10.0.0.0/'"},
        CidrBad{"10.0.0.0/-1", "invalid prefix length '-1' in CIDR '10.0.0.0/-1'"},
        CidrBad{"10.0.0.0/8/8", "invalid prefix length '8/8' in CIDR '10.0.0.0/8/8'"},
        CidrBad{"10.0.0.0/ 8", "invalid prefix length ' 8' in CIDR '10.0.0.0/ 8'"},
        CidrBad{"10.0.0/8", "invalid IP address '10.0.0' in CIDR '10.0.0/8'"},
        CidrBad{"/8", "invalid IP address '' in CIDR '/8'"},
        CidrBad{"10.0.0.256", "invalid IP address '10.0.0.256'"}, CidrBad{"", "empty CIDR"}));

struct Containment {
  std::string cidr;
  std::string address;
  bool contained;
};

class CidrContains : public ::testing::TestWithParam<Containment> {};

TEST_P(CidrContains, Table) {
  const Containment& c = GetParam();
  const auto cidr = Cidr::parse(c.cidr);
  const auto addr = IpAddress::parse(c.address);
  ASSERT_TRUE(cidr && addr);
  EXPECT_EQ(cidr->contains(*addr), c.contained) << c.cidr << " ∋ " << c.address;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CidrContains,
    ::testing::Values(
        Containment{"10.0.0.0/8", "10.1.2.3", true}, Containment{"10.0.0.0/8", "11.0.0.0", false},
        Containment{"10.0.0.0/8", "9.255.255.255", false},
        Containment{"0.0.0.0/0", "203.0.113.9", true},
        Containment{"192.168.1.128/25", "192.168.1.127", false},
        Containment{"192.168.1.128/25", "192.168.1.255", true},
        Containment{"10.0.0.1", "10.0.0.1", true}, Containment{"10.0.0.1", "10.0.0.2", false},
        Containment{"::/0", "2001:db8::1", true}, Containment{"2001:db8::/32", "2001:db9::", false},
        Containment{"2001:db8:8000::/33", "2001:db8:7fff::", false},
        Containment{"2001:db8:8000::/33", "2001:db8:ffff::", true},
        // The family must match, even for /0.
        Containment{"0.0.0.0/0", "::1", false}, Containment{"::/0", "10.0.0.1", false},
        Containment{"::/0", "::ffff:10.0.0.1", true},
        Containment{"10.0.0.0/8", "::ffff:10.0.0.1", false}));

struct Coverage {
  std::string outer;
  std::string inner;
  bool covered;
};

class CidrCovers : public ::testing::TestWithParam<Coverage> {};

TEST_P(CidrCovers, Table) {
  const Coverage& c = GetParam();
  const auto outer = Cidr::parse(c.outer);
  const auto inner = Cidr::parse(c.inner);
  ASSERT_TRUE(outer && inner);
  EXPECT_EQ(outer->covers(*inner), c.covered) << c.outer << " ⊇ " << c.inner;
}

INSTANTIATE_TEST_SUITE_P(Table, CidrCovers,
                         ::testing::Values(Coverage{"10.0.0.0/8", "10.1.0.0/16", true},
                                           Coverage{"10.0.0.0/8", "10.0.0.0/8", true},
                                           Coverage{"10.1.0.0/16", "10.0.0.0/8", false},
                                           Coverage{"10.0.0.0/8", "11.0.0.0/16", false},
                                           Coverage{"0.0.0.0/0", "10.0.0.1", true},
                                           Coverage{"10.0.0.1", "10.0.0.1", true},
                                           Coverage{"::/0", "fd00::/8", true},
                                           Coverage{"fd00::/8", "::/0", false},
                                           Coverage{"0.0.0.0/0", "::/0", false},
                                           Coverage{"::/0", "0.0.0.0/0", false}));

TEST(Cidr, NullErrorPointerIsFine) {
  EXPECT_TRUE(Cidr::parse("10.0.0.0/8", nullptr).has_value());
  EXPECT_FALSE(Cidr::parse("10.0.0.1/8", nullptr).has_value());
}

TEST(Cidr, ErrorUntouchedOnSuccess) {
  std::string error = "unchanged";
  EXPECT_TRUE(Cidr::parse("10.0.0.0/8", &error).has_value());
  EXPECT_EQ(error, "unchanged");
}

TEST(Cidr, Ordering) {
  std::vector<Cidr> v{*Cidr::parse("10.0.0.0/16"), *Cidr::parse("10.0.0.0/8"),
                      *Cidr::parse("::/0")};
  EXPECT_LT(v[1], v[0]);
  EXPECT_LT(v[0], v[2]);
}

}  // namespace
}  // namespace tierwall
