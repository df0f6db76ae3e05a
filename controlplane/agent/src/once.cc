#include "tierwall/agent/once.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <ifaddrs.h>
#include <netinet/in.h>

#include "tierwall/compiler/compiler.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/policy/loader.h"

namespace tierwall::agent {

std::vector<IpAddress> local_addresses() {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    IpAddress a;
    if (i->ifa_addr->sa_family == AF_INET) {
      sockaddr_in sin;
      std::memcpy(&sin, i->ifa_addr, sizeof sin);
      a.family = IpAddress::Family::V4;
      std::memcpy(a.bytes.data(), &sin.sin_addr, 4);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      sockaddr_in6 sin6;
      std::memcpy(&sin6, i->ifa_addr, sizeof sin6);
      a.family = IpAddress::Family::V6;
      std::memcpy(a.bytes.data(), &sin6.sin6_addr, 16);
    } else {
      continue;
    }
    out.push_back(a);
  }
  freeifaddrs(list);
  return out;
}

bool enable_bridge_netfilter(std::string* error) {
  for (const char* key : {"/proc/sys/net/bridge/bridge-nf-call-iptables",
                          "/proc/sys/net/bridge/bridge-nf-call-ip6tables"}) {
    std::ofstream f(key);
    f << "1\n";
    f.flush();
    if (!f) {
      if (error != nullptr)
        *error = std::string("cannot write ") + key + " (is br_netfilter available?)";
      return false;
    }
  }
  return true;
}

int apply_once(const OnceOptions& options, std::ostream& out, std::ostream& err) {
  std::vector<Cidr> cidrs;
  for (const auto& text : options.container_cidrs) {
    std::string why;
    auto c = Cidr::parse(text, &why);
    if (!c) {
      err << "tierwalld: invalid --container-cidr '" << text << "': " << why << "\n";
      return 2;
    }
    cidrs.push_back(*c);
  }
  policy::Diagnostics diags;
  auto pol = policy::load_policy(options.policy, diags);
  std::optional<identity::Inventory> inv = identity::Inventory{};
  if (options.inventory) inv = identity::load_inventory(*options.inventory, diags);
  if (diags.has_errors() || !pol || !inv) {
    diags.print(err);
    err << "tierwalld: the policy is invalid; nothing was applied\n";
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto rules = compiler::compile(*pol, *inv, 1, cidrs);

  if (options.bridge_netfilter) {
    std::string why;
    if (!enable_bridge_netfilter(&why)) {
      err << "tierwalld: warning: " << why
          << "; containers on one bridge are not policed by the inet hooks\n";
    }
  }
  dataplane::nft::NftBackend::Config config;
  config.plan.table = options.table;
  config.plan.log_group = options.log_group;
  config.local_addresses = local_addresses();
  auto opened = dataplane::nft::NftBackend::open(config);
  if (auto* e = std::get_if<std::string>(&opened)) {
    err << "tierwalld: " << *e << "\n";
    return 3;
  }
  auto& backend = *std::get<std::unique_ptr<dataplane::nft::NftBackend>>(opened);
  if (auto e = backend.apply(rules)) {
    err << "tierwalld: applying the ruleset failed: " << e->message;
    if (e->rule != 0) {
      if (const auto* r = rules.policy->find_rule(e->rule)) {
        err << " (policy rule '" << r->origin.name << "' at " << r->origin.file << ":"
            << r->origin.line << ")";
      }
    }
    err << (e->concurrent_change ? "; another process changed the ruleset meanwhile, retry" : "")
        << "; the previous ruleset is still in place\n";
    return 3;
  }
  const auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  out << "tierwalld: applied policy " << pol->name << " (digest " << pol->digest.substr(0, 12)
      << ", " << rules.policy->rule_count() << " rules, " << rules.endpoints->endpoint_count()
      << " endpoints) to table inet " << options.table << " in " << static_cast<int>(ms) << " ms";
  if (backend.last_cut() > 0) out << "; cut " << backend.last_cut() << " denied connections";
  out << "\n";
  return 0;
}

int flush(const std::string& table, std::ostream& out, std::ostream& err) {
  dataplane::nft::NftBackend::Config config;
  config.plan.table = table;
  auto opened = dataplane::nft::NftBackend::open(config);
  if (auto* e = std::get_if<std::string>(&opened)) {
    err << "tierwalld: " << *e << "\n";
    return 3;
  }
  auto& backend = *std::get<std::unique_ptr<dataplane::nft::NftBackend>>(opened);
  if (auto e = backend.flush()) {
    err << "tierwalld: flush failed: " << e->message << "\n";
    return 3;
  }
  out << "tierwalld: removed table inet " << table << "\n";
  return 0;
}

}  // namespace tierwall::agent
