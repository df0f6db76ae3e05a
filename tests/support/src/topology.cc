#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <net/if.h>
#include <stdexcept>
#include <string>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <thread>
#include <vector>

#include "internal.h"

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {
namespace {

bool is_v6(const std::string& text) { return text.find(':') != std::string::npos; }

void check_ifname(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    throw std::invalid_argument("interface name '" + name + "' must be 1-15 characters");
  }
}

std::string sysctl_path(const std::string& key) {
  if (key.find('/') != std::string::npos) {
    return key.front() == '/' ? key : "/proc/sys/" + key;
  }
  std::string path = key;
  std::replace(path.begin(), path.end(), '.', '/');
  return "/proc/sys/" + path;
}

}  // namespace

CommandResult ip_in(const NetNs& ns, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"ip", "-n", ns.name()};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult result = run_argv(argv);
  if (!result.ok()) throw_command_error(command_line(argv) + "  [" + ns.describe() + "]", result);
  return result;
}

void veth(NetNs& a, const std::string& name_a, NetNs& b, const std::string& name_b) {
  check_ifname(name_a);
  check_ifname(name_b);
  // Created inside `a` with its peer directly in `b`: never in the root ns.
  ip_in(a, {"link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", b.name()});
  ip_in(a, {"link", "set", name_a, "up"});
  ip_in(b, {"link", "set", name_b, "up"});
}

void bridge(NetNs& ns, const std::string& name) {
  check_ifname(name);
  ip_in(ns, {"link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0",
             "mcast_snooping", "0"});
  ip_in(ns, {"link", "set", name, "up"});
}

void attach(NetNs& ns, const std::string& port, const std::string& bridge_name) {
  ip_in(ns, {"link", "set", port, "master", bridge_name, "up"});
}

void addr(NetNs& ns, const std::string& dev, const std::string& cidr) {
  if (is_v6(cidr)) {
    ip_in(ns, {"-6", "addr", "add", cidr, "dev", dev, "nodad"});
  } else {
    ip_in(ns, {"-4", "addr", "add", cidr, "dev", dev});
  }
}

void route(NetNs& ns, const std::string& spec) {
  std::vector<std::string> args = {is_v6(spec) ? "-6" : "-4", "route", "add"};
  std::size_t pos = 0;
  while (pos < spec.size()) {
    const std::size_t start = spec.find_first_not_of(' ', pos);
    if (start == std::string::npos) break;
    const std::size_t end = std::min(spec.find(' ', start), spec.size());
    args.push_back(spec.substr(start, end - start));
    pos = end;
  }
  ip_in(ns, args);
}

void sysctl(NetNs& ns, const std::string& key, const std::string& value) {
  ns.check("echo " + shell_quote(value) + " > " + shell_quote(sysctl_path(key)));
}

std::string read_sysctl(const NetNs& ns, const std::string& key) {
  std::string out = ns.check("cat " + shell_quote(sysctl_path(key))).out;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

void af_packet_link(NetNs& host, const std::string& cidr, NetNs& sw, const std::string& port_dev) {
  veth(host, "eth0", sw, port_dev);
  addr(host, "eth0", cidr);
  host.check("ethtool -K eth0 tx off tso off gso off");
  sw.check("ethtool -K " + port_dev + " gro off");
  wait_link_running(sw, port_dev);
}

void wait_link_running(const NetNs& ns, const std::string& dev, Millis timeout) {
  check_ifname(dev);
  const short flags = in_netns(ns, [&]() -> short {
    Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (sock.get() < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      ifreq request{};
      std::memcpy(request.ifr_name, dev.data(), dev.size());
      if (::ioctl(sock.get(), SIOCGIFFLAGS, &request) != 0) {
        throw std::runtime_error("link " + dev + " in " + ns.describe() + ": " +
                                 std::strerror(errno));
      }
      if ((request.ifr_flags & IFF_RUNNING) != 0 || std::chrono::steady_clock::now() >= deadline) {
        return request.ifr_flags;
      }
      std::this_thread::sleep_for(Millis{2});
    }
  });
  if ((flags & IFF_RUNNING) == 0) {
    throw std::runtime_error("link " + dev + " in " + ns.describe() + " not running after " +
                             std::to_string(timeout.count()) + " ms (flags " +
                             std::to_string(flags) + ")");
  }
}

}  // namespace tierwall::testsupport
