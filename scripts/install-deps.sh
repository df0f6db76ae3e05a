#!/usr/bin/env bash
# Installs everything tierwall needs to build, test and demo on Debian 12.
# Run as root. Idempotent: when every package is already installed it does
# nothing (and touches no network), so CI and the demo can call it each run.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config
  clang libclang-rt-14-dev clang-format
  # libraries
  libyaml-cpp-dev libyaml-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev googletest
  libnftnl-dev libmnl-dev
  dpdk-dev libdpdk-dev
  # dpdk-test-acl: the rte_acl baseline of tierwall-bench-dpdk
  dpdk
  nlohmann-json3-dev libcli11-dev libssl-dev
  # the cluster store's transport to etcd (docs/cluster.md)
  libcurl4-openssl-dev
  # runtime tools used by the integration tests and the demo
  nftables iproute2 iperf3 conntrack
  # flow-log tooling: the jq baseline of tierwall-bench-flowquery, the
  # ulogd2 baseline of tierwall-bench-flowlog, and the headless browser
  # (with a font) of report_browser_test
  jq ulogd2 ulogd2-json chromium fonts-dejavu-core zlib1g-dev
  # IPFIX export: ipfix_test checks its messages with Wireshark's dissector
  tshark
  # the cluster store's tests run their own etcd members (never the system
  # one Debian's etcd-server may start) and make TLS certificates
  etcd-server etcd-client openssl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}"

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: must run as root to install packages" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# A fresh machine has no package lists; a stale list can name versions the
# mirror no longer has. Update once, and retry the install after a second
# update if the first attempt fails.
apt-get update -q
if ! apt-get install "${APT_OPTS[@]}" --no-install-recommends "${missing[@]}"; then
  echo "install-deps: install failed; refreshing package lists and retrying" >&2
  apt-get update -q
  apt-get install "${APT_OPTS[@]}" --no-install-recommends "${missing[@]}"
fi

# Verify: fail loudly if anything is still missing.
still_missing=()
for pkg in "${missing[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || still_missing+=("$pkg")
done
if [[ ${#still_missing[@]} -ne 0 ]]; then
  echo "install-deps: still missing after install: ${still_missing[*]}" >&2
  exit 1
fi
echo "install-deps: done"
