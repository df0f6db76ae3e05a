// The runtime identity source (tw_runtime) against real Podman.
//
// Two halves:
//   HttpClient*/DockerJson*  the HTTP/1.1 client against a scripted fake
//                            server on a unix socket (framing, chunking,
//                            timeouts, cancellation, errors) and the JSON ->
//                            identity mapping; no root needed.
//   PodmanRuntime*           rootful Podman (runtime runc, the busybox image
//                            imported by scripts/podman-setup.sh) behind
//                            `podman system service` on a test socket: list,
//                            the event stream, churn, and the service
//                            restarted under a RuntimeSource.
// Every container is named twrt-<pid>-* and removed in TearDown, pass or fail.
#include "tierwall/runtime/runtime_source.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tierwall/runtime/docker.h"
#include "tierwall/runtime/http.h"

namespace tierwall::runtime {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------
// A scripted HTTP server: accepts one connection, reads the request head,
// then writes each step's bytes after its delay; optionally holds the
// connection open until destroyed.

struct Step {
  std::string bytes;
  int delay_ms = 0;
};

class FakeServer {
 public:
  explicit FakeServer(std::vector<Step> script, bool hold_open = false)
      : script_(std::move(script)), hold_open_(hold_open) {
    static std::atomic<int> counter{0};
    path_ =
        "/tmp/twrt-fake-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".sock";
    ::unlink(path_.c_str());
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_, 4) != 0) {
      ADD_FAILURE() << "fake server: bind/listen " << path_ << ": " << std::strerror(errno);
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeServer() {
    done_.cancel();
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  std::string request() {
    std::lock_guard lock(mu_);
    return request_;
  }

 private:
  void serve() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::string req;
    std::array<char, 4096> buf{};
    while (req.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      req.append(buf.data(), static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lock(mu_);
      request_ = req;
    }
    for (const auto& step : script_) {
      if (step.delay_ms > 0 && !done_.sleep_for(milliseconds(step.delay_ms))) break;
      [[maybe_unused]] const auto n =
          ::send(fd, step.bytes.data(), step.bytes.size(), MSG_NOSIGNAL);
    }
    if (hold_open_) done_.sleep_for(milliseconds(60'000));
    ::close(fd);
  }

  std::vector<Step> script_;
  bool hold_open_;
  std::string path_;
  int listen_fd_ = -1;
  Canceller done_;
  std::thread thread_;
  std::mutex mu_;
  std::string request_;
};

UnixHttpClient client_for(const std::string& path, const Canceller* cancel = nullptr,
                          milliseconds timeout = milliseconds(2000)) {
  UnixHttpClient::Options o;
  o.socket_path = path;
  o.request_timeout = timeout;
  return UnixHttpClient(o, cancel);
}

TEST(HttpClientTest, ContentLengthBodyAndRequestHead) {
  FakeServer server(
      {{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
        "\r\n{\"a\":1}"}});
  auto r = client_for(server.path()).request("GET", "/containers/json");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->reason, "OK");
  EXPECT_EQ(r->body, "{\"a\":1}");
  ASSERT_NE(r->header("CONTENT-TYPE"), nullptr);
  EXPECT_EQ(*r->header("content-type"), "application/json");
  const std::string req = server.request();
  EXPECT_EQ(req.rfind("GET /containers/json HTTP/1.1\r\n", 0), 0U) << req;
  EXPECT_NE(req.find("\r\nHost: localhost\r\n"), std::string::npos) << req;
  EXPECT_NE(req.find("\r\nConnection: close\r\n"), std::string::npos) << req;
}

TEST(HttpClientTest, ChunkedBodySplitAcrossWritesWithExtensionsAndTrailers) {
  FakeServer server({
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
      {"lo\r\n", 20},
      {"1;ext=1\r\n \r\n", 20},
      {"0000A\r\nworld, 10!\r\n0\r\nX-Trailer: y\r\n\r\n", 20},
  });
  auto r = client_for(server.path()).request("GET", "/");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, "hello world, 10!");
}

TEST(HttpClientTest, BodyUntilCloseAndNoBodyStatuses) {
  {
    FakeServer server({{"HTTP/1.0 200 OK\r\n\r\nraw body"}});
    auto r = client_for(server.path()).request("GET", "/");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->body, "raw body");
  }
  {
    FakeServer server({{"HTTP/1.1 204 No Content\r\n\r\n"}}, /*hold_open=*/true);
    auto r = client_for(server.path()).request("GET", "/");
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->status, 204);
    EXPECT_TRUE(r->body.empty());
  }
}

