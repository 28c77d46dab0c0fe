#!/usr/bin/env bash
# Builds the real control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from their Go modules into a cache folder keyed by version. Idempotent: a second run with the
# binaries present is instant. Prints nothing but progress on stderr; prints the bin folder on
# stdout when called as `hack/tools.sh bindir`.
#
# Why wrapper modules: k8s.io/kubernetes and go.etcd.io/etcd/server/v3 both carry `replace`
# directives in their go.mod, so `go install pkg@version` refuses them. A small wrapper module
# requires the pinned version and replaces each staging module with its published v0.Y.Z tag.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_DIR="${MO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/manager-operator}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin-k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-local}"
export GOFLAGS="-buildvcs=false"

log() { printf '[tools] %s\n' "$*" >&2; }
# shellcheck source=hack/lib/k8s-build.sh
source "$HERE/lib/k8s-build.sh"

have_all() {
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [[ -x "$BIN_DIR/$b" ]] || return 1
  done
}

build_k8s() {
  k8s_build "$TOOLS_DIR/src/k8s-${K8S_VERSION}" mo-tools/k8s "$BIN_DIR" kube-apiserver kube-controller-manager kubectl
}

build_etcd() {
  local work="$TOOLS_DIR/src/etcd-${ETCD_VERSION}"
  mkdir -p "$work"
  cd "$work"
  cat >main.go <<'EOF'
// Command etcd wraps go.etcd.io/etcd/server/v3/etcdmain, whose module has replace lines.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  if [[ ! -f go.mod ]]; then
    go mod init mo-tools/etcd >/dev/null 2>&1
  fi
  log "fetching go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
  go mod tidy >&2
  log "building etcd ${ETCD_VERSION}"
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" .
  mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

main() {
  if ! command -v go >/dev/null 2>&1; then
    log "Go is required to build the control plane (none found on PATH)"
    exit 1
  fi
  mkdir -p "$BIN_DIR"
  if ! have_all; then
    local start=$SECONDS
    [[ -x "$BIN_DIR/etcd" ]] || (build_etcd)
    [[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/kube-controller-manager" && -x "$BIN_DIR/kubectl" ]] || (build_k8s)
    have_all || { log "control-plane build incomplete in $BIN_DIR"; exit 1; }
    log "built control plane in $((SECONDS - start))s into $BIN_DIR"
  fi
  if [[ "${1:-}" == "bindir" ]]; then
    printf '%s\n' "$BIN_DIR"
  fi
}

main "$@"
