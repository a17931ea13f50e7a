#!/usr/bin/env bash
# fuzz-long.sh - the hostile-input property tests (issue 16 §5) with many
# more cases than CI's 256 per property: payloads, topics, the w1 files and
# backend, the configuration, the notifier's settings and seen-alerts log
# (tests/hostile_input.rs), the notifier's session store, the alert
# engine's thresholds and the configuration's own parse tests.
#
# Debug build on purpose: integer overflow panics there, and "no
# arithmetic on outside data may panic" is one of the properties.
# A failing case is printed (minimised) and saved by proptest under
# proptest-regressions/: keep it as a regression test.
#
# Usage: scripts/fuzz-long.sh [CASES]    (default: $PROPTEST_CASES or 20000)
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
cases=${1:-${PROPTEST_CASES:-20000}}
[[ $cases =~ ^[1-9][0-9]*$ ]] || { echo "fuzz-long: CASES must be a positive number, not '$cases'" >&2; exit 2; }
export PROPTEST_CASES=$cases
start=$SECONDS
echo "== $cases cases per property" >&2
cargo test --locked --test hostile_input
cargo test --locked --lib -- mqtt::store:: mqtt::payload:: core::alert:: config::tests::
echo "== fuzz-long: $cases cases per property, no failure, $((SECONDS - start)) s" >&2
