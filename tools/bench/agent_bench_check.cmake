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

include(${CMAKE_CURRENT_LIST_DIR}/bench_check_common.cmake)
bench_run(agent)


check_range(1 1000 containers)
check_range(1 1000 containers_started)
check_range(1 1000 containers_enforced)
check_range(1 1000 containers_in_tier_at_end)
check_range(0 0 containers_in_wrong_tier)
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
    check_range(-5000 5000 ${base}_p50_ms)
    check_range(-5000 5000 ${base}_p99_ms)
  else()
    check_range(0 5000 ${base}_p50_ms)
    check_range(0 5000 ${base}_p99_ms)
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
check_range(0 1000000 probe_window_sent)
check_range(0 1000000 probe_window_dropped)
check_range(0 0 probe_window_leaked)

# Memory: positive and below 64 KiB per endpoint; idle CPU below half a core.
check_range(1 65536 bytes_per_endpoint_10k)
check_range(1 65536 bytes_per_endpoint_100k)
check_range(0 50 idle_cpu_percent)
message("agent_bench_smoke: JSON complete and sane")
