#include "tierwall/agent/daemon.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <span>
#include <sstream>
#include <string>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include "tierwall/agent/api.h"
#include "tierwall/agent/http_server.h"
#include "tierwall/agent/link_monitor.h"
#include "tierwall/agent/metrics.h"
#include "tierwall/agent/once.h"
#include "tierwall/agent/reconciler.h"
#include "tierwall/cluster/cluster_source.h"
#include "tierwall/dataplane/nft/backend.h"
#include "tierwall/dataplane/nft/ct_events.h"
#include "tierwall/dataplane/nft/monitor.h"
#include "tierwall/dataplane/nft/nflog.h"
#include "tierwall/flowlog/record.h"
#include "tierwall/flowlog/writer.h"
#include "tierwall/flowpipe/dpdk_events.h"
#include "tierwall/flowpipe/enricher.h"
#include "tierwall/identity/inventory.h"
#include "tierwall/ipfix/ipfix.h"
#include "tierwall/runtime/runtime_source.h"
#include "tierwall/store/layout.h"

#ifdef TIERWALL_HAVE_DPDK
#include "tierwall/dataplane/dpdk/dpdk_dataplane.h"
#include "tierwall/dataplane/dpdk/overlay.h"
#include "tierwall/dataplane/dpdk/parser.h"
#endif

namespace tierwall::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Structured logs through spdlog: one line per event, a message plus
// key=value fields (text) or one JSON object per line (json).
using Fields = std::vector<std::pair<std::string, std::string>>;

// `s` as a JSON string literal, quotes included (the flow log's escaping).
std::string json_quote(std::string_view s) {
  std::string out;
  flowlog::append_json_string(out, s);
  return out;
}

class Logger {
 public:
  Logger(std::ostream& out, bool json) : json_(json) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out, /*force_flush=*/true);
    logger_ = std::make_shared<spdlog::logger>("tierwalld", std::move(sink));
    logger_->set_pattern(json ? R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})"
                              : "%Y-%m-%dT%H:%M:%S.%eZ tierwalld %l %v",
                         spdlog::pattern_time_type::utc);
    logger_->set_level(spdlog::level::info);
  }
  void log(spdlog::level::level_enum level, const std::string& message, const Fields& fields) {
    std::string line;
    if (json_) {
      line = "\"msg\":" + json_quote(message);
      for (const auto& [k, v] : fields) line += "," + json_quote(k) + ":" + json_quote(v);
    } else {
      line = message;
      for (const auto& [k, v] : fields) {
        const bool quote = v.empty() || v.find_first_of(" \"=") != std::string::npos;
        line += " " + k + "=" + (quote ? json_quote(v) : v);
      }
    }
    logger_->log(level, spdlog::string_view_t(line));
  }
  void info(const std::string& m, const Fields& f = {}) { log(spdlog::level::info, m, f); }
  void warn(const std::string& m, const Fields& f = {}) { log(spdlog::level::warn, m, f); }
  void error(const std::string& m, const Fields& f = {}) { log(spdlog::level::err, m, f); }
  // Every line of `diags`, as printed for the command line.
  void diagnostics(const policy::Diagnostics& diags) {
    std::ostringstream text;
    diags.print(text);
    std::string l;
    std::istringstream in(text.str());
    while (std::getline(in, l)) {
      if (!l.empty()) error("  " + l);
    }
  }

 private:
  bool json_;
  std::shared_ptr<spdlog::logger> logger_;
};

// Passes the reconciler's calls to the kernel while open; while closed
// (enforcement flushed by an admin) they succeed without touching it, and
// Reconciler::reapply() brings everything back once it opens again.
class Gate final : public dataplane::Dataplane {
 public:
  explicit Gate(dataplane::Dataplane& inner) : inner_(inner) {}
  bool open = true;
  std::optional<dataplane::DataplaneError> apply(const dataplane::RuleSet& rules) override {
    return open ? inner_.apply(rules) : std::nullopt;
  }
  std::optional<dataplane::DataplaneError> update_endpoints(
      std::span<const dataplane::EndpointChange> changes) override {
    return open ? inner_.update_endpoints(changes) : std::nullopt;
  }
  std::optional<dataplane::DataplaneError> flush() override { return inner_.flush(); }

 private:
  dataplane::Dataplane& inner_;
};

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  [[nodiscard]] int get() const { return fd_; }

 private:
  int fd_;
};

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::string ms_text(std::chrono::nanoseconds d) {
  std::ostringstream s;
  s << std::chrono::duration<double, std::milli>(d).count() << " ms";
  return s.str();
}

// Restores the signal mask of the calling thread on scope exit.
class SignalMask {
 public:
  explicit SignalMask(const sigset_t& block) { pthread_sigmask(SIG_BLOCK, &block, &saved_); }
  ~SignalMask() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  SignalMask(const SignalMask&) = delete;
  SignalMask& operator=(const SignalMask&) = delete;

 private:
  sigset_t saved_{};
};

enum class WatchKind : std::uint8_t { Policy, Inventory };

struct Watch {
  int wd = -1;
  WatchKind kind = WatchKind::Policy;
  std::optional<std::string> name;  // only this entry of the directory; nullopt = any
};

// Callbacks posted by other threads, run by the control thread.
class PostQueue {
 public:
  PostQueue() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  [[nodiscard]] int fd() const { return fd_.get(); }
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(fn));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
  }
  void drain() {
    std::uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(fd_.get(), &count, sizeof count);
    std::deque<std::function<void()>> items;
    {
      std::lock_guard lock(mu_);
      items.swap(items_);
    }
    for (auto& fn : items) fn();
  }

 private:
  Fd fd_;
  std::mutex mu_;
  std::deque<std::function<void()>> items_;
};

std::string describe(const identity::Endpoint& ep) {
  std::string s = ep.name.empty() ? ep.id.substr(0, 12) : ep.name;
  s += " [";
  for (std::size_t i = 0; i < ep.addresses.size(); ++i) {
    if (i > 0) s += " ";
    s += ep.addresses[i].to_string();
  }
  return s + "]";
}

// The flow log's view of addresses: the reconciler's endpoints, the node's
// addresses, the container networks.
class ReconcilerLookup final : public flowpipe::IdentityLookup {
 public:
  ReconcilerLookup(const Reconciler& reconciler, std::vector<IpAddress> node,
                   std::vector<Cidr> containers)
      : reconciler_(reconciler), node_(std::move(node)), containers_(std::move(containers)) {}
  std::optional<flowpipe::Identity> endpoint(const IpAddress& address) const override {
    auto v = reconciler_.find_address(address);
    if (!v) return std::nullopt;
    return flowpipe::Identity{std::move(v->name), std::move(v->runtime_id), std::move(v->image),
                              std::move(v->tier)};
  }
  bool is_node(const IpAddress& address) const override {
    return std::find(node_.begin(), node_.end(), address) != node_.end();
  }
  bool in_container_cidr(const IpAddress& address) const override {
    return std::any_of(containers_.begin(), containers_.end(),
                       [&](const Cidr& c) { return c.contains(address); });
  }

 private:
  const Reconciler& reconciler_;
  std::vector<IpAddress> node_;
  std::vector<Cidr> containers_;
};

class Daemon final : public AgentControl {
 public:
  Daemon(const AgentConfig& config, const DaemonOptions& options, std::ostream& log)
      : config_(config), options_(options), log_(log, options.log_json) {}

  int run();

  // AgentControl: the local API's requests, on the control thread.
  AgentState state() override;
  std::vector<EndpointView> endpoints() override { return reconciler_->endpoints(); }
  ReloadResult reload(const Caller& caller) override;
  ApplyResult apply(const Caller& caller, std::vector<policy::SourceFile> files) override;
  bool flush(const Caller& caller, std::string* error) override;
  HttpResponse flows(const Caller& caller, const QueryParams& params) override;

