#!/usr/bin/env bash
# check-install-on-pi.sh - exercise scripts/install-on-pi.sh with --root in a
# scratch folder (no systemctl): files, modes, idempotence, a kept
# configuration, upgrade, --uninstall and --uninstall --purge. With a host
# thermalertd binary as argument, the installed configuration must also pass
# its check-config.
#
# Usage: scripts/check-install-on-pi.sh [THERMALERTD]
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
host_bin=${1:-}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "check-install-on-pi: FAILED: $*" >&2; exit 1; }
mode() { stat -c %a "$1"; }
install_sh=$root/scripts/install-on-pi.sh
r=$scratch/root
mkdir -p "$r" "$scratch/in"

# A stand-in binary (the real one is for ARM), a CA and a password.
printf '#!/bin/sh\necho v1\n' >"$scratch/in/thermalertd"
bash "$root/certs/make-certs.sh" --out "$scratch/certs" localhost >/dev/null 2>&1
printf 'secret\n' >"$scratch/in/gw1.pass"

bash "$install_sh" --root "$r" --binary "$scratch/in/thermalertd" \
    --ca "$scratch/certs/ca.crt" --password-file "$scratch/in/gw1.pass" >/dev/null
b=$r/usr/local/bin/thermalertd
e=$r/etc/thermalert
[[ -x $b && $(mode "$b") == 755 ]] || fail "binary missing or mode $(mode "$b")"
cmp -s "$r/etc/systemd/system/thermalertd.service" "$root/systemd/thermalertd.service" || fail "unit differs"
[[ $(mode "$r/etc/systemd/system/thermalertd.service") == 644 ]] || fail "unit mode"
rules=$r/etc/udev/rules.d/60-thermalert-w1.rules
cmp -s "$rules" "$root/systemd/60-thermalert-w1.rules" || fail "udev rule missing or different"
[[ $(mode "$rules") == 644 ]] || fail "udev rule mode"
# The rule's command on a stand-in sysfs (its group: ours, not gpio).
dev=$scratch/sys/devices/w1_bus_master1/28-0000000001
mkdir -p "$dev"
: >"$dev/resolution"; : >"$dev/../therm_bulk_read"
chmod 0644 "$dev/resolution" "$dev/../therm_bulk_read"
cmd=$(sed -n "s|.*RUN+=\"/bin/sh -c '\(.*\)'\"\$|\1|p" "$rules")
[[ -n $cmd ]] || fail "udev rule: no RUN command found"
cmd=${cmd//\/sys%p/$dev}
sh -c "${cmd//chgrp gpio/chgrp $(id -gn)}" || fail "udev rule: its command failed: $cmd"
[[ $(mode "$dev/resolution") == 664 && $(mode "$dev/../therm_bulk_read") == 664 ]] ||
    fail "udev rule: resolution / therm_bulk_read not group-writable"
[[ $(mode "$e") == 755 ]] || fail "/etc/thermalert mode $(mode "$e")"
[[ $(mode "$e/thermalertd.toml") == 644 ]] || fail "config mode $(mode "$e/thermalertd.toml")"
[[ $(mode "$e/ca.crt") == 644 ]] || fail "ca.crt mode"
[[ $(mode "$e/mqtt.pass") == 600 ]] || fail "mqtt.pass mode $(mode "$e/mqtt.pass")"
grep -qx 'ca_file = "ca.crt"' "$e/thermalertd.toml" || fail "config: ca_file not ca.crt"
grep -q '^password_file = "mqtt.pass"' "$e/thermalertd.toml" || fail "config: password_file not mqtt.pass"
# The path the unit hands over as the credential.
grep -qx 'LoadCredential=mqtt-password:/etc/thermalert/mqtt.pass' "$r/etc/systemd/system/thermalertd.service" ||
    fail "unit: LoadCredential path changed; update install-on-pi.sh"
if [[ -n $host_bin ]]; then
    "$host_bin" --config "$e/thermalertd.toml" check-config >/dev/null || fail "installed config fails check-config"
fi

# Re-run = upgrade: a new binary goes in, the edited config, CA and password stay.
echo '# edited by hand' >>"$e/thermalertd.toml"
cp "$e/thermalertd.toml" "$scratch/edited.toml"
chmod 644 "$e/mqtt.pass"
printf '#!/bin/sh\necho v2\n' >"$scratch/in/thermalertd"
bash "$install_sh" --root "$r" --binary "$scratch/in/thermalertd" >/dev/null
[[ $("$b") == v2 ]] || fail "upgrade did not replace the binary"
cmp -s "$e/thermalertd.toml" "$scratch/edited.toml" || fail "re-run overwrote the configuration"
[[ $(mode "$e/mqtt.pass") == 600 ]] || fail "re-run did not restore mqtt.pass to 0600"
cmp -s "$e/ca.crt" "$scratch/certs/ca.crt" || fail "re-run changed ca.crt"

# Uninstall keeps the configuration; --purge removes it.
mkdir -p "$r/var/lib/thermalert"
bash "$install_sh" --root "$r" --uninstall >/dev/null
[[ ! -e $b && ! -e $r/etc/systemd/system/thermalertd.service && ! -e $rules ]] ||
    fail "--uninstall left the binary, unit or udev rule"
[[ -f $e/thermalertd.toml && -f $e/mqtt.pass ]] || fail "--uninstall removed the configuration"
bash "$install_sh" --root "$r" --uninstall >/dev/null || fail "a second --uninstall failed"
bash "$install_sh" --root "$r" --uninstall --purge >/dev/null
[[ ! -e $e && ! -e $r/var/lib/thermalert ]] || fail "--purge left $e or the state"
echo "check-install-on-pi: OK" >&2
