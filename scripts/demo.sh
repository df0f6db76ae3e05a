#!/usr/bin/env bash
# The live demo: tierwall segmenting real containers on this machine.
#
#   1. installs what it needs (scripts/install-deps.sh, scripts/podman-setup.sh)
#      and builds tierwalld and tierctl (Release);
#   2. checks the demo's policy offline (policies/shop-demo: a short part of
#      scripts/policy-tour.sh: validate, lint, explain, matrix);
#   3. starts rootful Podman containers in four tiers plus one that matches
#      no assignment, and a `podman system service` of its own;
#   4. starts the agent, tierwalld, on that service's socket and waits until
#      its /metrics shows every container in its tier (the stray one in
#      quarantine);
#   5. opens real TCP connections between the containers and, for each one,
#      reads the kernel's per-rule packet counters (through the agent's
#      /metrics) before and after: the counter that moved names the rule
#      that decided. The verdict observed (did the connection get through,
#      and was its rule a deny?) is compared with the expected one, and
#      with what `tierctl explain` says for the same live identities;
#   6. removes everything it made, also on failure or Ctrl-C.
#
# Exit status: 0 when every observed verdict and deciding rule is the
# expected one; 1 otherwise or on any error. Run as root. Re-runnable: the
# leftovers of an interrupted run are removed first. docs/demo.md explains
# the output.
#
# Environment:
#   TIERWALL_BUILD_ROOT  where build trees go (default: build -> build/release)
#   JOBS                 build parallelism (default: 2)
#   SKIP_DEPS=1          do not install packages (install-deps, podman-setup install)
#   TIERWALL_DEMO_TABLE  nft table of the agent (default: tierwall; family inet)
#   TIERWALL_DEMO_DIR    state directory: podman socket, pids, agent log
#                        (default: /run/tierwall-demo)
#   TIERWALL_DEMO_METRICS_PORT  first port tried for the agent's /metrics on
#                        127.0.0.1 (default: 19641; the next free one is used)
#   KEEP_LOG=1           keep the agent's log after a successful run
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BUILD_ROOT=${TIERWALL_BUILD_ROOT:-build}
JOBS=${JOBS:-2}
RELEASE_DIR="$BUILD_ROOT/release"
TIERWALLD="$RELEASE_DIR/tools/tierwalld/tierwalld"
TIERCTL="$RELEASE_DIR/tools/tierctl/tierctl"

TABLE=${TIERWALL_DEMO_TABLE:-tierwall}
STATE_DIR=${TIERWALL_DEMO_DIR:-/run/tierwall-demo}
SOCKET="$STATE_DIR/podman.sock"
AGENT_PID_FILE="$STATE_DIR/tierwalld.pid"
AGENT_LOG="$STATE_DIR/tierwalld.log"
SYSCTL_FILE="$STATE_DIR/sysctls.saved"
LIVE_INVENTORY="$STATE_DIR/live-inventory.yaml"
POLICY="policies/shop-demo/policy"
CONTAINER_CIDR=10.88.0.0/16
PREFIX=twdemo-
BRIDGE_SYSCTLS=(
  /proc/sys/net/bridge/bridge-nf-call-iptables
  /proc/sys/net/bridge/bridge-nf-call-ip6tables
)

# --- The containers -----------------------------------------------------------
# name | image | labels | ports its echo servers listen on
# (images and tags from scripts/podman-setup.sh: one busybox under several names)
CONTAINERS=(
  "${PREFIX}web-1|reg.example/shop/web:1.4|app=shop role=web|8080 9100"
  "${PREFIX}api-1|reg.example/shop/api:3.1|app=shop role=api|8080 9100"
  "${PREFIX}db-1|reg.example/pay/db:2|app=payments role=db|5432 9100"
  "${PREFIX}monitor-1|reg.example/ops/monitor:0.9|team=ops|9100"
  "${PREFIX}stray-1|reg.example/tierwall/busybox:1||8080"
)
# Tier each one should land in (policies/shop-demo/README.md).
EXPECTED_TIERS=(public=1 internal=1 restricted=1 ops=1)

