# Runs `tierwall-bench dpdk --quick --json` and checks its JSON (ctest
# dpdk_bench_smoke, see CMakeLists.txt). Usage:
#   cmake -DBENCH=<build>/tools/bench/tierwall-bench -P dpdk_bench_check.cmake
# Fails when the run fails, or a figure is missing, not a number or not
# positive. test_acl_cycles_per_packet may be null (dpdk-test-acl cannot run
# here), then test_acl.reason must say why. Missed performance targets are
# not failures here.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "pass -DBENCH=/path/to/tierwall-bench")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/bench_check_common.cmake)
bench_run(dpdk)

function(check_positive)
  string(JSON t ERROR_VARIABLE e TYPE "${out}" ${ARGN})
  if(e)
    message(FATAL_ERROR "missing field ${ARGN}")
  endif()
  if(NOT t STREQUAL "NUMBER")
    message(FATAL_ERROR "field ${ARGN} is ${t}, not a number")
  endif()
  string(JSON v GET "${out}" ${ARGN})
  if(NOT v GREATER 0)
    message(FATAL_ERROR "field ${ARGN} = ${v}, not positive")
  endif()
endfunction()

foreach(key established_cycles_per_packet established_decide_cycles_per_packet
            new_cycles_per_packet new_decide_cycles_per_packet vxlan_cycles_per_packet
            vxlan_new_cycles_per_packet parse_cycles_per_packet vxlan_parse_cycles_per_packet
            linear_cycles_per_packet bytes_per_flow bytes_per_flow_slot bytes_per_endpoint
            rules endpoints flows tsc_hz flows_remembered overlay_rx_new_cycles_per_packet
            overlay_rx_established_cycles_per_packet tag_checked_new_decide_cycles_per_packet
            by_tag_new_decide_cycles_per_packet overlay_encap_cycles_per_packet)
  check_positive(${key})
endforeach()
foreach(key established established_decide new new_decide vxlan vxlan_new linear)
  check_positive(mpps_per_core ${key})
endforeach()
check_positive(ratios linear_over_new_decide)
foreach(key established_met new_met)
  string(JSON t ERROR_VARIABLE e TYPE "${out}" targets ${key})
  if(e OR NOT t STREQUAL "BOOLEAN")
    message(FATAL_ERROR "targets.${key} missing or not a boolean")
  endif()
endforeach()
string(JSON parse_errors GET "${out}" parse_errors)
if(NOT parse_errors EQUAL 0)
  message(FATAL_ERROR "${parse_errors} synthesized frames did not parse")
endif()
string(JSON overlay_refused GET "${out}" overlay_refused)
if(NOT overlay_refused EQUAL 0)
  message(FATAL_ERROR "${overlay_refused} frames of the trusted peer were refused")
endif()

# dpdk-test-acl: a number with its ACL size, or null with a reason.
string(JSON t ERROR_VARIABLE e TYPE "${out}" test_acl_cycles_per_packet)
if(e)
  message(FATAL_ERROR "missing field test_acl_cycles_per_packet")
endif()
if(t STREQUAL "NULL")
  string(JSON reason GET "${out}" test_acl reason)
  if(reason STREQUAL "" OR reason STREQUAL "null")
    message(FATAL_ERROR "test_acl_cycles_per_packet is null without a reason")
  endif()
  message("dpdk-test-acl not measured: ${reason}")
else()
  check_positive(test_acl_cycles_per_packet)
  check_positive(test_acl rules)
  check_positive(ratios test_acl_over_new_decide)
  string(JSON traces GET "${out}" test_acl traces)
  string(JSON equal GET "${out}" test_acl verdicts_equal)
  if(NOT equal EQUAL traces)
    message(FATAL_ERROR "the exported ACL decides ${equal} of ${traces} traced packets as we do")
  endif()
  # The figure is the best of the timing runs, each of them reported.
  string(JSON best GET "${out}" test_acl_cycles_per_packet)
  string(JSON nruns LENGTH "${out}" test_acl runs)
  if(nruns LESS 2)
    message(FATAL_ERROR "test_acl.runs has ${nruns} runs, expected the --quick two")
  endif()
  math(EXPR last "${nruns} - 1")
  foreach(i RANGE ${last})
    string(JSON run GET "${out}" test_acl runs ${i})
    if(run LESS best)
      message(FATAL_ERROR "test-acl run ${i} (${run}) is below the reported best (${best})")
    endif()
  endforeach()
endif()
message("dpdk_bench_smoke: ok")