TEST(HttpClientTest, StreamDeliversLinesAcrossChunksThenEnds) {
  FakeServer server({
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"8\r\n{\"a\":1}\n\r\n", 10},
      {"4\r\n{\"b\"\r\n", 10},
      {"4\r\n:2}\n\r\n", 10},
      {"1\r\n\n\r\n5\r\nlast!\r\n0\r\n\r\n", 10},
  });
  auto s = client_for(server.path()).stream("/events");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->status(), 200);
  std::vector<std::string> lines;
  for (;;) {
    auto line = s->next_line(milliseconds(2000));
    if (!line) {
      EXPECT_EQ(line.error().kind, Error::Kind::Closed) << line.error().message;
      break;
    }
    lines.push_back(line.value());
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "last!"}));
}

TEST(HttpClientTest, StreamCutMidChunkIsClosed) {
  FakeServer server(
      {{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4\r\none\n\r\n10\r\npartial"}});
  auto s = client_for(server.path()).stream("/events");
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto first = s->next_line(milliseconds(2000));
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first.value(), "one");
  auto partial = s->next_line(milliseconds(2000));  // an unterminated last line
  ASSERT_TRUE(partial.ok()) << partial.error().message;
  EXPECT_EQ(partial.value(), "partial");
  auto end = s->next_line(milliseconds(2000));
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().kind, Error::Kind::Closed) << end.error().message;
}

TEST(HttpClientTest, IdleStreamTimesOutAndStaysUsable) {
  FakeServer server({{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
                     {"3\r\nla\n\r\n", 300},
                     {"3\r\nte\n\r\n", 0}},
                    /*hold_open=*/true);
  auto s = client_for(server.path()).stream("/events");
  ASSERT_TRUE(s.ok()) << s.error().message;
  const auto t0 = Clock::now();
  auto quiet = s->next_line(milliseconds(50));
  ASSERT_FALSE(quiet.ok());
  EXPECT_EQ(quiet.error().kind, Error::Kind::Timeout);
  EXPECT_LT(ms_since(t0), 250.0);
  auto late = s->next_line(milliseconds(2000));  // the timeout lost nothing
  ASSERT_TRUE(late.ok()) << late.error().message;
  EXPECT_EQ(late.value(), "la");
  auto later = s->next_line(milliseconds(2000));
  ASSERT_TRUE(later.ok()) << later.error().message;
  EXPECT_EQ(later.value(), "te");
}

TEST(HttpClientTest, CancellerInterruptsABlockedReadPromptly) {
  FakeServer server({{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"}},
                    /*hold_open=*/true);
  Canceller cancel;
  auto client = client_for(server.path(), &cancel);
  auto s = client.stream("/events");
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(100));
    cancel.cancel();
  });
  const auto t0 = Clock::now();
  auto line = s->next_line(std::nullopt);  // would wait forever
  const double waited = ms_since(t0);
  canceller.join();
  ASSERT_FALSE(line.ok());
  EXPECT_EQ(line.error().kind, Error::Kind::Cancelled);
  EXPECT_LT(waited, 1000.0);
}

TEST(HttpClientTest, ClearErrors) {
  {
    auto r = client_for("/tmp/twrt-no-such-socket.sock").request("GET", "/_ping");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, Error::Kind::Connect);
    EXPECT_NE(r.error().message.find("/tmp/twrt-no-such-socket.sock"), std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("No such file"), std::string::npos) << r.error().message;
  }
  {
    FakeServer server({{"SSH-2.0-OpenSSH\r\n"}});
    auto r = client_for(server.path()).request("GET", "/_ping");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, Error::Kind::Protocol) << r.error().message;
  }
  {
    FakeServer server({{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}});
    auto r = client_for(server.path()).request("GET", "/");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, Error::Kind::Protocol) << r.error().message;
    EXPECT_NE(r.error().message.find("chunk size"), std::string::npos) << r.error().message;
  }
  {
    FakeServer server({}, /*hold_open=*/true);  // accepts, never answers
    const auto t0 = Clock::now();
    auto r = client_for(server.path(), nullptr, milliseconds(200)).request("GET", "/");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().kind, Error::Kind::Timeout) << r.error().message;
    EXPECT_LT(ms_since(t0), 1000.0);
  }
}

TEST(HttpClientTest, PercentEncode) {
  EXPECT_EQ(percent_encode(R"({"type":["container"]})"),
            "%7B%22type%22%3A%5B%22container%22%5D%7D");
  EXPECT_EQ(percent_encode("abc-_.~09"), "abc-_.~09");
}

// ---------------------------------------------------------------------------
// JSON -> identity

IpAddress ip(const char* text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress{});
}