 private:
  bool setup_watches();
  void add_watch(const std::string& path, WatchKind kind);
  void read_inotify();
  PolicyResult reload_policy(const std::string& why, const std::string& who = "");
  bool reload_inventory(const std::string& why, policy::Diagnostics* out = nullptr);
  void resume(const std::string& who);
  void start_runtime();
  void start_cluster(const std::vector<IpAddress>& node_addresses);
  void cluster_policy(cluster::PublishedPolicy published);
  void publish_local();
  bool sources_ready() const;
  void after_change(const std::string& what);
  void check_dataplane();
  void open_monitor();
  void read_monitor();
  void repair_drift();
  void start_metrics();
  void start_api();
  void start_flow_log(const std::vector<IpAddress>& node_addresses);
  void flow_policy(const std::string& by);
  void flow_events(bool conntrack);
  void flow_event(const dataplane::nft::RawFlowEvent& e);
  void stop_flow_log();
  void start_kernel_flow_events();
  bool open_nft(const std::vector<IpAddress>& node_addresses, bool& adopt);
  bool open_dpdk();
  void drain_dpdk(bool all);
  std::optional<DpdkMetrics> dpdk_metrics() const;
  // Where the policy is enforced, for logs: "table inet NAME" or "the DPDK dataplane".
  std::string enforced_in() const {
    return use_dpdk_ ? "the DPDK dataplane" : "table inet " + config_.nft.table;
  }
  void observe_latencies();
  std::string not_ready() const;
  HttpResponse serve_http(const HttpRequest& request);

  const AgentConfig& config_;
  DaemonOptions options_;
  Logger log_;
  std::unique_ptr<dataplane::nft::NftBackend> backend_;  // dataplane: nft
#ifdef TIERWALL_HAVE_DPDK
  std::unique_ptr<dataplane::dpdk::DpdkDataplane> dpdk_;  // dataplane: dpdk
#endif
  dataplane::Dataplane* dataplane_ = nullptr;  // the one of the two that runs
  bool use_dpdk_ = false;
  std::unique_ptr<Gate> gate_;
  std::unique_ptr<Reconciler> reconciler_;
  Fd inotify_;
  std::vector<Watch> watches_;
  PostQueue queue_;
  std::unique_ptr<runtime::RuntimeSource> runtime_;  // after queue_: stopped first
  std::optional<LinkMonitor> links_;                 // rescan hints for runtime_
  std::unique_ptr<cluster::ClusterSource> cluster_;  // after queue_: stopped first

  // Cluster mode: the store's latest valid-or-not policy and what became of it.
  std::optional<std::vector<policy::SourceFile>> store_policy_;
  store::PolicyMeta store_meta_;
  std::string store_rejected_;    // why store_policy_ was not applied; empty when it was
  bool cluster_ready_ = false;    // the first remote-endpoint snapshot arrived
  bool local_dirty_ = false;      // local endpoints changed since the last publish
  std::string published_digest_;  // what set_enforced() was last told

  bool inventory_ready_ = false;
  bool runtime_ready_ = false;
  bool holding_ = false;    // adopting: the first apply waits for the sources
  bool suspended_ = false;  // flushed through the API until the next apply/reload
  std::string suspended_by_;
  Clock::time_point started_at_ = Clock::now();
  std::optional<Clock::time_point> policy_due_;
  std::optional<Clock::time_point> inventory_due_;
  bool dataplane_ok_ = true;

  // Drift repair: changes by others to our table, seen on NFNLGRP_NFTABLES.
  std::optional<dataplane::nft::ChangeMonitor> monitor_;
  dataplane::nft::ChangeReport drift_;             // accumulated, not yet repaired
  std::optional<Clock::time_point> drift_due_;     // repair at the latest then
  Clock::time_point drift_seen_{};                 // first notification of drift_
  std::optional<Clock::time_point> last_overrun_;  // last repair caused by ENOBUFS

  // Metrics and health endpoints, and the local API, served by the poll loop.
  std::unique_ptr<HttpServer> metrics_;
  std::unique_ptr<ApiHandler> api_handler_;
  std::unique_ptr<HttpServer> api_;
  LatencyHistogram apply_latency_;

  // The flow log (flowLog.dir): kernel events -> enricher -> writer.
  std::unique_ptr<flowlog::FlowLogWriter> flowlog_;
  std::optional<dataplane::nft::NflogSource> nflog_;
  std::optional<dataplane::nft::ConntrackEventSource> conntrack_;
  std::unique_ptr<ReconcilerLookup> lookup_;
  std::unique_ptr<flowpipe::Enricher> enricher_;
  std::uint64_t flow_generation_ = 0;            // the last generation written as a policy record
  std::unique_ptr<ipfix::IpfixExporter> ipfix_;  // flowLog.ipfix.collector
  flowpipe::DpdkLossTracker dpdk_loss_;          // lcore losses -> loss records
  std::optional<Clock::time_point> next_dpdk_drain_;
};

// A foreign commit is announced as its messages, then NEWGEN: a change is
// repaired once NEWGEN arrived, or after this when it did not (yet).
constexpr std::chrono::milliseconds kDriftSettle{30};
// Lost notifications (ENOBUFS) trigger at most one repair per this period,
// so that the notifications of our own repair cannot loop.
constexpr std::chrono::milliseconds kOverrunHoldoff{2000};

void Daemon::add_watch(const std::string& path, WatchKind kind) {
  struct stat st {};
  std::string dir;
  std::optional<std::string> name;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    dir = path;
  } else {
    const auto slash = path.find_last_of('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    name = slash == std::string::npos ? path : path.substr(slash + 1);
  }
  const int wd = ::inotify_add_watch(inotify_.get(), dir.c_str(),
                                     IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM |
                                         IN_CREATE | IN_DELETE | IN_ATTRIB | IN_ONLYDIR);
  if (wd < 0) {
    log_.warn(
        errno_text(("cannot watch " + dir + " (changes to " + path + " need SIGHUP)").c_str()));
    return;
  }
  watches_.push_back(Watch{wd, kind, name});
}

bool Daemon::setup_watches() {
  inotify_ = Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (inotify_.get() < 0) {
    log_.warn(errno_text("inotify_init1 (files are reloaded on SIGHUP only)"));
    return false;
  }
  for (const auto& p : config_.policy) add_watch(p, WatchKind::Policy);
  if (config_.inventory) add_watch(*config_.inventory, WatchKind::Inventory);
  return true;
}

void Daemon::read_inotify() {
  alignas(inotify_event) char buf[8192];
  for (;;) {
    const ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n <= 0) return;
    for (ssize_t off = 0; off < n;) {
      inotify_event ev{};
      std::memcpy(&ev, buf + off, sizeof ev);
      const std::string name = ev.len > 0 ? std::string(buf + off + sizeof ev) : std::string();
      off += static_cast<ssize_t>(sizeof ev + ev.len);
      const std::string entry(name.c_str());  // up to the first NUL (padding)
      for (const auto& w : watches_) {
        if (w.wd != ev.wd) continue;
        if (w.name && *w.name != entry) continue;
        auto& due = w.kind == WatchKind::Policy ? policy_due_ : inventory_due_;
        due = Clock::now() + options_.settle;
      }
    }
  }
}

void Daemon::observe_latencies() {
  for (const auto d : reconciler_->take_latencies()) apply_latency_.observe(d);
}

void Daemon::start_metrics() {
  std::string error;
  const auto address = parse_host_port(config_.metrics_address, &error);
  if (address) {
    metrics_ = HttpServer::open_tcp(
        *address, HttpServer::Options{}, [this](const HttpRequest& r) { return serve_http(r); },
        &error);
  }
  if (!metrics_) {
    log_.warn("metrics and health endpoints not served: " + config_.metrics_address + ": " + error);
    return;
  }
  log_.info("metrics on http://" + config_.metrics_address + "/metrics (/healthz, /readyz)");
}

void Daemon::start_api() {
  if (config_.api.socket.empty()) {
    log_.info("local API disabled (api.socket is empty)");
    return;
  }
  std::string error;
  auto roles = resolve_roles(config_.api, &error);
  HttpServer::UnixOptions unix;
  if (roles && config_.api.group) {
    unix.group = resolve_group(*config_.api.group, &error);
    if (!unix.group) roles.reset();
  }
  if (!roles) {
    log_.error("local API not served: api configuration: " + error);
    return;
  }
  api_handler_ = std::make_unique<ApiHandler>(
      *this, std::move(*roles), [this](const Caller& c, std::string_view action, Role required) {
        log_.warn("api: refused " + std::string(action) + " to " + c.describe(),
                  {{"event", "api-refused"},
                   {"action", std::string(action)},
                   {"uid", std::to_string(c.peer.uid)},
                   {"gid", std::to_string(c.peer.gid)},
                   {"pid", std::to_string(c.peer.pid)},
                   {"role", std::string(to_string(c.role))},
                   {"required", std::string(to_string(required))}});
      });
  HttpServer::Options opts;
  opts.max_body = ApiHandler::kMaxBody;
  api_ = HttpServer::open_unix(
      config_.api.socket, unix, opts,
      [this](const HttpRequest& r) { return api_handler_->handle(r); }, &error);
  if (!api_) {
    log_.error("local API not served: " + error);
    return;
  }
  log_.info("local API on " + config_.api.socket + " (mode 0660" +
            (config_.api.group ? ", group " + *config_.api.group : std::string()) + ")");
}

