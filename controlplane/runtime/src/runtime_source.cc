#include "tierwall/runtime/runtime_source.h"

#include <algorithm>
#include <utility>

namespace tierwall::runtime {

RuntimeSource::RuntimeSource(Options options, RuntimeSourceCallbacks callbacks)
    : options_(std::move(options)), callbacks_(std::move(callbacks)) {}

RuntimeSource::~RuntimeSource() { stop(); }

void RuntimeSource::start() {
  if (thread_.joinable()) return;
  cancel_.reset();
  state_reported_ = false;
  thread_ = std::thread([this] { run(); });
}

void RuntimeSource::stop() {
  if (!thread_.joinable()) return;
  cancel_.cancel();
  thread_.join();
  connected_.store(false, std::memory_order_release);
}

void RuntimeSource::run() {
  const DockerClient client(options_.client, &cancel_);
  auto backoff = options_.initial_backoff;
  while (!cancel_.cancelled()) {
    SessionEnd end = session(client);
    if (cancel_.cancelled()) break;
    if (end.had_snapshot) backoff = options_.initial_backoff;
    set_state(false, end.reason);
    if (!cancel_.sleep_for(backoff)) break;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void RuntimeSource::set_state(bool connected, const std::string& reason) {
  if (state_reported_ && last_state_ == connected) return;
  state_reported_ = true;
  last_state_ = connected;
  connected_.store(connected, std::memory_order_release);
  if (callbacks_.on_state) callbacks_.on_state(connected, reason);
}

RuntimeSource::SessionEnd RuntimeSource::session(const DockerClient& client) {
  const std::string where = "unix://" + options_.client.socket_path;
  // Subscribe before listing: whatever happens during the listing is then
  // in the stream, and replaying it over the snapshot is harmless.
  auto stream = client.events();
  if (!stream) return {where + ": events: " + stream.error().message, false};
  auto list = client.list();
  if (!list) return {where + ": list: " + list.error().message, false};

  known_.clear();
  skipped_.clear();
  for (const auto& ep : list->endpoints) known_.emplace(ep.id, ep);
  for (const auto& s : list->skipped) skipped_.emplace(s.id, s.reason);
  const std::size_t n_endpoints = list->endpoints.size();
  const std::size_t n_skipped = list->skipped.size();
  // connected() holds from the moment the snapshot is delivered; the
  // on_state(true) callback follows it.
  connected_.store(true, std::memory_order_release);
  if (callbacks_.on_snapshot) callbacks_.on_snapshot(std::move(list->endpoints));
  if (callbacks_.on_skipped) {
    for (auto& s : list->skipped) callbacks_.on_skipped(std::move(s));
  }
  set_state(true, "connected to " + where + ": " + std::to_string(n_endpoints) + " container(s), " +
                      std::to_string(n_skipped) + " without an address");

  for (;;) {
    auto ev = stream->next(options_.ping_interval);
    if (!ev) {
      const Error& e = ev.error();
      if (e.kind == Error::Kind::Cancelled) return {"stopped", true};
      if (e.kind == Error::Kind::Timeout) {
        // A quiet stream, or a runtime that hangs without closing it.
        if (auto pong = client.ping(); !pong) {
          return {where + ": runtime stopped answering: " + pong.error().message, true};
        }
        continue;
      }
      if (e.kind == Error::Kind::Closed) return {where + ": event stream ended", true};
      if (e.kind == Error::Kind::Json) {
        // A lost event would leave stale identity; list again instead.
        return {where + ": unreadable event, resynchronising: " + e.message, true};
      }
      return {where + ": event stream: " + e.message, true};
    }
    std::string why;
    if (!apply(client, ev.value(), why)) return {where + ": " + why, true};
  }
}

void RuntimeSource::report_skipped(const std::string& id, const std::string& name,
                                   const std::string& reason) {
  auto [it, fresh] = skipped_.try_emplace(id, reason);
  if (!fresh && it->second == reason) return;
  it->second = reason;
  if (callbacks_.on_skipped) callbacks_.on_skipped({id, name, reason});
}

bool RuntimeSource::apply(const DockerClient& client, const RuntimeEvent& event, std::string& why) {
  EventTiming timing;
  timing.received = std::chrono::steady_clock::now();
  timing.received_wall = std::chrono::system_clock::now();
  timing.action = event.action;
  timing.runtime_ns = event.time_nano;

  // Forgets the container: skip reports too, unless it is skipped again.
  auto remove = [this](const std::string& id, bool forget_skip = true) {
    if (forget_skip) skipped_.erase(id);
    if (known_.erase(id) != 0 && callbacks_.on_remove) callbacks_.on_remove(id);
  };

  switch (effect_of(event)) {
    case EventEffect::Ignore:
      return true;
    case EventEffect::Remove:
      remove(event.id);
      return true;
    case EventEffect::Refresh:
      break;
  }

  auto in = client.inspect(event.id);
  if (!in) {
    // Resynchronise: the listing retries this container (and, should the
    // runtime still refuse to describe it, reports it skipped).
    why = "inspect " + event.id + " after '" + event.action + "': " + in.error().message;
    return false;
  }
  Inspection& c = in.value();
  const std::string& id = c.exists ? c.id : event.id;
  if (!c.exists || !c.running) {
    remove(id);
    return true;
  }
  if (!c.endpoint) {
    remove(id, false);
    report_skipped(id, c.name, c.skip_reason);
    return true;
  }
  skipped_.erase(id);
  auto it = known_.find(id);
  if (it != known_.end() && it->second == *c.endpoint) return true;  // nothing new
  known_.insert_or_assign(id, *c.endpoint);
  if (callbacks_.on_upsert) callbacks_.on_upsert(std::move(*c.endpoint), std::move(timing));
  return true;
}

}  // namespace tierwall::runtime
