# shellcheck shell=bash
# Sets the caller's $port and $broker_pid.
# shellcheck disable=SC2034
# scratch-broker.sh - sourced by scripts/demo.sh and scripts/cross-qemu.sh:
# a Mosquitto configured as on the Pi (mosquitto/thermalert.conf, the ACL,
# TLS, passwords), set up in a scratch folder on a free loopback port.
#
#   source mosquitto/scratch-broker.sh
#   scratch_broker_prepare DIR FIRST_PORT   # certs, users gw1 + operator; sets $port
#   scratch_broker_start DIR                # starts it; sets $broker_pid
#   scratch_broker_gateway_conf COMMENT <SENSORS >DIR/thermalertd.toml

scratch_broker_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

scratch_broker_prepare() {
    local dir=$1 r=$scratch_broker_root
    bash "$r/certs/make-certs.sh" --out "$dir/certs" localhost 127.0.0.1 2>/dev/null
    cp "$r/mosquitto/thermalert.acl" "$dir/acl"
    : >"$dir/passwd"
    chmod 600 "$dir/passwd"
    bash "$r/mosquitto/add-user.sh" --passwd "$dir/passwd" --acl "$dir/acl" \
        --password-out "$dir/gw1.pass" gateway gw1 >/dev/null
    bash "$r/mosquitto/add-user.sh" --passwd "$dir/passwd" --acl "$dir/acl" \
        --password-out "$dir/operator.pass" notifier operator >/dev/null
    port=$2
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    bash "$r/mosquitto/render-conf.sh" --dir "$dir" --port "$port" >"$dir/mosquitto.conf"
}

scratch_broker_start() {
    local dir=$1
    mosquitto -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
    broker_pid=$!
    for _ in $(seq 100); do
        grep -q "running" "$dir/mosquitto.log" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$dir/mosquitto.log" >&2
    echo "mosquitto did not start" >&2
    return 1
}

# Prints a thermalertd.toml for gateway gw1 on this broker ($port): a
# "# COMMENT" line, the [mqtt] table (TLS, gw1's password; paths relative
# to DIR, where the file belongs) and [sensors] (simulated, polled every
# 500 ms), then stdin: the [[sensor]] tables.
scratch_broker_gateway_conf() {
    printf '# %s\n' "$1"
    cat <<TOML
gateway_id = "gw1"
state_dir = "state"

[mqtt]
host = "localhost"
port = $port
ca_file = "certs/ca.crt"
username = "gw1"
password_file = "gw1.pass"
keep_alive_secs = 10
alert_expiry_secs = 300

[sensors]
backend = "sim"
poll_interval_ms = 500

TOML
    cat
}
