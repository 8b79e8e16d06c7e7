#!/usr/bin/env bash
# Router benchmark 1 (throughput and latency) against nginx and HAProxy, measured in the same
# run. Not part of CI. Needs root, the local cluster (e2e/cluster/up) and
#   apt-get install -y nginx wrk haproxy nghttp2-client strace
#
# Layout (2 cores): the proxy under test is pinned to CPU 1; the backend (nginx, one worker,
# `return 200`) and wrk are pinned to CPU 0. On a larger machine give the load side cores
# of its own: PROXY_CPU (default 1), BACKEND_CPUS and WRK_CPUS (taskset lists, default 0);
# wrk's thread count follows WRK_THREADS (default 1). The backend lives in a network namespace of its
# own (10.77.250.2), because the router learns it from an EndpointSlice and the API server
# refuses loopback addresses there. Each proxy keeps idle keep-alive connections to it.
#
# Rounds alternate direct / router / nginx / haproxy; the script prints each run and the
# median of the per-round ratios (single runs swing by ±15 % on this machine).
#
# Benchmark 2 (reconfiguration under load), 3 (scale: 10,000 routes) and `idle` (memory per
# idle keep-alive client connection, router and nginx; after 3, so that its connections do
# not weigh on 3's RSS) follow; choose with PHASES="1 2 3 idle" (default all). They use
# examples/bench_driver.rs.
#
# Usage: router/benches/bench.sh [ROUNDS (5)] [SECONDS per run (5)] [CONNECTIONS (50)]
# A/B: BASE_ROUTER_BIN=/path/to/another/flynn-router adds target `base` (that binary, same
# routes, same pinning) to every round of benchmark 1, with router/base ratios; its flags are
# BASE_ROUTER_ARGS if set, else ROUTER_ARGS. FLOOR=1 adds target `floor`
# (examples/floor_proxy.rs: the least a tokio proxy can do), the yardstick for what is left.
set -euo pipefail
[ -n "${BENCH_TRACE:-}" ] && set -x
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-50}; PHASES=${PHASES:-1 2 3 idle h2spec}
IDLE_CONNS=${IDLE_CONNS:-10000}
ulimit -n "$(ulimit -Hn)"  # the idle phase's connections, in the driver and in each proxy
PROXY_CPU=${PROXY_CPU:-1}; BACKEND_CPUS=${BACKEND_CPUS:-0}; WRK_CPUS=${WRK_CPUS:-0}
WRK_THREADS=${WRK_THREADS:-1}
export KUBECONFIG=${KUBECONFIG:-/var/lib/flynn-cluster/admin.kubeconfig}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/flynn/target}
for t in nginx wrk haproxy strace taskset kubectl ip; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y nginx wrk haproxy strace" >&2; exit 1; }
done
cargo build --release -p flynn-router --bins --examples -j 2 >/dev/null 2>&1 || cargo build --release -p flynn-router --bins --examples -j 2
ROUTER_BIN=$CARGO_TARGET_DIR/release/flynn-router
DRIVER=$CARGO_TARGET_DIR/release/examples/bench_driver

