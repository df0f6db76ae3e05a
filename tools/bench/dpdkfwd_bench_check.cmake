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
message("dpdkfwd_bench_smoke: ok")
