#include "tierwall/agent/config.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <memory>
#include <unistd.h>

#include "tierwall/ipfix/ipfix.h"
#include "tierwall/policy/loader.h"
#include "tierwall/policy/model.h"
#include "tierwall/policy/yaml.h"
#include "tierwall/policy/yaml_reader.h"
#include "tierwall/store/etcd_client.h"
#include "tierwall/store/layout.h"

namespace tierwall::agent {

namespace {

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "localhost";
  return std::string(buf.data());
}

const std::shared_ptr<const std::string>& command_line() {
  static const auto name = std::make_shared<const std::string>("<command line>");
  return name;
}

class ConfigReader {
 public:
  ConfigReader(const std::string& name, policy::Diagnostics& diags)
      : r_(std::make_shared<const std::string>(name), diags),
        base_(std::filesystem::path(name).parent_path()) {}

  void read(const policy::yaml::Node& root, AgentConfig& c) {
    if (root.is_null()) return;  // an empty file: all defaults
    if (!r_.check_map(root, "the agent configuration",
                      {"apiVersion", "kind", "node", "containerCidrs", "policy", "inventory",
                       "runtime", "dataplane", "nft", "flowLog", "api", "metrics", "cluster"})) {
      return;
    }
    if (const auto* n = field(root, "apiVersion")) {
      auto v = r_.string(*n, "apiVersion");
      if (v && *v != policy::kApiVersion) {
        r_.error(*n, "unsupported apiVersion '" + *v + "'; expected '" +
                         std::string(policy::kApiVersion) + "'");
      }
    }
    if (const auto* n = field(root, "kind")) {
      auto v = r_.string(*n, "kind");
      if (v && *v != kAgentConfigKind) {
        r_.error(*n, "kind must be '" + std::string(kAgentConfigKind) + "', not '" + *v + "'");
      }
    }
    if (const auto* n = field(root, "node")) read_node(*n, c.node);
    if (const auto* n = field(root, "containerCidrs")) read_cidrs(*n, c.container_cidrs);
    if (const auto* n = field(root, "policy")) {
      if (auto v = r_.string_or_list(*n, "policy")) {
        c.policy.clear();
        for (auto& p : *v) c.policy.push_back(path(std::move(p)));
      }
    }
    if (const auto* n = field(root, "inventory")) c.inventory = path_of(*n, "inventory");
    if (const auto* n = field(root, "runtime")) {
      if (r_.check_map(*n, "runtime", {"socket"})) {
        if (const auto* s = field(*n, "socket")) c.runtime_socket = path_of(*s, "runtime.socket");
      }
    }
    if (const auto* n = field(root, "dataplane")) {
      auto v = r_.string(*n, "dataplane");
      if (v && *v != "nft") {
        r_.error(*n, "unknown dataplane '" + *v + "'; the agent supports 'nft'");
      } else if (v) {
        c.dataplane = *v;
      }
    }
    if (const auto* n = field(root, "nft")) read_nft(*n, c.nft);
    if (const auto* n = field(root, "flowLog")) {
      if (r_.check_map(*n, "flowLog", {"dir", "key", "fsync", "receiveBuffer", "ipfix"})) {
        if (const auto* x = field(*n, "ipfix")) {
          if (r_.check_map(*x, "flowLog.ipfix", {"collector"})) {
            if (const auto* col = field(*x, "collector")) {
              if (auto v = nonempty(*col, "flowLog.ipfix.collector")) {
                std::string host;
                std::uint16_t port = 0;
                if (ipfix::parse_collector(*v, host, port)) {
                  c.ipfix_collector = *v;
                } else {
                  r_.error(*col, "invalid flowLog.ipfix.collector '" + *v +
                                     "': expected HOST:PORT, HOST or [IPv6]:PORT");
                }
              }
            }
          }
        }
        if (const auto* b = field(*n, "receiveBuffer")) {
          if (auto v = r_.integer(*b, "flowLog.receiveBuffer")) {
            if (*v < 4096 || *v > (1LL << 30)) {
              r_.error(*b, "flowLog.receiveBuffer must be between 4096 and 1073741824 bytes");
            } else {
              c.flow_log_receive_buffer = static_cast<int>(*v);
            }
          }
        }
        if (const auto* d = field(*n, "dir")) c.flow_log_dir = path_of(*d, "flowLog.dir");
        if (const auto* k = field(*n, "key")) {
          if (auto v = path_of(*k, "flowLog.key")) c.flow_log_key = *v;
        }
        if (const auto* f = field(*n, "fsync")) {
          if (auto v = r_.string(*f, "flowLog.fsync")) {
            static constexpr std::array<std::string_view, 4> kPolicies = {
                "none", "checkpoint", "interval", "every-record"};
            if (std::find(kPolicies.begin(), kPolicies.end(), *v) == kPolicies.end()) {
              r_.error(*f,
                       "flowLog.fsync must be none, checkpoint, interval or every-record, "
                       "not '" +
                           *v + "'");
            } else {
              c.flow_log_fsync = *v;
            }
          }
        }
      }
    }
    if (const auto* n = field(root, "api")) {
      if (r_.check_map(*n, "api", {"socket", "group", "roles"})) {
        if (const auto* s = n->find("socket"); s != nullptr && !s->is_null()) {
          auto v = r_.string(*s, "api.socket");
          if (v) c.api.socket = v->empty() ? std::string() : path(std::move(*v));
        }
        if (const auto* roles = field(*n, "roles")) read_roles(*roles, c.api.roles);
        if (const auto* g = field(*n, "group")) {
          auto v = nonempty(*g, "api.group");
          if (v) c.api.group = *v;
        }
      }
    }
    if (const auto* n = field(root, "cluster")) read_cluster(*n, c.cluster);
    if (const auto* n = field(root, "metrics")) {
      if (r_.check_map(*n, "metrics", {"address"})) {
        if (const auto* a = field(*n, "address")) {
          if (auto v = r_.string(*a, "metrics.address")) {
            std::string why;
            if (parse_host_port(*v, &why)) {
              c.metrics_address = *v;
            } else {
              r_.error(*a, "invalid metrics.address '" + *v + "': " + why);
            }
          }
        }
      }
    }
  }

