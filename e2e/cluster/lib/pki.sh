# The cluster's PKI: one CA for everything, service-account keys, and a
# certificate per component. Sourced by `up`.
# shellcheck shell=bash

pki_sign() { # pki_sign NAME SUBJECT EXTENSIONS
  local name=$1 subject=$2 ext=$3 dir=$STATE_DIR/pki
  [ -f "$dir/$name.crt" ] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -out "$dir/$name.crt" -extfile <(printf '%b' "$ext") 2>/dev/null
  rm -f "$dir/$name.csr"
}

pki_create() {
  local dir=$STATE_DIR/pki
  mkdir -p "$dir"; chmod 700 "$dir"
  if [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" \
      -days 3650 -subj "/CN=flynn-local-ca" 2>/dev/null
  fi
  [ -f "$dir/sa.key" ] || { openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null; openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null; }
  local client="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
  local server="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth"
  pki_sign apiserver /CN=kube-apiserver "$server\nsubjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" "$client"
  pki_sign admin "/CN=flynn-admin/O=system:masters" "$client"
  pki_sign controller-manager /CN=system:kube-controller-manager "$client"
  pki_sign scheduler /CN=system:kube-scheduler "$client"
  pki_sign kube-proxy /CN=system:kube-proxy "$client"
  pki_sign kubelet "/CN=system:node:$NODE_NAME/O=system:nodes" "$client"
  pki_sign kubelet-serving "/CN=system:node:$NODE_NAME" "$server\nsubjectAltName=IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
}

kubeconfig_create() { # kubeconfig_create NAME CERT
  local out=$STATE_DIR/$1.kubeconfig cert=$2 dir=$STATE_DIR/pki
  [ -f "$out" ] && return 0
  local k=(kubectl config --kubeconfig="$out")
  "${k[@]}" set-cluster flynn-local --server="https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority="$dir/ca.crt" --embed-certs >/dev/null
  "${k[@]}" set-credentials "$1" --client-certificate="$dir/$cert.crt" --client-key="$dir/$cert.key" --embed-certs >/dev/null
  "${k[@]}" set-context flynn-local --cluster=flynn-local --user="$1" >/dev/null
  "${k[@]}" use-context flynn-local >/dev/null
  chmod 600 "$out"
}
