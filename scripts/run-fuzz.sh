#!/usr/bin/env bash
# Bounded libFuzzer runs of every harness over its seed corpus:
#   fuzz_policy_parser   policy YAML (tests/fuzz/corpus, yaml.dict)   SECONDS
#   fuzz_nflog_parse     NFLOG/ctnetlink messages (corpus-nflog)      SECONDS/2
#   flowlog_verify_fuzz  flow-log files to the verifier (corpus-flowlog) SECONDS/2
#   fuzz_dpdk_parse      frames to the DPDK packet parser (corpus-dpdk) SECONDS/2
#
#   scripts/run-fuzz.sh [BUILD_DIR] [SECONDS]
#
# BUILD_DIR: a clang build with -DTIERWALL_FUZZ=ON that has built the
#   harnesses (default: $TIERWALL_FUZZ_BUILD_DIR, else build/fuzz):
#     CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DTIERWALL_FUZZ=ON
#     cmake --build build/fuzz --target fuzz_policy_parser fuzz_nflog_parse flowlog_verify_fuzz \
#       fuzz_dpdk_parse
# SECONDS: fuzzing time of the policy parser; the others get half each
#   (default: $TIERWALL_FUZZ_SECONDS, else 60).
#
# Each seed corpus is copied to a temporary directory, so new inputs never
# land in the source tree; libFuzzer also reads the seeds in place. A crash,
# leak, sanitizer report, timeout (>10 s for one input) or out-of-memory
# (>2 GB) makes libFuzzer, and so this script, exit non-zero. The reproducer
# is kept in BUILD_DIR/fuzz-artifacts/ (crash-*, leak-*, timeout-*, oom-*);
# replay it with: BUILD_DIR/tests/fuzz/<harness> BUILD_DIR/fuzz-artifacts/crash-...
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# A BUILD_DIR given by the caller is relative to the caller's directory; the
# default is relative to the repository.
BUILD_ARG=${1:-${TIERWALL_FUZZ_BUILD_DIR:-$REPO_ROOT/build/fuzz}}
SECONDS_TOTAL=${2:-${TIERWALL_FUZZ_SECONDS:-60}}
BUILD_DIR=$(cd "$BUILD_ARG" 2>/dev/null && pwd) || {
  echo "run-fuzz.sh: no build directory '$BUILD_ARG'" >&2
  exit 2
}
cd "$REPO_ROOT"
if ! [[ "$SECONDS_TOTAL" =~ ^[0-9]+$ ]] || [[ "$SECONDS_TOTAL" -eq 0 ]]; then
  echo "run-fuzz.sh: SECONDS must be a positive integer, not '$SECONDS_TOTAL'" >&2
  exit 2
fi

ARTIFACTS="$BUILD_DIR/fuzz-artifacts"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tierwall-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$ARTIFACTS"

# Leaks and undefined behaviour are failures, with stacks that say where.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

# fuzz HARNESS SEED_DIR SECONDS [libFuzzer flags...]
fuzz() {
  local name=$1 seeds=$REPO_ROOT/tests/fuzz/$2 seconds=$3
  shift 3
  local bin="$BUILD_DIR/tests/fuzz/$name"
  if [[ ! -x "$bin" ]]; then
    echo "run-fuzz.sh: $bin not found; build it first:" >&2
    echo "  CC=clang CXX=clang++ cmake -S . -B $BUILD_DIR -G Ninja -DTIERWALL_FUZZ=ON" >&2
    echo "  cmake --build $BUILD_DIR --target $name" >&2
    exit 2
  fi
  mkdir -p "$WORK/$name"
  cp "$seeds"/* "$WORK/$name/"
  echo "run-fuzz.sh: $name for ${seconds}s (artifacts: $ARTIFACTS)"
  local rc=0
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$ARTIFACTS/" -print_final_stats=1 "$@" \
    "$WORK/$name" "$seeds" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "run-fuzz.sh: $name FAILED (libFuzzer exit $rc); reproducers in $ARTIFACTS:" >&2
    ls -t "$ARTIFACTS" | head -n 5 >&2 || true
    exit "$rc"
  fi
  echo "run-fuzz.sh: $name: no crash, leak or timeout in ${seconds}s ($(ls "$WORK/$name" | wc -l) inputs)"
}

HALF=$(((SECONDS_TOTAL + 1) / 2))
fuzz fuzz_policy_parser corpus "$SECONDS_TOTAL" -dict="$REPO_ROOT/tests/fuzz/yaml.dict"
fuzz fuzz_nflog_parse corpus-nflog "$HALF"
fuzz flowlog_verify_fuzz corpus-flowlog "$HALF"
fuzz fuzz_dpdk_parse corpus-dpdk "$HALF"
