#!/usr/bin/env bash
# Runs the alerts benchmark (tests/benchmark_alerts.rs; BENCHMARKS.md, "Leaf alerts at 20,000
# connections") against the release-built operator and appends the results to
# target/bench-alerts.md:
#
#   scripts/bench-alerts.sh                  # N = 5,000 and 20,000 (one shard), then 2 shards of 10,000
#   scripts/bench-alerts.sh 20000            # one size, one shard
#   BENCH_SHARDS=2 scripts/bench-alerts.sh 20000    # one size, two shards of 10,000
#
# Each run: the operator(s) with the receiver and webhook registration on, each shard with its own
# Leaf stand-in (100 ms per request); N connections created; one backstop interval observed (the
# backstop scaled down from 24 h, see BENCHMARKS.md); credentials turned UNAUTHENTICATED (paced,
# then a burst) and timed to Ready=False; signed alerts POSTed straight to the receivers.
# Knobs (environment): BENCH_LATENCY_MS (100), BENCH_CONCURRENCY (32), BENCH_RPS (200 per shard),
# BENCH_BURST (20), BENCH_BACKSTOP_SECS (2.5 creation rounds of one shard), BENCH_PACED (N/4, at
# most 400), BENCH_PACED_RATE (20/s), BENCH_BURST_ALERTS (N/4, at most 200), BENCH_UNMANAGED_ALERTS
# (N), BENCH_CLIENT_PARALLEL (32), BENCH_DRAIN (1), BENCH_RESTART (1), BENCH_RUST_LOG (info),
# BENCH_OPERATOR_ENV; LEAF_OPERATOR_BIN runs another operator binary, e.g. the musl build the image
# ships (scripts/image.sh prints where it is).
# Each run starts its own etcd and kube-apiserver.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    local n="$1" shards="$2"
    echo "=== alerts benchmark N=$n, $shards shard(s) ===" >&2
    # --release also builds the operator binary the test runs (CARGO_BIN_EXE_leaf-operator).
    BENCH_N="$n" BENCH_SHARDS="$shards" \
        cargo test --release --test benchmark_alerts -- --ignored --exact benchmark_alerts --nocapture
}

if [ $# -eq 0 ]; then
    run 5000 1
    run 20000 1
    run 20000 2
else
    for n in "$@"; do
        run "$n" "${BENCH_SHARDS:-1}"
    done
fi
echo "results: target/bench-alerts.md" >&2