 private:
  // The value of `key`, or nullptr when absent or null (`key:` alone).
  static const policy::yaml::Node* field(const policy::yaml::Node& map, std::string_view key) {
    const auto* n = map.find(key);
    return n == nullptr || n->is_null() ? nullptr : n;
  }

  std::optional<std::string> nonempty(const policy::yaml::Node& n, std::string_view what) {
    auto v = r_.string(n, what);
    if (v && v->empty()) {
      r_.error(n, std::string(what) + " must not be empty");
      return std::nullopt;
    }
    return v;
  }

  std::string path(std::string p) const {
    std::filesystem::path fp(p);
    if (fp.is_absolute() || base_.empty()) return p;
    return (base_ / fp).string();
  }

  std::optional<std::string> path_of(const policy::yaml::Node& n, std::string_view what) {
    auto v = nonempty(n, what);
    if (!v) return std::nullopt;
    return path(std::move(*v));
  }

  void read_node(const policy::yaml::Node& n, AgentConfig::Node& node) {
    if (!r_.check_map(n, "node", {"name", "addresses"})) return;
    if (const auto* name = field(n, "name")) {
      if (auto v = nonempty(*name, "node.name")) node.name = *v;
    }
    if (const auto* list = field(n, "addresses")) {
      if (!r_.check_list(*list, "node.addresses")) return;
      node.addresses.clear();
      for (const auto& item : list->children) {
        auto v = r_.string(item, "a node address");
        if (!v) continue;
        auto a = IpAddress::parse(*v);
        if (!a) {
          r_.error(item, "invalid node address '" + *v + "'");
          continue;
        }
        node.addresses.push_back(*a);
      }
    }
  }

  void read_cidrs(const policy::yaml::Node& n, std::vector<Cidr>& out) {
    if (!r_.check_list(n, "containerCidrs")) return;
    out.clear();
    for (const auto& item : n.children) {
      auto v = r_.string(item, "a container CIDR");
      if (!v) continue;
      std::string why;
      auto c = Cidr::parse(*v, &why);
      if (!c) {
        r_.error(item, "invalid container CIDR '" + *v + "': " + why);
        continue;
      }
      out.push_back(*c);
    }
  }

  void read_roles(const policy::yaml::Node& n, std::array<AgentConfig::RoleMembers, 3>& roles) {
    static constexpr std::array<std::string_view, 3> kNames = {"auditor", "operator", "admin"};
    if (!r_.check_map(n, "api.roles", {"auditor", "operator", "admin"})) return;
    for (std::size_t i = 0; i < kNames.size(); ++i) {
      const auto* role = field(n, kNames[i]);
      if (role == nullptr) continue;
      const std::string where = "api.roles." + std::string(kNames[i]);
      if (!r_.check_map(*role, where, {"users", "groups"})) continue;
      if (const auto* u = field(*role, "users")) {
        if (auto v = r_.string_or_list(*u, where + ".users")) roles[i].users = *v;
      }
      if (const auto* g = field(*role, "groups")) {
        if (auto v = r_.string_or_list(*g, where + ".groups")) roles[i].groups = *v;
      }
    }
  }

