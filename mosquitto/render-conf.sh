#!/usr/bin/env bash
# render-conf.sh - turn mosquitto/thermalert.conf (the Pi's configuration)
# into a stand-alone broker configuration in a scratch folder, for the demo
# and the tests: same directives, with the paths moved into DIR, the listener
# on 127.0.0.1:PORT, and the broker running as the invoking user.
#
# Usage: render-conf.sh --dir DIR --port PORT [--plaintext] [--extra LINE]... > mosquitto.conf
# DIR must hold certs/{ca.crt,server.crt,server.key}, passwd and acl.
set -euo pipefail
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
dir= port= plaintext=0
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --plaintext) plaintext=1; shift ;;
        --extra) extra+=("$2"); shift 2 ;;
        *) echo "render-conf.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -n $dir && -n $port ]] || { echo "usage: render-conf.sh --dir DIR --port PORT [--plaintext] [--extra LINE]..." >&2; exit 2; }
dir=$(cd -- "$dir" && pwd -P)

echo "# Rendered from mosquitto/thermalert.conf by mosquitto/render-conf.sh"
echo "user $(id -un)"
sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
    -e "s#^listener .*#listener $port 127.0.0.1#" \
    -e "s#/etc/mosquitto/certs/#$dir/certs/#" \
    -e "s#/etc/mosquitto/thermalert.passwd#$dir/passwd#" \
    -e "s#/etc/mosquitto/thermalert.acl#$dir/acl#" \
    "$script_dir/thermalert.conf" |
    if [[ $plaintext == 1 ]]; then
        grep -Ev '^(cafile|certfile|keyfile|tls_version|require_certificate) '
    else
        cat
    fi
echo "persistence_location $dir/"
echo "log_dest stderr"
echo "log_type all"
for l in "${extra[@]}"; do
    echo "$l"
done
