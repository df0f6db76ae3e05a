#include "tierwall/store/etcd_client.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

namespace tierwall::store {

using nlohmann::json;

namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool tls_failure(CURLcode code) {
  switch (code) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
      return true;
    default:
      return false;
  }
}

// What one HTTP exchange with one endpoint gave.
struct Exchange {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  bool sent = false;   // request bytes left this host: it may have been executed
  std::string detail;  // libcurl's error buffer
};

std::string transport_text(const std::string& endpoint, const Exchange& x) {
  std::string text = endpoint + ": " + curl_easy_strerror(x.code);
  if (!x.detail.empty()) text += " (" + x.detail + ")";
  return text;
}

std::size_t append_body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

struct Headers {
  curl_slist* list = nullptr;
  ~Headers() { curl_slist_free_all(list); }
  void add(const std::string& h) { list = curl_slist_append(list, h.c_str()); }
};

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

Error all_failed(const std::vector<std::string>& failures, bool any_tls, bool any_timeout) {
  Error e = Error::make(any_tls ? Error::Kind::Tls : Error::Kind::Unavailable,
                        "no etcd endpoint answered: " + join(failures, "; "));
  if (any_tls) {
    e.message +=
        " — check that --store-ca names the CA that signed etcd's certificate, and the "
        "client certificate and key if etcd asks for one";
  } else if (any_timeout) {
    e.message += " — is etcd running and reachable from here?";
  }
  return e;
}

}  // namespace

Result<std::vector<std::string>> parse_endpoints(std::string_view list) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const auto comma = list.find(',', pos);
    std::string_view item =
        list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '/')) item.remove_suffix(1);
    if (!item.empty()) {
      const bool http = item.starts_with("http://");
      const bool https = item.starts_with("https://");
      const std::string_view rest = item.substr(http ? 7 : https ? 8 : 0);
      if (!http && !https) {
        return Error::make(Error::Kind::Invalid, "etcd endpoint '" + std::string(item) +
                                                     "' must start with http:// or https://");
      }
      if (rest.empty() || rest.find('/') != std::string_view::npos ||
          rest.find('?') != std::string_view::npos) {
        return Error::make(
            Error::Kind::Invalid,
            "etcd endpoint '" + std::string(item) + "' must be scheme://host:port, without a path");
      }
      out.emplace_back(item);
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  if (out.empty()) return Error::make(Error::Kind::Invalid, "no etcd endpoint given");
  return out;
}

struct EtcdClient::Impl {
  const ClientOptions& options;
  CURL* curl = nullptr;
  std::size_t current = 0;
  std::string token;

  explicit Impl(const ClientOptions& o) : options(o) {
    global_init();
    curl = curl_easy_init();
  }
  ~Impl() {
    if (curl != nullptr) curl_easy_cleanup(curl);
  }

