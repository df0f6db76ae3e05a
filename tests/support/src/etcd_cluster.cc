// Real etcd members for tests; see etcd_cluster.h.
#include "tierwall/testsupport/etcd_cluster.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "internal.h"

#include "tierwall/testsupport/podman.h"

namespace tierwall::testsupport {

namespace fs = std::filesystem;

namespace {

bool on_path(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

std::optional<std::string> EtcdCluster::unavailable_reason() {
  for (const char* tool : {"etcd", "etcdctl", "setpriv"}) {
    if (!on_path(tool)) {
      return std::string(tool) +
             " is not installed (Debian: etcd-server, etcd-client; "
             "scripts/install-deps.sh)";
    }
  }
  return std::nullopt;
}

EtcdCluster::EtcdCluster(EtcdClusterOptions options) : options_(options) {
  if (options_.members != 1 && options_.members != 3) {
    throw std::invalid_argument("EtcdCluster: 1 or 3 members");
  }
  if (auto why = unavailable_reason()) throw std::runtime_error(*why);
  char tmpl[] = "/tmp/tw-etcd-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  dir_ = tmpl;
  write_file(dir_ / "owner", std::to_string(::getpid()) + "\n");
  remove_stale();
  try {
    if (options_.tls) make_certificates();
    // A port that was free a moment ago may be taken by the time etcd binds
    // it: start again on new ports, a few times.
    for (int attempt = 1;; ++attempt) {
      members_.clear();
      std::set<int> ports;
      for (int i = 0; i < options_.members; ++i) {
        Member m;
        m.name = "m" + std::to_string(i);
        for (int* p : {&m.client_port, &m.peer_port}) {
          do {
            *p = free_loopback_port();
          } while (*p == 0 || !ports.insert(*p).second);
        }
        members_.push_back(m);
      }
      for (int i = 0; i < options_.members; ++i) start(i, true);
      bool healthy = true;
      for (int i = 0; i < options_.members && healthy; ++i) {
        healthy = wait_healthy(i, options_.start_timeout);
      }
      if (healthy) break;
      std::string logs;
      for (int i = 0; i < options_.members; ++i)
        logs += "\n--- " + members_[static_cast<std::size_t>(i)].name + "\n" + log(i);
      stop_all();
      for (int i = 0; i < options_.members; ++i) fs::remove_all(dir_ / ("m" + std::to_string(i)));
      if (attempt == 3) throw std::runtime_error("etcd did not become healthy:" + logs);
    }
  } catch (...) {
    stop_all();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw;
  }
}

// Directories of fixtures whose process is gone (killed before its
// destructor ran); their members died with it (pdeathsig).
void EtcdCluster::remove_stale() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/tmp", ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("tw-etcd-") || entry.path() == dir_) continue;
    const std::string owner = read_text(entry.path() / "owner");
    const pid_t pid = static_cast<pid_t>(std::atol(owner.c_str()));
    if (pid <= 0) {
      // No owner yet: another process may have just made it. Only an old
      // one is a leftover.
      std::error_code age_ec;
      const auto written = fs::last_write_time(entry.path(), age_ec);
      if (age_ec || fs::file_time_type::clock::now() - written < std::chrono::minutes(10)) continue;
    }
    if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH)) {
      std::error_code rm;
      fs::remove_all(entry.path(), rm);
    }
  }
}

