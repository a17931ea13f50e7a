#!/usr/bin/env bash
# add-user.sh - add or update a thermalert MQTT user (gateway or notifier) in
# the Mosquitto password file, and for notifiers also in the ACL file.
# Run with --help for usage.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
notifier_marker='# --- notifiers (added by mosquitto/add-user.sh) ---'
gateway_marker='# --- gateways (added by mosquitto/add-user.sh) ---'

usage() {
    cat <<EOF
Usage: $prog [options] gateway|notifier NAME

Adds NAME to the Mosquitto password file, or gives it a new password if it
is already there.  The password is random (unless THERMALERT_PASSWORD is set
in the environment) and is written, never printed, to the --password-out
file (mode 600), for the daemon's or notifier's password_file setting.

  gateway NAME   NAME is the gateway id (letters, digits, '-', '_'); a
                 "user NAME" block granting its own thermalert/NAME/ topics
                 is appended to the ACL file unless there is one already.
  notifier NAME  NAME may also contain '.' and '@'; a "user NAME" block
                 granting reading and answering alerts (but not publishing
                 them) is appended to the ACL file unless there is one already.

A NAME that already has a block of the other role is refused (exit 1): one
account has one role.

Options:
  --passwd FILE        password file (default /etc/mosquitto/thermalert.passwd;
                       created with mode 600 if missing, or root:mosquitto
                       640 when run as root; an existing file keeps its
                       owner and mode)
  --acl FILE           ACL file (default /etc/mosquitto/thermalert.acl; if
                       missing it is created from $script_dir/thermalert.acl)
  --password-out FILE  where to write the plain password (default ./NAME.pass)
  -h, --help           show this help

Environment:
  THERMALERT_PASSWORD  use this password instead of a random one

Afterwards run "systemctl reload mosquitto" so the broker re-reads the files.
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

passwd_file=/etc/mosquitto/thermalert.passwd
acl_file=/etc/mosquitto/thermalert.acl
password_out=
args=()

need_arg() {
    (($2 >= 2)) || usage_error "option $1 needs an argument"
}

while (($# > 0)); do
    case $1 in
    --passwd)
        need_arg "$1" $#
        passwd_file=$2
        shift 2
        ;;
    --passwd=*)
        passwd_file=${1#*=}
        shift
        ;;
    --acl)
        need_arg "$1" $#
        acl_file=$2
        shift 2
        ;;
    --acl=*)
        acl_file=${1#*=}
        shift
        ;;
    --password-out)
        need_arg "$1" $#
        password_out=$2
        shift 2
        ;;
    --password-out=*)
        password_out=${1#*=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        args+=("$@")
        break
        ;;
    -*)
        usage_error "unknown option: $1"
        ;;
    *)
        args+=("$1")
        shift
        ;;
    esac
done

((${#args[@]} == 2)) || usage_error "expected: gateway|notifier NAME"
role=${args[0]}
name=${args[1]}

case $role in
gateway)
    # The name becomes a topic level via %u: no '+', '#', '/' or spaces.
    [[ $name =~ ^[A-Za-z0-9_-]+$ ]] ||
        usage_error "gateway name '$name' may only contain letters, digits, '-' and '_'"
    ;;
notifier)
    [[ $name =~ ^[A-Za-z0-9_.@-]+$ ]] ||
        usage_error "notifier name '$name' may only contain letters, digits, '.', '@', '-' and '_'"
    ;;
*)
    usage_error "the first argument must be 'gateway' or 'notifier', not '$role'"
    ;;
