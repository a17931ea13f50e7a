#!/usr/bin/env bash
# ha-schema-env.sh - a Python virtual environment with Home Assistant's own
# MQTT discovery code, for tests/homeassistant.rs (tests/ha/check_discovery.py
# validates every discovery payload the daemon publishes with it).
#
# Home Assistant 2024.3.3 from PyPI with --no-deps, plus the few of its
# pinned dependencies that importing its MQTT sensor and binary_sensor
# platforms needs (tests/ha/requirements.txt). Needs Python >= 3.11 with
# venv (Debian: python3-venv, which scripts/install-deps.sh installs) and
# PyPI the first time; the environment is kept in target/ha-venv (or
# $THERMALERT_HA_VENV) and rebuilt only when this script or the
# requirements change; pip's own cache makes a rebuild quick.
#
# Usage: scripts/ha-schema-env.sh    prints the environment's python
set -euo pipefail
root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
ha_version=2024.3.3
req="$root/tests/ha/requirements.txt"
dir="${THERMALERT_HA_VENV:-$root/target/ha-venv}"
stamp=$(cat "${BASH_SOURCE[0]}" "$req" | sha256sum | cut -c1-16)
mkdir -p "$(dirname "$dir")"
# One builder at a time (test threads, parallel test binaries).
exec 9>"$dir.lock"
flock 9
if [[ -x $dir/bin/python && -f $dir/.stamp && $(cat "$dir/.stamp") == "$stamp" ]]; then
    echo "$dir/bin/python"
    exit 0
fi
py=""
for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 \
        && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        py=$(command -v "$c")
        break
    fi
done
if [[ -z $py ]]; then
    echo "ha-schema-env: Home Assistant $ha_version needs Python >= 3.11; none found" >&2
    exit 1
fi
if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "ha-schema-env: $py has no venv/ensurepip: install python3-venv (scripts/install-deps.sh does)" >&2
    exit 1
fi
echo "ha-schema-env: creating $dir with $("$py" --version) and homeassistant==$ha_version (first run only)" >&2
rm -rf "$dir"
"$py" -m venv "$dir"
pip=("$dir/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install -r "$req" >&2
# The rest of its dependencies are left out on purpose: no conflict warnings.
"${pip[@]}" install --no-deps --no-warn-conflicts "homeassistant==$ha_version" >&2
"$dir/bin/python" -c 'import homeassistant.components.mqtt.sensor, homeassistant.components.mqtt.binary_sensor'
echo "$stamp" >"$dir/.stamp"
echo "$dir/bin/python"
