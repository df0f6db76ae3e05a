// A temporary directory (mkdtemp under the system's temp directory) that
// is removed with everything in it when it goes out of scope (unless kept),
// for tests and benchmarks that write configs, policies and logs.
//
// Thread contract: as a value; one owner. Throws std::runtime_error when
// the directory cannot be made.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace tierwall::testsupport {

class TempDir {
 public:
  // `prefix`: the directory's name before the random suffix.
  explicit TempDir(const std::string& prefix = "tw-test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
    }
    path_ = tmpl;
  }
  ~TempDir() {
    if (keep_) {
      if (!who_.empty()) std::fprintf(stderr, "%s: kept %s\n", who_.c_str(), path_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  // The path of `name` below the directory.
  [[nodiscard]] std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Writes `text` to `name` below the directory (creating its parents);
  // returns the file's path.
  std::string write(const std::string& name, std::string_view text) const {
    const std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  // Appends `text` to `name` below the directory; returns the file's path.
  std::string append(const std::string& name, std::string_view text) const {
    const std::filesystem::path p = path_ / name;
    std::ofstream(p, std::ios::app) << text;
    return p.string();
  }
  // Leaves the directory and its files in place at destruction (a
  // benchmark's --keep), then saying "<who>: kept <path>" on stderr unless
  // `who` is empty.
  void keep(std::string who = {}) {
    keep_ = true;
    who_ = std::move(who);
  }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
  std::string who_;
};

}  // namespace tierwall::testsupport
