// The error model of the cluster store: values or an Error, no exceptions.
// An Error says which etcd endpoint failed, how (HTTP status, etcd's own
// error text and gRPC code) and, in `message`, what a person can do next.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "tierwall/common/result.h"

namespace tierwall::store {

struct Error {
  enum class Kind : std::uint8_t {
    Unavailable,  // no endpoint could be reached (connect, TLS, timeout)
    Tls,          // the TLS handshake failed (certificate, CA, key)
    Auth,         // authentication failed or the token was refused
    Permission,   // etcd answered "permission denied" (role lacks the key)
    NotFound,     // etcd answered NotFound (e.g. an expired lease)
    Compacted,    // the requested revision has been compacted away
    Conflict,     // a guarded transaction's compare failed
    Etcd,         // any other error etcd reported
    Protocol,     // an answer that is not the JSON etcd's gateway documents
    Invalid,      // the caller's input (a bad name, URL, file)
    Cancelled,    // the caller stopped the operation
  };

  Kind kind = Kind::Etcd;
  std::string message;     // one line: what failed, where, why
  std::string endpoint;    // the client URL that answered or failed
  int http_status = 0;     // when an HTTP answer arrived
  int etcd_code = 0;       // gRPC status code etcd reported (0: none)
  std::string etcd_error;  // etcd's error text, e.g. "etcdserver: permission denied"

  [[nodiscard]] static Error make(Kind kind, std::string message) {
    Error e;
    e.kind = kind;
    e.message = std::move(message);
    return e;
  }
};

// "unavailable", "tls", ... for logs and JSON output.
[[nodiscard]] const char* to_string(Error::Kind kind);

// A value or the Error that prevented it (common/result.h).
template <typename T>
using Result = common::Result<T, Error>;

// For operations that return nothing but may fail.
struct Done {};

}  // namespace tierwall::store
