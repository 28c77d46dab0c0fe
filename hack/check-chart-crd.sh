#!/usr/bin/env bash
# The chart renders the ManagerConfig CRD from charts/manager-operator/files/crds/ (templates/crd.yaml,
# so that `helm upgrade` upgrades it). That file must stay byte-identical to
# crds/managerconfig.yaml, which a unit test keeps equal to `manager-operator crd`.
#
#   hack/check-chart-crd.sh          exit 1 with a diff when they differ
#   hack/check-chart-crd.sh --fix    copy crds/managerconfig.yaml into the chart
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/crds/managerconfig.yaml"
DST="$ROOT/charts/manager-operator/files/crds/managerconfig.yaml"

if [[ "${1:-}" == "--fix" ]]; then
  cp "$SRC" "$DST"
  echo "[check-chart-crd] copied $SRC -> $DST" >&2
  exit 0
fi

if ! diff -u "$SRC" "$DST" >&2; then
  echo "[check-chart-crd] FAIL: $DST differs from $SRC; run: hack/check-chart-crd.sh --fix" >&2
  exit 1
fi
echo "[check-chart-crd] ok: the chart's CRD equals crds/managerconfig.yaml" >&2
