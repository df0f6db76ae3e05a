# Shared by the *_bench_check.cmake scripts (the benchmarks' ctest smoke
# runs). include() it after checking BENCH.
#
# bench_run(SUB): runs `${BENCH} SUB --quick --json`; returns from the
# including script when the benchmark exits 77 (ctest turns the printed
# "cannot run here" line into SKIPPED); fails on any other non-zero exit or
# when the output is not one JSON object; leaves the output in `out`.
macro(bench_run sub)
  execute_process(
    COMMAND ${BENCH} ${sub} --quick --json
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err
    TIMEOUT 280)
  message("${err}")
  if(rc EQUAL 77)
    message("tierwall-bench-${sub}: cannot run here (exit 77)")
    return()
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "tierwall-bench ${sub} --quick --json failed (${rc}):\n${out}")
  endif()
  message("${out}")
  string(JSON type ERROR_VARIABLE json_error TYPE "${out}")
  if(json_error OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "output is not one JSON object: ${json_error}")
  endif()
endmacro()

# check_range(LO HI KEY...): the field at the path KEY... of `out` must be a
# number within [LO, HI]; sets a variable named after the path joined by "_".
function(check_range lo hi)
  set(path ${ARGN})
  string(JOIN "." name ${path})
  string(JSON t ERROR_VARIABLE e TYPE "${out}" ${path})
  if(e)
    message(FATAL_ERROR "missing field ${name}")
  endif()
  if(NOT t STREQUAL "NUMBER")
    message(FATAL_ERROR "${name} is ${t}, not a number")
  endif()
  string(JSON v GET "${out}" ${path})
  # CMake compares numbers as doubles with LESS/GREATER.
  if(v LESS ${lo} OR v GREATER ${hi})
    message(FATAL_ERROR "${name} = ${v} is outside [${lo}, ${hi}]")
  endif()
  string(REPLACE "." "_" var "${name}")
  set(${var} ${v} PARENT_SCOPE)
endfunction()