TEST(DockerJsonTest, InspectMapsIdentityAndAllAddresses) {
  const char* doc = R"({
    "Id": "0123abcd", "Name": "/shop-web",
    "State": {"Running": true},
    "Config": {"Image": "reg.example/shop/web:1.4", "Labels": {"role": "web", "app": "shop"}},
    "HostConfig": {"NetworkMode": "bridge"},
    "NetworkSettings": {
      "IPAddress": "172.17.0.2", "GlobalIPv6Address": "",
      "Networks": {
        "bridge": {"IPAddress": "172.17.0.2", "GlobalIPv6Address": "fd00::2"},
        "backend": {"IPAddress": "10.5.0.7", "GlobalIPv6Address": ""}}}})";
  auto in = parse_inspect(doc);
  ASSERT_TRUE(in.ok()) << in.error().message;
  ASSERT_TRUE(in->running);
  ASSERT_TRUE(in->endpoint.has_value());
  const auto& ep = *in->endpoint;
  EXPECT_EQ(ep.name, "shop-web");
  EXPECT_EQ(ep.id, "0123abcd");
  EXPECT_EQ(ep.image, "reg.example/shop/web:1.4");
  EXPECT_EQ(ep.labels, identity::Labels({{"app", "shop"}, {"role", "web"}}));
  EXPECT_EQ(ep.addresses,
            (std::vector<IpAddress>{ip("10.5.0.7"), ip("172.17.0.2"), ip("fd00::2")}));
}

TEST(DockerJsonTest, UnaddressedRunningContainersAreSkippedWithAReason) {
  auto host = parse_inspect(R"({"Id": "h1", "Name": "/h", "State": {"Running": true},
    "Config": {"Image": "x", "Labels": null}, "HostConfig": {"NetworkMode": "host"},
    "NetworkSettings": {"IPAddress": "", "Networks": {}}})");
  ASSERT_TRUE(host.ok()) << host.error().message;
  EXPECT_FALSE(host->endpoint.has_value());
  EXPECT_NE(host->skip_reason.find("network=host"), std::string::npos) << host->skip_reason;

  auto none = parse_inspect(R"({"Id": "n1", "Name": "/n", "State": {"Running": true},
    "HostConfig": {"NetworkMode": "none"}, "NetworkSettings": {"Networks": null}})");
  ASSERT_TRUE(none.ok());
  EXPECT_NE(none->skip_reason.find("network=none"), std::string::npos) << none->skip_reason;

  auto stopped = parse_inspect(R"({"Id": "s1", "Name": "/s", "State": {"Running": false},
    "NetworkSettings": {"IPAddress": "10.0.0.9"}})");
  ASSERT_TRUE(stopped.ok());
  EXPECT_FALSE(stopped->running);
  EXPECT_FALSE(stopped->endpoint.has_value());

  for (const char* bad : {"", "[]", "{\"Name\": \"/x\"}", "{not json"}) {
    auto r = parse_inspect(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().kind, Error::Kind::Json);
  }
}

TEST(DockerJsonTest, EventsOfDockerAndPodmanMapToEffects) {
  // Docker: a network event names the network in Actor.ID, the container in
  // Attributes.container; removal is "destroy".
  auto docker_net = parse_event(R"({"Type":"network","Action":"connect","Actor":{"ID":"net1",
    "Attributes":{"container":"c1","name":"bridge","type":"bridge"}},"time":5,"timeNano":5000000007})");
  ASSERT_TRUE(docker_net.ok()) << docker_net.error().message;
  EXPECT_EQ(docker_net->id, "c1");
  EXPECT_EQ(docker_net->time_nano, 5000000007);
  EXPECT_EQ(effect_of(docker_net.value()), EventEffect::Refresh);

  auto docker_net_create = parse_event(
      R"({"Type":"network","Action":"destroy","Actor":{"ID":"net1","Attributes":{"name":"x"}}})");
  ASSERT_TRUE(docker_net_create.ok());
  EXPECT_EQ(effect_of(docker_net_create.value()), EventEffect::Ignore);

  // Podman: Actor.ID is the container for network events; removal is "remove".
  auto podman_net = parse_event(R"({"status":"disconnect","id":"c2","Type":"network",
    "Action":"disconnect","Actor":{"ID":"c2","Attributes":{"name":"web"}},"time":7})");
  ASSERT_TRUE(podman_net.ok());
  EXPECT_EQ(podman_net->id, "c2");
  EXPECT_EQ(podman_net->time_nano, 7'000'000'000);
  EXPECT_EQ(effect_of(podman_net.value()), EventEffect::Refresh);

  const std::vector<std::pair<std::string, EventEffect>> container_actions = {
      {"create", EventEffect::Ignore},        {"init", EventEffect::Ignore},
      {"start", EventEffect::Refresh},        {"rename", EventEffect::Refresh},
      {"die", EventEffect::Refresh},          {"stop", EventEffect::Refresh},
      {"destroy", EventEffect::Remove},       {"remove", EventEffect::Remove},
      {"exec_start: sh", EventEffect::Ignore}};
  for (const auto& [action, effect] : container_actions) {
    auto ev =
        parse_event(R"({"Type":"container","Action":")" + action + R"(","Actor":{"ID":"c3"}})");
    ASSERT_TRUE(ev.ok()) << action;
    EXPECT_EQ(effect_of(ev.value()), effect) << action;
  }
  EXPECT_FALSE(parse_event("{}").ok());
  EXPECT_FALSE(parse_event("garbage").ok());
}

