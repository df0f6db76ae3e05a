#include "tierwall/runtime/docker.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include <nlohmann/json.hpp>

namespace tierwall::runtime {

using nlohmann::json;

namespace {

// Non-throwing accessors: the API's documents are input, not trusted.
const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

const json* path_of(const json& j, std::initializer_list<const char*> keys) {
  const json* cur = &j;
  for (const char* k : keys) {
    cur = member(*cur, k);
    if (cur == nullptr) return nullptr;
  }
  return cur;
}

std::string string_at(const json& j, std::initializer_list<const char*> keys) {
  const json* v = path_of(j, keys);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

std::optional<json> parse_json(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string excerpt(std::string_view text) {
  constexpr std::size_t kMax = 120;
  std::string out(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return out;
}

// The runtime's explanation of an error status ({"message": "..."}), or
// the start of the body.
Error http_error(const std::string& what, int status, const std::string& reason,
                 std::string_view body) {
  std::string detail;
  if (auto j = parse_json(body)) detail = string_at(*j, {"message"});
  if (detail.empty()) detail = excerpt(body);
  std::string msg = what + ": HTTP " + std::to_string(status);
  if (!reason.empty()) msg += " " + reason;
  if (!detail.empty()) msg += ": " + detail;
  return Error::make(Error::Kind::Http, std::move(msg), status);
}

void add_address(std::vector<IpAddress>& out, const json* v) {
  if (v == nullptr || !v->is_string()) return;
  const auto& text = v->get_ref<const std::string&>();
  if (text.empty()) return;
  if (auto a = IpAddress::parse(text)) out.push_back(*a);
}

std::string skip_reason_for(const std::string& mode) {
  if (mode == "host") return "network=host (shares the host's addresses)";
  if (mode == "none") return "network=none (no network interfaces)";
  if (mode.rfind("container:", 0) == 0) {
    return "network=" + mode + " (shares another container's network namespace)";
  }
  return "no IP address on any network (network mode '" + mode + "')";
}

}  // namespace

EventEffect effect_of(const RuntimeEvent& event) {
  const std::string& a = event.action;
  if (event.type == "network") {
    return (a == "connect" || a == "disconnect") && !event.id.empty() ? EventEffect::Refresh
                                                                      : EventEffect::Ignore;
  }
  if (event.type != "container" || event.id.empty()) return EventEffect::Ignore;
  if (a == "destroy" || a == "remove") return EventEffect::Remove;
  if (a == "start" || a == "restart" || a == "die" || a == "stop" || a == "kill" || a == "oom" ||
      a == "rename" || a == "update" || a == "unpause" || a == "restore" || a == "cleanup") {
    return EventEffect::Refresh;
  }
  return EventEffect::Ignore;
}

Result<Inspection> parse_inspect(std::string_view text) {
  auto parsed = parse_json(text);
  if (!parsed || !parsed->is_object()) {
    return Error::make(Error::Kind::Json, "inspect: not a JSON object: " + excerpt(text));
  }
  const json& j = *parsed;
  Inspection out;
  out.id = string_at(j, {"Id"});
  if (out.id.empty()) return Error::make(Error::Kind::Json, "inspect: no Id: " + excerpt(text));
  out.name = string_at(j, {"Name"});
  if (!out.name.empty() && out.name.front() == '/') out.name.erase(0, 1);
  const json* running = path_of(j, {"State", "Running"});
  out.running = running != nullptr && running->is_boolean() && running->get<bool>();
  if (!out.running) return out;

  identity::Endpoint ep;
  ep.name = out.name;
  ep.id = out.id;
  ep.image = string_at(j, {"Config", "Image"});
  if (const json* labels = path_of(j, {"Config", "Labels"});
      labels != nullptr && labels->is_object()) {
    std::vector<std::pair<std::string, std::string>> kv;
    for (const auto& [k, v] : labels->items()) {
      kv.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());
    }
    ep.labels = identity::Labels(std::move(kv));
  }
  if (const json* ns = member(j, "NetworkSettings")) {
    add_address(ep.addresses, member(*ns, "IPAddress"));
    add_address(ep.addresses, member(*ns, "GlobalIPv6Address"));
    if (const json* nets = member(*ns, "Networks"); nets != nullptr && nets->is_object()) {
      for (const auto& [name, net] : nets->items()) {
        add_address(ep.addresses, member(net, "IPAddress"));
        add_address(ep.addresses, member(net, "GlobalIPv6Address"));
      }
    }
  }
  std::sort(ep.addresses.begin(), ep.addresses.end());
  ep.addresses.erase(std::unique(ep.addresses.begin(), ep.addresses.end()), ep.addresses.end());
  if (ep.addresses.empty()) {
    out.skip_reason = skip_reason_for(string_at(j, {"HostConfig", "NetworkMode"}));
    return out;
  }
  out.endpoint = std::move(ep);
  return out;
}

Result<std::vector<std::string>> parse_container_ids(std::string_view text) {
  auto parsed = parse_json(text);
  if (!parsed || !parsed->is_array()) {
    return Error::make(Error::Kind::Json, "container list: not a JSON array: " + excerpt(text));
  }
  std::vector<std::string> ids;
  for (const auto& c : *parsed) {
    std::string id = string_at(c, {"Id"});
    if (id.empty()) {
      return Error::make(Error::Kind::Json,
                         "container list: entry without Id: " + excerpt(c.dump()));
    }
    ids.push_back(std::move(id));
  }
  return ids;
}

Result<RuntimeEvent> parse_event(std::string_view line) {
  auto parsed = parse_json(line);
  if (!parsed || !parsed->is_object()) {
    return Error::make(Error::Kind::Json, "event: not a JSON object: " + excerpt(line));
  }
  const json& j = *parsed;
  RuntimeEvent ev;
  ev.type = string_at(j, {"Type"});
  ev.action = string_at(j, {"Action"});
  if (ev.action.empty()) ev.action = string_at(j, {"status"});  // pre-1.22 events
  // Docker names the container of a network event in Attributes.container
  // (Actor.ID is the network); Podman puts the container in Actor.ID.
  ev.id = string_at(j, {"Actor", "Attributes", "container"});
  if (ev.id.empty()) ev.id = string_at(j, {"Actor", "ID"});
  if (ev.id.empty()) ev.id = string_at(j, {"id"});
  ev.name = string_at(j, {"Actor", "Attributes", "name"});
  if (const json* tn = member(j, "timeNano"); tn != nullptr && tn->is_number_integer()) {
    ev.time_nano = tn->get<std::int64_t>();
  } else if (const json* t = member(j, "time"); t != nullptr && t->is_number_integer()) {
    ev.time_nano = t->get<std::int64_t>() * 1'000'000'000;
  }
  if (ev.type.empty() || ev.action.empty()) {
    return Error::make(Error::Kind::Json, "event: no Type or Action: " + excerpt(line));
  }
  return ev;
}

Result<RuntimeEvent> EventStream::next(std::optional<std::chrono::milliseconds> idle) {
  auto line = stream_.next_line(idle);
  if (!line) return line.error();
  return parse_event(line.value());
}

DockerClient::DockerClient(Options options, const Canceller* cancel)
    : options_(std::move(options)),
      http_(UnixHttpClient::Options{.socket_path = options_.socket_path,
                                    .connect_timeout = options_.connect_timeout,
                                    .request_timeout = options_.request_timeout},
            cancel) {}

std::string DockerClient::path(std::string_view p) const {
  if (options_.api_version.empty()) return std::string(p);
  return "/v" + options_.api_version + std::string(p);
}

Result<bool> DockerClient::ping() const {
  const std::string target = path("/_ping");
  auto r = http_.request("GET", target);
  if (!r) return r.error();
  if (r->status != 200) return http_error("GET " + target, r->status, r->reason, r->body);
  return true;
}

Result<Inspection> DockerClient::inspect(std::string_view id) const {
  const std::string target = path("/containers/" + percent_encode(id) + "/json");
  auto r = http_.request("GET", target);
  if (!r) return r.error();
  // Podman answers 500 "no such container" for a container it is removing.
  if (r->status == 404 ||
      (r->status == 500 && lower(r->body).find("no such container") != std::string::npos)) {
    Inspection gone;
    gone.id = std::string(id);
    gone.exists = false;
    return gone;
  }
  if (r->status != 200) return http_error("GET " + target, r->status, r->reason, r->body);
  return parse_inspect(r->body);
}

Result<std::vector<std::string>> DockerClient::list_ids() const {
  const std::string target = path("/containers/json");
  auto r = http_.request("GET", target);
  if (!r) return r.error();
  if (r->status != 200) return http_error("GET " + target, r->status, r->reason, r->body);
  return parse_container_ids(r->body);
}

Result<ContainerList> DockerClient::list() const {
  auto ids = list_ids();
  if (!ids) return ids.error();

  ContainerList out;
  for (const auto& id : ids.value()) {
    auto in = inspect(id);
    if (!in && in.error().kind == Error::Kind::Http) {
      // The runtime answers, but not about this one: leave it unidentified
      // (the dataplane quarantines unknown addresses) rather than fail all.
      out.skipped.push_back({id, "", "inspect failed: " + in.error().message});
      continue;
    }
    if (!in) return in.error();
    Inspection& c = in.value();
    if (!c.exists || !c.running) continue;  // gone or stopped since the listing
    if (c.endpoint) {
      out.endpoints.push_back(std::move(*c.endpoint));
    } else {
      out.skipped.push_back({c.id, c.name, c.skip_reason});
    }
  }
  std::sort(out.endpoints.begin(), out.endpoints.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  std::sort(out.skipped.begin(), out.skipped.end(),
            [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

Result<EventStream> DockerClient::events() const {
  const std::string target = path("/events") + "?filters=" + percent_encode(kEventFilters);
  auto s = http_.stream(target);
  if (!s) return s.error();
  if (s->status() != 200) {
    auto body = s->read_all(std::chrono::milliseconds(1000));
    return http_error("GET " + target, s->status(), s->head().reason,
                      body ? std::string_view(body.value()) : std::string_view());
  }
  return EventStream(std::move(s.value()));
}

}  // namespace tierwall::runtime
