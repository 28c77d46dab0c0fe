#!/usr/bin/env bash
# A real, throw-away Kubernetes control plane as local processes on 127.0.0.1 (docs/design.md §8).
#
#   hack/cluster.sh up DIR     start etcd, kube-apiserver, kube-controller-manager; return when
#                              /readyz is ok and the default ServiceAccount exists (KCM works)
#   hack/cluster.sh down DIR   stop exactly the processes recorded in DIR, then remove DIR
#   hack/cluster.sh status DIR exit 0 when the cluster in DIR is up and ready
#
# Fault injection on a cluster that is up (for tests/reliability.rs; NAME is etcd,
# kube-apiserver or kube-controller-manager; same ports, flags and data as at `up`):
#   hack/cluster.sh stop-component DIR NAME [SIGNAL]   send SIGNAL (default KILL) to NAME and wait
#                                                      until it has exited
#   hack/cluster.sh start-component DIR NAME           start NAME again; return once it serves
#                                                      (etcd: port open; kube-apiserver: /readyz ok)
#   hack/cluster.sh restart-component DIR NAME [DOWN]  stop-component, sleep DOWN seconds (default
#                                                      0; fractions allowed), start-component
#
# Every port is picked free on 127.0.0.1, so several clusters can run side by side. Authorization
# is Node,RBAC. Users are client certificates signed by a CA made with openssl in DIR:
#   admin               (group system:masters)   -> DIR/kubeconfig
#   mo-unprivileged     (no group)               -> DIR/kubeconfig-unprivileged
#   system:kube-controller-manager (system:masters, because KCM runs with
#                        --use-service-account-credentials=false and needs to delete anything
#                        for namespace deletion and garbage collection)
# Service-account signing keys are set up, so `kubectl create token` works.
#
# DIR/env is shell-sourceable (KUBECONFIG, PATH with kubectl, APISERVER_URL, ports, pids).
# Logs: DIR/*.log.
#
# Environment: MO_BIN_DIR (tools bin dir; default: `hack/tools.sh bindir`, building if needed),
# MO_CLUSTER_TIMEOUT (seconds, default 120), MO_SERVICE_CIDR (default 10.0.0.0/24).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TIMEOUT="${MO_CLUSTER_TIMEOUT:-120}"
SERVICE_CIDR="${MO_SERVICE_CIDR:-10.0.0.0/24}"
SERVICE_IP="${MO_SERVICE_IP:-10.0.0.1}"
MARKER=".mo-cluster"
COMPONENTS=(kube-controller-manager kube-apiserver etcd) # stop order

log() { printf '[cluster] %s\n' "$*" >&2; }

die() {
  printf '\n[cluster] ERROR: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

bin_dir() {
  if [[ -n "${MO_BIN_DIR:-}" ]]; then
    printf '%s\n' "$MO_BIN_DIR"
  else
    "$HERE/tools.sh" bindir
  fi
}

# shellcheck source=hack/lib/ports.sh
source "$HERE/lib/ports.sh"

# ---------------------------------------------------------------------------------------------
# Certificates

gen_key() { openssl genrsa -out "$1" 2048 2>/dev/null; }

# sign_cert NAME SUBJECT EXTFILE_CONTENT
sign_cert() {
  local name="$1" subj="$2" ext="$3" pki="$DIR/pki"
  gen_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  gen_key "$pki/ca.key"
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=manager-operator-test-ca" -days 30 \
    -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/ca.crt" 2>/dev/null
  local client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign_cert admin "/O=system:masters/CN=admin" "$client_ext"
  sign_cert unprivileged "/CN=mo-unprivileged" "$client_ext"
  sign_cert kcm "/O=system:masters/CN=system:kube-controller-manager" "$client_ext"
  # Aggregation-layer proxy identity (requestheader auth); also lets KCM's delegated
  # authentication find a complete extension-apiserver-authentication ConfigMap.
  sign_cert front-proxy-client "/CN=front-proxy-client" "$client_ext"
  # Service-account token signing key pair.
  gen_key "$pki/sa.key"
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

# shellcheck source=hack/lib/kubeconfig.sh
source "$HERE/lib/kubeconfig.sh"

# ---------------------------------------------------------------------------------------------
# Processes

# start NAME BINARY ARGS...: runs detached (own session), logs to DIR/NAME.log (appended to when
# APPEND_LOG=1, as on a restart), pid in DIR/NAME.pid
start() {
  local name="$1"
  shift
  if [[ "${APPEND_LOG:-0}" != 1 ]]; then
    : >"$DIR/$name.log"
  fi
  if command -v setsid >/dev/null 2>&1; then
    # Not a process-group leader here, so setsid execs in place and $! is the binary's pid.
    setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
  else
    "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
  fi
  echo "$!" >"$DIR/$name.pid"
}

# True when the pid in DIR/NAME.pid is alive and still runs the binary NAME.
alive() {
  local name="$1" pid
  [[ -f "$DIR/$name.pid" ]] || return 1
  pid="$(<"$DIR/$name.pid")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A child this script has just forked may not have exec'd the binary yet (its exe is still
  # bash): it is ours. (Checking only the exe made `up` fail at random with "etcd exited".)
  local ppid
  ppid="$(sed -E 's/^.*\) [A-Za-z] ([0-9]+) .*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$ppid" == "$$" ]] && return 0
  # Guard against pid reuse: the process must still be ours.
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == */"$name"* ]] ||
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

