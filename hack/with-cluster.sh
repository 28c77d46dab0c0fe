#!/usr/bin/env bash
# Runs CMD... against a fresh local control plane and always tears it down afterwards.
#
#   hack/with-cluster.sh cargo test --all-targets
#
# Builds the tools if needed (hack/tools.sh), starts a cluster (hack/cluster.sh up) in
# $MO_CLUSTER_DIR or a new temp dir, exports MO_KUBECONFIG, MO_CLUSTER_DIR, MO_BIN_DIR,
# KUBECONFIG and PATH (tools bin dir first), runs CMD, stops the cluster, and exits with CMD's
# exit code. Set MO_KEEP_CLUSTER=1 to leave the cluster running for debugging.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if (($# == 0)); then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

MO_BIN_DIR="$("$HERE/tools.sh" bindir)"
export MO_BIN_DIR
export PATH="$MO_BIN_DIR:$PATH"

if [[ -n "${MO_CLUSTER_DIR:-}" ]]; then
  dir="$MO_CLUSTER_DIR"
else
  dir="$(mktemp -d "${TMPDIR:-/tmp}/mo-cluster.XXXXXX")"
fi

# shellcheck disable=SC2317 # invoked via trap
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ "${MO_KEEP_CLUSTER:-}" == 1 ]]; then
    echo "[with-cluster] MO_KEEP_CLUSTER=1: leaving the cluster up; stop it with: $HERE/cluster.sh down $dir" >&2
  else
    "$HERE/cluster.sh" down "$dir" || echo "[with-cluster] WARNING: teardown of $dir failed" >&2
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$HERE/cluster.sh" up "$dir"
dir="$(cd "$dir" && pwd)"

export MO_CLUSTER_DIR="$dir"
export MO_KUBECONFIG="$dir/kubeconfig"
export MO_KUBECONFIG_UNPRIVILEGED="$dir/kubeconfig-unprivileged"
export KUBECONFIG="$dir/kubeconfig"

rc=0
"$@" || rc=$?
if ((rc != 0)); then
  echo "[with-cluster] command failed with exit code $rc: $*" >&2
fi
exit "$rc"
