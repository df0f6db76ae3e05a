#!/usr/bin/env bash
# A narrated walk through tierctl on the example policies, offline (no
# containers, no kernel): validate, lint, explain (human and JSON) and
# matrix. (This was scripts/demo.sh before the demo went live; the live demo
# runs a short part of it for policies/shop-demo.)
#
# explain exits 0 whatever the verdict (allow, deny or audit), so a deny is
# part of the show; any command that fails (non-zero exit) stops the tour
# with a non-zero exit.
#
# Usage: policy-tour.sh [EXAMPLE...]   (default: every example below)
#   EXAMPLE is one of: nist-800-190 dev-test-prod pci-cardholder shop-demo
#
# Environment:
#   TIERWALL_BUILD_ROOT  where build trees go (default: build -> build/release)
#   JOBS                 build parallelism (default: 2)
#   SKIP_DEPS=1          do not run scripts/install-deps.sh
#   TIERCTL=PATH         use this tierctl binary instead of building one
#   TOUR_NESTED=1        plain section titles (when run inside scripts/demo.sh)
set -euo pipefail

# --- Endpoints used in the explain queries, per example policy -------------
# (names from each example's inventory.yaml; see its README for the expected
# answers)
NIST_WEB=web-1
NIST_API=api-1
NIST_DB=orders-db-1
NIST_VAULT=vault-1
NIST_WORLD=198.51.100.7

DTP_WEB=prod-web-1
DTP_API=prod-api-1
DTP_DB=prod-db-1
DTP_DEV=dev-app-1

PCI_CHECKOUT=checkout-1
PCI_API=payment-api-1
PCI_DB=cardholder-db-1
PCI_WORLD=198.51.100.7

SHOP_WEB=twdemo-web-1
SHOP_API=twdemo-api-1
SHOP_DB=twdemo-db-1
SHOP_MON=twdemo-monitor-1
SHOP_STRAY=twdemo-stray-1
# ----------------------------------------------------------------------------

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

