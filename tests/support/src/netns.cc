#include "tierwall/testsupport/netns.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <mutex>
#include <ostream>
#include <sched.h>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "internal.h"

namespace tierwall::testsupport {
namespace {

constexpr const char* kNetnsDir = "/var/run/netns";
constexpr std::string_view kPrefix = "tw-";
constexpr std::string_view kDigits = "0123456789abcdefghijklmnopqrstuvwxyz";

std::string base36(unsigned long value) {
  std::string out;
  do {
    out.insert(out.begin(), kDigits[value % 36]);
    value /= 36;
  } while (value != 0);
  return out;
}

std::optional<unsigned long> parse_base36(std::string_view text) {
  if (text.empty() || text.size() > 8) return std::nullopt;
  unsigned long value = 0;
  for (char c : text) {
    const std::size_t digit = kDigits.find(c);
    if (digit == std::string_view::npos) return std::nullopt;
    value = value * 36 + digit;
  }
  return value;
}

// The pid encoded in a name made by this library ("tw-<pid>-<n>"), if any.
std::optional<pid_t> creator_pid(std::string_view name) {
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  const std::size_t dash = name.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto pid = parse_base36(name.substr(0, dash));
  if (!pid || !parse_base36(name.substr(dash + 1)) || *pid == 0 || *pid > 0x7fffffff) {
    return std::nullopt;
  }
  return static_cast<pid_t>(*pid);
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

std::string netns_path(const std::string& name) { return std::string(kNetnsDir) + "/" + name; }

// SIGKILLs every process (other than us) whose network namespace is `name`,
// as `ip netns pids` would find them. Threads of our own process that
// entered the namespace are the caller's responsibility.
void kill_namespace_processes(const std::string& name) {
  struct stat target {};
  if (::stat(netns_path(name).c_str(), &target) != 0) return;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return;
  const pid_t self = ::getpid();
  while (const dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || pid <= 0 || pid == self) continue;
    struct stat ns {};
    const std::string path = std::string("/proc/") + entry->d_name + "/ns/net";
    if (::stat(path.c_str(), &ns) != 0) continue;
    if (ns.st_dev == target.st_dev && ns.st_ino == target.st_ino) {
      ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
  }
  ::closedir(proc);
}

// Best effort: kill what runs inside, then unmount and remove the name.
CommandResult delete_namespace(const std::string& name) {
  kill_namespace_processes(name);
  return run_argv({"ip", "netns", "del", name});
}

// Runs once per process, before its first namespace.
void cleanup_stale_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      NetNs::cleanup_stale();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tw_testsupport: stale namespace cleanup failed: %s\n", e.what());
    }
  });
}

}  // namespace

std::optional<std::string> netns_unavailable_reason() {
  if (::geteuid() != 0) {
    return "needs root to create network namespaces (running as uid " +
           std::to_string(::geteuid()) + ")";
  }
  try {
    const CommandResult version = run_argv({"ip", "-V"}, Millis{5000});
    if (!version.ok()) return "`ip -V` failed: " + version.err;
  } catch (const std::exception& e) {
    return std::string("iproute2 `ip` is not usable: ") + e.what();
  }
  return std::nullopt;
}

NetNs::NetNs(std::string label) : label_(std::move(label)) {
  cleanup_stale_once();
  static std::atomic<unsigned long> counter{0};
  const std::string prefix = process_prefix();
  for (int attempt = 0;; ++attempt) {
    name_ = prefix + base36(counter.fetch_add(1));
    const CommandResult added = run_argv({"ip", "netns", "add", name_});
    if (added.ok()) break;
    // A namespace of a previous process with our (reused) pid: skip its name.
    if (attempt < 64 && added.err.find("exists") != std::string::npos) continue;
    throw_command_error("ip netns add " + name_, added);
  }
  try {
    check(
        "ip link set lo up"
        " && echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range"
        " && echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad"
        " && echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"
        " && echo 0 > /proc/sys/net/ipv4/icmp_ratemask"
        " && { [ ! -e /proc/sys/net/ipv6/icmp/ratemask ] || echo > "
        "/proc/sys/net/ipv6/icmp/ratemask; }");
  } catch (...) {
    delete_namespace(name_);
    throw;
  }
}

