#!/usr/bin/env bash
# Chart, dashboard and alert checks (docs/design.md §5, §7): static checks, `helm lint` and `helm template` for
# every value set, server-side dry-run of every rendered manifest against a real API server,
# values-schema negative cases, and promtool on the alert rules.
#
#   hack/with-cluster.sh e2e/chart-test.sh           # fresh control plane, torn down afterwards
#   source /tmp/some-cluster/env && e2e/chart-test.sh  # an existing one
#
# Environment: KUBECONFIG (required: the admin kubeconfig, as with-cluster.sh exports it),
# MO_BIN_DIR (kubectl; default `hack/tools.sh bindir`), MO_OBS_BIN_DIR (helm, promtool; default
# `hack/tools-observability.sh bindir`, which builds them on first use),
# MO_CHART_TEST_NAMESPACE (default mo-chart-test; created, and deleted at the end).
#
# Value sets: defaults, and every e2e/values/*.yaml (cert-manager, cert-manager-issuer,
# url-mode, monitoring, lease-flow-control). Needs python3 with PyYAML (Debian: python3-yaml), jq
# and curl.
#
# Besides the dry-runs, step 7 applies the opt-in FlowSchema (leaseFlowControl) for real and
# checks with the ServiceAccount's token that the API server classifies its Lease requests, and
# only those, into it; the FlowSchema and its priority level are deleted at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CHART="$ROOT/charts/manager-operator"
NS="${MO_CHART_TEST_NAMESPACE:-mo-chart-test}"
RELEASE="mo-chart-test"

log() { printf '[chart-test] %s\n' "$*" >&2; }
die() {
  printf '[chart-test] FAIL: %s\n' "$*" >&2
  exit 1
}

MO_BIN_DIR="${MO_BIN_DIR:-$("$ROOT/hack/tools.sh" bindir)}"
MO_OBS_BIN_DIR="${MO_OBS_BIN_DIR:-$("$ROOT/hack/tools-observability.sh" bindir)}"
KUBECTL="$MO_BIN_DIR/kubectl"
HELM="$MO_OBS_BIN_DIR/helm"
PROMTOOL="$MO_OBS_BIN_DIR/promtool"
for b in "$KUBECTL" "$HELM" "$PROMTOOL"; do
  [[ -x "$b" ]] || die "missing $b (run hack/tools.sh and hack/tools-observability.sh)"
done
[[ -n "${KUBECONFIG:-}" && -f "$KUBECONFIG" ]] ||
  die "KUBECONFIG must name the admin kubeconfig of a running control plane (run me under hack/with-cluster.sh)"
command -v jq >/dev/null || die "jq is required"
command -v curl >/dev/null || die "curl is required"
python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is required (Debian: apt-get install python3-yaml)"

# Helm keeps its caches and config out of $HOME (read-only or shared CI homes).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mo-chart-test.XXXXXX")"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