std::string Daemon::not_ready() const {
  const auto& st = reconciler_->core_status();
  if (holding_) return "adopting the existing table: waiting for the identity sources";
  if (suspended_) return "enforcement flushed through the API by " + suspended_by_;
  if (st.generation == 0) return "no valid policy applied yet";
  if (!st.dataplane_ok) return "dataplane error: " + st.dataplane_error;
  if (st.applied_generation != st.generation) {
    return "policy generation " + std::to_string(st.generation) + " not applied yet";
  }
  return {};
}

HttpResponse Daemon::serve_http(const HttpRequest& request) {
  return health_response(
      request,
      [this] {
        observe_latencies();
        ExtraCounters extra;
        extra.apply_duration = apply_latency_;
        extra.source_configured[static_cast<std::size_t>(Source::Inventory)] =
            config_.inventory.has_value();
        extra.source_configured[static_cast<std::size_t>(Source::Runtime)] =
            config_.runtime_socket.has_value();
        extra.source_configured[static_cast<std::size_t>(Source::Cluster)] = config_.cluster_mode();
        if (cluster_) extra.cluster = cluster_->status();
        if (backend_) {
          try {
            const auto* c = reconciler_->compilation();
            extra.rules =
                name_rule_counters(c ? c->policy().get() : nullptr, backend_->rule_counters());
          } catch (const std::exception& e) {
            log_.warn(std::string("metrics: cannot read rule counters: ") + e.what());
          }
        }
        extra.dpdk = dpdk_metrics();
        return render_metrics(reconciler_->status(), extra);
      },
      [this] { return not_ready(); });
}

AgentState Daemon::state() {
  AgentState s;
  s.node = config_.node.name;
  s.table = use_dpdk_ ? std::string() : config_.nft.table;
  s.dataplane = config_.dataplane;
  s.version = "0.1.0";
  s.holding = holding_;
  s.suspended = suspended_;
  s.suspended_by = suspended_by_;
  s.not_ready = not_ready();
  s.policy_paths = config_.policy;
  s.uptime_seconds = std::chrono::duration<double>(Clock::now() - started_at_).count();
  s.sources_configured[static_cast<std::size_t>(Source::Inventory)] = config_.inventory.has_value();
  s.sources_configured[static_cast<std::size_t>(Source::Runtime)] =
      config_.runtime_socket.has_value();
  s.sources_configured[static_cast<std::size_t>(Source::Cluster)] = config_.cluster_mode();
  s.reconciler = reconciler_->status();
  if (cluster_) {
    s.cluster = AgentState::Cluster{config_.cluster.name, config_.cluster.store, cluster_->status(),
                                    store_rejected_};
  }
  return s;
}

void Daemon::resume(const std::string& who) {
  if (!suspended_) return;
  suspended_ = false;
  suspended_by_.clear();
  gate_->open = true;
  const bool ok = reconciler_->reapply();
  const auto& st = reconciler_->core_status();
  if (ok) {
    log_.info("enforcement resumed by " + who + ": generation " +
                  std::to_string(st.applied_generation) + " applied to " + enforced_in(),
              {{"event", "resumed"}, {"by", who}});
  }
  check_dataplane();
}

ReloadResult Daemon::reload(const Caller& caller) {
  const std::string who = caller.describe();
  log_.info("api: reload requested by " + who);
  ReloadResult r;
  r.inventory_configured = config_.inventory.has_value();
  if (r.inventory_configured) {
    r.inventory_ok = reload_inventory("reload by " + who, &r.inventory_diagnostics);
  }
  if (holding_) {
    r.policy.accepted = false;
    policy::Diagnostics d;
    d.error(policy::SourceLoc{},
            "the agent is adopting its existing table; the policy is read once every identity "
            "source has reported");
    r.policy.diagnostics = std::move(d);
  } else {
    r.policy = reload_policy("reload", who);
    policy_due_.reset();
    if (r.policy.accepted) resume(who);
  }
  r.after = reconciler_->status();
  return r;
}

ApplyResult Daemon::apply(const Caller& caller, std::vector<policy::SourceFile> files) {
  const std::string who = caller.describe();
  ApplyResult r;
  if (config_.cluster_mode()) {
    r.status = 409;
    r.error = "this agent follows the policy of cluster " + config_.cluster.name +
              " in its store: publish with `tierctl apply PATH --store URL` instead";
    r.after = reconciler_->status();
    return r;
  }
  // 1. Validate what was sent, under the caller's file names.
  policy::load_policy_sources(files, r.diagnostics);
  if (r.diagnostics.has_errors()) {
    r.status = 422;
    r.error = "the policy is invalid: " + std::to_string(r.diagnostics.error_count()) +
              " error(s); nothing was changed";
    log_.error("api: policy from " + who + " rejected: " + r.error,
               {{"event", "policy-rejected"}, {"by", who}});
    log_.diagnostics(r.diagnostics);
    r.after = reconciler_->status();
    return r;
  }
  if (holding_) {
    r.status = 409;
    r.error = "the agent is adopting its existing table; try again once it is ready";
    r.after = reconciler_->status();
    return r;
  }
  // 2. Where it goes, and the exact bytes to be written: validated again.
  std::string error;
  auto install = plan_policy_install(config_.policy, files, &error);
  if (!install) {
    r.status = 409;
    r.error = error;
    log_.error("api: policy from " + who + " not installed: " + error);
    r.after = reconciler_->status();
    return r;
  }
  policy::Diagnostics target_diags;
  policy::load_policy_sources(install->files, target_diags);
  if (target_diags.has_errors()) {
    r.status = 500;
    r.error = "the policy as it would be written on the agent is invalid; nothing was changed";
    r.diagnostics = std::move(target_diags);
    r.after = reconciler_->status();
    return r;
  }
  // 3. Write it (atomically per file), then load it from there: the files
  //    stay the agent's policy across restarts, and reloads of them are
  //    recognised as unchanged by digest.
  if (!write_policy_install(*install, &r.written, &error)) {
    r.status = 500;
    r.error = "cannot write the policy: " + error;
    log_.error("api: policy from " + who + " not installed: " + error);
    r.after = reconciler_->status();
    return r;
  }
  const auto result = reload_policy("tierctl apply", who);
  policy_due_.reset();
  r.diagnostics = result.diagnostics;
  r.unchanged = result.unchanged;
  if (!result.accepted) {
    r.status = 500;
    r.error = "the installed policy files did not load";
  } else {
    resume(who);
  }
  r.after = reconciler_->status();
  return r;
}

HttpResponse Daemon::flows(const Caller& caller, const QueryParams& params) {
  auto error = [](int status, const std::string& message) {
    return HttpResponse{status, "application/json", "{\"error\":" + json_quote(message) + "}\n"};
  };
  if (!config_.flow_log_dir) return error(409, "this agent writes no flow log (flowLog.dir)");
  if (!options_.flows_query) return error(501, "flow queries are not served by this build");
  std::ostringstream out;
  std::ostringstream err;
  const int rc = options_.flows_query(*config_.flow_log_dir, params, out, err);
  if (rc == 2) return error(400, err.str());
  if (rc != 0) return error(500, err.str());
  log_.info("api: flows read by " + caller.describe(), {{"event", "flows-read"}});
  const bool table = std::any_of(params.begin(), params.end(), [](const auto& kv) {
    return kv.first == "output" && kv.second == "table";
  });
  return HttpResponse{200, table ? "text/plain; charset=utf-8" : "application/x-ndjson", out.str()};
}

