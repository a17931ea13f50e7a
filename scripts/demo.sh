#!/usr/bin/env bash
# demo.sh - the whole product on one machine: a real Mosquitto with TLS and
# passwords, thermalertd on simulated sensors, and the notifier showing and
# answering the alerts. Runs until Ctrl-C, or for --duration SECS and then
# checks that alerts and answers flowed (CI uses that mode).
#
# Usage: scripts/demo.sh [--duration SECS]
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
duration=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
export PATH="$PATH:/usr/sbin:/sbin"

bash "$root/scripts/install-deps.sh"
echo "== building" >&2
(cd "$root" && cargo build --locked --bins -q)
bin=$root/target/debug

work=${THERMALERT_DEMO_DIR:-$root/demo}
rm -rf "$work"
mkdir -p "$work"
echo "== scratch folder: $work" >&2

# Certificates for localhost, users gw1 and operator, the project's ACL
# and broker configuration, on 8883 or the next free port.
# shellcheck source=mosquitto/scratch-broker.sh
source "$root/mosquitto/scratch-broker.sh"
scratch_broker_prepare "$work" 8883

scratch_broker_gateway_conf "Demo gateway: three simulated sensors whose scripts repeat every 40 s." \
    >"$work/thermalertd.toml" <<'TOML'
[[sensor]]
id = "28-000000000001"
name = "freezer"
warning_above = -15.0
critical_above = -10.0
warning_below = -30.0
hysteresis = 0.5
[sensor.sim]
loop_secs = 40.0
steps = [[0.0, -19.5], [4.0, -13.0], [8.0, -6.0], [16.0, -19.0]]

[[sensor]]
id = "28-000000000002"
name = "server-room"
warning_above = 30.0
critical_above = 35.0
hysteresis = 0.5
[sensor.sim]
loop_secs = 40.0
steps = [[0.0, 24.0], [20.0, 31.0], [28.0, 24.5]]

[[sensor]]
id = "28-000000000003"
name = "greenhouse"
warning_below = 8.0
critical_below = 4.0
hysteresis = 0.5
[sensor.sim]
loop_secs = 40.0
steps = [[0.0, 15.0], [10.0, 3.0], [14.0, 15.0]]
faults = [{ from = 30.0, until = 34.0, kind = "missing" }]
TOML

pids=()
# Stop in reverse order of start (daemon, notifier, broker), so that the
# notifier sees the gateway go offline cleanly.
cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "${pids[$i]}" 2>/dev/null || break
            sleep 0.1
        done
        [[ $i -gt 0 ]] && sleep 0.3
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scratch_broker_start "$work" || exit 1
pids+=("$broker_pid")
echo "== mosquitto on 127.0.0.1:$port (TLS, passwords, ACL)" >&2

"$bin/thermalert-notifier" --host localhost --port "$port" --ca-file "$work/certs/ca.crt" \
    --username operator --password-file "$work/operator.pass" \
    --client-id demo-operator --state-dir "$work/notifier-state" \
    > >(tee "$work/notifier.out") 2>"$work/notifier.log" &
pids+=($!)
"$bin/thermalertd" --config "$work/thermalertd.toml" \
    2> >(tee "$work/thermalertd.log" | grep --line-buffered -E "ALERT|answered|connect|ERROR" | sed -u 's/^/    [thermalertd] /' >&2) &
pids+=($!)

echo "== watching; by hand: mosquitto_sub -V mqttv5 -h localhost -p $port --cafile $work/certs/ca.crt -u operator -P \$(cat $work/operator.pass) -t 'thermalert/#' -v" >&2
if [[ $duration == 0 ]]; then
    echo "== Ctrl-C to stop" >&2
    wait
    exit 0
fi

sleep "$duration"
cleanup
pids=()
fail=0
for what in CRITICAL WARNING RESOLVED FAULT; do
    if ! grep -q " $what " "$work/notifier.out"; then
        echo "demo: the notifier showed no $what alert" >&2
        fail=1
    fi
done
if ! grep -q "answered by demo-operator" "$work/thermalertd.log"; then
    echo "demo: the daemon saw no answer from the notifier" >&2
    fail=1
fi
if ! grep -q "gateway gw1 is offline (shutdown)" "$work/notifier.out"; then
    echo "demo: the notifier did not see the gateway stop cleanly" >&2
    fail=1
fi
if [[ $fail == 0 ]]; then
    echo "demo: OK: $(grep -c ' ALERT ' "$work/thermalertd.log" || true) alerts raised, $(grep -c 'answered by' "$work/thermalertd.log" || true) answered" >&2
fi
exit $fail
