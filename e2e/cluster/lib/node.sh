# The node: containerd 2.x with runc, CNI bridge networking, the kubelet and
# kube-proxy. Sourced by `up` after the control plane is ready.
# shellcheck shell=bash

PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
source "$CLUSTER_DIR/lib/registry.sh"

write_node_config() {
  local c=$STATE_DIR/config
  mkdir -p "$c" "$STATE_DIR/cni/net.d" "$STATE_DIR/containerd" "$STATE_DIR/kubelet" /run/flynn-containerd
  cat > "$c/containerd.toml" <<TOML
version = 3
root = "$STATE_DIR/containerd"
state = "/run/flynn-containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # Images come from the local registry ($REGISTRY_HOST, see lib/registry.sh), or are
  # imported by e2e/cluster/load-image. Nothing is pulled from outside this machine.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$c/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which sandboxed machines like
  # these lack (runc fails with "can't get final child's PID from pipe"). This
  # clamps the kubelet's negative scores (-998 for pause) to containerd's own.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$BIN_DIR/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE_DIR/cni/net.d"
TOML
  # No ipMasq: pod traffic never needs to leave this machine, and masquerade
  # rules would outlive the cluster.
  cat > "$STATE_DIR/cni/net.d/10-flynn.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "flynn", "plugins": [
  {"type": "bridge", "bridge": "flynn-cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
  # Pods get the cluster DNS only; the host's resolver is not theirs to use.
  : > "$c/resolv.conf"
  cat > "$c/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE_DIR/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $STATE_DIR/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE_DIR/pki/kubelet-serving.key
clusterDomain: cluster.local
clusterDNS: [$DNS_SVC_IP]
resolvConf: $c/resolv.conf
podCIDR: $POD_SUBNET
maxPods: 200
# The root filesystem is shared with the build caches: never evict or GC for disk.
localStorageCapacityIsolation: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
serializeImagePulls: false
YAML
}

import_pause_image() {
  if image_present "$PAUSE_IMAGE"; then return 0; fi
  local tar=$FLYNN_CACHE/images/pause-3.10.1.tar
  if [ ! -f "$tar" ]; then
    # Upstream's pause.c, from the pinned k8s.io/kubernetes module, built static.
    local src
    src=$(cd "$MODULES_DIR/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    [ -f "$src" ] || src=$(go mod download -json "k8s.io/kubernetes@v$KUBERNETES_VERSION" | jq -r .Dir)/build/pause/linux/pause.c
    local root; root=$(mktemp -d)
    gcc -Os -static -DVERSION=v3.10.1 -o "$root/pause" "$src" || die "compiling pause.c failed: install gcc and libc6-dev"
    "$CLUSTER_DIR/load-image" --save "$tar" --entrypoint /pause --user 65535:65535 "$root" "$PAUSE_IMAGE" >&2
    rm -rf "$root"
  fi
  ctr_k8s images import --base-name "${PAUSE_IMAGE%:*}" "$tar" >/dev/null
}

node_up() {
  write_node_config
  registry_up
  log "starting containerd $CONTAINERD_VERSION"
  proc_start containerd containerd --config "$STATE_DIR/config/containerd.toml"
  wait_for "containerd socket" 30 containerd ctr_k8s version
  import_pause_image

  log "starting kubelet and kube-proxy"
  proc_start kubelet kubelet --config="$STATE_DIR/config/kubelet.yaml" \
    --kubeconfig="$STATE_DIR/kubelet.kubeconfig" --root-dir="$STATE_DIR/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  proc_start kube-proxy kube-proxy --kubeconfig="$STATE_DIR/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --cluster-cidr="$POD_CIDR" --proxy-mode=iptables \
    --conntrack-max-per-core=0 --bind-address=127.0.0.1 --metrics-bind-address=127.0.0.1:10249 \
    --healthz-bind-address=127.0.0.1:10256 --v=1
  wait_for "node $NODE_NAME to register" 90 kubelet "${K[@]}" get node "$NODE_NAME"
  wait_for "node $NODE_NAME to become Ready" 120 kubelet "${K[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  source "$CLUSTER_DIR/lib/dns.sh"
  dns_up
}
