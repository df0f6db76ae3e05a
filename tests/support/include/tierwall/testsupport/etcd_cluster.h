// A real etcd cluster for tests: 1 or 3 members on free loopback ports,
// each with its own data directory under one temporary directory, started
// from the `etcd` binary (Debian's etcd-server). Never touches an etcd it
// did not start (a system etcd on 127.0.0.1:2379 is left alone).
//
//   - the constructor returns once every member answers `etcdctl endpoint
//     health`; it throws std::runtime_error (with the member's log) when
//     one does not, after cleaning up what it started;
//   - TLS: client URLs are https with a server certificate for 127.0.0.1
//     signed by a CA the fixture makes with the openssl CLI; a client
//     certificate from the same CA is made too (without a CommonName: with
//     authentication on, etcd's gateway refuses certificates that carry
//     one), and with client_cert_auth etcd requires it. Peer traffic stays
//     plain HTTP on loopback;
//   - kill(i) SIGKILLs a member (a crash), restart(i) starts it again on
//     its data directory and waits until it is healthy; pause(i)/resume(i)
//     freeze and thaw it (an unresponsive member);
//   - enable_auth() turns on etcd authentication with a root user;
//   - the destructor kills every member (its whole process group), reaps
//     it and removes the directory, whatever happened in the test. If the
//     test process itself is killed, its members die with it (they run
//     under `setpriv --pdeathsig KILL`) and the next fixture removes the
//     directory it left in /tmp (tw-etcd-*, with the owner's pid).
//
// Elections are tuned fast (heartbeat 50 ms, election timeout 500 ms), so
// fail-over tests take about a second, not ten.
//
// Threads: construct, kill and restart from one thread that outlives the
// fixture (a member's parent-death signal follows the thread that started
// it); the URLs and file paths may be read from any thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {

struct EtcdClusterOptions {
  int members = 1;                // 1 or 3
  bool tls = false;               // https client URLs
  bool client_cert_auth = false;  // with tls: etcd demands a client certificate
  Millis start_timeout{30'000};
  std::vector<std::string> extra_args;  // more etcd flags, e.g. {"--auth-token-ttl", "1"}
  // Run the members (and etcdctl) inside this network namespace (`ip netns
  // exec`), listening on `host`, an address of that namespace: agents in
  // other namespaces then reach etcd over links the test made. Empty: the
  // caller's namespace, loopback.
  std::string netns;
  std::string host = "127.0.0.1";
};

class EtcdCluster {
 public:
  explicit EtcdCluster(EtcdClusterOptions options = {});
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Why no cluster can be started here (etcd or etcdctl missing), or nullopt.
  static std::optional<std::string> unavailable_reason();

  [[nodiscard]] int size() const { return static_cast<int>(members_.size()); }
  [[nodiscard]] std::string client_url(int member) const;
  [[nodiscard]] std::vector<std::string> client_urls() const;
  // "URL,URL,..." as `tierctl --store` takes it.
  [[nodiscard]] std::string endpoints() const;
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  // TLS material (empty paths without tls).
  [[nodiscard]] std::string ca_file() const;
  [[nodiscard]] std::string client_cert() const;
  [[nodiscard]] std::string client_key() const;

  void kill(int member);
  void restart(int member);
  // Starts every member that is not running (all at once: a member alone
  // cannot be healthy without a quorum), then waits until all are healthy.
  void restart_all();
  // SIGSTOP / SIGCONT: the member keeps its sockets but answers nothing, as
  // behind a partition (connections are accepted by the kernel, requests
  // time out).
  void pause(int member);
  void resume(int member);

  // Creates user root with `root_password` and enables authentication
  // (etcdctl). Later etcdctl calls need user "root:<password>".
  void enable_auth(const std::string& root_password);
  [[nodiscard]] bool running(int member) const;
  // Polls `etcdctl endpoint health` on that member.
  bool wait_healthy(int member, Millis timeout) const;

  // etcdctl against every member (TLS flags added), e.g.
  // {"get", "--prefix", "/tierwall/"}; `user` as "name:password".
  CommandResult etcdctl(const std::vector<std::string>& args, const std::string& user = {}) const;
  // The member's log (stdout and stderr of etcd).
  [[nodiscard]] std::string log(int member) const;

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    pid_t pid = -1;
  };

  void make_certificates();
  void remove_stale();
  void start(int member, bool first_boot);
  void stop_all() noexcept;
  std::vector<std::string> tls_flags() const;
  // `ip netns exec NETNS argv...` when options.netns is set.
  std::vector<std::string> in_netns(std::vector<std::string> argv) const;

  EtcdClusterOptions options_;
  std::filesystem::path dir_;
  mutable std::vector<Member> members_;  // running() reaps a member that exited
};

}  // namespace tierwall::testsupport
