// Diagnostics in the format compilers use (FILE:LINE:COL: error: MESSAGE),
// so editors and CI annotate the right line.
#include "tierwall/policy/diagnostics.h"

#include <algorithm>
#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tierwall::policy {
namespace {

const std::string& unknown_file() {
  static const std::string name = "<input>";
  return name;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Levenshtein distance with adjacent transpositions counted as one edit
// (optimal string alignment): "confidental"/"confidential" is 1, and so is
// "tpc"/"tcp". Case-insensitive. O(|a|*|b|) time, O(|b|) memory.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t m = b.size();
  std::vector<std::size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (std::size_t j = 0; j <= m; ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
          lower(a[i - 2]) == lower(b[j - 1])) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

}  // namespace

const std::string& SourceLoc::file_name() const { return file ? *file : unknown_file(); }

std::string SourceLoc::to_string() const {
  std::string out = file_name();
  if (line > 0) {
    out += ':' + std::to_string(line);
    if (column > 0) out += ':' + std::to_string(column);
  }
  return out;
}

std::string Diagnostic::to_string() const {
  std::string out = loc.to_string();
  out += severity == Severity::Error ? ": error: " : ": warning: ";
  out += message;
  if (severity == Severity::Warning && !code.empty()) out += " [" + code + "]";
  return out;
}

void Diagnostics::error(const SourceLoc& loc, std::string message) {
  items_.push_back(Diagnostic{Severity::Error, loc, std::move(message), {}});
  ++errors_;
}

void Diagnostics::warning(const SourceLoc& loc, std::string code, std::string message) {
  items_.push_back(Diagnostic{Severity::Warning, loc, std::move(message), std::move(code)});
}

void Diagnostics::append(const Diagnostics& other) {
  items_.insert(items_.end(), other.items_.begin(), other.items_.end());
  errors_ += other.errors_;
}

std::vector<Diagnostic> Diagnostics::sorted() const {
  std::vector<Diagnostic> out = items_;
  std::stable_sort(out.begin(), out.end(), [](const Diagnostic& a, const Diagnostic& b) {
    const std::string& fa = a.loc.file_name();
    const std::string& fb = b.loc.file_name();
    if (fa != fb) return fa < fb;
    if (a.loc.line != b.loc.line) return a.loc.line < b.loc.line;
    return a.loc.column < b.loc.column;
  });
  return out;
}

void Diagnostics::print(std::ostream& out) const {
  for (const Diagnostic& d : sorted()) out << d.to_string() << '\n';
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  if (word.empty()) return "";
  const std::size_t threshold = std::max<std::size_t>(1, word.size() / 3);
  const std::string* best = nullptr;
  std::size_t best_distance = threshold + 1;
  for (const std::string& candidate : candidates) {
    const std::size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best = &candidate;
      best_distance = d;
    }
  }
  return best != nullptr ? *best : std::string();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string match = closest_match(word, candidates);
  if (match.empty()) return "";
  return " (did you mean '" + match + "'?)";
}

}  // namespace tierwall::policy
