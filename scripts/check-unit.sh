#!/usr/bin/env bash
# check-unit.sh - the systemd unit passes `systemd-analyze verify` without a
# single message, and `systemd-analyze security --offline=true` rates its
# overall exposure at 2.0 or lower. No running systemd is needed: verify
# runs against a scratch root holding the unit, the daemon binary at its
# ExecStart path, /usr/bin/kill and the distribution's own units.
#
# Usage: scripts/check-unit.sh [PATH-TO-thermalertd]   (default target/debug/thermalertd)
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
unit="$root/systemd/thermalertd.service"
bin=${1:-$root/target/debug/thermalertd}
max_exposure=2.0

command -v systemd-analyze >/dev/null 2>&1 || {
    echo "check-unit: systemd-analyze not found (Debian package: systemd)" >&2
    exit 1
}
[[ -x $bin ]] || { echo "check-unit: $bin: not built" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/etc/systemd/system" "$scratch/usr/local/bin" "$scratch/usr/bin" "$scratch/usr/lib/systemd"
ln -s usr/bin "$scratch/bin"
cp "$unit" "$scratch/etc/systemd/system/"
cp "$bin" "$scratch/usr/local/bin/thermalertd"
cp "$(type -P kill)" "$scratch/usr/bin/kill"
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [[ -d $d ]]; then
        cp -r "$d" "$scratch/usr/lib/systemd/"
        break
    fi
done

echo "check-unit: systemd-analyze verify" >&2
out=$(systemd-analyze verify --root="$scratch" --man=no thermalertd.service 2>&1) || {
    printf '%s\n' "$out" >&2
    echo "check-unit: verify failed" >&2
    exit 1
}
if [[ -n $out ]]; then
    printf '%s\n' "$out" >&2
    echo "check-unit: verify is not clean" >&2
    exit 1
fi

echo "check-unit: systemd-analyze security --offline=true" >&2
report=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
line=$(printf '%s\n' "$report" | grep 'Overall exposure level' || true)
exposure=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9]*\.[0-9]\).*/\1/p')
if [[ -z $exposure ]]; then
    printf '%s\n' "$report" >&2
    echo "check-unit: no exposure level in the report" >&2
    exit 1
fi
if ! awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
    printf '%s\n' "$report" | grep '✗' >&2 || true
    echo "check-unit: exposure $exposure is above $max_exposure" >&2
    exit 1
fi
echo "check-unit: verify clean; exposure $exposure (at most $max_exposure)" >&2
