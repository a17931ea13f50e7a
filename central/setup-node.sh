#!/usr/bin/env bash
# setup-node.sh - set up, run and administer one node of thermalert's
# central MQTT broker cluster: Debian's ejabberd (apt-get install ejabberd)
# serving MQTT 5 over TLS with mod_mqtt, its own configuration, spool and
# node name, independent of the Debian package's own ejabberd service.
#
# Usage:
#   central/setup-node.sh init --dir DIR --node NAME@ADDR --port PORT --certs CERTDIR
#       [--host DOMAIN] [--ip ADDR] [--cookie-file FILE] [--epmd-port PORT]
#       [--notifier USER]... [--loglevel LEVEL]
#     Renders DIR/ejabberd.yml from central/ejabberd.yml.in and DIR/server.pem
#     from CERTDIR/server.crt + server.key (certs/make-certs.sh), and keeps
#     the node's settings in DIR/node.env. Every node of a cluster needs the
#     same --cookie-file (made here when missing) and the same --notifier list.
#   central/setup-node.sh start --dir DIR
#     Runs the node in the foreground (exec: the process is the Erlang VM).
#   central/setup-node.sh ctl --dir DIR COMMAND [ARGS...]
#     An ejabberdctl command against the running node, e.g.
#       ctl --dir DIR join_cluster thermalert1@10.0.0.1   (join a cluster)
#       ctl --dir DIR register gw1 DOMAIN SECRET          (add a user, cluster-wide)
#       ctl --dir DIR list_cluster
#     and "ctl --dir DIR status" (exit 0 once the node is started).
#
# Erlang distribution: the node listens on --ip only (inet_dist_use_interface)
# and talks to an epmd bound to that address (ERL_EPMD_ADDRESS) on
# --epmd-port (default 4369); start that epmd yourself ("epmd -address ADDR
# -port PORT") or let the first node start it. Keep the cookie secret and the
# distribution ports behind a firewall: anyone with both controls the node.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
die() { echo "setup-node.sh: $*" >&2; exit 2; }

cmd=${1:-}
[[ -n $cmd ]] || die "usage: setup-node.sh init|start|ctl --dir DIR ..."
shift
dir= node= port= certs= host=thermalert.local ip=127.0.0.1 cookie_file= epmd_port=4369 loglevel=info
notifiers=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --dir) dir=$2; shift 2;;
        --node) node=$2; shift 2;;
        --port) port=$2; shift 2;;
        --certs) certs=$2; shift 2;;
        --host) host=$2; shift 2;;
        --ip) ip=$2; shift 2;;
        --cookie-file) cookie_file=$2; shift 2;;
        --epmd-port) epmd_port=$2; shift 2;;
        --notifier) notifiers+=("$2"); shift 2;;
        --loglevel) loglevel=$2; shift 2;;
        --) shift; break;;
        -*) die "unknown option $1";;
        *) break;;
    esac
done
[[ -n $dir ]] || die "--dir is required"

# Where Debian keeps ejabberd's Erlang applications.
ejabberd_libs() {
    local d
    for d in /usr/lib/*/ejabberd-* /usr/lib/ejabberd/lib/ejabberd-* /usr/lib/erlang/lib/ejabberd-*; do
        [[ -d $d/ebin ]] && { dirname "$d"; return; }
    done
    die "ejabberd not found (apt-get install ejabberd)"
}

erl_ip() { # 127.0.0.1 -> {127,0,0,1}
    local IFS=.
    # shellcheck disable=SC2206
    local p=($1)
    [[ ${#p[@]} -eq 4 ]] || die "--ip must be an IPv4 address: $1"
    echo "{${p[0]},${p[1]},${p[2]},${p[3]}}"
}

case $cmd in
init)
    [[ -n $node && -n $port && -n $certs ]] || die "init needs --node, --port and --certs"
    [[ $node == *@* ]] || die "--node must be NAME@ADDRESS"
    [[ ${#notifiers[@]} -gt 0 ]] || notifiers=(notifier)
    mkdir -p "$dir/spool" "$dir/logs"
    dir=$(cd -- "$dir" && pwd -P)
    cookie_file=${cookie_file:-$dir/cookie}
    if [[ ! -s $cookie_file ]]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cookie_file")
    fi
    (umask 077; cat "$certs/server.crt" "$certs/ca.crt" "$certs/server.key" >"$dir/server.pem")
    list=
    for n in "${notifiers[@]}"; do
        [[ $n =~ ^[A-Za-z0-9._-]+$ ]] || die "notifier user name: $n"
        list+="      - \"$n\""$'\n'
    done
    awk -v host="$host" -v port="$port" -v ip="$ip" -v cert="$dir/server.pem" \
        -v level="$loglevel" -v list="${list%$'\n'}" '
        { gsub(/@HOST@/, host); gsub(/@PORT@/, port); gsub(/@IP@/, ip);
          gsub(/@CERTFILE@/, cert); gsub(/@LOGLEVEL@/, level);
          if ($0 == "@NOTIFIERS@") $0 = list; print }' \
        "$here/ejabberd.yml.in" >"$dir/ejabberd.yml"
    cat >"$dir/node.env" <<ENV
node=$node
ip=$ip
epmd_port=$epmd_port
cookie_file=$cookie_file
host=$host
port=$port
ENV
    echo "setup-node.sh: node $node in $dir: MQTT over TLS on $ip:$port, domain $host" >&2
    ;;
start|ctl)
    [[ -f $dir/node.env ]] || die "$dir/node.env missing: run init first"
    # shellcheck disable=SC1091
    . "$dir/node.env"
    dir=$(cd -- "$dir" && pwd -P)
    export HOME=$dir ERL_EPMD_ADDRESS=$ip ERL_EPMD_PORT=$epmd_port
    export ERL_LIBS
    ERL_LIBS=$(ejabberd_libs)
    export EJABBERD_CONFIG_PATH=$dir/ejabberd.yml EJABBERD_LOG_PATH=$dir/logs/ejabberd.log
    export ERL_CRASH_DUMP=$dir/logs/erl_crash.dump ERL_CRASH_DUMP_BYTES=0
    common=(-setcookie "$(cat "$cookie_file")" -kernel inet_dist_use_interface "$(erl_ip "$ip")")
    if [[ $cmd == start ]]; then
        cd "$dir"
        exec erl -name "$node" "${common[@]}" +K true +P 250000 -noinput -noshell \
            -mnesia dir "\"$dir/spool\"" -s ejabberd
    fi
    [[ $# -gt 0 ]] || die "ctl needs a command"
    ctl="ctl$$-${node%%@*}@$ip"
    exec erl -name "$ctl" "${common[@]}" -hidden -noinput -noshell \
        -s ejabberd_ctl -extra "$node" "$@"
    ;;
*) die "unknown command $cmd (init, start, ctl)";;
esac