// A RuntimeSource pointed at a socket nobody serves reports the failure,
// delivers no snapshot (an error is not "no containers") and stops at once.
TEST(RuntimeSourceOfflineTest, UnreachableRuntimeIsDisconnectedNotEmpty) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<bool, std::string>> states;
  int snapshots = 0;
  RuntimeSourceCallbacks cb;
  cb.on_snapshot = [&](std::vector<identity::Endpoint>) {
    std::lock_guard lock(mu);
    ++snapshots;
  };
  cb.on_state = [&](bool up, std::string why) {
    std::lock_guard lock(mu);
    states.emplace_back(up, std::move(why));
    cv.notify_all();
  };
  RuntimeSource::Options o;
  o.client.socket_path = "/tmp/twrt-offline-" + std::to_string(::getpid()) + ".sock";
  RuntimeSource source(o, cb);
  source.start();
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, milliseconds(3000), [&] { return !states.empty(); }));
  }
  std::this_thread::sleep_for(milliseconds(400));  // a few backoff rounds
  const auto t0 = Clock::now();
  source.stop();
  EXPECT_LT(ms_since(t0), 200.0);
  std::lock_guard lock(mu);
  ASSERT_EQ(states.size(), 1U);  // reported once, not per retry
  EXPECT_FALSE(states[0].first);
  EXPECT_NE(states[0].second.find(o.client.socket_path), std::string::npos) << states[0].second;
  EXPECT_EQ(snapshots, 0);
  EXPECT_FALSE(source.connected());
}

// ---------------------------------------------------------------------------
// Real Podman

struct Cmd {
  int rc = -1;
  std::string out;
};

Cmd run(const std::string& command) {
  Cmd c;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return c;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) c.out.append(buf.data(), n);
  const int status = ::pclose(p);
  c.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return c;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

const std::string kScript = std::string(TIERWALL_SOURCE_DIR) + "/scripts/podman-setup.sh";
const std::string kImage = "reg.example/tierwall/busybox:1";

// What a RuntimeSource has told us: the state it describes and the history.
class Recorder {
 public:
  RuntimeSourceCallbacks callbacks() {
    RuntimeSourceCallbacks cb;
    cb.on_snapshot = [this](std::vector<identity::Endpoint> eps) {
      std::lock_guard lock(mu_);
      state_.clear();
      for (auto& e : eps) state_.emplace(e.id, std::move(e));
      ++snapshots_;
      history_.push_back("snapshot");
      cv_.notify_all();
    };
    cb.on_upsert = [this](identity::Endpoint ep, EventTiming timing) {
      std::lock_guard lock(mu_);
      history_.push_back("upsert " + ep.name);
      timings_.emplace(ep.name, timing);
      state_.insert_or_assign(ep.id, std::move(ep));
      cv_.notify_all();
    };
    cb.on_remove = [this](std::string id) {
      std::lock_guard lock(mu_);
      history_.push_back("remove " + id);
      state_.erase(id);
      cv_.notify_all();
    };
    cb.on_skipped = [this](SkippedContainer s) {
      std::lock_guard lock(mu_);
      skipped_.insert_or_assign(s.name, s.reason);
      cv_.notify_all();
    };
    cb.on_state = [this](bool up, std::string why) {
      std::lock_guard lock(mu_);
      history_.push_back(std::string(up ? "up: " : "down: ") + why);
      states_.push_back(up);
      cv_.notify_all();
    };
    return cb;
  }

