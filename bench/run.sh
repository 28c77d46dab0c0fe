#!/usr/bin/env bash
# Benchmarks (`make bench`): every scenario on its own fresh local control plane,
# raw data in bench/results/*.csv, the report in docs/benchmarks.md.
#
#   bench/run.sh                    full run (about an hour on 2 cores)
#   BENCH_QUICK=1 bench/run.sh      quick variant (a few minutes): fewer trials and objects
#
# Environment:
#   BENCH_SCENARIOS  subset, space-separated (default: failover handoff surfacing admission
#                    scale scaleout dispatch seed peer-failover peer-admission peer-memory); the report is rendered from every CSV present.
#                    seed runs the controller-runtime peers of bench/peers/, built
#                    with Go from the Go module proxy by bench/peers/build.sh (first run only)
#   BENCH_SEED_WINDOW  seconds a controller-runtime peer is given to exit in seed (default 30)
#   BENCH_PROFILE    1 (default) records perf profiles of the operator when `perf` is
#                    installed, each in an extra run after the measured ones (admission at 64
#                    concurrent, a second steady-state window at scale's largest size, dispatch
#                    at concurrency 8), so no reported number comes from a profiled process
#   BENCH_SCALE_SIZES  override the scale cases: N[xR][*K] = N configs on R replicas (default
#                    1), K runs (default 1), e.g. "1000 1000x2*3 2000x3"
#   BENCH_SCALEOUT_CONFIGS, BENCH_SCALEOUT_TRIALS  override scaleout's configs and the trials
#                    per signal
#   BENCH_NOTE       free text recorded with the machine description (e.g. "shared machine")
#   BENCH_RESULTS    CSV directory (default bench/results); BENCH_REPORT report path
#                    (default docs/benchmarks.md); BENCH_KEEP_WORK=1 keeps logs and perf data;
#                    BENCH_SKIP_BUILD=1 uses the release binaries already in the target directory;
#                    BENCH_OPERATOR_BIN another operator binary (A/B comparisons)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
QUICK="${BENCH_QUICK:-0}"
RESULTS="${BENCH_RESULTS:-$HERE/results}"
REPORT="${BENCH_REPORT:-$ROOT/docs/benchmarks.md}"
SCENARIOS="${BENCH_SCENARIOS:-failover handoff surfacing admission scale scaleout dispatch seed peer-failover peer-admission peer-memory}"
PROFILE="${BENCH_PROFILE:-1}"
CARGO="${CARGO:-cargo}"
NS=bench
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if [[ "$QUICK" == 1 ]]; then
  TRIALS=5
  SURFACING_CONFIGS=20
  ADMISSION_SECONDS=3
  ADMISSION_WARMUP=0.5
  ADMISSION_BURST=100
  SCALE_SIZES="100 100x2 150x3"
  SCALE_SETTLE=5
  SCALE_WINDOW=20
  SCALEOUT_CONFIGS=60
  SCALEOUT_TRIALS=1
  DISPATCH_OBJECTS=2000
  SEED_TRIALS=2
  PEER_ROUNDS=3
  PEER_REPS=1
  PEER_SETTLE=5
else
  TRIALS=20
  SURFACING_CONFIGS=100
  ADMISSION_SECONDS=10
  ADMISSION_WARMUP=1
  ADMISSION_BURST=400
  SCALE_SIZES="100 500 1000 1000x2*3 2000x3"
  SCALE_SETTLE=30
  SCALE_WINDOW=60
  SCALEOUT_CONFIGS=300
  SCALEOUT_TRIALS=3
  DISPATCH_OBJECTS=10000
  SEED_TRIALS=5
  PEER_ROUNDS=10
  PEER_REPS=2
  PEER_SETTLE=10
fi
SEED_WINDOW="${BENCH_SEED_WINDOW:-30}"
SCALE_SIZES="${BENCH_SCALE_SIZES:-$SCALE_SIZES}"
SCALEOUT_CONFIGS="${BENCH_SCALEOUT_CONFIGS:-$SCALEOUT_CONFIGS}"
SCALEOUT_TRIALS="${BENCH_SCALEOUT_TRIALS:-$SCALEOUT_TRIALS}"
ADMISSION_LEVELS="1,16,64"
DISPATCH_LEVELS="1,8,32"

