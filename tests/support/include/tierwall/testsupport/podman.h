// Helpers for the tests that run the real agent against real Podman
// (agent_podman_test, agent_podman_ops_test): shell commands with a
// timeout, the agent's HTTP endpoints on loopback, and Prometheus text.
//
// Nothing here knows about a particular test's containers or tables; the
// fixtures own naming and cleanup.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/testsupport/netns.h"

namespace tierwall::testsupport {

// `sh -c CMD` with stdout and stderr captured together (run_argv, so a hung
// podman is killed after `timeout` instead of hanging the test).
struct ShellResult {
  int rc = -1;      // exit status; 128+N when killed by signal N
  std::string out;  // stdout and stderr, interleaved
  bool ok() const { return rc == 0; }
};
ShellResult shell(const std::string& cmd, Millis timeout = Millis{120'000});

// Trailing newlines, spaces and carriage returns removed.
std::string trim(std::string s);
// Non-empty lines.
std::vector<std::string> split_lines(const std::string& s);
// The whole file, or "" when it cannot be read.
std::string read_text(const std::filesystem::path& path);

// Polls `pred` every `poll` until it holds (true) or `timeout` passed (false).
bool wait_until(const std::function<bool()>& pred, Millis timeout, Millis poll = Millis{100});

// A TCP port on 127.0.0.1 that was free a moment ago (0 if none was found).
int free_loopback_port();

// GET path from 127.0.0.1:port over HTTP/1.0; nullopt when nothing answered.
struct HttpResponse {
  int status = 0;
  std::string body;
};
std::optional<HttpResponse> http_get(int port, const std::string& path);

// tierwall_endpoints{tier="..."} values of a /metrics text.
std::map<std::string, long> tier_counts(const std::string& metrics);
// The value of one series, named exactly as rendered, labels included
// ("tierwall_drift_repairs_total",
// "tierwall_identity_source_connected{source=\"runtime\"}"); nullopt when
// the series is absent.
std::optional<double> metric_value(const std::string& metrics, const std::string& series);

}  // namespace tierwall::testsupport
