#!/usr/bin/env bash
# cross-qemu.sh - prove the Raspberry Pi builds without Docker: cross-compile
# thermalertd and thermalert-notifier with Debian's own Rust cross toolchain
# (rustc-web + the ARM std from the archive) and run them under
# qemu-user-static: `thermalertd --version`, `check-config`, and a short run
# on the simulated backend against a Mosquitto on this machine (TLS,
# passwords, ACL) that must deliver a CRITICAL alert to the emulated notifier
# and get its answer back. Exit status non-zero when anything fails.
#
# aarch64-unknown-linux-gnu is required. armv7-unknown-linux-gnueabihf is
# built when its packages install; otherwise the script prints
# "armv7 skipped: <reason>" and goes on. (Debian's armhf is ARMv7: the
# Pi Zero / Pi 1 target, ARMv6, needs cross and Docker, see Cross.toml.)
#
# Installs its packages itself (with sudo when not root): rustc-web,
# cargo-web, qemu-user-static, the cross gcc + libc, libstd-rust-web-dev for
# the ARM architecture. rustup's toolchain stays the default for `cargo`.
#
# Usage: scripts/cross-qemu.sh [--no-apt] [--release] [--only aarch64|armv7] [--keep DIR]
#   --no-apt     do not install packages (they must be there)
#   --release    release profile (what users ship; default dev: on the
#                2-core CI machine a clean dev build of aarch64 takes 1m24s,
#                release 2m23s)
#   --only T     one target only
#   --keep DIR   scratch folder to use and keep (default: a temporary one)
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
export PATH="$PATH:/usr/sbin:/sbin"

apt=1
profile=dev
only=
keep=
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-apt) apt=0; shift ;;
        --release) profile=release; shift ;;
        --only) only=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "cross-qemu.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

say() { printf 'cross-qemu: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
t0=$SECONDS
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
apt_get() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

installed() { # installed PKG... : all installed?
    local p
    for p in "$@"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || return 1
    done
}
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
has_arch() { dpkg --print-foreign-architectures | grep -qx "$1"; }

common_pkgs=(rustc-web cargo-web qemu-user-static)
aarch64_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstd-rust-web-dev:arm64)
armv7_pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross libstd-rust-web-dev:armhf)

# The ARM std must be the very version of the host's rustc-web: when an
# architecture's index of bookworm-security is missing, apt offers the older
# std from bookworm and the install fails or downgrades. Say so plainly.
check_candidates() { # check_candidates ARCH -> reason on stdout, status 1
    local host std
    host=$(candidate rustc-web)
    std=$(candidate "libstd-rust-web-dev:$1")
    if [[ -z $host || -z $std || $host == "(none)" || $std == "(none)" ]]; then
        echo "no candidate for rustc-web ($host) or libstd-rust-web-dev:$1 ($std)"
        return 1
    fi
    if [[ $host != "$std" ]]; then
        echo "rustc-web $host but libstd-rust-web-dev:$1 $std (an index is missing or out of sync)"
        return 1
    fi
}

apt_s=0
armv7_reason=
if [[ $apt == 1 ]]; then
    ta=$SECONDS
    # aarch64 first, without armhf: a failing armhf index (a mirror in sync)
    # makes apt drop the whole bookworm-security batch, arm64 included.
    if ! installed "${common_pkgs[@]}" "${aarch64_pkgs[@]}"; then
        has_arch arm64 || "${sudo[@]}" dpkg --add-architecture arm64
        if has_arch armhf && ! installed libstd-rust-web-dev:armhf; then
            "${sudo[@]}" dpkg --remove-architecture armhf || true
        fi
        say "apt-get update (arm64)"
        apt_get update -qq >/dev/null 2>&1 || say "warning: apt-get update reported errors"
        reason=$(check_candidates arm64) || die "aarch64 packages: $reason"
        say "installing ${common_pkgs[*]} ${aarch64_pkgs[*]}"
        apt_get install -y -qq --no-install-recommends "${common_pkgs[@]}" "${aarch64_pkgs[@]}" >/dev/null
    fi
    if [[ $only != aarch64 ]] && ! installed "${armv7_pkgs[@]}"; then
        added=0
        if ! has_arch armhf; then
            "${sudo[@]}" dpkg --add-architecture armhf
            added=1
        fi
        say "apt-get update (armhf)"
        if ! out=$(apt_get update -qq 2>&1); then
            armv7_reason="apt-get update failed with armhf enabled: $(grep -m1 '^E:' <<<"$out" || echo "status $?")"
        elif ! armv7_reason=$(check_candidates armhf); then
            armv7_reason="armhf packages: $armv7_reason"
        elif ! out=$(apt_get install -y -qq --no-install-recommends "${armv7_pkgs[@]}" 2>&1); then
            armv7_reason="apt-get install failed: $(grep -m1 '^E:' <<<"$out" || echo "unknown error")"
        else
            armv7_reason=
        fi
        if [[ -n $armv7_reason ]]; then
            # Leave apt as it was: without armhf, so later `apt-get update`
            # runs (install-deps.sh) do not fail on its index.
            if [[ $added == 1 ]] && ! installed libstd-rust-web-dev:armhf; then
                "${sudo[@]}" dpkg --remove-architecture armhf || true
                apt_get update -qq >/dev/null 2>&1 || true
            fi
        fi
    fi
    apt_s=$((SECONDS - ta))
fi