ALL_EXAMPLES=(nist-800-190 dev-test-prod pci-cardholder shop-demo)
examples=("$@")
[[ ${#examples[@]} -gt 0 ]] || examples=("${ALL_EXAMPLES[@]}")
for ex in "${examples[@]}"; do
  case " ${ALL_EXAMPLES[*]} " in
    *" $ex "*) ;;
    *)
      echo "policy-tour: unknown example '$ex' (one of: ${ALL_EXAMPLES[*]})" >&2
      exit 2
      ;;
  esac
done

BUILD_ROOT=${TIERWALL_BUILD_ROOT:-build}
JOBS=${JOBS:-2}
RELEASE_DIR="$BUILD_ROOT/release"

step=0
header() {
  if [[ "${TOUR_NESTED:-0}" == 1 ]]; then
    echo
    echo "--- $* ---"
    return
  fi
  step=$((step + 1))
  echo
  echo "================================================================"
  echo "  ${step}. $*"
  echo "================================================================"
}
say() { echo "# $*"; }

# Runs tierctl, showing the command as a user would type it.
tierctl() {
  echo
  echo "\$ tierctl $*"
  local rc=0
  "$TIERCTL" "$@" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "policy-tour: 'tierctl $*' failed (exit $rc)" >&2
    return "$rc"
  fi
}

trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo; echo "policy-tour.sh: FAILED (exit $rc)"; fi' EXIT

if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
  header "Installing dependencies"
  bash scripts/install-deps.sh
fi

if [[ -z "${TIERCTL:-}" ]]; then
  header "Building tierctl (Release, $RELEASE_DIR)"
  cmake -S . -B "$RELEASE_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$RELEASE_DIR" -j"$JOBS" --target tierctl
  TIERCTL="$RELEASE_DIR/tools/tierctl/tierctl"
fi
if [[ ! -x "$TIERCTL" ]]; then
  echo "policy-tour: tierctl not found at $TIERCTL" >&2
  exit 1
fi

# explain DIR FROM TO PORT [ARGS...] — one explain query against an example.
explain() {
  local dir=$1 from=$2 to=$3 port=$4
  shift 4
  tierctl explain --policy "$dir/policy" --inventory "$dir/inventory.yaml" \
    --from "$from" --to "$to" --port "$port" "$@"
}

# check_policy DIR — validate (policy + inventory) and lint one example.
check_policy() {
  local dir=$1
  say "A valid, lint-clean policy: no diagnostics, exit 0."
  tierctl validate "$dir/policy" "$dir/inventory.yaml"
  say "Lints (write-down, world-to-sensitive, shadowed, broad, ...)."
  tierctl lint "$dir/policy"
}

# ---------------------------------------------------------------------------
tour_nist-800-190() {
  header "NIST SP 800-190 baseline (policies/nist-800-190)"
  say "Four tiers by sensitivity, guardrails towards the host, each tier"
  say "reaching only the next one up on one port."
  check_policy policies/nist-800-190
  say "public -> internal on the api port: allowed by a flow."
  explain policies/nist-800-190 "$NIST_WEB" "$NIST_API" tcp/8080
  say "internal -> confidential database."
  explain policies/nist-800-190 "$NIST_API" "$NIST_DB" tcp/5432
  say "public may not skip a tier: default-deny (explain still exits 0)."
  explain policies/nist-800-190 "$NIST_WEB" "$NIST_DB" tcp/5432
  say "A guardrail decides before any flow."
  explain policies/nist-800-190 "$NIST_WEB" "$NIST_VAULT" tcp/8200
  say "No SSH from containers to the node."
  explain policies/nist-800-190 "$NIST_API" host tcp/22
  say "The internet reaches the public web tier only, here as JSON."
  explain policies/nist-800-190 "$NIST_WORLD" "$NIST_WEB" tcp/443 -o json
  say "Which ports each tier pair (plus host and world) may use, and why."
  tierctl matrix --policy policies/nist-800-190/policy -o table
}

# ---------------------------------------------------------------------------
tour_dev-test-prod() {
  header "dev / test / prod separation (policies/dev-test-prod)"
  say "Guardrails on the env label; dev is onboarded in audit mode; a staged"
  say "deny previews a new rule."
  check_policy policies/dev-test-prod
  say "prod api -> sensitive prod database: allowed (and logged)."
  explain policies/dev-test-prod "$DTP_API" "$DTP_DB" tcp/5432
  say "dev never reaches prod: enforced, because the prod side enforces."
  explain policies/dev-test-prod "$DTP_DEV" "$DTP_API" tcp/8080
  say "Same tier, intraTier: allow."
  explain policies/dev-test-prod "$DTP_WEB" "$DTP_API" tcp/8080
  say "Same pair on ssh: the staged deny turns the allow into audit."
  explain policies/dev-test-prod "$DTP_WEB" "$DTP_API" tcp/22
  say "The same staged-deny answer as JSON."
  explain policies/dev-test-prod "$DTP_WEB" "$DTP_API" tcp/22 -o json
  tierctl matrix --policy policies/dev-test-prod/policy -o table
}

# ---------------------------------------------------------------------------
tour_pci-cardholder() {
  header "PCI-style cardholder data environment (policies/pci-cardholder)"
  say "The CDE boundary readable from the guardrails alone."
  check_policy policies/pci-cardholder
  say "checkout -> payment api: allowed, logged."
  explain policies/pci-cardholder "$PCI_CHECKOUT" "$PCI_API" tcp/8443
  say "Only the payment api reaches the cardholder database."
  explain policies/pci-cardholder "$PCI_API" "$PCI_DB" tcp/5432
  explain policies/pci-cardholder "$PCI_CHECKOUT" "$PCI_DB" tcp/5432
  say "The CDE talks to the internet only through the payment gateway."
  explain policies/pci-cardholder "$PCI_API" "$PCI_WORLD" tcp/443
  explain policies/pci-cardholder "$PCI_API" "$PCI_WORLD" tcp/443 -o json
  tierctl matrix --policy policies/pci-cardholder/policy -o table
}

# ---------------------------------------------------------------------------
tour_shop-demo() {
  header "The live demo's shop (policies/shop-demo)"
  say "Four tiers, one per kind of workload; scripts/demo.sh runs this policy"
  say "on real Podman containers with the same names."
  check_policy policies/shop-demo
  say "storefront -> shop api: allowed by a flow."
  explain policies/shop-demo "$SHOP_WEB" "$SHOP_API" tcp/8080
  say "A guardrail keeps the storefront away from the payments database."
  explain policies/shop-demo "$SHOP_WEB" "$SHOP_DB" tcp/5432
  say "Monitoring scraping the payments database: a staged deny -> audit."
  explain policies/shop-demo "$SHOP_MON" "$SHOP_DB" tcp/9100
  say "A container that matches no assignment is quarantined: default-deny."
  explain policies/shop-demo "$SHOP_STRAY" "$SHOP_WEB" tcp/8080
  tierctl matrix --policy policies/shop-demo/policy -o table
}

for ex in "${examples[@]}"; do
  "tour_$ex"
done

echo
echo "policy-tour.sh: done — every command succeeded"
