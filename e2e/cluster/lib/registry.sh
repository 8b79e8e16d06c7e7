# The local OCI registry: CNCF distribution (Debian's docker-registry package, the same
# server as the registry:2 image kind's local-registry guide runs beside its node), on
# localhost:5001 as in that guide, so image names are the same here and on kind. The
# node's containerd pulls from it over plain HTTP (hosts.toml below); the platform's
# images are pushed to it by e2e/images and the chart pulls them by digest.
# Sourced by node.sh.
# shellcheck shell=bash

REGISTRY_HOST=localhost:${FLYNN_REGISTRY_PORT:-5001}
REGISTRY_PORT=${FLYNN_REGISTRY_PORT:-5001}

# Written before containerd starts: containerd reads certs.d/<host>/hosts.toml per pull.
registry_write_config() {
  local c=$STATE_DIR/config
  mkdir -p "$c/certs.d/$REGISTRY_HOST" "$STATE_DIR/registry"
  cat > "$c/registry.yml" <<YAML
version: 0.1
log: {level: warn, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: $STATE_DIR/registry}
  cache: {blobdescriptor: inmemory}
http:
  # Loopback only: the node's containerd (host network) pulls from it and e2e/images pushes
  # to it. It has no authentication, so every process on this machine, hostNetwork pods
  # among them, can push too: this is a development cluster's registry, not a model for a
  # shared one. Deleting is off.
  addr: 127.0.0.1:$REGISTRY_PORT
  headers: {X-Content-Type-Options: [nosniff]}
health:
  storagedriver: {enabled: true, interval: 10s, threshold: 3}
YAML
  cat > "$c/certs.d/$REGISTRY_HOST/hosts.toml" <<TOML
# Plain HTTP to the local registry (it listens on loopback only).
server = "http://$REGISTRY_HOST"
[host."http://$REGISTRY_HOST"]
  capabilities = ["pull", "resolve"]
TOML
}

registry_up() {
  command -v docker-registry >/dev/null || die "docker-registry is missing: run e2e/cluster/deps (Debian package docker-registry)"
  registry_write_config
  log "starting the local registry on $REGISTRY_HOST"
  proc_start registry docker-registry serve "$STATE_DIR/config/registry.yml"
  wait_for "the registry on $REGISTRY_HOST" 30 registry curl -fsS "http://$REGISTRY_HOST/v2/"
}
