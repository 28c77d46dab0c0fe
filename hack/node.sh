#!/usr/bin/env bash
# Real kubelet nodes for a control plane started by hack/cluster.sh (same machine, all on
# 127.0.0.0/8).
#
#   hack/node.sh up DIR [N]          start kube-scheduler and N nodes (default 2) mo-node-1..N for
#                                    the cluster in DIR; node i has its own containerd and kubelet
#                                    on 127.0.0.i; return once every Node is Ready with its
#                                    InternalIP. Writes DIR/nodes/env (sourced by DIR/env).
#   hack/node.sh import DIR ARCHIVE  import an image archive (docker-archive or oci-archive tar)
#                                    into every node's containerd (namespace k8s.io); check the
#                                    image is listed. No registry is reachable: every image a pod
#                                    uses must be imported this way (imagePullPolicy: Never).
#   hack/node.sh down DIR            stop kubelets, pod containers and shims, containerds and the
#                                    scheduler started for DIR; unmount and remove what they left
#                                    (mounts, cgroups, DIR/nodes). hack/cluster.sh down calls it.
#
# ONLY hostNetwork pods are supported: there is no pod network (closed machine, every connection
# stays on loopback). containerd's CNI config holds just the `loopback` plugin, which is enough
# for the CRI to report NetworkReady (so Nodes become Ready) but gives a pod network namespace no
# address: a pod without hostNetwork fails at sandbox creation. No kube-proxy, so no Service
# ClusterIP traffic either.
#
# Environment: MO_NODE_TIMEOUT (seconds, default 180), MO_NODE_BIN_DIR (default:
# `hack/tools-node.sh bindir`, building if needed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TIMEOUT="${MO_NODE_TIMEOUT:-180}"
MARKER=".mo-nodes"
CNI_BIN_DIR="${MO_CNI_BIN_DIR:-/usr/lib/cni}" # Debian's containernetworking-plugins

log() { printf '[node] %s\n' "$*" >&2; }

die() {
  printf '\n[node] ERROR: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Processes (as in cluster.sh; here a process is named by a path prefix P: P.pid, P.log)

# start P BINARY ARGS...: runs detached in its own session, logs to P.log, pid in P.pid
start() {
  local p="$1"
  shift
  : >"$p.log"
  setsid "$@" >>"$p.log" 2>&1 </dev/null &
  echo "$!" >"$p.pid"
}

# alive P EXE: the pid in P.pid is alive and runs EXE (guards against pid reuse; a child just
# forked that has not exec'd yet is ours too).
alive() {
  local p="$1" exe="$2" pid ppid
  [[ -f "$p.pid" ]] || return 1
  pid="$(<"$p.pid")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  ppid="$(sed -E 's/^.*\) [A-Za-z] ([0-9]+) .*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$ppid" == "$$" ]] && return 0
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == */"$exe" ]]
}

# stop P EXE: SIGTERM, 10 s grace, SIGKILL.
stop() {
  local p="$1" exe="$2" pid i
  if alive "$p" "$exe"; then
    pid="$(<"$p.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$p" "$exe" || break
      sleep 0.1
    done
    if alive "$p" "$exe"; then
      log "$exe (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive "$p" "$exe" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$p.pid"
}

fail_with_log() {
  local p="$1" msg="$2"
  {
    printf '\n[node] ERROR: %s\n' "$msg"
    printf '[node] ---- last error lines of %s ----\n' "$p.log"
    grep -E '^[EF][0-9]{4} |level=(error|fatal)' "$p.log" 2>/dev/null | grep -v "nodeIP can't be loopback" | tail -n 15 || true
    printf '[node] ---- last 25 lines of %s ----\n' "$p.log"
    tail -n 25 "$p.log" 2>/dev/null || true
    printf '[node] ---- end of %s ----\n' "$p.log"
  } >&2
  return 1
}

deadline_passed() { ((SECONDS >= DEADLINE)); }

