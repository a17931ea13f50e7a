#!/usr/bin/env bash
# systemd-test.sh - the user's own path on a real systemd 252: boot a Debian
# bookworm root filesystem with systemd-nspawn (systemd as PID 1, a real
# journald, no network but loopback), set up Mosquitto in it with
# mosquitto/install-on-pi.sh, `apt install` the amd64 .deb, and check what
# the README promises of the service, with a notifier (from the same .deb)
# answering the alerts throughout:
#
#   1. install: the gpio group, the conffile, the CA copied from the broker,
#      and the service not enabled while there is no mqtt.pass
#   2. `systemctl enable --now` returns once READY=1 came: active, with the
#      daemon's status line
#   3. the CRITICAL alert in `journalctl -u thermalertd -p crit` at priority
#      2 with its fields (-o verbose); the notifier answered it
#   4. the daemon runs as its DynamicUser (in the gpio group, no
#      capabilities, seccomp, no new privileges) with its outbox in its
#      StateDirectory; `systemd-analyze security thermalertd` <= 2.0
#   5. reload: a good change applies (a RESOLVED alert, same process); a bad
#      file is rejected with file, line and key, the daemon keeps running
#   6. `journalctl -p notice`: the alerts, and nothing chattier
#   7. watchdog: an alert waits in the outbox (broker stopped), the daemon is
#      frozen with SIGSTOP, systemd kills and restarts it (NRestarts=1), and
#      the alert reaches the broker, the notifier and an independent
#      subscriber exactly once
#   8. upgrade to a newer build of the package (revision 2) while an alert
#      waits in the outbox: the edited configuration stays, the service is
#      restarted, the alert is delivered once afterwards
#   9. `systemctl stop` publishes the retained offline status (reason
#      shutdown, not the Will)
#  10. `apt purge` removes the binaries, the unit, the configuration, the
#      state, the enablement
#  11. a first install where mqtt.pass exists enables and starts the service
#
# The root filesystem is made once by mmdebstrap from this machine's apt
# sources and cached in /var/cache/thermalert-systemd-test/ (keyed by suite,
# architecture, package list and sources). Needs root; installs
# mmdebstrap and systemd-container when missing.
#
# Usage: scripts/systemd-test.sh --bin-dir DIR   (amd64 thermalertd + thermalert-notifier)
#        [--keep DIR]   keep the container's root filesystem in DIR afterwards
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
export PATH="$PATH:/usr/sbin:/sbin"
bin_dir=
keep=
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "systemd-test: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -n $bin_dir ]] || { echo "systemd-test: --bin-dir DIR is required" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "systemd-test: run as root (systemd-nspawn)" >&2; exit 1; }

t0=$SECONDS
say() { printf 'systemd-test: [%3ds] %s\n' $((SECONDS - t0)) "$*" >&2; }
ok() { say "ok: $*"; }

