// Shell-style globs for image and name selectors: `*` any run of characters,
// `?` one character, `\` escapes the next character. Character classes are
// not supported (a `[` must be escaped) so that a selector means one thing.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tierwall::policy {

class Glob {
 public:
  static std::optional<Glob> compile(std::string_view pattern, std::string* error = nullptr);

  [[nodiscard]] bool matches(std::string_view text) const;
  [[nodiscard]] const std::string& pattern() const { return pattern_; }
  [[nodiscard]] bool is_literal() const { return literal_; }
  // The text a literal glob matches (escapes removed).
  [[nodiscard]] const std::string& literal() const { return unescaped_; }
  // True when every string this glob matches is also matched by `outer`
  // (conservative: may answer false for some true cases).
  [[nodiscard]] bool within(const Glob& outer) const;

  friend bool operator==(const Glob& a, const Glob& b) { return a.pattern_ == b.pattern_; }

 private:
  std::string pattern_;
  std::string unescaped_;
  bool literal_ = true;
};

}  // namespace tierwall::policy