# wait_until P EXE DESCRIPTION CMD...: polls CMD; fails loudly with P.log if the process dies
# or the deadline passes.
wait_until() {
  local p="$1" exe="$2" what="$3"
  shift 3
  until "$@" >/dev/null 2>&1; do
    alive "$p" "$exe" || { fail_with_log "$p" "$exe exited while waiting for $what"; return 1; }
    deadline_passed && { fail_with_log "$p" "timed out after ${TIMEOUT}s waiting for $what"; return 1; }
    sleep 0.25
  done
}

# shellcheck source=hack/lib/ports.sh
source "$HERE/lib/ports.sh"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" --request-timeout=5s "$@"; }

# ---------------------------------------------------------------------------------------------
# Certificates (signed by the cluster CA made by cluster.sh)

# sign_cert OUTPREFIX SUBJECT EXTFILE_CONTENT
sign_cert() {
  local out="$1" subj="$2" ext="$3" pki="$DIR/pki"
  openssl genrsa -out "$out.key" 2048 2>/dev/null
  openssl req -new -key "$out.key" -subj "$subj" -out "$out.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
}

CLIENT_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

# shellcheck source=hack/lib/kubeconfig.sh
source "$HERE/lib/kubeconfig.sh"

# ---------------------------------------------------------------------------------------------
# Layout

# Globals set by load_cluster: DIR, NDIR, BIN (control-plane tools), NBIN (node tools),
# APISERVER_URL, CLUSTER_ID.
load_cluster() {
  [[ -f "$DIR/.mo-cluster" && -f "$DIR/env" ]] || die "$DIR holds no cluster made by hack/cluster.sh"
  DIR="$(cd "$DIR" && pwd)"
  NDIR="$DIR/nodes"
  APISERVER_URL="$(sed -n 's/^export APISERVER_URL=//p' "$DIR/env" | tail -n 1)"
  BIN="$(sed -n 's/^export MO_BIN_DIR=//p' "$DIR/env" | tail -n 1)"
  [[ -n "$APISERVER_URL" && -x "$BIN/kubectl" ]] || die "$DIR/env has no APISERVER_URL or MO_BIN_DIR"
  # Names the node cgroups: unique per cluster dir, so kubelets of two clusters side by side
  # never share (and never garbage-collect) each other's cgroups.
  CLUSTER_ID="$(printf '%s' "$DIR" | sha256sum | cut -c1-8)"
}

node_names() {
  local f
  for f in "$NDIR"/mo-node-*/.node; do
    [[ -f "$f" ]] && basename "$(dirname "$f")"
  done
  return 0
}

# Cgroup root of a node (relative to every cgroup v1 hierarchy); see kubelet.yaml.
cgroup_root() { printf 'mo-%s-%s' "$CLUSTER_ID" "$1"; }

