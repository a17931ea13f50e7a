#!/usr/bin/env bash
# add-user.sh - add or update a thermalert MQTT user (gateway or notifier) in
# the Mosquitto password file, and for notifiers also in the ACL file.
# Run with --help for usage.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
marker='# --- notifiers (added by mosquitto/add-user.sh) ---'

usage() {
    cat <<EOF
Usage: $prog [options] gateway|notifier NAME

Adds NAME to the Mosquitto password file, or gives it a new password if it
is already there.  The password is random (unless THERMALERT_PASSWORD is set
in the environment) and is written, never printed, to the --password-out
file (mode 600), for the daemon's or notifier's password_file setting.

  gateway NAME   NAME is the gateway id (letters, digits, '-', '_'); the ACL's
                 %u patterns already cover it, the ACL file is not changed.
  notifier NAME  NAME may also contain '.' and '@'; a "user NAME" block is
                 appended to the ACL file unless there is one already.

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

if [[ $role == notifier ]]; then
    if awk -v n="$name" '$1 == "user" && $2 == n && NF == 2 { found = 1 } END { exit !found }' "$acl_file"; then
        printf '%s: %s already has a "user %s" block, left unchanged\n' "$prog" "$acl_file" "$name"
    else
        has_marker=false
        grep -qxF -- "$marker" "$acl_file" && has_marker=true
        {
            if ! $has_marker; then
                printf '\n%s\n' "$marker"
            fi
            printf '\nuser %s\n' "$name"
            printf 'topic read thermalert/+/status\n'
            printf 'topic read thermalert/+/alerts/#\n'
            printf 'topic read thermalert/+/sensors/#\n'
            printf 'topic readwrite thermalert/+/acks\n'
        } >>"$acl_file"
        printf '%s: added a "user %s" block to %s\n' "$prog" "$name" "$acl_file"
    fi
else
    if ! grep -qE '^[[:space:]]*pattern[[:space:]]+write[[:space:]]+thermalert/%u/' "$acl_file"; then
        printf '%s: warning: %s has no "pattern write thermalert/%%u/..." lines; gateway %s will not be allowed to publish\n' \
            "$prog" "$acl_file" "$name" >&2
    fi
fi

printf '%s: now run "systemctl reload mosquitto" (or send SIGHUP) so the broker re-reads %s and %s\n' \
    "$prog" "$passwd_file" "$acl_file"
