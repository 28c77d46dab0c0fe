# shellcheck shell=bash
# k8s_build WORK MODULE BIN_DIR CMD...: builds k8s.io/kubernetes/cmd/CMD at $K8S_VERSION into
# BIN_DIR, through a wrapper Go module in WORK named MODULE. Sourced by hack/tools.sh and
# hack/tools-node.sh (each with its own WORK, so their caches stay apart); the caller defines
# log() and K8S_VERSION.
#
# Why a wrapper module: k8s.io/kubernetes carries `replace` directives (its staging modules) in
# its go.mod, so `go install pkg@version` refuses it. The wrapper requires the pinned version and
# replaces each staging module with its published v0.Y.Z tag.
k8s_build() {
  local work="$1" module="$2" bin="$3"
  shift 3
  local minor="${K8S_VERSION#v1.}"    # 36.3
  local staging_version="v0.${minor}" # v0.36.3
  mkdir -p "$work" "$bin"
  (
    cd "$work" || return 1
    if [[ ! -f go.mod ]]; then
      go mod init "$module" >/dev/null 2>&1
    fi
    log "resolving k8s.io/kubernetes@${K8S_VERSION} staging modules"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    if [[ -z "$gomod" || ! -f "$gomod" ]]; then
      log "could not download k8s.io/kubernetes@${K8S_VERSION} (is the Go module proxy reachable?)"
      return 1
    fi
    local staging
    staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u)"
    if [[ -z "$staging" ]]; then
      log "no staging replace lines found in $gomod"
      return 1
    fi
    local m args=() tools=()
    for m in $staging; do
      args+=("-replace=${m}=${m}@${staging_version}")
    done
    go mod edit "${args[@]}"
    local cmd
    for cmd in "$@"; do tools+=("k8s.io/kubernetes/cmd/${cmd}@${K8S_VERSION}"); done
    log "fetching k8s.io/kubernetes@${K8S_VERSION} for $* (this takes a while the first time)"
    go get -tool "${tools[@]}" >&2
    go mod tidy >&2
    local ldflags="-s -w"
    ldflags+=" -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
    ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
    for cmd in "$@"; do
      log "building $cmd ${K8S_VERSION}"
      go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$bin/$cmd.tmp" "$bin/$cmd"
    done
  )
}
