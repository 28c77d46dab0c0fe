# shellcheck shell=bash
# write_kubeconfig FILE USER CERT_PREFIX CA_FILE SERVER: a kubeconfig (mode 600) for a client
# certificate user (CERT_PREFIX.crt, CERT_PREFIX.key) of the API server at SERVER. Sourced by
# hack/cluster.sh and hack/node.sh.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3" ca="$4" server="$5"
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mo-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert.crt")
    client-key-data: $(base64 -w0 <"$cert.key")
contexts:
- name: $user@mo-test
  context:
    cluster: mo-test
    user: $user
current-context: $user@mo-test
KUBECONFIG
  chmod 600 "$file"
}