  // Waits until `pred` (called under the lock with this recorder) holds.
  bool wait(const std::function<bool(Recorder&)>& pred, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(*this); });
  }

  // Runs `fn` under the lock, for reading the fields below consistently.
  void with(const std::function<void(Recorder&)>& fn) {
    std::lock_guard lock(mu_);
    fn(*this);
  }

  // Under the lock (from wait predicates and with()).
  const identity::Endpoint* by_name(const std::string& name) const {
    for (const auto& [id, ep] : state_) {
      if (ep.name == name) return &ep;
    }
    return nullptr;
  }
  std::map<std::string, identity::Endpoint> state_;
  std::map<std::string, EventTiming> timings_;  // by container name
  std::map<std::string, std::string> skipped_;  // name -> reason
  std::vector<bool> states_;
  std::vector<std::string> history_;
  int snapshots_ = 0;

  std::map<std::string, identity::Endpoint> state_copy() {
    std::lock_guard lock(mu_);
    return state_;
  }
  std::string history() {
    std::lock_guard lock(mu_);
    std::string out;
    for (const auto& h : history_) out += "  " + h + "\n";
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class PodmanRuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      skip_reason_ = "needs root: rootful Podman";
      return;
    }
    ::setenv("CONTAINERS_CONF",
             (std::string(TIERWALL_SOURCE_DIR) + "/tests/podman/containers.conf").c_str(), 1);
    prefix_ = "twrt-" + std::to_string(::getpid()) + "-";
    socket_ = "/run/tierwall-test/runtime-test-" + std::to_string(::getpid()) + ".sock";
    const auto t0 = Clock::now();
    Cmd setup = run(kScript);
    if (setup.rc != 0) {
      setup_error_ =
          "scripts/podman-setup.sh failed (" + std::to_string(setup.rc) + "):\n" + setup.out;
      return;
    }
    Cmd service = run(kScript + " service start " + socket_);
    if (service.rc != 0) {
      setup_error_ = "podman service did not start:\n" + service.out;
      return;
    }
    std::printf("[ setup    ] podman-setup.sh + service start: %.0f ms\n", ms_since(t0));
  }

  static void TearDownTestSuite() {
    if (!socket_.empty()) run(kScript + " service stop " + socket_);
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    // The service may have been stopped by an earlier test that failed.
    Cmd up = run(kScript + " service start " + socket_);
    ASSERT_EQ(up.rc, 0) << up.out;
  }

  void TearDown() override {
    if (prefix_.empty()) return;
    Cmd names = run("podman ps -a --filter name=^" + prefix_ + " --format '{{.Names}}'");
    std::string all;
    for (const auto& n : split_lines(names.out)) all += " " + n;
    if (!all.empty()) {
      Cmd rm = run("podman rm -f -t 0" + all);
      EXPECT_EQ(rm.rc, 0) << rm.out;
    }
    Cmd nets = run("podman network ls --filter name=^" + prefix_ + " --format '{{.Name}}'");
    for (const auto& n : split_lines(nets.out)) run("podman network rm -f " + n);
  }

  DockerClient client() const {
    DockerClient::Options o;
    o.socket_path = socket_;
    return DockerClient(o);
  }

  RuntimeSource::Options source_options() const {
    RuntimeSource::Options o;
    o.client.socket_path = socket_;
    return o;
  }

  // Starts a container running `sleep 3600`; returns its full id.
  std::string start(const std::string& suffix, const std::string& image = kImage,
                    const std::string& flags = "") {
    Cmd c =
        run("podman run -d --name " + prefix_ + suffix + " " + flags + " " + image + " sleep 3600");
    EXPECT_EQ(c.rc, 0) << c.out;
    auto lines = split_lines(c.out);
    return lines.empty() ? std::string() : lines.back();
  }
  void remove(const std::string& suffix) {
    Cmd c = run("podman rm -f -t 0 " + prefix_ + suffix);
    EXPECT_EQ(c.rc, 0) << c.out;
  }
  std::string podman_ip(const std::string& suffix) {
    return trim(
        run("podman inspect --format '{{.NetworkSettings.IPAddress}}' " + prefix_ + suffix).out);
  }
  // Ours (by prefix) among the running containers: id -> name.
  std::map<std::string, std::string> podman_ps() {
    std::map<std::string, std::string> out;
    Cmd c =
        run("podman ps --no-trunc --filter name=^" + prefix_ + " --format '{{.ID}} {{.Names}}'");
    for (const auto& line : split_lines(c.out)) {
      const auto sp = line.find(' ');
      if (sp != std::string::npos) out.emplace(line.substr(0, sp), line.substr(sp + 1));
    }
    return out;
  }
  std::map<std::string, std::string> ours(const std::map<std::string, identity::Endpoint>& state) {
    std::map<std::string, std::string> out;
    for (const auto& [id, ep] : state) {
      if (ep.name.rfind(prefix_, 0) == 0) out.emplace(id, ep.name);
    }
    return out;
  }

  static inline std::string skip_reason_;
  static inline std::string setup_error_;
  static inline std::string prefix_;
  static inline std::string socket_;
};

TEST_F(PodmanRuntimeTest, PingSpeaksUnversionedAndVersionedApi) {
  auto c = client();
  auto pong = c.ping();
  ASSERT_TRUE(pong.ok()) << pong.error().message;
  DockerClient::Options o;
  o.socket_path = socket_;
  o.api_version = "1.41";
  auto versioned = DockerClient(o).ping();
  ASSERT_TRUE(versioned.ok()) << versioned.error().message;
}

