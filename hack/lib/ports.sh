# shellcheck shell=bash
# free_ports IP N: prints N distinct free TCP ports on IP (an address in 127.0.0.0/8), held open
# together while picking. Sourced by hack/cluster.sh, hack/node.sh, e2e/e2e.sh
# and e2e/e2e-node.sh.
free_ports() {
  local ip="$1" n="$2"
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$ip" "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((sys.argv[1], 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
  else
    # Fallback: random ports outside the ephemeral range that nothing answers on.
    local ports=() p
    while ((${#ports[@]} < n)); do
      p=$((20000 + RANDOM % 12000))
      if [[ " ${ports[*]} " == *" $p "* ]]; then continue; fi
      if (exec 3<>"/dev/tcp/$ip/$p") 2>/dev/null; then continue; fi
      ports+=("$p")
    done
    echo "${ports[*]}"
  fi
}
