#!/usr/bin/env bash
# install-on-pi.sh - set up the Mosquitto broker for thermalert on the gateway
# Raspberry Pi (Raspberry Pi OS / Debian).  Run as root, from a checkout of
# the repository:
#
#   sudo mosquitto/install-on-pi.sh [options] [HOSTNAME_OR_IP...]
#
# Safe to re-run: existing certificates, ACL and password file are kept.
# Run with --help for the options.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
repo_dir=$(dirname -- "$script_dir")
make_certs=$repo_dir/certs/make-certs.sh

usage() {
    cat <<EOF
Usage: $prog [options] [HOSTNAME_OR_IP...]

Steps:
  1. apt-get install mosquitto mosquitto-clients openssl (if missing)
  2. install thermalert.conf as ETC/conf.d/thermalert.conf (an older,
     different copy is kept as thermalert.conf.bak-DATE)
  3. install thermalert.acl as ETC/thermalert.acl unless it exists
  4. make the CA and broker certificate in ETC/certs with
     certs/make-certs.sh unless they exist; HOSTNAME_OR_IP... are the
     certificate's names (default: this Pi's host names and addresses)
  5. give the mosquitto user read access to server.key and the password file
     (root:mosquitto 0640), create an empty password file if missing
  6. systemctl enable + restart mosquitto

Options:
  --reissue      issue a new server certificate from the existing CA (e.g.
                 after the Pi got a new name or address); clients keep ca.crt
  --no-apt       do not install packages
  --no-restart   do not enable/restart the service
  --etc DIR      Mosquitto configuration directory (default /etc/mosquitto;
                 other values are for testing, paths in the config are
                 rewritten to match)
  -h, --help     show this help
EOF
}

die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s\n' "$prog" "$*" >&2
    printf "Try '%s --help'.\n" "$prog" >&2
    exit 2
}

step() {
    printf '\n==> %s\n' "$*"
}

etc=/etc/mosquitto
reissue=false
do_apt=true
do_restart=true
sans=()

while (($# > 0)); do
    case $1 in
    --reissue)
        reissue=true
        shift
        ;;
    --no-apt)
        do_apt=false
        shift
        ;;
    --no-restart)
        do_restart=false
        shift
        ;;
    --etc)
        (($# >= 2)) || usage_error "option --etc needs an argument"
        etc=${2%/}
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        sans+=("$@")
        break
        ;;
    -*)
        usage_error "unknown option: $1"
        ;;
    *)
        sans+=("$1")
        shift
        ;;
    esac
done

((EUID == 0)) || die "run this as root (sudo $0)"
[[ -x $make_certs ]] || die "$make_certs not found or not executable"
[[ -f $script_dir/thermalert.conf && -f $script_dir/thermalert.acl ]] ||
    die "thermalert.conf / thermalert.acl not found next to $0"

certs=$etc/certs
conf=$etc/conf.d/thermalert.conf
acl=$etc/thermalert.acl
passwd=$etc/thermalert.passwd

# ------------------------------------------------------------------ packages
step "1. packages"
if $do_apt; then
    missing=()
    for pkg in mosquitto mosquitto-clients openssl; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} > 0)); then
        echo "installing: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        echo "mosquitto, mosquitto-clients and openssl are already installed"
    fi
else
    echo "skipped (--no-apt)"
fi
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || die "mosquitto is not installed"
command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
getent passwd mosquitto >/dev/null || die "there is no 'mosquitto' user (is the Debian mosquitto package installed?)"
getent group mosquitto >/dev/null || die "there is no 'mosquitto' group"
install -d -m 0755 "$etc" "$etc/conf.d" "$certs"

if [[ -f $etc/mosquitto.conf ]] && ! grep -qE "^[[:space:]]*include_dir[[:space:]]+$etc/conf.d/?[[:space:]]*$" "$etc/mosquitto.conf"; then
    echo "WARNING: $etc/mosquitto.conf has no 'include_dir $etc/conf.d'; thermalert.conf will not be loaded" >&2
fi
if [[ -f $etc/mosquitto.conf ]] && ! grep -qE '^[[:space:]]*persistence_location[[:space:]]' "$etc/mosquitto.conf"; then
    echo "WARNING: $etc/mosquitto.conf sets no persistence_location; the database goes to the broker's working directory" >&2
fi

# ---------------------------------------------------------------- config file
step "2. $conf"
tmp_conf=$(mktemp)
trap 'rm -f -- "$tmp_conf"' EXIT
if [[ $etc == /etc/mosquitto ]]; then
    cp -- "$script_dir/thermalert.conf" "$tmp_conf"
else
    sed "s|/etc/mosquitto/|$etc/|g" "$script_dir/thermalert.conf" >"$tmp_conf"
fi
if [[ -f $conf ]] && cmp -s -- "$tmp_conf" "$conf"; then
    echo "unchanged"
else
    if [[ -f $conf ]]; then
        # Mosquitto only loads *.conf from conf.d, so the backup is inert.
        backup=$conf.bak-$(date +%Y%m%d%H%M%S)
        cp -p -- "$conf" "$backup"
        echo "replaced; the previous version is in $backup"
    else
        echo "installed"
    fi
    install -m 0644 -o root -g root -- "$tmp_conf" "$conf"
