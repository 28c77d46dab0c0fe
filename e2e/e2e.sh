#!/usr/bin/env bash
# End-to-end scenario (docs/design.md §8): the chart installed for real, two operator replicas as
# local processes running with a token of the chart's ServiceAccount (so with exactly the chart's
# RBAC), Prometheus scraping both, everything driven with kubectl, and every dashboard panel
# query checked against what Prometheus scraped.
#
#   hack/with-cluster.sh e2e/e2e.sh                     # fresh control plane, torn down afterwards
#   source /tmp/some-cluster/env && e2e/e2e.sh         # an existing one (cleans up after itself)
#
# Environment:
#   KUBECONFIG          admin kubeconfig of the control plane (with-cluster.sh exports it)
#   MO_BIN_DIR          kubectl (default: hack/tools.sh bindir)
#   MO_OBS_BIN_DIR      helm, prometheus (default: hack/tools-observability.sh bindir)
#   MO_OPERATOR_BIN     operator binary (default: target/debug/manager-operator, built if missing)
#   MO_E2E_DIR          work dir for logs, Prometheus data, kubeconfigs (default: a new temp dir;
#                       kept on failure and printed)
#   MO_E2E_KEEP=1       leave processes and objects in place at the end (debugging)
#   MO_E2E_ALLOW_EMPTY=1  report empty dashboard queries without failing
#   MO_E2E_DOC          also write the user-path transcript (helm install, kubectl get mc,
#                       kubectl describe mc) to this file on success, e.g. docs/e2e-output.md;
#                       it is always written to \$MO_E2E_DIR/e2e-output.md
#
# Steps (each logged as "==> N/10"):
#    1 tools and binary          6 valid and broken ManagerConfigs, admission denials
#    2 helm install (URL mode)   7 kubectl get mc / describe: Ready, reasons, Events; heal one
#    3 SA token kubeconfig       8 hook calls observed; kill -9 the leader; takeover measured
#    4 hook server, webhook LB   9 Prometheus: every dashboard panel query returns data
#    5 two replicas, Prometheus 10 summary
#
# No fixed sleeps: every wait polls a condition with a timeout and fails naming it. Every process
# started here is recorded by pid and stopped on exit (trap); on failure the log tails of each,
# the ManagerConfigs and recent Events are printed and the work dir is kept.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CHART="$ROOT/charts/manager-operator"

RELEASE=mo
OP_NS=manager-operator            # release namespace
FULLNAME="$RELEASE-manager-operator"
SA="$FULLNAME"                    # the chart's ServiceAccount
NS=e2e-team                       # where the ManagerConfigs live
LEASE_NS_MISSING=no-such-namespace   # samples/broken/lease-namespace-missing.yaml
SCRAPE=2s

start_all=$SECONDS
# The original stderr, for the exit trap: a signal that lands while a polled condition runs
# with its output sent to /dev/null would otherwise silence the failure report.
exec {STDERR_FD}>&2
step() { printf '\n[e2e] ==> %s\n' "$*" >&2; }
log() { printf '[e2e] %s\n' "$*" >&2; }
die() {
  printf '\n[e2e] FAIL: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
step "1/10 tools and binary"
MO_BIN_DIR="${MO_BIN_DIR:-$("$ROOT/hack/tools.sh" bindir)}"
MO_OBS_BIN_DIR="${MO_OBS_BIN_DIR:-$("$ROOT/hack/tools-observability.sh" bindir)}"
KUBECTL="$MO_BIN_DIR/kubectl"
HELM="$MO_OBS_BIN_DIR/helm"
PROMETHEUS="$MO_OBS_BIN_DIR/prometheus"
OPERATOR="${MO_OPERATOR_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/manager-operator}"
[[ -n "${KUBECONFIG:-}" && -f "$KUBECONFIG" ]] || die "KUBECONFIG must name the admin kubeconfig (run me under hack/with-cluster.sh)"
ADMIN_KUBECONFIG="$KUBECONFIG"
for b in "$KUBECTL" "$HELM" "$PROMETHEUS"; do [[ -x "$b" ]] || die "missing $b"; done
for c in curl jq python3; do command -v "$c" >/dev/null || die "$c is required"; done
if [[ ! -x "$OPERATOR" && -z "${MO_OPERATOR_BIN:-}" ]]; then
  log "building the operator (cargo build)"
  (cd "$ROOT" && cargo build -q --bin manager-operator)
fi
[[ -x "$OPERATOR" ]] || die "no operator binary at $OPERATOR"
"$OPERATOR" run --help >/dev/null 2>&1 || die "$OPERATOR has no working \`run\` command"

WORK="${MO_E2E_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mo-e2e.XXXXXX")}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
log "work dir: $WORK"

k() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }          # admin (setup, checks)
ksa() { "$KUBECTL" --kubeconfig "$WORK/sa.kubeconfig" "$@"; }      # the operator's identity

# shellcheck source=hack/lib/ports.sh
source "$ROOT/hack/lib/ports.sh"
read -r P_PROXY P_HOOK P_PROM M_A H_A W_A M_B H_B W_B < <(free_ports 127.0.0.1 9)
log "ports: webhook LB $P_PROXY, hook $P_HOOK, prometheus $P_PROM, replica a (metrics $M_A, health $H_A, webhook $W_A), replica b ($M_B, $H_B, $W_B)"
WEBHOOK_URL="https://127.0.0.1:$P_PROXY/validate-managerconfig"

# Processes started here, by name -> pid; stopped by pid only.
declare -A PIDS=()
# shellcheck source=e2e/lib/scenario.sh
source "$HERE/lib/scenario.sh"

# shellcheck disable=SC2317 # invoked via trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  exec 1>&"$STDERR_FD" 2>&"$STDERR_FD"
  if ((rc == 130 || rc == 143)); then log "interrupted (exit code $rc): stopping everything"; fi
  if ((rc != 0)); then
    log "FAILED — logs in $WORK; last lines:"
    local f
    for f in "$WORK"/operator-*.log "$WORK"/prometheus.log "$WORK"/proxy.log "$WORK"/hook-server.log; do
      [[ -f "$f" ]] || continue
      printf '\n----- %s (last 25 lines) -----\n' "$f" >&2
      tail -n 25 "$f" >&2
    done
    printf '\n----- kubectl get mc -n %s -o wide -----\n' "$NS" >&2
    k get mc -n "$NS" -o wide >&2 2>&1 || true
    printf '\n----- kubectl get events -n %s (last 20) -----\n' "$NS" >&2
    k get events -n "$NS" --sort-by=.lastTimestamp 2>&1 | tail -n 20 >&2 || true
    local n
    for n in "${!PIDS[@]}"; do
      kill -0 "${PIDS[$n]}" 2>/dev/null || printf '[e2e] process %s (pid %s) had already exited\n' "$n" "${PIDS[$n]}" >&2
    done
  fi
  if [[ "${MO_E2E_KEEP:-}" == 1 ]]; then
    log "MO_E2E_KEEP=1: processes ${PIDS[*]:-none} and objects left in place"
    exit "$rc"
  fi
  local n
  for n in "${!PIDS[@]}"; do stop "$n"; done
  k delete mc -n "$NS" --all --wait=false >/dev/null 2>&1 || true
  "$HELM" uninstall "$RELEASE" -n "$OP_NS" --kubeconfig "$ADMIN_KUBECONFIG" >/dev/null 2>&1 || true
  k delete namespace "$NS" "$LEASE_NS_MISSING" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  ((rc != 0)) || [[ -n "${MO_E2E_DIR:-}" ]] || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# Transcript of the user's path (README): the commands as a user types them, with real output.
DOC="$WORK/e2e-output.md"
doc() { printf '%s\n' "$@" >>"$DOC"; }
doc_cmd() { # TITLE DISPLAYED-COMMAND FILE-WITH-OUTPUT
  doc "" "## $1" "" '```text' "\$ $2"
  cat "$3" >>"$DOC"
  doc '```'
}
cat >"$DOC" <<EOF
# e2e output: the user's path, captured from a real run

