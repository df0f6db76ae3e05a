// A temporary directory (mkdtemp under the system's temp directory) that
// is removed with everything in it when it goes out of scope, for tests
// and benchmarks that write configs, policies and logs.
//
// Thread contract: as a value; one owner. Throws std::runtime_error when
// the directory cannot be made.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

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
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  // Writes `text` to `name` below the directory (creating its parents);
  // returns the file's path.
  std::string write(const std::string& name, const std::string& text) const {
    const std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace tierwall::testsupport
