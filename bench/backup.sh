#!/usr/bin/env bash
# Benchmark: `nodeagent backup run` against a bare `pg_dump -Fc` of the same pgbench database
# (pgbench -i -s 20, about 300 MB) in the same run, and the duration of a restore drill of that
# dump. Target: backup overhead <= 15 % (row counts, checksum, fsync and manifest included).
# A PostgreSQL server is started in a temp directory and removed at the end. Appends a dated
# section with the machine to BENCHMARKS.md. Run: bench/backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps
source bench/lib.sh
swift build -c release --static-swift-stdlib --product nodeagent
bin=$PWD/.build/release/nodeagent
bench_pgbench
root=$work/root
mkdir -p "$root/etc/nodeagent/secrets"
install -m 0600 /dev/null "$root/etc/nodeagent/secrets/pg"
echo "$password" > "$root/etc/nodeagent/secrets/pg"
cat > "$work/platform.yaml" <<YAML
apiVersion: nodeagent/v1
kind: Platform
metadata: {name: bench}
spec:
  backups:
    postgres:
      connection: {host: 127.0.0.1, port: $port, user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}
      databases: [app]
      schedule: "0 3 * * *"
      keep: 1
      restoreDrill: {schedule: "0 4 * * 0"}
YAML
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
bare=(); agent=(); drill=()
for i in 1 2 3; do
  bare+=("$(seconds "$pg/pg_dump" -Fc -h 127.0.0.1 -p "$port" -U postgres -d app -f "$work/bare.dump")")
  sync
  agent+=("$(seconds "$bin" backup run --state "$work/platform.yaml" --root "$root")")
done
for i in 1 2; do drill+=("$(seconds "$bin" backup drill --state "$work/platform.yaml" --root "$root")"); done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mb=$(median "${bare[@]}"); ma=$(median "${agent[@]}"); md=$(median "${drill[@]}")
overhead=$(echo "($ma - $mb) / $mb * 100" | bc -l)
verdict=$(echo "$overhead <= 15" | bc -l)
dump=$(ls -l "$root"/var/backups/nodeagent/postgres/app/*.dump | awk '{print $5}')
{
  echo
  echo "## backups: nodeagent backup run vs bare pg_dump -Fc, restore drill — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $BENCH_MACHINE. Command: \`bench/backup.sh\` (release build; PostgreSQL $("$pg/postgres" --version | awk '{print $3}') in a temp directory; \`pgbench -i -s 20\`: database $size, dump $((dump / 1024 / 1024)) MiB). Medians of 3 (drill: 2)."
  echo
  echo "| measure | result | target |"
  echo "|---|---|---|"
  printf '| bare `pg_dump -Fc` | %.2f s | — |\n' "$mb"
  printf '| `nodeagent backup run` (row counts, dump, fsync, sha256, manifest, roles, rotation) | %.2f s | — |\n' "$ma"
  printf '| overhead | %.1f %% | ≤ 15 %%: %s |\n' "$overhead" "$([ "$verdict" = 1 ] && echo met || echo MISSED)"
  printf '| `nodeagent backup drill` (checksum, pg_restore into a scratch database, row counts, drop) | %.2f s | — |\n' "$md"
} | tee -a BENCHMARKS.md