# ---------------------------------------------------------------- host tools
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [[ ${#need[@]} -gt 0 ]]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- packages
work=$(mktemp -d /var/tmp/thermalert-systemd-test.XXXXXX)
nspawn_pid=
pid1=
rootfs=
shutdown_container() {
    if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # systemd-nspawn asks a --boot container to power off on SIGTERM.
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$nspawn_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
}
finish() {
    local rc=$?
    if [[ $rc -ne 0 && -n $pid1 ]] && kill -0 "$pid1" 2>/dev/null; then
        say "FAILED; the container's journal (last 60 lines) and thermalertd's status:"
        c journalctl --no-pager -n 60 -o short-monotonic >&2 || true
        c systemctl --no-pager status thermalertd >&2 || true
    fi
    shutdown_container
    if [[ -n $keep && -n $rootfs ]] && mountpoint -q "$rootfs"; then
        rm -rf "$keep"
        cp -a "$rootfs" "$keep"
        say "kept the root filesystem in $keep"
    fi
    [[ -z $rootfs ]] || ! mountpoint -q "$rootfs" || umount "$rootfs"
    rm -rf "$work"
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM
debs=$work/debs
deb1=$(bash "$root/packaging/build-deb.sh" --arch amd64 --bin-dir "$bin_dir" --revision 1 --out "$debs")
deb2=$(bash "$root/packaging/build-deb.sh" --arch amd64 --bin-dir "$bin_dir" --revision 2 --out "$debs")
say "built $(basename "$deb1") and $(basename "$deb2")"

# ---------------------------------------------------------------- root filesystem
suite=bookworm
pkgs=systemd,systemd-sysv,libnss-systemd,dbus,mosquitto,mosquitto-clients,openssl,procps
# This machine's Debian sources (deb822 or one-line files naming Debian's
# archive key or a debian.org mirror); mmdebstrap's default otherwise.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s $f ]] && grep -qE 'debian-archive-keyring|debian\.org' "$f" && sources+=("$f")
done
cache=/var/cache/thermalert-systemd-test
key=$( { echo "$suite amd64 $pkgs mmdebstrap-1"; cat "${sources[@]}" 2>/dev/null; } | sha256sum | cut -c1-16)
tarball=$cache/$suite-amd64-$key.tar
if [[ ! -f $tarball ]]; then
    say "mmdebstrap $suite ($pkgs) from ${sources[*]:-the default mirror}; cached as $tarball"
    mkdir -p "$cache"
    rm -f "$cache/$suite-amd64-"*.tar # older keys
    rm -f "$cache/partial.tar"
    mmdebstrap --quiet --variant=apt --include="$pkgs" "$suite" "$cache/partial.tar" "${sources[@]}"
    mv "$cache/partial.tar" "$tarball"
fi
# On a tmpfs: unpacked in a few seconds, gone with one umount (removing
# its 20000 files from the disk took 20 s).
rootfs=$work/root
mkdir "$rootfs"
mount -t tmpfs -o mode=0755,size=4g thermalert-systemd-test "$rootfs"
tar -C "$rootfs" -xf "$tarball"
# mmdebstrap writes no /etc/hosts; Debian's installer and Raspberry Pi OS do.
[[ -s $rootfs/etc/hosts ]] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
say "root filesystem ready ($(du -sh "$tarball" | cut -f1) cached tarball)"

# ---------------------------------------------------------------- boot

machine=thermalert-test-$$
say "booting the container (systemd-nspawn --boot --private-network)"
systemd-nspawn --quiet -D "$rootfs" -M "$machine" --boot --register=no --keep-unit \
    --private-network --bind-ro="$root:/mnt/thermalert" --bind-ro="$debs:/mnt/debs" \
    </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 100); do
    pid1=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [[ -n $pid1 ]] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log" >&2; echo "systemd-test: systemd-nspawn exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n $pid1 ]] || { echo "systemd-test: no systemd in the container" >&2; exit 1; }

# Runs a command in the container, with the container's environment only.
c() { nsenter -t "$pid1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }
fail() { say "FAILED: $*"; exit 1; }
# wait_for SECONDS WHAT CMD...: until CMD succeeds (each try is cheap; no
# fixed sleeps: it returns as soon as the event happened).
wait_for() {
    local t=$1 what=$2
    shift 2
    local end=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || fail "no $what within ${t}s"
        sleep 0.2
    done
}
prop() { c systemctl show -P "$2" "$1"; }

wait_for 30 "systemd's private socket" c test -S /run/systemd/private
state=$(c systemctl is-system-running --wait 2>/dev/null || true)
[[ $state == running || $state == degraded ]] || fail "the container's systemd is '$state'"
c systemctl --version | head -1 | grep -q '^systemd 252 ' || fail "not systemd 252: $(c systemctl --version | head -1)"
ok "booted: $(c systemctl --version | head -1 | cut -d' ' -f1-3), system $state"

# ---------------------------------------------------------------- broker
# The packages are in the image (the container has no network); the
# project's script configures them as on the Pi.
c bash /mnt/thermalert/mosquitto/install-on-pi.sh localhost >"$work/broker-install.log" 2>&1 ||
    { cat "$work/broker-install.log" >&2; fail "mosquitto/install-on-pi.sh"; }
ok "mosquitto/install-on-pi.sh: mosquitto $(prop mosquitto ActiveState)"

# ---------------------------------------------------------------- 1. install
v1=$(dpkg-deb -f "$deb1" Version)
v2=$(dpkg-deb -f "$deb2" Version)
c apt-get install -y -q "/mnt/debs/$(basename "$deb1")" >"$work/apt-install.log" 2>&1 ||
    { cat "$work/apt-install.log" >&2; fail "apt-get install $(basename "$deb1")"; }
[[ $(c dpkg-query -W -f='${Status} ${Version}' thermalert) == "install ok installed $v1" ]] || fail "thermalert $v1 not installed"
c getent group gpio >/dev/null || fail "postinst: no gpio group"
c dpkg-query -W -f='${Conffiles}' thermalert | grep -q '/etc/thermalert/thermalertd.toml ' || fail "thermalertd.toml is not a conffile"
c cmp -s /etc/mosquitto/certs/ca.crt /etc/thermalert/ca.crt || fail "postinst: the broker's CA was not copied"
[[ $(c systemctl is-enabled thermalertd 2>&1) == disabled ]] || fail "enabled without mqtt.pass"
grep -q 'installed, not enabled' "$work/apt-install.log" || fail "postinst did not say what to do next"
[[ $(prop thermalertd ActiveState) == inactive ]] || fail "started without mqtt.pass"
out=$(c systemd-analyze verify thermalertd.service 2>&1) || fail "systemd-analyze verify: $out"
ok "apt install $v1: gpio group, conffile, CA copied, not enabled without credentials"

# ---------------------------------------------------------------- users, notifier
addu() { c bash /mnt/thermalert/mosquitto/add-user.sh --password-out "$3" "$1" "$2" >/dev/null; }
addu gateway gw1 /etc/thermalert/mqtt.pass
addu notifier operator /root/operator.pass
addu notifier spy /root/spy.pass
c systemctl reload mosquitto
# The configuration the package ships is valid once the password is there.
c thermalertd --config /etc/thermalert/thermalertd.toml check-config >/dev/null ||
    fail "the shipped /etc/thermalert/thermalertd.toml fails check-config"
# The operator's notifier, from the package; it answers every alert.
c systemd-run --quiet --unit=test-notifier -p StandardOutput=append:/var/tmp/notifier.out \
    /usr/bin/thermalert-notifier --host localhost --port 8883 --ca-file /etc/thermalert/ca.crt \
    --username operator --password-file /root/operator.pass --client-id test-notifier \
    --state-dir /var/lib/test-notifier --no-desktop --json
# An independent subscriber: every PUBLISH of an alert the broker passes on
# (QoS 2, a session that survives the broker's restarts; -R: not the
# retained copies a re-subscription after a reconnect brings).
c systemd-run --quiet --unit=test-spy -p StandardOutput=append:/var/tmp/spy.out \
    stdbuf -oL mosquitto_sub -h localhost -p 8883 --cafile /etc/thermalert/ca.crt -V mqttv5 \
    -u spy --pw "$(cat "$rootfs/root/spy.pass")" -i test-spy -c -x 600 -q 2 -R -t 'thermalert/gw1/alerts/#'
notifier_out=$rootfs/var/tmp/notifier.out
spy_out=$rootfs/var/tmp/spy.out

# ---------------------------------------------------------------- 2. start
# The user's edit: the simulated backend, one freezer at -5 C.
conf=$rootfs/etc/thermalert/thermalertd.toml
write_conf() { # write_conf WARNING_ABOVE CRITICAL_ABOVE [EXTRA_LINE]
    cat >"$conf.new" <<EOF
# Edited by scripts/systemd-test.sh (an upgrade must keep this file).
gateway_id = "gw1"

[mqtt]
host = "localhost"
port = 8883
ca_file = "ca.crt"
username = "gw1"
password_file = "mqtt.pass"
keep_alive_secs = 5
reconnect_max_secs = 1

[sensors]
backend = "sim"
poll_interval_ms = 500

[[sensor]]
id = "28-000000000001"
name = "freezer"
warning_above = $1
critical_above = $2
hysteresis = 0.5
${3:-}
[sensor.sim]
steps = [[0.0, -5.0]]
EOF
    mv "$conf.new" "$conf"
}
write_conf -15.0 -10.0
c systemctl enable --now thermalertd >/dev/null 2>&1 || fail "systemctl enable --now thermalertd"
# `systemctl start` of a Type=notify unit returns once READY=1 arrived.
[[ $(prop thermalertd Type) == notify ]] || fail "not Type=notify"
[[ $(prop thermalertd ActiveState) == active ]] || fail "not active after start: $(prop thermalertd ActiveState)"
[[ -n $(prop thermalertd StatusText) ]] || fail "no STATUS= from the daemon"
connected() { prop thermalertd StatusText | grep -q '^connected to localhost:8883'; }
wait_for 20 "status line 'connected to localhost:8883'" connected
pid_a=$(prop thermalertd MainPID)
ok "enable --now: active (READY=1), status: $(prop thermalertd StatusText)"

# ---------------------------------------------------------------- 3. journal
# nth_alert LEVEL N: the id of the Nth alert of LEVEL in the daemon's journal.
nth_alert() {
    c journalctl -u thermalertd -o verbose --no-pager "LEVEL=$1" |
        sed -n 's/^ *ALERT_ID=//p' | sed -n "${2}p"
}
has_alert() { [[ -n $(nth_alert "$1" "$2") ]]; }
wait_for 20 "CRITICAL alert in the journal" has_alert CRITICAL 1
crit1=$(nth_alert CRITICAL 1)
entry=$(c journalctl -u thermalertd -p crit -o verbose --no-pager "ALERT_ID=$crit1")
for f in PRIORITY=2 "ALERT_ID=$crit1" SENSOR_ID=28-000000000001 SENSOR_NAME=freezer LEVEL=CRITICAL \
    CELSIUS= THRESHOLD= GATEWAY=gw1 SYSLOG_IDENTIFIER=thermalertd; do
    grep -q "^ *$f" <<<"$entry" || { printf '%s\n' "$entry" >&2; fail "journalctl -p crit: no $f"; }
done
# answered: the notifier showed it and the daemon logged its answer.
answered() { c journalctl -u thermalertd --no-pager -o cat | grep -q "alert $1 answered by test-notifier (delivered)"; }
shown() { grep -c "\"id\":\"$1\"" "$notifier_out" 2>/dev/null || true; }
wait_for 20 "answer to $crit1" answered "$crit1"
[[ $(shown "$crit1") == 1 ]] || fail "the notifier showed $crit1 $(shown "$crit1") times"
ok "journalctl -p crit: CRITICAL $crit1 at priority 2 with its fields; the notifier answered it"

# ---------------------------------------------------------------- 4. identity, hardening
# (PIDs are the container's: /proc is read inside.)
c cat "/proc/$pid_a/status" >"$work/status"
st=$work/status
uid=$(awk '/^Uid:/ { print $2 }' "$st")
((uid >= 61184 && uid <= 65519)) || fail "uid $uid is not a dynamic user's"
[[ $(c id -nu "$uid") == thermalertd ]] || fail "uid $uid is not the dynamic user thermalertd"
gpio_gid=$(c getent group gpio | cut -d: -f3)
grep -qE "^Groups:.*\b$gpio_gid\b" "$st" || fail "not in the gpio group ($gpio_gid): $(grep ^Groups: "$st")"
grep -q '^CapEff:[[:space:]]*0000000000000000$' "$st" || fail "capabilities: $(grep ^CapEff: "$st")"
grep -q '^NoNewPrivs:[[:space:]]*1$' "$st" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2$' "$st" || fail "no seccomp filter"
[[ $(c readlink /var/lib/thermalert) == private/thermalert ]] || fail "/var/lib/thermalert is not the DynamicUser StateDirectory link"
[[ $(stat -c %u "$rootfs/var/lib/private/thermalert") == "$uid" ]] || fail "the state directory is not the dynamic user's"
[[ -f $rootfs/var/lib/private/thermalert/outbox.log ]] || fail "no outbox.log in the state directory"
grep -qa "$crit1" "$rootfs/var/lib/private/thermalert/outbox.log" || fail "the outbox did not record $crit1"
sec=$(c systemd-analyze security --no-pager thermalertd 2>&1 | grep 'Overall exposure level') || fail "systemd-analyze security: no exposure"
exposure=$(sed -n 's/.*: \([0-9.]*\) .*/\1/p' <<<"$sec")
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure above 2.0"
# Hardening that breaks something shows as a warning or an error of the
# daemon's (a blocked call, a path it may not write), not an alert: there
# is none.
warnings=$(c journalctl -u thermalertd -p warning --no-pager -o json --output-fields=MESSAGE,ALERT_ID \
    SYSLOG_IDENTIFIER=thermalertd | grep -v '"ALERT_ID"' || true)
[[ -z $warnings ]] || fail "the daemon warned under the unit's hardening: $warnings"
# And systemd has nothing to say about the unit but the GPIO nodes this
# machine lacks (DeviceAllow= for the Pi 3/4 and the Pi 5).
pid1_warnings=$(c journalctl -u thermalertd -p warning --no-pager -o cat _PID=1 | grep -v "^Couldn't stat device /dev/gpiomem" || true)
[[ -z $pid1_warnings ]] || fail "systemd warned about the unit: $pid1_warnings"
absent=$(c journalctl -u thermalertd -p warning --no-pager -o cat _PID=1 | grep -c "^Couldn't stat device /dev/gpiomem" || true)
ok "DynamicUser thermalertd (uid $uid, gpio), no capabilities, seccomp, outbox in /var/lib/private/thermalert; systemd-analyze security: exposure $exposure; systemd's warnings: $absent absent GPIO node(s)"

# ---------------------------------------------------------------- 5. reload
restarts=$(prop thermalertd NRestarts)
write_conf -1.0 0.0
c systemctl reload thermalertd
wait_for 20 "RESOLVED alert after a good reload" has_alert RESOLVED 1
resolved1=$(nth_alert RESOLVED 1)
c journalctl -u thermalertd --no-pager -o cat | grep -q 'reload: configuration reloaded from /etc/thermalert/thermalertd.toml' ||
    fail "no 'configuration reloaded' line"
[[ $(prop thermalertd MainPID) == "$pid_a" ]] || fail "the reload restarted the daemon"
wait_for 20 "answer to $resolved1" answered "$resolved1"
ok "reload (good): the new thresholds applied (RESOLVED $resolved1), same process $pid_a"

write_conf -1.0 0.0 'no_such_key = 1'
c systemctl reload thermalertd
bad_logged() { c journalctl -u thermalertd -p err --no-pager -o cat | grep -q 'reload: invalid configuration, keeping the running one: .*thermalertd.toml.*no_such_key'; }
wait_for 20 "rejected bad reload in the journal" bad_logged
[[ $(prop thermalertd ActiveState) == active && $(prop thermalertd MainPID) == "$pid_a" ]] ||
    fail "a bad reload stopped the daemon"
[[ $(prop thermalertd NRestarts) == "$restarts" ]] || fail "a bad reload restarted the daemon"
ok "reload (bad): '$(c journalctl -u thermalertd -p err --no-pager -o cat | grep 'reload: invalid' | tail -1)'; still active"
write_conf -1.0 0.0

# ---------------------------------------------------------------- 6. -p notice
# Every daemon entry at notice or above is an alert or a warning/error:
# notice (5) and crit (2) belong to alerts only; and there is chatter (info)
# that -p notice leaves out.
c journalctl -u thermalertd -p notice -o json --no-pager --output-fields=PRIORITY,ALERT_ID,SYSLOG_IDENTIFIER,MESSAGE \
    >"$work/notice.json"
grep '"SYSLOG_IDENTIFIER":"thermalertd"' "$work/notice.json" >"$work/notice-daemon.json" || true
grep -q '"ALERT_ID":"'"$crit1" "$work/notice-daemon.json" || fail "-p notice: no CRITICAL $crit1"
grep -q '"ALERT_ID":"'"$resolved1" "$work/notice-daemon.json" || fail "-p notice: no RESOLVED $resolved1"
if grep -E '"PRIORITY":"[25]"' "$work/notice-daemon.json" | grep -v '"ALERT_ID"'; then
    fail "-p notice: an entry at crit or notice that is not an alert"
fi
all=$(c journalctl -u thermalertd --no-pager -o cat SYSLOG_IDENTIFIER=thermalertd | wc -l)
shown_notice=$(wc -l <"$work/notice-daemon.json")
((all > shown_notice)) || fail "-p notice: nothing was left out ($all lines in all)"
ok "journalctl -p notice: $shown_notice of the daemon's $all entries, every crit/notice one an alert"

# ---------------------------------------------------------------- 7. watchdog
in_outbox() { grep -qa "$1" "$rootfs/var/lib/private/thermalert/outbox.log"; }
c systemctl stop mosquitto
write_conf -15.0 -10.0
c systemctl reload thermalertd
wait_for 20 "second CRITICAL alert (broker stopped)" has_alert CRITICAL 2
crit2=$(nth_alert CRITICAL 2)
wait_for 10 "$crit2 in the outbox on disk" in_outbox "$crit2"
[[ $(shown "$crit2") == 0 ]] || fail "$crit2 was delivered with the broker stopped"
tw=$SECONDS
c kill -STOP "$pid_a"
c systemctl start mosquitto
restarted() { [[ $(prop thermalertd NRestarts) == 1 && $(prop thermalertd ActiveState) == active ]]; }
wait_for 60 "watchdog restart (NRestarts=1)" restarted
pid_b=$(prop thermalertd MainPID)
[[ $pid_b != "$pid_a" ]] || fail "same MainPID after the restart"
c journalctl -u thermalertd --no-pager -o cat | grep -q 'Watchdog timeout' || fail "no 'Watchdog timeout' from systemd"
wait_for 30 "answer to $crit2 after the restart" answered "$crit2"
wait_for 10 "$crit2 at the subscriber" grep -q "$crit2" "$spy_out"
[[ $(shown "$crit2") == 1 ]] || fail "the notifier showed $crit2 $(shown "$crit2") times"
[[ $(grep -c "\"id\":\"$crit2\"" "$spy_out") == 1 ]] || fail "the broker passed $crit2 on $(grep -c "$crit2" "$spy_out") times"
ok "watchdog: frozen $pid_a killed and restarted as $pid_b after $((SECONDS - tw)) s, NRestarts=1; outbox alert $crit2 delivered and answered once"

# ---------------------------------------------------------------- 8. upgrade
sum_before=$(sha256sum <"$conf")
c systemctl stop mosquitto
write_conf -1.0 0.0
c systemctl reload thermalertd
wait_for 20 "second RESOLVED alert (broker stopped)" has_alert RESOLVED 2
resolved2=$(nth_alert RESOLVED 2)
wait_for 10 "$resolved2 in the outbox on disk" in_outbox "$resolved2"
sum_before=$(sha256sum <"$conf")
c apt-get install -y -q "/mnt/debs/$(basename "$deb2")" >"$work/apt-upgrade.log" 2>&1 ||
    { cat "$work/apt-upgrade.log" >&2; fail "apt-get install $(basename "$deb2")"; }
[[ $(c dpkg-query -W -f='${Version}' thermalert) == "$v2" ]] || fail "not upgraded to $v2"
[[ $(sha256sum <"$conf") == "$sum_before" ]] || fail "the upgrade changed the edited configuration"
grep -q 'restarting thermalertd' "$work/apt-upgrade.log" || fail "postinst did not restart the service"
pid_c=$(prop thermalertd MainPID)
[[ $pid_c != "$pid_b" && $(prop thermalertd ActiveState) == active ]] || fail "not restarted by the upgrade"
in_outbox "$resolved2" || fail "the upgrade lost the outbox"
c systemctl start mosquitto
wait_for 30 "answer to $resolved2 after the upgrade" answered "$resolved2"
wait_for 10 "$resolved2 at the subscriber" grep -q "$resolved2" "$spy_out"
[[ $(shown "$resolved2") == 1 ]] || fail "the notifier showed $resolved2 $(shown "$resolved2") times"
[[ $(grep -c "\"id\":\"$resolved2\"" "$spy_out") == 1 ]] || fail "the broker passed $resolved2 on $(grep -c "$resolved2" "$spy_out") times"
ok "upgrade $v1 -> $v2: configuration kept, restarted ($pid_b -> $pid_c), outbox alert $resolved2 delivered once"

# ---------------------------------------------------------------- 9. stop
wait_for 20 "status line 'connected'" connected
c systemctl stop thermalertd
status=$(c timeout 10 mosquitto_sub -h localhost -p 8883 --cafile /etc/thermalert/ca.crt -V mqttv5 \
    -u spy --pw "$(cat "$rootfs/root/spy.pass")" -i test-status -C 1 -t thermalert/gw1/status 2>&1) ||
    fail "no retained status: $status"
grep -q '"state":"offline"' <<<"$status" && grep -q '"reason":"shutdown"' <<<"$status" ||
    fail "status after stop: $status"
ok "systemctl stop: retained status $status"

# ---------------------------------------------------------------- 10. purge
c apt-get purge -y -q thermalert >"$work/apt-purge.log" 2>&1 || { cat "$work/apt-purge.log" >&2; fail "apt-get purge"; }
for p in /usr/bin/thermalertd /usr/bin/thermalert-notifier /lib/systemd/system/thermalertd.service \
    /lib/udev/rules.d/60-thermalert-w1.rules /etc/thermalert /var/lib/private/thermalert /var/lib/thermalert \
    /etc/systemd/system/multi-user.target.wants/thermalertd.service; do
    [[ ! -e $rootfs$p && ! -L $rootfs$p ]] || fail "after purge: $p is still there"
done
[[ $(prop thermalertd LoadState) == not-found ]] || fail "systemd still knows thermalertd: $(prop thermalertd LoadState)"
c dpkg-query -W -f='${Status}' thermalert 2>/dev/null | grep -q 'ok installed' && fail "dpkg still lists thermalert"
ok "apt purge: binaries, unit, rule, /etc/thermalert, state and enablement removed"

# ---------------------------------------------------------------- 11. install with credentials
# A first install where mqtt.pass is already there (and the shipped
# configuration, w1-sysfs: no bus here, the sensors are FAULTs) enables and
# starts the service by itself.
c install -d -m 0755 /etc/thermalert
c install -m 0600 /root/operator.pass /etc/thermalert/mqtt.pass
c apt-get install -y -q "/mnt/debs/$(basename "$deb1")" >"$work/apt-install2.log" 2>&1 ||
    { cat "$work/apt-install2.log" >&2; fail "apt-get install $(basename "$deb1") with mqtt.pass present"; }
grep -q 'enabling and starting thermalertd' "$work/apt-install2.log" || fail "postinst did not enable the service"
[[ $(c systemctl is-enabled thermalertd) == enabled && $(prop thermalertd ActiveState) == active ]] ||
    fail "not enabled and active after an install with credentials"
c apt-get purge -y -q thermalert >/dev/null 2>&1 || fail "second purge"
ok "a first install with mqtt.pass present: enabled and started by the postinst"

# Exactly once, counted again at the end: a late duplicate had the rest of
# the run to arrive.
for id in "$crit1" "$resolved1" "$crit2" "$resolved2"; do
    [[ $(shown "$id") == 1 ]] || fail "in the end, the notifier showed $id $(shown "$id") times"
    [[ $(grep -c "\"id\":\"$id\"" "$spy_out") == 1 ]] || fail "in the end, the broker passed $id on $(grep -c "$id" "$spy_out") times"
done
ok "each alert shown once by the notifier and passed on once by the broker, counted at the end"
c systemctl stop test-notifier test-spy
say "OK: all checks passed in $((SECONDS - t0)) s"
