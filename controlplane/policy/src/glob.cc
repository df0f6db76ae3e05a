// Globs for image and name selectors. Matching is the classic iterative
// two-pointer algorithm that remembers only the last `*`: O(|pattern| *
// |text|) in the worst case, constant extra memory, no recursion, so a
// hostile pattern such as "*a*a*a*a*b" cannot blow up. `?` matches one
// byte (image references and container names are ASCII).
#include "tierwall/policy/glob.h"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace tierwall::policy {
namespace {

constexpr std::size_t npos = std::string_view::npos;

// The literal text before the first unescaped wildcard (escapes removed),
// and where in the pattern that wildcard is.
struct LiteralPrefix {
  std::string text;
  std::size_t end = 0;  // index in the pattern of the first wildcard, or size
};

LiteralPrefix literal_prefix(std::string_view pattern) {
  LiteralPrefix out;
  std::size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '*' || c == '?') break;
    if (c == '\\' && i + 1 < pattern.size()) {
      out.text.push_back(pattern[i + 1]);
      i += 2;
    } else {
      out.text.push_back(c);
      ++i;
    }
  }
  out.end = i;
  return out;
}

void set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
}

}  // namespace

std::optional<Glob> Glob::compile(std::string_view pattern, std::string* error) {
  if (pattern.empty()) {
    set_error(error, "empty glob pattern");
    return std::nullopt;
  }
  Glob glob;
  glob.pattern_ = std::string(pattern);
  std::string unescaped;
  bool literal = true;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    switch (c) {
      case '\\':
        if (i + 1 == pattern.size()) {
          set_error(error, "trailing '\\' in glob '" + std::string(pattern) +
                               "' (escape a backslash as '\\\\')");
          return std::nullopt;
        }
        unescaped.push_back(pattern[++i]);
        break;
      case '[':
      case ']':
        set_error(error, std::string("character classes are not supported; escape '") + c +
                             "' as '\\" + c + "'");
        return std::nullopt;
      case '*':
      case '?':
        literal = false;
        unescaped.push_back(c);
        break;
      default:
        unescaped.push_back(c);
        break;
    }
  }
  glob.literal_ = literal;
  // Only meaningful for a literal glob; empty otherwise so that nobody
  // mistakes a pattern for the text it matches.
  if (literal) glob.unescaped_ = std::move(unescaped);
  return glob;
}

bool Glob::matches(std::string_view text) const {
  if (literal_) return text == unescaped_;

  const std::string_view p = pattern_;
  std::size_t pi = 0;
  std::size_t ti = 0;
  std::size_t star_pi = npos;  // pattern index just after the last `*`
  std::size_t star_ti = 0;     // text index that `*` was last tried to end at

  while (ti < text.size()) {
    if (pi < p.size()) {
      const char c = p[pi];
      if (c == '*') {
        star_pi = ++pi;
        star_ti = ti;
        continue;
      }
      if (c == '?') {
        ++pi;
        ++ti;
        continue;
      }
      const bool escaped = c == '\\';  // compile() guarantees a next character
      const char want = escaped ? p[pi + 1] : c;
      if (want == text[ti]) {
        pi += escaped ? 2 : 1;
        ++ti;
        continue;
      }
    }
    if (star_pi == npos) return false;
    // Let the last `*` swallow one more character and retry from there.
    pi = star_pi;
    ti = ++star_ti;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool Glob::within(const Glob& outer) const {
  if (pattern_ == outer.pattern_) return true;
  if (outer.pattern_ == "*") return true;
  if (literal_) return outer.matches(unescaped_);

  // outer = PREFIX* with no wildcard in PREFIX: everything this matches
  // starts with this glob's own literal prefix, so check that one.
  const LiteralPrefix outer_prefix = literal_prefix(outer.pattern_);
  if (outer_prefix.end + 1 != outer.pattern_.size() || outer.pattern_.back() != '*') {
    return false;
  }
  const LiteralPrefix inner_prefix = literal_prefix(pattern_);
  return std::string_view(inner_prefix.text).starts_with(outer_prefix.text);
}

}  // namespace tierwall::policy
