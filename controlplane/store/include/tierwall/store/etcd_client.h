// An etcd v3 client over etcd's JSON gateway (HTTP/1.1 + JSON on the
// client URLs, `/v3/...`), through libcurl. docs/architecture.md says why
// the gateway and not gRPC C++; docs/cluster.md how to point it at a cluster.
//
// What it does:
//   - range / put / delete / txn (compares on version, create/mod revision,
//     value, lease), lease grant / keepalive / revoke, compaction, watch
//     from a revision, and the auth administration tierwall's roles need;
//   - several endpoints: a request goes to the endpoint that answered last;
//     when it cannot be reached the next one is tried, in order, and the
//     one that answers becomes current. A request that may already have
//     been executed (the connection broke after it was sent) is retried
//     elsewhere only when it is idempotent (reads, keepalive, auth), so a
//     put or a txn is never applied twice by the client;
//   - authentication: with a user, the first request authenticates
//     (user + password -> token) and every request carries the token; a
//     token etcd no longer accepts is renewed once and the request retried;
//   - TLS: https:// endpoints, verified against `ca_file` (or the system
//     store), optional client certificate and key.
//
// Errors are values (result.h) naming the endpoint, the HTTP status and
// etcd's own error text. An answer is never mistaken for an empty one: a
// missing key is an empty RangeResponse, a failure is an Error.
//
// Thread contract: an EtcdClient is used by one thread at a time (its
// connection is reused between requests). Use one client per thread; they
// are cheap (one libcurl handle, one connection per endpoint in use).
// watch() runs on the calling thread on its own connection; its callback
// may call this client's other methods.
//
// Costs: one HTTP round trip per call (plus one to authenticate on first
// use or after a token expired); connections are kept alive between calls.
// Values are base64 in transit (4/3 of their size).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tierwall/store/layout.h"
#include "tierwall/store/result.h"
#include "tierwall/store/wire.h"

namespace tierwall::store {

struct ClientOptions {
  std::vector<std::string> endpoints;  // client URLs, "http(s)://host:port"
  std::string user;                    // empty: no authentication
  std::string password;
  std::string ca_file;    // PEM CA bundle for https endpoints (default: system store)
  std::string cert_file;  // PEM client certificate (etcd --client-cert-auth)
  std::string key_file;   // its PEM private key
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{10000};  // a whole request, not a watch
};

// "http://a:2379,https://b:2379" -> the URLs, checked (scheme, host, no
// path). Kind::Invalid with the reason otherwise.
[[nodiscard]] Result<std::vector<std::string>> parse_endpoints(std::string_view list);

// Why a watch ended without an error.
struct WatchEnd {
  enum class Reason : std::uint8_t {
    Stopped,    // the callback returned false or `stop` was set
    Compacted,  // start_revision is older than the last compaction: list again
    Canceled,   // etcd canceled the watch (e.g. permission denied), see `reason`
  };
  Reason reason = Reason::Stopped;
  std::int64_t compact_revision = 0;  // Compacted: the oldest revision still kept
  std::string cancel_reason;          // Canceled: etcd's text
  std::int64_t last_revision = 0;     // the last header revision seen
};

struct MemberStatus {
  std::string endpoint;
  std::string version;
  std::int64_t revision = 0;
  std::uint64_t member_id = 0;
  std::uint64_t leader = 0;
};

class EtcdClient {
 public:
  explicit EtcdClient(ClientOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  [[nodiscard]] const ClientOptions& options() const { return options_; }
  // The endpoint the last request went to.
  [[nodiscard]] const std::string& current_endpoint() const;

  [[nodiscard]] Result<RangeResponse> range(const RangeRequest& request);
  [[nodiscard]] Result<RangeResponse> get(std::string_view key);
  [[nodiscard]] Result<RangeResponse> get_prefix(std::string_view prefix);
  // The store revision of the write.
  [[nodiscard]] Result<std::int64_t> put(std::string_view key, std::string_view value,
                                         std::int64_t lease = 0);
  // The number of keys deleted.
  [[nodiscard]] Result<std::int64_t> erase(std::string_view key, std::string_view range_end = {});
  // A compare that fails is not an error: see TxnResponse::succeeded.
  [[nodiscard]] Result<TxnResponse> txn(const TxnRequest& request);
  // Discards history before `revision` (watches from older revisions then
  // end with WatchEnd::Compacted).
  [[nodiscard]] Result<Done> compact(std::int64_t revision);

  [[nodiscard]] Result<LeaseGrant> lease_grant(std::int64_t ttl_seconds);
  // Renews the lease once; its remaining TTL. Kind::NotFound once it expired.
  [[nodiscard]] Result<std::int64_t> lease_keepalive(std::int64_t id);
  // Revokes the lease and deletes every key attached to it.
  [[nodiscard]] Result<Done> lease_revoke(std::int64_t id);

  // Streams `request`'s changes to `on_response` (one call per etcd watch
  // response with events or a progress notification, on this thread) until
  // it returns false, `stop` becomes true (checked at least once a second),
  // etcd cancels the watch, or the connection fails (an Error: resume from
  // the last revision + 1 after a list, never assume "no changes").
  // Connecting tries the endpoints in order as every request does.
  [[nodiscard]] Result<WatchEnd> watch(const WatchRequest& request,
                                       const std::function<bool(const WatchResponse&)>& on_response,
                                       const std::atomic<bool>* stop = nullptr);

  // Every endpoint's status, in order (unreachable ones as errors).
  [[nodiscard]] std::vector<Result<MemberStatus>> status_all();

  // Authentication administration (root only once auth is enabled).
  // "Already exists" is success for role_add; user_add sets the password of
  // an existing user instead.
  [[nodiscard]] Result<Done> user_add(std::string_view name, std::string_view password);
  [[nodiscard]] Result<Done> role_add(std::string_view name);
  [[nodiscard]] Result<Done> role_grant(std::string_view role, const Permission& permission);
  [[nodiscard]] Result<Done> user_grant_role(std::string_view user, std::string_view role);
  [[nodiscard]] Result<Done> auth_enable();

 private:
  struct Impl;
  ClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierwall::store