NetNs::~NetNs() {
  std::vector<pid_t> spawned;
  {
    std::lock_guard lock(mu_);
    spawned = spawned_;
  }
  for (pid_t pid : spawned) stop(pid, Millis{200});
  try {
    const CommandResult deleted = delete_namespace(name_);
    if (!deleted.ok()) {
      std::fprintf(stderr, "tw_testsupport: ip netns del %s failed: %s\n", name_.c_str(),
                   deleted.err.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tw_testsupport: ip netns del %s failed: %s\n", name_.c_str(), e.what());
  }
}

std::string NetNs::describe() const { return label_.empty() ? name_ : label_ + "(" + name_ + ")"; }

CommandResult NetNs::run(const std::string& cmd, Millis timeout) const {
  return run_argv({"ip", "netns", "exec", name_, "sh", "-c", cmd}, timeout);
}

CommandResult NetNs::check(const std::string& cmd, Millis timeout) const {
  CommandResult result = run(cmd, timeout);
  if (!result.ok()) throw_command_error("in netns " + describe() + ": " + cmd, result);
  return result;
}

pid_t NetNs::spawn(const std::string& cmd, const std::string& log_path) {
  Fd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  Fd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (null_in.get() < 0 || log.get() < 0) {
    throw std::runtime_error("spawn in " + describe() + ": cannot open " + log_path + ": " +
                             std::strerror(errno));
  }
  std::lock_guard lock(mu_);
  const pid_t pid = spawn_argv({"ip", "netns", "exec", name_, "sh", "-c", cmd}, null_in.get(),
                               log.get(), log.get(), true);
  spawned_.push_back(pid);
  return pid;
}

void NetNs::stop(pid_t pid, Millis grace) {
  {
    std::lock_guard lock(mu_);
    const auto it = std::find(spawned_.begin(), spawned_.end(), pid);
    if (it == spawned_.end()) return;
    spawned_.erase(it);
  }
  ::kill(-pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(Millis{5});
  }
  ::kill(-pid, SIGKILL);  // stragglers of the group
}

NetNs::Guard NetNs::enter() const { return Guard(name_); }

std::string NetNs::process_prefix() {
  return std::string(kPrefix) + base36(static_cast<unsigned long>(::getpid())) + "-";
}

std::vector<std::string> NetNs::list_test_namespaces() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(kNetnsDir);
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name.substr(0, kPrefix.size()) == kPrefix) names.emplace_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> NetNs::cleanup_stale() {
  std::vector<std::string> deleted;
  for (const std::string& name : list_test_namespaces()) {
    const auto pid = creator_pid(name);
    if (!pid || *pid == ::getpid() || process_alive(*pid)) continue;
    if (delete_namespace(name).ok()) deleted.push_back(name);
  }
  return deleted;
}

NetNs::Guard::Guard(const std::string& ns_name) : thread_(std::this_thread::get_id()) {
  Fd previous(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (previous.get() < 0) {
    throw std::runtime_error(std::string("open /proc/thread-self/ns/net: ") + std::strerror(errno));
  }
  const std::string path = netns_path(ns_name);
  Fd target(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) {
    throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  }
  if (::setns(target.get(), CLONE_NEWNET) != 0) {
    throw std::runtime_error("setns " + path + ": " + std::strerror(errno));
  }
  previous_fd_ = previous.release();
}

NetNs::Guard::~Guard() {
  if (std::this_thread::get_id() != thread_) {
    std::fprintf(stderr, "tw_testsupport: NetNs::Guard destroyed on another thread\n");
    std::abort();
  }
  if (::setns(previous_fd_, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "tw_testsupport: cannot return to the previous netns: %s\n",
                 std::strerror(errno));
    std::abort();
  }
  ::close(previous_fd_);
}

}  // namespace tierwall::testsupport
