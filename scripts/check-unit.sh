#!/usr/bin/env bash
# check-unit.sh - the systemd unit passes `systemd-analyze verify` without a
# single message, and `systemd-analyze security --offline=true` rates its
# overall exposure at 2.0 or lower. No running systemd is needed: verify
# runs against a scratch root holding the unit, the daemon binary at its
# ExecStart path, /usr/bin/kill and the distribution's own units.
# Also: DeviceAllow= opens the GPIO device nodes of the Pi 3/4 (/dev/gpiomem,
# /dev/gpiochip0), the Pi 5 (/dev/gpiomem0, /dev/gpiochip0 or, on early
# kernels, /dev/gpiochip4) and every /dev/gpio* path in rppal's source; and
# the udev rule's command works on a stand-in sysfs tree.
# (scripts/systemd-test.sh runs the unit under a real systemd.)
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
mkdir -p "$scratch/etc/systemd/system" "$scratch/usr/bin" "$scratch/usr/lib/systemd"
ln -s usr/bin "$scratch/bin"
cp "$unit" "$scratch/etc/systemd/system/"
grep -q '^ExecStart=/usr/bin/thermalertd ' "$unit" || { echo "check-unit: ExecStart is not /usr/bin/thermalertd (the package's path)" >&2; exit 1; }
cp "$bin" "$scratch/usr/bin/thermalertd"
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

echo "check-unit: GPIO device nodes of the Pi 3, 4 and 5" >&2
grep -qx 'DevicePolicy=closed' "$unit" || { echo "check-unit: DevicePolicy= is not closed" >&2; exit 1; }
mapfile -t allow < <(sed -n 's/^DeviceAllow=//p' "$unit")
allowed() { # allowed NODE: a DeviceAllow= entry with r and w covers NODE
    local e path acc
    for e in "${allow[@]}"; do
        path=${e%% *}
        acc=${e#* }
        [[ $acc == *r* && $acc == *w* ]] || continue
        [[ $path == "$1" ]] && return 0
        # char-gpiochip: every node of the kernel's gpiochip character device.
        [[ $path == char-gpiochip && $1 =~ ^/dev/gpiochip[0-9]+$ ]] && return 0
    done
    return 1
}
nodes=(/dev/gpiomem /dev/gpiochip0 /dev/gpiomem0 /dev/gpiochip4)
# What the GPIO crate opens, from its source (when cargo has fetched it).
rppal=$(cd "$root" && cargo metadata --format-version 1 --locked --offline 2>/dev/null |
    grep -o '"manifest_path":"[^"]*/rppal-[0-9][^"]*/Cargo.toml"' | head -1 | sed 's/.*:"\(.*\)\/Cargo.toml"/\1/') || true
if [[ -n $rppal && -d $rppal/src ]]; then
    while read -r n; do
        [[ $n == /dev/mem ]] && continue # rppal's fallback for root, never ours
        [[ $n == /dev/gpiochip ]] && n=/dev/gpiochip0
        nodes+=("$n")
    done < <(grep -rhoE '"/dev/(gpio[a-z]*[0-9]*|mem)"' "$rppal/src" | tr -d '"' | sort -u)
else
    echo "check-unit: note: rppal's source not found; checking the fixed list only" >&2
fi
mapfile -t nodes < <(printf "%s\n" "${nodes[@]}" | sort -u)
for n in "${nodes[@]}"; do
    allowed "$n" || { echo "check-unit: DeviceAllow= does not open $n" >&2; exit 1; }
done

echo "check-unit: the udev rule's command on a stand-in sysfs" >&2
rules=$root/systemd/60-thermalert-w1.rules
dev=$scratch/sys/devices/w1_bus_master1/28-0000000001
mkdir -p "$dev"
: >"$dev/resolution"
: >"$dev/../therm_bulk_read"
chmod 0644 "$dev/resolution" "$dev/../therm_bulk_read"
cmd=$(sed -n "s|.*RUN+=\"/bin/sh -c '\(.*\)'\"\$|\1|p" "$rules")
[[ -n $cmd ]] || { echo "check-unit: $rules: no RUN command found" >&2; exit 1; }
cmd=${cmd//\/sys%p/$dev}
# Our own group instead of gpio, which this machine may not have.
sh -c "${cmd//chgrp gpio/chgrp $(id -gn)}" || { echo "check-unit: the udev rule's command failed: $cmd" >&2; exit 1; }
[[ $(stat -c %a "$dev/resolution") == 664 && $(stat -c %a "$dev/../therm_bulk_read") == 664 ]] ||
    { echo "check-unit: udev rule: resolution / therm_bulk_read not group-writable" >&2; exit 1; }

echo "check-unit: verify clean; exposure $exposure (at most $max_exposure); GPIO nodes ${nodes[*]} allowed; udev rule OK" >&2
