// Timestamps of the flow log: UTC, microseconds since the Unix epoch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tierwall::flowquery {

// RFC 3339: "2026-11-25T17:00:00Z", "2026-11-25T17:00:00.123456Z",
// "2026-11-25T18:00:00.5+01:00" ('t'/' ' for 'T' and 'z' for 'Z' accepted).
// The record format's fixed-width form is parsed without any search.
std::optional<std::int64_t> parse_rfc3339_us(std::string_view text);

// The record format's form: "2026-11-25T17:00:00.123456Z".
std::string format_time_us(std::int64_t us);

// A --since/--until argument: RFC 3339, a bare date ("2026-11-25", midnight
// UTC), "now", or a duration before `now_us` ("90s", "15m", "2h", "7d").
std::optional<std::int64_t> parse_time_spec(std::string_view text, std::int64_t now_us);

std::int64_t now_us();

}  // namespace tierwall::flowquery