TEST_F(PodmanRuntimeTest, ListReturnsIdentityOfRunningContainers) {
  const std::string db =
      start("db", "reg.example/pay/db:2", "--label app=payments --label role=db");
  const std::string web =
      start("web", "reg.example/shop/web:1.4", "--label app=shop --label role=web");
  const std::string host = start("host", kImage, "--network host");
  ASSERT_FALSE(db.empty());

  const auto t0 = Clock::now();
  auto list = client().list();
  std::printf("[ list     ] %zu endpoint(s), %zu skipped in %.1f ms\n",
              list ? list->endpoints.size() : 0U, list ? list->skipped.size() : 0U, ms_since(t0));
  ASSERT_TRUE(list.ok()) << list.error().message;

  auto find = [&](const std::string& id) -> const identity::Endpoint* {
    for (const auto& ep : list->endpoints) {
      if (ep.id == id) return &ep;
    }
    return nullptr;
  };
  const identity::Endpoint* e_db = find(db);
  ASSERT_NE(e_db, nullptr) << "db container " << db << " not listed";
  EXPECT_EQ(e_db->name, prefix_ + "db");
  EXPECT_EQ(e_db->image, "reg.example/pay/db:2");
  EXPECT_EQ(e_db->labels, identity::Labels({{"app", "payments"}, {"role", "db"}}));
  ASSERT_EQ(e_db->addresses.size(), 1U);
  EXPECT_TRUE(e_db->addresses[0].is_v4());
  EXPECT_EQ(e_db->addresses[0].to_string(), podman_ip("db"));

  const identity::Endpoint* e_web = find(web);
  ASSERT_NE(e_web, nullptr);
  EXPECT_EQ(e_web->name, prefix_ + "web");
  EXPECT_EQ(e_web->image, "reg.example/shop/web:1.4");
  EXPECT_EQ(e_web->labels, identity::Labels({{"app", "shop"}, {"role", "web"}}));
  ASSERT_EQ(e_web->addresses.size(), 1U);
  EXPECT_EQ(e_web->addresses[0].to_string(), podman_ip("web"));
  EXPECT_NE(e_web->addresses, e_db->addresses);

  EXPECT_EQ(find(host), nullptr) << "a host-network container has no address of its own";
  auto skipped = std::find_if(list->skipped.begin(), list->skipped.end(),
                              [&](const auto& s) { return s.id == host; });
  ASSERT_NE(skipped, list->skipped.end());
  EXPECT_EQ(skipped->name, prefix_ + "host");
  EXPECT_NE(skipped->reason.find("network=host"), std::string::npos) << skipped->reason;

  // inspect of a container that does not exist is an answer, not an error
  auto gone = client().inspect("twrt-no-such-container");
  ASSERT_TRUE(gone.ok()) << gone.error().message;
  EXPECT_FALSE(gone->exists);
}

TEST_F(PodmanRuntimeTest, SourceSeesStartAndRemove) {
  Recorder rec;
  RuntimeSource source(source_options(), rec.callbacks());
  source.start();
  ASSERT_TRUE(rec.wait([](Recorder& r) { return r.snapshots_ >= 1; }, milliseconds(5000)))
      << rec.history();
  EXPECT_TRUE(source.connected());

  const std::string id =
      start("pay", "reg.example/pay/db:2", "--label app=payments --label role=db");
  auto started = Clock::now();
  ASSERT_TRUE(rec.wait([&](Recorder& r) { return r.by_name(prefix_ + "pay") != nullptr; },
                       milliseconds(2000)))
      << rec.history();
  const double seen_after_run_ms = ms_since(started);
  const auto state = rec.state_copy();
  ASSERT_EQ(state.count(id), 1U);
  const identity::Endpoint& ep = state.at(id);
  EXPECT_EQ(ep.name, prefix_ + "pay");
  EXPECT_EQ(ep.image, "reg.example/pay/db:2");
  EXPECT_EQ(ep.labels, identity::Labels({{"app", "payments"}, {"role", "db"}}));
  ASSERT_EQ(ep.addresses.size(), 1U);
  EXPECT_EQ(ep.addresses[0].to_string(), podman_ip("pay"));
  {
    std::map<std::string, EventTiming> timings;
    rec.with([&](Recorder& r) { timings = r.timings_; });
    ASSERT_EQ(timings.count(prefix_ + "pay"), 1U);
    const EventTiming& t = timings.at(prefix_ + "pay");
    EXPECT_EQ(t.action, "start");
    ASSERT_GT(t.runtime_ns, 0);
    const auto received_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(t.received_wall.time_since_epoch())
            .count();
    const double event_to_received_ms = static_cast<double>(received_ns - t.runtime_ns) / 1e6;
    std::printf(
        "[ timing   ] start event -> received %.1f ms; `podman run` returned -> upsert "
        "seen %.1f ms\n",
        event_to_received_ms, seen_after_run_ms);
    EXPECT_GT(event_to_received_ms, -50.0);  // same clock, give or take
    EXPECT_LT(event_to_received_ms, 2000.0);
  }

  remove("pay");
  auto removed = Clock::now();
  ASSERT_TRUE(rec.wait([&](Recorder& r) { return r.state_.count(id) == 0; }, milliseconds(2000)))
      << rec.history();
  std::printf("[ timing   ] `podman rm` returned -> remove seen %.1f ms\n", ms_since(removed));

  const auto t0 = Clock::now();
  source.stop();
  EXPECT_LT(ms_since(t0), 200.0) << "stop() must interrupt the blocked stream read";
  EXPECT_FALSE(source.connected());
}