# Mounted cgroup hierarchies: the v1 ones (cpu, memory, ..., name=systemd) and, on a hybrid
# host, the unified v2 one (/sys/fs/cgroup/unified), where runc creates the same paths.
cgroup_hierarchies() {
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

# ---------------------------------------------------------------------------------------------
# containerd

# Overlayfs on the file system of DIR, or native (plain copies) where it does not work (e.g.
# DIR on overlayfs or tmpfs without user xattrs on old kernels).
pick_snapshotter() {
  local t="$NDIR/.overlay-test"
  mkdir -p "$t/lower" "$t/upper" "$t/work" "$t/merged"
  if mount -t overlay overlay -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" "$t/merged" 2>/dev/null; then
    umount "$t/merged"
    rm -rf "$t"
    echo overlayfs
  else
    rm -rf "$t"
    echo native
  fi
}

write_containerd_config() {
  local name="$1" ip="$2" nd="$NDIR/$1"
  mkdir -p "$nd/cni/net.d" "$nd/containerd-root" "$nd/containerd-state" "$nd/runc" "$nd/opt"
  # Only `loopback`: enough for the CRI's NetworkReady, no pod network (hostNetwork pods only).
  cat >"$nd/cni/net.d/10-mo-loopback.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mo-loopback",
  "plugins": [{"type": "loopback"}]
}
EOF
  cat >"$nd/containerd.toml" <<EOF
# containerd for node $name (generated by hack/node.sh). Everything lives under $nd:
# no /var/lib/containerd, /run/containerd/containerd.sock or /etc/cni is touched.
version = 2
root = "$nd/containerd-root"
state = "$nd/containerd-state"
# Plugins that cannot work here; disabled so the log stays readable.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$nd/containerd.sock"

[ttrpc]
  address = "$nd/containerd.sock.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # No image can be pulled: the sandbox image is imported from hack/tools-node.sh's archive.
  sandbox_image = "$PAUSE_TAG"
  # kubectl exec/attach/port-forward streams; on this node's loopback address.
  stream_server_address = "$ip"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # Clamp oom_score_adj to containerd's own (0): these machines run root WITHOUT
  # CAP_SYS_RESOURCE, so runc failed every pod sandbox (kubelet asks -998) with "nsexec: failed to
  # update /proc/self/oom_score_adj: Permission denied" / "can't get final child's PID from
  # pipe: EOF". Raising the score (BestEffort/Burstable containers) needs no capability.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd on these machines: cgroupfs driver, as kubelet's cgroupDriver.
        SystemdCgroup = false
        # runc state of this node's containers only (default /run/containerd/runc is shared).
        Root = "$nd/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$nd/cni/net.d"
    max_conf_num = 1
EOF
}

ctr_node() {
  local name="$1"
  shift
  ctr --address "$NDIR/$name/containerd.sock" --namespace k8s.io "$@"
}

containerd_ready() { ctr_node "$1" version; }

# import_archive NODE ARCHIVE: import into the node's containerd, unpacked for the CRI's
# snapshotter.
import_archive() {
  local name="$1" archive="$2" snap
  snap="$(<"$NDIR/snapshotter")"
  ctr_node "$name" images import --snapshotter "$snap" "$archive" >&2
}

start_containerd() {
  local name="$1" ip="$2" nd="$NDIR/$1"
  write_containerd_config "$name" "$ip"
  log "$name: starting containerd ($nd/containerd.sock, snapshotter $SNAPSHOTTER)"
  start "$nd/containerd" containerd --config "$nd/containerd.toml"
  wait_until "$nd/containerd" containerd "$name's containerd socket" containerd_ready "$name" || return 1
  import_archive "$name" "$NBIN/pause.tar" || { fail_with_log "$nd/containerd" "$name: importing the pause image failed"; return 1; }
}

# ---------------------------------------------------------------------------------------------
# kubelet

make_cgroup_root() {
  local cg="$1" h
  while read -r h; do
    mkdir -p "$h/$cg"
    # A new cpuset cgroup starts with no cpus/mems; a process cannot join it until they are set.
    if [[ -f "$h/$cg/cpuset.cpus" ]]; then
      [[ -n "$(<"$h/$cg/cpuset.cpus")" ]] || cat "$h/cpuset.cpus" >"$h/$cg/cpuset.cpus"
      [[ -n "$(<"$h/$cg/cpuset.mems")" ]] || cat "$h/cpuset.mems" >"$h/$cg/cpuset.mems"
    fi
  done < <(cgroup_hierarchies)
}

