#!/usr/bin/env bash
# Runs the benchmark (tests/benchmark.rs) against the release-built operator, for each N given
# (default: 100 1000 5000), and appends the results to target/bench-results.md.
#
#   scripts/bench.sh                 # N = 100, 1,000, 5,000
#   scripts/bench.sh 5000            # one size
#   BENCH_UNRELATED_SECRETS=10000 scripts/bench.sh 5000   # with 10,000 unrelated 100 KiB Secrets
#
#   scripts/bench.sh --peer provider-http            # side by side with Crossplane's provider-http:
#                                                     # N = 100, 1,000, then 5,000 if the peer survived
#   scripts/bench.sh --peer provider-http 100        # one size
#
# With --peer, each N runs the operator and then the peer (scripts/peer-tools.sh builds it once)
# on the same control plane with the same settings; one table (operator, peer, operator / peer)
# is printed at the end and appended to target/bench-compare.md.
#
# Other knobs (environment): BENCH_LATENCY_MS (100), BENCH_CONCURRENCY (16), BENCH_RPS (100),
# BENCH_BURST (20), BENCH_REFRESH_SECS (derived from N), BENCH_STEADY_INTERVALS (2; 1 at N >= 5000),
# BENCH_UNRELATED_SECRET_KB (100), BENCH_OPERATOR_ENV (KEY=VALUE,... for the operator process),
# BENCH_PEER_MAX_RECONCILE_RATE (100: provider-http's concurrency and reconciles per second).
# Each run starts its own etcd and kube-apiserver.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=""
if [[ "${1:-}" == "--peer" ]]; then
    peer="${2:-}"
    shift 2 || true
    if [[ "$peer" != "provider-http" ]]; then
        echo "error: --peer takes 'provider-http' (the only peer there is), not '${peer}'" >&2
        exit 2
    fi
fi

sizes=("$@")
grow_if_survived=false
if [ ${#sizes[@]} -eq 0 ]; then
    if [[ -n "$peer" ]]; then
        sizes=(100 1000)
        grow_if_survived=true
    else
        sizes=(100 1000 5000)
    fi
fi

steady_for() {
    # At N >= 5,000 one refresh interval is several minutes: measure one after the warm-up one.
    echo "${BENCH_STEADY_INTERVALS:-$([ "$1" -ge 5000 ] && echo 1 || echo 2)}"
}

if [[ -z "$peer" ]]; then
    for n in "${sizes[@]}"; do
        echo "=== benchmark N=$n ===" >&2
        # --release also builds the operator binary the test runs (CARGO_BIN_EXE_leaf-operator).
        BENCH_N="$n" BENCH_STEADY_INTERVALS="$(steady_for "$n")" \
            cargo test --release --test benchmark -- --ignored --exact benchmark --nocapture
    done
    echo "results: target/bench-results.md" >&2
    exit 0
fi

# Build the peer before any timing starts (once; cached by version).
scripts/peer-tools.sh >/dev/null
mkdir -p target
compare=target/bench-compare.md
offset=$(stat -c %s "$compare" 2>/dev/null || echo 0)
failed=""
run_side_by_side() {
    local n="$1"
    echo "=== benchmark N=$n: operator, then provider-http ===" >&2
    BENCH_N="$n" BENCH_STEADY_INTERVALS="$(steady_for "$n")" \
        cargo test --release --test benchmark -- --ignored --exact benchmark_side_by_side --nocapture
}
for n in "${sizes[@]}"; do
    if ! run_side_by_side "$n"; then
        failed="$n"
        break
    fi
done
if [[ -z "$failed" && "$grow_if_survived" == true ]]; then
    run_side_by_side 5000 || failed=5000
fi

echo
echo "=== side by side (this run; details in $compare) ==="
tail -c +"$((offset + 1))" "$compare" | grep -m1 '^| N |' || true
tail -c +"$((offset + 1))" "$compare" | grep -m1 '^|---' || true
tail -c +"$((offset + 1))" "$compare" | grep '^| [0-9]' || true
if [[ -n "$failed" ]]; then
    echo "the run at N=$failed failed (see its output above); larger sizes were not run" >&2
    exit 1
fi
