// Child processes with captured output and a hard timeout.
//
// posix_spawn rather than fork: tests are multi-threaded (echo servers), and
// a spawned child runs no code of ours between clone and exec.
#include <array>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "internal.h"

#include "tierwall/testsupport/netns.h"

extern char** environ;

namespace tierwall::testsupport {
namespace {

using Clock = std::chrono::steady_clock;

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Reads whatever is available without blocking; returns false at EOF/error.
bool drain(int fd, std::string& sink) {
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n > 0) {
      sink.append(buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

}  // namespace

std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789@%+=:,./_-") == std::string::npos) {
    return arg;
  }
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& arg : argv) {
    if (!line.empty()) line += ' ';
    line += shell_quote(arg);
  }
  return line;
}

pid_t spawn_argv(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd, int stderr_fd,
                 bool new_process_group) {
  if (argv.empty()) throw std::runtime_error("spawn: empty command");
  std::vector<std::string> args = argv;  // posix_spawn wants char* const[]
  std::vector<char*> cargv;
  cargv.reserve(args.size() + 1);
  for (std::string& arg : args) cargv.push_back(arg.data());
  cargv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (new_process_group) {
    flags = static_cast<short>(flags | POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  posix_spawnattr_setflags(&attr, flags);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);

  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, cargv[0], &actions, &attr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    throw std::runtime_error("cannot start `" + command_line(argv) + "`: " + std::strerror(rc));
  }
  return pid;
}

CommandResult run_argv(const std::vector<std::string>& argv, Millis timeout) {
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  Fd out_r(out_pipe[0]);
  Fd out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  Fd err_r(err_pipe[0]);
  Fd err_w(err_pipe[1]);
  // Only our read ends are non-blocking: a child whose stdout were
  // non-blocking could lose output when the pipe fills.
  for (int fd : {out_r.get(), err_r.get()}) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  Fd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_in.get() < 0)
    throw std::runtime_error(std::string("/dev/null: ") + std::strerror(errno));

  const pid_t pid = spawn_argv(argv, null_in.get(), out_w.get(), err_w.get(), false);
  out_w.reset();
  err_w.reset();

  CommandResult result;
  const auto deadline = Clock::now() + timeout;
  bool out_open = true;
  bool err_open = true;
  int status = 0;
  bool exited = false;
  while (!exited) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      exited = true;
      break;
    }
    if (Clock::now() >= deadline) break;
    // Short slices: a background grandchild may hold the pipes open after
    // the child itself has exited.
    std::array<pollfd, 2> fds{
        {{out_open ? out_r.get() : -1, POLLIN, 0}, {err_open ? err_r.get() : -1, POLLIN, 0}}};
    const int slice_ms = (out_open || err_open) ? 10 : 1;
    const int ready = ::poll(fds.data(), fds.size(), slice_ms);
    if (ready < 0 && errno != EINTR) break;
    if (out_open && fds[0].revents != 0) out_open = drain(out_r.get(), result.out);
    if (err_open && fds[1].revents != 0) err_open = drain(err_r.get(), result.err);
  }
  if (!exited) {
    result.timed_out = true;
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (out_open) drain(out_r.get(), result.out);
  if (err_open) drain(err_r.get(), result.err);
  result.exit_code = decode_status(status);
  return result;
}

CommandResult check_argv(const std::vector<std::string>& argv, Millis timeout) {
  CommandResult result = run_argv(argv, timeout);
  if (!result.ok()) throw_command_error(command_line(argv), result);
  return result;
}

[[noreturn]] void throw_command_error(const std::string& what, const CommandResult& result) {
  std::string message = "command failed (";
  message += result.timed_out ? "timed out" : "exit " + std::to_string(result.exit_code);
  message += "): " + what;
  std::string err = result.err;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  if (!err.empty()) message += "\n  stderr: " + err;
  throw std::runtime_error(message);
}

}  // namespace tierwall::testsupport
