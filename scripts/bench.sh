#!/usr/bin/env bash
# bench.sh - the benchmark suite (issue 6); not part of scripts/test.sh.
# Builds the release binaries (and the aarch64 ones when that target and a
# cross linker are installed), runs the criterion micro-benchmarks of the
# pure cores, then the end-to-end harness (benches/e2e.rs) against a real
# Mosquitto over TLS with QoS 2, and writes:
#   target/bench/results.json    every figure, machine-readable
#   target/bench/results.md      the table
#   BENCHMARKS.json              a copy of results.json
#   BENCHMARKS.md                the table, between its bench:begin/end markers
# About 3 minutes of measuring on 2 cores (criterion 20 s, e2e about 130 s),
# plus the release builds (x86_64, aarch64, bench profile): 2-3 minutes when
# incremental, longer from scratch.
#
# Usage: scripts/bench.sh [--no-micro] [--no-aarch64]
# Environment: BENCH_ONLY=roundtrip,detection,burst_rm20,burst_rm1,footprint,
#   binary_size,sweep,notifier,micro (a subset); BENCH_FOOTPRINT_SECS (default 60);
#   BENCH_DAEMON_WRAP / BENCH_NOTIFIER_WRAP (a profiler command prefix).
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"
micro=1 aarch64=1
for a in "$@"; do
    case $a in
        --no-micro) micro=0 ;;
        --no-aarch64) aarch64=0 ;;
        *) echo "bench.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done

bash scripts/install-deps.sh

echo "== build (release)" >&2
cargo build --locked --release --bins
if [[ $aarch64 == 1 ]] && rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
    && command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "== build (release, aarch64-unknown-linux-gnu)" >&2
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        cargo build --locked --release --bins --target aarch64-unknown-linux-gnu
else
    echo "== aarch64: skipped (needs 'rustup target add aarch64-unknown-linux-gnu' and gcc-aarch64-linux-gnu)" >&2
fi

echo "== load before measuring: $(uptime)" >&2
if [[ $micro == 1 ]]; then
    echo "== criterion micro-benchmarks" >&2
    cargo bench --locked --bench micro 2>&1 | tee target/bench-micro.txt |
        grep -vE '^(Benchmarking|Found|  [0-9]+ \()' || true
fi
echo "== end-to-end benchmark" >&2
cargo bench --locked --bench e2e
echo "== load after measuring: $(uptime)" >&2

cp target/bench/results.json BENCHMARKS.json
if [[ -f BENCHMARKS.md ]] && grep -q '<!-- bench:begin -->' BENCHMARKS.md; then
    awk -v table="target/bench/results.md" '
        /<!-- bench:begin -->/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
        /<!-- bench:end -->/ { skip = 0 }
        !skip { print }
    ' BENCHMARKS.md >BENCHMARKS.md.new && mv BENCHMARKS.md.new BENCHMARKS.md
    echo "== updated the table in BENCHMARKS.md and BENCHMARKS.json" >&2
else
    echo "== the table is in target/bench/results.md" >&2
fi
