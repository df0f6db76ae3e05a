#!/usr/bin/env bash
# Prepares rootful Podman for tierwall's runtime tests and demo on Debian 12.
# Run as root. Idempotent: a second run installs nothing and imports nothing.
#
#   podman-setup.sh                 install packages and import the test images
#   podman-setup.sh install         packages only
#   podman-setup.sh images          test images only
#   podman-setup.sh service start [SOCKET]   start `podman system service` on
#                                   SOCKET (default /run/tierwall-test/podman.sock)
#                                   and wait until it answers GET /_ping
#   podman-setup.sh service stop [SOCKET]    stop that service
#   podman-setup.sh service status [SOCKET]  exit 0 when it answers /_ping
#   podman-setup.sh env             print the export line for CONTAINERS_CONF
#
# Nothing is written under /etc: Podman reads the project-local
# tests/podman/containers.conf through CONTAINERS_CONF, which this script
# exports for every podman it runs (callers export it themselves, see `env`).
# There is no image registry here: the busybox image is imported from a
# rootfs built out of busybox-static and tagged with registry-style names.
# docs/runtime.md explains what this machine needed and why.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CONTAINERS_CONF="$REPO_ROOT/tests/podman/containers.conf"

DEFAULT_SOCKET=/run/tierwall-test/podman.sock
BASE_IMAGE=reg.example/tierwall/busybox:1
# Extra names for the same image, for identity tests (image -> tier).
EXTRA_TAGS=(
  reg.example/shop/web:1.4
  reg.example/shop/api:3.1
  reg.example/pay/db:2
  reg.example/ops/monitor:0.9
)

PACKAGES=(
  podman runc conmon
  # netavark is podman's bridge network backend; podman only depends on
  # "container-network-stack", so name it to avoid the CNI plugins.
  netavark
  # netavark 1.4 programs its NAT/forward rules through iptables (the nft
  # flavour on Debian 12); without it `podman run` fails in network setup.
  iptables
  busybox-static
  # the /_ping readiness probe over the unix socket
  curl
)

log() { echo "podman-setup: $*"; }
die() { echo "podman-setup: $*" >&2; exit 1; }

require_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (rootful Podman)"
}

install_packages() {
  local missing=() pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "packages already installed"
    return
  fi
  require_root
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
    --no-install-recommends)
  apt-get update -q
  if ! apt-get install "${opts[@]}" "${missing[@]}"; then
    log "install failed; refreshing package lists and retrying"
    apt-get update -q
    apt-get install "${opts[@]}" "${missing[@]}"
  fi
}

# A minimal rootfs: /bin/busybox plus one symlink per applet, and the empty
# directories a container runtime mounts over.
build_rootfs() {
  local root=$1 applet
  mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,run,var/tmp,root}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  ln -s bin "$root/sbin"
  mkdir -p "$root/usr"
  ln -s ../bin "$root/usr/bin"
  ln -s ../bin "$root/usr/sbin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
}

import_images() {
  require_root
  command -v podman >/dev/null || die "podman is not installed (run: $0 install)"
  [[ -x /bin/busybox ]] || die "/bin/busybox missing (busybox-static)"
  if podman image exists "$BASE_IMAGE"; then
    log "image $BASE_IMAGE present"
  else
    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $work now; the script ends soon after
    trap "rm -rf '$work'" EXIT
    build_rootfs "$work/rootfs"
    tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
    podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
      --message "tierwall test image: busybox-static rootfs" \
      "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE"
  fi
  local tag
  for tag in "${EXTRA_TAGS[@]}"; do
    if ! podman image exists "$tag"; then
      podman tag "$BASE_IMAGE" "$tag"
      log "tagged $tag"
    fi
  done
}

socket_arg() { echo "${1:-${TIERWALL_PODMAN_SOCKET:-$DEFAULT_SOCKET}}"; }

ping_socket() {
  curl -sf --max-time 2 --unix-socket "$1" http://d/_ping >/dev/null 2>&1
}

service_start() {
  require_root
  local sock pidfile logfile pid
  sock=$(socket_arg "${1:-}")
  pidfile="${sock%.sock}.pid"
  logfile="${sock%.sock}.log"
  if ping_socket "$sock"; then
    log "service already answering on $sock"
    return
  fi
  mkdir -p "$(dirname "$sock")"
  rm -f "$sock"
  # setsid: its own session, so the caller's terminal or test harness
  # signals do not reach it; stop uses the pid file.
  setsid podman system service --time=0 "unix://$sock" </dev/null >>"$logfile" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  for _ in $(seq 1 100); do
    if ping_socket "$sock"; then
      log "service pid $pid answering on $sock"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$logfile" >&2 || true
  die "service did not answer GET /_ping on $sock (log: $logfile)"
}

service_stop() {
  local sock pidfile pid
  sock=$(socket_arg "${1:-}")
  pidfile="${sock%.sock}.pid"
  if [[ -f "$pidfile" ]]; then
    pid=$(cat "$pidfile")
    # Only signal the pid we started, and only if it is still a podman.
    if [[ -n "$pid" ]] && grep -q podman "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  fi
  rm -f "$sock" "${sock%.sock}.log"
  log "service on $sock stopped"
}

cmd=${1:-all}
case "$cmd" in
  all)
    install_packages
    import_images
    ;;
  install) install_packages ;;
  images) import_images ;;
  service)
    sub=${2:-}
    case "$sub" in
      start) service_start "${3:-}" ;;
      stop) service_stop "${3:-}" ;;
      status) ping_socket "$(socket_arg "${3:-}")" ;;
      *) die "usage: $0 service start|stop|status [SOCKET]" ;;
    esac
    ;;
  env) echo "export CONTAINERS_CONF=$CONTAINERS_CONF" ;;
  -h | --help | help) sed -n '2,20p' "$0" ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