NS=flynn-router-bench-$$
NETNS=flrt-bench
WORK=$(mktemp -d /tmp/flynn-router-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del $NETNS 2>/dev/null || true
  kubectl delete ns $NS --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- backend in a network namespace -------------------------------------------------------
ip netns del $NETNS 2>/dev/null || true
ip netns add $NETNS
ip link add flrtbenchh type veth peer name eth0 netns $NETNS
ip addr add 10.77.250.1/24 dev flrtbenchh; ip link set flrtbenchh up
ip -n $NETNS addr add 10.77.250.2/24 dev eth0; ip -n $NETNS addr add 10.77.250.3/24 dev eth0
ip -n $NETNS link set lo up; ip -n $NETNS link set eth0 up
BACKEND=10.77.250.2:8080
mkdir -p "$WORK/backend"
cat >"$WORK/backend/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/backend/nginx.pid; error_log $WORK/backend/error.log;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 8080 reuseport; location / { return 200 "hello from the backend\n"; } } }
CONF
ip netns exec $NETNS taskset -c "$BACKEND_CPUS" nginx -c "$WORK/backend/nginx.conf" -e "$WORK/backend/error.log" &
PIDS+=($!)

# --- nginx as the equivalent keep-alive reverse proxy ------------------------------------
mkdir -p "$WORK/proxy/conf.d"
echo "upstream app { server $BACKEND; keepalive 256; keepalive_requests 1000000; }" >"$WORK/proxy/upstream.conf"
cat >"$WORK/proxy/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/proxy/nginx.pid; error_log $WORK/proxy/error.log;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server_names_hash_bucket_size 128; server_names_hash_max_size 65536;
  include $WORK/proxy/upstream.conf; include $WORK/proxy/conf.d/*.conf;
  server { listen 127.0.0.1:18081 reuseport;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Request-Id \$request_id; } } }
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log" &
PIDS+=($!); NGINX_PID=$!

# --- HAProxy, one thread ---------------------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
  option forwardfor
frontend fe
  bind 127.0.0.1:18082
  http-request set-header X-Forwarded-Proto http
  default_backend be
backend be
  server app $BACKEND
CONF
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 &
PIDS+=($!); HAPROXY_PID=$!

# --- the router, watching the API server ---------------------------------------------------
# The API server deleting an earlier run's namespace (10,000 Routes after benchmark 3) keeps
# both cores busy for a minute or two: wait for it rather than measure it.
for _ in $(seq 120); do
  kubectl get ns -o name | grep -q '^namespace/flynn-router-bench-' || break
  [ -n "${waited:-}" ] || { echo "waiting for an earlier run's namespace to be deleted" >&2; waited=1; }
  sleep 2
done
kubectl create ns $NS >/dev/null 2>&1 || true
# An installed platform (e2e/demo's) leaves namespaces with this label to their own router
# and operator; without it, its router and operator would take on the 10,000 Routes of
# benchmark 3 too, and their status writes would slow the API server under benchmark 2.
kubectl label ns $NS flynn.io/test=bench --overwrite >/dev/null
kubectl apply -f crds/flynn.io_routes.yaml >/dev/null
kubectl -n $NS apply -f - >/dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-web-1, labels: {kubernetes.io/service-name: bench-web}}
addressType: IPv4
ports: [{name: "", port: 8080, protocol: TCP}]
endpoints: [{addresses: ["10.77.250.2"], conditions: {ready: true}}]
---
apiVersion: flynn.io/v1alpha1
kind: Route
metadata: {name: bench}
spec: {type: http, app: bench, http: {domain: bench.test}}
---
apiVersion: flynn.io/v1alpha1
kind: Route
metadata: {name: h2spec}
spec: {type: http, app: bench, http: {domain: 127.0.0.1}}
YAML
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/crt.pem" >/dev/null 2>&1
RUST_LOG=warn taskset -c "$PROXY_CPU" "$ROUTER_BIN" --namespace $NS --http-addr 127.0.0.1:18080 \
  --https-addr 127.0.0.1:18443 --default-cert "$WORK/crt.pem" --default-key "$WORK/key.pem" \
  --admin-addr 127.0.0.1:19090 --workers 1 ${ROUTER_ARGS:-} &
PIDS+=($!); ROUTER_PID=$!
TARGETS="direct router nginx haproxy"
if [ -n "${BASE_ROUTER_BIN:-}" ]; then
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$BASE_ROUTER_BIN" --namespace $NS --http-addr 127.0.0.1:18190 \
    --https-addr 127.0.0.1:18544 --default-cert "$WORK/crt.pem" --default-key "$WORK/key.pem" \
    --admin-addr 127.0.0.1:19191 --workers 1 ${BASE_ROUTER_ARGS-${ROUTER_ARGS:-}} &
  PIDS+=($!); BASE_PID=$!
  TARGETS="direct router base nginx haproxy"
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.test' http://127.0.0.1:18190/)" = 200 ] && break
    sleep 0.1
  done
fi
if [ -n "${FLOOR:-}" ]; then
  taskset -c "$PROXY_CPU" "$CARGO_TARGET_DIR/release/examples/floor_proxy" 127.0.0.1:18191 $BACKEND &
  PIDS+=($!); FLOOR_PID=$!
  TARGETS="$TARGETS floor"
fi
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.test' http://127.0.0.1:18080/)" = 200 ] && break
  sleep 0.1
done

declare -A URL=([direct]=http://$BACKEND/ [router]=http://127.0.0.1:18080/ \
  [nginx]=http://127.0.0.1:18081/ [haproxy]=http://127.0.0.1:18082/)
[ -n "${BASE_PID:-}" ] && URL[base]=http://127.0.0.1:18190/
declare -A PID=([router]=$ROUTER_PID [nginx]=$(cat "$WORK/proxy/nginx.pid" 2>/dev/null || echo $NGINX_PID) \
  [haproxy]=$HAPROXY_PID)
# nginx's master forks one worker: measure the worker.
NGINX_WORKER=$(pgrep -P "${PID[nginx]}" | head -1); PID[nginx]=${NGINX_WORKER:-${PID[nginx]}}
[ -n "${BASE_PID:-}" ] && PID[base]=$BASE_PID
[ -n "${FLOOR_PID:-}" ] && { PID[floor]=$FLOOR_PID; URL[floor]=http://127.0.0.1:18191/; }
for name in $TARGETS; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: bench.test' "${URL[$name]}" || true)
  [ "$code" = 200 ] || { echo "$name does not answer 200 (got $code)" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# "busy total" jiffies of CPU $1 (busy = everything but idle and iowait).
# "busy total" jiffies summed over the CPUs of taskset list $1 (e.g. 0 or 2,3 or 2-3).
cpu_busy() {
  local cpus; cpus=$(awk -v l="$1" 'BEGIN{n=split(l,p,","); for (i=1;i<=n;i++) {
    if (split(p[i],r,"-")==2) for (c=r[1];c<=r[2];c++) printf "cpu%d ", c; else printf "cpu%d ", p[i] }}')
  awk -v cs=" $cpus" 'index(cs, " " $1 " ") {for (i=2;i<=NF;i++) {t+=$i}; b+=0; for (i=2;i<=NF;i++) if (i!=5 && i!=6) b+=$i}
    END {print b, t}' /proc/stat
}
busy_pct() { awk -v a="$1" -v b="$2" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.0f", 100*(y[1]-x[1])/(y[2]-x[2])}'; }
TCK=$(getconf CLK_TCK)

# run NAME → "rps p50_us p99_us cpu_us_per_req load_busy% proxy_busy%"
run() {
  local name=$1 before after out c0 c1 c0b c1b
  [ -n "${PID[$name]:-}" ] && before=$(cpu_ticks "${PID[$name]}")
  c0=$(cpu_busy "$WRK_CPUS,$BACKEND_CPUS"); c1=$(cpu_busy "$PROXY_CPU")
  out=$(taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -H 'Host: bench.test' "${URL[$name]}")
  c0b=$(cpu_busy "$WRK_CPUS,$BACKEND_CPUS"); c1b=$(cpu_busy "$PROXY_CPU")
  [ -n "${PID[$name]:-}" ] && after=$(cpu_ticks "${PID[$name]}")
  local rps p50 p99 reqs cpu=-
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  if [ -n "${before:-}" ]; then cpu=$(awk -v d=$((after-before)) -v t="$TCK" -v n="$reqs" 'BEGIN{printf "%.1f", d/t*1e6/n}'); fi
  echo "$rps $(to_us "$p50") $(to_us "$p99") $cpu $(busy_pct "$c0" "$c0b") $(busy_pct "$c1" "$c1b")"
}
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); print v+0} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1e6} }'; }

if [[ " $PHASES " == *" 1 "* ]]; then
echo "# wrk -t$WRK_THREADS -c$CONNS -d${SECS}s; proxy on CPU $PROXY_CPU, backend on $BACKEND_CPUS, wrk on $WRK_CPUS; $ROUNDS rounds"
printf "%-6s %-8s %10s %9s %9s %12s %6s %6s\n" round target rps p50_us p99_us cpu_us/req load% proxy%
declare -A RESULTS
for r in $(seq "$ROUNDS"); do
  for name in $TARGETS; do
    res=$(run $name); RESULTS[$r,$name]=$res
    printf "%-6s %-8s %10s %9s %9s %12s %6s %6s\n" "$r" "$name" $res
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { # field a b → median over rounds of a/b
  for r in $(seq "$ROUNDS"); do
    awk -v x="$(cut -d' ' -f"$1" <<<"${RESULTS[$r,$2]}")" -v y="$(cut -d' ' -f"$1" <<<"${RESULTS[$r,$3]}")" 'BEGIN{printf "%.3f\n", x/y}'
  done | median
}
med() { for r in $(seq "$ROUNDS"); do cut -d' ' -f"$1" <<<"${RESULTS[$r,$2]}"; done | median; }
echo
echo "# medians"
printf "%-8s %10s %9s %9s %12s\n" target rps p50_us p99_us cpu_us/req
for name in $TARGETS; do
  printf "%-8s %10s %9s %9s %12s\n" $name "$(med 1 $name)" "$(med 2 $name)" "$(med 3 $name)" "$(med 4 $name)"
done
echo
echo "# median per-round ratios"
echo "router/nginx   rps $(ratio 1 router nginx)   p99 $(ratio 3 router nginx)   cpu/req $(ratio 4 router nginx)"
if [ -n "${BASE_PID:-}" ]; then
  echo "base/nginx     rps $(ratio 1 base nginx)   p99 $(ratio 3 base nginx)   cpu/req $(ratio 4 base nginx)"
  echo "router/base    rps $(ratio 1 router base)   p99 $(ratio 3 router base)   cpu/req $(ratio 4 router base)"
fi
if [ -n "${FLOOR_PID:-}" ]; then
  echo "router/floor   rps $(ratio 1 router floor)   p99 $(ratio 3 router floor)   cpu/req $(ratio 4 router floor)"
  echo "floor/nginx    rps $(ratio 1 floor nginx)   p99 $(ratio 3 floor nginx)   cpu/req $(ratio 4 floor nginx)"
fi
echo "router/haproxy rps $(ratio 1 router haproxy)   p99 $(ratio 3 router haproxy)"
echo "router/direct  rps $(ratio 1 router direct)"
echo "nginx/direct   rps $(ratio 1 nginx direct)"

# Syscalls per request: strace -c over a fixed-length wrk run (strace slows the proxy; the
# ratio between proxies is what matters).
echo
echo "# syscalls per request (strace -c -f, 3 s of wrk -c$CONNS)"
for name in router ${BASE_PID:+base} nginx; do
  strace -c -f -p "${PID[$name]}" -o "$WORK/strace.$name" &
  spid=$!; sleep 0.5
  reqs=$(taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d3s -H 'Host: bench.test' "${URL[$name]}" | awk '/requests in/ {print $1}')
  kill -INT $spid; wait $spid 2>/dev/null || true
  calls=$(awk '$NF=="total" {print $4}' "$WORK/strace.$name")
  echo "$name: $calls syscalls / $reqs requests = $(awk -v c="$calls" -v n="$reqs" 'BEGIN{printf "%.2f", c/n}')"
  head -n 12 "$WORK/strace.$name" | sed "s/^/    /"
done
echo
echo "# RSS: router $(awk '/VmRSS/ {print $2, $3}' /proc/$ROUTER_PID/status), nginx worker $(awk '/VmRSS/ {print $2, $3}' /proc/${PID[nginx]}/status)"
fi

# --- profile: where each proxy spends its CPU (PHASES=profile; not a benchmark figure) -----
# perf stat splits user and kernel time per request; perf record keeps call graphs in
# PROFILE_DIR (default /tmp/flynn-router-profile) for `perf report -i PROFILE_DIR/NAME.data`.
if [[ " $PHASES " == *" profile "* ]]; then
  PROFILE_DIR=${PROFILE_DIR:-/tmp/flynn-router-profile}; mkdir -p "$PROFILE_DIR"
  command -v perf >/dev/null || { echo "missing perf: apt-get install -y linux-perf" >&2; exit 1; }
  echo
  echo "# profile: perf stat, then perf record -g, each over 5 s of wrk -c$CONNS"
  for name in router ${BASE_PID:+base} nginx; do
    perf stat -x, -e task-clock,context-switches -p "${PID[$name]}" -o "$PROFILE_DIR/$name.stat" &
    spid=$!; sleep 0.3
    nstat -n >/dev/null 2>&1 || true
    reqs=$(taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d5s -H 'Host: bench.test' "${URL[$name]}" | awk '/requests in/ {print $1}')
    segs=$(nstat 2>/dev/null | awk '$1 ~ /^(TcpInSegs|TcpOutSegs|TcpExtDelayedACKs|TcpExtTCPPureAcks|TcpExtTCPHPAcks)$/ {printf "%s=%s ", $1, $2}')
    kill -INT $spid; wait $spid 2>/dev/null || true
    echo "$name: $reqs requests; whole machine: $segs"
    echo "$name: per request:"
    awk -F, -v n="$reqs" '$3 ~ /^[a-z]/ && $1 ~ /^[0-9.]+$/ {
        v = $1 / n; u = ($2 == "msec" || $3 ~ /time/) ? "us" : ""
        if ($3 == "task-clock") v = v * 1000; else if ($3 ~ /_time$/) v = v / 1000
        printf "    %-22s %10.2f %s\n", $3, v, u }' "$PROFILE_DIR/$name.stat"
    perf record -q -F 999 --call-graph dwarf,16384 -p "${PID[$name]}" -o "$PROFILE_DIR/$name.data" -- sleep 5 >/dev/null 2>&1 &
    spid=$!; sleep 0.3
    taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d5s -H 'Host: bench.test' "${URL[$name]}" >/dev/null
    wait $spid 2>/dev/null || true
  done
  echo "call graphs: perf report -i $PROFILE_DIR/{router,nginx}.data"
fi

# --- benchmark 2: reconfiguration under load ------------------------------------------------
if [[ " $PHASES " == *" 2 "* ]]; then
  echo
  echo "# reconfiguration: 100 changes/s for 30 s while wrk -c$CONNS loads a stable host"
  for name in router nginx; do
    taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d32s -H 'Host: bench.test' "${URL[$name]}" >"$WORK/wrk.$name" &
    wpid=$!
    if [ $name = router ]; then
      taskset -c "$WRK_CPUS" "$DRIVER" churn-router $NS 127.0.0.1:18080
    else
      taskset -c "$WRK_CPUS" "$DRIVER" churn-nginx "$WORK/proxy/conf.d" "$(cat "$WORK/proxy/nginx.pid")" 127.0.0.1:18081
    fi
    wait $wpid
    echo "$name under churn: $(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.$name") rps," \
      "$(awk '/requests in/ {print $1}' "$WORK/wrk.$name") requests," \
      "non-2xx: $(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.$name" | grep . || echo 0)," \
      "socket errors: $(grep 'Socket errors' "$WORK/wrk.$name" || echo none)"
  done
fi

# --- benchmark 3: scale -------------------------------------------------------------------------
if [[ " $PHASES " == *" 3 "* ]]; then
  echo
  echo "# scale: 10,000 routes"
  echo "router RSS before: $(awk '/VmRSS/ {print $2, $3}' /proc/$ROUTER_PID/status)"
  "$DRIVER" scale $NS 10000 127.0.0.1:18080
  for i in 1 2 3 4 5 6; do
    c0=$(cpu_ticks $ROUTER_PID); sleep 1; c1=$(cpu_ticks $ROUTER_PID)
    echo "  +${i}s: router CPU $((c1-c0))/$TCK ticks, $(curl -s 127.0.0.1:19090/metrics | grep -E '^flynn_router_table_(generation|swap_seconds_(sum|count))' | tr '\n' ' ')"
  done
  echo "router RSS with 10,000 more routes: $(awk '/VmRSS/ {print $2, $3}' /proc/$ROUTER_PID/status)"
  taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SECS}s" --latency -H 'Host: scale-9999.test' "${URL[router]}" \
    | awk '/Requests\/sec|50%|99%/'
  "$DRIVER" lookup
fi

# --- idle keep-alive connections: memory per connection -----------------------------------------
if [[ " $PHASES " == *" idle "* ]]; then
  echo
  echo "# $IDLE_CONNS idle keep-alive client connections (one request each, then idle)"
  # Benchmark 2's reloads replaced nginx's worker.
  NGINX_WORKER=$(pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | head -1); PID[nginx]=${NGINX_WORKER:-${PID[nginx]}}
  for name in router nginx; do
    addr=${URL[$name]#http://}; addr=${addr%/}
    printf '%-7s ' "$name"
    taskset -c "$WRK_CPUS" "$DRIVER" idle "$addr" "$IDLE_CONNS" "${PID[$name]}"
  done
fi

# --- h2spec against the TLS listener ---------------------------------------------------------
# Build: GOBIN=~/.cache/flynn/tools go install github.com/summerwind/h2spec/cmd/h2spec@latest
if [[ " $PHASES " == *" h2spec "* ]]; then
  H2SPEC=${H2SPEC:-$HOME/.cache/flynn/tools/h2spec}
  echo
  echo "# h2spec (TLS, ALPN h2) against the router; Route 127.0.0.1 → the nginx backend"
  "$H2SPEC" -t -k -h 127.0.0.1 -p 18443 -o 5 >"$WORK/h2spec.out" 2>&1 || true
  grep -E "^[0-9]+ tests, " "$WORK/h2spec.out" || tail -n 5 "$WORK/h2spec.out"
  grep -B3 -A6 "×" "$WORK/h2spec.out" | head -80 || true
fi