log() { printf '[bench] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building the operator and the harness (release)"
  "$CARGO" build --release --manifest-path "$ROOT/Cargo.toml" --bin manager-operator
  "$CARGO" build --release --manifest-path "$HERE/Cargo.toml"
fi
OPERATOR="${BENCH_OPERATOR_BIN:-$CARGO_TARGET_DIR/release/manager-operator}"
BENCH="$CARGO_TARGET_DIR/release/mo-bench"

MO_BIN_DIR="$("$ROOT/hack/tools.sh" bindir)"
export MO_BIN_DIR
KUBECTL="$MO_BIN_DIR/kubectl"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mo-bench.XXXXXX")"
CLUSTER=""

cluster_down() {
  if [[ -n "$CLUSTER" ]]; then
    "$ROOT/hack/cluster.sh" down "$CLUSTER" || log "WARNING: teardown of $CLUSTER failed"
    CLUSTER=""
  fi
}

# shellcheck disable=SC2317 # invoked via trap
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  cluster_down
  if [[ "${BENCH_KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then
    log "logs and scratch files kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Scale opens two watches per ManagerConfig; make sure descriptors are not the limit.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]]; then hard=1048576; fi
ulimit -n "$hard" 2>/dev/null || log "could not raise the open-files limit (now $(ulimit -n))"

mkdir -p "$RESULTS" "$WORK/logs"

mem_available_mib() { awk '/^MemAvailable:/ {printf "%d", $2 / 1024}' /proc/meminfo; }

# record_load SCENARIO PHASE: one row of bench/results/load.csv.
record_load() {
  local f="$RESULTS/load.csv" l1 l5 l15 rest
  [[ -f "$f" ]] || echo "scenario,phase,time,load1,load5,load15,mem_available_mib" >"$f"
  read -r l1 l5 l15 rest </proc/loadavg
  : "$rest"
  printf '%s,%s,%s,%s,%s,%s,%s\n' "$1" "$2" "$(date -u +%H:%M:%S)" "$l1" "$l5" "$l15" \
    "$(mem_available_mib)" >>"$f"
}

# forget SCENARIO FILES...: drop stale results of a scenario that is about to run.
forget() {
  local scenario="$1" f
  shift
  for f in "$@"; do rm -f "$RESULTS/$f"; done
  if [[ -f "$RESULTS/load.csv" ]]; then
    grep -v "^$scenario," "$RESULTS/load.csv" >"$RESULTS/load.csv.tmp" || true
    mv "$RESULTS/load.csv.tmp" "$RESULTS/load.csv"
  fi
}

# outputs SCENARIO: the CSV files a scenario writes.
outputs() {
  case "$1" in
  failover) echo failover-crash.csv ;;
  handoff) echo failover-graceful.csv ;;
  surfacing) echo surfacing.csv ;;
  admission) echo admission-direct.csv admission-apiserver.csv profile-admission.csv profile-admission-groups.csv ;;
  scale) echo scale.csv scale-ready.csv scale-apiserver-requests.csv scale-replicas.csv scale-leases.csv profile-scale.csv profile-scale-groups.csv ;;
  scaleout) echo scaleout.csv scaleout-distribution.csv scaleout-moves.csv scaleout-failover.csv scaleout-violations.csv ;;
  dispatch) echo dispatch.csv profile-dispatch.csv profile-dispatch-groups.csv ;;
  seed) echo seed.csv ;;
  peer-failover) echo peer-failover.csv ;;
  peer-admission) echo peer-admission.csv ;;
  peer-memory) echo peer-memory.csv ;;
  *) return 1 ;;
  esac
}

# cluster_up NAME: a fresh control plane with the CRD, namespace $NS and RBAC for its default
# ServiceAccount to read ConfigMaps (what every worker needs).
cluster_up() {
  CLUSTER="$WORK/cluster-$1"
  "$ROOT/hack/cluster.sh" up "$CLUSTER"
  local k=("$KUBECTL" --kubeconfig "$CLUSTER/kubeconfig")
  "${k[@]}" apply --server-side -f "$ROOT/crds/managerconfig.yaml" >/dev/null
  "${k[@]}" wait --for=condition=Established --timeout=60s crd/managerconfigs.manager-operator.io >/dev/null
  "${k[@]}" create namespace "$NS" >/dev/null
  "${k[@]}" -n "$NS" create role configmap-reader --verb=get,list,watch --resource=configmaps >/dev/null
  "${k[@]}" -n "$NS" create rolebinding configmap-reader --role=configmap-reader \
    --serviceaccount="$NS:default" >/dev/null
}