TEST_F(PodmanRuntimeTest, SourceFollowsNetworkChangesRenamesAndSkips) {
  const std::string net = prefix_ + "v6";
  Cmd created = run("podman network create --ipv6 " + net);
  ASSERT_EQ(created.rc, 0) << created.out;
  Recorder rec;
  RuntimeSource source(source_options(), rec.callbacks());
  source.start();
  ASSERT_TRUE(rec.wait([](Recorder& r) { return r.snapshots_ >= 1; }, milliseconds(5000)))
      << rec.history();

  const std::string id = start("multi", kImage, "--label app=multi");
  ASSERT_TRUE(rec.wait([&](Recorder& r) { return r.state_.count(id) == 1; }, milliseconds(2000)))
      << rec.history();

  // Joining a dual-stack network adds its IPv4 and IPv6 addresses.
  Cmd connect = run("podman network connect " + net + " " + prefix_ + "multi");
  ASSERT_EQ(connect.rc, 0) << connect.out;
  const std::string v6 = trim(run("podman inspect --format '{{(index .NetworkSettings.Networks \"" +
                                  net + "\").GlobalIPv6Address}}' " + prefix_ + "multi")
                                  .out);
  ASSERT_TRUE(IpAddress::parse(v6).has_value()) << "no IPv6 address: '" << v6 << "'";
  ASSERT_TRUE(rec.wait(
      [&](Recorder& r) {
        return r.state_.count(id) == 1 && r.state_.at(id).addresses.size() == 3 &&
               std::count(r.state_.at(id).addresses.begin(), r.state_.at(id).addresses.end(),
                          *IpAddress::parse(v6)) == 1;
      },
      milliseconds(2000)))
      << rec.history();

  Cmd disconnect = run("podman network disconnect " + net + " " + prefix_ + "multi");
  ASSERT_EQ(disconnect.rc, 0) << disconnect.out;
  ASSERT_TRUE(rec.wait(
      [&](Recorder& r) { return r.state_.count(id) == 1 && r.state_.at(id).addresses.size() == 1; },
      milliseconds(2000)))
      << rec.history();
  EXPECT_EQ(rec.state_copy().at(id).addresses[0].to_string(), podman_ip("multi"));

  Cmd rename = run("podman rename " + prefix_ + "multi " + prefix_ + "renamed");
  ASSERT_EQ(rename.rc, 0) << rename.out;
  ASSERT_TRUE(rec.wait(
      [&](Recorder& r) {
        return r.state_.count(id) == 1 && r.state_.at(id).name == prefix_ + "renamed";
      },
      milliseconds(2000)))
      << rec.history();

  // A host-network container has no address of its own: skipped, with why.
  start("hostnet", kImage, "--network host");
  ASSERT_TRUE(rec.wait([&](Recorder& r) { return r.skipped_.count(prefix_ + "hostnet") == 1; },
                       milliseconds(2000)))
      << rec.history();
  rec.with([&](Recorder& r) {
    EXPECT_NE(r.skipped_.at(prefix_ + "hostnet").find("network=host"), std::string::npos);
    EXPECT_EQ(r.by_name(prefix_ + "hostnet"), nullptr);
  });
}

