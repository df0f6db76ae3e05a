#!/usr/bin/env bash
# Bounded libFuzzer run of fuzz_policy_parser over the seed corpus.
#
#   scripts/run-fuzz.sh [BUILD_DIR] [SECONDS]
#
# BUILD_DIR: a clang build with -DTIERWALL_FUZZ=ON that has built the target
#   fuzz_policy_parser (default: $TIERWALL_FUZZ_BUILD_DIR, else build/fuzz):
#     CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DTIERWALL_FUZZ=ON
#     cmake --build build/fuzz --target fuzz_policy_parser
# SECONDS: total fuzzing time (default: $TIERWALL_FUZZ_SECONDS, else 60).
#
# The seed corpus (tests/fuzz/corpus) is copied to a temporary directory, so
# new inputs never land in the source tree; libFuzzer also reads the seeds in
# place. A crash, leak, sanitizer report, timeout (>10 s for one input) or
# out-of-memory (>2 GB) makes libFuzzer, and so this script, exit non-zero.
# The reproducer is kept in BUILD_DIR/fuzz-artifacts/ (crash-*, leak-*,
# timeout-*, oom-*); replay it with:
#   BUILD_DIR/tests/fuzz/fuzz_policy_parser BUILD_DIR/fuzz-artifacts/crash-...
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

FUZZER="$BUILD_DIR/tests/fuzz/fuzz_policy_parser"
SEEDS="$REPO_ROOT/tests/fuzz/corpus"
DICT="$REPO_ROOT/tests/fuzz/yaml.dict"
ARTIFACTS="$BUILD_DIR/fuzz-artifacts"

if [[ ! -x "$FUZZER" ]]; then
  echo "run-fuzz.sh: $FUZZER not found; build it first:" >&2
  echo "  CC=clang CXX=clang++ cmake -S . -B $BUILD_DIR -G Ninja -DTIERWALL_FUZZ=ON" >&2
  echo "  cmake --build $BUILD_DIR --target fuzz_policy_parser" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tierwall-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus" "$ARTIFACTS"
cp "$SEEDS"/* "$WORK/corpus/"

# Leaks and undefined behaviour are failures, with stacks that say where.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"

echo "run-fuzz.sh: fuzz_policy_parser for ${SECONDS_TOTAL}s (artifacts: $ARTIFACTS)"
rc=0
"$FUZZER" \
  -max_total_time="$SECONDS_TOTAL" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -dict="$DICT" \
  -artifact_prefix="$ARTIFACTS/" \
  -print_final_stats=1 \
  "$WORK/corpus" "$SEEDS" || rc=$?

if [[ $rc -ne 0 ]]; then
  echo "run-fuzz.sh: FAILED (libFuzzer exit $rc); reproducers in $ARTIFACTS:" >&2
  ls -t "$ARTIFACTS" | head -n 5 >&2 || true
  exit "$rc"
fi
echo "run-fuzz.sh: no crash, leak or timeout in ${SECONDS_TOTAL}s ($(ls "$WORK/corpus" | wc -l) inputs in the corpus)"
