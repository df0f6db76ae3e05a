#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. install dependencies (fast no-op when present);
#   2. Debug build with AddressSanitizer + UndefinedBehaviorSanitizer, all ctest tests;
#   3. when the fuzz harnesses exist: a clang/libFuzzer build and a bounded fuzz run.
# Any failure stops the run with a non-zero exit and says which stage failed.
#
# Environment:
#   TIERWALL_BUILD_ROOT  where build trees go (default: build, i.e. build/asan, build/fuzz)
#   JOBS                 build and test parallelism (default: 2)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BUILD_ROOT=${TIERWALL_BUILD_ROOT:-build}
JOBS=${JOBS:-2}
ASAN_DIR="$BUILD_ROOT/asan"
FUZZ_DIR="$BUILD_ROOT/fuzz"

stage="start"
tests_passed=""
tests_failed=""
tests_total=""
fuzz_result="skipped (no tests/fuzz/CMakeLists.txt)"
start_time=$SECONDS

summary() {
  local rc=$?
  local elapsed=$((SECONDS - start_time))
  echo
  echo "================================================================"
  if [[ -n "$tests_total" ]]; then
    echo "ctest: ${tests_passed} passed, ${tests_failed} failed"
  fi
  echo "fuzz: ${fuzz_result}"
  if [[ $rc -eq 0 ]]; then
    echo "test.sh: PASSED (${elapsed}s)"
  else
    echo "test.sh: FAILED in stage '${stage}' (exit ${rc}, ${elapsed}s)"
  fi
  echo "================================================================"
}
trap summary EXIT

banner() { echo; echo "==> $*"; }

# Sanitizer failures must fail the run, with stacks that point at the bug.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stage="install-deps"
banner "Installing dependencies"
bash scripts/install-deps.sh

stage="podman-setup"
banner "Preparing rootful Podman for the runtime tests (scripts/podman-setup.sh)"
bash scripts/podman-setup.sh

stage="configure (asan)"
banner "Configuring $ASAN_DIR (Debug, ASan+UBSan)"
cmake -S . -B "$ASAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTIERWALL_SANITIZE=ON

stage="build (asan)"
banner "Building $ASAN_DIR"
cmake --build "$ASAN_DIR" -j"$JOBS"

stage="ctest (asan)"
banner "Running tests"
ctest_log="$ASAN_DIR/ctest.log"
ctest_rc=0
ctest --test-dir "$ASAN_DIR" --output-on-failure --no-tests=error -j"$JOBS" 2>&1 | tee "$ctest_log" ||
  ctest_rc=$?
# "100% tests passed, 0 tests failed out of 323"
if line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -n1); then
  tests_failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
  tests_total=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
  tests_passed=$((tests_total - tests_failed))
fi
if [[ $ctest_rc -ne 0 ]]; then
  exit "$ctest_rc"
fi

if [[ -f tests/fuzz/CMakeLists.txt ]]; then
  stage="configure (fuzz)"
  fuzz_result="failed"
  banner "Configuring $FUZZ_DIR (clang, libFuzzer)"
  CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTIERWALL_FUZZ=ON

  stage="build (fuzz)"
  banner "Building the fuzz harnesses"
  cmake --build "$FUZZ_DIR" -j"$JOBS" --target fuzz_policy_parser fuzz_nflog_parse \
    flowlog_verify_fuzz fuzz_dpdk_parse

  if [[ -f scripts/run-fuzz.sh ]]; then
    stage="run-fuzz"
    banner "Running fuzzers (scripts/run-fuzz.sh)"
    TIERWALL_FUZZ_BUILD_DIR="$FUZZ_DIR" bash scripts/run-fuzz.sh "$FUZZ_DIR"
    fuzz_result="built and ran"
  else
    fuzz_result="built (no scripts/run-fuzz.sh to run)"
  fi
fi

stage="done"