bool Daemon::flush(const Caller& caller, std::string* error) {
  const std::string who = caller.describe();
  gate_->open = false;
  if (auto e = dataplane_->flush()) {
    *error = "cannot flush " + enforced_in() + ": " + e->message;
    gate_->open = !suspended_;
    log_.error("api: flush by " + who + " failed: " + e->message);
    return false;
  }
  suspended_ = true;
  suspended_by_ = who;
  log_.warn("api: enforcement FLUSHED by " + who + ": " +
                (use_dpdk_ ? std::string("the DPDK dataplane now denies every IP packet")
                           : "table inet " + config_.nft.table + " removed") +
                "; nothing is enforced until the next apply or reload",
            {{"event", "flushed"}, {"by", who}});
  return true;
}

// Events read per source and poll round at most, so a flood of them never
// starves identity events, the API or signals.
constexpr std::size_t kFlowDatagramsPerRound = 64;

bool Daemon::open_nft(const std::vector<IpAddress>& node_addresses, bool& adopt) {
  if (options_.bridge_netfilter) {
    std::string why;
    if (!enable_bridge_netfilter(&why)) {
      log_.warn(why + "; containers on one bridge are not policed by the inet hooks");
    }
  }
  dataplane::nft::NftBackend::Config nft;
  nft.plan.table = config_.nft.table;
  nft.plan.log_group = config_.nft.log_group;
  nft.plan.overlay.devices = config_.nft.overlay.devices;
  nft.plan.overlay.peers = config_.nft.overlay.peers;
  nft.plan.overlay.port = config_.nft.overlay.port;
  nft.local_addresses = node_addresses;
  auto opened = dataplane::nft::NftBackend::open(nft);
  if (auto* e = std::get_if<std::string>(&opened)) {
    log_.error(*e);
    return false;
  }
  backend_ = std::move(std::get<std::unique_ptr<dataplane::nft::NftBackend>>(opened));
  dataplane_ = backend_.get();
  dataplane::nft::ApplyError probe;
  const bool exists = backend_->socket().table_exists(config_.nft.table, &probe);
  // Cannot tell: act as if the table existed, which only delays the first
  // apply until the identity sources have reported.
  adopt = exists || !probe.message.empty();
  if (!probe.message.empty()) {
    log_.warn("cannot tell whether table inet " + config_.nft.table + " exists: " + probe.message);
  }
  return true;
}

#ifdef TIERWALL_HAVE_DPDK

// The lcore's events are taken off the ring this often (and at stop).
constexpr std::chrono::milliseconds kDpdkDrainInterval{50};

bool Daemon::open_dpdk() {
  dataplane::dpdk::DpdkDataplaneConfig c;
  if (config_.dpdk.eal_args) c.eal_args = *config_.dpdk.eal_args;
  for (const auto& p : config_.dpdk.ports) {
    dataplane::dpdk::DpdkPortConfig port{p.devargs, p.name, std::nullopt};
    if (p.overlay) {
      dataplane::dpdk::OverlayConfig o;
      o.local_vtep = p.overlay->local_vtep;
      o.vni = p.overlay->vni;
      o.udp_port = p.overlay->udp_port;
      for (const auto& peer : p.overlay->peers) o.peers.push_back({peer.vtep, peer.mac});
      o.mac_ageing_ns = std::uint64_t{p.overlay->mac_ageing_seconds} * 1'000'000'000ULL;
      port.overlay = std::move(o);
    }
    c.ports.push_back(std::move(port));
  }
  c.workers = config_.dpdk.workers;
  c.idle_sleep_us = config_.dpdk.idle_sleep_us;
  c.flow_capacity = static_cast<std::size_t>(config_.dpdk.flow_capacity);
  std::string error;
  dpdk_ = dataplane::dpdk::DpdkDataplane::open(c, error);
  if (!dpdk_) {
    log_.error("DPDK dataplane not started: " + error);
    return false;
  }
  dataplane_ = dpdk_.get();
  next_dpdk_drain_ = Clock::now();
  std::string ports;
  for (const auto& p : dpdk_->stats().ports) ports += (ports.empty() ? "" : ", ") + p.name;
  const std::uint32_t w = config_.dpdk.workers;
  log_.info(
      "DPDK dataplane running: " + std::to_string(dpdk_->port_count()) + " ports (" + ports +
      "), " +
      (w == 1 ? std::string("one forwarding worker") : std::to_string(w) + " forwarding workers") +
      "; IP traffic is dropped until the first policy applies");
  for (std::size_t i = 0; i < config_.dpdk.ports.size(); ++i) {
    const auto& o = config_.dpdk.ports[i].overlay;
    if (!o) continue;
    std::string peers;
    for (const auto& peer : o->peers) peers += (peers.empty() ? "" : ", ") + peer.vtep.to_string();
    log_.info("DPDK overlay uplink " + dpdk_->stats().ports[i].name + ": VXLAN-GBP VNI " +
              std::to_string(o->vni) + " from " + o->local_vtep.to_string() + " (UDP " +
              std::to_string(o->udp_port) + ") to " + std::to_string(o->peers.size()) +
              " trusted peer(s): " + peers);
  }
  return true;
}

void Daemon::drain_dpdk(bool all) {
  if (!dpdk_) return;
  next_dpdk_drain_ = Clock::now() + kDpdkDrainInterval;
  const auto offset = flowpipe::monotonic_to_wall_offset();
  auto consume = [&](const dataplane::dpdk::FlowEventRecord& e) {
    if (!flowlog_) return;
    if (auto r = flowpipe::enrich_dpdk(*enricher_, e, offset)) {
      if (ipfix_) ipfix_->export_record(*r);
      flowlog_->submit(std::move(*r));
    }
  };
  if (all) {
    // Stopping: the forwarding workers end their flows while we drain.
    dpdk_->stop(consume);
  } else {
    // Bounded per round, so a flood never starves the loop.
    dpdk_->drain_events(consume, 16384);
  }
  if (!flowlog_) return;
  for (auto& loss : dpdk_loss_.take(dpdk_->stats().events)) flowlog_->submit(std::move(loss));
}

