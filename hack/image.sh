#!/usr/bin/env bash
# Builds the operator's OCI image offline, from the repository's own Dockerfile (FROM scratch).
#
#   hack/image.sh context  build the static release binary and lay out the build context
#                          (target/image/context/rootfs; see the Dockerfile's header)
#   hack/image.sh build    context, then `buildah bud` the Dockerfile, write the image as a
#                          docker-archive (for `ctr images import` on a node, no registry), and
#                          check it: the binary is static, the user is 65532, `--version` runs
#                          inside the image as that user. Prints the archive's path on stdout.
#
# Environment: IMAGE (default ghcr.io/manager-operator/manager-operator:<Cargo version>, the
# chart's default image, so `helm install` with default values finds it on a node that imported
# it), IMAGE_DIR (default target/image), CARGO (default cargo).
# Needs buildah (Debian package `buildah`; `.ci/run` installs it) for `build`, not for `context`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO="${CARGO:-cargo}"
IMAGE_DIR="${IMAGE_DIR:-$ROOT/target/image}"
CONTEXT="$IMAGE_DIR/context"
TRIPLE="x86_64-unknown-linux-gnu"
NONROOT_UID=65532

log() { printf '[image] %s\n' "$*" >&2; }

die() {
  printf '\n[image] ERROR: %s\n' "$*" >&2
  exit 1
}

version() {
  sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1
}

IMAGE="${IMAGE:-ghcr.io/manager-operator/manager-operator:$(version)}"

# The binary is linked statically against glibc, so that a FROM-scratch image needs no libc.
# `--target` keeps build scripts and proc macros (built for the host) dynamically linked, and
# puts the output under target/<triple>/release, apart from the debug and test builds.
build_binary() {
  local revision
  revision="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  log "building the static release binary (revision $revision)"
  (cd "$ROOT" && MO_REVISION="$revision" RUSTFLAGS="-C target-feature=+crt-static" \
    "$CARGO" build --release --locked --target "$TRIPLE" --bin manager-operator)
  BINARY="$ROOT/target/$TRIPLE/release/manager-operator"
  [[ -x "$BINARY" ]] || die "no binary at $BINARY"
  local headers
  headers="$(readelf -l "$BINARY")" # read whole: `readelf | grep -q` can fail by SIGPIPE
  if grep -q 'Requesting program interpreter' <<<"$headers"; then
    die "$BINARY is dynamically linked; the FROM-scratch image cannot run it"
  fi
}

cmd_context() {
  build_binary
  local rootfs="$CONTEXT/rootfs"
  rm -rf "$CONTEXT"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
  install -m 0755 "$BINARY" "$rootfs/usr/local/bin/manager-operator"
  strip --strip-all "$rootfs/usr/local/bin/manager-operator"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$NONROOT_UID" "$NONROOT_UID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%d:\n' "$NONROOT_UID" >"$rootfs/etc/group"
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  local ca=/etc/ssl/certs/ca-certificates.crt
  [[ -s "$ca" ]] || die "$ca is missing (Debian package ca-certificates)"
  install -m 0644 "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
  log "build context ready in $CONTEXT ($(du -sh "$rootfs" | cut -f1))"
}

cmd_build() {
  command -v buildah >/dev/null 2>&1 || die "buildah is required (apt-get install buildah)"
  cmd_context
  local archive="$IMAGE_DIR/manager-operator.tar" created container
  created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  log "buildah bud -t $IMAGE (FROM scratch, nothing pulled)"
  buildah bud --quiet --pull=never --format docker --layers=false \
    --build-arg "VERSION=$(version)" \
    --build-arg "REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$created" \
    -f "$ROOT/Dockerfile" -t "$IMAGE" "$CONTEXT" >/dev/null
  rm -f "$archive"
  buildah push --quiet "$IMAGE" "docker-archive:$archive:$IMAGE" >/dev/null

  local user
  user="$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")"
  [[ "$user" == "$NONROOT_UID:$NONROOT_UID" ]] || die "image user is ${user@Q}, want $NONROOT_UID:$NONROOT_UID"
  container="$(buildah from --pull-never "$IMAGE")"
  # `buildah run` uses the image's USER (65532); the kubelet's runAsNonRoot check in the node
  # scenario (e2e/e2e-node.sh) verifies it once more.
  local out rc=0
  out="$(buildah run --isolation chroot "$container" -- /usr/local/bin/manager-operator --version 2>&1)" || rc=$?
  buildah rm "$container" >/dev/null
  ((rc == 0)) || die "manager-operator --version failed in the image (exit $rc): $out"
  local size
  size="$(buildah images --format '{{.Size}}' "$IMAGE" | head -n 1)"
  log "image $IMAGE: $size, user $user, '$out' runs inside; archive $archive ($(du -h "$archive" | cut -f1))"
  printf '%s\n' "$archive"
}

case "${1:-}" in
context) cmd_context ;;
build) cmd_build ;;
*)
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
