# Runs `tierwall-bench agent --quick --json` and checks its JSON (ctest
# agent_bench_smoke, see CMakeLists.txt). Usage:
#   cmake -DBENCH=<build>/tools/bench/tierwall-bench -P agent_bench_check.cmake
# Fails when the run fails, a figure is missing or not a number, a container
# was not enforced in its tier, or a figure is not sane (negative, p50 > p99,
# absurdly large). Missed performance targets are not failures here.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "pass -DBENCH=/path/to/tierwall-bench")
endif()

execute_process(
  COMMAND ${BENCH} agent --quick --json
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  TIMEOUT 280)
message("${err}")
if(rc EQUAL 77)
  # ctest turns the "cannot run here" line above into SKIPPED.
  message("tierwall-bench-agent: cannot run here (exit 77)")
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "tierwall-bench agent --quick --json failed (${rc}):\n${out}")
endif()
message("${out}")

string(JSON type ERROR_VARIABLE json_error TYPE "${out}")
if(json_error OR NOT type STREQUAL "OBJECT")
  message(FATAL_ERROR "output is not one JSON object: ${json_error}")
endif()

# Every field must be a number within [lo, hi].
function(check_range key lo hi)
  string(JSON t ERROR_VARIABLE e TYPE "${out}" ${key})
  if(e)
    message(FATAL_ERROR "missing field ${key}")
  endif()
  if(NOT t STREQUAL "NUMBER")
    message(FATAL_ERROR "${key} is ${t}, not a number")
  endif()
  string(JSON v GET "${out}" ${key})
  # CMake compares numbers as doubles with LESS/GREATER.
  if(v LESS ${lo} OR v GREATER ${hi})
    message(FATAL_ERROR "${key} = ${v} is outside [${lo}, ${hi}]")
  endif()
  set(${key} ${v} PARENT_SCOPE)
endfunction()

check_range(containers 1 1000)
check_range(containers_started 1 1000)
check_range(containers_enforced 1 1000)
check_range(containers_in_tier_at_end 1 1000)
check_range(containers_in_wrong_tier 0 0)
foreach(k containers_started containers_enforced containers_in_tier_at_end)
  if(NOT ${k} EQUAL containers)
    message(FATAL_ERROR "${k} = ${${k}} but ${containers} containers were started")
  endif()
endforeach()

# Latencies: present, ordered, and within 5 s (a broken watcher or a clock
# mix-up shows up as huge values). received -> enforced may be negative: the
# agent usually identifies a container from its rescans before the runtime's
# start event reaches a listener.
foreach(base start_to_enforced received_to_enforced fail_closed_window)
  if(base STREQUAL "received_to_enforced")
    check_range(${base}_p50_ms -5000 5000)
    check_range(${base}_p99_ms -5000 5000)
  else()
    check_range(${base}_p50_ms 0 5000)
    check_range(${base}_p99_ms 0 5000)
  endif()
  if(${base}_p50_ms GREATER ${base}_p99_ms)
    message(FATAL_ERROR "${base}: p50 ${${base}_p50_ms} > p99 ${${base}_p99_ms}")
  endif()
endforeach()
if(received_to_enforced_p50_ms GREATER start_to_enforced_p99_ms)
  message(FATAL_ERROR "received -> enforced p50 is larger than start -> enforced p99")
endif()

# Fail closed: nothing the probe sent inside the window went out (except
# datagrams racing the commit itself, probe_window_at_commit).
check_range(probe_window_sent 0 1000000)
check_range(probe_window_dropped 0 1000000)
check_range(probe_window_leaked 0 0)

# Memory: positive and below 64 KiB per endpoint; idle CPU below half a core.
check_range(bytes_per_endpoint_10k 1 65536)
check_range(bytes_per_endpoint_100k 1 65536)
check_range(idle_cpu_percent 0 50)
message("agent_bench_smoke: JSON complete and sane")