std::optional<DpdkMetrics> Daemon::dpdk_metrics() const {
  if (!dpdk_) return std::nullopt;
  const auto st = dpdk_->stats();
  DpdkMetrics m;
  auto counter = [&](std::string name, std::string help, std::uint64_t v) {
    m.values.push_back({std::move(name), "counter", std::move(help), v});
  };
  auto gauge = [&](std::string name, std::string help, std::uint64_t v) {
    m.values.push_back({std::move(name), "gauge", std::move(help), v});
  };
  const auto& b = st.bridge;
  counter("rx_frames_total", "Frames received on all DPDK ports.", b.rx);
  counter("tx_frames_total", "Frames the PMDs accepted for sending (a flood counts per port).",
          b.tx);
  counter("tx_failed_total", "Frames the PMDs refused (freed).", b.tx_failed);
  counter("forwarded_total", "Frames sent to the one port their destination was learned on.",
          b.forwarded);
  counter("flooded_total", "Frames flooded to every other port.", b.flooded);
  counter("filtered_total", "Frames whose destination was learned on their ingress port.",
          b.filtered);
  counter("non_ip_total", "Frames bridged without policy (not IP, or IPv6 neighbour discovery).",
          b.non_ip);
  counter("ip_allowed_total", "IP frames the policy passed (allow or audit).", b.ip_allowed);
  counter("policy_dropped_total", "IP frames the policy denied (new connections and cuts).",
          b.policy_dropped);
  counter("policy_cut_total", "Packets of established connections a new generation cut.",
          b.policy_cut);
  counter("no_generation_total", "IP frames dropped before the first policy was applied.",
          b.no_generation);
  counter("fragments_dropped_total", "Non-first IP fragments dropped.", b.fragments_dropped);
  counter("malformed_total", "Malformed frames dropped.", b.malformed);
  counter("mac_learned_total", "MAC addresses learned or moved.", b.learned);
  counter("mac_learn_full_total", "MAC addresses not learned: table full.", b.learn_full);
  counter("bursts_total", "Non-empty RX bursts.", b.bursts);
  counter("overlay_decapsulated_total", "VXLAN-GBP frames accepted from a trusted peer VTEP.",
          b.overlay_decapsulated);
  counter("overlay_encapsulated_total",
          "Frames encapsulated to a peer VTEP (a head-end replication counts per peer).",
          b.overlay_encapsulated);
  counter("overlay_encap_failed_total",
          "Frames not encapsulated (no mbuf for a copy, no headroom, chained): dropped.",
          b.overlay_encap_failed);
  counter("overlay_by_tag_total",
          "New connections from a peer decided by their tag (source unknown on this node).",
          b.overlay_by_tag);
  for (std::size_t r = 0; r < b.overlay_refused_by.size(); ++r) {
    m.overlay_refused.emplace_back(
        std::string(dataplane::dpdk::to_string(static_cast<dataplane::dpdk::OverlayRefusal>(r))),
        b.overlay_refused_by[r]);
  }
  gauge("workers", "Forwarding workers (threads; worker i polls queue i of every port).",
        st.workers.size());
  for (const auto& w : st.workers) {
    m.workers.push_back(
        {w.bridge.rx, w.bridge.ip_allowed, w.bridge.policy_dropped, w.flows.inserts, w.flows.hits});
  }
  const auto& f = st.flows;
  counter("flow_hits_total", "Packets decided by a remembered flow.", f.hits);
  counter("flow_rechecks_total", "Flows re-checked and kept under a new generation.", f.rechecks);
  counter("flow_inserts_total", "Connections remembered.", f.inserts);
  counter("flow_denied_total", "Packets decided deny with no remembered flow.", f.denied);
  counter("flow_cuts_total", "Remembered flows a new generation cut.", f.cuts);
  counter("flow_expired_total", "Flow entries found expired.", f.expired);
  counter("flow_evicted_total", "Live flow entries evicted from a full bucket.", f.evicted);
  const auto& e = st.events;
  counter("events_enqueued_total", "Flow events the lcore put on the event ring.", e.events);
  counter("events_start_total", "Of which connection starts.", e.starts);
  counter("events_deny_total", "Of which folded denies.", e.denies);
  counter("events_cut_total", "Of which cuts.", e.cuts);
  counter("events_end_total", "Of which connection ends (with packet and byte counts).", e.ends);
  counter("event_packets_total", "Packets the enqueued events stand for.", e.packets);
  counter("events_folded_total", "Denied packets folded into an earlier deny event.", e.folded);
  counter("events_lost_packets_total",
          "Packets whose event the full ring refused (written as loss records).", e.lost);
  counter("events_rate_limited_packets_total",
          "Packets of deny events over the rate limit (written as loss records).", e.rate_limited);
  counter("events_drained_total", "Events the agent took off the ring.", st.drained);
  gauge("event_ring_capacity", "Slots of the event ring.", st.ring_capacity);
  gauge("event_ring_used", "Events waiting on the ring.", st.ring_used);
  gauge("generation", "Policy generation the forwarding workers enforce (0: none or flushed).",
        st.generation);
  for (std::size_t i = 0; i < b.by_status.size(); ++i) {
    m.parse_status.emplace_back(
        std::string(dataplane::dpdk::to_string(static_cast<dataplane::dpdk::ParseStatus>(i))),
        b.by_status[i]);
  }
  for (const auto& p : st.ports) {
    m.ports.push_back({p.name, p.stats.ipackets, p.stats.opackets, p.stats.imissed, p.stats.ierrors,
                       p.stats.oerrors, p.stats.rx_nombuf});
  }
  return m;
}

#else

bool Daemon::open_dpdk() {
  log_.error("the DPDK dataplane is not part of this build (libdpdk was not found)");
  return false;
}
void Daemon::drain_dpdk(bool) {}
std::optional<DpdkMetrics> Daemon::dpdk_metrics() const { return std::nullopt; }

#endif

void Daemon::start_kernel_flow_events() {
  std::string error;
  if (!dataplane::nft::enable_conntrack_accounting(true, &error)) {
    log_.warn("conntrack accounting: " + error + "; connection ends carry no byte counts");
  }
  dataplane::nft::NflogSource::Config nf;
  nf.group = config_.nft.log_group;
  nf.receive_buffer = config_.flow_log_receive_buffer;
  nf.max_datagrams_per_drain = kFlowDatagramsPerRound;
  nflog_ = dataplane::nft::NflogSource::open(nf, &error);
  if (!nflog_) {
    log_.error("flow log: cannot read NFLOG group " + std::to_string(nf.group) + ": " + error +
               "; denied and audited connections are not logged");
  }
  dataplane::nft::ConntrackEventSource::Config ct;
  ct.receive_buffer = config_.flow_log_receive_buffer;
  ct.max_datagrams_per_drain = kFlowDatagramsPerRound;
  conntrack_ = dataplane::nft::ConntrackEventSource::open(ct, &error);
  if (!conntrack_) {
    log_.error("flow log: cannot subscribe to conntrack events: " + error +
               "; allowed connections are not logged");
  }
}

void Daemon::start_flow_log(const std::vector<IpAddress>& node_addresses) {
  if (!config_.flow_log_dir) return;
  flowlog::WriterOptions w;
  w.dir = *config_.flow_log_dir;
  w.node = config_.node.name;
  w.key_path = config_.flow_log_key;
  if (auto f = flowlog::parse_fsync_policy(config_.flow_log_fsync)) w.fsync = *f;
  auto writer = std::make_unique<flowlog::FlowLogWriter>();
  std::string error;
  if (!writer->open(w, &error)) {
    log_.error("flow log not written: " + error + "; enforcement continues",
               {{"event", "flowlog-error"}});
    return;
  }
  if (auto torn = writer->recovered()) {
    log_.warn("flow log: the last run left an incomplete record (" +
                  std::to_string(torn->data.size()) + " bytes at " + torn->file + ":" +
                  std::to_string(torn->line) + "); it is kept in an agent 'recovered' record",
              {{"event", "flowlog-recovered"}});
  }
  lookup_ =
      std::make_unique<ReconcilerLookup>(*reconciler_, node_addresses, config_.container_cidrs);
  flowpipe::Enricher::Options enrich;
  enrich.dataplane = use_dpdk_ ? flowlog::Dataplane::Dpdk : flowlog::Dataplane::Nft;
  enricher_ = std::make_unique<flowpipe::Enricher>(enrich, *lookup_);
  if (use_dpdk_) {
    // Events come from the lcore's ring (drain_dpdk), not from the kernel.
    next_dpdk_drain_ = Clock::now();
  } else {
    start_kernel_flow_events();
  }
  flowlog_ = std::move(writer);
  if (config_.ipfix_collector) {
    ipfix::ExporterOptions x;
    x.collector = *config_.ipfix_collector;
    x.node = config_.node.name;
    auto exporter = std::make_unique<ipfix::IpfixExporter>();
    if (exporter->open(x, &error)) {
      ipfix_ = std::move(exporter);
      log_.info("flows also exported over IPFIX to " + x.collector);
    } else {
      log_.error("IPFIX export to " + x.collector + " not started: " + error);
    }
  }
  log_.info("flow log in " + w.dir + " (key " + w.key_path + ", fsync " +
            std::string(flowlog::to_string(w.fsync)) + ")");
}

void Daemon::flow_policy(const std::string& by) {
  if (!flowlog_) return;
  const auto* c = reconciler_->compilation();
  if (c == nullptr || c->policy()->generation == flow_generation_) return;
  flow_generation_ = c->policy()->generation;
  enricher_->set_policy(c->policy());
  flowlog::Policy p;
  p.generation = c->policy()->generation;
  p.name = c->policy()->name;
  p.digest = c->policy()->digest;
  p.by = by;
  flowlog_->submit(flowlog::FlowRecord{0, std::move(p)});
}

void Daemon::flow_event(const dataplane::nft::RawFlowEvent& e) {
  if (auto r = enricher_->enrich(e)) {
    if (ipfix_) ipfix_->export_record(*r);
    flowlog_->submit(std::move(*r));
  }
}

void Daemon::flow_events(bool conntrack) {
  auto sink = [this](const dataplane::nft::RawFlowEvent& e) { flow_event(e); };
  if (conntrack) {
    conntrack_->drain(sink);
  } else {
    nflog_->drain(sink);
  }
}

void Daemon::stop_flow_log() {
  if (!flowlog_) return;
  auto sink = [this](const dataplane::nft::RawFlowEvent& e) { flow_event(e); };
  if (nflog_) nflog_->finish(sink);
  nflog_.reset();
  conntrack_.reset();
  if (ipfix_) {
    ipfix_->close();
    ipfix_.reset();
  }
  flowlog_->stop();
  const auto st = flowlog_->stats();
  log_.info("flow log closed: " + std::to_string(st.records_written) + " records, " +
            std::to_string(st.lost_queue) + " lost to a full queue, last seq " +
            std::to_string(st.last_seq));
  flowlog_.reset();
}

