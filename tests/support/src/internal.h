// Shared internals of tw_testsupport; not part of the test-facing API.
#pragma once

#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string shell_quote(const std::string& arg);
std::string command_line(const std::vector<std::string>& argv);

// posix_spawnp with the given stdio; SIGPIPE default and no blocked signals
// in the child; optionally its own process group. Throws if exec fails to
// start.
pid_t spawn_argv(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd, int stderr_fd,
                 bool new_process_group);

[[noreturn]] void throw_command_error(const std::string& what, const CommandResult& result);

// `ip -n NS ARGS...`, throwing on failure.
CommandResult ip_in(const NetNs& ns, const std::vector<std::string>& args);

}  // namespace tierwall::testsupport
