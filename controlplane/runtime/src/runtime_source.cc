#include "tierwall/runtime/runtime_source.h"

#include <algorithm>
#include <array>
#include <utility>

namespace tierwall::runtime {

RuntimeSource::RuntimeSource(Options options, RuntimeSourceCallbacks callbacks)
    : options_(std::move(options)), callbacks_(std::move(callbacks)) {}

RuntimeSource::~RuntimeSource() { stop(); }

namespace {

// When, after a rescan() request, the running containers are listed again.
// Dense at first (a container usually runs 50-250 ms after its veth joined
// the bridge), then thinning out; each pass is one GET /containers/json.
constexpr std::array<int, 16> kRescanScheduleMs = {0,   10,  20,  35,  50,  70,  95,  125,
                                                   160, 200, 250, 320, 400, 550, 750, 1000};
// Removals remembered for rescans; older ones cannot matter to a pass.
constexpr std::size_t kGoneLimit = 4096;

}  // namespace

void RuntimeSource::start() {
  if (thread_.joinable()) return;
  cancel_.reset();
  state_reported_ = false;
  {
    std::lock_guard lock(rescan_mu_);
    stopping_ = false;
    rescan_requested_ = false;
  }
  thread_ = std::thread([this] { run(); });
  rescan_thread_ = std::thread([this] { rescan_loop(); });
}

void RuntimeSource::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(rescan_mu_);
    stopping_ = true;
  }
  rescan_cv_.notify_all();
  cancel_.cancel();
  thread_.join();
  if (rescan_thread_.joinable()) rescan_thread_.join();
  connected_.store(false, std::memory_order_release);
}

void RuntimeSource::rescan() {
  {
    std::lock_guard lock(rescan_mu_);
    rescan_requested_ = true;
  }
  rescan_cv_.notify_all();
}

void RuntimeSource::rescan_loop() {
  const DockerClient client(options_.client, &cancel_);
  std::unique_lock lock(rescan_mu_);
  for (;;) {
    rescan_cv_.wait(lock, [this] { return stopping_ || rescan_requested_; });
    if (stopping_) return;
    // One burst; a request during the burst starts the schedule again.
    auto begin = std::chrono::steady_clock::now();
    std::size_t step = 0;
    rescan_requested_ = false;
    while (step < kRescanScheduleMs.size()) {
      const auto due = begin + std::chrono::milliseconds{kRescanScheduleMs[step]};
      if (rescan_cv_.wait_until(lock, due, [this] { return stopping_ || rescan_requested_; })) {
        if (stopping_) return;
        rescan_requested_ = false;
        begin = std::chrono::steady_clock::now();
        step = 0;
        continue;
      }
      lock.unlock();
      if (connected()) rescan_pass(client);  // a new session lists everything anyway
      lock.lock();
      ++step;
    }
  }
}

void RuntimeSource::rescan_pass(const DockerClient& client) {
  std::uint64_t pass_start = 0;
  {
    std::lock_guard lock(mu_);
    pass_start = removals_;
  }
  auto ids = client.list_ids();
  if (!ids) return;  // the session notices a runtime that went away
  for (const auto& id : ids.value()) {
    {
      std::lock_guard lock(mu_);
      if (known_.count(id) != 0 || skipped_.count(id) != 0) continue;
    }
    EventTiming timing;
    timing.action = "rescan";
    auto in = client.inspect(id);
    timing.received = std::chrono::steady_clock::now();
    timing.received_wall = std::chrono::system_clock::now();
    timing.runtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            timing.received_wall.time_since_epoch())
                            .count();
    if (!in || !in->exists || !in->running || !in->endpoint) continue;  // events will tell
    std::lock_guard lock(mu_);
    // Removed by an event since this pass began listing: the listing may be
    // stale, never resurrect it. Already known (an event was faster): done.
    if (auto g = gone_.find(in->id); g != gone_.end() && g->second >= pass_start) continue;
    if (known_.count(in->id) != 0) continue;
    known_.emplace(in->id, *in->endpoint);
    if (callbacks_.on_upsert) callbacks_.on_upsert(std::move(*in->endpoint), std::move(timing));
  }
}

void RuntimeSource::remove_locked(const std::string& id, bool forget_skip) {
  gone_[id] = ++removals_;
  if (gone_.size() > kGoneLimit) {
    const std::uint64_t keep_from = removals_ - kGoneLimit / 2;
    std::erase_if(gone_, [&](const auto& kv) { return kv.second < keep_from; });
  }
  if (forget_skip) skipped_.erase(id);
  if (known_.erase(id) != 0 && callbacks_.on_remove) callbacks_.on_remove(id);
}

void RuntimeSource::run() {
  const DockerClient client(options_.client, &cancel_);
  auto backoff = options_.initial_backoff;
  while (!cancel_.cancelled()) {
    SessionEnd end = session(client);
    if (cancel_.cancelled()) break;
    if (end.had_snapshot) backoff = options_.initial_backoff;
    {
      std::lock_guard lock(mu_);
      set_state(false, end.reason);
    }
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

  const std::size_t n_endpoints = list->endpoints.size();
  const std::size_t n_skipped = list->skipped.size();
  {
    std::lock_guard lock(mu_);
    known_.clear();
    skipped_.clear();
    for (const auto& ep : list->endpoints) known_.emplace(ep.id, ep);
    for (const auto& s : list->skipped) skipped_.emplace(s.id, s.reason);
    // connected() holds from the moment the snapshot is delivered; the
    // on_state(true) callback follows it.
    connected_.store(true, std::memory_order_release);
    if (callbacks_.on_snapshot) callbacks_.on_snapshot(std::move(list->endpoints));
    if (callbacks_.on_skipped) {
      for (auto& s : list->skipped) callbacks_.on_skipped(std::move(s));
    }
    set_state(true, "connected to " + where + ": " + std::to_string(n_endpoints) +
                        " container(s), " + std::to_string(n_skipped) + " without an address");
  }

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

// Under mu_.
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
    std::lock_guard lock(mu_);
    remove_locked(id, forget_skip);
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
  std::lock_guard lock(mu_);
  if (!c.endpoint) {
    remove_locked(id, false);
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
