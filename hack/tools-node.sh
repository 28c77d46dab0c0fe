#!/usr/bin/env bash
# Builds what hack/node.sh needs to run real kubelet nodes next to the control plane of
# hack/cluster.sh, into a cache folder keyed by version. Idempotent: a second run is instant.
# Progress goes to stderr; `hack/tools-node.sh bindir` prints the bin folder on stdout.
#
#   BIN/kubelet, BIN/kube-scheduler   k8s.io/kubernetes ${K8S_VERSION}, from Go modules, through
#                                     a wrapper module like hack/tools.sh's (its own folder, so the
#                                     control-plane build and its cache stay untouched)
#   BIN/pause.tar, BIN/pause.tag      the pod sandbox ("pause") image as a docker-archive, and its
#                                     tag: no registry is reachable, so it is a static Go binary
#                                     packed by hack/lib/image-archive.py
#   Debian packages containerd, runc, containernetworking-plugins (installed only if missing).
#
# Container runtime: Debian 12's containerd 1.6.20 is used as is. kubelet v1.36 still accepts a
# CRI without the RuntimeConfig RPC (cmd/kubelet/app/server.go getCgroupDriverFromCRI logs
# "CRI implementation should be updated to support RuntimeConfig. Falling back to using
# cgroupDriver from kubelet config." and carries on; the fallback is announced for removal in
# 1.37), so kubelet's own cgroupDriver setting is what counts. Verified with e2e/node-smoke.sh:
# nodes Ready, pods run, probes, kubectl logs. The one containerd setting this machine type
# needs (restrict_oom_score_adj: no CAP_SYS_RESOURCE) is explained in hack/node.sh. If a later
# kubelet drops the fallback, build containerd v2 from github.com/containerd/containerd/v2 here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
PAUSE_VERSION="mo1" # bump when the pause program below changes
PAUSE_TAG="localhost/mo-pause:${PAUSE_VERSION}"
CACHE_DIR="${MO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/manager-operator}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin-node-k8s-${K8S_VERSION}"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-local}"
export GOFLAGS="-buildvcs=false"

log() { printf '[tools-node] %s\n' "$*" >&2; }
# shellcheck source=hack/lib/k8s-build.sh
source "$HERE/lib/k8s-build.sh"

have_k8s() {
  [[ -x "$BIN_DIR/kubelet" && -x "$BIN_DIR/kube-scheduler" ]]
}

have_pause() {
  [[ -f "$BIN_DIR/pause.tar" && "$(cat "$BIN_DIR/pause.tag" 2>/dev/null)" == "$PAUSE_TAG" ]]
}

build_k8s() {
  k8s_build "$TOOLS_DIR/src/k8s-node-${K8S_VERSION}" mo-tools/k8s-node "$BIN_DIR" kube-scheduler kubelet
}

# The sandbox container of every pod: sleeps until SIGINT/SIGTERM (then exits 0) and, as pid 1
# of a shared pid namespace, reaps orphaned children. Same job as kubernetes/build/pause.
build_pause() {
  local work="$TOOLS_DIR/src/mo-pause-${PAUSE_VERSION}"
  mkdir -p "$work"
  cd "$work"
  cat >go.mod <<'GOMOD'
module mo-tools/pause

go 1.22
GOMOD
  cat >main.go <<'GOSRC'
// Command pause is the pod sandbox process: it holds the pod's namespaces open, reaps zombies
// and exits 0 on SIGINT or SIGTERM.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("mo-pause")
		return
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
GOSRC
  log "building the pause image ${PAUSE_TAG}"
  go build -trimpath -ldflags "-s -w" -o pause .
  python3 "$HERE/lib/image-archive.py" "$BIN_DIR/pause.tar" "$PAUSE_TAG" /pause "$work/pause=/pause"
  printf '%s\n' "$PAUSE_TAG" >"$BIN_DIR/pause.tag"
}

# Debian packages, installed only when missing (sudo unless root).
ensure_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
  ((${#missing[@]} > 0)) || return 0
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

main() {
  local need
  for need in go python3; do
    if ! command -v "$need" >/dev/null 2>&1; then
      log "$need is required to build the node tools (none found on PATH)"
      exit 1
    fi
  done
  ensure_packages
  mkdir -p "$BIN_DIR"
  if ! have_k8s || ! have_pause; then
    local start=$SECONDS
    have_pause || (build_pause)
    have_k8s || (build_k8s)
    if ! have_k8s || ! have_pause; then
      log "node tools build incomplete in $BIN_DIR"
      exit 1
    fi
    log "built node tools in $((SECONDS - start))s into $BIN_DIR"
  fi
  if [[ "${1:-}" == "bindir" ]]; then
    printf '%s\n' "$BIN_DIR"
  fi
}

main "$@"