Generated by \`e2e/e2e.sh\` (\`MO_E2E_DOC=docs/e2e-output.md make e2e\`) on $(date -u +%Y-%m-%dT%H:%M:%SZ):
the chart installed into a real kube-apiserver, two operator replicas running as local processes
with a token of the chart's ServiceAccount, ManagerConfigs from samples/ applied with kubectl
(their hook URLs pointed at the test hook server on 127.0.0.1). Ports are the ones picked for
that run (the webhook is called at https://127.0.0.1:PORT in URL mode).
EOF

# ---------------------------------------------------------------------------------------------
step "2/10 helm install the chart for real (URL mode: $WEBHOOK_URL)"
# URL mode: the API server calls the webhook on 127.0.0.1 through the local TCP load balancer
# (tcp-proxy.py, the stand-in for the webhook Service), never a Service IP.
"$HELM" install "$RELEASE" "$CHART" --kubeconfig "$ADMIN_KUBECONFIG" -n "$OP_NS" --create-namespace \
  -f "$HERE/values/url-mode.yaml" --set "webhook.url=$WEBHOOK_URL" >"$WORK/helm-install.log" 2>&1 ||
  { cat "$WORK/helm-install.log" >&2; die "helm install"; }
doc_cmd "Install the chart" \
  "helm install $RELEASE charts/manager-operator -n $OP_NS --create-namespace -f e2e/values/url-mode.yaml --set webhook.url=$WEBHOOK_URL" \
  "$WORK/helm-install.log"
"$HELM" status "$RELEASE" -n "$OP_NS" --kubeconfig "$ADMIN_KUBECONFIG" | sed -n '1,8p' >&2
k wait --for=condition=Established --timeout=60s crd/managerconfigs.manager-operator.io >/dev/null
k get -n "$OP_NS" deploy,svc,sa,role,rolebinding,pdb,cm -o name | sed 's/^/[e2e]   /' >&2
k get clusterrole,clusterrolebinding,validatingwebhookconfiguration -o name | grep "$FULLNAME" | sed 's/^/[e2e]   /' >&2
# The Deployment's pods cannot run here (no scheduler, no kubelet, no image): the same binary
# runs as local processes below, with the Deployment's own arguments.
k get deploy -n "$OP_NS" "$FULLNAME" -o json | jq -r '.spec.template.spec.containers[0].args[]' >"$WORK/chart-args"
log "the chart's container args: $(tr '\n' ' ' <"$WORK/chart-args")"

# ---------------------------------------------------------------------------------------------
step "3/10 kubeconfig with a token of the chart's ServiceAccount $OP_NS/$SA"
server="$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca_data="$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
if [[ -z "$ca_data" ]]; then
  ca_data="$(base64 -w0 <"$(k config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')")"
fi
token="$(k create token "$SA" -n "$OP_NS" --duration=2h)"
cat >"$WORK/sa.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$server", certificate-authority-data: "$ca_data"}}]
users: [{name: $SA, user: {token: "$token"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $SA, namespace: $OP_NS}}]
current-context: e2e
EOF
chmod 600 "$WORK/sa.kubeconfig"
whoami="$(ksa auth whoami -o jsonpath='{.status.userInfo.username}')"
[[ "$whoami" == "system:serviceaccount:$OP_NS:$SA" ]] || die "token kubeconfig authenticates as $whoami"
log "the operator will run as $whoami"
[[ "$(ksa auth can-i '*' '*' --all-namespaces 2>/dev/null || true)" == no ]] || die "the chart's ServiceAccount is cluster-admin?"
[[ "$(ksa auth can-i list secrets -n kube-system 2>/dev/null || true)" == no ]] || die "the chart's ServiceAccount may list Secrets cluster-wide"
log "  can-i '*' '*': no; list secrets in kube-system: no"

# ---------------------------------------------------------------------------------------------
step "4/10 hook server (127.0.0.1:$P_HOOK) and webhook load balancer (127.0.0.1:$P_PROXY -> $W_A, $W_B)"
: >"$WORK/hook-calls.jsonl"
spawn hook "$WORK/hook-server.log" python3 "$HERE/lib/hook-server.py" "$P_HOOK" "$WORK/hook-calls.jsonl"
spawn proxy "$WORK/proxy.log" python3 "$HERE/lib/tcp-proxy.py" "$P_PROXY" "$W_A" "$W_B"
wait_until 20 "hook server" curl -fsS -X POST -d '{}' "http://127.0.0.1:$P_HOOK/ping"

# ---------------------------------------------------------------------------------------------
step "5/10 two operator replicas (e2e-a, e2e-b) with the chart's args and RBAC; Prometheus"
operator_args() { # IDENTITY METRICS HEALTH WEBHOOK
  local a
  while IFS= read -r a; do
    case "$a" in
      --identity=*) printf '%s\n' "--identity=$1" ;;
      # The kubelet expands $(POD_NAMESPACE) from the downward API; here it is the release's.
      --membership-namespace=*) printf '%s\n' "--membership-namespace=$OP_NS" ;;
      --metrics-bind-address=*) printf '%s\n' "--metrics-bind-address=127.0.0.1:$2" ;;
      --health-probe-bind-address=*) printf '%s\n' "--health-probe-bind-address=127.0.0.1:$3" ;;
      --webhook-bind-address=*) printf '%s\n' "--webhook-bind-address=127.0.0.1:$4" ;;
      *) printf '%s\n' "$a" ;;
    esac
  done <"$WORK/chart-args"
  printf '%s\n' "--kubeconfig=$WORK/sa.kubeconfig"
}
start_replica() { # ID METRICS HEALTH WEBHOOK
  local args=()
  mapfile -t args < <(operator_args "e2e-$1" "$2" "$3" "$4")
  # KUBECONFIG is unset so nothing can fall back to the admin credentials.
  spawn "op-$1" "$WORK/operator-$1.log" env -u KUBECONFIG POD_NAME="e2e-$1" RUST_LOG="${RUST_LOG:-info}" "$OPERATOR" "${args[@]}"
  log "  replica e2e-$1: pid ${PIDS[op-$1]}: $OPERATOR ${args[*]}"
}
start_replica a "$M_A" "$H_A" "$W_A"
start_replica b "$M_B" "$H_B" "$W_B"
wait_until 90 "replica e2e-a /readyz" curl -fsS "http://127.0.0.1:$H_A/readyz"
wait_until 90 "replica e2e-b /readyz" curl -fsS "http://127.0.0.1:$H_B/readyz"
for p in "$H_A" "$H_B"; do curl -fsS "http://127.0.0.1:$p/healthz" >/dev/null || die "healthz on $p"; done
log "  both replicas ready (/healthz, /readyz)"
ca_bundle="$(k get validatingwebhookconfiguration "$FULLNAME" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
[[ -n "$ca_bundle" ]] || die "the operator did not inject its CA into the chart's ValidatingWebhookConfiguration"
k get secret -n "$OP_NS" "$FULLNAME-webhook-tls" >/dev/null || die "no self-managed certificate Secret"
log "  CA injected into validatingwebhookconfiguration/$FULLNAME; Secret $OP_NS/$FULLNAME-webhook-tls written"

mkdir -p "$WORK/prometheus"
cat >"$WORK/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: $SCRAPE
  evaluation_interval: $SCRAPE
rule_files:
  - $CHART/files/alerts.yaml
scrape_configs:
  - job_name: manager-operator
    # The labels a ServiceMonitor gives each target (the dashboards group by pod), and its
    # honorLabels: true (the chart sets it) so the metrics' own namespace label wins.
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$M_A"]
        labels: {pod: e2e-a, namespace: "$OP_NS"}
      - targets: ["127.0.0.1:$M_B"]
        labels: {pod: e2e-b, namespace: "$OP_NS"}
EOF
spawn prometheus "$WORK/prometheus.log" "$PROMETHEUS" --config.file="$WORK/prometheus/prometheus.yml" \
  --storage.tsdb.path="$WORK/prometheus/data" --web.listen-address="127.0.0.1:$P_PROM" \
  --storage.tsdb.retention.time=1d --log.level=warn
PROM="http://127.0.0.1:$P_PROM"
wait_until 60 "Prometheus ready" curl -fsS "$PROM/-/ready"
targets_up() { [[ "$(curl -fsS "$PROM/api/v1/targets" | jq '[.data.activeTargets[] | select(.health == "up")] | length')" == 2 ]]; }
wait_until 30 "both replicas scraped" targets_up
log "  Prometheus $PROM scrapes both replicas every $SCRAPE"
scenario_start=$SECONDS

# ---------------------------------------------------------------------------------------------
step "6/10 ManagerConfigs: valid ones, broken ones, and ones the admission webhook refuses"
k create namespace "$NS" --dry-run=client -o yaml | k apply --server-side -f - >/dev/null
# Tenant service accounts: what each config's workers may watch (impersonated by the operator).
# hook-reader gets its RoleBinding only later (step 7): `hooked` first fails with
# WatchForbidden and must heal by itself once the RBAC is granted.
k apply --server-side -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: hook-reader}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: inventory-sync}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader}
rules:
  - {apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: configmap-readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
  - {kind: ServiceAccount, name: default, namespace: $NS}
  - {kind: ServiceAccount, name: inventory-sync, namespace: $NS}
---
# lease-namespace-missing elects on a Lease in another namespace: its service account must
# itself be allowed to use Leases there (docs/security.md), or it fails with LeaseForbidden
# before the missing namespace is even noticed.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-sample-leases}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-sample-leases}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-sample-leases}
subjects:
  - {kind: ServiceAccount, name: default, namespace: $NS}
EOF
# Objects to reconcile, one of them makes the hook answer 500.
for i in 1 2 3; do
  k create configmap -n "$NS" "inventory-$i" --from-literal=n="$i" --dry-run=client -o yaml |
    k label --local -f - app=inventory -o yaml | k apply --server-side -f - >/dev/null
done
k create configmap -n "$NS" inventory-poison --from-literal=n=0 --dry-run=client -o yaml |
  k label --local -f - app=inventory e2e.manager-operator.io/fail=true -o yaml | k apply --server-side -f - >/dev/null

# hooked: our hook server, fast lease timings (so the failover below is quick).
k apply --server-side -n "$NS" -f - <<EOF
apiVersion: manager-operator.io/v1alpha1
kind: ManagerConfig
metadata: {name: hooked}
spec:
  serviceAccountName: hook-reader
  leaderElection: {leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 1s}
  workers:
    - name: configmaps
      concurrency: 2
      watch: {apiVersion: v1, kind: ConfigMap, labelSelector: app=inventory}
      hook: {url: "http://127.0.0.1:$P_HOOK/sync", timeout: 2s}
EOF
# The samples as shipped, except that their hook URLs (cluster DNS names that do not resolve
# here) point at the hook server on 127.0.0.1: no traffic leaves loopback, not even DNS.
for s in samples/minimal.yaml samples/tight-timings.yaml samples/full.yaml samples/broken/lease-namespace-missing.yaml; do
  log "  kubectl apply -f $s   (hook URLs -> http://127.0.0.1:$P_HOOK/sync)"
  sed -E "s#^( *url: ).*#\1http://127.0.0.1:$P_HOOK/sync#" "$ROOT/$s" | k apply --server-side -n "$NS" -f - >&2
done
# Refused at admission: by the CRD's CEL rules or by the webhook; the message names the field.
denied=0
for s in "$ROOT"/samples/invalid-*.yaml "$ROOT"/samples/broken/hook-metadata-address.yaml; do
  if k apply --server-side -n "$NS" -f "$s" >"$WORK/apply.out" 2>&1; then
    die "$(basename "$s") was admitted"
  fi
  grep -q 'spec\.' "$WORK/apply.out" || die "$(basename "$s"): refusal does not name a field: $(cat "$WORK/apply.out")"
  log "  refused $(basename "$s"): $(grep -o 'spec\.[^ :]*' "$WORK/apply.out" | sort -u | tr '\n' ' ')"
  denied=$((denied + 1))
done
# The webhook (not only CEL) saw traffic: a hook URL policy violation only it can catch.
grep -qi 'webhook\|denied the request' "$WORK/apply.out" || die "hook-metadata-address was not refused by the webhook: $(cat "$WORK/apply.out")"
log "  hook-metadata-address refused by the admission webhook: $(grep -o 'admission webhook[^:]*' "$WORK/apply.out" | head -1)"
cp "$WORK/apply.out" "$WORK/apply-refused.txt"
# One Lease, one ManagerConfig: a second config naming minimal's Lease is refused by the webhook
# (from the operator's cache, so wait until the cache has minimal; server dry-run stores nothing).
sed -E -e "s#^( *url: ).*#\1http://127.0.0.1:$P_HOOK/sync#" -e 's#^  name: minimal#  name: minimal-twin#' \
  -e 's#^spec:$#spec:\n  leaderElection: {leaseName: minimal}#' "$ROOT/samples/minimal.yaml" >"$WORK/twin.yaml"
grep -q 'leaseName: minimal' "$WORK/twin.yaml" || die "could not build the twin config: $(cat "$WORK/twin.yaml")"
twin_refused=0
for _ in $(seq 1 60); do
  if ! k apply --server-side --dry-run=server -n "$NS" -f "$WORK/twin.yaml" >"$WORK/twin.out" 2>&1; then
    twin_refused=1
    break
  fi
  sleep 0.5 # the operator's cache has not seen minimal yet; ask again
done
((twin_refused == 1)) || die "a second config on minimal's Lease was admitted for 30 s"
grep -q "spec.leaderElection.leaseName: Lease $NS/minimal is already used by ManagerConfig $NS/minimal" "$WORK/twin.out" ||
  die "twin refused for another reason: $(cat "$WORK/twin.out")"
log "  minimal-twin (leaseName: minimal) refused by the admission webhook: Lease already used"
denied=$((denied + 1))

# ---------------------------------------------------------------------------------------------
step "7/10 kubectl get mc / describe: Ready, reasons, leaders, Events; broken configs heal"
ready_is() { # NAME STATUS [REASON]
  local got
  got="$(k get mc -n "$NS" "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}')"
  [[ "$got" == "$2/${3:-}"* ]]
}
for n in minimal tight-timings; do wait_until 90 "$n Ready=True" ready_is "$n" True Running; done
wait_until 90 "hooked Ready=False WatchForbidden (hook-reader may not list configmaps yet)" ready_is hooked False WatchForbidden
wait_until 90 "lease-namespace-missing Ready=False LeaseNamespaceNotFound" ready_is lease-namespace-missing False LeaseNamespaceNotFound
# full.yaml's second worker watches Secrets, which inventory-sync may not list: the operator's
# broader RBAC never leaks to tenants.
wait_until 90 "inventory-sync (samples/full.yaml) Ready=False WatchForbidden" ready_is inventory-sync False WatchForbidden
k get mc -n "$NS" >"$WORK/get-mc-failing.txt"
k get mc -n "$NS" -o wide | tee "$WORK/get-mc.txt" >&2
head -1 "$WORK/get-mc.txt" | grep -qE 'READY +REASON +LEADER +WORKERS +AGE' || die "kubectl get mc lacks READY REASON LEADER WORKERS AGE columns"
k describe mc -n "$NS" lease-namespace-missing >"$WORK/describe-broken.txt"
grep -q LeaseNamespaceNotFound "$WORK/describe-broken.txt" || die "describe shows no LeaseNamespaceNotFound Event"
sed -n '/^Events:/,$p' "$WORK/describe-broken.txt" >&2
doc_cmd "ManagerConfigs: Ready ones, and broken ones with their reason" "kubectl get mc -n $NS" "$WORK/get-mc-failing.txt"
doc_cmd "A broken one explains itself" "kubectl describe mc -n $NS lease-namespace-missing" "$WORK/describe-broken.txt"

prom_has() { # PROMQL: true when the instant query returns at least one sample
  [[ "$(curl -fsS --get "$PROM/api/v1/query" --data-urlencode "query=$1" | jq '.data.result | length')" -gt 0 ]]
}
# Heal hooked by granting its service account the RBAC it lacks, once Prometheus has seen its
# failures grow (so the dashboards can show them: a counter first scraped at 1 shows no increase).
wait_until 60 "Prometheus sees hooked's WatchForbidden failures increase" \
  prom_has "increase(manager_operator_startup_failures_total{namespace=\"$NS\",name=\"hooked\",reason=\"WatchForbidden\"}[1m]) > 0"
log "  healing: granting hook-reader list/watch on configmaps"
k create rolebinding -n "$NS" hook-reader-configmaps --role=configmap-reader --serviceaccount="$NS:hook-reader" >/dev/null
t0=$SECONDS
wait_until 120 "hooked heals to Ready=True Running" ready_is hooked True Running
log "  hooked healed after $((SECONDS - t0))s"
log "  healing: creating namespace $LEASE_NS_MISSING"
k create namespace "$LEASE_NS_MISSING" >/dev/null
t0=$SECONDS
wait_until 120 "lease-namespace-missing heals to Ready=True" ready_is lease-namespace-missing True Running
log "  lease-namespace-missing healed after $((SECONDS - t0))s"
has_recovered() { k get events -n "$NS" --field-selector "involvedObject.name=$1,reason=Recovered" -o name | grep -q .; }
for n in hooked lease-namespace-missing; do
  wait_until 30 "a Recovered Event for $n" has_recovered "$n"
done
leader="$(k get mc -n "$NS" hooked -o jsonpath='{.status.leader}')"
[[ "$leader" == e2e-a || "$leader" == e2e-b ]] || die "hooked: status.leader is '$leader'"
k get mc -n "$NS" >"$WORK/get-mc-healed.txt"
k describe mc -n "$NS" hooked >"$WORK/describe-hooked.txt"
sed -n '/^Events:/,$p' "$WORK/describe-hooked.txt" >&2
doc_cmd "After the RBAC is granted and the namespace created, both heal by themselves" "kubectl get mc -n $NS" "$WORK/get-mc-healed.txt"
doc_cmd "The healed one's history" "kubectl describe mc -n $NS hooked" "$WORK/describe-hooked.txt"
doc_cmd "Refused at admission (the webhook's hook policy)" "kubectl apply --server-side -n $NS -f samples/broken/hook-metadata-address.yaml" "$WORK/apply-refused.txt"

# ---------------------------------------------------------------------------------------------
step "8/10 hook calls, then kill -9 the leader of hooked ($leader) and watch the other take over"
calls_from() { jq -s --arg h "$1" '[.[] | select(.manager == "'"$NS"'/hooked" and .holder == $h)] | length' "$WORK/hook-calls.jsonl"; }
has_calls_from() { (($(calls_from "$1") > 0)); }
wait_until 60 "hook calls from $leader" has_calls_from "$leader"
jq -s -c '[.[] | select(.manager == "'"$NS"'/hooked")] | group_by(.status) | map({status: .[0].status, calls: length})' "$WORK/hook-calls.jsonl" >&2
old_token="$(jq -s '[.[] | select(.manager == "'"$NS"'/hooked") | .fencingToken] | max' "$WORK/hook-calls.jsonl")"
victim="op-${leader#e2e-}"
other="$([[ "$leader" == e2e-a ]] && echo e2e-b || echo e2e-a)"
# The standby's per-config counters are scraped (at 0) before the failover, so the dashboards
# count the transition.
wait_until 30 "Prometheus has $other's leader_transitions_total for hooked" \
  prom_has "manager_operator_leader_transitions_total{namespace=\"$NS\",name=\"hooked\",pod=\"$other\"}"
log "  kill -9 $leader (pid ${PIDS[$victim]}); fencing token so far: $old_token"
t_kill=$SECONDS
kill -KILL "${PIDS[$victim]}"
wait "${PIDS[$victim]}" 2>/dev/null || true
unset "PIDS[$victim]"
leader_is() { [[ "$(k get mc -n "$NS" hooked -o jsonpath='{.status.leader}')" == "$1" ]] && ready_is hooked True; }
wait_until 60 "$other leads hooked and it is Ready" leader_is "$other"
takeover=$((SECONDS - t_kill))
# Touch an object so the new leader dispatches.
k label configmap -n "$NS" inventory-1 e2e/touched="$(date +%s)" --overwrite >/dev/null
wait_until 60 "hook calls from $other" has_calls_from "$other"
new_token="$(jq -s --arg h "$other" '[.[] | select(.manager == "'"$NS"'/hooked" and .holder == $h) | .fencingToken] | min' "$WORK/hook-calls.jsonl")"
((new_token > old_token)) || die "fencing token did not increase on takeover ($old_token -> $new_token)"
stale="$(jq -s '[.[] | select(.stale)] | length' "$WORK/hook-calls.jsonl")"
((stale == 0)) || die "$stale hook calls carried a stale fencing token"
log "  $other took over in ${takeover}s (leaseDuration 4s); fencing token $old_token -> $new_token; no stale calls"
k get mc -n "$NS" >&2
# The killed replica comes back as a standby (same identity).
if [[ "$leader" == e2e-a ]]; then start_replica a "$M_A" "$H_A" "$W_A"; else start_replica b "$M_B" "$H_B" "$W_B"; fi
wait_until 90 "restarted $leader /readyz" curl -fsS "http://127.0.0.1:$([[ "$leader" == e2e-a ]] && echo "$H_A" || echo "$H_B")/readyz"
log "  $leader restarted and ready"

# ---------------------------------------------------------------------------------------------
step "9/10 Prometheus: every dashboard panel query returns data"
# Wait for data, not for time: the restarted replica scraped, the takeover and its hook calls
# visible in Prometheus.
restarted_at="$(date +%s)"
wait_until 30 "both replicas scraped after the restart" \
  prom_has "count(timestamp(up{job=\"manager-operator\"} == 1) > $restarted_at) == 2"
# The takeover as Prometheus saw it: the counter keeps it even after placement hands hooked
# back to the restarted replica (which can happen between two scrapes).
wait_until 30 "Prometheus saw $other take hooked over" prom_has "manager_operator_leader_transitions_total{namespace=\"$NS\",name=\"hooked\",pod=\"$other\"} >= 1"
window="$((SECONDS - scenario_start + 30))s"
log "  substitutions: \$namespace=$NS \$name=hooked \$__rate_interval=\$__range=$window"
# What the scenario did must show up, not only "some series": minimum values per panel.
panel_args=("$PROM" "$NS" hooked "$window"
  --expect "manager-detail/Startup failures in the time range>=1"
  --expect "manager-detail/Startup failures by reason>=1"
  --expect "manager-detail/Leader transitions in the time range>=1"
  --expect "manager-detail/Reconcile error ratio by worker>0"
  --expect "overview/Denied in the time range>=1"
  --expect "overview/Managers failing>=1"
  --expect "overview/Managers ready>=4"
  --expect "overview/Operator replicas scraped>=2"
  --expect "overview/Replicas seen, per replica>=2")
[[ "${MO_E2E_ALLOW_EMPTY:-}" == 1 ]] && panel_args+=(--allow-empty)
dash_ok() { python3 "$HERE/lib/check-dashboards.py" "${panel_args[@]}" >"$WORK/dashboards.txt" 2>&1; }
# Rate windows fill in over a few scrapes: poll (bounded) until every panel has data.
deadline=$((SECONDS + 30))
until dash_ok; do
  if ((SECONDS >= deadline)); then
    cat "$WORK/dashboards.txt" >&2
    die "dashboard queries: see above (empty panels and unmet expectations are named)"
  fi
  sleep 2 # one scrape interval
done
cat "$WORK/dashboards.txt" >&2

# ---------------------------------------------------------------------------------------------
step "10/10 summary"
duration=$((SECONDS - start_all))
log "chart installed (URL mode) and used under its own RBAC ($whoami)"
log "Ready: hooked and lease-namespace-missing (after healing), minimal, tight-timings; WatchForbidden: inventory-sync; refused at admission: $denied"
log "failover: ${takeover}s; dashboards: $(tail -1 "$WORK/dashboards.txt")"
doc "" "Scenario: OK in ${duration}s (failover ${takeover}s); $(tail -1 "$WORK/dashboards.txt")."
if [[ -n "${MO_E2E_DOC:-}" ]]; then
  cp "$DOC" "$MO_E2E_DOC"
  log "user-path transcript written to $MO_E2E_DOC"
fi
if [[ -n "${MO_E2E_DIR:-}" ]]; then log "OK in ${duration}s (logs: $WORK)"; else log "OK in ${duration}s"; fi