  // Options common to every request on `h`.
  void setup(CURL* h, const std::string& url, const std::string& body, Headers& headers,
             char* errbuf, bool with_token) const {
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    headers.add("Content-Type: application/json");
    headers.add("Expect:");  // no 100-continue round trip for large bodies
    if (with_token && !token.empty()) headers.add("Authorization: " + token);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.list);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");  // etcd is always spoken to directly
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options.connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (!options.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str());
    if (!options.cert_file.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, options.cert_file.c_str());
    }
    if (!options.key_file.empty()) curl_easy_setopt(h, CURLOPT_SSLKEY, options.key_file.c_str());
  }

  Exchange exchange(std::size_t index, std::string_view path, const std::string& body,
                    bool with_token) {
    Exchange x;
    char errbuf[CURL_ERROR_SIZE] = {};
    Headers headers;
    const std::string url = options.endpoints[index] + std::string(path);
    setup(curl, url, body, headers, errbuf, with_token);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options.request_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x.body);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, nullptr);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 1L);
    x.code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &x.status);
    long request_size = 0;
    curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &request_size);
    x.sent = request_size > 0;
    x.detail = errbuf;
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
    return x;
  }

  // One request, failing over between endpoints. The body of a 200 answer.
  Result<std::string> send(std::string_view path, const std::string& body, bool idempotent,
                           bool with_token) {
    const std::size_t n = options.endpoints.size();
    if (n == 0) return Error::make(Error::Kind::Invalid, "no etcd endpoint given");
    std::vector<std::string> failures;
    bool any_tls = false;
    bool any_timeout = false;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t index = (current + i) % n;
      const std::string& endpoint = options.endpoints[index];
      Exchange x = exchange(index, path, body, with_token);
      if (x.code == CURLE_OK) {
        if (x.status == 200) {
          current = index;
          return std::move(x.body);
        }
        Error e = decode_error(static_cast<int>(x.status), x.body, endpoint);
        if (e.kind == Error::Kind::Unavailable && idempotent) {
          failures.push_back(e.message);
          continue;
        }
        current = index;
        return e;
      }
      any_tls = any_tls || tls_failure(x.code);
      any_timeout = any_timeout || x.code == CURLE_OPERATION_TIMEDOUT;
      if (x.sent && !idempotent && !tls_failure(x.code)) {
        Error e = Error::make(Error::Kind::Unavailable,
                              "the connection to etcd broke after the request was sent (" +
                                  transport_text(endpoint, x) +
                                  "); it may or may not have been applied: read back and retry");
        e.endpoint = endpoint;
        return e;
      }
      failures.push_back(transport_text(endpoint, x));
    }
    return all_failed(failures, any_tls, any_timeout);
  }

  Result<Done> authenticate() {
    token.clear();
    const std::string body = json{{"name", options.user}, {"password", options.password}}.dump();
    auto r = send("/v3/auth/authenticate", body, /*idempotent=*/true, /*with_token=*/false);
    if (!r) {
      Error e = r.error();
      if (e.kind == Error::Kind::Auth || e.etcd_code == 3) {
        e.kind = Error::Kind::Auth;
        e.message = "etcd refused user '" + options.user + "': " + e.etcd_error;
      }
      return e;
    }
    auto t = decode_token(*r);
    if (!t) return t.error();
    token = std::move(*t);
    return Done{};
  }

  bool stale_token(const Error& e) const {
    return !options.user.empty() && e.kind == Error::Kind::Auth &&
           e.etcd_error.find("invalid auth token") != std::string::npos;
  }

  // A request as the configured user: authenticates first when needed and
  // once more when etcd no longer accepts the token.
  Result<std::string> call(std::string_view path, const std::string& body, bool idempotent) {
    if (!options.user.empty() && token.empty()) {
      if (auto a = authenticate(); !a) return a.error();
    }
    auto r = send(path, body, idempotent, true);
    if (!r && stale_token(r.error())) {
      if (auto a = authenticate(); !a) return a.error();
      r = send(path, body, idempotent, true);
    }
    return r;
  }
};

