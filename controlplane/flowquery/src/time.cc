#include "tierwall/flowquery/time.h"

#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>

namespace tierwall::flowquery {

namespace {

constexpr std::int64_t kUsPerSecond = 1'000'000;
constexpr std::int64_t kSecondsPerDay = 86'400;

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// days_from_civil, restated).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month, day;
};

Civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0), m, d};
}

// `n` decimal digits at s[pos]; -1 when any is not a digit.
int digits(std::string_view s, std::size_t pos, std::size_t n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    const char c = s[i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

bool valid_date(int y, int m, int d) {
  if (y < 0 || m < 1 || m > 12 || d < 1) return false;
  static constexpr std::array<int, 12> kDays{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (d > kDays[static_cast<std::size_t>(m - 1)]) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return !(m == 2 && d == 29 && !leap);
}

// "YYYY-MM-DD" at the start of s: days since the epoch.
std::optional<std::int64_t> parse_date(std::string_view s) {
  const int y = digits(s, 0, 4), mo = digits(s, 5, 2), d = digits(s, 8, 2);
  if (s.size() < 10 || s[4] != '-' || s[7] != '-' || !valid_date(y, mo, d)) return std::nullopt;
  return days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339_us(std::string_view s) {
  const auto days = parse_date(s);
  if (!days || s.size() < 20) return std::nullopt;
  const char t = s[10];
  if (t != 'T' && t != 't' && t != ' ') return std::nullopt;
  const int h = digits(s, 11, 2), mi = digits(s, 14, 2), sec = digits(s, 17, 2);
  if (s[13] != ':' || s[16] != ':' || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  std::int64_t frac = 0;
  if (s[pos] == '.') {
    ++pos;
    std::size_t n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 6) frac = frac * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (; n < 6; ++n) frac *= 10;
  }
  if (pos >= s.size()) return std::nullopt;
  std::int64_t offset_s = 0;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    const int oh = digits(s, pos + 1, 2), om = digits(s, pos + 4, 2);
    if (oh < 0 || om < 0 || oh > 23 || om > 59 || s[pos + 3] != ':') return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const std::int64_t seconds = *days * kSecondsPerDay + h * 3600 + mi * 60 + sec - offset_s;
  return seconds * kUsPerSecond + frac;
}

std::string format_time_us(std::int64_t us) {
  std::int64_t seconds = us / kUsPerSecond;
  std::int64_t frac = us % kUsPerSecond;
  if (frac < 0) {
    frac += kUsPerSecond;
    --seconds;
  }
  std::int64_t days = seconds / kSecondsPerDay;
  std::int64_t rem = seconds % kSecondsPerDay;
  if (rem < 0) {
    rem += kSecondsPerDay;
    --days;
  }
  const Civil c = civil_from_days(days);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%06lldZ",
                static_cast<long long>(c.year), c.month, c.day, static_cast<long long>(rem / 3600),
                static_cast<long long>(rem % 3600 / 60), static_cast<long long>(rem % 60),
                static_cast<long long>(frac));
  return buf;
}

std::optional<std::int64_t> parse_time_spec(std::string_view text, std::int64_t now) {
  if (text == "now") return now;
  if (text.size() == 10) {
    if (const auto days = parse_date(text)) return *days * kSecondsPerDay * kUsPerSecond;
    return std::nullopt;
  }
  if (text.size() >= 2) {
    std::int64_t unit = 0;
    switch (text.back()) {
      case 's':
        unit = kUsPerSecond;
        break;
      case 'm':
        unit = 60 * kUsPerSecond;
        break;
      case 'h':
        unit = 3600 * kUsPerSecond;
        break;
      case 'd':
        unit = kSecondsPerDay * kUsPerSecond;
        break;
      default:
        break;
    }
    if (unit != 0) {
      std::int64_t n = 0;
      const auto body = text.substr(0, text.size() - 1);
      const auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), n);
      if (ec == std::errc() && p == body.data() + body.size() && n >= 0 &&
          n < 100LL * 365 * kSecondsPerDay * kUsPerSecond / unit) {
        return now - n * unit;
      }
      return std::nullopt;
    }
  }
  return parse_rfc3339_us(text);
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace tierwall::flowquery
