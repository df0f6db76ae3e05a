# Runs `tierwall-bench dpdkfwd --quick --json` and checks its JSON (ctest
# dpdkfwd_bench_smoke, see CMakeLists.txt). Usage:
#   cmake -DBENCH=<build>/tools/bench/tierwall-bench -P dpdkfwd_bench_check.cmake
# Fails when the run fails, a figure is missing or not positive, or the
# frames do not add up: every new-connection frame was received, some but
# not all passed, every established frame (one per passed flow) was
# received, nothing was refused by TX or malformed. Missed performance
# targets are not failures here.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "pass -DBENCH=/path/to/tierwall-bench")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/bench_check_common.cmake)
bench_run(dpdkfwd)

foreach(key new_cycles_per_packet new_mpps_per_core established_cycles_per_packet
            established_mpps_per_core flows tsc_hz)
  check_range(0.001 1e12 ${key})
endforeach()
string(JSON flows GET "${out}" flows)
string(JSON new_frames GET "${out}" new_frames)
string(JSON new_passed GET "${out}" new_passed)
string(JSON established_frames GET "${out}" established_frames)
string(JSON tx_failed GET "${out}" tx_failed)
string(JSON malformed GET "${out}" malformed)
if(NOT new_frames EQUAL flows)
  message(FATAL_ERROR "${new_frames} of ${flows} new-connection frames received")
endif()
if(NOT new_passed GREATER 0 OR NOT new_passed LESS new_frames)
  message(FATAL_ERROR "${new_passed} of ${new_frames} new connections passed: the policy must allow some and deny some")
endif()
if(NOT established_frames EQUAL new_passed)
  message(FATAL_ERROR "${established_frames} established frames received, ${new_passed} expected")
endif()
if(NOT tx_failed EQUAL 0 OR NOT malformed EQUAL 0)
  message(FATAL_ERROR "tx refused ${tx_failed}, malformed ${malformed}")
endif()
# Two workers at once (the default --workers 2): the same frames, split.
string(JSON wcount GET "${out}" workers count)
if(NOT wcount EQUAL 2)
  message(FATAL_ERROR "workers.count is ${wcount}, expected 2")
endif()
foreach(key new_mpps_total established_mpps_total new_scaling established_scaling)
  check_range(0.001 1e12 workers ${key})
endforeach()
string(JSON w_new GET "${out}" workers new_frames)
string(JSON w_passed GET "${out}" workers new_passed)
string(JSON w_est GET "${out}" workers established_frames)
string(JSON w_fail GET "${out}" workers tx_failed)
string(JSON w_bad GET "${out}" workers malformed)
if(NOT w_new EQUAL flows OR NOT w_passed EQUAL new_passed OR NOT w_est EQUAL w_passed)
  message(FATAL_ERROR "two workers: ${w_new} new frames (${flows}), ${w_passed} passed (${new_passed}), ${w_est} established")
endif()
if(NOT w_fail EQUAL 0 OR NOT w_bad EQUAL 0)
  message(FATAL_ERROR "two workers: tx refused ${w_fail}, malformed ${w_bad}")
endif()
message("dpdkfwd_bench_smoke: ok")
