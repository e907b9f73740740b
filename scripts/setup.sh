#!/usr/bin/env bash
# Sets up a fresh machine for EdgeSense: Debian packages (when apt is there), a virtual
# environment in .venv, and the project installed into it in editable mode.
#   scripts/setup.sh            device + desktop + test dependencies
#   EXTRAS=mqtt scripts/setup.sh  only what the device loop needs (plus MQTT)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-train,dev}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES="libportaudio2 espeak-ng sox mosquitto"

if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
else
  echo "setup: no apt-get; install these yourself if missing: $APT_PACKAGES" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The editable install is "strict": a tree of links laid out exactly as the wheel (edgesense/ with
# edgesense.train from train/, ...), so import-linter sees the whole namespace and nothing outside
# the package is importable. A module added or removed needs this install again: the stamp holds
# the list of package files, and a change to it (or to pyproject.toml) re-installs.
stamp=".venv/.edgesense-installed-$EXTRAS"
files="$(find edge train quantize bench deploy -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$files" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]" --config-settings editable_mode=strict
  printf '%s' "$files" > "$stamp"
fi
echo "setup: ready (.venv, extras: $EXTRAS)"