fi
others=$(grep -lE '^[[:space:]]*(listener|per_listener_settings|password_file|acl_file)[[:space:]]' \
    "$etc"/conf.d/*.conf 2>/dev/null | grep -vxF -- "$conf" || true)
if [[ -n $others ]]; then
    echo "WARNING: other files in $etc/conf.d also configure listeners/security and may conflict:" >&2
    printf '  %s\n' "$others" >&2
fi

# ------------------------------------------------------------------------ ACL
step "3. $acl"
if [[ -e $acl ]]; then
    echo "exists, left unchanged (compare with $script_dir/thermalert.acl)"
else
    install -m 0644 -o root -g root -- "$script_dir/thermalert.acl" "$acl"
    echo "installed"
fi

# ---------------------------------------------------------------- certificates
step "4. certificates in $certs"
if $reissue; then
    [[ -f $certs/ca.crt && -f $certs/ca.key ]] ||
        die "--reissue needs $certs/ca.crt and $certs/ca.key"
    "$make_certs" --out "$certs" --reuse-ca "${sans[@]}"
elif [[ -f $certs/server.crt && -f $certs/server.key && -f $certs/ca.crt ]]; then
    echo "server certificate exists, kept (use --reissue for a new one):"
    openssl x509 -in "$certs/server.crt" -noout -subject -enddate -ext subjectAltName 2>/dev/null | sed 's/^/  /'
    if ! openssl x509 -in "$certs/server.crt" -noout -checkend $((30 * 86400)) >/dev/null; then
        echo "WARNING: the server certificate expires within 30 days; re-run with --reissue" >&2
    fi
elif [[ -f $certs/ca.crt && -f $certs/ca.key ]]; then
    echo "CA exists, issuing a server certificate"
    "$make_certs" --out "$certs" --reuse-ca "${sans[@]}"
elif [[ -f $certs/ca.crt ]]; then
    die "$certs/ca.crt exists without ca.key; put server.crt/server.key there yourself or move ca.crt away"
else
    "$make_certs" --out "$certs" "${sans[@]}"
fi
# The broker drops root before reading any file: it needs server.crt,
# ca.crt and server.key, never ca.key.
chown root:root "$certs/ca.crt" "$certs/server.crt"
chmod 0644 "$certs/ca.crt" "$certs/server.crt"
chown root:mosquitto "$certs/server.key"
chmod 0640 "$certs/server.key"
if [[ -f $certs/ca.key ]]; then
    chown root:root "$certs/ca.key"
    chmod 0600 "$certs/ca.key"
fi
chmod 0755 "$certs"

# --------------------------------------------------------------- password file
step "5. $passwd"
if [[ -e $passwd ]]; then
    echo "exists, kept"
else
    install -m 0640 -o root -g mosquitto /dev/null "$passwd"
    echo "created (empty: nobody can log in until you add users)"
fi
chown root:mosquitto "$passwd"
chmod 0640 "$passwd"

# --------------------------------------------------------------------- service
step "6. mosquitto service"
if $do_restart; then
    systemctl enable mosquitto >/dev/null 2>&1 || true
    if systemctl restart mosquitto && sleep 1 && systemctl is-active --quiet mosquitto; then
        echo "mosquitto is running"
    else
        echo "mosquitto failed to start; last log lines:" >&2
        journalctl -u mosquitto -n 20 --no-pager >&2 || true
        tail -n 20 /var/log/mosquitto/mosquitto.log >&2 2>/dev/null || true
        exit 1
    fi
else
    echo "skipped (--no-restart)"
fi

# ---------------------------------------------------------------------- next
fingerprint=$(openssl x509 -in "$certs/ca.crt" -noout -fingerprint -sha256 | sed 's/^[^=]*=//')
files_opt=
if [[ $etc != /etc/mosquitto ]]; then
    files_opt="--passwd $passwd --acl $acl "
fi
cat <<EOF

Done.  Next steps:

* Copy the CA certificate (public, not ca.key) to every workstation:
    scp $(uname -n):$certs/ca.crt ~/.config/thermalert/ca.crt
  and check its SHA-256 fingerprint there
  (openssl x509 -in ca.crt -noout -fingerprint -sha256):
    $fingerprint
  $certs/ca.key can be moved to offline storage; it is only needed to issue
  new certificates (certs/make-certs.sh --reuse-ca).

* Add a user for each gateway (user name = gateway id) and notifier:
    sudo install -d -m 0700 /etc/thermalert
    sudo $script_dir/add-user.sh ${files_opt}--password-out /etc/thermalert/mqtt.pass gateway GATEWAY_ID
    sudo $script_dir/add-user.sh ${files_opt}--password-out ./alice.pass notifier alice
    sudo systemctl reload mosquitto
  and give the .pass file to the daemon / the notifier's workstation.

* Port 8883/tcp must be reachable from the workstations (e.g. ufw allow 8883/tcp).
EOF
