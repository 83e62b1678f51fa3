#!/usr/bin/env bash
# Benchmark: `nodeagent validate` of a generated desired state with 1,000 WireGuard peers and
# 100 Helm releases (target: median <= 50 ms wall), plus the time to refuse hostile inputs.
# Appends a dated section with the machine to BENCHMARKS.md. Run: bench/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps
source bench/lib.sh
{ command -v hyperfine && [ -x /usr/bin/time ]; } >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine time; }
swift build -c release --static-swift-stdlib --product nodeagent
bin=$PWD/.build/release/nodeagent
work=$(mktemp -d /tmp/nodeagent-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 bench/gen_platform.py 1000 100 > "$work/large.yaml"
"$bin" validate "$work/large.yaml" >/dev/null
python3 - "$work" <<'PY'
import sys, os, random
w = sys.argv[1]
names = "abcdefghi"
lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
for i in range(1, len(names)):
    lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i-1]}"] * 9) + "]")
open(f"{w}/bomb.yaml", "w").write("\n".join(lines) + "\n")
open(f"{w}/deep.yaml", "w").write("[" * 100000 + "]" * 100000)
random.seed(7)
open(f"{w}/random.yaml", "wb").write(bytes(random.getrandbits(8) for _ in range(1 << 20)))
PY
hyperfine -N --warmup 5 --runs 60 --export-json "$work/large.json" "$bin validate $work/large.yaml" >/dev/null
for f in bomb deep random; do
  hyperfine -N -i --warmup 3 --runs 30 --export-json "$work/$f.json" "$bin validate $work/$f.yaml" >/dev/null
done
peak=$( { /usr/bin/time -f '%M' "$bin" validate "$work/large.yaml" >/dev/null; } 2>&1 | tail -1 )
size=$(wc -c < "$work/large.yaml")
python3 - "$work" "$size" "$peak" <<'PY' | tee -a BENCHMARKS.md
import os, json, sys, subprocess, datetime, platform
w, size, peak = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def med(name):
    r = json.load(open(f"{w}/{name}.json"))["results"][0]
    return r["median"] * 1000, r["min"] * 1000, r["max"] * 1000
machine = os.environ["BENCH_MACHINE"]
m, lo, hi = med("large")
print(f"\n## validate: 1,000 peers + 100 Helm releases — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
print(f"Machine: {machine}. Command: `bench/validate.sh` (release build with --static-swift-stdlib as shipped, hyperfine, 60 runs after 5 warm-ups).\n")
print("| input | median | min | max | target |")
print("|---|---|---|---|---|")
print(f"| generated desired state ({size // 1024} KiB) | {m:.1f} ms | {lo:.1f} ms | {hi:.1f} ms | ≤ 50 ms median: {'met' if m <= 50 else 'MISSED'} |")
for name, label in [("bomb", "billion laughs (9 levels × 9)"), ("deep", "100,000-deep nesting"), ("random", "1 MiB of random bytes")]:
    m2, lo2, hi2 = med(name)
    print(f"| {label}, refused | {m2:.1f} ms | {lo2:.1f} ms | {hi2:.1f} ms | < 1 s: {'met' if hi2 < 1000 else 'MISSED'} |")
print(f"\nPeak RSS validating the generated file: {peak / 1024:.1f} MiB.")
PY