# common SCENARIO: the flags every mo-bench scenario takes.
common() {
  mkdir -p "$WORK/logs/$1"
  printf '%s\n' --kubeconfig "$CLUSTER/kubeconfig" --operator-bin "$OPERATOR" \
    --log-dir "$WORK/logs/$1" --out-dir "$RESULTS" --namespace "$NS"
}

# pid_of VAR: a pid recorded by cluster.sh in $CLUSTER/env.
pid_of() { sed -n "s/^export $1=//p" "$CLUSTER/env"; }

run_failover() {
  cluster_up failover
  mapfile -t args < <(common failover)
  "$BENCH" failover "${args[@]}" --trials "$TRIALS"
  cluster_down
}

run_handoff() {
  cluster_up handoff
  mapfile -t args < <(common handoff)
  "$BENCH" handoff "${args[@]}" --trials "$TRIALS"
  cluster_down
}

run_surfacing() {
  cluster_up surfacing
  # The LeaseNamespaceNotFound configs name a Lease in another namespace: the operator starts
  # them only when their service account may write Leases there (else LeaseForbidden, before the
  # namespace is looked up), so it may, cluster-wide.
  local k=("$KUBECTL" --kubeconfig "$CLUSTER/kubeconfig")
  "${k[@]}" create clusterrole bench-lease-writer --verb=get,create,update \
    --resource=leases.coordination.k8s.io >/dev/null
  "${k[@]}" create clusterrolebinding bench-lease-writer --clusterrole=bench-lease-writer \
    --serviceaccount="$NS:default" >/dev/null
  mapfile -t args < <(common surfacing)
  "$BENCH" surfacing "${args[@]}" --configs "$SURFACING_CONFIGS"
  cluster_down
}

run_admission() {
  cluster_up admission
  mapfile -t args < <(common admission)
  local perf_args=()
  if want_perf; then perf_args=(--perf-out "$WORK/perf-admission.data"); fi
  "$BENCH" admission "${args[@]}" --levels "$ADMISSION_LEVELS" --seconds "$ADMISSION_SECONDS" \
    --warmup "$ADMISSION_WARMUP" --burst "$ADMISSION_BURST" --kubectl "$KUBECTL" "${perf_args[@]}"
  cluster_down
  if [[ -s "$WORK/perf-admission.data" ]]; then
    perf_to_csv "$WORK/perf-admission.data" admission
  fi
}

# scale_case ITEM: "N R K" for a scale case N[xR][*K].
scale_case() {
  local item="$1" n r runs
  if [[ ! "$item" =~ ^([0-9]+)(x([0-9]+))?(\*([0-9]+))?$ ]]; then
    log "bad scale case $item (want N[xR][*K])"
    return 1
  fi
  n="${BASH_REMATCH[1]}"
  r="${BASH_REMATCH[3]:-1}"
  runs="${BASH_REMATCH[5]:-1}"
  echo "$n $r $runs"
}

run_scale() {
  local item n r runs run profiled="" perf_args=()
  # The profile: the first run of the last single-replica case (the issue-7 size).
  for item in $SCALE_SIZES; do
    read -r n r runs <<<"$(scale_case "$item")"
    [[ -n "$n" ]] || exit 2
    if [[ "$r" == 1 ]]; then profiled="$n"; fi
  done
  for item in $SCALE_SIZES; do
    read -r n r runs <<<"$(scale_case "$item")"
    for ((run = 1; run <= runs; run++)); do
      cluster_up "scale-$n-$r-$run"
      mapfile -t args < <(common "scale-$n-$r-$run")
      perf_args=()
      if [[ "$n" == "$profiled" && "$r" == 1 && "$run" == 1 ]] && want_perf; then
        perf_args=(--perf-out "$WORK/perf-scale.data")
      fi
      "$BENCH" scale "${args[@]}" --configs "$n" --replicas "$r" --run "$run" \
        --settle "$SCALE_SETTLE" --window "$SCALE_WINDOW" \
        --apiserver-pid "$(pid_of APISERVER_PID)" --etcd-pid "$(pid_of ETCD_PID)" "${perf_args[@]}"
      cluster_down
    done
  done
  if [[ -s "$WORK/perf-scale.data" ]]; then
    perf_to_csv "$WORK/perf-scale.data" scale
  fi
}

