#!/usr/bin/env bash
# Builds the controller-runtime peers of the benchmarks (issue 18) — bench/peers/cr-<version>/,
# one Go module per controller-runtime version, all sharing the sources in bench/peers/src/ —
# into the tools cache, keyed by the controller-runtime version and a hash of the module's
# sources, go.mod and go.sum. Dependencies come from the Go module proxy. Idempotent: with the
# binaries present a run is instant. Progress goes to stderr. They live in bench/, not beside
# hack/clientgo-elector, because only `make bench` uses them (`make test` never builds them).
#
#   bench/peers/build.sh                 build every module
#   bench/peers/build.sh bin VERSION PROGRAM
#                                        build VERSION's module if needed and print the path of
#                                        PROGRAM (cr-manager, cr-webhook) on stdout
#   bench/peers/build.sh versions        the versions present, one a line, oldest first
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${MO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/manager-operator}"
TOOLS_DIR="$CACHE_DIR/tools"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-local}"
export GOFLAGS="-mod=mod -buildvcs=false"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH="/usr/local/go/bin:$PATH"
fi

log() { printf '[peers] %s\n' "$*" >&2; }

versions() {
  local d
  for d in "$HERE"/cr-v*/; do
    d="${d%/}"
    printf '%s\n' "${d##*/cr-}"
  done | sort -V
}

# build VERSION: builds every program of cr-VERSION; prints the output directory on stdout.
build() {
  local version="$1" src="$HERE/cr-$1" hash dir prog tmp start
  if [[ ! -f "$src/go.mod" ]]; then
    log "no module $src (versions: $(versions | tr '\n' ' '))"
    return 1
  fi
  # -L: the programs' main.go are symlinks into bench/peers/src.
  hash="$(cd "$src" && find -L . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
    sort -z | xargs -0 cat | sha256sum | cut -c1-12)"
  dir="$TOOLS_DIR/cr-peers-$version-$hash"
  for prog in "$src"/*/; do
    prog="$(basename "$prog")"
    if [[ -x "$dir/$prog" ]]; then continue; fi
    if ! command -v go >/dev/null 2>&1; then
      log "Go is required to build the controller-runtime peers (none found on PATH)"
      return 1
    fi
    mkdir -p "$dir"
    tmp="$dir/.$prog.$$"
    start=$SECONDS
    log "building $prog (controller-runtime $version) into $dir"
    if ! (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$tmp" "./$prog"); then
      rm -f "$tmp"
      log "go build of $prog failed (is the Go module proxy reachable?)"
      return 1
    fi
    mv -f "$tmp" "$dir/$prog"
    log "built $prog in $((SECONDS - start))s"
  done
  printf '%s\n' "$dir"
}

main() {
  case "${1:-all}" in
  all)
    local v
    for v in $(versions); do build "$v" >/dev/null; done
    ;;
  versions) versions ;;
  bin)
    if [[ $# -ne 3 ]]; then
      log "usage: $0 bin VERSION PROGRAM"
      exit 2
    fi
    local dir
    dir="$(build "$2")"
    if [[ ! -x "$dir/$3" ]]; then
      log "no program $3 in cr-$2"
      exit 1
    fi
    printf '%s\n' "$dir/$3"
    ;;
  *)
    log "usage: $0 [all | versions | bin VERSION PROGRAM]"
    exit 2
    ;;
  esac
}

main "$@"
