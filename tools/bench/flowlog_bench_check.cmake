# Runs `tierwall-bench flowlog --quick --json` and checks its JSON (ctest
# flowlog_bench_smoke, see CMakeLists.txt). Usage:
#   cmake -DBENCH=<build>/tools/bench/tierwall-bench -P flowlog_bench_check.cmake
# Fails when the run fails, a figure is missing or not a number, an event is
# unaccounted for (kernel counter != events written + loss reported), or a
# figure is not sane (negative, zero where events flowed, absurdly large).
# The ulogd2 figures may be null only when the output says why
# (ulogd2_skipped: not installed). Missed performance targets are not
# failures here.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "pass -DBENCH=/path/to/tierwall-bench")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/bench_check_common.cmake)
bench_run(flowlog)


# tierwall: events flowed, every one of them is on disk or in a loss record.
check_range(1 100000000 events_per_s)
check_range(1 1000000000 events)
check_range(1 1000000000 records)
check_range(1 1000000000 kernel_counted)
check_range(0 1000000000 loss_reported)
check_range(0 0 unaccounted_loss)
check_range(0.5 120 duration_s)
check_range(0.5 120 window_s)
check_range(1 100000000 offered_events_per_s)
check_range(1 100000000 senders_only_events_per_s)
check_range(0 100000 consumer_cpu_us_per_event)
math(EXPR accounted "${events} + ${loss_reported}")
if(NOT accounted EQUAL kernel_counted)
  message(FATAL_ERROR "events ${events} + loss ${loss_reported} != kernel counter ${kernel_counted}")
endif()
if(records GREATER events)
  message(FATAL_ERROR "more flow records (${records}) than events (${events})")
endif()
if(duration_s LESS window_s)
  message(FATAL_ERROR "duration ${duration_s} s is shorter than the sending window ${window_s} s")
endif()

# ulogd2: figures, or null with the reason.
string(JSON t ERROR_VARIABLE e TYPE "${out}" ulogd2_events_per_s)
if(e)
  message(FATAL_ERROR "missing field ulogd2_events_per_s")
endif()
if(t STREQUAL "NULL")
  string(JSON why ERROR_VARIABLE e GET "${out}" ulogd2_skipped)
  if(e OR why STREQUAL "")
    message(FATAL_ERROR "ulogd2_events_per_s is null without ulogd2_skipped")
  endif()
  message(WARNING "ulogd2 baseline skipped: ${why}")
else()
  check_range(1 100000000 ulogd2_events_per_s)
  check_range(1 1000000000 ulogd2_events)
  check_range(1 1000000000 ulogd2_kernel_counted)
  check_range(0 1000000000 ulogd2_loss)
  check_range(0.001 100000 ratio_vs_ulogd2)
  math(EXPR ulogd_accounted "${ulogd2_events} + ${ulogd2_loss}")
  if(NOT ulogd_accounted EQUAL ulogd2_kernel_counted)
    message(FATAL_ERROR "ulogd2: lines ${ulogd2_events} + loss ${ulogd2_loss} != counter "
                        "${ulogd2_kernel_counted}")
  endif()
endif()

# Query figures merged from tierwall-bench-flowquery.
check_range(1 1000000000 query_records_per_s)
check_range(1 1000000000 jq_records_per_s)
check_range(0 1000000 speedup_vs_jq)
string(JSON same ERROR_VARIABLE e GET "${out}" flowquery matches_equal)
if(e OR NOT same)
  message(FATAL_ERROR "flowquery: the library and jq disagree on the matches (${same})")
endif()
check_range(0 300 total_s)
message("flowlog_bench_smoke: JSON complete and sane")