esac
((${#name} <= 64)) || usage_error "name '$name' is longer than 64 characters"
[[ -n $password_out ]] || password_out=./$name.pass
[[ -n $passwd_file && -n $acl_file ]] || usage_error "--passwd and --acl need a file name"
# mosquitto_passwd has no "--": keep a relative path from looking like an option.
[[ $passwd_file == -* ]] && passwd_file=./$passwd_file

# The role of NAME's existing "user NAME" block in FILE: gateway, notifier,
# other (a block that is neither), or nothing when there is none.
block_role() {
    awk -v n="$name" '
        $1 == "user" { inblock = ($2 == n && NF == 2); if (inblock) found = 1; next }
        inblock && $1 == "topic" && $NF == "thermalert/" n "/alerts/#" && ($2 == "write" || $2 == "readwrite") { gw = 1 }
        inblock && $1 == "topic" && $NF == "thermalert/+/acks" { nt = 1 }
        END { if (gw) print "gateway"; else if (nt) print "notifier"; else if (found) print "other" }
    ' "$1"
}

if [[ -f $acl_file ]]; then
    existing_role=$(block_role "$acl_file")
    if [[ -n $existing_role && $existing_role != "$role" ]]; then
        die "$acl_file already has a \"user $name\" block for a $existing_role, not a $role; one account has one role (use another name, or remove that block first)"
    fi
fi

command -v mosquitto_passwd >/dev/null 2>&1 ||
    die "mosquitto_passwd not found (apt-get install mosquitto)"

# ------------------------------------------------------------------ password
if [[ -n ${THERMALERT_PASSWORD:-} ]]; then
    password=$THERMALERT_PASSWORD
    [[ $password != *$'\n'* && $password != *$'\r'* ]] ||
        die "THERMALERT_PASSWORD must not contain line breaks"
    password_source="from THERMALERT_PASSWORD"
else
    command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for a random password)"
    password=$(openssl rand -base64 24 | tr -d '/+=\n')
    ((${#password} >= 24)) || die "could not generate a random password"
    password_source="random"
fi

# Everything created from here on is private.
umask 077

# Write the plain password first (atomically, mode 600), so that a failure
# later never leaves a password in the broker that nobody knows.
out_dir=$(dirname -- "$password_out")
[[ -d $out_dir ]] || die "directory $out_dir does not exist (for --password-out)"
tmp_out=$(mktemp "$out_dir/.${password_out##*/}.XXXXXX")
trap 'rm -f -- "$tmp_out"' EXIT
printf '%s\n' "$password" >"$tmp_out"
chmod 600 "$tmp_out"

# mosquitto_passwd reads the password twice from stdin when -b is not given.
# That keeps it off the command line, where other users could see it in ps.
# Its prompts go to stdout and are discarded; errors go to stderr.
if [[ -e $passwd_file ]]; then
    [[ -f $passwd_file ]] || die "$passwd_file is not a regular file"
    # mosquitto_passwd rewrites the file in place; keep owner and mode anyway
    # (the broker, running as user mosquitto, must still be able to read it).
    owner_mode=$(stat -c '%u:%g %a' -- "$passwd_file")
    if cut -d: -f1 -- "$passwd_file" | grep -qxF -- "$name"; then
        action="updated the password of"
    else
        action="added"
    fi
    printf '%s\n%s\n' "$password" "$password" |
        mosquitto_passwd "$passwd_file" "$name" >/dev/null ||
        die "mosquitto_passwd failed for $passwd_file"
    chown -- "${owner_mode% *}" "$passwd_file" 2>/dev/null || true
    chmod -- "${owner_mode#* }" "$passwd_file"
else
    passwd_dir=$(dirname -- "$passwd_file")
    [[ -d $passwd_dir ]] || die "directory $passwd_dir does not exist (for --passwd)"
    printf '%s\n%s\n' "$password" "$password" |
        mosquitto_passwd -c "$passwd_file" "$name" >/dev/null ||
        die "mosquitto_passwd failed to create $passwd_file"
    chmod 600 "$passwd_file"
    # A broker started as root switches to the 'mosquitto' user before it
    # reads the password file, so as root give that group read access.
    if ((EUID == 0)) && getent group mosquitto >/dev/null 2>&1; then
        chgrp mosquitto "$passwd_file" && chmod 640 "$passwd_file"
    fi
    action="created the password file with"
fi
unset password THERMALERT_PASSWORD

mv -f -- "$tmp_out" "$password_out"
trap - EXIT

printf '%s: %s %s %s in %s (password %s)\n' "$prog" "$action" "$role" "$name" "$passwd_file" "$password_source"
printf '%s: wrote the password to %s (mode 600)\n' "$prog" "$password_out"

# ----------------------------------------------------------------------- ACL
umask 022
if [[ ! -e $acl_file ]]; then
    [[ -f $script_dir/thermalert.acl ]] || die "$acl_file does not exist and no template found"
    cp -- "$script_dir/thermalert.acl" "$acl_file"
    chmod 644 "$acl_file"
    printf '%s: created %s from %s\n' "$prog" "$acl_file" "$script_dir/thermalert.acl"
fi

if [[ -n $(block_role "$acl_file") ]]; then
    printf '%s: %s already has a "user %s" block, left unchanged\n' "$prog" "$acl_file" "$name"
else
    if [[ $role == gateway ]]; then
        marker=$gateway_marker
    else
        marker=$notifier_marker
    fi
    {
        grep -qxF -- "$marker" "$acl_file" || printf '\n%s\n' "$marker"
        printf '\nuser %s\n' "$name"
        if [[ $role == gateway ]]; then
            printf 'topic write thermalert/%s/status\n' "$name"
            printf 'topic write thermalert/%s/sensors/#\n' "$name"
            printf 'topic readwrite thermalert/%s/alerts/#\n' "$name"
            printf 'topic read thermalert/%s/acks\n' "$name"
            printf 'topic readwrite homeassistant/sensor/%s/#\n' "$name"
            printf 'topic readwrite homeassistant/binary_sensor/%s/#\n' "$name"
        else
            printf 'topic read thermalert/+/status\n'
            printf 'topic read thermalert/+/alerts/#\n'
            printf 'topic read thermalert/+/sensors/#\n'
            printf 'topic readwrite thermalert/+/acks\n'
        fi
    } >>"$acl_file"
    printf '%s: added a "user %s" block (%s) to %s\n' "$prog" "$name" "$role" "$acl_file"
fi
# An ACL from an earlier release grants every account, operators included,
# the right to publish alerts under its own name.
if grep -qE '^[[:space:]]*pattern[[:space:]]+(write|readwrite)[[:space:]]+thermalert/%u/alerts' "$acl_file"; then
    printf '%s: warning: %s still has "pattern write thermalert/%%u/alerts/#": every account, notifiers included, may publish alerts under its own name; run add-user.sh for each gateway, then remove the "pattern" lines for thermalert/%%u/ and homeassistant/ (README: "Upgrading the ACL")\n' \
        "$prog" "$acl_file" >&2
fi

printf '%s: now run "systemctl reload mosquitto" (or send SIGHUP) so the broker re-reads %s and %s\n' \
    "$prog" "$passwd_file" "$acl_file"
