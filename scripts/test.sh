#!/usr/bin/env bash
# test.sh - everything CI checks, from a fresh Debian machine: installs what
# the tests need (Mosquitto, its clients, OpenSSL, ejabberd for the central
# cluster of tests/cluster.rs), then formatting, clippy,
# every test (unit, simulator, and integration tests against a real
# Mosquitto over TLS), every shipped example config, the systemd unit, the
# ARM builds under qemu (scripts/cross-qemu.sh), the Debian packages
# (amd64, arm64, armhf when its toolchain installs), the amd64 package under
# a real systemd 252 in a container (scripts/systemd-test.sh), and the demo
# in its bounded mode.
#
# Usage: scripts/test.sh
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"

bash scripts/install-deps.sh

echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --locked --all-targets 2>&1 | tee target/test-output.txt

echo "== example configurations" >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
bash certs/make-certs.sh --out "$scratch/certs" localhost 2>/dev/null
mkdir -p "$scratch/secrets"
printf 'placeholder\n' >"$scratch/secrets/gw1.pass"
chmod 600 "$scratch/secrets/gw1.pass" # check-config refuses a password others can read
for f in examples/thermalertd*.toml; do
    cp "$f" "$scratch/"
    ./target/debug/thermalertd --config "$scratch/$(basename "$f")" check-config
done

echo "== systemd unit (verify, security exposure <= 2.0)" >&2
bash scripts/check-unit.sh target/debug/thermalertd

# Installs its own packages (Debian's Rust cross toolchain, qemu-user-static):
# install-deps.sh does not.
echo "== ARM builds under qemu-user-static (aarch64; armv7 when it installs), release" >&2
# (Its output goes through a file, not `tee /dev/stderr`: reopening stderr
# truncates it when it is a log file, and the earlier output is lost.)
bash scripts/cross-qemu.sh --release | tee target/cross-qemu.out >&2
cross_out=$(cat target/cross-qemu.out)

# The packages users install; the amd64 one is also the system test's.
echo "== Debian packages" >&2
ts=$SECONDS
cargo build --locked --release --bins
rm -rf target/deb
debs=("$(bash packaging/build-deb.sh --arch amd64 --bin-dir target/release)")
debs+=("$(bash packaging/build-deb.sh --arch arm64 --bin-dir target/cross/aarch64-unknown-linux-gnu/release)")
if ! grep -q '^armv7 skipped' <<<"$cross_out"; then
    debs+=("$(bash packaging/build-deb.sh --arch armhf --bin-dir target/cross/armv7-unknown-linux-gnueabihf/release)")
else
    echo "armhf package skipped: no armv7 build (see cross-qemu.sh's 'armv7 skipped' line)" >&2
fi
bash packaging/check-deb.sh "${debs[@]}"
echo "packages: ${debs[*]} ($((SECONDS - ts)) s with the release build)" >&2

echo "== the amd64 package under a real systemd 252 (systemd-nspawn)" >&2
bash scripts/systemd-test.sh --bin-dir target/release

echo "== demo (bounded)" >&2
THERMALERT_DEMO_DIR="$scratch/demo" bash scripts/demo.sh --duration 36
echo "== all checks passed" >&2
# One closing line for the whole run.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.txt
