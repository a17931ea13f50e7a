#!/usr/bin/env bash
# install-deps.sh - install what the demo and the tests need on a Debian,
# Ubuntu or Raspberry Pi OS machine: Mosquitto and its clients, OpenSSL,
# coreutils (stdbuf), systemd (systemd-analyze), dbus-daemon. Skips what is already
# there; uses sudo when not root.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v mosquitto_passwd >/dev/null 2>&1 || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v stdbuf >/dev/null 2>&1 || need+=(coreutils)
# A private session bus for the desktop-notification test (tests/desktop.rs).
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
# systemd-analyze checks the unit (scripts/check-unit.sh); no running systemd needed.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Home Assistant's own MQTT discovery code checks the daemon's discovery
# payloads (tests/homeassistant.rs): a Python >= 3.11 virtual environment
# made by scripts/ha-schema-env.sh from PyPI (Debian 12's python3 is 3.11).
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
# The central broker cluster of tests/cluster.rs (central/setup-node.sh):
# Debian's ejabberd (mod_mqtt) and the Erlang runtime it brings.
ejabberd_installed() { compgen -G '/usr/lib/*/ejabberd-*/ebin' >/dev/null || compgen -G '/usr/lib/erlang/lib/ejabberd-*/ebin' >/dev/null; }
ejabberd_installed || need+=(ejabberd)
if [[ ${#need[@]} -gt 0 ]]; then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    echo "install-deps: installing ${need[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The tests run ejabberd nodes of their own (own config, spool, node names,
# ports and epmd on 127.0.0.1): the package's system instance is not needed.
if [[ " ${need[*]} " == *" ejabberd "* ]] && command -v systemctl >/dev/null 2>&1; then
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" systemctl disable --now ejabberd >/dev/null 2>&1 || true
fi
# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
if ! command -v mosquitto >/dev/null 2>&1 && [[ -x /usr/sbin/mosquitto ]]; then
    echo "install-deps: note: mosquitto is /usr/sbin/mosquitto; add /usr/sbin to PATH" >&2
fi
command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