EtcdClient::EtcdClient(ClientOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {}

EtcdClient::~EtcdClient() = default;

const std::string& EtcdClient::current_endpoint() const {
  static const std::string none;
  if (options_.endpoints.empty()) return none;
  return options_.endpoints[impl_->current % options_.endpoints.size()];
}

Result<RangeResponse> EtcdClient::range(const RangeRequest& request) {
  auto r = impl_->call("/v3/kv/range", encode_range(request), true);
  if (!r) return r.error();
  return decode_range(*r);
}

Result<RangeResponse> EtcdClient::get(std::string_view key) {
  RangeRequest req;
  req.key = std::string(key);
  return range(req);
}

Result<RangeResponse> EtcdClient::get_prefix(std::string_view prefix) {
  RangeRequest req;
  req.key = std::string(prefix);
  req.range_end = prefix_end(prefix);
  return range(req);
}

Result<std::int64_t> EtcdClient::put(std::string_view key, std::string_view value,
                                     std::int64_t lease) {
  auto r = impl_->call("/v3/kv/put", encode_put(key, value, lease), false);
  if (!r) return r.error();
  return decode_header_revision(*r);
}

Result<std::int64_t> EtcdClient::erase(std::string_view key, std::string_view range_end) {
  auto r = impl_->call("/v3/kv/deleterange", encode_delete(key, range_end), false);
  if (!r) return r.error();
  return decode_deleted(*r);
}

Result<TxnResponse> EtcdClient::txn(const TxnRequest& request) {
  bool read_only = true;
  for (const auto* ops : {&request.success, &request.failure}) {
    for (const auto& op : *ops) read_only = read_only && op.kind == TxnOp::Kind::Range;
  }
  auto r = impl_->call("/v3/kv/txn", encode_txn(request), read_only);
  if (!r) return r.error();
  return decode_txn(*r);
}

Result<Done> EtcdClient::compact(std::int64_t revision) {
  auto r =
      impl_->call("/v3/kv/compaction",
                  json{{"revision", std::to_string(revision)}, {"physical", true}}.dump(), true);
  if (!r) return r.error();
  return Done{};
}

Result<LeaseGrant> EtcdClient::lease_grant(std::int64_t ttl_seconds) {
  auto r = impl_->call("/v3/lease/grant", json{{"TTL", std::to_string(ttl_seconds)}}.dump(), false);
  if (!r) return r.error();
  return decode_lease_grant(*r);
}

Result<std::int64_t> EtcdClient::lease_keepalive(std::int64_t id) {
  auto r = impl_->call("/v3/lease/keepalive", json{{"ID", std::to_string(id)}}.dump(), true);
  if (!r) return r.error();
  return decode_keepalive(*r);
}

Result<Done> EtcdClient::lease_revoke(std::int64_t id) {
  auto r = impl_->call("/v3/lease/revoke", json{{"ID", std::to_string(id)}}.dump(), true);
  if (!r) return r.error();
  return Done{};
}

std::vector<Result<MemberStatus>> EtcdClient::status_all() {
  std::vector<Result<MemberStatus>> out;
  for (std::size_t i = 0; i < options_.endpoints.size(); ++i) {
    const std::string& endpoint = options_.endpoints[i];
    if (!options_.user.empty() && impl_->token.empty()) (void)impl_->authenticate();
    Exchange x = impl_->exchange(i, "/v3/maintenance/status", "{}", true);
    if (x.code != CURLE_OK) {
      out.emplace_back(
          Error::make(tls_failure(x.code) ? Error::Kind::Tls : Error::Kind::Unavailable,
                      transport_text(endpoint, x)));
      continue;
    }
    if (x.status != 200) {
      out.emplace_back(decode_error(static_cast<int>(x.status), x.body, endpoint));
      continue;
    }
    json j = json::parse(x.body, nullptr, false);
    if (!j.is_object()) {
      out.emplace_back(Error::make(Error::Kind::Protocol, endpoint + ": status is not JSON"));
      continue;
    }
    MemberStatus s;
    s.endpoint = endpoint;
    s.version = j.value("version", "");
    const auto num = [](const json& o, const char* key) -> std::uint64_t {
      if (!o.is_object() || !o.contains(key) || !o[key].is_string()) return 0;
      return std::strtoull(o[key].get<std::string>().c_str(), nullptr, 10);
    };
    s.member_id = num(j.value("header", json::object()), "member_id");
    s.revision = static_cast<std::int64_t>(num(j.value("header", json::object()), "revision"));
    s.leader = num(j, "leader");
    out.emplace_back(std::move(s));
  }
  return out;
}

namespace {

// State of one watch stream, fed by libcurl's write callback.
struct WatchState {
  CURL* handle = nullptr;
  const std::function<bool(const WatchResponse&)>* on_response = nullptr;
  const std::atomic<bool>* stop = nullptr;
  std::string endpoint;
  std::string pending;     // bytes of an incomplete line
  std::string error_body;  // a non-200 answer's body
  long status = 0;
  bool received = false;   // a line of the stream arrived
  bool delivered = false;  // the callback has seen a response
  std::optional<WatchEnd> end;
  std::optional<Error> error;
  std::int64_t last_revision = 0;
  std::int64_t last_event_revision = 0;

  // false: stop the transfer.
  bool line(std::string_view text) {
    received = true;
    auto w = decode_watch_line(text);
    if (!w) {
      Error e = w.error();
      e.endpoint = endpoint;
      if (e.etcd_error.find("invalid auth token") != std::string::npos) e.kind = Error::Kind::Auth;
      error = std::move(e);
      return false;
    }
    if (w->revision > 0) last_revision = w->revision;
    if (w->canceled && !delivered &&
        w->cancel_reason.find("invalid auth token") != std::string::npos) {
      // The gateway reports a token etcd forgot as a canceled watch.
      Error e = Error::make(Error::Kind::Auth,
                            "etcd at " + endpoint + " canceled the watch: " + w->cancel_reason);
      e.endpoint = endpoint;
      e.etcd_error = "etcdserver: invalid auth token";
      error = std::move(e);
      return false;
    }
    if (w->canceled) {
      WatchEnd done;
      done.last_revision = last_revision;
      if (w->compact_revision > 0) {
        done.reason = WatchEnd::Reason::Compacted;
        done.compact_revision = w->compact_revision;
      } else {
        done.reason = WatchEnd::Reason::Canceled;
        done.cancel_reason = w->cancel_reason;
      }
      end = std::move(done);
      return false;
    }
    if (w->created && w->events.empty()) return true;
    delivered = true;
    for (const auto& ev : w->events) {
      last_event_revision = std::max(last_event_revision, ev.kv.mod_revision);
    }
    if (!(*on_response)(*w)) {
      WatchEnd done;
      done.reason = WatchEnd::Reason::Stopped;
      done.last_revision = last_revision;
      end = std::move(done);
      return false;
    }
    return true;
  }
};

std::size_t watch_write(char* data, std::size_t size, std::size_t n, void* user) {
  auto* st = static_cast<WatchState*>(user);
  const std::size_t bytes = size * n;
  if (st->status == 0) curl_easy_getinfo(st->handle, CURLINFO_RESPONSE_CODE, &st->status);
  if (st->status != 200) {
    st->error_body.append(data, bytes);
    return bytes;
  }
  st->pending.append(data, bytes);
  std::size_t start = 0;
  for (;;) {
    const auto nl = st->pending.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view text(st->pending.data() + start, nl - start);
    start = nl + 1;
    while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
    if (text.empty()) continue;
    if (!st->line(text)) return 0;  // ends the transfer (CURLE_WRITE_ERROR)
  }
  st->pending.erase(0, start);
  return bytes;
}

int watch_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* st = static_cast<WatchState*>(user);
  return st->stop != nullptr && st->stop->load() ? 1 : 0;
}

}  // namespace

