#!/usr/bin/env bash
# Benchmark: server-side apply of 100 objects (50 ConfigMaps, 50 HelmCharts) to the test API
# server, KubeAPI versus `kubectl apply --server-side -f DIR`, in one run (targets: >= 10x
# faster than kubectl, <= 2 ms median per apply once connected). Release build; appends its
# results with the machine and date to BENCHMARKS.md. Run: bench/kube-apply.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps
command -v socat >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat; }
command -v kubectl >/dev/null || { echo "kubectl is needed (it ships with this machine image)" >&2; exit 1; }
NODEAGENT_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter KubeApplyBenchmark