# --- The probes ---------------------------------------------------------------
# from | to | port | expected verdict | expected deciding rule (kind/name)
PROBES=(
  "web-1|api-1|tcp/8080|allow|flow/web-to-api"
  "api-1|db-1|tcp/5432|allow|flow/api-to-db"
  "monitor-1|api-1|tcp/9100|allow|flow/scrape-metrics"
  "monitor-1|db-1|tcp/9100|audit|deny/no-scrape-of-payments"
  "web-1|db-1|tcp/5432|deny|deny/public-never-restricted"
  "api-1|web-1|tcp/8080|deny|default-deny/default-deny"
  "web-1|api-1|tcp/9100|deny|default-deny/default-deny"
  "stray-1|web-1|tcp/8080|deny|default-deny/default-deny"
  "web-1|stray-1|tcp/8080|deny|default-deny/default-deny"
)

# --- Output helpers -------------------------------------------------------------
step=0
header() {
  step=$((step + 1))
  echo
  echo "================================================================"
  echo "  ${step}. $*"
  echo "================================================================"
}
say() { echo "# $*"; }
die() {
  echo "demo: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root: rootful Podman and nftables"
[[ "$TABLE" =~ ^[A-Za-z0-9_]+$ ]] || die "TIERWALL_DEMO_TABLE must be [A-Za-z0-9_]+, not '$TABLE'"

# --- Cleanup (at the start: leftovers of an interrupted run; at exit: ours) ----
# Only what this demo made: its agent (by pid file, checked to be tierwalld),
# containers named ${PREFIX}*, its own podman service (by pid file), table
# inet $TABLE, and the br_netfilter sysctls it saved.

podman_quiet() { podman "$@" >/dev/null 2>&1; }

stop_agent() {
  [[ -f "$AGENT_PID_FILE" ]] || return 0
  local pid
  pid=$(cat "$AGENT_PID_FILE")
  if [[ -n "$pid" ]] && grep -qa tierwalld "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$AGENT_PID_FILE"
}

remove_containers() {
  local names
  names=$(podman ps -a --filter "name=^${PREFIX}" --format '{{.Names}}' 2>/dev/null || true)
  if [[ -n "$names" ]]; then
    # shellcheck disable=SC2086  # one word per name
    podman rm -f -t 0 $names >/dev/null
  fi
}

flush_table() {
  nft list table inet "$TABLE" >/dev/null 2>&1 || return 0
  if [[ -x "$TIERWALLD" ]]; then
    "$TIERWALLD" --flush --table "$TABLE" >/dev/null
  else
    nft delete table inet "$TABLE"
  fi
}

restore_sysctls() {
  [[ -f "$SYSCTL_FILE" ]] || return 0
  local key value
  while read -r key value; do
    [[ -w "$key" ]] && echo "$value" >"$key"
  done <"$SYSCTL_FILE"
  rm -f "$SYSCTL_FILE"
}

cleanup() {
  command -v podman >/dev/null 2>&1 || return 0
  stop_agent
  remove_containers || echo "demo: could not remove the ${PREFIX}* containers" >&2
  flush_table || echo "demo: could not delete table inet $TABLE" >&2
  if [[ -f "${SOCKET%.sock}.pid" || -S "$SOCKET" ]]; then
    bash scripts/podman-setup.sh service stop "$SOCKET" >/dev/null
  fi
  restore_sysctls
}

on_exit() {
  local rc=$?
  set +e
  trap - INT TERM
  if [[ $rc -ne 0 && -s "$AGENT_LOG" ]]; then
    echo
    echo "--- last lines of the agent's log ($AGENT_LOG) ---"
    tail -n 25 "$AGENT_LOG"
  fi
  if [[ "${cleanup_armed:-0}" == 1 ]]; then
    echo
    echo "demo: cleaning up (agent, ${PREFIX}* containers, podman service, table inet $TABLE, sysctls)"
    cleanup
    if [[ $rc -ne 0 || "${KEEP_LOG:-0}" == 1 ]] && [[ -s "$AGENT_LOG" ]]; then
      cp "$AGENT_LOG" /tmp/tierwall-demo-tierwalld.log
      echo "demo: the agent's log is kept in /tmp/tierwall-demo-tierwalld.log"
    fi
    rm -rf "$STATE_DIR"
  fi
  if [[ $rc -ne 0 ]]; then
    echo
    echo "demo.sh: FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Install and build ---------------------------------------------------
if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
  header "Installing dependencies"
  bash scripts/install-deps.sh
  bash scripts/podman-setup.sh install
fi
bash scripts/podman-setup.sh images
eval "$(bash scripts/podman-setup.sh env)"
export CONTAINERS_CONF

header "Building tierwalld and tierctl (Release, $RELEASE_DIR)"
cmake -S . -B "$RELEASE_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$RELEASE_DIR" -j"$JOBS" --target tierwalld tierctl
[[ -x "$TIERWALLD" && -x "$TIERCTL" ]] || die "tierwalld/tierctl not built in $RELEASE_DIR"

header "Removing leftovers of an earlier run (if any)"
cleanup_armed=1
cleanup
mkdir -p "$STATE_DIR"
say "none left: no ${PREFIX}* containers, no table inet $TABLE, no demo podman service"

# --- 2. The policy, offline -----------------------------------------------------
header "The policy, offline (scripts/policy-tour.sh shop-demo)"
say "policies/shop-demo: tiers ops < public < internal < restricted, plus quarantine."
say "The full offline tour of every example: bash scripts/policy-tour.sh"
TOUR_NESTED=1 SKIP_DEPS=1 TIERCTL="$TIERCTL" bash scripts/policy-tour.sh shop-demo | sed '/^policy-tour.sh: done/d'

# --- 3. Containers ----------------------------------------------------------------
header "Starting the containers (rootful Podman, bridge podman0, $CONTAINER_CIDR)"
others=$(nft list tables 2>/dev/null | awk '$2 == "inet" && $3 != "'"$TABLE"'" {print $3}' | paste -sd' ' -)
if [[ -n "$others" ]]; then
  say "note: other inet tables are loaded ($others). If one of them is another"
  say "tierwall agent's, its policy applies to these containers too, and a"
  say "connection must pass both."
fi
bash scripts/podman-setup.sh service start "$SOCKET"
printf '%-18s %-30s %-22s %s\n' container image labels listens
for spec in "${CONTAINERS[@]}"; do
  IFS='|' read -r name image labels ports <<<"$spec"
  args=(--name "$name")
  for l in $labels; do args+=(--label "$l"); done
  servers=""
  for p in $ports; do servers+="nc -ll -p $p -e cat & "; done
  podman run -d "${args[@]}" "$image" sh -c "${servers}wait" >/dev/null
  printf '%-18s %-30s %-22s %s\n' "$name" "$image" "${labels:--}" "$ports"
done

declare -A IP
for spec in "${CONTAINERS[@]}"; do
  name=${spec%%|*}
  IP[$name]=$(podman inspect --format '{{.NetworkSettings.IPAddress}}' "$name")
  [[ -n "${IP[$name]}" ]] || die "$name has no IPv4 address"
done

# reaches FROM TO PORT — 0 when FROM's line comes back from TO's echo server.
probe_seq=0
reaches() {
  local from=$1 to=$2 port=$3 token
  probe_seq=$((probe_seq + 1))
  token="twdemo-probe-$$-$probe_seq"
  podman exec "$from" sh -c "echo $token | nc -w 2 ${IP[$to]} $port" 2>/dev/null | grep -q "$token"
}

say "Without tierwall the bridge lets everything through, e.g. web-1 -> db-1 tcp/5432:"
ok=0
for _ in 1 2 3 4 5; do
  if reaches "${PREFIX}web-1" "${PREFIX}db-1" 5432; then
    ok=1
    break
  fi
  sleep 0.5
done
[[ $ok == 1 ]] || die "the containers cannot reach each other even without tierwall"
say "  connected."

# --- 4. The agent -----------------------------------------------------------------
header "Starting the agent (tierwalld, table inet $TABLE)"
if [[ ! -e "${BRIDGE_SYSCTLS[0]}" ]]; then
  modprobe br_netfilter 2>/dev/null || true
fi
: >"$SYSCTL_FILE"
for key in "${BRIDGE_SYSCTLS[@]}"; do
  [[ -e "$key" ]] && echo "$key $(cat "$key")" >>"$SYSCTL_FILE"
done
[[ -s "$SYSCTL_FILE" ]] || die "br_netfilter is not available: bridged traffic would bypass nftables"

port=${TIERWALL_DEMO_METRICS_PORT:-19641}
while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
METRICS="http://127.0.0.1:$port"

agent_cmd=("$TIERWALLD" --policy "$POLICY" --table "$TABLE"
  --runtime-socket "$SOCKET" --container-cidr "$CONTAINER_CIDR"
  --metrics "127.0.0.1:$port" --api-socket "$STATE_DIR/api.sock")
echo "\$ ${agent_cmd[*]#"$REPO_ROOT/"} &"
"${agent_cmd[@]}" </dev/null >"$AGENT_LOG" 2>&1 &
echo $! >"$AGENT_PID_FILE"
say "pid $(cat "$AGENT_PID_FILE"), log $AGENT_LOG, metrics $METRICS/metrics"

metrics() { curl -sf --max-time 2 "$METRICS/metrics"; }
tier_count() { metrics | awk -v t="tierwall_endpoints{tier=\"$1\"}" '$1 == t {print $2}'; }

deadline=$((SECONDS + 20))
until curl -sf --max-time 2 "$METRICS/readyz" >/dev/null 2>&1; do
  kill -0 "$(cat "$AGENT_PID_FILE")" 2>/dev/null || die "the agent exited"
  ((SECONDS < deadline)) || die "the agent did not become ready within 20 s"
  sleep 0.2
done
for want in "${EXPECTED_TIERS[@]}" quarantine=1; do
  tier=${want%=*} n=${want#*=}
  until [[ "$(tier_count "$tier")" -ge "$n" ]] 2>/dev/null; do
    ((SECONDS < deadline)) || die "tier $tier: expected $n endpoint(s) in /metrics"
    sleep 0.2
  done
done
say "ready (GET /readyz: $(curl -sf "$METRICS/readyz"))"
say "the agent's tier counts (GET /metrics, tierwall_endpoints):"
metrics | awk '/^tierwall_endpoints\{/ {
  match($1, /tier="[^"]*"/); printf "    %-12s %s\n", substr($1, RSTART + 6, RLENGTH - 7), $2 }'
for want in "${EXPECTED_TIERS[@]}"; do
  tier=${want%=*} n=${want#*=}
  [[ "$(tier_count "$tier")" == "$n" ]] ||
    say "note: tier $tier has $(tier_count "$tier") endpoints, not $n (other containers on this node?)"
done
say "${PREFIX}stray-1 matches no assignment: it is in quarantine."

# --- 5. Traffic -------------------------------------------------------------------
# The live identities as an inventory, so that tierctl explain answers for the
# same containers and addresses the kernel sees.
{
  echo "apiVersion: tierwall.io/v1"
  echo "kind: Inventory"
  # The node's addresses, as the agent discovers them (its interfaces).
  node_addrs=$(ip -o addr show scope global | awk '{sub(/\/.*/, "", $4); printf "\"%s\"\n", $4}' |
    paste -sd, -)
  echo "node: {name: $(hostname), addresses: [${node_addrs:-192.0.2.1}]}"
  echo "endpoints:"
  for spec in "${CONTAINERS[@]}"; do
    IFS='|' read -r name image labels _ <<<"$spec"
    echo "  - name: $name"
    echo "    image: $image"
    lab=""
    for l in $labels; do lab+="${lab:+, }${l%%=*}: ${l#*=}"; done
    echo "    labels: {$lab}"
    echo "    addresses: [${IP[$name]}]"
  done
} >"$LIVE_INVENTORY"

# rule_counters — "rule|kind packets" per policy rule, from the kernel's
# named counters (tierwall_rule_packets_total).
rule_counters() {
  metrics | sed -n 's/^tierwall_rule_packets_total{rule="\([^"]*\)",kind="\([^"]*\)"} \([0-9]*\)$/\2\/\1 \3/p' |
    LC_ALL=C sort -k1,1
}
# moved BEFORE AFTER — the rules whose counter grew, "kind/name(+N)" each;
# "reset" when a counter went down (the agent re-created its table, e.g.
# after a concurrent ruleset change by another program: the counts are lost).
moved() {
  LC_ALL=C join -a 2 -e 0 -o 0,1.2,2.2 <(echo "$1") <(echo "$2") |
    awk '$3 < $2 { reset = 1 }
         $3 > $2 { out = out sep $1 "(+" ($3 - $2) ")"; sep = " " }
         END { print (reset ? "reset" : out) }'
}

header "Traffic between the containers, decided in the kernel"
say "For each connection: the per-rule packet counters (agent /metrics, read"
say "from the kernel) before and after; the rule whose counter moved decided."
say "observed: deny = no connection; audit = connected, decided by a deny rule"
say "(staged, or in an audit-mode tier); allow = connected by a flow/intraTier."
say "explain: what 'tierctl explain' says for the same live identities."

# Warm-up: the agent is ready, but give the last endpoint update a moment.
for _ in $(seq 1 25); do
  reaches "${PREFIX}web-1" "${PREFIX}api-1" 8080 && break
  sleep 0.2
done

ROWS=()
failures=0
n=0
for spec in "${PROBES[@]}"; do
  IFS='|' read -r from to portspec want want_rule <<<"$spec"
  n=$((n + 1))
  rule="" got=""
  # Another process's traffic through the table can move a counter too, and
  # a re-created table starts its counters from zero: probe again (up to 4
  # times in all) until exactly one rule moved.
  for _ in 1 2 3 4; do
    before=$(rule_counters)
    connected=0
    reaches "$PREFIX$from" "$PREFIX$to" "${portspec#tcp/}" && connected=1
    sleep 0.2
    after=$(rule_counters)
    rule=$(moved "$before" "$after")
    if [[ "$rule" == reset ]]; then
      say "probe $n: the kernel's counters were reset meanwhile (the agent re-created its table); probing again"
    elif [[ -z "$rule" ]]; then
      say "probe $n: no counter moved; probing again"
    elif [[ "$rule" == *" "* ]]; then
      say "probe $n: other traffic moved a counter too ($rule); probing again"
    else
      break
    fi
    sleep 0.5
  done
  rule_name=${rule%(*}
  if [[ -z "$rule" || "$rule" == reset || "$rule" == *" "* ]]; then
    got="?"
    rule=${rule:-(no counter moved)}
  elif [[ $connected == 0 ]]; then
    got=deny
  elif [[ "$rule_name" == deny/* || "$rule_name" == default-deny/* ]]; then
    got=audit
  else
    got=allow
  fi
  ex=$("$TIERCTL" explain --policy "$POLICY" --inventory "$LIVE_INVENTORY" \
    --from "$PREFIX$from" --to "$PREFIX$to" --port "$portspec" -o json 2>/dev/null |
    jq -r '"\(.verdict) \(.rule.kind)/\(.rule.name // .rule.kind)"' 2>/dev/null || echo "error")
  if [[ "$ex" == "$want $want_rule" && "$ex" == "$got $rule_name" ]]; then
    ex_note=agrees
  else
    ex_note="says: $ex"
  fi
  status=ok
  if [[ "$got" != "$want" || "$rule_name" != "$want_rule" ]]; then
    status=MISMATCH
    failures=$((failures + 1))
  fi
  ROWS+=("$n|$from|$to|$portspec|$want|$got|$rule|$ex_note|$status")
  printf '  probe %d: %s -> %s %s: %s by %s\n' "$n" "$from" "$to" "$portspec" "$got" "${rule:-?}"
done

header "Verdicts"
fmt='%-2s %-10s %-10s %-9s %-8s %-8s %-44s %-8s %s\n'
# shellcheck disable=SC2059  # the format is ours
printf "$fmt" "#" source destination port expected observed "deciding rule: kind/name(+packets)" explain result
# shellcheck disable=SC2059
printf "$fmt" -- ---------- ---------- --------- -------- -------- "--------------------------------------------" -------- --------
for row in "${ROWS[@]}"; do
  IFS='|' read -r n from to portspec want got rule ex_note status <<<"$row"
  # shellcheck disable=SC2059
  printf "$fmt" "$n" "$from" "$to" "$portspec" "$want" "$got" "${rule:-?}" "$ex_note" "$status"
done
echo
say "Containers are ${PREFIX}<name>. Packets: a denied connection's SYN is"
say "counted once per retransmission; an allowed one only for its first packet"
say "(the rest is established traffic, accepted by conntrack)."

audited=$(echo "$after" | awk '$1 == "deny/no-scrape-of-payments" {print $2}')
say "tierwall_rule_packets_total{rule=\"no-scrape-of-payments\"} is ${audited:-0}: the staged"
say "deny would have blocked that many packets had it been enforced."

if [[ $failures -ne 0 ]]; then
  echo
  echo "demo.sh: $failures of ${#PROBES[@]} connections did not get the expected verdict and rule"
  exit 1
fi
echo
echo "demo.sh: done — all ${#PROBES[@]} connections got the expected verdict, decided by the expected rule"