Result<WatchEnd> EtcdClient::watch(const WatchRequest& request,
                                   const std::function<bool(const WatchResponse&)>& on_response,
                                   const std::atomic<bool>* stop) {
  const std::size_t n = options_.endpoints.size();
  if (n == 0) return Error::make(Error::Kind::Invalid, "no etcd endpoint given");
  if (!options_.user.empty() && impl_->token.empty()) {
    if (auto a = impl_->authenticate(); !a) return a.error();
  }
  const std::string body = encode_watch_create(request);
  std::vector<std::string> failures;
  bool any_tls = false;
  bool reauthenticated = false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t index = (impl_->current + i) % n;
    CURL* h = curl_easy_init();
    WatchState st;
    st.handle = h;
    st.on_response = &on_response;
    st.stop = stop;
    st.endpoint = options_.endpoints[index];
    char errbuf[CURL_ERROR_SIZE] = {};
    Headers headers;
    impl_->setup(h, st.endpoint + "/v3/watch", body, headers, errbuf, true);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, watch_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &st);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    const CURLcode code = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (st.received) impl_->current = index;
    if (st.end) return std::move(*st.end);
    if (code == CURLE_ABORTED_BY_CALLBACK) {
      WatchEnd done;
      done.reason = WatchEnd::Reason::Stopped;
      done.last_revision = st.last_revision;
      return done;
    }
    if (st.error) {
      if (!reauthenticated && impl_->stale_token(*st.error) && !st.delivered) {
        reauthenticated = true;
        if (auto a = impl_->authenticate(); !a) return a.error();
        --i;
        continue;
      }
      return std::move(*st.error);
    }
    if (code == CURLE_OK && st.status != 200 && st.status != 0) {
      Error e = decode_error(static_cast<int>(st.status), st.error_body, st.endpoint);
      if (!reauthenticated && impl_->stale_token(e)) {
        reauthenticated = true;
        if (auto a = impl_->authenticate(); !a) return a.error();
        --i;
        continue;
      }
      if (e.kind != Error::Kind::Unavailable) return e;
      failures.push_back(e.message);
      continue;
    }
    Exchange x;
    x.code = code;
    x.detail = errbuf;
    if (st.received) {
      // The stream was established and then lost: the caller resumes after
      // the last event it processed (or lists again).
      impl_->current = index;
      const std::int64_t resume =
          st.last_event_revision > 0 ? st.last_event_revision + 1 : request.start_revision;
      Error e = Error::make(Error::Kind::Unavailable,
                            "the watch stream from " + st.endpoint + " ended" +
                                (code == CURLE_OK ? std::string(" (etcd closed it)")
                                                  : ": " + transport_text(st.endpoint, x)) +
                                (resume > 0 ? "; resume from revision " + std::to_string(resume)
                                            : std::string("; list again and watch from there")));
      e.endpoint = st.endpoint;
      return e;
    }
    any_tls = any_tls || tls_failure(code);
    failures.push_back(transport_text(st.endpoint, x));
  }
  return all_failed(failures, any_tls, false);
}