run_scaleout() {
  cluster_up scaleout
  mapfile -t args < <(common scaleout)
  "$BENCH" scaleout "${args[@]}" --configs "$SCALEOUT_CONFIGS" --trials "$SCALEOUT_TRIALS"
  cluster_down
}

want_perf() { [[ "$PROFILE" == 1 ]] && command -v perf >/dev/null 2>&1; }

# perf_to_csv DATA NAME: flat profile (self time by object and symbol) and a grouped summary,
# as bench/results/profile-NAME.csv and profile-NAME-groups.csv.
perf_to_csv() {
  local data="$1" out="$RESULTS/profile-$2.csv" groups="$RESULTS/profile-$2-groups.csv"
  local samples
  samples="$(perf report -i "$data" --stdio --no-children --sort dso 2>/dev/null |
    sed -n 's/^# Samples: *\([^ ]*\) *of event.*/\1/p' | head -n 1)"
  perf report -i "$data" --stdio --no-children --sort dso,sym --percent-limit 0.05 2>/dev/null |
    awk 'BEGIN { print "percent,dso,symbol" }
      /^ *[0-9.]+%/ {
        p = $1; sub(/%/, "", p); dso = $2
        sym = ""
        for (i = 4; i <= NF; i++) sym = sym (i > 4 ? " " : "") $i
        gsub(/,/, ";", sym)
        print p "," dso "," sym
      }' >"$out"
  awk -F, 'NR > 1 {
      s = $3; d = $2; g = "other (operator code; std)"
      if (d ~ /kernel/) g = "kernel (syscalls; network; futex; scheduling)"
      else if (s ~ /ring|rustls|aws_lc|sha|aes|chacha|gcm|x25519|p256|bn_mul|fiat/) g = "TLS and crypto (rustls; ring)"
      else if (s ~ /serde_json|serde::|serde_core|serde_path_to_error|serde_ignored|ryu|itoa|from_utf8/) g = "JSON decoding and encoding (serde)"
      else if (s ~ /manager_operator::validation|url::|GoDuration/) g = "validation (operator rules; URL parsing)"
      else if (s ~ /malloc|free|realloc|calloc|memcpy|memmove|memset|cfree|_int_|alloc::/) g = "memory (malloc; free; copies)"
      else if (s ~ /hyper|h2::|http::|httparse|reqwest|tower|axum|bytes::/) g = "HTTP (hyper; axum; reqwest)"
      else if (s ~ /kube|k8s_openapi/) g = "kube-rs (watcher; reflector; controller)"
      else if (s ~ /tokio|futures|mio|parking_lot|crossbeam/) g = "async runtime (tokio; futures)"
      else if (s ~ /prometheus/) g = "prometheus"
      else if (s ~ /tracing/) g = "tracing"
      else if (s ~ /hashbrown|Hash|sip|fxhash/) g = "hashing and maps"
      else if (d ~ /libc/) g = "libc (other)"
      sum[g] += $1
    }
    END { print "group,percent"; for (g in sum) printf "%s,%.2f\n", g, sum[g] }' "$out" |
    { read -r header; echo "$header"; sort -t, -k2 -rn; } >"$groups"
  echo "total samples,${samples:-?}" >>"$groups"
  log "profile: $out, $groups"
}

run_dispatch() {
  cluster_up dispatch
  mapfile -t args < <(common dispatch)
  local perf_args=()
  if want_perf; then perf_args=(--perf-concurrency 8 --perf-out "$WORK/perf-dispatch.data"); fi
  "$BENCH" dispatch "${args[@]}" --objects "$DISPATCH_OBJECTS" --levels "$DISPATCH_LEVELS" \
    --impls operator,bare "${perf_args[@]}"
  cluster_down
  if [[ -s "$WORK/perf-dispatch.data" ]]; then
    perf_to_csv "$WORK/perf-dispatch.data" dispatch
  fi
}

