#!/usr/bin/env bash
# Runs the benchmark (tests/benchmark.rs) against the release-built operator, for each N given
# (default: 100 1000 5000), and appends the results to target/bench-results.md.
#
#   scripts/bench.sh                 # N = 100, 1,000, 5,000
#   scripts/bench.sh 5000            # one size
#   BENCH_UNRELATED_SECRETS=10000 scripts/bench.sh 5000   # with 10,000 unrelated 100 KiB Secrets
#
# Other knobs (environment): BENCH_LATENCY_MS (100), BENCH_CONCURRENCY (16), BENCH_RPS (100),
# BENCH_BURST (20), BENCH_REFRESH_SECS (derived from N), BENCH_STEADY_INTERVALS (2; 1 at N >= 5000),
# BENCH_UNRELATED_SECRET_KB (100), BENCH_OPERATOR_ENV (KEY=VALUE,... for the operator process).
# Each run starts its own etcd and kube-apiserver.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then
    sizes=(100 1000 5000)
fi
for n in "${sizes[@]}"; do
    echo "=== benchmark N=$n ===" >&2
    # --release also builds the operator binary the test runs (CARGO_BIN_EXE_leaf-operator).
    # At N >= 5,000 one refresh interval is several minutes: measure one after the warm-up one.
    steady="${BENCH_STEADY_INTERVALS:-$([ "$n" -ge 5000 ] && echo 1 || echo 2)}"
    BENCH_N="$n" BENCH_STEADY_INTERVALS="$steady" cargo test --release --test benchmark -- --ignored --exact benchmark --nocapture
done
echo "results: target/bench-results.md" >&2
