#!/usr/bin/env bash
# Builds the observability/packaging tools the chart tests and the e2e suite need — helm (v4),
# prometheus and promtool — from their Go modules into the tools cache, keyed by version.
# Idempotent: a second run with the binaries present is instant. Progress goes to stderr; prints
# the bin folder on stdout when called as `hack/tools-observability.sh bindir`.
#
# helm: helm.sh/helm/v4's go.mod has no replace lines, so `go install helm.sh/helm/v4/cmd/helm@V`
#   works as is (GOBIN points into the cache).
# prometheus/promtool: github.com/prometheus/prometheus is published as v0.3MM.P for release
#   3.MM.P. Its go.mod has carried replace/exclude lines in many releases, which makes
#   `go install pkg@version` refuse it, so — like hack/tools.sh does for kube-apiserver — a small
#   wrapper module requires the pinned version and builds cmd/prometheus and cmd/promtool from
#   it. The React web UI assets are not part of the Go module; building WITHOUT the
#   `builtinassets` tag (the default) serves no UI, which is fine: the tests use the HTTP API only.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.1}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"   # = Prometheus release 3.16.0
CACHE_DIR="${MO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/manager-operator}"
TOOLS_DIR="$CACHE_DIR/tools"
BIN_DIR="$TOOLS_DIR/bin-helm-${HELM_VERSION}-prometheus-${PROMETHEUS_VERSION}"

export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN_OVERRIDE:-local}"
export GOFLAGS="-buildvcs=false"

log() { printf '[tools-observability] %s\n' "$*" >&2; }

have_all() {
  local b
  for b in helm prometheus promtool; do
    [[ -x "$BIN_DIR/$b" ]] || return 1
  done
}

# 4.3.1 from v4.3.1; 3.16.0 from v0.316.0 (minor 316 -> 3.16).
prometheus_release() {
  local v="${PROMETHEUS_VERSION#v0.}"   # 316.0
  local minor="${v%%.*}" patch="${v#*.}"
  printf '%s.%s.%s\n' "${minor:0:1}" "$((10#${minor:1}))" "$patch"
}

build_helm() {
  local start=$SECONDS ldflags="-s -w"
  ldflags+=" -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
  ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
  log "building helm ${HELM_VERSION} (go install)"
  local tmp_bin="$BIN_DIR/.helm-build"
  rm -rf "$tmp_bin"
  mkdir -p "$tmp_bin"
  GOBIN="$tmp_bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
  mv "$tmp_bin/helm" "$BIN_DIR/helm"
  rm -rf "$tmp_bin"
  log "built helm in $((SECONDS - start))s"
}

build_prometheus() {
  local start=$SECONDS
  local work="$TOOLS_DIR/src/prometheus-${PROMETHEUS_VERSION}"
  local release
  release="$(prometheus_release)"
  mkdir -p "$work"
  cd "$work"
  if [[ ! -f go.mod ]]; then
    go mod init mo-tools/prometheus >/dev/null 2>&1
  fi
  log "fetching github.com/prometheus/prometheus@${PROMETHEUS_VERSION} (release ${release})"
  go get -tool \
    "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}" \
    "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}" >&2
  go mod tidy >&2
  local ldflags="-s -w"
  ldflags+=" -X github.com/prometheus/common/version.Version=${release}"
  ldflags+=" -X github.com/prometheus/common/version.Branch=release-${release%.*}"
  ldflags+=" -X github.com/prometheus/common/version.Revision=${PROMETHEUS_VERSION}"
  ldflags+=" -X github.com/prometheus/common/version.BuildUser=manager-operator-tools"
  local cmd
  for cmd in prometheus promtool; do
    log "building $cmd ${release}"
    # Build tags as in Prometheus' .promu.yml, minus `builtinassets` (no web UI in the module),
    # plus `remove_all_sd`: only file/http/static service discovery, which is all the tests
    # use (scrapes of 127.0.0.1); it skips compiling the cloud SDKs and client-go.
    go build -trimpath -tags netgo,remove_all_sd -ldflags "$ldflags" -o "$BIN_DIR/$cmd.tmp" \
      "github.com/prometheus/prometheus/cmd/$cmd"
    mv "$BIN_DIR/$cmd.tmp" "$BIN_DIR/$cmd"
  done
  log "built prometheus + promtool in $((SECONDS - start))s"
}

main() {
  if ! command -v go >/dev/null 2>&1; then
    log "Go is required to build helm and prometheus (none found on PATH)"
    exit 1
  fi
  mkdir -p "$BIN_DIR"
  if ! have_all; then
    local start=$SECONDS
    [[ -x "$BIN_DIR/helm" ]] || (build_helm)
    [[ -x "$BIN_DIR/prometheus" && -x "$BIN_DIR/promtool" ]] || (build_prometheus)
    have_all || { log "observability tools build incomplete in $BIN_DIR"; exit 1; }
    log "built observability tools in $((SECONDS - start))s into $BIN_DIR"
  fi
  if [[ "${1:-}" == "bindir" ]]; then
    printf '%s\n' "$BIN_DIR"
  fi
}

main "$@"