# peer_bin oldest|newest PROGRAM: a controller-runtime peer (bench/peers), built when missing.
peer_bin() {
  local version
  if [[ "$1" == oldest ]]; then
    version="$("$HERE/peers/build.sh" versions | head -n 1)"
  else
    version="$("$HERE/peers/build.sh" versions | tail -n 1)"
  fi
  "$HERE/peers/build.sh" bin "$version" "$2"
}

# peer_version PATH: the controller-runtime version in a peer's cache path (cr-peers-VERSION-HASH).
peer_version() { basename "$(dirname "$1")" | sed 's/^cr-peers-\(v[^-]*\)-.*/\1/'; }

run_seed() {
  local old new
  old="$(peer_bin oldest cr-manager)"
  new="$(peer_bin newest cr-manager)"
  cluster_up seed
  mapfile -t args < <(common seed)
  "$BENCH" seed "${args[@]}" --cr-old "$old" --cr-old-version "$(peer_version "$old")" \
    --cr-new "$new" --cr-new-version "$(peer_version "$new")" --window "$SEED_WINDOW" \
    --trials "$SEED_TRIALS"
  cluster_down
}

run_peer-failover() {
  local cr
  cr="$(peer_bin newest cr-manager)"
  cluster_up peer-failover
  mapfile -t args < <(common peer-failover)
  "$BENCH" peer-failover "${args[@]}" --cr-manager "$cr" --cr-version "$(peer_version "$cr")" \
    --rounds "$PEER_ROUNDS"
  cluster_down
}

run_peer-admission() {
  local cr
  cr="$(peer_bin newest cr-webhook)"
  cluster_up peer-admission
  mapfile -t args < <(common peer-admission)
  "$BENCH" peer-admission "${args[@]}" --cr-webhook "$cr" --cr-version "$(peer_version "$cr")" \
    --levels "$ADMISSION_LEVELS" --seconds "$ADMISSION_SECONDS" --warmup "$ADMISSION_WARMUP" \
    --reps 2
  cluster_down
}

run_peer-memory() {
  local cr
  cr="$(peer_bin newest cr-manager)"
  cluster_up peer-memory
  mapfile -t args < <(common peer-memory)
  "$BENCH" peer-memory "${args[@]}" --cr-manager "$cr" --cr-version "$(peer_version "$cr")" \
    --sizes 1,10,100 --reps "$PEER_REPS" --settle "$PEER_SETTLE"
  cluster_down
}

settings="trials=$TRIALS; surfacing configs=$SURFACING_CONFIGS per reason; admission ${ADMISSION_SECONDS}s per level (warm-up ${ADMISSION_WARMUP}s) at $ADMISSION_LEVELS and a kubectl burst of $ADMISSION_BURST; scale cases=$SCALE_SIZES (settle ${SCALE_SETTLE}s; window ${SCALE_WINDOW}s); scaleout $SCALEOUT_CONFIGS configs on 3+1 replicas with $SCALEOUT_TRIALS trials per signal; dispatch $DISPATCH_OBJECTS objects at $DISPATCH_LEVELS; seed $SEED_TRIALS trials per case (window ${SEED_WINDOW}s); peer-failover $PEER_ROUNDS rounds; peer-admission 2 runs each per level; peer-memory 1/10/100 managers x $PEER_REPS (settle ${PEER_SETTLE}s)"
"$BENCH" machine --out "$RESULTS/machine.csv" \
  --set "quick=$QUICK" \
  --set "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
  --set "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet -- . ':!bench/results' ':!docs/benchmarks.md' 2>/dev/null || echo ' (with uncommitted changes)')" \
  --set "control_plane=$(basename "$MO_BIN_DIR" | sed 's/^bin-//') as local processes" \
  --set "settings=$settings" \
  --set "shared=${BENCH_NOTE:-}"

for scenario in $SCENARIOS; do
  if ! files="$(outputs "$scenario")"; then
    log "unknown scenario $scenario"
    exit 2
  fi
  log "=== $scenario ==="
  # shellcheck disable=SC2086 # a list of file names without spaces
  forget "$scenario" $files
  record_load "$scenario" start
  "run_$scenario"
  record_load "$scenario" end
done

"$BENCH" report --results "$RESULTS" --out "$REPORT" --analysis "$HERE/analysis.md"
log "done: $REPORT"