targets=()
[[ $only == armv7 ]] || targets+=(aarch64)
if [[ $only != aarch64 ]]; then
    if [[ -n $armv7_reason ]]; then
        echo "armv7 skipped: $armv7_reason"
    elif ! installed "${armv7_pkgs[@]}"; then
        echo "armv7 skipped: its packages are not installed (${armv7_pkgs[*]})"
    else
        targets+=(armv7)
    fi
fi
installed "${common_pkgs[@]}" "${aarch64_pkgs[@]}" || die "packages missing: ${common_pkgs[*]} ${aarch64_pkgs[*]}"

# Debian's toolchain, explicitly: plain `cargo` would be rustup's, whose
# rustc has no ARM std (E0463).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTC_WRAPPER CARGO_BUILD_TARGET
rust_version=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
say "$(/usr/bin/rustc --version); $(/usr/bin/cargo --version); Cargo.toml rust-version $rust_version"

triple() { case $1 in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
qemu() { case $1 in aarch64) echo qemu-aarch64-static ;; armv7) echo qemu-arm-static ;; esac; }
linker() { case $1 in aarch64) echo aarch64-linux-gnu-gcc ;; armv7) echo arm-linux-gnueabihf-gcc ;; esac; }

build_s=0
for t in "${targets[@]}"; do
    tr=$(triple "$t")
    tb=$SECONDS
    say "building $tr ($profile)"
    # No qemu -L: the ARM libc comes from the multiarch libc6:arm64/armhf;
    # -L /usr/<triple> would mix two C libraries and hang tokio's threads.
    /usr/bin/cargo build --locked --bins --profile "$profile" --target "$tr" \
        --target-dir target/cross \
        --config "target.$tr.linker=\"$(linker "$t")\"" \
        --config "target.$tr.runner=\"$(qemu "$t")\"" \
        || die "$tr: build failed"
    say "$tr built in $((SECONDS - tb)) s"
    build_s=$((build_s + SECONDS - tb))
done

# One broker for the live runs, as scripts/demo.sh sets it up.
if [[ -n $keep ]]; then
    work=$keep
    rm -rf "$work"
    mkdir -p "$work"
else
    work=$(mktemp -d)
fi
pids=()
cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    [[ -n $keep ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$root/scripts/install-deps.sh"
# shellcheck source=mosquitto/scratch-broker.sh
source "$root/mosquitto/scratch-broker.sh"
scratch_broker_prepare "$work" 18883
scratch_broker_start "$work" || die "mosquitto did not start"
pids+=("$broker_pid")

scratch_broker_gateway_conf "One simulated freezer that goes CRITICAL after a second." \
    >"$work/thermalertd.toml" <<'TOML'
[[sensor]]
id = "28-000000000001"
name = "freezer"
warning_above = -15.0
critical_above = -10.0
hysteresis = 0.5
[sensor.sim]
loop_secs = 600.0
steps = [[0.0, -19.5], [1.0, -5.0]]
TOML

stop() { # stop PID: TERM, wait up to 10 s
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

run_s=0
fail=0
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
for t in "${targets[@]}"; do
    tr=$(triple "$t")
    q=$(qemu "$t")
    dir=target/cross/$tr/$([[ $profile == dev ]] && echo debug || echo "$profile")
    tr0=$SECONDS
    file "$dir/thermalertd" 2>/dev/null | sed 's/^/    /' >&2 || true

    out=$("$q" "$dir/thermalertd" --version) || die "$tr: thermalertd --version failed"
    [[ $out == "thermalertd $version" ]] || die "$tr: thermalertd --version printed '$out'"
    say "$tr: $out"
    "$q" "$dir/thermalertd" --config "$work/thermalertd.toml" check-config >&2 \
        || die "$tr: check-config failed"
    "$q" "$dir/thermalert-notifier" --version >/dev/null || die "$tr: thermalert-notifier --version failed"

    rm -rf "$work/state" "$work/notifier-state"
    "$q" "$dir/thermalert-notifier" --host localhost --port "$port" --ca-file "$work/certs/ca.crt" \
        --username operator --password-file "$work/operator.pass" --no-desktop \
        --client-id "cross-$t" --state-dir "$work/notifier-state" \
        >"$work/notifier-$t.out" 2>"$work/notifier-$t.log" &
    npid=$!
    pids+=("$npid")
    "$q" "$dir/thermalertd" --config "$work/thermalertd.toml" 2>"$work/thermalertd-$t.log" &
    dpid=$!
    pids+=("$dpid")
    ok=0
    for _ in $(seq 600); do # up to 60 s: emulation is slow, mostly at start
        if grep -q " CRITICAL " "$work/notifier-$t.out" 2>/dev/null &&
            grep -q "answered by cross-$t" "$work/thermalertd-$t.log" 2>/dev/null; then
            ok=1
            break
        fi
        kill -0 "$dpid" 2>/dev/null || break
        sleep 0.1
    done
    stop "$dpid"
    sleep 0.5
    stop "$npid"
    pids=("${pids[@]:0:1}")
    if [[ $ok == 1 ]]; then
        say "$tr: live run OK: $(grep -m1 ' CRITICAL ' "$work/notifier-$t.out")"
    else
        say "$tr: live run FAILED: no CRITICAL alert delivered and answered within 60 s"
        sed 's/^/    [thermalertd] /' "$work/thermalertd-$t.log" | tail -20 >&2
        sed 's/^/    [notifier] /' "$work/notifier-$t.log" | tail -10 >&2
        fail=1
    fi
    run_s=$((run_s + SECONDS - tr0))
done

say "timing: apt ${apt_s} s, build ${build_s} s, runs ${run_s} s, total $((SECONDS - t0)) s (targets: ${targets[*]})"
[[ $fail == 0 ]] || die "live run"
say "OK"