void Daemon::check_dataplane() {
  for (auto& gone : reconciler_->take_removed()) {
    if (!enricher_) continue;
    for (const auto& a : gone.addresses) {
      enricher_->endpoint_gone(
          a, flowpipe::Identity{gone.name, gone.runtime_id, gone.image, gone.tier});
    }
  }
  observe_latencies();
  const auto& st = reconciler_->core_status();
  if (st.dataplane_ok != dataplane_ok_) {
    if (st.dataplane_ok) {
      log_.info("dataplane recovered: generation " + std::to_string(st.applied_generation) +
                " applied");
    } else {
      log_.error("dataplane error: " + st.dataplane_error +
                 "; the desired state is kept and re-applied every tick");
    }
    dataplane_ok_ = st.dataplane_ok;
  }
}

void Daemon::open_monitor() {
  std::string error;
  monitor_ =
      dataplane::nft::ChangeMonitor::open(config_.nft.table, backend_->socket().portid(), &error);
  if (!monitor_) {
    log_.warn("cannot watch nftables changes (" + error + "): changes by others to table inet " +
              config_.nft.table + " are not repaired");
  }
}

void Daemon::read_monitor() {
  auto r = monitor_->drain();
  if (r.overrun) {
    const auto now = Clock::now();
    if (last_overrun_ && now < *last_overrun_ + kOverrunHoldoff && !r.changed) {
      log_.warn("nftables notifications lost (ENOBUFS) again within " +
                std::to_string(kOverrunHoldoff.count()) + " ms; not re-applying");
      r.overrun = false;
    } else {
      last_overrun_ = now;
    }
  }
  if (!r.changed && !r.overrun) return;
  if (!drift_.changed && !drift_.overrun) drift_seen_ = Clock::now();
  drift_.changed = drift_.changed || r.changed;
  drift_.overrun = drift_.overrun || r.overrun;
  for (const auto& [what, n] : r.events) drift_.events[what] += n;
  if (r.changed) {
    drift_.portid = r.portid;
    drift_.complete = r.complete;
    if (r.complete) {
      drift_.pid = r.pid;
      drift_.process = r.process;
      drift_.genid = r.genid;
    }
  }
  if (r.complete || r.overrun) {
    repair_drift();
  } else if (!drift_due_) {
    drift_due_ = Clock::now() + kDriftSettle;
  }
}

void Daemon::repair_drift() {
  auto d = std::exchange(drift_, dataplane::nft::ChangeReport{});
  drift_due_.reset();
  std::string who;
  if (d.pid) {
    who = "pid " + std::to_string(*d.pid) + (d.process.empty() ? "" : " (" + d.process + ")") +
          " portid " + std::to_string(d.portid);
  } else if (d.changed) {
    who = "portid " + std::to_string(d.portid);
  } else {
    who = "unknown";
  }
  if (d.genid) who += ", ruleset generation " + std::to_string(*d.genid);
  const std::string what =
      "drift: " + d.describe() + " in table inet " + config_.nft.table + " by " + who;
  if (holding_) {
    log_.info(what + "; the pending adoption replaces the table");
    return;
  }
  if (suspended_) {
    log_.info(what + "; enforcement is flushed, nothing to restore");
    return;
  }
  if (reconciler_->core_status().generation == 0) {
    log_.info(what + "; no policy to restore yet");
    return;
  }
  const bool ok = reconciler_->repair_drift();
  const auto& st = reconciler_->core_status();
  if (ok) {
    log_.warn(what + "; restored policy generation " + std::to_string(st.applied_generation) +
              " in " + ms_text(Clock::now() - drift_seen_) + " (apply " +
              ms_text(st.last_apply_latency) + ", " + std::to_string(st.drift_repairs) +
              " drift repairs)");
  } else {
    log_.error(what + "; restore failed: " + st.dataplane_error);
  }
  check_dataplane();
}

void Daemon::after_change(const std::string& what) {
  const auto st = reconciler_->status();
  std::string tiers;
  for (const auto& [tier, n] : st.tier_counts) {
    tiers += (tiers.empty() ? "" : ", ") + tier + "=" + std::to_string(n);
  }
  log_.info(what + ": " + std::to_string(st.endpoints) + " endpoints" +
            (tiers.empty() ? "" : " (" + tiers + ")"));
  for (const auto& c : st.conflicts) {
    log_.warn("address " + c.address.to_string() + " claimed by " + c.claimant + " is held by " +
              c.holder);
  }
  check_dataplane();
}

PolicyResult Daemon::reload_policy(const std::string& why, const std::string& who) {
  if (holding_) return {};  // the first apply reads the files when it happens
  if (config_.cluster_mode() && !store_policy_) {
    log_.info("no policy from the cluster store yet (" + why + "); " +
              (reconciler_->core_status().generation > 0 ? "the current one stays"
                                                         : "nothing is applied until one arrives"));
    PolicyResult waiting;
    waiting.accepted = true;
    waiting.unchanged = true;
    return waiting;
  }
  const auto result = config_.cluster_mode()
                          ? reconciler_->load_and_set_policy_sources(*store_policy_)
                          : reconciler_->load_and_set_policy(config_.policy);
  if (config_.cluster_mode()) {
    store_rejected_ = result.accepted ? std::string() : reconciler_->core_status().last_error;
    if (store_rejected_.empty() && !result.accepted) store_rejected_ = "invalid";
    if (result.accepted && cluster_) {
      const auto& cst = reconciler_->core_status();
      if (cst.policy_digest != published_digest_) {
        published_digest_ = cst.policy_digest;
        cluster_->set_enforced(cst.policy_digest, store_meta_.generation);
      }
    }
  }
  const auto st = reconciler_->status();
  const std::string by = who.empty() ? why : who;
  if (!result.accepted) {
    log_.error("policy rejected (" + why + (who.empty() ? "" : " by " + who) +
                   "): " + std::to_string(result.diagnostics.error_count()) +
                   " error(s); the last valid policy stays enforced" +
                   (st.generation > 0 ? " (generation " + std::to_string(st.generation) +
                                            ", digest " + st.policy_digest.substr(0, 12) + ")"
                                      : " (none yet)"),
               {{"event", "policy-rejected"}, {"by", by}});
    log_.diagnostics(result.diagnostics);
    return result;
  }
  if (result.unchanged) {
    log_.info("policy unchanged (" + why + (who.empty() ? "" : " by " + who) + "), digest " +
              st.policy_digest.substr(0, 12));
    return result;
  }
  flow_policy(by);
  if (st.dataplane_ok) {
    log_.info("applied policy " + st.policy_name + " (" + why + (who.empty() ? "" : " by " + who) +
                  "): generation " + std::to_string(st.generation) + ", digest " +
                  st.policy_digest.substr(0, 12) + ", " + std::to_string(st.endpoints) +
                  " endpoints, to " + enforced_in() + " in " + ms_text(st.last_apply_latency),
              {{"event", "policy-applied"},
               {"by", by},
               {"policy", st.policy_name},
               {"generation", std::to_string(st.generation)},
               {"digest", st.policy_digest}});
  } else {
    log_.warn("accepted policy " + st.policy_name + " (" + why + (who.empty() ? "" : " by " + who) +
                  "): generation " + std::to_string(st.generation) + ", digest " +
                  st.policy_digest.substr(0, 12) + ", not yet applied: " + st.dataplane_error,
              {{"event", "policy-accepted"},
               {"by", by},
               {"policy", st.policy_name},
               {"generation", std::to_string(st.generation)},
               {"digest", st.policy_digest}});
  }
  check_dataplane();
  return result;
}

bool Daemon::reload_inventory(const std::string& why, policy::Diagnostics* out) {
  if (!config_.inventory) return true;
  policy::Diagnostics diags;
  auto inv = identity::load_inventory(*config_.inventory, diags);
  if (!inv || diags.has_errors()) {
    log_.error("inventory " + *config_.inventory + " rejected (" + why +
               "); its last valid endpoints stay");
    log_.diagnostics(diags);
    if (out) *out = std::move(diags);
    return false;
  }
  const auto count = inv->endpoints.size();
  reconciler_->on_snapshot(Source::Inventory, std::move(inv->endpoints));
  inventory_ready_ = true;
  local_dirty_ = true;
  after_change("inventory " + *config_.inventory + " loaded (" + why + ", " +
               std::to_string(count) + " entries)");
  if (out) *out = std::move(diags);
  return true;
}

