#!/usr/bin/env bash
# build-deb.sh - the thermalert Debian package, from binaries already built,
# with Debian's own dpkg-deb (nothing to compile, unlike cargo-deb):
#
#   /usr/bin/thermalertd, /usr/bin/thermalert-notifier
#   /lib/systemd/system/thermalertd.service      systemd/thermalertd.service
#   /lib/udev/rules.d/60-thermalert-w1.rules     systemd/60-thermalert-w1.rules
#   /etc/thermalert/thermalertd.toml             a conffile: examples/thermalertd-w1.toml
#                                                with ca_file = "ca.crt" and
#                                                password_file = "mqtt.pass"
#   /usr/share/doc/thermalert/                   README.md, CHANGELOG.md, copyright, examples/
#   maintainer scripts                           packaging/debian/ (preinst: armhf only)
#
# Usage: packaging/build-deb.sh --arch amd64|arm64|armhf --bin-dir DIR [--revision N] [--out DIR]
#   --bin-dir DIR   holds thermalertd and thermalert-notifier for --arch
#                   (checked: an x86-64 binary in an arm64 package is refused)
#   --revision N    the Debian revision: VERSION-N, VERSION from Cargo.toml (default 1)
#   --out DIR       where the .deb goes (default target/deb); its path is printed
set -euo pipefail
umask 022
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
arch=
bin_dir=
revision=1
out=$root/target/deb
while [[ $# -gt 0 ]]; do
    case $1 in
        --arch) arch=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        --revision) revision=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument: $1" >&2; exit 2 ;;
    esac
done
die() { echo "build-deb: $*" >&2; exit 1; }
[[ -n $arch && -n $bin_dir ]] || die "--arch and --bin-dir are required (--help)"

# The ELF header's e_machine (offset 18, little endian) of each binary.
case $arch in
    amd64) machine=62 ;;  # EM_X86_64
    arm64) machine=183 ;; # EM_AARCH64
    armhf) machine=40 ;;  # EM_ARM
    *) die "--arch $arch: one of amd64, arm64, armhf" ;;
esac
for b in thermalertd thermalert-notifier; do
    [[ -f $bin_dir/$b ]] || die "$bin_dir/$b: not built"
    m=$(od -An -tu2 -j18 -N2 "$bin_dir/$b" | tr -d ' ')
    [[ $m == "$machine" ]] || die "$bin_dir/$b: ELF machine $m, not $arch's $machine"
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
full=$version-$revision
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
p=$stage/pkg
doc=$p/usr/share/doc/thermalert
install -d -m 0755 "$p/DEBIAN" "$p/usr/bin" "$p/lib/systemd/system" "$p/lib/udev/rules.d" \
    "$p/etc/thermalert" "$doc/examples"
install -m 0755 "$bin_dir/thermalertd" "$bin_dir/thermalert-notifier" "$p/usr/bin/"
install -m 0644 "$root/systemd/thermalertd.service" "$p/lib/systemd/system/"
install -m 0644 "$root/systemd/60-thermalert-w1.rules" "$p/lib/udev/rules.d/"
# The Pi's configuration: the CA and the password next to it.
sed -e 's|^ca_file = .*|ca_file = "ca.crt"           # the broker'"'"'s CA; the package copies /etc/mosquitto/certs/ca.crt when the broker is on this machine|' \
    -e 's|^password_file = .*|password_file = "mqtt.pass"   # root-only; the service gets it as the credential mqtt-password|' \
    "$root/examples/thermalertd-w1.toml" >"$p/etc/thermalert/thermalertd.toml"
grep -q '^ca_file = "ca.crt"' "$p/etc/thermalert/thermalertd.toml" || die "examples/thermalertd-w1.toml: no ca_file line to rewrite"
grep -q '^password_file = "mqtt.pass"' "$p/etc/thermalert/thermalertd.toml" || die "examples/thermalertd-w1.toml: no password_file line to rewrite"
chmod 0644 "$p/etc/thermalert/thermalertd.toml"
install -m 0644 "$root/README.md" "$root/CHANGELOG.md" "$doc/"
install -m 0644 "$root"/examples/*.toml "$doc/examples/"
cat >"$doc/copyright" <<'TXT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: thermalert

Files: *
License: MIT or Apache-2.0
 The Rust crates linked into the binaries carry their own licenses
 (MIT, Apache-2.0, ISC, BSD): see Cargo.lock in the source.
TXT

install -m 0755 "$root/packaging/debian/postinst" "$root/packaging/debian/prerm" \
    "$root/packaging/debian/postrm" "$p/DEBIAN/"
# ARMv6 (Pi Zero / Pi 1) would die with "Illegal instruction": refuse it.
[[ $arch != armhf ]] || install -m 0755 "$root/packaging/debian/preinst-armhf" "$p/DEBIAN/preinst"
printf '/etc/thermalert/thermalertd.toml\n' >"$p/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$p" | cut -f1)
cat >"$p/DEBIAN/control" <<TXT
Package: thermalert
Version: $full
Architecture: $arch
Maintainer: thermalert developers <thermalert@users.noreply.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1
Suggests: mosquitto, mosquitto-clients
Section: misc
Priority: optional
Description: DS18B20 temperature alerts over MQTT v5 + TLS
 thermalertd reads DS18B20 sensors on a Raspberry Pi and publishes MQTT v5
 alerts through a Mosquitto broker (systemd service thermalertd, enabled
 once /etc/thermalert/mqtt.pass exists); thermalert-notifier shows them on
 a workstation and answers them.
TXT

mkdir -p "$out"
deb=$out/thermalert_${full}_$arch.deb
dpkg-deb --root-owner-group -Zgzip --build "$p" "$deb" >/dev/null
echo "$deb"
