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

# bench_pgbench: a PostgreSQL server in a temp directory "$work" (removed on exit with the
# server) holding database `app` filled by `pgbench -i -s 20`; sets "$pg" (its bin directory),
# "$port", "$password" (also exported as PGPASSWORD) and "$size" (the database's size).
bench_pgbench() {
  pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  work=$(mktemp -d /tmp/nodeagent-bench.XXXXXX)
  chmod 0755 "$work"
  port=$(( 20000 + RANDOM % 20000 ))
  password="bench-$RANDOM$RANDOM"
  trap bench_pgbench_cleanup EXIT
  echo -n "$password" > "$work/pw"
  chown -R postgres:postgres "$work"
  runuser -u postgres -- "$pg/initdb" -D "$work/data" -U postgres --pwfile="$work/pw" --auth=scram-sha-256 -E UTF8 --no-locale >/dev/null
  runuser -u postgres -- "$pg/pg_ctl" -D "$work/data" -l "$work/log" -w -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
  export PGPASSWORD="$password"
  "$pg/createdb" -h 127.0.0.1 -p "$port" -U postgres app
  "$pg/pgbench" -i -s 20 -q -h 127.0.0.1 -p "$port" -U postgres app 2>/dev/null
  size=$("$pg/psql" -X -A -t -h 127.0.0.1 -p "$port" -U postgres -d app -c "SELECT pg_size_pretty(pg_database_size('app'))")
}

bench_pgbench_cleanup() {
  runuser -u postgres -- "$pg/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
