#include "tierwall/policy/glob.h"

#include <chrono>
#include <string>

#include <gtest/gtest.h>

namespace tierwall::policy {
namespace {

struct MatchCase {
  std::string pattern;
  std::string text;
  bool matches;
};

class GlobMatches : public ::testing::TestWithParam<MatchCase> {};

TEST_P(GlobMatches, Table) {
  const MatchCase& c = GetParam();
  std::string error;
  const auto glob = Glob::compile(c.pattern, &error);
  ASSERT_TRUE(glob.has_value()) << c.pattern << ": " << error;
  EXPECT_EQ(glob->matches(c.text), c.matches) << "'" << c.pattern << "' vs '" << c.text << "'";
}

INSTANTIATE_TEST_SUITE_P(
    Table, GlobMatches,
    ::testing::Values(
        // Literals.
        MatchCase{"web-1", "web-1", true}, MatchCase{"web-1", "web-10", false},
        MatchCase{"web-1", "Web-1", false}, MatchCase{"web-1", "", false},
        // `*`.
        MatchCase{"*", "", true}, MatchCase{"*", "anything at all", true},
        MatchCase{"**", "x", true}, MatchCase{"web-*", "web-", true},
        MatchCase{"web-*", "web-123", true}, MatchCase{"web-*", "api-1", false},
        MatchCase{"*-db", "payments-db", true}, MatchCase{"*-db", "payments-db-1", false},
        MatchCase{"reg.example/pay/*", "reg.example/pay/db:15", true},
        MatchCase{"reg.example/pay/*", "reg.example/payroll/db:15", false},
        MatchCase{"*/shop/*:1.*", "reg.example/shop/web:1.4", true},
        MatchCase{"*/shop/*:1.*", "reg.example/shop/web:2.0", false},
        MatchCase{"a*b*c", "abc", true}, MatchCase{"a*b*c", "aXbYc", true},
        MatchCase{"a*b*c", "acb", false}, MatchCase{"a*b", "abab", true},
        MatchCase{"a*b", "abba", false}, MatchCase{"*aa", "aaa", true},
        // `?` is exactly one character.
        MatchCase{"web-?", "web-1", true}, MatchCase{"web-?", "web-", false},
        MatchCase{"web-?", "web-12", false}, MatchCase{"?*", "", false}, MatchCase{"?*", "x", true},
        MatchCase{"*?", "xy", true},
        // Escapes make the next character literal.
        MatchCase{"a\\*b", "a*b", true}, MatchCase{"a\\*b", "aXb", false},
        MatchCase{"a\\?", "a?", true}, MatchCase{"a\\?", "ab", false},
        MatchCase{"a\\\\b", "a\\b", true}, MatchCase{"\\[x\\]", "[x]", true},
        MatchCase{"\\a", "a", true}, MatchCase{"*\\*", "foo*", true},
        MatchCase{"*\\*", "foo", false}, MatchCase{"x*\\?", "xyz?", true},
        // Digest references.
        MatchCase{"reg.example/pay/db@sha256:*", "reg.example/pay/db@sha256:abc", true}));

struct CompileError {
  std::string pattern;
  std::string error;
};

class GlobRejects : public ::testing::TestWithParam<CompileError> {};

TEST_P(GlobRejects, WithMessage) {
  const CompileError& c = GetParam();
  std::string error;
  EXPECT_FALSE(Glob::compile(c.pattern, &error).has_value()) << c.pattern;
  EXPECT_EQ(error, c.error);
  EXPECT_FALSE(Glob::compile(c.pattern).has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Table, GlobRejects,
    ::testing::Values(
        CompileError{"", "empty glob pattern"},
        CompileError{"web\\", "trailing '\\' in glob 'web\\' (escape a backslash as '\\\\')"},
        CompileError{"\\", "trailing '\\' in glob '\\' (escape a backslash as '\\\\')"},
        CompileError{"web-[0-9]", "character classes are not supported; escape '[' as '\\['"},
        CompileError{"[", "character classes are not supported; escape '[' as '\\['"},
        CompileError{"web]", "character classes are not supported; escape ']' as '\\]'"},
        CompileError{"\\[a]", "character classes are not supported; escape ']' as '\\]'"}));

TEST(Glob, LiteralAndPattern) {
  const auto lit = Glob::compile("reg.example/web\\*:1");
  ASSERT_TRUE(lit);
  EXPECT_TRUE(lit->is_literal());
  EXPECT_EQ(lit->literal(), "reg.example/web*:1");
  EXPECT_EQ(lit->pattern(), "reg.example/web\\*:1");

  const auto wild = Glob::compile("web-*");
  ASSERT_TRUE(wild);
  EXPECT_FALSE(wild->is_literal());
  EXPECT_EQ(wild->pattern(), "web-*");
  EXPECT_FALSE(Glob::compile("?")->is_literal());
}

TEST(Glob, EqualityIsByPattern) {
  EXPECT_EQ(*Glob::compile("a*"), *Glob::compile("a*"));
  EXPECT_FALSE(*Glob::compile("a*") == *Glob::compile("a**"));
}

TEST(Glob, PathologicalPatternIsFast) {
  // Exponential for a naive recursive matcher; O(n*m) here.
  std::string pattern;
  for (int i = 0; i < 40; ++i) pattern += "a*";
  pattern += "b";
  const std::string text(5000, 'a');
  const auto glob = Glob::compile(pattern);
  ASSERT_TRUE(glob);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(glob->matches(text));
  EXPECT_TRUE(glob->matches(text + "b"));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  // Generous bound for sanitizer builds on a loaded 2-core machine.
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

struct WithinCase {
  std::string inner;
  std::string outer;
  bool within;
};

class GlobWithin : public ::testing::TestWithParam<WithinCase> {};

TEST_P(GlobWithin, Table) {
  const WithinCase& c = GetParam();
  const auto inner = Glob::compile(c.inner);
  const auto outer = Glob::compile(c.outer);
  ASSERT_TRUE(inner && outer);
  EXPECT_EQ(inner->within(*outer), c.within) << "'" << c.inner << "' within '" << c.outer << "'";
}

INSTANTIATE_TEST_SUITE_P(Table, GlobWithin,
                         ::testing::Values(
                             // Equal patterns.
                             WithinCase{"web-*", "web-*", true}, WithinCase{"web-1", "web-1", true},
                             // `*` covers everything.
                             WithinCase{"a?b*", "*", true}, WithinCase{"x", "*", true},
                             // A literal inside any glob that matches it.
                             WithinCase{"web-1", "web-?", true}, WithinCase{"web-1", "*-1", true},
                             WithinCase{"web-1", "api-*", false}, WithinCase{"a\\*b", "a?b", true},
                             // PREFIX* covers anything whose literal prefix starts with PREFIX.
                             WithinCase{"reg.example/pay/db:*", "reg.example/pay/*", true},
                             WithinCase{"reg.example/pay/*", "reg.example/*", true},
                             WithinCase{"reg.example/pay?", "reg.example/pay*", true},
                             WithinCase{"reg.example/*", "reg.example/pay/*", false},
                             WithinCase{"reg.*", "reg.example/*", false},
                             WithinCase{"a\\*b*", "a\\**", true},
                             WithinCase{"a*b*", "a\\**", false},
                             // Conservative: true in fact, but not recognised.
                             WithinCase{"web-??", "web-*?", false}, WithinCase{"a*b", "*b", false},
                             // Not contained.
                             WithinCase{"*", "web-*", false}, WithinCase{"web-*", "web-?", false}));

}  // namespace
}  // namespace tierwall::policy
