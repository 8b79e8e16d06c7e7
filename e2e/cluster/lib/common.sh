# Shared settings for the local cluster scripts. Sourced, not executed.
# shellcheck shell=bash

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$CLUSTER_DIR/../.." && pwd)
MODULES_DIR=$CLUSTER_DIR/modules

# Built binaries live outside the repo and survive fresh clones.
FLYNN_CACHE=${FLYNN_CACHE:-$HOME/.cache/flynn}
BIN_DIR=${FLYNN_CLUSTER_BIN:-$FLYNN_CACHE/cluster-bin}
# Runtime state of the running cluster (pki, kubeconfigs, logs, pids).
STATE_DIR=${FLYNN_CLUSTER_STATE:-/var/lib/flynn-cluster}
KUBECONFIG_PATH=$STATE_DIR/admin.kubeconfig

KUBERNETES_VERSION=$(cat "$MODULES_DIR/kubernetes/VERSION")
ETCD_VERSION=$(cat "$MODULES_DIR/etcd/VERSION")
CONTAINERD_VERSION=$(cat "$MODULES_DIR/containerd/VERSION")
HELM_VERSION=$(cat "$MODULES_DIR/helm/VERSION")
RUNC_VERSION=$(cat "$MODULES_DIR/runc/VERSION")
COREDNS_VERSION=$(cat "$MODULES_DIR/coredns/VERSION")

# Addresses. The node IP lives on a dummy interface the scripts create, so the
# API server can publish it as the `kubernetes` Service endpoint (loopback is refused).
NODE_NAME=${FLYNN_NODE_NAME:-flynn-node}
NODE_IP=10.88.0.1
NODE_CIDR=10.88.0.1/32
POD_CIDR=10.244.0.0/16
POD_SUBNET=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
APISERVER_PORT=${FLYNN_APISERVER_PORT:-6443}
ETCD_CLIENT_PORT=${FLYNN_ETCD_PORT:-2379}
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

CONTAINERD_SOCK=/run/flynn-containerd/containerd.sock
# ctr against the node's containerd, in the namespace the CRI uses, without the
# cgroup v1 deprecation warning ctr prints on every call on these hosts.
ctr_k8s() {
  # `|| true`: grep -v exits 1 when ctr printed nothing else, which is success.
  { "$BIN_DIR/ctr" -a "$CONTAINERD_SOCK" -n k8s.io "$@" 2>&1 1>&3 3>&- | { grep -v 'support for cgroup v1 is deprecated' >&2 || true; }; } 3>&1
  return "${PIPESTATUS[0]}"
}

# image_present REF: whether the node's containerd has the image. (No `grep -q`
# in a pipeline: with pipefail, its early exit fails the pipeline on SIGPIPE.)
image_present() {
  local refs
  refs=$(ctr_k8s images ls -q) || return 1
  grep -Fx -- "$1" <<<"$refs" >/dev/null
}

# One cluster operation (up, down, restart) at a time. Two `up`s started together both
# found no cluster, raced for the ports and left a half-started one whose API server
# no pid file knew. The lock is released when the holder exits; the components it
# starts do not inherit it (proc_start closes fd 9), and scripts it runs (`up` runs
# `down` to clean up a crashed cluster) see FLYNN_CLUSTER_LOCKED and do not wait for it.
cluster_lock() {
  [ -n "${FLYNN_CLUSTER_LOCKED:-}" ] && return 0
  mkdir -p "$(dirname "$STATE_DIR")"
  exec 9>"$STATE_DIR.lock"
  if ! flock -n 9; then
    log "another e2e/cluster up/down/restart is running; waiting for it (lock $STATE_DIR.lock)"
    flock 9
  fi
  export FLYNN_CLUSTER_LOCKED=1
}
