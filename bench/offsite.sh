#!/usr/bin/env bash
# Benchmark: the off-site copy of the pgbench -s 20 database (about 300 MB): `nodeagent backup
# run` (dump + restic upload), the same run again on unchanged data (what restic's
# deduplication leaves to upload), and a full node recovery into an empty root
# (`nodeagent recover --from-offsite`: the snapshot unpacked, secrets and dumps in place, the
# dropped database restored from the recovered dump). The repository is a local directory
# (the disk-speed case: an SFTP or S3 repository adds the network's time). A PostgreSQL server
# is started in a temp directory and removed at the end. Appends a dated section with the
# machine to BENCHMARKS.md. Run: bench/offsite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEPS_GROUPS="build test" source scripts/deps
deps_need build test
source bench/lib.sh
swift build -c release --static-swift-stdlib --product nodeagent
bin=$PWD/.build/release/nodeagent
bench_pgbench
psql() { "$pg/psql" -X -A -t -h 127.0.0.1 -p "$port" -U postgres "$@"; }
fingerprint() { psql -d app -c "SELECT count(*), sum(abalance), md5(string_agg(aid::text, ',' ORDER BY aid)) FROM pgbench_accounts"; }
before=$(fingerprint)
root=$work/root fresh=$work/fresh
for r in "$root" "$fresh"; do mkdir -p "$r/etc/nodeagent/secrets"; done
install -m 0600 /dev/null "$root/etc/nodeagent/secrets/pg"
echo "$password" > "$root/etc/nodeagent/secrets/pg"
head -c 32 /dev/urandom | base64 > "$work/restic-password"
install -m 0600 "$work/restic-password" "$root/etc/nodeagent/secrets/restic-password"
install -m 0600 "$work/restic-password" "$fresh/etc/nodeagent/secrets/restic-password"
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
      keep: 2
    offsite:
      repository: $work/repo
      passwordFile: /etc/nodeagent/secrets/restic-password
      keep: {last: 10}
YAML
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "bench: $* failed" >&2; exit 1; }; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
added() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["addedBytes"])' "$root/var/lib/nodeagent/backups/offsite.json"; }
first=$(seconds "$bin" backup run --state "$work/platform.yaml" --root "$root"); first_added=$(added)
repo1=$(du -sb "$work/repo" | cut -f1)
second=$(seconds "$bin" backup run --state "$work/platform.yaml" --root "$root"); second_added=$(added)
repo=$(du -sb "$work/repo" | cut -f1)
dump=$(ls -l "$root"/var/backups/nodeagent/postgres/app/*.dump | tail -1 | awk '{print $5}')
"$pg/dropdb" -h 127.0.0.1 -p "$port" -U postgres app
recover=$(seconds "$bin" recover --from-offsite --state "$work/platform.yaml" --root "$fresh")
after=$(fingerprint 2>/dev/null || echo missing)
[ "$after" = "$before" ] && same=identical || same="DIFFERENT ($after)"
{
  echo
  echo "## off-site copy (restic) and node recovery — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $BENCH_MACHINE. Command: \`bench/offsite.sh\` (release build; restic $(restic version | awk '{print $2}'), a repository on the local disk; PostgreSQL $("$pg/postgres" --version | awk '{print $3}'); \`pgbench -i -s 20\`: database $size, dump $((dump / 1024 / 1024)) MiB). One run each."
  echo
  echo "| measure | result |"
  echo "|---|---|"
  printf '| first `backup run`: dump + off-site copy (repository created) | %.2f s; %s bytes of new data (before restic'"'"'s compression); repository %s bytes |\n' "$first" "$first_added" "$repo1"
  printf '| second `backup run`, unchanged data (restic deduplication) | %.2f s; %s bytes of new data; repository grew by %s bytes |\n' "$second" "$second_added" "$((repo - repo1))"
  printf '| `recover --from-offsite` into an empty root, database dropped: unpack, secrets and dumps in place, database restored | %.2f s; pgbench_accounts %s |\n' "$recover" "$same"
  if [ "$second_added" -ge "$dump" ]; then
    echo
    echo 'The second copy stored the new dump as new data: two dumps of unchanged data differ only in the timestamp pg_dump writes at byte 18, but restic'"'"'s content-defined chunker finds no chunk boundary in pg_dump'"'"'s zlib output of pgbench'"'"'s repetitive rows, so the whole file is one chunk and one changed byte makes it new; restic compresses it (zstd) to the growth shown. Less repetitive data splits into chunks and deduplicates: in the test suite (`OffsiteTests`) a second copy of an unchanged database of random-looking rows added under a quarter of the first.'
  fi
} | tee -a BENCHMARKS.md