EtcdCluster::~EtcdCluster() {
  stop_all();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void EtcdCluster::make_certificates() {
  const std::string d = dir_.string();
  const auto openssl = [](const std::vector<std::string>& args) {
    std::vector<std::string> argv{"openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    check_argv(argv, Millis{20'000});
  };
  const std::vector<std::string> ec_key{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                        "-nodes"};
  std::vector<std::string> ca{"req", "-x509"};
  ca.insert(ca.end(), ec_key.begin(), ec_key.end());
  ca.insert(ca.end(), {"-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "2", "-subj",
                       "/CN=tierwall test CA"});
  openssl(ca);
  write_file(dir_ / "server.ext", "subjectAltName=IP:" + options_.host +
                                      ",DNS:localhost\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n");
  write_file(dir_ / "client.ext", "extendedKeyUsage=clientAuth\n");
  for (const std::string who : {"server", "client"}) {
    std::vector<std::string> csr{"req"};
    csr.insert(csr.end(), ec_key.begin(), ec_key.end());
    csr.insert(csr.end(),
               {"-keyout", d + "/" + who + ".key", "-out", d + "/" + who + ".csr", "-subj",
                who == "server" ? "/CN=" + options_.host : "/O=tierwall test client"});
    openssl(csr);
    openssl({"x509", "-req", "-in", d + "/" + who + ".csr", "-CA", d + "/ca.pem", "-CAkey",
             d + "/ca.key", "-CAcreateserial", "-out", d + "/" + who + ".pem", "-days", "2",
             "-extfile", d + "/" + who + ".ext"});
  }
}

std::string EtcdCluster::client_url(int member) const {
  return std::string(options_.tls ? "https" : "http") + "://" + options_.host + ":" +
         std::to_string(members_.at(static_cast<std::size_t>(member)).client_port);
}

std::vector<std::string> EtcdCluster::client_urls() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(client_url(i));
  return out;
}

std::string EtcdCluster::endpoints() const {
  std::string out;
  for (const auto& url : client_urls()) out += (out.empty() ? "" : ",") + url;
  return out;
}

std::string EtcdCluster::ca_file() const {
  return options_.tls ? (dir_ / "ca.pem").string() : std::string{};
}
std::string EtcdCluster::client_cert() const {
  return options_.tls ? (dir_ / "client.pem").string() : std::string{};
}
std::string EtcdCluster::client_key() const {
  return options_.tls ? (dir_ / "client.key").string() : std::string{};
}

void EtcdCluster::start(int member, bool first_boot) {
  Member& m = members_.at(static_cast<std::size_t>(member));
  std::string initial_cluster;
  for (const auto& other : members_) {
    initial_cluster += (initial_cluster.empty() ? "" : ",") + other.name + "=http://" +
                       options_.host + ":" + std::to_string(other.peer_port);
  }
  const std::string peer = "http://" + options_.host + ":" + std::to_string(m.peer_port);
  const std::string client = client_url(member);
  // setpriv --pdeathsig: a member dies with the test process even when
  // that is killed outright (a ctest timeout), instead of lingering.
  std::vector<std::string> argv{"setpriv",
                                "--pdeathsig",
                                "KILL",
                                "--",
                                "etcd",
                                "--name",
                                m.name,
                                "--data-dir",
                                (dir_ / m.name).string(),
                                "--listen-client-urls",
                                client,
                                "--advertise-client-urls",
                                client,
                                "--listen-peer-urls",
                                peer,
                                "--initial-advertise-peer-urls",
                                peer,
                                "--initial-cluster",
                                initial_cluster,
                                "--initial-cluster-state",
                                first_boot ? "new" : "existing",
                                "--initial-cluster-token",
                                "tw-test-" + std::to_string(::getpid()),
                                "--heartbeat-interval",
                                "50",
                                "--election-timeout",
                                "500",
                                "--logger",
                                "zap",
                                "--log-level",
                                "warn"};
  if (options_.tls) {
    const std::string d = dir_.string();
    argv.insert(argv.end(), {"--cert-file", d + "/server.pem", "--key-file", d + "/server.key",
                             "--trusted-ca-file", d + "/ca.pem"});
    if (options_.client_cert_auth) argv.emplace_back("--client-cert-auth");
  }
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  argv = in_netns(std::move(argv));
  Fd log_fd(
      ::open((dir_ / (m.name + ".log")).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  Fd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (log_fd.get() < 0 || null_in.get() < 0) {
    throw std::runtime_error("cannot open the log of etcd member " + m.name);
  }
  m.pid = spawn_argv(argv, null_in.get(), log_fd.get(), log_fd.get(), /*new_process_group=*/true);
}

void EtcdCluster::kill(int member) {
  Member& m = members_.at(static_cast<std::size_t>(member));
  if (m.pid <= 0) return;
  ::kill(-m.pid, SIGKILL);
  while (::waitpid(m.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  m.pid = -1;
}

void EtcdCluster::restart(int member) {
  kill(member);
  start(member, false);
  if (!wait_healthy(member, options_.start_timeout)) {
    throw std::runtime_error("etcd member " + std::to_string(member) +
                             " did not become healthy after a restart:\n" + log(member));
  }
}

void EtcdCluster::restart_all() {
  for (int i = 0; i < size(); ++i) {
    if (!running(i)) start(i, false);
  }
  for (int i = 0; i < size(); ++i) {
    if (!wait_healthy(i, options_.start_timeout)) {
      throw std::runtime_error("etcd member " + std::to_string(i) +
                               " did not become healthy after a restart of the cluster:\n" +
                               log(i));
    }
  }
}

namespace {

// True once every process of group `pgid` is stopped (state T), read from
// /proc/<pid>/stat of each process whose group is `pgid`.
bool group_stopped(pid_t pgid) {
  bool any = false;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(entry.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    const auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(paren + 2));
    char state = 0;
    long ppid = 0;
    long pgrp = 0;
    rest >> state >> ppid >> pgrp;
    if (pgrp != pgid) continue;
    any = true;
    if (state != 'T' && state != 't') return false;
  }
  return any;
}

}  // namespace

void EtcdCluster::pause(int member) {
  const Member& m = members_.at(static_cast<std::size_t>(member));
  if (m.pid <= 0) return;
  ::kill(-m.pid, SIGSTOP);
  // SIGSTOP is delivered asynchronously: return only once the member has
  // really stopped, so that the caller's next request meets a frozen one.
  for (int i = 0; i < 200 && !group_stopped(m.pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void EtcdCluster::resume(int member) {
  const Member& m = members_.at(static_cast<std::size_t>(member));
  if (m.pid > 0) ::kill(-m.pid, SIGCONT);
}

void EtcdCluster::enable_auth(const std::string& root_password) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"user", "add", "root", "--new-user-password", root_password},
           {"user", "grant-role", "root", "root"},
           {"auth", "enable"}}) {
    const CommandResult r = etcdctl(args);
    if (!r.ok()) throw_command_error("etcdctl " + command_line(args), r);
  }
}

bool EtcdCluster::running(int member) const {
  Member& m = members_.at(static_cast<std::size_t>(member));
  if (m.pid <= 0) return false;
  if (::waitpid(m.pid, nullptr, WNOHANG) == 0) return true;
  m.pid = -1;  // exited (and now reaped)
  return false;
}

void EtcdCluster::stop_all() noexcept {
  for (auto& m : members_) {
    if (m.pid <= 0) continue;
    ::kill(-m.pid, SIGKILL);
    while (::waitpid(m.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    m.pid = -1;
  }
}

std::vector<std::string> EtcdCluster::in_netns(std::vector<std::string> argv) const {
  if (options_.netns.empty()) return argv;
  std::vector<std::string> out{"ip", "netns", "exec", options_.netns};
  out.insert(out.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
  return out;
}

std::vector<std::string> EtcdCluster::tls_flags() const {
  if (!options_.tls) return {};
  return {"--cacert", ca_file(), "--cert", client_cert(), "--key", client_key()};
}

bool EtcdCluster::wait_healthy(int member, Millis timeout) const {
  std::vector<std::string> argv{
      "etcdctl",           "--endpoints", client_url(member), "--dial-timeout", "1s",
      "--command-timeout", "2s"};
  const auto tls = tls_flags();
  argv.insert(argv.end(), tls.begin(), tls.end());
  argv.insert(argv.end(), {"endpoint", "health"});
  argv = in_netns(std::move(argv));
  return wait_until(
      [&] {
        if (!running(member)) return false;
        return run_argv(argv, Millis{5000}).ok();
      },
      timeout, Millis{100});
}

CommandResult EtcdCluster::etcdctl(const std::vector<std::string>& args,
                                   const std::string& user) const {
  std::vector<std::string> argv{"etcdctl", "--endpoints",       endpoints(), "--dial-timeout",
                                "2s",      "--command-timeout", "5s"};
  const auto tls = tls_flags();
  argv.insert(argv.end(), tls.begin(), tls.end());
  if (!user.empty()) argv.insert(argv.end(), {"--user", user});
  argv.insert(argv.end(), args.begin(), args.end());
  return run_argv(in_netns(std::move(argv)), Millis{15'000});
}

std::string EtcdCluster::log(int member) const {
  return read_text(dir_ / (members_.at(static_cast<std::size_t>(member)).name + ".log"));
}

}  // namespace tierwall::testsupport