fail_with_log() {
  local name="$1" msg="$2"
  {
    printf '\n[cluster] ERROR: %s\n' "$msg"
    printf '[cluster] ---- last 40 lines of %s ----\n' "$DIR/$name.log"
    tail -n 40 "$DIR/$name.log" 2>/dev/null || true
    printf '[cluster] ---- end of %s ----\n' "$DIR/$name.log"
  } >&2
  return 1
}

deadline_passed() { ((SECONDS >= DEADLINE)); }

# wait_until NAME DESCRIPTION CMD...: polls CMD until it succeeds; fails loudly (with NAME's log)
# if NAME's process dies or the overall deadline passes.
wait_until() {
  local name="$1" what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$name" || { fail_with_log "$name" "$name exited while waiting for $what"; return 1; }
    deadline_passed && { fail_with_log "$name" "timed out after ${TIMEOUT}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=5s "$@"; }

readyz_ok() { [[ "$(kubectl_admin get --raw /readyz 2>/dev/null)" == "ok" ]]; }

default_sa_exists() { kubectl_admin get serviceaccount default -n default -o name; }

addr_in_use() { grep -qi 'address already in use' "$DIR"/*.log 2>/dev/null; }

# The three components, each started with the globals set by start_components (or read back
# from DIR/env by load_env): ports, APISERVER_URL, DIR, BIN.
start_etcd() {
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd "$BIN/etcd" \
    --name=default \
    --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level=warn
  wait_until etcd "etcd to listen on $ETCD_PORT" port_open "$ETCD_PORT"
}

start_apiserver() {
  local pki="$DIR/pki"
  log "starting kube-apiserver on $APISERVER_URL"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer="$APISERVER_URL" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --cert-dir="$DIR/apiserver-certs" \
    --requestheader-client-ca-file="$pki/ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --profiling=false \
    --v=0
  wait_until kube-apiserver "kube-apiserver /readyz" readyz_ok
}

start_kcm() {
  local pki="$DIR/pki"
  log "starting kube-controller-manager on 127.0.0.1:$KCM_PORT"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kcm.kubeconfig" \
    --authentication-kubeconfig="$DIR/kcm.kubeconfig" \
    --authorization-kubeconfig="$DIR/kcm.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$DIR/kcm-certs" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --root-ca-file="$pki/ca.crt" \
    --service-account-private-key-file="$pki/sa.key" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kube-api-qps=100 \
    --kube-api-burst=200 \
    --profiling=false \
    --v=0
}

# One attempt at starting all three components. Returns 1 on failure (processes may be left
# running; the caller stops them).
start_components() {
  local ports
  read -r -a ports <<<"$(free_ports 127.0.0.1 4)"
  ETCD_PORT="${ports[0]}"
  ETCD_PEER_PORT="${ports[1]}"
  APISERVER_PORT="${ports[2]}"
  KCM_PORT="${ports[3]}"
  APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"

  local pki="$DIR/pki"
  write_kubeconfig "$DIR/kubeconfig" admin "$pki/admin" "$pki/ca.crt" "$APISERVER_URL"
  write_kubeconfig "$DIR/kubeconfig-unprivileged" mo-unprivileged "$pki/unprivileged" "$pki/ca.crt" "$APISERVER_URL"
  write_kubeconfig "$DIR/kcm.kubeconfig" system:kube-controller-manager "$pki/kcm" "$pki/ca.crt" "$APISERVER_URL"

  rm -rf "$DIR/etcd-data"
  start_etcd || return 1
  start_apiserver || return 1
  start_kcm
  wait_until kube-controller-manager "the default ServiceAccount (created by kube-controller-manager)" \
    default_sa_exists || return 1
}

write_env() {
  local f="$DIR/env"
  {
    echo "# Generated by hack/cluster.sh up; source it to talk to this cluster."
    printf 'export KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf 'export MO_KUBECONFIG=%q\n' "$DIR/kubeconfig"
    printf 'export MO_KUBECONFIG_UNPRIVILEGED=%q\n' "$DIR/kubeconfig-unprivileged"
    printf 'export MO_CLUSTER_DIR=%q\n' "$DIR"
    printf 'export MO_BIN_DIR=%q\n' "$BIN"
    # shellcheck disable=SC2016 # $PATH must expand when the file is sourced
    printf 'export PATH=%q:"$PATH"\n' "$BIN"
    printf 'export APISERVER_URL=%q\n' "$APISERVER_URL"
    printf 'export APISERVER_PORT=%q\n' "$APISERVER_PORT"
    printf 'export ETCD_PORT=%q\n' "$ETCD_PORT"
    printf 'export ETCD_PEER_PORT=%q\n' "$ETCD_PEER_PORT"
    printf 'export KCM_PORT=%q\n' "$KCM_PORT"
    printf 'export ETCD_PID=%q\n' "$(<"$DIR/etcd.pid")"
    printf 'export APISERVER_PID=%q\n' "$(<"$DIR/kube-apiserver.pid")"
    printf 'export KCM_PID=%q\n' "$(<"$DIR/kube-controller-manager.pid")"
    # Written by hack/node.sh up when the cluster has kubelet nodes.
    printf 'if [ -f %q ]; then . %q; fi\n' "$DIR/nodes/env" "$DIR/nodes/env"
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

stop_components() {
  local name pid i
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then
      pid="$(<"$DIR/$name.pid")"
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do # 10 s grace
        alive "$name" || break
        sleep 0.1
      done
      if alive "$name"; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
          alive "$name" || break
          sleep 0.1
        done
      fi
    fi
    rm -f "$DIR/$name.pid"
  done
}

is_up() {
  [[ -f "$DIR/$MARKER" && -f "$DIR/env" ]] || return 1
  local name
  for name in "${COMPONENTS[@]}"; do alive "$name" || return 1; done
  BIN="$(bin_dir)"
  readyz_ok
}

cmd_up() {
  if [[ -e "$DIR" && ! -f "$DIR/$MARKER" && -n "$(ls -A "$DIR")" ]]; then
    die "$DIR exists, is not empty and is not a cluster dir made by this script; refusing to use it"
  fi
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if is_up; then
    log "cluster in $DIR is already up ($(grep APISERVER_URL= "$DIR/env" | cut -d= -f2))"
    return 0
  fi
  if [[ -f "$DIR/$MARKER" ]]; then
    log "stale cluster state in $DIR; stopping leftovers first"
    stop_components
  fi
  touch "$DIR/$MARKER"

  command -v openssl >/dev/null 2>&1 || die "openssl is required"
  BIN="$(bin_dir)"
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing; run hack/tools.sh (make tools)"
  done

  local start_s=$SECONDS attempt
  DEADLINE=$((SECONDS + TIMEOUT))
  [[ -f "$DIR/pki/sa.key" ]] || make_pki
  for attempt in 1 2 3; do
    if start_components; then
      write_env
      log "cluster up in $((SECONDS - start_s))s: $APISERVER_URL (source $DIR/env)"
      return 0
    fi
    stop_components
    if addr_in_use && ((attempt < 3)) && ! deadline_passed; then
      log "a picked port was taken meanwhile; retrying with new ports (attempt $((attempt + 1)))"
      continue
    fi
    break
  done
  die "control plane in $DIR failed to start (logs: $DIR/*.log; clean up with: $0 down $DIR)"
}

cmd_down() {
  if [[ ! -e "$DIR" ]]; then
    return 0
  fi
  if [[ ! -f "$DIR/$MARKER" ]]; then
    die "$DIR is not a cluster dir made by this script (no $MARKER); refusing to remove it"
  fi
  DIR="$(cd "$DIR" && pwd)"
  if [[ -d "$DIR/nodes" ]]; then
    # Kubelet nodes started by hack/node.sh (their containers, mounts and cgroups) go first.
    "$HERE/node.sh" down "$DIR" || log "WARNING: hack/node.sh down $DIR failed"
  fi
  stop_components
  rm -rf "$DIR"
  log "cluster in $DIR stopped and removed"
}

cmd_status() {
  [[ -d "$DIR" ]] || { log "no cluster dir $DIR"; return 1; }
  DIR="$(cd "$DIR" && pwd)"
  if is_up; then
    log "up: $(grep APISERVER_URL= "$DIR/env" | cut -d= -f2)"
  else
    log "not up"
    return 1
  fi
}

# Reads ports, URL and bin dir of the cluster in DIR back from DIR/env.
load_env() {
  [[ -f "$DIR/$MARKER" && -f "$DIR/env" ]] || die "$DIR holds no cluster made by this script"
  DIR="$(cd "$DIR" && pwd)"
  local var val
  for var in APISERVER_URL APISERVER_PORT ETCD_PORT ETCD_PEER_PORT KCM_PORT MO_BIN_DIR; do
    val="$(sed -n "s/^export $var=//p" "$DIR/env" | tail -n 1)"
    [[ -n "$val" ]] || die "$DIR/env has no $var"
    printf -v "$var" '%s' "$val"
  done
  BIN="$MO_BIN_DIR"
}

check_component() {
  case "$1" in
  etcd | kube-apiserver | kube-controller-manager) ;;
  *) die "unknown component ${1@Q} (etcd, kube-apiserver or kube-controller-manager)" ;;
  esac
}

cmd_stop_component() {
  local name="$1" sig="${2:-KILL}" pid i
  check_component "$name"
  load_env
  if ! alive "$name"; then
    log "$name is not running"
    return 0
  fi
  pid="$(<"$DIR/$name.pid")"
  kill -s "$sig" "$pid" || die "cannot send SIG$sig to $name (pid $pid)"
  for ((i = 0; i < 300; i++)); do # 30 s
    alive "$name" || break
    sleep 0.05
  done
  alive "$name" && die "$name (pid $pid) still runs 15 s after SIG$sig"
  log "$name (pid $pid) stopped with SIG$sig"
}

cmd_start_component() {
  local name="$1"
  check_component "$name"
  load_env
  if alive "$name"; then
    log "$name is already running"
    return 0
  fi
  DEADLINE=$((SECONDS + TIMEOUT))
  printf '\n[cluster] ---- restarted at %s ----\n' "$(date -u +%FT%TZ)" >>"$DIR/$name.log"
  APPEND_LOG=1
  case "$name" in
  etcd) start_etcd ;;
  kube-apiserver) start_apiserver ;;
  kube-controller-manager)
    start_kcm
    wait_until kube-controller-manager "kube-controller-manager to listen on $KCM_PORT" \
      port_open "$KCM_PORT"
    ;;
  esac || die "$name did not come back (log: $DIR/$name.log)"
  write_env
  log "$name (pid $(<"$DIR/$name.pid")) is back"
}

main() {
  (($# >= 2)) || usage
  local cmd="$1"
  DIR="$2"
  [[ -n "$DIR" ]] || usage
  case "$cmd" in
  up | down | status) (($# == 2)) || usage ;;
  stop-component) (($# == 3 || $# == 4)) || usage ;;
  start-component) (($# == 3)) || usage ;;
  restart-component) (($# == 3 || $# == 4)) || usage ;;
  *) usage ;;
  esac
  case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop-component) cmd_stop_component "$3" "${4:-KILL}" ;;
  start-component) cmd_start_component "$3" ;;
  restart-component)
    cmd_stop_component "$3" KILL
    sleep "${4:-0}"
    cmd_start_component "$3"
    ;;
  esac
}

main "$@"
