// The error model of the runtime identity source: values or an Error, no
// exceptions (nlohmann_json is only ever used in its non-throwing forms).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "tierwall/common/result.h"

namespace tierwall::runtime {

struct Error {
  enum class Kind : std::uint8_t {
    Connect,    // the socket could not be reached (missing, refused, ...)
    Timeout,    // no answer within the deadline
    Closed,     // the peer closed the connection (a stream's normal end)
    Io,         // read/write failed
    Protocol,   // not HTTP/1.1 as we speak it, or a malformed body
    Http,       // a well-formed response with an unexpected status
    Json,       // a body that is not the JSON the API documents
    Cancelled,  // the caller's Canceller fired
  };

  Kind kind = Kind::Io;
  std::string message;  // one line for people: what failed, where, why
  int http_status = 0;  // Kind::Http: the status code

  [[nodiscard]] static Error make(Kind kind, std::string message, int http_status = 0) {
    return Error{kind, std::move(message), http_status};
  }
};

// "connect", "timeout", ... for logs and metrics labels.
[[nodiscard]] const char* to_string(Error::Kind kind);

// A value or the Error that prevented it (common/result.h).
template <typename T>
using Result = common::Result<T, Error>;

}  // namespace tierwall::runtime