TEST_F(PodmanRuntimeTest, ChurnFinalStateEqualsPodmanPs) {
  const std::string keep = start("before", kImage, "--label app=churn");  // in the snapshot
  Recorder rec;
  RuntimeSource source(source_options(), rec.callbacks());
  source.start();
  ASSERT_TRUE(rec.wait([](Recorder& r) { return r.snapshots_ >= 1; }, milliseconds(5000)))
      << rec.history();
  EXPECT_EQ(rec.state_copy().count(keep), 1U);

  // Ten containers started at once, then every other one removed at once
  // (plus the one from before the snapshot), while the source watches.
  const auto t0 = Clock::now();
  std::string starts;
  for (int i = 0; i < 10; ++i) {
    starts += "podman run -d --name " + prefix_ + "churn" + std::to_string(i) +
              " --label app=churn --label n=" + std::to_string(i) + " " + kImage +
              " sleep 3600 >/dev/null & ";
  }
  Cmd started = run("{ " + starts + "wait; }");
  ASSERT_EQ(started.rc, 0) << started.out;
  std::string rms = "podman rm -f -t 0 " + prefix_ + "before";
  for (int i = 0; i < 10; i += 2) rms += " " + prefix_ + "churn" + std::to_string(i);
  Cmd removed = run(rms);
  ASSERT_EQ(removed.rc, 0) << removed.out;
  const double churn_ms = ms_since(t0);

  const auto expected = podman_ps();
  ASSERT_EQ(expected.size(), 5U);
  const bool converged =
      rec.wait([&](Recorder& r) { return ours(r.state_) == expected; }, milliseconds(5000));
  std::printf("[ churn    ] 10 started + 6 removed in %.0f ms; converged %.0f ms later\n", churn_ms,
              ms_since(t0) - churn_ms);
  ASSERT_TRUE(converged) << rec.history();
  const auto state = rec.state_copy();
  for (const auto& [id, name] : expected) {
    const auto& ep = state.at(id);
    const std::string n = name.substr(name.size() - 1);
    EXPECT_EQ(ep.labels, identity::Labels({{"app", "churn"}, {"n", n}})) << name;
    EXPECT_EQ(ep.addresses.size(), 1U) << name;
  }

  // And down to nothing of ours.
  std::string rest = "podman rm -f -t 0";
  for (int i = 1; i < 10; i += 2) rest += " " + prefix_ + "churn" + std::to_string(i);
  ASSERT_EQ(run(rest).rc, 0);
  EXPECT_TRUE(rec.wait([&](Recorder& r) { return ours(r.state_).empty(); }, milliseconds(5000)))
      << rec.history();
  int snapshots = 0;
  rec.with([&](Recorder& r) { snapshots = r.snapshots_; });
  EXPECT_EQ(snapshots, 1) << "no resynchronisation was needed:\n" << rec.history();
}

TEST_F(PodmanRuntimeTest, ServiceRestartGivesDisconnectThenFreshSnapshot) {
  const std::string early = start("early", kImage, "--label app=early");
  Recorder rec;
  RuntimeSource source(source_options(), rec.callbacks());
  source.start();
  ASSERT_TRUE(rec.wait(
      [](Recorder& r) { return r.snapshots_ == 1 && r.states_ == std::vector<bool>{true}; },
      milliseconds(5000)))
      << rec.history();

  const auto t_stop = Clock::now();
  Cmd stop = run(kScript + " service stop " + socket_);
  ASSERT_EQ(stop.rc, 0) << stop.out;
  ASSERT_TRUE(rec.wait([](Recorder& r) { return r.states_.size() >= 2; }, milliseconds(5000)))
      << rec.history();
  std::printf("[ restart  ] service stop -> on_state(false) %.0f ms\n", ms_since(t_stop));

  // While the runtime API is down: one container created, the early one
  // removed. The source must neither report "empty" nor remove anything.
  const std::string late = start("late", "reg.example/shop/web:1.4", "--label app=late");
  remove("early");
  std::this_thread::sleep_for(milliseconds(300));
  {
    std::vector<bool> states;
    int snapshots = 0;
    std::map<std::string, identity::Endpoint> state;
    rec.with([&](Recorder& r) {
      states = r.states_;
      snapshots = r.snapshots_;
      state = r.state_;
    });
    EXPECT_EQ(states, (std::vector<bool>{true, false}));
    EXPECT_EQ(snapshots, 1) << "no snapshot while disconnected";
    EXPECT_EQ(state.count(early), 1U) << "an error is not 'no containers'";
    EXPECT_FALSE(source.connected());
  }

  // The source retries with backoff (100 ms doubling to 5 s), so it may
  // take up to ~5 s after the service is back to notice.
  const auto t_start = Clock::now();
  Cmd up = run(kScript + " service start " + socket_);
  ASSERT_EQ(up.rc, 0) << up.out;
  ASSERT_TRUE(rec.wait([](Recorder& r) { return r.snapshots_ >= 2 && r.states_.size() >= 3; },
                       milliseconds(12000)))
      << rec.history();
  std::printf("[ restart  ] service start -> fresh snapshot + on_state(true) %.0f ms\n",
              ms_since(t_start));
  const auto state = rec.state_copy();
  std::vector<bool> states;
  rec.with([&](Recorder& r) { states = r.states_; });
  EXPECT_EQ(states, (std::vector<bool>{true, false, true})) << rec.history();
  EXPECT_EQ(state.count(late), 1U) << "created while the service was down:\n" << rec.history();
  EXPECT_EQ(state.count(early), 0U) << "removed while the service was down:\n" << rec.history();
  if (state.count(late) == 1) {
    EXPECT_EQ(state.at(late).image, "reg.example/shop/web:1.4");
  }
  EXPECT_EQ(ours(state), podman_ps());
  EXPECT_TRUE(source.connected());
}

}  // namespace
}  // namespace tierwall::runtime
