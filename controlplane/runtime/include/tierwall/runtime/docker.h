// A Docker Engine API client over a unix socket, for container identities.
// Speaks the subset both Docker and Podman's `podman system service` serve:
//   GET /_ping                        liveness
//   GET /containers/json              running containers (ids only are used)
//   GET /containers/{id}/json         inspect: name, id, image, labels, addresses
//   GET /events?filters=...           a stream of one JSON object per line
//
// The JSON -> identity mapping is a set of pure functions (parse_*), so it is
// tested without a runtime; DockerClient adds the transport.
//
// Identity from inspect:
//   Endpoint.name      Name without its leading '/'
//   Endpoint.id        Id (64 hex digits)
//   Endpoint.image     Config.Image: the reference the container was run
//                      from, e.g. "reg.example/shop/web:1.4" (not the digest)
//   Endpoint.labels    Config.Labels
//   Endpoint.addresses NetworkSettings.Networks.*.IPAddress and
//                      .GlobalIPv6Address, plus NetworkSettings.IPAddress /
//                      .GlobalIPv6Address when set; sorted, unique
// A running container with no address (network=host, network=none,
// network=container:X) cannot be told apart by address: it is skipped with a
// reason, never guessed at.
//
// Thread contract: DockerClient is immutable and usable from several threads;
// an EventStream belongs to one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/identity/endpoint.h"
#include "tierwall/runtime/http.h"
#include "tierwall/runtime/result.h"

namespace tierwall::runtime {

// A running container tierwall cannot enforce by address, and why.
struct SkippedContainer {
  std::string id;
  std::string name;
  std::string reason;  // "network=host (shares the host's addresses)", ...

  friend bool operator==(const SkippedContainer&, const SkippedContainer&) = default;
};

// One full listing: every running container is in exactly one of the two.
struct ContainerList {
  std::vector<identity::Endpoint> endpoints;  // sorted by id
  std::vector<SkippedContainer> skipped;      // sorted by id
};

// What inspect says about one container.
struct Inspection {
  std::string id;
  std::string name;
  bool exists = true;  // false: the runtime answered 404
  bool running = false;
  std::optional<identity::Endpoint> endpoint;  // running and addressed
  std::string skip_reason;                     // running but not addressed: why
};

// One event of the /events stream, reduced to what identity needs.
struct RuntimeEvent {
  std::string type;            // "container", "network", ...
  std::string action;          // "start", "die", "destroy", "connect", ...
  std::string id;              // the container's id (also for network events)
  std::string name;            // Actor.Attributes.name, when present
  std::int64_t time_nano = 0;  // runtime's wall clock, ns since the epoch; 0 unknown
};

// What an event means for the container it names.
enum class EventEffect : std::uint8_t {
  Ignore,   // nothing identity cares about (create, exec, health, ...)
  Refresh,  // inspect again: start, die, stop, kill, rename, update,
            // network connect/disconnect, unpause, restore, cleanup (Podman,
            // after die: a second look in case inspect raced the exit)
  Remove,   // the container is gone: destroy (Docker), remove (Podman)
};
[[nodiscard]] EventEffect effect_of(const RuntimeEvent& event);

// Pure parsers of the API's JSON documents.
[[nodiscard]] Result<Inspection> parse_inspect(std::string_view json);
[[nodiscard]] Result<std::vector<std::string>> parse_container_ids(std::string_view json);
[[nodiscard]] Result<RuntimeEvent> parse_event(std::string_view json_line);

// The `filters` value the client sends to /events (URL-encoded by events()).
inline constexpr std::string_view kEventFilters = R"({"type":["container","network"]})";

class EventStream {
 public:
  // The next event. Errors as HttpStream::next_line (Timeout: nothing within
  // `idle`, the stream stays usable; Closed: the runtime ended the stream),
  // plus Json for a line that is not an event (the stream stays usable).
  Result<RuntimeEvent> next(std::optional<std::chrono::milliseconds> idle);

 private:
  friend class DockerClient;
  explicit EventStream(HttpStream stream) : stream_(std::move(stream)) {}
  HttpStream stream_;
};

class DockerClient {
 public:
  struct Options {
    std::string socket_path;  // e.g. /run/podman/podman.sock, /var/run/docker.sock
    // "" (default): unversioned paths, i.e. the newest API the daemon
    // speaks. "1.41": /v1.41/... paths.
    std::string api_version;
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds request_timeout{10000};
  };

  // `cancel`, when given, must outlive the client and its streams; it
  // interrupts every request and stream read in progress.
  explicit DockerClient(Options options, const Canceller* cancel = nullptr);

  // GET /_ping answers 200.
  [[nodiscard]] Result<bool> ping() const;

  // GET /containers/json, then inspect each. A container that vanishes
  // between the two is left out; any transport or protocol failure fails the
  // whole listing (a partial list is never returned as if it were complete).
  [[nodiscard]] Result<ContainerList> list() const;

  // GET /containers/json: the ids of the running containers only.
  [[nodiscard]] Result<std::vector<std::string>> list_ids() const;

  // GET /containers/{id}/json. 404 is a success with exists == false.
  [[nodiscard]] Result<Inspection> inspect(std::string_view id) const;

  // GET /events?filters=kEventFilters; returns once the runtime answered
  // 200 and its headers, i.e. from then on no event is missed.
  [[nodiscard]] Result<EventStream> events() const;

  [[nodiscard]] const Options& options() const { return options_; }

 private:
  [[nodiscard]] std::string path(std::string_view p) const;

  Options options_;
  UnixHttpClient http_;
};

}  // namespace tierwall::runtime
