# Runs `tierwall-bench cluster --quick --json` and checks its JSON (ctest
# cluster_bench_smoke, see CMakeLists.txt). Usage:
#   cmake -DBENCH=<build>/tools/bench/tierwall-bench -P cluster_bench_check.cmake
# Fails when the run fails, a figure is missing or not a number, or a figure
# is not sane (negative, p50 > p99, absurdly large). A missed target
# (publish_to_enforced_p99_ms > 200) is not a failure here.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "pass -DBENCH=/path/to/tierwall-bench")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/bench_check_common.cmake)
bench_run(cluster)

check_range(2 40 nodes)
check_range(1 100000 publishes)
check_range(0 15000 publish_to_enforced_p50_ms)
check_range(0 15000 publish_to_enforced_p99_ms)
if(publish_to_enforced_p50_ms GREATER publish_to_enforced_p99_ms)
  message(FATAL_ERROR "publish -> enforced: p50 > p99")
endif()
check_range(1 1000 endpoint_starts)
check_range(0 15000 endpoint_start_to_known_p50_ms)
check_range(0 15000 endpoint_start_to_known_p99_ms)
if(endpoint_start_to_known_p50_ms GREATER endpoint_start_to_known_p99_ms)
  message(FATAL_ERROR "endpoint start -> known: p50 > p99")
endif()
check_range(1 100000 endpoints)
check_range(1 1 etcd_keys_per_endpoint)
# Key (/tierwall/default/endpoints/NODE/ID) and a small JSON record.
check_range(50 4096 etcd_bytes_per_endpoint)
check_range(-1000000 1000000 etcd_db_bytes_per_endpoint)
# Memory is a figure, not an invariant: a sanitizer build (CI's) multiplies
# RSS and its growth (shadow memory, the allocator's quarantine), so only
# "a number in a plausible order" is checked here.
check_range(1000000 100000000000 agent_rss_bytes)
check_range(-1000000000 1000000000 agent_rss_bytes_per_remote_endpoint)
message("cluster_bench_smoke: JSON complete and sane")
