// Integration-test support: real network namespaces, topology and probes.
//
// Everything here needs root (see netns_unavailable_reason()) and touches
// only namespaces it created itself. Namespaces are named
// "tw-<pid base36>-<n base36>" (at most 13 characters), so interface names
// derived from them fit IFNAMSIZ and a crashed run's leftovers can be told
// apart from a live process's: NetNs::cleanup_stale() deletes the
// namespaces of processes that no longer exist, and runs once per process
// before the first namespace is created. Links are created directly inside
// their namespaces (`ip -n NS link add ... peer ... netns OTHER`); nothing is
// created in, or routed through, the root namespace.
//
// Errors in setup (a failed `ip`, a missing device) throw std::runtime_error
// naming the command and its stderr. Probes never throw on a lost packet:
// they return an Outcome (or a bool) once their timeout expires.
//
// Threads: a NetNs may be used from any thread. enter() moves only the
// calling thread. Probes and servers run their socket calls on a helper
// thread that enters the namespace, so the caller's namespace never changes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <future>
#include <iosfwd>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tierwall::testsupport {

using Millis = std::chrono::milliseconds;

// Upper bound for any one setup command; a hung `ip` fails the test instead
// of hanging it.
inline constexpr Millis kCommandTimeout{10'000};

// ---------------------------------------------------------------------------
// Commands

struct CommandResult {
  int exit_code = -1;      // exit status; 128+N when killed by signal N
  bool timed_out = false;  // killed because it ran past its timeout
  std::string out;         // captured stdout
  std::string err;         // captured stderr
  bool ok() const { return exit_code == 0 && !timed_out; }
};

// Runs argv (no shell, PATH lookup) with stdin from /dev/null and stdout and
// stderr captured. Returns when the child exits (background grandchildren
// that keep the pipes open are not waited for) or kills it after `timeout`.
CommandResult run_argv(const std::vector<std::string>& argv, Millis timeout = kCommandTimeout);

// As run_argv, but throws std::runtime_error with the command line, exit
// status and stderr unless the command succeeded.
CommandResult check_argv(const std::vector<std::string>& argv, Millis timeout = kCommandTimeout);

// Why namespace tests cannot run here (not root, no `ip`), or nullopt.
// Tests turn a reason into GTEST_SKIP(); CI runs as root, so there they run.
std::optional<std::string> netns_unavailable_reason();

// ---------------------------------------------------------------------------
// NetNs

// A named network namespace that lives exactly as long as this object.
//
// Construction: `ip netns add`, then inside it: lo up, ping sockets allowed
// for every group (net.ipv4.ping_group_range = "0 2147483647"), IPv6 DAD off
// for new interfaces (accept_dad = 0) so addresses are usable at once, and
// no ICMP error rate limiting (net.ipv4.icmp_ratemask = 0, empty
// net.ipv6.icmp.ratemask): otherwise the kernel answers only the first
// couple of probes per second with "unreachable" and the rest time out.
// Destruction: stops processes started with spawn(), kills any other process
// still in the namespace, then `ip netns del`. Sockets and threads created
// in the namespace (TcpServer, TcpSession, ...) must be destroyed first.
class NetNs {
 public:
  class Guard;

  // `label` only names the namespace in diagnostics ("node", "c0", ...).
  explicit NetNs(std::string label = {});
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  NetNs(NetNs&&) = delete;
  NetNs& operator=(NetNs&&) = delete;

  const std::string& name() const { return name_; }
  const std::string& label() const { return label_; }
  // "label(name)" for messages.
  std::string describe() const;

  // `ip netns exec NAME sh -c CMD`; never throws for a failing command.
  CommandResult run(const std::string& cmd, Millis timeout = kCommandTimeout) const;
  // As run(), but throws std::runtime_error unless the command succeeded.
  CommandResult check(const std::string& cmd, Millis timeout = kCommandTimeout) const;

  // Starts `sh -c CMD` in the namespace in the background, in its own
  // process group, stdout and stderr appended to `log_path`. The process is
  // tracked: stop() or the destructor sends SIGTERM to its group, then
  // SIGKILL after `grace`, and reaps it.
  pid_t spawn(const std::string& cmd, const std::string& log_path = "/dev/null");
  void stop(pid_t pid, Millis grace = Millis{500});

  // Moves the calling thread into this namespace until the guard dies.
  [[nodiscard]] Guard enter() const;

  // "tw-<this process's pid in base36>-": every namespace this process makes
  // starts with it.
  static std::string process_prefix();
  // Names of all namespaces in /var/run/netns starting with "tw-", any owner.
  static std::vector<std::string> list_test_namespaces();
  // Deletes "tw-<pid>-<n>" namespaces whose creating process is gone.
  // Returns the names it deleted.
  static std::vector<std::string> cleanup_stale();

 private:
  std::string label_;
  std::string name_;
  mutable std::mutex mu_;
  std::vector<pid_t> spawned_;
};

// setns() guard for the calling thread: opens /var/run/netns/NAME and joins
// it; the destructor returns the thread to the namespace it came from. Must
// be destroyed on the thread that created it (aborts otherwise: a thread
// left in the wrong namespace would corrupt every later test). Other threads
// stay where they are, but threads (and processes) started while the guard
// lives begin inside the namespace, as clone() copies the caller's.
class NetNs::Guard {
 public:
  ~Guard();
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  Guard(Guard&&) = delete;
  Guard& operator=(Guard&&) = delete;

 private:
  friend class NetNs;
  explicit Guard(const std::string& ns_name);
  int previous_fd_ = -1;
  std::thread::id thread_;
};

// Runs `fn()` on a fresh thread that has entered `ns`, waits for it and
// returns its result (or rethrows its exception). The caller's thread never
// changes namespace.
template <typename F>
std::invoke_result_t<F&> in_netns(const NetNs& ns, F&& fn) {
  using R = std::invoke_result_t<F&>;
  std::packaged_task<R()> task([&ns, &fn]() -> R {
    NetNs::Guard guard = ns.enter();
    return fn();
  });
  std::future<R> result = task.get_future();
  std::thread worker(std::move(task));
  worker.join();
  return result.get();
}

// ---------------------------------------------------------------------------
// Topology (all throw std::runtime_error on failure)

// A veth pair with one end in each namespace (a and b may be the same), both
// ends up. Names must be unique within their namespace and ≤ 15 characters.
void veth(NetNs& a, const std::string& name_a, NetNs& b, const std::string& name_b);
// A Linux bridge, up, STP and multicast snooping off (ports forward at once,
// neighbour discovery is flooded).
void bridge(NetNs& ns, const std::string& name);
// Enslaves `port` to `bridge_name` and brings it up.
void attach(NetNs& ns, const std::string& port, const std::string& bridge_name);
// Adds "10.88.0.10/24" or "fd00:88::10/64" (nodad) to `dev`.
void addr(NetNs& ns, const std::string& dev, const std::string& cidr);
// `ip route add SPEC` ("default via 10.88.0.1", "fd00:89::/64 via
// 2001:db8:100::2"); IPv6 when the spec contains ':'.
void route(NetNs& ns, const std::string& spec);
// Writes /proc/sys/<key with '.' as '/'> inside the namespace
// ("net.ipv4.ip_forward", "1"). A key containing '/' is used as a path as is.
void sysctl(NetNs& ns, const std::string& key, const std::string& value);
std::string read_sysctl(const NetNs& ns, const std::string& key);
// Waits until `dev` is up with carrier (IFF_RUNNING).
void wait_link_running(const NetNs& ns, const std::string& dev, Millis timeout = Millis{3000});
// Links `host`'s eth0, with the address `cidr`, to `port_dev` in `sw`, for
// a DPDK af_packet port on `port_dev`. Checksums must be complete in the
// frames af_packet captures: with TX checksum offload the kernel hands over
// CHECKSUM_PARTIAL packets, which the other side drops once re-sent. TSO/GSO
// off on eth0 and GRO off on `port_dev` keep every frame within the MTU
// (af_packet frames are 2048 bytes). Returns once `port_dev` is running.
void af_packet_link(NetNs& host, const std::string& cidr, NetNs& sw, const std::string& port_dev);

// ---------------------------------------------------------------------------
// Probes. Addresses are numeric IPv4 or IPv6 literals ("fe80::1%eth0" for
// link-local). All socket work happens inside the namespace.

enum class Outcome : std::uint8_t {
  kOk,           // connected and echoed / echo reply received
  kRefused,      // TCP RST, ICMP port unreachable, or the peer closed
  kUnreachable,  // ICMP unreachable/prohibited, no route, or a local
                 // netfilter drop (EPERM on send)
  kTimeout,      // nothing came back before the timeout (a silent drop)
  kError,        // anything else (bad address, socket error)
};
std::string_view to_string(Outcome outcome);
std::ostream& operator<<(std::ostream& os, Outcome outcome);

// Echo server on addr:port (port 0 picks one; see port()). Accepts and
// echoes on a background thread until stop() or destruction; any number of
// concurrent connections. Throws if the socket cannot be bound.
class TcpServer {
 public:
  TcpServer(const NetNs& ns, const std::string& address, std::uint16_t port = 0);
  ~TcpServer();
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;

  std::uint16_t port() const { return port_; }
  // Connections accepted so far, and their source addresses (numeric, no
  // port), e.g. to check that a flow was not NATed.
  std::size_t accepted() const;
  std::vector<std::string> peers() const;
  // Closes the listener and every connection; idempotent.
  void stop();

 private:
  void loop();
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  mutable std::mutex mu_;
  std::vector<std::string> peers_;
  std::thread thread_;
};

// Connects (non-blocking connect + poll), then sends one byte and expects it
// back, all within `timeout`. `source` optionally binds a source address.
Outcome tcp_probe(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                  const std::string& source = {});
bool tcp_connect(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                 const std::string& source = {});

// UDP echo server; replies from the address the datagram was sent to, so a
// wildcard-bound server on a multi-homed namespace still answers correctly.
class UdpEchoServer {
 public:
  UdpEchoServer(const NetNs& ns, const std::string& address, std::uint16_t port = 0);
  ~UdpEchoServer();
  UdpEchoServer(const UdpEchoServer&) = delete;
  UdpEchoServer& operator=(const UdpEchoServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::size_t received() const { return received_.load(); }
  void stop();

 private:
  void loop();
  int fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::atomic<std::size_t> received_{0};
  std::thread thread_;
};

// Sends a datagram with a random token on a connected socket (resending a
// few times within `timeout`) and expects the token back.
Outcome udp_probe(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
                  const std::string& source = {});
bool udp_echo(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
              const std::string& source = {});

// ICMP / ICMPv6 echo over an unprivileged ping socket (SOCK_DGRAM), resent a
// few times within `timeout`.
Outcome ping_probe(const NetNs& ns, const std::string& address, Millis timeout,
                   const std::string& source = {});
bool ping(const NetNs& ns, const std::string& address, Millis timeout,
          const std::string& source = {});

// One long-lived TCP connection to an echo server: connect once, then check
// with exchange() whether the established flow still passes, e.g. across a
// ruleset change. Throws std::runtime_error if the connection cannot be made.
class TcpSession {
 public:
  TcpSession(const NetNs& ns, const std::string& address, std::uint16_t port, Millis timeout,
             const std::string& source = {});
  ~TcpSession();
  TcpSession(const TcpSession&) = delete;
  TcpSession& operator=(const TcpSession&) = delete;

  // Sends one fresh byte and waits for its echo. Late echoes of earlier
  // bytes are skipped, so a flow that was dropped and then allowed again
  // reports kOk once it passes again.
  Outcome exchange_probe(Millis timeout = Millis{500});
  bool exchange(Millis timeout = Millis{500}) { return exchange_probe(timeout) == Outcome::kOk; }
  std::uint16_t local_port() const { return local_port_; }

 private:
  int fd_ = -1;
  std::uint16_t local_port_ = 0;
  std::uint8_t next_ = 0;
};

// ---------------------------------------------------------------------------
// BridgeLab: a node with two container bridges and an uplink to a "world".
//
//   c0..cN-1 (10.88.0.10+i, fd00:88::10+i) ──veth── br0 (10.88.0.1, fd00:88::1) ┐
//   d0..dM-1 (10.89.0.10+i, fd00:89::10+i) ──veth── br1 (10.89.0.1, fd00:89::1) ├ node
//   world (198.51.100.1, 2001:db8:100::1) ──veth── uplink0 (198.51.100.2, ::2)   ┘
//
// The node forwards IPv4 and IPv6 and installs no filtering: a firewall under
// test installs its nftables inside `node` (node.enter() or node.run()).
// Containers route everything via their bridge address; the world routes the
// container subnets via the node. No NAT anywhere.

struct BridgeLabOptions {
  int br0_containers = 2;
  int br1_containers = 1;
  // net.bridge.bridge-nf-call-ip(6)tables in the node, so bridged
  // container<->container traffic also traverses the inet/ip hooks.
  bool bridge_nf_call = false;
};

struct BridgeLab {
  struct Container {
    explicit Container(const std::string& label) : ns(label) {}
    NetNs ns;
    std::string v4;     // "10.88.0.10"
    std::string v6;     // "fd00:88::10"
    std::string gw_v4;  // the bridge's address, default route
    std::string gw_v6;
    std::string ifname;     // "eth0", inside ns
    std::string bridge;     // "br0" or "br1", in node
    std::string node_port;  // the veth end on the node, e.g. "br0p1"
  };

  explicit BridgeLab(BridgeLabOptions options = {});
  BridgeLab(const BridgeLab&) = delete;
  BridgeLab& operator=(const BridgeLab&) = delete;

  // Every namespace of the lab, node first.
  std::vector<const NetNs*> namespaces() const;

  NetNs node{"node"};
  NetNs world{"world"};
  std::deque<Container> br0_containers;  // c0, c1, ...
  std::deque<Container> br1_containers;  // d0, d1, ...

  std::string br0_v4 = "10.88.0.1";
  std::string br0_v6 = "fd00:88::1";
  std::string br1_v4 = "10.89.0.1";
  std::string br1_v6 = "fd00:89::1";
  std::string br0_subnet_v4 = "10.88.0.0/24";
  std::string br0_subnet_v6 = "fd00:88::/64";
  std::string br1_subnet_v4 = "10.89.0.0/24";
  std::string br1_subnet_v6 = "fd00:89::/64";
  std::string uplink = "uplink0";  // node side of the world link
  std::string uplink_v4 = "198.51.100.2";
  std::string uplink_v6 = "2001:db8:100::2";
  std::string world_ifname = "eth0";
  std::string world_v4 = "198.51.100.1";
  std::string world_v6 = "2001:db8:100::1";
};

}  // namespace tierwall::testsupport