write_kubelet_config() {
  local name="$1" ip="$2" port="$3" healthz_port="$4" nd="$NDIR/$1"
  cat >"$nd/kubelet.yaml" <<EOF
# kubelet for node $name (generated by hack/node.sh); settings specific to these test machines
# are explained next to them.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Listen on this node's own loopback address only; ports picked free (several clusters with
# nodes may run side by side). No read-only port.
address: "$ip"
port: $port
readOnlyPort: 0
healthzBindAddress: "$ip"
healthzPort: $healthz_port
tlsCertFile: "$nd/pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$nd/pki/kubelet-serving.key"
# The apiserver of hack/cluster.sh has no --kubelet-client-certificate, so it calls kubelets
# (kubectl logs/exec) anonymously; with webhook authn/authz that is a 401/403. The kubelet
# port is bound to 127.0.0.x only, on a throw-away test cluster: allow it.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: "$DIR/pki/ca.crt"
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: "unix://$nd/containerd.sock"
registerNode: true
# These machines mount only cgroup v1 hierarchies; kubelet >= 1.35 refuses to start on cgroup
# v1 unless told otherwise ("kubelet is configured to not run on a host using cgroup v1").
failCgroupV1: false
# No systemd is running: cgroups are managed directly in /sys/fs/cgroup (containerd's runc
# options say SystemdCgroup = false to match).
cgroupDriver: cgroupfs
# Every node's pods live under their own cgroup root (created by node.sh, removed by
# node.sh down): two kubelets on one cgroupfs with the default root "/" would both own
# /kubepods and delete each other's pod cgroups as orphans.
cgroupRoot: "/$(cgroup_root "$name")"
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
# Developer machines may have swap on; the kubelet would refuse to start.
failSwapOn: false
# A full-ish developer disk must not put nodes under DiskPressure (taint + evictions) and there
# is no registry to pull an image back from: low eviction thresholds, image GC off (high 100%).
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
evictionPressureTransitionPeriod: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Pod logs of this node under DIR (the default is the shared /var/log/pods).
podLogsDir: "$nd/pod-logs"
# No cluster DNS: hostNetwork pods use the host's resolv.conf.
resolvConf: "/etc/resolv.conf"
# Quicker status/readiness feedback for tests.
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
serializeImagePulls: false
EOF
}

start_kubelet() {
  local name="$1" ip="$2" nd="$NDIR/$1" ports
  read -r -a ports <<<"$(free_ports "$ip" 2)"
  mkdir -p "$nd/pki" "$nd/kubelet-root" "$nd/pod-logs"
  # Serving certificate for this node's address (kubectl logs: apiserver -> 127.0.0.x:port).
  sign_cert "$nd/pki/kubelet-serving" "/CN=$name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$ip,DNS:$name"
  # Client identity system:node:NAME in system:nodes, as the Node authorizer and NodeRestriction
  # admission of the apiserver (authorization Node,RBAC) expect.
  sign_cert "$nd/pki/kubelet-client" "/O=system:nodes/CN=system:node:$name" "$CLIENT_EXT"
  write_kubeconfig "$nd/kubelet.kubeconfig" "system:node:$name" "$nd/pki/kubelet-client" "$DIR/pki/ca.crt" "$APISERVER_URL"
  make_cgroup_root "$(cgroup_root "$name")"
  write_kubelet_config "$name" "$ip" "${ports[0]}" "${ports[1]}"
  printf '%s\n' "${ports[0]}" >"$nd/kubelet.port"
  log "$name: starting kubelet on $ip:${ports[0]}"
  # --node-ip 127.0.0.x: refused by the kubelet as loopback (see ensure_node_address), but it
  # still pins which address the node is meant to have.
  start "$nd/kubelet" "$NBIN/kubelet" \
    --config="$nd/kubelet.yaml" \
    --kubeconfig="$nd/kubelet.kubeconfig" \
    --root-dir="$nd/kubelet-root" \
    --cert-dir="$nd/pki" \
    --hostname-override="$name" \
    --node-ip="$ip" \
    --v=1
}