void Daemon::start_runtime() {
  if (!config_.runtime_socket) return;
  runtime::RuntimeSource::Options opts;
  opts.client.socket_path = *config_.runtime_socket;
  runtime::RuntimeSourceCallbacks cb;
  cb.on_snapshot = [this](std::vector<identity::Endpoint> eps) {
    queue_.post([this, eps = std::move(eps)]() mutable {
      const auto n = eps.size();
      reconciler_->on_snapshot(Source::Runtime, std::move(eps));
      runtime_ready_ = true;
      local_dirty_ = true;
      after_change("runtime snapshot (" + std::to_string(n) + " containers)");
    });
  };
  cb.on_upsert = [this](identity::Endpoint ep, runtime::EventTiming timing) {
    queue_.post([this, ep = std::move(ep), timing = std::move(timing)]() mutable {
      const std::string what = "runtime " + timing.action + ": " + describe(ep);
      reconciler_->on_upsert(Source::Runtime, std::move(ep));
      local_dirty_ = true;
      log_.info(what + " enforced " + ms_text(Clock::now() - timing.received) +
                " after the event arrived");
      check_dataplane();
    });
  };
  cb.on_remove = [this](std::string id) {
    queue_.post([this, id = std::move(id)] {
      reconciler_->on_remove(Source::Runtime, id);
      local_dirty_ = true;
      log_.info("runtime: container " + id.substr(0, 12) + " gone");
      check_dataplane();
    });
  };
  cb.on_skipped = [this](runtime::SkippedContainer s) {
    queue_.post([this, s = std::move(s)] {
      log_.warn("runtime: container " + s.name + " (" + s.id.substr(0, 12) +
                ") cannot be enforced by address: " + s.reason);
    });
  };
  cb.on_state = [this](bool connected, std::string reason) {
    queue_.post([this, connected, reason = std::move(reason)]() mutable {
      if (connected) {
        log_.info("runtime " + *config_.runtime_socket + " connected");
      } else {
        log_.warn("runtime " + *config_.runtime_socket + " disconnected: " + reason +
                  "; its containers keep their tiers until the next snapshot");
      }
      reconciler_->on_state(Source::Runtime, connected, std::move(reason));
    });
  };
  runtime_ = std::make_unique<runtime::RuntimeSource>(std::move(opts), std::move(cb));
  runtime_->start();
  std::string error;
  links_ = LinkMonitor::open(&error);
  if (!links_) {
    log_.warn("cannot watch network links (" + error +
              "): new containers are identified from the runtime's events only");
  }
}

bool Daemon::sources_ready() const {
  return (!config_.inventory || inventory_ready_) && (!config_.runtime_socket || runtime_ready_) &&
         (!config_.cluster_mode() || (cluster_ready_ && store_policy_));
}

// The store's policy documents, named by their document names (the
// digest is then the published one).
void Daemon::cluster_policy(cluster::PublishedPolicy published) {
  std::vector<policy::SourceFile> files;
  files.reserve(published.documents.size());
  for (auto& [name, content] : published.documents) {
    files.push_back(policy::SourceFile{name, std::move(content)});
  }
  if (const auto computed = policy::digest_sources(files); computed != published.meta.digest) {
    log_.warn("cluster store: policy generation " + std::to_string(published.meta.generation) +
              " says digest " + published.meta.digest.substr(0, 12) +
              " but its documents hash to " + computed.substr(0, 12) +
              " (written by something other than tierctl apply --store?)");
  }
  store_policy_ = std::move(files);
  store_meta_ = published.meta;
  log_.info("cluster store: policy " + published.meta.name + " generation " +
                std::to_string(published.meta.generation) + " (digest " +
                published.meta.digest.substr(0, 12) + ", revision " +
                std::to_string(published.revision) + ", by " + published.meta.author + ")",
            {{"event", "store-policy"}});
  const auto result =
      reload_policy("cluster store generation " + std::to_string(published.meta.generation));
  if (result.accepted) resume("the cluster store");
}

void Daemon::publish_local() {
  local_dirty_ = false;
  std::vector<store::EndpointRecord> records;
  for (const Source source : {Source::Inventory, Source::Runtime}) {
    for (auto& ep : reconciler_->source_endpoints(source)) {
      store::EndpointRecord r;
      r.id = source == Source::Runtime && !ep.id.empty() ? ep.id : ep.name;
      if (!store::valid_endpoint_id(r.id)) {
        log_.warn("cluster store: endpoint " + describe(ep) + " is not published: its id '" + r.id +
                  "' cannot name a key");
        continue;
      }
      r.name = ep.name;
      r.image = ep.image;
      for (const auto& [k, v] : ep.labels.items()) r.labels[k] = v;
      for (const auto& a : ep.addresses) r.addresses.push_back(a.to_string());
      records.push_back(std::move(r));
    }
  }
  cluster_->set_local_endpoints(std::move(records));
}

identity::Endpoint remote_identity(cluster::RemoteEndpoint remote) {
  identity::Endpoint ep;
  ep.id = std::move(remote.key);
  ep.name = std::move(remote.record.name);
  ep.image = std::move(remote.record.image);
  for (auto& [k, v] : remote.record.labels) ep.labels.set(k, v);
  for (const auto& a : remote.record.addresses) {
    if (auto ip = IpAddress::parse(a)) ep.addresses.push_back(*ip);
  }
  return ep;
}

void Daemon::start_cluster(const std::vector<IpAddress>& node_addresses) {
  if (!config_.cluster_mode()) return;
  cluster::ClusterOptions o;
  o.client.endpoints = config_.cluster.store;
  if (config_.cluster.user) o.client.user = *config_.cluster.user;
  if (config_.cluster.password_file) {
    std::ifstream f(*config_.cluster.password_file);
    std::getline(f, o.client.password);
    if (!f && o.client.password.empty()) {
      log_.error("cluster store: cannot read the password file " + *config_.cluster.password_file);
    }
  } else if (const char* env = std::getenv("TIERWALL_STORE_PASSWORD")) {
    o.client.password = env;
  }
  if (config_.cluster.ca_file) o.client.ca_file = *config_.cluster.ca_file;
  if (config_.cluster.cert_file) o.client.cert_file = *config_.cluster.cert_file;
  if (config_.cluster.key_file) o.client.key_file = *config_.cluster.key_file;
  o.client.request_timeout = std::chrono::milliseconds{5000};
  o.cluster = config_.cluster.name;
  o.node = config_.node.name;
  for (const auto& a : node_addresses) o.addresses.push_back(a.to_string());
  o.agent_version = "0.1.0";
  o.lease_ttl = std::chrono::seconds{config_.cluster.lease_ttl_seconds};
  cluster::ClusterCallbacks cb;
  cb.on_policy = [this](cluster::PublishedPolicy p) {
    queue_.post([this, p = std::move(p)]() mutable { cluster_policy(std::move(p)); });
  };
  cb.on_snapshot = [this](std::vector<cluster::RemoteEndpoint> remote) {
    queue_.post([this, remote = std::move(remote)]() mutable {
      std::vector<identity::Endpoint> eps;
      eps.reserve(remote.size());
      for (auto& r : remote) eps.push_back(remote_identity(std::move(r)));
      const auto n = eps.size();
      reconciler_->on_snapshot(Source::Cluster, std::move(eps));
      cluster_ready_ = true;
      after_change("cluster store snapshot (" + std::to_string(n) + " remote endpoints)");
    });
  };
  cb.on_upsert = [this](cluster::RemoteEndpoint r) {
    queue_.post([this, r = std::move(r)]() mutable {
      const std::string key = r.key;
      auto ep = remote_identity(std::move(r));
      const std::string what = describe(ep);
      reconciler_->on_upsert(Source::Cluster, std::move(ep));
      log_.info("cluster store: remote endpoint " + key + " " + what);
      check_dataplane();
    });
  };
  cb.on_remove = [this](std::string key) {
    queue_.post([this, key = std::move(key)] {
      reconciler_->on_remove(Source::Cluster, key);
      log_.info("cluster store: remote endpoint " + key + " gone");
      check_dataplane();
    });
  };
  // The source's threads report transitions concurrently, so their posts
  // may arrive out of order: the control thread reads the state itself.
  cb.on_state = [this](bool, std::string) {
    queue_.post([this] {
      const auto st = cluster_->status();
      const auto& known =
          reconciler_->core_status().sources[static_cast<std::size_t>(Source::Cluster)];
      if (st.connected == known.connected && (st.connected || !known.reason.empty())) return;
      if (st.connected) {
        log_.info("cluster store connected", {{"event", "store-connected"}});
      } else {
        log_.warn("cluster store unreachable: " + st.last_error +
                      "; the last known policy and endpoints stay enforced",
                  {{"event", "store-disconnected"}});
      }
      reconciler_->on_state(Source::Cluster, st.connected,
                            st.connected ? std::string() : st.last_error);
    });
  };
  cluster_ = std::make_unique<cluster::ClusterSource>(std::move(o), std::move(cb));
  log_.info("cluster mode: cluster " + config_.cluster.name + ", node " + config_.node.name +
            ", store " + std::to_string(config_.cluster.store.size()) + " endpoint(s), lease " +
            std::to_string(config_.cluster.lease_ttl_seconds) + " s");
  cluster_->start();
  local_dirty_ = true;
}

