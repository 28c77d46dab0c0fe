#!/usr/bin/env bash
# Smoke test of hack/node.sh against a cluster of hack/cluster.sh:
#
#   hack/with-cluster.sh e2e/node-smoke.sh
#
# Starts 2 nodes, builds a tiny static HTTP server image offline and imports it, runs one
# hostNetwork pod per node (placed by kube-scheduler through a nodeSelector), waits until the
# kubelet's httpGet readiness probe makes each pod Ready, checks hostIP/podIP, the node
# addresses and `kubectl logs` (apiserver -> kubelet on 127.0.0.x), deletes the pods, stops the
# nodes. Environment: MO_CLUSTER_DIR (set by with-cluster.sh), MO_SMOKE_NODES (default 2).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DIR="${MO_CLUSTER_DIR:?run through hack/with-cluster.sh (MO_CLUSTER_DIR is not set)}"
N="${MO_SMOKE_NODES:-2}"
TIMEOUT=120
IMAGE="localhost/mo-smoke-httpd:1"

log() { printf '[node-smoke] %s\n' "$*" >&2; }
die() {
  printf '\n[node-smoke] FAILED: %s\n' "$*" >&2
  exit 1
}

# shellcheck disable=SC2317 # invoked via trap
cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    kubectl get nodes -o wide >&2 || true
    kubectl get pods -A -o wide >&2 || true
    kubectl describe pods -n default -l app=mo-smoke >&2 || true
    local f
    for f in "$DIR"/nodes/*/kubelet.log "$DIR"/nodes/*/containerd.log; do
      [[ -f "$f" ]] || continue
      printf '[node-smoke] ---- last errors in %s ----\n' "$f" >&2
      grep -E '^E|level=error' "$f" | grep -v "nodeIP can't be loopback" | tail -n 15 >&2 || true
    done
  fi
  "$ROOT/hack/node.sh" down "$DIR" || rc=1
  exit "$rc"
}
trap cleanup EXIT

start=$SECONDS
"$ROOT/hack/node.sh" up "$DIR" "$N"
# shellcheck disable=SC1091 # generated
source "$DIR/env"
log "nodes up after $((SECONDS - start))s: $MO_NODE_NAMES ($MO_NODE_IPS)"

# The test image: a static Go HTTP server on $HOST_IP:$PORT.
work="$DIR/smoke-image"
mkdir -p "$work"
cat >"$work/go.mod" <<'EOF'
module mo-smoke/httpd

go 1.22
EOF
cat >"$work/main.go" <<'EOF'
// Command httpd answers GET /healthz with "ok" on $HOST_IP:$PORT and logs every request.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := os.Getenv("HOST_IP") + ":" + os.Getenv("PORT")
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintln(w, "ok")
	})
	log.Printf("mo-smoke-httpd listening on %s (node %s)", addr, os.Getenv("NODE_NAME"))
	log.Fatal(http.ListenAndServe(addr, nil))
}
EOF
(cd "$work" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o httpd .)
python3 "$ROOT/hack/lib/image-archive.py" "$work/httpd.tar" "$IMAGE" /httpd "$work/httpd=/httpd"
"$ROOT/hack/node.sh" import "$DIR" "$work/httpd.tar"

read -r -a names <<<"$MO_NODE_NAMES"
read -r -a ips <<<"$MO_NODE_IPS"
# Leftovers of an earlier run in this cluster.
kubectl delete pod -n default -l app=mo-smoke --ignore-not-found --wait=true --timeout=60s >/dev/null
pods=()
t0=$SECONDS
for i in "${!names[@]}"; do
  name="${names[$i]}"
  ip="${ips[$i]}"
  port="$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$ip")"
  pod="mo-smoke-$name"
  pods+=("$pod")
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  namespace: default
  labels: {app: mo-smoke}
spec:
  hostNetwork: true
  nodeSelector: {kubernetes.io/hostname: $name}
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: $IMAGE
    imagePullPolicy: Never
    env:
    - {name: PORT, value: "$port"}
    - name: HOST_IP
      valueFrom: {fieldRef: {fieldPath: status.hostIP}}
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    ports:
    - {containerPort: $port, name: http}
    readinessProbe:
      httpGet: {path: /healthz, port: $port}
      periodSeconds: 1
EOF
done

for pod in "${pods[@]}"; do
  kubectl wait --for=condition=Ready "pod/$pod" --timeout="${TIMEOUT}s" >/dev/null ||
    die "pod $pod did not become Ready"
done
log "${#pods[@]} pod(s) Ready $((SECONDS - t0))s after creation"

for i in "${!names[@]}"; do
  name="${names[$i]}"
  ip="${ips[$i]}"
  pod="mo-smoke-$name"
  got="$(kubectl get pod "$pod" -o jsonpath='{.spec.nodeName} {.status.hostIP} {.status.podIP}')"
  [[ "$got" == "$name $ip $ip" ]] || die "$pod: nodeName/hostIP/podIP are '$got', want '$name $ip $ip'"
  addr="$(kubectl get node "$name" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
  [[ "$addr" == "$ip" ]] || die "$name lost its InternalIP (now '$addr')"
  # kubectl logs goes apiserver -> kubelet at 127.0.0.x:port.
  # The probe's log line may reach the container log file a moment after the probe succeeded.
  for ((try = 0; ; try++)); do
    logs="$(kubectl logs "$pod")" || die "kubectl logs $pod failed"
    grep -q "GET /healthz from 127\.0\.0\." <<<"$logs" && break
    ((try < 50)) || die "$pod logs show no readiness probe (kubelet connects from 127.0.0.1, the source address Linux picks on lo): $logs"
    sleep 0.2
  done
  grep -q "listening on $ip:" <<<"$logs" || die "$pod logs lack the listen line: $logs"
  log "$pod on $name: hostIP=podIP=$ip, readiness probe and kubectl logs ok"
done

kubectl delete pod "${pods[@]}" --wait=true --timeout=60s >/dev/null || die "pods were not deleted"
log "pods deleted; smoke test passed in $((SECONDS - start))s"
