#!/usr/bin/env bash
# install-on-pi.sh - install (or upgrade, or remove) thermalertd as a systemd
# service on the Raspberry Pi. Run as root, with the cross-built binary next
# to this script (or --binary PATH), from a copy of the repository or from a
# folder holding thermalertd, thermalertd.service and thermalertd-w1.toml:
#
#   sudo scripts/install-on-pi.sh [options]
#
# Safe to re-run (that is also how to upgrade): an existing configuration,
# CA and password file are never overwritten. The broker is set up
# separately by mosquitto/install-on-pi.sh. Run with --help for the options.
set -euo pipefail

prog=${0##*/}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)

usage() {
    cat <<EOF
Usage: $prog [options]
       $prog --uninstall [--purge] [--root DIR]

Steps:
  1. install the binary as /usr/local/bin/thermalertd (mode 0755)
  2. install the unit as /etc/systemd/system/thermalertd.service, and
     60-thermalert-w1.rules as /etc/udev/rules.d/ (the gpio group may
     write the w1 files the daemon uses: therm_bulk_read, resolution)
  3. /etc/thermalert (0755): thermalertd.toml from thermalertd-w1.toml
     unless one exists (0644; ca_file = "ca.crt", password_file =
     "mqtt.pass"), ca.crt (0644) from --ca or the broker's
     /etc/mosquitto/certs/ca.crt unless one exists, mqtt.pass (root, 0600:
     systemd hands it to the service with LoadCredential=)
  4. the gpio group the unit names (SupplementaryGroups=gpio), if missing
  5. thermalertd check-config, systemctl daemon-reload, enable, and start
     (restart when it was running: an upgrade) - only once mqtt.pass exists

Options:
  --binary PATH         the thermalertd to install (default: ./thermalertd
                        next to this script)
  --ca FILE             the broker's CA certificate to install as ca.crt
                        (replaces an existing one)
  --password-file FILE  the gateway's MQTT password to install as mqtt.pass
                        (replaces an existing one)
  --no-start            install and enable, but do not (re)start
  --uninstall           stop and disable the service, remove the binary and
                        the unit; keep /etc/thermalert and the state
  --purge               with --uninstall: also remove /etc/thermalert and
                        the state (/var/lib/thermalert)
  --root DIR            install below DIR instead of / (for tests and
                        images): no systemctl, no groupadd, no check-config
  -h, --help            show this help
EOF
}

die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s\n' "$prog" "$*" >&2; printf "Try '%s --help'.\n" "$prog" >&2; exit 2; }
step() { printf '==> %s\n' "$*"; }

binary=
ca=
pass=
start=1
uninstall=0
purge=0
root=
while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) [[ $# -ge 2 ]] || usage_error "--binary needs a path"; binary=$2; shift 2 ;;
        --ca) [[ $# -ge 2 ]] || usage_error "--ca needs a file"; ca=$2; shift 2 ;;
        --password-file) [[ $# -ge 2 ]] || usage_error "--password-file needs a file"; pass=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        --purge) purge=1; shift ;;
        --root) [[ $# -ge 2 ]] || usage_error "--root needs a folder"; root=${2%/}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done
[[ $purge == 0 || $uninstall == 1 ]] || usage_error "--purge goes with --uninstall"
if [[ -z $root ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root (sudo $0 ...)"
    systemd=1
else
    [[ -d $root ]] || die "--root $root: no such folder"
    root=$(cd -- "$root" && pwd -P)
    systemd=0
fi

bin_path=$root/usr/local/bin/thermalertd
unit_path=$root/etc/systemd/system/thermalertd.service
rules_path=$root/etc/udev/rules.d/60-thermalert-w1.rules
etc=$root/etc/thermalert
state=$root/var/lib/thermalert

# The first of the candidates that exists.
find_file() {
    local f
    for f in "$@"; do
        [[ -f $f ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

if [[ $uninstall == 1 ]]; then
    if [[ $systemd == 1 ]] && [[ -e $unit_path ]]; then
        step "systemctl disable --now thermalertd"
        systemctl disable --now thermalertd.service || true
    fi
    step "removing $bin_path, $unit_path and $rules_path"
    rm -f "$bin_path" "$unit_path" "$rules_path"
    [[ $systemd == 0 ]] || systemctl daemon-reload
    if [[ $purge == 1 ]]; then
        # DynamicUser= keeps the state in /var/lib/private/thermalert.
        step "purging $etc and the state"
        rm -rf "$etc" "$state" "$root/var/lib/private/thermalert"
    else
        [[ -d $etc ]] && echo "kept $etc (remove it with --uninstall --purge)"
    fi
    exit 0
fi

if [[ -z $binary ]]; then
    binary=$(find_file "$here/thermalertd") ||
        die "no thermalertd next to this script: copy the cross-built binary to $here/ or pass --binary PATH"
fi
[[ -f $binary ]] || die "$binary: no such file"
unit_src=$(find_file "$here/thermalertd.service" "$here/../systemd/thermalertd.service") ||
    die "thermalertd.service not found next to this script or in ../systemd/"
[[ -z $ca || -f $ca ]] || die "--ca $ca: no such file"
[[ -z $pass || -f $pass ]] || die "--password-file $pass: no such file"

# root:root where we can (always on the Pi; a test run by a user keeps its own).
own() { [[ $(id -u) -ne 0 ]] || chown "$@"; }

step "binary: $bin_path"
install -d -m 0755 "$(dirname -- "$bin_path")"
# Through a temporary name and rename: the running binary is not written into.
install -m 0755 "$binary" "$bin_path.new"
own root:root "$bin_path.new"
mv -f "$bin_path.new" "$bin_path"

step "unit: $unit_path"
install -d -m 0755 "$(dirname -- "$unit_path")"
install -m 0644 "$unit_src" "$unit_path"
own root:root "$unit_path"

if rules_src=$(find_file "$here/60-thermalert-w1.rules" "$here/../systemd/60-thermalert-w1.rules"); then
    step "udev rule: $rules_path"
    install -d -m 0755 "$(dirname -- "$rules_path")"
    install -m 0644 "$rules_src" "$rules_path"
    own root:root "$rules_path"
else
    rules_src=
    echo "note: 60-thermalert-w1.rules not found next to this script or in ../systemd/:"
    echo "      the w1-sysfs backend will read the sensors one conversion at a time"
fi

step "configuration: $etc"
install -d -m 0755 "$etc"
own root:root "$etc"
if [[ -e $etc/thermalertd.toml ]]; then
    echo "kept $etc/thermalertd.toml"
else
    example=$(find_file "$here/thermalertd-w1.toml" "$here/../examples/thermalertd-w1.toml") ||
        die "thermalertd-w1.toml not found next to this script or in ../examples/"
    sed -e 's|^ca_file = .*|ca_file = "ca.crt"|' \
        -e 's|^password_file = .*|password_file = "mqtt.pass"   # the service gets it as the credential mqtt-password|' \
        "$example" >"$etc/thermalertd.toml.new"
    chmod 0644 "$etc/thermalertd.toml.new"
    own root:root "$etc/thermalertd.toml.new"
    mv "$etc/thermalertd.toml.new" "$etc/thermalertd.toml"
    echo "installed $etc/thermalertd.toml from $example: edit gateway_id, mqtt.host and the sensors"
fi
if [[ -n $ca ]]; then
    install -m 0644 "$ca" "$etc/ca.crt"
    echo "installed $etc/ca.crt from $ca"
elif [[ -e $etc/ca.crt ]]; then
    echo "kept $etc/ca.crt"
elif [[ -f $root/etc/mosquitto/certs/ca.crt ]]; then
    install -m 0644 "$root/etc/mosquitto/certs/ca.crt" "$etc/ca.crt"
    echo "installed $etc/ca.crt from the broker's $root/etc/mosquitto/certs/ca.crt"
else
    echo "note: no CA: copy the broker's ca.crt to $etc/ca.crt (or pass --ca FILE)"
fi
[[ ! -e $etc/ca.crt ]] || { chmod 0644 "$etc/ca.crt"; own root:root "$etc/ca.crt"; }
if [[ -n $pass ]]; then
    install -m 0600 "$pass" "$etc/mqtt.pass"
    echo "installed $etc/mqtt.pass from $pass"
fi
have_pass=0
if [[ -e $etc/mqtt.pass ]]; then
    # Root only: systemd reads it (LoadCredential=) and hands the service a copy.
    chmod 0600 "$etc/mqtt.pass"
    own root:root "$etc/mqtt.pass"
    have_pass=1
else
    echo "note: no $etc/mqtt.pass yet; on the broker's Pi:"
    echo "      sudo mosquitto/add-user.sh --password-out $etc/mqtt.pass gateway <gateway_id>"
fi

if [[ $systemd == 0 ]]; then
    echo "installed below $root (--root: no groupadd, no check-config, no systemctl)"
    exit 0
fi

if ! getent group gpio >/dev/null; then
    step "groupadd --system gpio (the unit's SupplementaryGroups=gpio)"
    groupadd --system gpio
fi

if [[ -n $rules_src ]] && command -v udevadm >/dev/null; then
    step "udevadm: reload the rules, apply them to the sensors present"
    udevadm control --reload-rules || true
    udevadm trigger --action=add --subsystem-match=w1 || true
fi

step "systemctl daemon-reload; enable thermalertd"
systemctl daemon-reload
systemctl enable thermalertd.service
if [[ $start == 0 ]]; then
    echo "not started (--no-start): sudo systemctl start thermalertd"
    exit 0
fi
if [[ $have_pass == 0 ]]; then
    echo "not started: the unit needs $etc/mqtt.pass (LoadCredential=); then: sudo systemctl start thermalertd"
    exit 0
fi
step "thermalertd check-config"
if ! "$bin_path" --config "$etc/thermalertd.toml" check-config; then
    die "the configuration has errors: fix $etc/thermalertd.toml, then sudo systemctl restart thermalertd"
fi
if systemctl is-active --quiet thermalertd.service; then
    step "systemctl restart thermalertd (upgrade)"
    systemctl restart thermalertd.service
else
    step "systemctl start thermalertd"
    systemctl start thermalertd.service
fi
systemctl --no-pager status thermalertd.service | head -n 5 || true
echo "logs: journalctl -fu thermalertd"
