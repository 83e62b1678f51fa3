#!/usr/bin/env bash
# Benchmark of the daemon (issue 8): commit-to-converged latency of a WireGuard peer change with
# POST /sync (target <= 1 s), idle RSS (target <= 25 MB) and idle CPU, and /status and /metrics
# under wrk (p99 <= 5 ms). Everything runs in a network namespace and temp directories this
# script creates and removes. Appends its results with the machine and date to BENCHMARKS.md.
# Run: bench/daemon.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps
source bench/lib.sh
for tool in wrk nft wg wireguard-go; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nftables wireguard-tools wireguard-go; break; }
done
swift build -c release --static-swift-stdlib --product nodeagent
bin=$PWD/.build/release/nodeagent
bench_namespace nad
root=$work/root
mkdir -p "$root/etc/nodeagent/secrets" "$work/repo"
echo "bench-token" > "$root/etc/nodeagent/secrets/api-token"
git -C "$work/repo" init -q --initial-branch=main
key() { wg genkey | wg pubkey; }
peers="      - {name: admin, publicKey: \"$(key)\", allowedIPs: [10.8.0.2/32]}"
write_state() {
  cat > "$work/repo/platform.yaml" <<YML
apiVersion: nodeagent/v1
kind: Platform
metadata: {name: bench}
spec:
  firewall: {publicInterface: eth0, vpnOnly: {tcp: [9430]}}
  wireguard:
    interface: $iface
    address: 10.8.0.1/24
    implementation: userspace
    privateKeyFile: /etc/nodeagent/secrets/wg.key
    peers:
$peers
  status: {listen: "10.8.0.1:9430", tokenFile: /etc/nodeagent/secrets/api-token}
YML
  git -C "$work/repo" add platform.yaml
  git -C "$work/repo" -c user.name=bench -c user.email=bench@example.com commit -q -m "$1"
}
write_state first
cat > "$root/agent.yaml" <<YML
apiVersion: nodeagent/v1
kind: AgentConfig
source: {repo: "file://$work/repo", ref: main, path: platform.yaml}
intervals: {poll: 10m, drift: 10m}   # no timed pass during the measurements: /sync drives them
YML
ip netns exec "$ns" "$bin" run --config "$root/agent.yaml" --root "$root" 2>"$work/daemon.log" &
bench_pid=$!
for _ in $(seq 100); do
  ip netns exec "$ns" curl -s --max-time 1 http://10.8.0.1:9430/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
inside() { ip netns exec "$ns" "$@"; }
applied() { inside curl -s http://10.8.0.1:9430/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["applied"]["commit"])'; }

# Commit-to-converged: a new peer per round, then POST /sync, until /status shows the commit.
latencies=()
for i in $(seq 10); do
  peers="$peers
      - {name: p$i, publicKey: \"$(key)\", allowedIPs: [10.8.1.$i/32]}"
  write_state "peer $i"
  head=$(git -C "$work/repo" rev-parse HEAD)
  start=$(date +%s%N)
  inside curl -s -o /dev/null -X POST -H "Authorization: Bearer bench-token" http://10.8.0.1:9430/sync
  until [ "$(applied)" = "$head" ]; do sleep 0.01; done
  latencies+=($(( ($(date +%s%N) - start) / 1000000 )))
done

sleep 5
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$bench_pid/status)
cpu0=$(awk '{print $14 + $15}' /proc/$bench_pid/stat)
sleep 10
cpu1=$(awk '{print $14 + $15}' /proc/$bench_pid/stat)
ticks=$(getconf CLK_TCK)

inside wrk -t2 -c8 -d5s --latency http://10.8.0.1:9430/status > "$work/wrk-status.txt"
inside wrk -t2 -c8 -d5s --latency http://10.8.0.1:9430/metrics > "$work/wrk-metrics.txt"

python3 - "$work" "$rss_kb" "$cpu0" "$cpu1" "$ticks" "${latencies[@]}" <<'PY' | tee -a BENCHMARKS.md
import os, sys, re, datetime, platform, subprocess
w, rss, c0, c1, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lat = sorted(int(x) for x in sys.argv[6:])
def wrk(name):
    t = open(f"{w}/wrk-{name}.txt").read()
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
    v = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)
    return v, float(rps)
machine = os.environ["BENCH_MACHINE"]
s99, srps = wrk("status"); m99, mrps = wrk("metrics")
idle_cpu = (c1 - c0) / ticks / 10 * 100
print(f"\n## daemon: commit-to-converged, idle footprint, /status and /metrics under wrk — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
print(f"Machine: {machine}. Command: `bench/daemon.sh` "
      "(release build, static Swift runtime; a network namespace with nftables and wireguard-go; a local Git repository).\n")
print("| measure | result | target |")
print("|---|---|---|")
print(f"| commit → POST /sync → applied (a new WireGuard peer), median of 10 | {lat[len(lat)//2]} ms (min {lat[0]}, max {lat[-1]}) | ≤ 1000 ms: {'met' if lat[len(lat)//2] <= 1000 else 'MISSED'} |")
print(f"| idle RSS | {rss/1024:.1f} MiB | ≤ 25 MB: {'met' if rss/1024 <= 25 else 'MISSED'} |")
print(f"| idle CPU (10 s, no timer firing) | {idle_cpu:.2f} % of one core | — |")
print(f"| `GET /status` under wrk (2 threads, 8 connections, 5 s) | p99 {s99:.2f} ms, {srps:.0f} req/s | p99 ≤ 5 ms: {'met' if s99 <= 5 else 'MISSED'} |")
print(f"| `GET /metrics` under wrk | p99 {m99:.2f} ms, {mrps:.0f} req/s | p99 ≤ 5 ms: {'met' if m99 <= 5 else 'MISSED'} |")
PY
