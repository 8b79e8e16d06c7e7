# Cluster DNS: CoreDNS (built from the module proxy) as a Deployment in
# kube-system behind the 10.96.0.10 Service, like kubeadm sets it up.
# It answers cluster.local only: pods have no business with outside names here.
# shellcheck shell=bash

COREDNS_IMAGE=localhost/flynn-coredns:$COREDNS_VERSION

dns_up() {
  if ! image_present "$COREDNS_IMAGE"; then
    local root; root=$(mktemp -d)
    install -D -m 755 "$BIN_DIR/coredns" "$root/coredns"
    "$CLUSTER_DIR/load-image" --entrypoint /coredns --user 65534:65534 "$root" "$COREDNS_IMAGE" >&2
    rm -rf "$root"
  fi
  sed -e "s|@IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_IP@|$DNS_SVC_IP|" "$CLUSTER_DIR/config/coredns.yaml" \
    | "${K[@]}" apply -f - >/dev/null
  wait_for "CoreDNS to become available" 120 "" "${K[@]}" -n kube-system wait --for=condition=Available deploy/coredns --timeout=2s
}
