#!/usr/bin/env bash
# check-deb.sh - what can be checked of the packages without installing
# them (scripts/systemd-test.sh installs the amd64 one under a real
# systemd): each .deb's control fields, files, modes and conffile, its
# maintainer scripts' syntax, and the armhf preinst refusing an ARMv6 CPU
# (run with stand-in `uname` commands: armv6l refused with the message,
# armv7l and aarch64 accepted).
#
# Usage: packaging/check-deb.sh DEB...
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for s in postinst prerm postrm preinst-armhf; do
    sh -n "$root/packaging/debian/$s" || fail "$s: syntax"
done

# The ARMv6 refusal, on stand-in CPUs.
preinst() { # preinst UNAME_M: runs the armhf preinst with that `uname -m`
    mkdir -p "$scratch/bin-$1"
    printf '#!/bin/sh\necho %s\n' "$1" >"$scratch/bin-$1/uname"
    chmod +x "$scratch/bin-$1/uname"
    PATH="$scratch/bin-$1:$PATH" sh "$root/packaging/debian/preinst-armhf" install
}
out=$(preinst armv6l 2>&1) && fail "preinst accepted armv6l"
grep -q 'Illegal instruction' <<<"$out" && grep -q 'arm-unknown-linux-gnueabihf' <<<"$out" ||
    fail "preinst on armv6l: no clear message: $out"
preinst armv7l >/dev/null 2>&1 || fail "preinst refused armv7l"
preinst aarch64 >/dev/null 2>&1 || fail "preinst refused aarch64"

for deb in "$@"; do
    name=$(basename "$deb")
    arch=$(dpkg-deb -f "$deb" Architecture)
    [[ $(dpkg-deb -f "$deb" Package) == thermalert ]] || fail "$name: package name"
    [[ $name == "thermalert_$(dpkg-deb -f "$deb" Version)_$arch.deb" ]] || fail "$name: file name vs control"
    dpkg-deb -c "$deb" >"$scratch/list"
    for f in ./usr/bin/thermalertd ./usr/bin/thermalert-notifier ./lib/systemd/system/thermalertd.service \
        ./lib/udev/rules.d/60-thermalert-w1.rules ./etc/thermalert/thermalertd.toml \
        ./usr/share/doc/thermalert/README.md ./usr/share/doc/thermalert/copyright; do
        grep -q " $f\$" "$scratch/list" || fail "$name: no $f"
    done
    grep -q '^-rwxr-xr-x root/root .* ./usr/bin/thermalertd$' "$scratch/list" || fail "$name: thermalertd mode/owner"
    grep -q '^-rw-r--r-- root/root .* ./etc/thermalert/thermalertd.toml$' "$scratch/list" || fail "$name: conffile mode/owner"
    rm -rf "$scratch/ctl"
    dpkg-deb -e "$deb" "$scratch/ctl"
    [[ $(cat "$scratch/ctl/conffiles") == /etc/thermalert/thermalertd.toml ]] || fail "$name: conffiles"
    if [[ $arch == armhf ]]; then
        [[ -x $scratch/ctl/preinst ]] || fail "$name: no ARMv6 preinst"
    else
        [[ ! -e $scratch/ctl/preinst ]] || fail "$name: a preinst outside armhf"
    fi
    echo "check-deb: $name OK ($(du -h "$deb" | cut -f1))" >&2
done
echo "check-deb: maintainer scripts OK; the armhf preinst refuses ARMv6" >&2
