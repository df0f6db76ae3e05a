// The live identity source: every running container of a Docker-API runtime
// (Docker, or Podman's `podman system service`), kept current from events.
//
// One background thread runs sessions. A session:
//   1. opens GET /events (from here on no event is missed),
//   2. lists every running container and delivers on_snapshot (a complete
//      replacement of what the consumer knows from this source), then
//      on_state(true, ...),
//   3. applies events until the stream fails: start, network (dis)connect,
//      rename, die, stop, ... inspect the container and upsert or remove it;
//      destroy/remove remove it. Events already reflected by the snapshot
//      are harmless: upserts of an unchanged endpoint and removes of an
//      unknown id are not delivered.
// When the session fails (runtime down, stream ended, a request failed, the
// stream idle longer than ping_interval and /_ping unanswered) on_state
// (false, reason) is delivered, and after a backoff (initial_backoff,
// doubling up to max_backoff; reset after a session that delivered a
// snapshot) a new session starts — with a new snapshot.
//
// Fail closed: an error is never taken to mean "no containers". No snapshot
// is delivered for a listing that failed, and nothing is removed because the
// runtime cannot be reached: while disconnected the consumer keeps the last
// state it was given, and decides itself (from on_state) what that means.
//
// Rescans: the runtime's event stream can lag well behind the container
// (Podman's file event logger delivers events up to ~250 ms late), while
// the container's network is up before its start event is even stamped.
// rescan() (from any thread; the agent calls it when a network port joins
// a bridge) makes a second thread list the running containers a few times
// over the next ~800 ms and upsert those not known yet — so a new
// container is usually identified before its start event arrives. A
// container removed by an event while a rescan was listing is never
// re-added by that rescan (no ghosts), and an unchanged upsert is not
// delivered twice.
//
// Thread contract: callbacks run on the source's threads (the session
// thread and the rescan thread), one at a time (under one mutex), in the
// order of what the source learned; they must not block for long and must
// not call stop() or rescan(). start() and stop() are for the owning
// thread; connected() and rescan() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tierwall/identity/endpoint.h"
#include "tierwall/runtime/docker.h"
#include "tierwall/runtime/http.h"

namespace tierwall::runtime {

// When the event behind an upsert happened and when it reached us, for the
// "start event -> enforced" latency.
struct EventTiming {
  std::string action;           // "start", "connect", "rename", ...
  std::int64_t runtime_ns = 0;  // the runtime's timeNano (wall clock, ns since epoch)
  std::chrono::system_clock::time_point received_wall;  // comparable to runtime_ns
  std::chrono::steady_clock::time_point received;       // for local intervals
};

struct RuntimeSourceCallbacks {
  // The complete set of addressed running containers, sorted by id. Replaces
  // everything earlier snapshots and deltas said.
  std::function<void(std::vector<identity::Endpoint>)> on_snapshot;
  // A container appeared or its identity/addresses changed.
  std::function<void(identity::Endpoint, EventTiming)> on_upsert;
  // A container the source reported (snapshot or upsert) is gone: stopped,
  // removed, or left without an address. Its id.
  std::function<void(std::string)> on_remove;
  // A running container that cannot be enforced by address (network=host,
  // ...). Delivered with each snapshot and when an event reveals one.
  std::function<void(SkippedContainer)> on_skipped;
  // Connected (a snapshot was just delivered) or disconnected, and why.
  // Delivered on changes only, and once for the first failure.
  std::function<void(bool connected, std::string reason)> on_state;
};

class RuntimeSource {
 public:
  struct Options {
    DockerClient::Options client;
    std::chrono::milliseconds initial_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
    // An event stream quiet this long is checked with GET /_ping.
    std::chrono::milliseconds ping_interval{10000};
  };

  RuntimeSource(Options options, RuntimeSourceCallbacks callbacks);
  ~RuntimeSource();  // stop()
  RuntimeSource(const RuntimeSource&) = delete;
  RuntimeSource& operator=(const RuntimeSource&) = delete;

  // Starts the threads. No effect when running.
  void start();
  // Asks for a burst of listings (see above). Cheap; coalesces.
  void rescan();
  // Interrupts any request, stream read or backoff sleep, and joins the
  // thread (promptly: no timeout is waited out). No callbacks run after it
  // returns. Idempotent.
  void stop();

  [[nodiscard]] bool connected() const { return connected_.load(std::memory_order_acquire); }

 private:
  struct SessionEnd {
    std::string reason;
    bool had_snapshot = false;
  };

  void run();
  SessionEnd session(const DockerClient& client);
  // false: the session must end (the reason is in `why`).
  bool apply(const DockerClient& client, const RuntimeEvent& event, std::string& why);
  void set_state(bool connected, const std::string& reason);
  void report_skipped(const std::string& id, const std::string& name, const std::string& reason);
  void rescan_loop();
  void rescan_pass(const DockerClient& client);
  // Under mu_: forget `id` and tell the consumer; remember the removal.
  void remove_locked(const std::string& id, bool forget_skip);

  Options options_;
  RuntimeSourceCallbacks callbacks_;
  Canceller cancel_;
  std::thread thread_;
  std::thread rescan_thread_;
  std::atomic<bool> connected_{false};

  // What the consumer has been told, by id; guarded by mu_, as is every
  // callback invocation.
  std::mutex mu_;
  std::map<std::string, identity::Endpoint> known_;
  std::map<std::string, std::string> skipped_;  // id -> reason reported
  // Removals by events: id -> removal number (removals_ when it happened).
  std::map<std::string, std::uint64_t> gone_;
  std::uint64_t removals_ = 0;
  bool state_reported_ = false;
  bool last_state_ = false;

  // Rescan requests.
  std::mutex rescan_mu_;
  std::condition_variable rescan_cv_;
  bool rescan_requested_ = false;
  bool stopping_ = false;
};

}  // namespace tierwall::runtime