int Daemon::run() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  SignalMask blocked(mask);  // before any thread starts: they inherit it
  Fd sigfd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (sigfd.get() < 0) {
    log_.error(errno_text("signalfd"));
    return 3;
  }
  if (queue_.fd() < 0) {
    log_.error(errno_text("eventfd"));
    return 3;
  }

  use_dpdk_ = config_.dataplane == "dpdk";
  const auto node_addresses =
      config_.node.addresses.empty() ? local_addresses() : config_.node.addresses;
  bool adopt = false;
  if (use_dpdk_) {
    if (!open_dpdk()) return 3;
  } else if (!open_nft(node_addresses, adopt)) {
    return 3;
  }
  gate_ = std::make_unique<Gate>(*dataplane_);
  reconciler_ = std::make_unique<Reconciler>(
      *gate_, Reconciler::Options{config_.container_cidrs, node_addresses});

  log_.info("starting on node " + config_.node.name + " (" + std::to_string(node_addresses.size()) +
            " node addresses, " + std::to_string(config_.container_cidrs.size()) +
            " container CIDRs, " + enforced_in() + ")");
  start_metrics();
  start_api();
  setup_watches();
  if (!use_dpdk_) open_monitor();
  start_flow_log(node_addresses);
  reload_inventory("start");
  start_runtime();
  start_cluster(node_addresses);

  const auto started = Clock::now();
  if (adopt) {
    holding_ = true;
    log_.info("table inet " + config_.nft.table +
              " exists: keeping it enforced until every identity source has reported (at most " +
              std::to_string(options_.adopt_timeout.count()) + " ms)");
  } else {
    reload_policy("start");
  }

  auto next_tick = Clock::now() + options_.tick_interval;
  for (;;) {
    if (holding_) {
      const bool ready = sources_ready();
      if (ready || Clock::now() >= started + options_.adopt_timeout) {
        holding_ = false;
        reload_policy(ready ? "adopting the existing table, identity sources ready"
                            : "adopting the existing table, identity sources not ready after " +
                                  std::to_string(options_.adopt_timeout.count()) + " ms");
        policy_due_.reset();
      }
    }
    auto now = Clock::now();
    if (inventory_due_ && now >= *inventory_due_) {
      inventory_due_.reset();
      reload_inventory("file changed");
    }
    if (policy_due_ && now >= *policy_due_) {
      policy_due_.reset();
      if (!holding_) reload_policy("file changed");
    }
    if (drift_due_ && now >= *drift_due_) repair_drift();
    if (next_dpdk_drain_ && now >= *next_dpdk_drain_) drain_dpdk(false);
    if (now >= next_tick) {
      if (ipfix_) ipfix_->flush();
      reconciler_->tick();
      check_dataplane();
      next_tick = now + options_.tick_interval;
    }

    // Local endpoints changed (inventory, runtime): the cluster source
    // writes the difference to the store on its own thread.
    if (cluster_ && local_dirty_) publish_local();

    auto wake = next_tick;
    if (policy_due_) wake = std::min(wake, *policy_due_);
    if (inventory_due_) wake = std::min(wake, *inventory_due_);
    if (holding_) wake = std::min(wake, started + options_.adopt_timeout);
    if (drift_due_) wake = std::min(wake, *drift_due_);
    if (next_dpdk_drain_) wake = std::min(wake, *next_dpdk_drain_);
    for (const auto* server : {metrics_.get(), api_.get()}) {
      if (server == nullptr) continue;
      if (auto d = server->next_deadline()) wake = std::min(wake, *d);
    }
    // Backpressure: while the flow-log writer's queue is nearly full, the
    // kernel sockets are not read: their (large) buffers hold the events
    // instead of the writer counting them as lost. Checked again shortly.
    const bool flow_held = flowlog_ && flowlog_->congested();
    if (flow_held) wake = std::min(wake, Clock::now() + std::chrono::milliseconds{5});
    now = Clock::now();
    const auto wait = wake > now ? std::chrono::ceil<std::chrono::milliseconds>(wake - now)
                                 : std::chrono::milliseconds{0};

    // -1 fds (no inotify, no monitor) are ignored by poll.
    std::vector<pollfd> fds = {{sigfd.get(), POLLIN, 0},
                               {queue_.fd(), POLLIN, 0},
                               {inotify_.get(), POLLIN, 0},
                               {monitor_ ? monitor_->fd() : -1, POLLIN, 0},
                               {links_ ? links_->fd() : -1, POLLIN, 0},
                               {nflog_ && !flow_held ? nflog_->fd() : -1, POLLIN, 0},
                               {conntrack_ && !flow_held ? conntrack_->fd() : -1, POLLIN, 0}};
    constexpr std::size_t kServersAt = 7;
    if (metrics_) metrics_->add_fds(fds);  // fds[kServersAt...]
    const std::size_t api_at = fds.size();
    if (api_) api_->add_fds(fds);
    const int rc = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
    if (rc < 0) {
      if (errno == EINTR) continue;
      log_.error(errno_text("poll"));
      break;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo si{};
      bool stop = false;
      while (::read(sigfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        if (si.ssi_signo == SIGHUP) {
          log_.info("SIGHUP: reloading");
          reload_inventory("SIGHUP");
          if (reload_policy("SIGHUP").accepted) resume("SIGHUP");
          policy_due_.reset();
          inventory_due_.reset();
        } else {
          log_.info(std::string(si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT") +
                    (use_dpdk_ ? std::string(": stopping; the DPDK dataplane stops forwarding")
                               : ": stopping; the rules stay enforced in table inet " +
                                     config_.nft.table));
          stop = true;
        }
      }
      if (stop) break;
    }
    if ((fds[1].revents & POLLIN) != 0) queue_.drain();
    if ((fds[2].revents & POLLIN) != 0) read_inotify();
    if ((fds[3].revents & (POLLIN | POLLERR)) != 0) read_monitor();
    if ((fds[4].revents & (POLLIN | POLLERR)) != 0 && links_->drain()) runtime_->rescan();
    if ((fds[5].revents & (POLLIN | POLLERR)) != 0) flow_events(false);
    if ((fds[6].revents & (POLLIN | POLLERR)) != 0) flow_events(true);
    if (metrics_) {
      metrics_->serve(std::span<const pollfd>(fds).subspan(kServersAt, api_at - kServersAt));
    }
    if (api_) api_->serve(std::span<const pollfd>(fds).subspan(api_at));
  }
  if (runtime_) runtime_->stop();
  if (cluster_) cluster_->stop();
#ifdef TIERWALL_HAVE_DPDK
  if (dpdk_) drain_dpdk(true);  // stops forwarding, drains the last events
#endif
  stop_flow_log();
  log_.info("stopped");
  return 0;
}

}  // namespace

int run_daemon(const AgentConfig& config, const DaemonOptions& options, std::ostream& log) {
  Daemon daemon(config, options, log);
  return daemon.run();
}

}  // namespace tierwall::agent
