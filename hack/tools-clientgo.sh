#!/usr/bin/env bash
# Builds hack/clientgo-elector — a real client-go leader elector used by tests/interop.rs — from
# its Go module (dependencies from the Go module proxy) into the tools cache, keyed by the
# client-go version and a hash of the program's sources. Idempotent: with the binary present a
# run is instant. Progress goes to stderr; `hack/tools-clientgo.sh bin` prints the binary's path
# on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/clientgo-elector"
CACHE_DIR="${MO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/manager-operator}"
TOOLS_DIR="$CACHE_DIR/tools"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-local}"
export GOFLAGS="-buildvcs=false"

log() { printf '[tools-clientgo] %s\n' "$*" >&2; }

main() {
  if ! command -v go >/dev/null 2>&1; then
    log "Go is required to build the client-go elector (none found on PATH)"
    exit 1
  fi
  local version hash dir bin
  version="$(sed -n 's#^[[:space:]]*k8s.io/client-go \(v[^[:space:]]*\).*#\1#p' "$SRC/go.mod")"
  if [[ -z "$version" ]]; then
    log "no k8s.io/client-go requirement in $SRC/go.mod"
    exit 1
  fi
  hash="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-12)"
  dir="$TOOLS_DIR/clientgo-elector-${version}-${hash}"
  bin="$dir/clientgo-elector"
  if [[ ! -x "$bin" ]]; then
    local start=$SECONDS tmp="$dir/.clientgo-elector.$$"
    mkdir -p "$dir"
    log "building clientgo-elector (client-go ${version}) into $dir"
    if ! (cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$tmp" .); then
      rm -f "$tmp"
      log "go build failed (is the Go module proxy reachable?)"
      exit 1
    fi
    mv -f "$tmp" "$bin"
    log "built clientgo-elector in $((SECONDS - start))s"
  fi
  if [[ "${1:-}" == "bin" ]]; then
    printf '%s\n' "$bin"
  fi
}

main "$@"
