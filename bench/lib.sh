# Shared by the benchmark scripts (sourced, not run).

# The machine, as each BENCHMARKS.md section names it.
BENCH_MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 1024 )) GiB, $(uname -s) $(uname -r)"
export BENCH_MACHINE

# bench_namespace PREFIX: a network namespace "$ns" with lo and an eth0 (the public interface
# the firewall names), a WireGuard interface name "$iface", and a work directory "$work", all
# removed on exit together with a process whose id is in "$bench_pid", if any.
bench_namespace() {
  local id
  id=$(printf '%x' $((RANDOM * 32768 + RANDOM)) | cut -c1-5)
  ns=${1}${id}; iface=${1}${id}g
  work=$(mktemp -d /tmp/nodeagent-bench.XXXXXX)
  bench_pid=""
  trap bench_cleanup EXIT
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link add eth0 type veth peer name eth0peer
}

bench_cleanup() {
  [ -n "${bench_pid:-}" ] && kill "$bench_pid" 2>/dev/null || true
  for p in $(pgrep -f "wireguard-go $iface\$" || true); do kill "$p"; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