  void read_cluster(const policy::yaml::Node& n, AgentConfig::Cluster& c) {
    if (!r_.check_map(n, "cluster",
                      {"store", "name", "user", "passwordFile", "ca", "cert", "key", "leaseTtl"})) {
      return;
    }
    if (const auto* s = field(n, "store")) {
      if (auto v = r_.string_or_list(*s, "cluster.store")) {
        std::vector<std::string> urls;
        for (const auto& item : *v) {
          auto parsed = store::parse_endpoints(item);
          if (!parsed) {
            r_.error(*s, "invalid cluster.store '" + item + "': " + parsed.error().message);
            continue;
          }
          urls.insert(urls.end(), parsed->begin(), parsed->end());
        }
        if (urls.empty() && v->empty()) r_.error(*s, "cluster.store must name an etcd URL");
        c.store = std::move(urls);
      }
    }
    if (const auto* s = field(n, "name")) {
      if (auto v = nonempty(*s, "cluster.name")) {
        if (store::valid_cluster_name(*v)) {
          c.name = *v;
        } else {
          r_.error(*s, "invalid cluster.name '" + *v +
                           "': lower-case letters, digits, '.' and '-', at most 63");
        }
      }
    }
    if (const auto* s = field(n, "user")) c.user = nonempty(*s, "cluster.user");
    if (const auto* s = field(n, "passwordFile")) {
      c.password_file = path_of(*s, "cluster.passwordFile");
    }
    if (const auto* s = field(n, "ca")) c.ca_file = path_of(*s, "cluster.ca");
    if (const auto* s = field(n, "cert")) c.cert_file = path_of(*s, "cluster.cert");
    if (const auto* s = field(n, "key")) c.key_file = path_of(*s, "cluster.key");
    if (c.cert_file.has_value() != c.key_file.has_value()) {
      r_.error(n, "cluster.cert and cluster.key go together: give both or neither");
    }
    if (const auto* s = field(n, "leaseTtl")) {
      if (auto v = r_.integer(*s, "cluster.leaseTtl")) {
        if (*v < 2 || *v > 3600) {
          r_.error(*s, "cluster.leaseTtl must be between 2 and 3600 seconds");
        } else {
          c.lease_ttl_seconds = static_cast<int>(*v);
        }
      }
    }
  }

  void read_nft(const policy::yaml::Node& n, AgentConfig::Nft& nft) {
    if (!r_.check_map(n, "nft", {"table", "logGroup"})) return;
    if (const auto* t = field(n, "table")) {
      if (auto v = nonempty(*t, "nft.table")) {
        if (v->size() > 255) {
          r_.error(*t, "nft.table is longer than 255 characters");
        } else {
          nft.table = *v;
        }
      }
    }
    if (const auto* g = field(n, "logGroup")) {
      if (auto v = r_.integer(*g, "nft.logGroup")) {
        if (*v < 0 || *v > 65535) {
          r_.error(*g, "nft.logGroup " + std::to_string(*v) + " is not in 0..65535");
        } else {
          nft.log_group = static_cast<std::uint16_t>(*v);
        }
      }
    }
  }

  policy::YamlReader r_;
  std::filesystem::path base_;
};

}  // namespace

AgentConfig default_config() {
  AgentConfig c;
  c.node.name = host_name();
  return c;
}

std::optional<AgentConfig> parse_config(std::string_view text, const std::string& name,
                                        policy::Diagnostics& diags) {
  const std::size_t errors_before = diags.error_count();
  auto file = std::make_shared<const std::string>(name);
  auto docs = policy::yaml::parse(text, file, policy::yaml::Parser::YamlCpp, diags);
  AgentConfig config = default_config();
  if (docs.size() > 1) {
    diags.error(policy::SourceLoc{file, docs[1].root.line, docs[1].root.column},
                "the agent configuration must be a single YAML document");
  }
  if (!docs.empty()) {
    ConfigReader reader(name, diags);
    reader.read(docs.front().root, config);
  }
  if (diags.error_count() > errors_before) return std::nullopt;
  return config;
}