# shellcheck disable=SC2317 # invoked via trap
cleanup() {
  local rc=$?
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  # Cluster-scoped objects of step 7.
  kubectl delete flowschemas.flowcontrol.apiserver.k8s.io,prioritylevelconfigurations.flowcontrol.apiserver.k8s.io \
    -l "app.kubernetes.io/instance=$RELEASE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

start=$SECONDS
passed=()

# ---------------------------------------------------------------------------------------------
log "1/7 static checks: chart CRD, generated dashboards/schema/README table, metric names"
"$ROOT/hack/check-chart-crd.sh"
python3 "$ROOT/hack/chart/gen-dashboards.py" --check || die "dashboards are stale: run hack/chart/gen-dashboards.py"
python3 "$ROOT/hack/chart/gen-schema.py" --check || die "values.schema.json is stale: run hack/chart/gen-schema.py"
python3 "$ROOT/hack/chart/values-table.py" --check || die "README values table is stale: run hack/chart/values-table.py"
python3 "$ROOT/hack/chart/check-metric-names.py"
for f in "$CHART"/dashboards/*.json; do
  jq -e '.uid and .title and (.templating.list[] | select(.name == "datasource" and .type == "datasource"))
         and ([.panels[] | select(.type != "row") | .datasource.uid == "${datasource}"] | all)' \
    "$f" >/dev/null || die "$f: needs uid, title, a datasource variable and every panel on \${datasource}"
done
jq -e '[.templating.list[].name] | index("namespace") and index("name")' \
  "$CHART/dashboards/manager-detail.json" >/dev/null || die "manager-detail.json needs namespace and name variables"
passed+=("static checks")

# ---------------------------------------------------------------------------------------------
log "2/7 promtool: check rules, unit tests"
"$PROMTOOL" check rules "$CHART/files/alerts.yaml"
"$PROMTOOL" test rules "$HERE/prometheus/alerts_test.yaml"
passed+=("promtool check rules + test rules")

# ---------------------------------------------------------------------------------------------
log "3/7 values.schema.json refuses wrong types and values"
expect_refused() {
  local what="$1"
  shift
  if "$HELM" template "$RELEASE" "$CHART" -n "$NS" "$@" >/dev/null 2>"$WORK/err"; then
    die "values.schema.json accepted $what ($*)"
  fi
  grep -qiE 'schema|values don.t meet|validation' "$WORK/err" ||
    die "$what: refused, but not by the schema: $(cat "$WORK/err")"
  log "  refused as expected: $what"
}
expect_refused "a string replicaCount" --set-string replicaCount=two
expect_refused "an unknown failurePolicy" --set webhook.failurePolicy=Sometimes
expect_refused "timeoutSeconds above 30" --set webhook.timeoutSeconds=31
expect_refused "a non-boolean allowLoopback" --set-string hookPolicy.allowLoopback=yes
expect_refused "a deniedNetworks entry that is not a CIDR" --set 'hookPolicy.deniedNetworks={not-a-cidr}'
expect_refused "an http webhook URL" --set webhook.url=http://127.0.0.1:9443/validate
expect_refused "an unknown certMode" --set webhook.certMode=vault
expect_refused "a misspelt key" --set webhok.url=https://x
expect_refused "a bad image pull policy" --set image.pullPolicy=Sometimes
expect_refused "a string for the metrics port" --set-string metrics.port=http
expect_refused "a bad Go duration" --set serviceMonitor.interval=30
expect_refused "a handover interval without a unit" --set placement.handoverInterval=500
expect_refused "a zero handover batch" --set placement.handoverBatch=0
expect_refused "an unknown flow distinguisher" --set leaseFlowControl.distinguisherMethod=ByPod
expect_refused "a lendablePercent above 100" --set leaseFlowControl.priorityLevel.lendablePercent=101
expect_refused "a NetworkPolicy that would open the webhook to everyone" --set networkPolicy.enabled=true
passed+=("schema negative cases")

# ---------------------------------------------------------------------------------------------
log "4/7 third-party CRD stand-ins (e2e/testdata/third-party-crds.yaml) and namespace $NS"
kubectl apply --server-side --force-conflicts --field-manager=mo-chart-test -f "$HERE/testdata/third-party-crds.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com \
  crd/certificates.cert-manager.io crd/issuers.cert-manager.io >/dev/null
# A namespace left terminating by an earlier run refuses new objects, dry-run included.
kubectl wait --for=delete "namespace/$NS" --timeout=120s >/dev/null 2>&1 || true
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null

# ---------------------------------------------------------------------------------------------
log "5/7 helm lint, helm template and server-side dry-run for every value set"
# The helm-test Pod (templates/tests/selftest.yaml) names its own ServiceAccount, which a dry-run
# does not create; the API server's ServiceAccount admission wants it to exist.
kubectl create serviceaccount "$RELEASE-manager-operator-selftest" -n "$NS" --dry-run=client -o yaml |
  kubectl apply --server-side -f - >/dev/null
value_sets=(defaults)
for f in "$HERE"/values/*.yaml; do value_sets+=("$(basename "$f" .yaml)"); done
for set in "${value_sets[@]}"; do
  args=()
  [[ "$set" == defaults ]] || args=(-f "$HERE/values/$set.yaml")
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$WORK/lint.log" 2>&1 || {
    cat "$WORK/lint.log" >&2
    die "helm lint ($set)"
  }
  out="$WORK/render-$set.yaml"
  "$HELM" template "$RELEASE" "$CHART" -n "$NS" --include-crds "${args[@]}" >"$out" ||
    die "helm template ($set)"
  kinds="$(grep -E '^kind: ' "$out" | sort | uniq -c | awk '{printf "%s%s×%s", sep, $3, $1; sep=", "}')"
  # Strict server-side field validation: unknown or mistyped fields are errors, not warnings.
  kubectl apply --server-side --dry-run=server --validate=strict --force-conflicts \
    --field-manager=mo-chart-test -f "$out" -o json >"$WORK/applied-$set.json" 2>"$WORK/apply.err" || {
    cat "$WORK/apply.err" >&2
    die "server-side dry-run rejected the $set render"
  }
  n="$(jq -r 'if .kind == "List" then (.items | length) else 1 end' "$WORK/applied-$set.json")"
  log "  $set: lint ok; $n objects accepted by the API server (dry-run): $kinds"
  passed+=("$set: lint + template + dry-run ($n objects)")
done

# ---------------------------------------------------------------------------------------------
log "6/7 rendered content: PrometheusRule = files/alerts.yaml (promtool), render assertions"
# The PrometheusRule as the API server accepted it, back to a rule file, through promtool.
jq '.items[] | select(.kind == "PrometheusRule") | .spec' "$WORK/applied-monitoring.json" >"$WORK/prometheusrule.json"
[[ -s "$WORK/prometheusrule.json" ]] || die "the monitoring value set rendered no PrometheusRule"
"$PROMTOOL" check rules "$WORK/prometheusrule.json" >/dev/null || die "the rendered PrometheusRule fails promtool"
jq -e '[.groups[].rules[] | select(.alert == "ManagerOperatorWebhookLatencyHigh")] | length == 0' \
  "$WORK/prometheusrule.json" >/dev/null || die "alertOverrides.disabled did not drop the alert"
jq -e '[.groups[].rules[] | select(.alert == "ManagerOperatorNoLeader")][0] | .for == "3m" and .labels.severity == "warning" and .labels.team == "platform"' \
  "$WORK/prometheusrule.json" >/dev/null || die "alertOverrides / additionalAlertLabels not applied"
# No ServiceMonitor/PrometheusRule unless enabled; cert-manager objects only in cert-manager mode.
for set in defaults url-mode; do
  jq -e '[.items[] | select(.kind == "ServiceMonitor" or .kind == "PrometheusRule" or .kind == "Certificate" or .kind == "Issuer")] | length == 0' \
    "$WORK/applied-$set.json" >/dev/null || die "$set rendered monitoring or cert-manager objects"
done
jq -e '[.items[] | select(.kind == "ValidatingWebhookConfiguration")][0]
       | (.metadata.annotations["cert-manager.io/inject-ca-from"] == "'"$NS/$RELEASE"'-manager-operator-webhook")' \
  "$WORK/applied-cert-manager.json" >/dev/null || die "cert-manager mode: inject-ca-from annotation missing or wrong"
jq -e '[.items[] | select(.kind == "ValidatingWebhookConfiguration")][0].webhooks[0].clientConfig
       | (.url == "https://127.0.0.1:9443/validate-managerconfig") and (.service == null)' \
  "$WORK/applied-url-mode.json" >/dev/null || die "URL mode: clientConfig.url not used"
jq -e '[.items[] | select(.kind == "ValidatingWebhookConfiguration")][0].webhooks[0]
       | .failurePolicy == "Fail" and .sideEffects == "None" and .timeoutSeconds == 5 and .clientConfig.service.port == 443' \
  "$WORK/applied-defaults.json" >/dev/null || die "defaults: webhook failurePolicy/sideEffects/timeout/service"
jq -e '[.items[] | select(.kind == "ConfigMap" and .metadata.labels.grafana_dashboard == "1")] | length == 2' \
  "$WORK/applied-defaults.json" >/dev/null || die "defaults: expected 2 dashboard ConfigMaps labelled grafana_dashboard=1"
passed+=("rendered PrometheusRule passes promtool; overrides, modes and dashboards as configured")
jq -e '[.items[] | select(.kind == "FlowSchema" or .kind == "PriorityLevelConfiguration")] | length == 0' \
  "$WORK/applied-defaults.json" >/dev/null || die "defaults: leaseFlowControl is opt-in, but a FlowSchema was rendered"

# ---------------------------------------------------------------------------------------------
log "7/7 API Priority and Fairness: the ServiceAccount's Lease requests, and only those, go to the chart's FlowSchema"
# For real (not a dry-run): the chart's ServiceAccount, its FlowSchema and priority level, and a
# Role letting the ServiceAccount create and read Leases in $NS (the chart's ClusterRole would
# do, but is not needed for the classification). Every response carries the UIDs of the
# FlowSchema and the priority level the request was classified into.
server="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca_data="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
if [[ -n "$ca_data" ]]; then
  base64 -d <<<"$ca_data" >"$WORK/ca.crt"
else
  cp "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "$WORK/ca.crt"
fi
sa="$(jq -r '.items[] | select(.kind == "ServiceAccount" and (.metadata.labels["app.kubernetes.io/component"] // "") != "test") | .metadata.name' "$WORK/applied-lease-flow-control.json")"
fs_name="$(jq -r '.items[] | select(.kind == "FlowSchema") | .metadata.name' "$WORK/applied-lease-flow-control.json")"
own_pl="$(jq -r '.items[] | select(.kind == "PriorityLevelConfiguration") | .metadata.name' "$WORK/applied-lease-flow-control.json")"
[[ -n "$sa" && -n "$fs_name" && -n "$own_pl" ]] || die "the lease-flow-control render lacks the ServiceAccount, FlowSchema or PriorityLevelConfiguration"
kubectl create serviceaccount "$sa" -n "$NS" --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
kubectl create role mo-chart-test-leases -n "$NS" --verb=get,list,create --resource=leases.coordination.k8s.io \
  --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
kubectl create rolebinding mo-chart-test-leases -n "$NS" --role=mo-chart-test-leases --serviceaccount="$NS:$sa" \
  --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
token="$(kubectl create token "$sa" -n "$NS" --duration=10m)"

# classified_as METHOD PATH [BODY]: prints "<FlowSchema UID> <PriorityLevel UID> <HTTP status>".
classified_as() {
  local method="$1" path="$2" body="${3:-}" code
  local args=(-sS --cacert "$WORK/ca.crt" -H "Authorization: Bearer $token" -X "$method"
    -D "$WORK/headers" -o "$WORK/body" -w '%{http_code}')
  [[ -z "$body" ]] || args+=(-H 'Content-Type: application/json' --data "$body")
  code="$(curl "${args[@]}" "$server$path")" || return 1
  printf '%s %s %s\n' \
    "$(tr -d '\r' <"$WORK/headers" | awk -F': ' 'tolower($1) == "x-kubernetes-pf-flowschema-uid" {print $2}')" \
    "$(tr -d '\r' <"$WORK/headers" | awk -F': ' 'tolower($1) == "x-kubernetes-pf-prioritylevel-uid" {print $2}')" \
    "$code"
}
uid_of() { kubectl get "$1" "$2" -o jsonpath='{.metadata.uid}'; }
leases="/apis/coordination.k8s.io/v1/namespaces/$NS/leases"
lease_body='{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"NAME"},"spec":{"holderIdentity":"chart-test","leaseDurationSeconds":15}}'
# expect_classified WHAT PL_NAME: list, create and get Leases are classified into the chart's
# FlowSchema and PL_NAME; a ConfigMap list by the same ServiceAccount is not. The API server's
# flow-control configuration follows FlowSchema changes asynchronously: poll (bounded).
expect_classified() {
  local what="$1" pl="$2" fs_uid pl_uid got i deadline=$((SECONDS + 30))
  fs_uid="$(uid_of flowschemas.flowcontrol.apiserver.k8s.io "$fs_name")"
  pl_uid="$(uid_of prioritylevelconfigurations.flowcontrol.apiserver.k8s.io "$pl")"
  [[ -n "$fs_uid" && -n "$pl_uid" ]] || die "$what: FlowSchema $fs_name or priority level $pl not found"
  until [[ "$(classified_as GET "$leases")" == "$fs_uid $pl_uid 200" ]]; do
    ((SECONDS < deadline)) || die "$what: a Lease list by $sa was classified as '$(classified_as GET "$leases")', want '$fs_uid $pl_uid 200' (FlowSchema $fs_name, level $pl)"
    sleep 1
  done
  for i in 1 2; do
    got="$(classified_as POST "$leases" "${lease_body/NAME/chart-test-$what-$i}")"
    [[ "$got" == "$fs_uid $pl_uid 201" ]] || die "$what: Lease create classified as '$got', want '$fs_uid $pl_uid 201': $(cat "$WORK/body")"
    got="$(classified_as GET "$leases/chart-test-$what-$i")"
    [[ "$got" == "$fs_uid $pl_uid 200" ]] || die "$what: Lease get classified as '$got', want '$fs_uid $pl_uid 200'"
  done
  got="$(classified_as GET "/api/v1/namespaces/$NS/configmaps")"
  [[ "${got%% *}" != "$fs_uid" && -n "${got%% *}" ]] ||
    die "$what: a ConfigMap list by $sa was classified as '$got': the FlowSchema must match Leases only"
  log "  $what: Lease list/create/get as $sa -> FlowSchema $fs_name ($fs_uid), level $pl ($pl_uid); a ConfigMap list is not"
}
# The chart's own level (the lease-flow-control value set).
"$HELM" template "$RELEASE" "$CHART" -n "$NS" -f "$HERE/values/lease-flow-control.yaml" \
  --show-only templates/flowcontrol.yaml >"$WORK/flowcontrol-own.yaml" || die "helm template (lease-flow-control)"
kubectl apply --server-side --field-manager=mo-chart-test -f "$WORK/flowcontrol-own.yaml" >/dev/null
expect_classified own-level "$own_pl"
# The default: the built-in leader-election level (the same FlowSchema, re-pointed).
"$HELM" template "$RELEASE" "$CHART" -n "$NS" --set leaseFlowControl.enabled=true \
  --show-only templates/flowcontrol.yaml >"$WORK/flowcontrol-builtin.yaml" || die "helm template (leaseFlowControl.enabled=true)"
kubectl apply --server-side --field-manager=mo-chart-test -f "$WORK/flowcontrol-builtin.yaml" >/dev/null
expect_classified builtin-level leader-election
passed+=("APF: Lease requests with the ServiceAccount's token classified by the chart's FlowSchema (own level, and built-in leader-election)")

log "OK in $((SECONDS - start))s:"
for p in "${passed[@]}"; do log "  - $p"; done
