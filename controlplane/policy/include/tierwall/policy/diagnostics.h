// Diagnostics with source locations: every problem in a policy or inventory
// is reported as FILE:LINE:COL: error|warning: MESSAGE, all at once.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace tierwall::policy {

struct SourceLoc {
  std::shared_ptr<const std::string> file;  // shared by every node of a file
  int line = 0;                             // 1-based; 0 when unknown
  int column = 0;                           // 1-based; 0 when unknown

  [[nodiscard]] const std::string& file_name() const;
  [[nodiscard]] std::string to_string() const;  // FILE:LINE:COL
};

enum class Severity { Error, Warning };

struct Diagnostic {
  Severity severity = Severity::Error;
  SourceLoc loc;
  std::string message;
  std::string code;  // lint id for warnings ("write-down"); empty for errors

  [[nodiscard]] std::string to_string() const;
};

class Diagnostics {
 public:
  void error(const SourceLoc& loc, std::string message);
  void warning(const SourceLoc& loc, std::string code, std::string message);

  [[nodiscard]] bool has_errors() const { return errors_ > 0; }
  [[nodiscard]] std::size_t error_count() const { return errors_; }
  [[nodiscard]] std::size_t warning_count() const { return items_.size() - errors_; }
  [[nodiscard]] const std::vector<Diagnostic>& items() const { return items_; }
  void append(const Diagnostics& other);

  // Sorted by file, line, column (stable for equal locations).
  [[nodiscard]] std::vector<Diagnostic> sorted() const;
  void print(std::ostream& out) const;

 private:
  std::vector<Diagnostic> items_;
  std::size_t errors_ = 0;
};

// "did you mean" helper: the candidate closest to `word` by edit distance,
// when it is close enough to be a plausible typo; empty otherwise.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace tierwall::policy