Result<Done> EtcdClient::user_add(std::string_view name, std::string_view password) {
  const std::string body = json{{"name", name}, {"password", password}}.dump();
  auto r = impl_->call("/v3/auth/user/add", body, false);
  if (!r && r.error().etcd_error.find("already exists") != std::string::npos) {
    r = impl_->call("/v3/auth/user/changepw", body, true);
  }
  if (!r) return r.error();
  return Done{};
}

Result<Done> EtcdClient::role_add(std::string_view name) {
  auto r = impl_->call("/v3/auth/role/add", json{{"name", name}}.dump(), false);
  if (!r && r.error().etcd_error.find("already exists") == std::string::npos) return r.error();
  return Done{};
}

Result<Done> EtcdClient::role_grant(std::string_view role, const Permission& permission) {
  json perm = {{"permType", to_string(permission.type)}, {"key", base64_encode(permission.key)}};
  if (!permission.range_end.empty()) perm["range_end"] = base64_encode(permission.range_end);
  auto r = impl_->call("/v3/auth/role/grant", json{{"name", role}, {"perm", perm}}.dump(), true);
  if (!r) return r.error();
  return Done{};
}

Result<Done> EtcdClient::user_grant_role(std::string_view user, std::string_view role) {
  auto r = impl_->call("/v3/auth/user/grant", json{{"user", user}, {"role", role}}.dump(), true);
  if (!r) return r.error();
  return Done{};
}

Result<Done> EtcdClient::auth_enable() {
  auto r = impl_->call("/v3/auth/enable", "{}", true);
  if (!r) return r.error();
  return Done{};
}

}  // namespace tierwall::store