kubelet_healthz() {
  local name="$1" ip port
  ip="$(<"$NDIR/$name/ip")"
  port="$(sed -n 's/^healthzPort: //p' "$NDIR/$name/kubelet.yaml")"
  [[ "$(curl -s --max-time 2 "http://$ip:$port/healthz")" == ok ]]
}

node_registered() { kubectl_admin get node "$1" -o name; }

# kubelet v1.36 never publishes a loopback node address: validateNodeIP
# (pkg/kubelet/kubelet_node_status.go:720) returns "nodeIP can't be loopback address", so the
# NodeAddress setter (pkg/kubelet/nodestatus/setters.go:86) returns that error before it
# touches node.Status.Addresses; the kubelet only logs "Failed to set some node status fields"
# and the Node has no addresses (then pods get no hostIP and the apiserver cannot reach the
# kubelet). Leaving --node-ip out is no better: the kubelet would pick eth0's address, off
# loopback. So node.sh sets the address once itself. As the setter bails out before touching
# addresses on every later sync, the kubelet's status patches leave it alone (verified by
# node-smoke.sh, which checks it after pods ran). Only InternalIP, no Hostname entry: the
# apiserver prefers a Hostname address to reach kubelets and mo-node-N resolves nowhere.
ensure_node_address() {
  local name="$1" ip="$2" have
  have="$(kubectl_admin get node "$name" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}' 2>/dev/null)" || return 1
  [[ "$have" == "$ip" ]] && return 0
  kubectl_admin patch node "$name" --subresource=status --type=merge \
    -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$ip\"}]}}" >/dev/null
}

node_ready() {
  [[ "$(kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# The kubelet (protectKernelDefaults: false, the default) rewrites host sysctls at start:
# vm.overcommit_memory=1, vm.panic_on_oom=0, kernel.panic=10, kernel.panic_on_oops=1 and the
# kernel.keys quotas. The first `up` on a machine saves the values found in SYSCTL_SAVE; the
# `down` that leaves no kubelet running on the machine writes them back.
SYSCTL_SAVE="${MO_SYSCTL_SAVE:-/run/mo-node-sysctl.orig}"
KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

save_sysctls() {
  [[ -f "$SYSCTL_SAVE" ]] && return 0
  local k
  for k in "${KUBELET_SYSCTLS[@]}"; do
    [[ -r "/proc/sys/$k" ]] && printf '%s %s\n' "$k" "$(<"/proc/sys/$k")"
  done >"$SYSCTL_SAVE.tmp"
  mv "$SYSCTL_SAVE.tmp" "$SYSCTL_SAVE"
}

any_kubelet_running() {
  local f
  for f in /proc/[0-9]*/exe; do
    [[ "$(readlink "$f" 2>/dev/null || true)" == */kubelet ]] && return 0
  done
  return 1
}

restore_sysctls() {
  [[ -f "$SYSCTL_SAVE" ]] || return 0
  any_kubelet_running && return 0
  local k v
  while read -r k v; do
    [[ "$(<"/proc/sys/$k")" == "$v" ]] || printf '%s\n' "$v" >"/proc/sys/$k" 2>/dev/null ||
      log "WARNING: cannot restore /proc/sys/$k to $v"
  done <"$SYSCTL_SAVE"
  rm -f "$SYSCTL_SAVE"
}

# ---------------------------------------------------------------------------------------------
# Scheduler

start_scheduler() {
  local port
  port="$(free_ports 127.0.0.1 1)"
  # The built-in RBAC of user system:kube-scheduler (system:kube-scheduler,
  # system:volume-scheduler, extension-apiserver-authentication-reader) covers all it does.
  sign_cert "$NDIR/kube-scheduler" "/CN=system:kube-scheduler" "$CLIENT_EXT"
  write_kubeconfig "$NDIR/kube-scheduler.kubeconfig" system:kube-scheduler "$NDIR/kube-scheduler" "$DIR/pki/ca.crt" "$APISERVER_URL"
  printf '%s\n' "$port" >"$NDIR/kube-scheduler.port"
  log "starting kube-scheduler on 127.0.0.1:$port"
  start "$NDIR/kube-scheduler" "$NBIN/kube-scheduler" \
    --kubeconfig="$NDIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$NDIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$NDIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$port" \
    --leader-elect=false \
    --profiling=false \
    --v=0
  wait_until "$NDIR/kube-scheduler" kube-scheduler "kube-scheduler /healthz" \
    scheduler_healthz "$port"
}

scheduler_healthz() { [[ "$(curl -sk --max-time 2 "https://127.0.0.1:$1/healthz")" == ok ]]; }

# ---------------------------------------------------------------------------------------------
# Teardown of one node: everything it started, found by its own paths, never by name.

# Pids whose command line mentions this node's containerd socket: its containerd-shim-runc-v2
# processes (started with -address SOCKET).
shim_pids() {
  local sock="$1" f pid
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"
    pid="${pid%/cmdline}"
    [[ "$pid" == "$$" ]] && continue
    if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF -- "$sock"; then
      [[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == */containerd-shim* ]] && echo "$pid"
    fi
  done
  return 0
}

# Every pid in the node's cgroups (its pod containers).
cgroup_pids() {
  local cg="$1" h
  while read -r h; do
    [[ -d "$h/$cg" ]] && find "$h/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(cgroup_hierarchies)
  return 0
}

remove_cgroups() {
  local cg="$1" h
  while read -r h; do
    [[ -d "$h/$cg" ]] && find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done < <(cgroup_hierarchies)
  return 0
}

# Mount points under PATH, deepest first.
mounts_under() {
  awk -v p="$1/" 'index($5 "/", p) == 1 { print $5 }' /proc/self/mountinfo | sort -r | uniq
}

unmount_under() {
  local path="$1" m
  while read -r m; do
    [[ -n "$m" ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
  done < <(mounts_under "$path")
}

down_node() {
  local name="$1" nd="$NDIR/$1" sock cg pids i id
  sock="$nd/containerd.sock"
  cg="$(cgroup_root "$name")"
  stop "$nd/kubelet" kubelet
  # Pod containers: kill and delete their tasks through containerd while it runs (the shims
  # exit and runc and containerd clean their state and rootfs mounts).
  if alive "$nd/containerd" containerd && containerd_ready "$name" >/dev/null 2>&1; then
    for id in $(ctr_node "$name" tasks ls -q 2>/dev/null); do
      ctr_node "$name" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_node "$name" tasks ls -q 2>/dev/null); do
      for ((i = 0; i < 20; i++)); do
        ctr_node "$name" tasks delete "$id" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
  fi
  stop "$nd/containerd" containerd
  # Whatever survived (containerd killed earlier, a killed run): kill pod processes by cgroup
  # and the shims by socket path.
  for ((i = 0; i < 50; i++)); do
    pids="$(cgroup_pids "$cg") $(shim_pids "$sock")"
    [[ -n "${pids// /}" ]] || break
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  [[ -z "${pids// /}" ]] || log "WARNING: $name: processes left: $pids"
  unmount_under "$nd"
  remove_cgroups "$cg"
}

# ---------------------------------------------------------------------------------------------
# Commands

write_env() {
  local f="$NDIR/env" names=() ips=() socks=() name
  for name in $(node_names); do
    names+=("$name")
    ips+=("$(<"$NDIR/$name/ip")")
    socks+=("$NDIR/$name/containerd.sock")
  done
  {
    echo "# Generated by hack/node.sh up; sourced by ../env. Space-separated lists, same order."
    printf 'export MO_NODE_NAMES=%q\n' "${names[*]}"
    printf 'export MO_NODE_IPS=%q\n' "${ips[*]}"
    printf 'export MO_NODE_CONTAINERD_SOCKETS=%q\n' "${socks[*]}"
    printf 'export MO_NODE_CTR=%q\n' "$(command -v ctr)"
    printf 'export MO_NODE_BIN_DIR=%q\n' "$NBIN"
    printf 'export MO_PAUSE_IMAGE=%q\n' "$PAUSE_TAG"
    printf 'export MO_SCHEDULER_PID=%q\n' "$(<"$NDIR/kube-scheduler.pid")"
    printf 'export MO_SCHEDULER_PORT=%q\n' "$(<"$NDIR/kube-scheduler.port")"
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

nodes_up() {
  [[ -f "$NDIR/$MARKER" && -f "$NDIR/env" ]] || return 1
  alive "$NDIR/kube-scheduler" kube-scheduler || return 1
  local name n=0
  for name in $(node_names); do
    alive "$NDIR/$name/containerd" containerd && alive "$NDIR/$name/kubelet" kubelet || return 1
    node_ready "$name" >/dev/null 2>&1 || return 1
    n=$((n + 1))
  done
  ((n == WANT))
}

cmd_up() {
  load_cluster
  command -v openssl >/dev/null 2>&1 || die "openssl is required"
  command -v curl >/dev/null 2>&1 || die "curl is required"
  ((EUID == 0)) || die "node.sh must run as root (containerd, runc, kubelet, cgroups, mounts)"
  if ! [[ "$WANT" =~ ^[0-9]+$ ]] || ((WANT < 1 || WANT > 254)); then
    die "N must be 1..254, not ${WANT@Q}"
  fi
  if nodes_up; then
    log "$WANT node(s) of $DIR already up"
    return 0
  fi
  if [[ -f "$NDIR/$MARKER" ]]; then
    log "stale node state in $NDIR; stopping leftovers first"
    cmd_down_inner
  fi
  NBIN="${MO_NODE_BIN_DIR:-$("$HERE/tools-node.sh" bindir)}"
  local b
  for b in kubelet kube-scheduler pause.tar pause.tag; do
    [[ -e "$NBIN/$b" ]] || die "$NBIN/$b is missing; run hack/tools-node.sh"
  done
  for b in containerd ctr runc containerd-shim-runc-v2; do
    command -v "$b" >/dev/null 2>&1 || die "$b is not on PATH; run hack/tools-node.sh"
  done
  [[ -x "$CNI_BIN_DIR/loopback" ]] || die "$CNI_BIN_DIR/loopback is missing; run hack/tools-node.sh"
  PAUSE_TAG="$(<"$NBIN/pause.tag")"

  local start_s=$SECONDS i name ip
  DEADLINE=$((SECONDS + TIMEOUT))
  mkdir -p "$NDIR"
  touch "$NDIR/$MARKER"
  SNAPSHOTTER="$(pick_snapshotter)"
  printf '%s\n' "$SNAPSHOTTER" >"$NDIR/snapshotter"

  save_sysctls
  start_scheduler || die "kube-scheduler failed to start (log: $NDIR/kube-scheduler.log; clean up: $0 down $DIR)"
  for ((i = 1; i <= WANT; i++)); do
    name="mo-node-$i"
    ip="127.0.0.$i"
    mkdir -p "$NDIR/$name"
    printf '%s\n' "$ip" >"$NDIR/$name/ip"
    touch "$NDIR/$name/.node"
    start_containerd "$name" "$ip" || die "$name: containerd failed (clean up: $0 down $DIR)"
    start_kubelet "$name" "$ip"
  done
  for ((i = 1; i <= WANT; i++)); do
    name="mo-node-$i"
    ip="127.0.0.$i"
    wait_until "$NDIR/$name/kubelet" kubelet "$name to register" node_registered "$name" ||
      die "kubelet of $name did not register (clean up: $0 down $DIR)"
    wait_until "$NDIR/$name/kubelet" kubelet "$name's InternalIP $ip" ensure_node_address "$name" "$ip" ||
      die "cannot set the address of $name"
  done
  for ((i = 1; i <= WANT; i++)); do
    name="mo-node-$i"
    wait_until "$NDIR/$name/kubelet" kubelet "$name to be Ready" node_ready "$name" ||
      die "$name did not become Ready (clean up: $0 down $DIR)"
    wait_until "$NDIR/$name/kubelet" kubelet "$name's kubelet /healthz" kubelet_healthz "$name" ||
      die "$name's kubelet is not healthy"
    ensure_node_address "$name" "127.0.0.$i" || die "cannot set the address of $name"
  done
  write_env
  log "$WANT node(s) Ready in $((SECONDS - start_s))s: $(node_names | tr '\n' ' ')(source $NDIR/env)"
}

cmd_down_inner() {
  local name
  for name in $(node_names); do
    down_node "$name"
  done
  stop "$NDIR/kube-scheduler" kube-scheduler
  # Best effort: forget the Nodes if the apiserver still runs (cluster.sh down calls us first).
  local names
  names="$(node_names | tr '\n' ' ')"
  if [[ -n "${names// /}" && -x "${BIN:-}/kubectl" ]]; then
    # shellcheck disable=SC2086 # a list of names
    kubectl_admin delete node $names --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  unmount_under "$NDIR"
  rm -rf "$NDIR"
  restore_sysctls
}

cmd_down() {
  [[ -d "$DIR" ]] || return 0
  DIR="$(cd "$DIR" && pwd)"
  NDIR="$DIR/nodes"
  [[ -d "$NDIR" ]] || return 0
  [[ -f "$NDIR/$MARKER" ]] || die "$NDIR was not made by this script (no $MARKER); refusing to touch it"
  CLUSTER_ID="$(printf '%s' "$DIR" | sha256sum | cut -c1-8)"
  BIN="$(sed -n 's/^export MO_BIN_DIR=//p' "$DIR/env" 2>/dev/null | tail -n 1)"
  cmd_down_inner
  log "nodes of $DIR stopped and removed"
}

# Expected image names (containerd's normalized references) in a docker- or oci-archive.
archive_names() {
  python3 - "$1" <<'EOF'
import json, sys, tarfile

def normalize(ref):
    name, tag = ref, ""
    if "@" not in ref:
        slash = ref.rfind("/")
        colon = ref.rfind(":")
        if colon > slash:
            name, tag = ref[:colon], ref[colon + 1:]
    first = name.split("/")[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return name + (":" + (tag or "latest") if "@" not in ref else "")

with tarfile.open(sys.argv[1]) as t:
    names = t.getnames()
    if "manifest.json" in names:
        for m in json.load(t.extractfile("manifest.json")):
            for ref in m.get("RepoTags") or []:
                print(normalize(ref))
    elif "index.json" in names:
        for d in json.load(t.extractfile("index.json")).get("manifests", []):
            a = d.get("annotations") or {}
            ref = a.get("io.containerd.image.name") or a.get("org.opencontainers.image.ref.name")
            if ref and ("/" in ref or ":" in ref):
                print(normalize(ref))
EOF
}

cmd_import() {
  local archive="$1" name want=() n
  [[ -f "$archive" ]] || die "no image archive $archive"
  load_cluster
  [[ -f "$NDIR/$MARKER" ]] || die "no nodes in $DIR; run: $0 up $DIR"
  mapfile -t want < <(archive_names "$archive")
  ((${#want[@]} > 0)) || die "$archive names no image (docker-archive RepoTags / oci-archive ref.name annotation)"
  for name in $(node_names); do
    alive "$NDIR/$name/containerd" containerd || die "$name's containerd is not running"
    import_archive "$name" "$archive" || die "$name: ctr images import $archive failed"
    # The list is read whole first: `ctr ... | grep -q` fails under pipefail whenever grep stops
    # reading early (ctr then dies of SIGPIPE), which made this check flaky.
    local listed
    listed="$(ctr_node "$name" images ls -q)"
    for n in "${want[@]}"; do
      grep -qxF -- "$n" <<<"$listed" ||
        die "$name: $n not listed after import; images: $(tr '\n' ' ' <<<"$listed")"
    done
  done
  log "imported ${want[*]} into: $(node_names | tr '\n' ' ')"
}

main() {
  (($# >= 2)) || usage
  local cmd="$1"
  DIR="$2"
  [[ -n "$DIR" ]] || usage
  case "$cmd" in
  up)
    (($# == 2 || $# == 3)) || usage
    WANT="${3:-2}"
    cmd_up
    ;;
  import)
    (($# == 3)) || usage
    cmd_import "$3"
    ;;
  down)
    (($# == 2)) || usage
    cmd_down
    ;;
  *) usage ;;
  esac
}

main "$@"