std::optional<AgentConfig> load_config(const std::string& path, policy::Diagnostics& diags) {
  std::string text;
  if (!policy::read_file(path, text, diags)) return std::nullopt;
  return parse_config(text, path, diags);
}

bool apply_overrides(AgentConfig& config, const Overrides& flags, policy::Diagnostics& diags) {
  const std::size_t errors_before = diags.error_count();
  const policy::SourceLoc where{command_line(), 0, 0};
  if (!flags.policy.empty()) config.policy = flags.policy;
  if (flags.inventory) config.inventory = flags.inventory;
  if (flags.runtime_socket) config.runtime_socket = flags.runtime_socket;
  if (flags.api_socket) config.api.socket = *flags.api_socket;  // "" disables the API
  if (flags.node_name) config.node.name = *flags.node_name;
  if (flags.flow_log) config.flow_log_dir = *flags.flow_log;
  if (flags.flow_log_key) config.flow_log_key = *flags.flow_log_key;
  if (flags.ipfix) {
    std::string host;
    std::uint16_t port = 0;
    if (ipfix::parse_collector(*flags.ipfix, host, port)) {
      config.ipfix_collector = *flags.ipfix;
    } else {
      diags.error(where, "invalid --ipfix '" + *flags.ipfix + "': expected HOST:PORT");
    }
  }
  if (config.ipfix_collector && !config.flow_log_dir) {
    diags.error(where, "IPFIX export needs the flow log: set flowLog.dir or --flow-log DIR");
  }
  if (!flags.container_cidrs.empty()) {
    std::vector<Cidr> cidrs;
    for (const auto& text : flags.container_cidrs) {
      std::string why;
      auto c = Cidr::parse(text, &why);
      if (c) {
        cidrs.push_back(*c);
      } else {
        diags.error(where, "invalid --container-cidr '" + text + "': " + why);
      }
    }
    config.container_cidrs = std::move(cidrs);
  }
  if (flags.metrics) {
    std::string why;
    if (parse_host_port(*flags.metrics, &why)) {
      config.metrics_address = *flags.metrics;
    } else {
      diags.error(where, "invalid --metrics '" + *flags.metrics + "': " + why);
    }
  }
  if (flags.store) {
    auto parsed = store::parse_endpoints(*flags.store);
    if (parsed) {
      config.cluster.store = std::move(*parsed);
    } else {
      diags.error(where, "invalid --store '" + *flags.store + "': " + parsed.error().message);
    }
  }
  if (flags.cluster) {
    if (store::valid_cluster_name(*flags.cluster)) {
      config.cluster.name = *flags.cluster;
    } else {
      diags.error(where, "invalid --cluster '" + *flags.cluster +
                             "': lower-case letters, digits, '.' and '-', at most 63");
    }
  }
  if (config.cluster_mode()) {
    if (!config.policy.empty()) {
      diags.error(where,
                  "both a local policy and a cluster store are given: in cluster mode the policy "
                  "comes from the store; remove `policy:` / --policy (publish with tierctl apply "
                  "--store)");
    }
    if (!store::valid_node_name(config.node.name)) {
      diags.error(where, "node name '" + config.node.name +
                             "' cannot name a node in the cluster store: lower-case letters, "
                             "digits, '.' and '-', at most 63 (set node.name or --node-name)");
    }
  } else if (config.policy.empty()) {
    diags.error(where,
                "no policy given: set `policy:` in the config file or pass --policy PATH "
                "(or join a cluster with --store URL)");
  }
  return diags.error_count() == errors_before;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<HostPort> {
    if (error != nullptr) *error = why;
    return std::nullopt;
  };
  HostPort out;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after an IPv6 address");
    out.host = std::string(text.substr(1, close - 1));
    if (!IpAddress::parse(out.host) || IpAddress::parse(out.host)->is_v4()) {
      return fail("not an IPv6 address inside [ ]");
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') return fail("expected HOST:PORT");
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("expected HOST:PORT");
    out.host = std::string(text.substr(0, colon));
    if (out.host.find(':') != std::string::npos) {
      return fail("write an IPv6 address in brackets: [ADDR]:PORT");
    }
    port = text.substr(colon + 1);
  }
  if (out.host.empty()) return fail("the host is empty");
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || value > 65535) {
    return fail("the port must be a number in 0..65535");
  }
  out.port = static_cast<std::uint16_t>(value);
  return out;
}

}  // namespace tierwall::agent
