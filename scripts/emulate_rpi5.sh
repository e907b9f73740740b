#!/usr/bin/env bash
# Emulated Raspberry Pi 5 install test (slow, outside CI; needs root).
#
# Builds an arm64 Debian bookworm root with debootstrap (the userland of Raspberry Pi
# OS Bookworm: Python 3.11, glibc 2.36), copies an `edgesense deploy --target rpi5`
# bundle into it, runs the bundle's install.sh (offline, without systemd) and then
# `edgesense run --fast` on the sample media, all under qemu-user emulation, and
# checks that JSON Lines events come out.
#
#   sudo scripts/emulate_rpi5.sh [--workdir DIR] [--bundle DIR] [--model FILE] [--config FILE]
#                                [--video FILE] [--audio FILE] [--stage rootfs|all]
#
#   --workdir  where the root file system and logs live (default /var/tmp/edgesense-emu;
#              the rootfs is reused between runs)
#   --bundle   an existing rpi5 bundle; default: build one with `edgesense deploy`
#   --model/--config  model and device config for the bundle built here (default
#              models/edgesense.tflite, firmware_configs/rpi5.yaml)
#   --video/--audio  media replayed on the emulated device (default samples/scene.mp4,
#              samples/speech_commands.wav, the demo's)
#   --stage rootfs  only build the root file system
#   --swap-wheel FILE  after install.sh, install this aarch64 wheel over the bundle's (an emulation
#              workaround: ai-edge-litert 2.3.0 segfaults creating an interpreter under
#              qemu-user 7.2 while 1.4.0 runs; not checked on real hardware)
#
# Environment: MIRROR (Debian mirror, default http://deb.debian.org/debian).
# Needs: debootstrap qemu-user-static binfmt-support (installed with apt-get when missing).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR="/var/tmp/edgesense-emu"
BUNDLE=""
MODEL="$ROOT_DIR/models/edgesense.tflite"
CONFIG="$ROOT_DIR/firmware_configs/rpi5.yaml"
VIDEO="$ROOT_DIR/samples/scene.mp4"
AUDIO="$ROOT_DIR/samples/speech_commands.wav"
STAGE="all"
SWAP_WHEEL=""
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SUITE="bookworm"

die() { echo "emulate_rpi5: error: $*" >&2; exit 2; }
log() { echo "emulate_rpi5: $*" >&2; }

# value FLAG ARGS...: the value after FLAG (a flag given last, or with an empty value, is one line and exit 2,
# not bash's "unbound variable" and exit 1).
value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1: expected a value after it, got none"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) value "$@"; WORKDIR="$2"; shift 2 ;;
    --bundle) value "$@"; BUNDLE="$2"; shift 2 ;;
    --model) value "$@"; MODEL="$2"; shift 2 ;;
    --config) value "$@"; CONFIG="$2"; shift 2 ;;
    --video) value "$@"; VIDEO="$2"; shift 2 ;;
    --audio) value "$@"; AUDIO="$2"; shift 2 ;;
    --stage) value "$@"; STAGE="$2"; shift 2 ;;
    --swap-wheel) value "$@"; SWAP_WHEEL="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
case "$STAGE" in rootfs|all) ;; *) die "--stage: expected rootfs or all, got $STAGE" ;; esac
# Every file the run needs, checked before the slow part: a mistyped one was found only after the root file system
# (15+ minutes the first time), the bundle, or (--swap-wheel) the emulated install.
if [ "$STAGE" = "all" ]; then
  if [ -n "$BUNDLE" ]; then
    [ -f "$BUNDLE/MANIFEST.json" ] || die "--bundle $BUNDLE: expected an edgesense deploy bundle, found no MANIFEST.json"
  else
    [ -x "$ROOT_DIR/.venv/bin/edgesense" ] \
      || die "no $ROOT_DIR/.venv/bin/edgesense to build the bundle with (run scripts/setup.sh, or pass --bundle)"
    [ -f "$MODEL" ] || die "--model $MODEL: no such file"
    [ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
  fi
  [ -f "$VIDEO" ] || die "--video $VIDEO: no such file"
  [ -f "$AUDIO" ] || die "--audio $AUDIO: no such file"
  [ -z "$SWAP_WHEEL" ] || [ -f "$SWAP_WHEEL" ] || die "--swap-wheel $SWAP_WHEEL: no such file"
fi
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts)"

ROOTFS="$WORKDIR/rootfs"
mkdir -p "$WORKDIR"
# The chroot gets a clean environment: no PIP_* or other host settings leak into the device.
# in_chroot DIR COMMAND...: run COMMAND in the rootfs, in DIR, with only PATH, HOME and LANG set.
in_chroot() {
  local dir="$1"; shift
  chroot "$ROOTFS" /usr/bin/env -i --chdir="$dir" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# --- host tools -------------------------------------------------------------------
need=""
command -v debootstrap >/dev/null 2>&1 || need="$need debootstrap"
command -v qemu-aarch64-static >/dev/null 2>&1 || need="$need qemu-user-static"
command -v update-binfmts >/dev/null 2>&1 || need="$need binfmt-support"
if [ -n "$need" ]; then
  log "installing host packages:$need"
  apt-get update -qq
  # shellcheck disable=SC2086  # $need is a list of fixed package names
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
QEMU="$(command -v qemu-aarch64-static)"

# --- binfmt_misc: every aarch64 exec inside the chroot must go through qemu ----------
if [ "$(uname -m)" != "aarch64" ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    die "binfmt_misc has no qemu-aarch64 entry and none can be registered here (no privilege to mount
binfmt_misc or write its register file). Without binfmt, qemu-aarch64-static can start one aarch64
program but not the programs it executes (debootstrap's second stage, pip, python -m venv), so
the emulated install cannot run. Run this script on a host (or a privileged container) with
binfmt_misc, or on real aarch64 hardware."
  fi
fi
if [ "$(uname -m)" != "aarch64" ]; then
  grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || log "warning: qemu-aarch64 binfmt entry lacks the F flag; copying $QEMU into the rootfs instead"
fi

# --- root file system (cached) ------------------------------------------------------
if [ ! -f "$ROOTFS/.edgesense-rootfs-ok" ]; then
  log "debootstrap arm64 $SUITE into $ROOTFS (first stage)"
  rm -rf "$ROOTFS"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,libportaudio2,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap1.log" 2>&1 \
    || { tail -20 "$WORKDIR/debootstrap1.log" >&2; die "debootstrap first stage failed (log: $WORKDIR/debootstrap1.log)"; }
  install -m 0755 "$QEMU" "$ROOTFS/usr/bin/qemu-aarch64-static"
  log "debootstrap second stage under qemu (slow)"
  in_chroot / /debootstrap/debootstrap --second-stage >"$WORKDIR/debootstrap2.log" 2>&1 \
    || { tail -20 "$WORKDIR/debootstrap2.log" >&2; die "debootstrap second stage failed (log: $WORKDIR/debootstrap2.log)"; }
  touch "$ROOTFS/.edgesense-rootfs-ok"
fi
log "rootfs ready: $(chroot "$ROOTFS" /usr/bin/uname -m) $(chroot "$ROOTFS" /usr/bin/python3 --version 2>&1)"
[ "$STAGE" = "rootfs" ] && exit 0

# --- bundle -------------------------------------------------------------------------
if [ -z "$BUNDLE" ]; then
  BUNDLE="$WORKDIR/bundle-rpi5"
  log "building the rpi5 bundle into $BUNDLE"
  "$ROOT_DIR/.venv/bin/edgesense" deploy --target rpi5 --out "$BUNDLE" --model "$MODEL" --config "$CONFIG" --force
fi
[ -f "$BUNDLE/MANIFEST.json" ] || die "$BUNDLE is not a bundle (no MANIFEST.json)"
[ -f "$VIDEO" ] || die "no video file $VIDEO (pass --video)"
[ -f "$AUDIO" ] || die "no audio file $AUDIO (pass --audio)"

rm -rf "$ROOTFS/opt/edgesense-bundle" "$ROOTFS/opt/edgesense" "$ROOTFS/tmp/edgesense-media"
mkdir -p "$ROOTFS/opt/edgesense-bundle" "$ROOTFS/tmp/edgesense-media"
cp -a "$BUNDLE/." "$ROOTFS/opt/edgesense-bundle/"
cp "$VIDEO" "$ROOTFS/tmp/edgesense-media/scene.${VIDEO##*.}"
cp "$AUDIO" "$ROOTFS/tmp/edgesense-media/audio.wav"

mounted=()
cleanup() {
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
for fs in proc sys dev; do
  mount --bind "/$fs" "$ROOTFS/$fs"
  mounted+=("$ROOTFS/$fs")
done

# --- install (offline: the bundle's wheelhouse; apt packages already in the rootfs) --
log "running install.sh --no-systemd under emulation"
start=$(date +%s)
in_chroot /opt/edgesense-bundle /bin/bash ./install.sh --no-systemd --prefix /opt/edgesense \
  2>&1 | tee "$WORKDIR/install.log"
log "install took $(( $(date +%s) - start )) s"

if [ -n "$SWAP_WHEEL" ]; then
  [ -f "$SWAP_WHEEL" ] || die "--swap-wheel $SWAP_WHEEL: no such file"
  cp "$SWAP_WHEEL" "$ROOTFS/tmp/"
  log "emulation workaround: installing ${SWAP_WHEEL##*/} over the bundle's"
  in_chroot / /opt/edgesense/venv/bin/pip --isolated install -q --no-index --no-deps \
    --force-reinstall "/tmp/${SWAP_WHEEL##*/}"
fi

# --- the bundled model through the interpreter (edgesense.runtime.model, CONTRACTS.md) -----------
log "inference smoke test under emulation"
in_chroot /opt/edgesense /opt/edgesense/venv/bin/python - <<'PY' 2>&1 | tee "$WORKDIR/smoke.log"
import platform, time
import numpy as np
from edgesense.runtime.interpreter import load_interpreter_backend
from edgesense.runtime.model import EdgeModel
model = EdgeModel.load("models/edgesense.tflite")
t0 = time.perf_counter()
a = model.encode_audio(np.zeros(model.audio_frontend.feature_shape, np.float32))  # the model's own input shapes
v = model.encode_image(np.full(model.image_frontend.input_shape, 128, np.float32))
command, scene = model.fuse(a, v)
print(f"smoke: {platform.machine()} {load_interpreter_backend().module}: command {command.shape} "
      f"scene {scene.shape} sum {float(command.sum()):.3f} in {time.perf_counter() - t0:.2f} s")
PY

# --- run the device loop on the sample media ---------------------------------------
log "edgesense run --fast under emulation"
rm -f "$ROOTFS/tmp/edgesense-events.jsonl"
start=$(date +%s)
in_chroot /opt/edgesense /opt/edgesense/venv/bin/edgesense -v run \
  --config /opt/edgesense/config.yaml --headless \
  --video "/tmp/edgesense-media/scene.${VIDEO##*.}" --audio /tmp/edgesense-media/audio.wav \
  --fast --events /tmp/edgesense-events.jsonl 2>&1 | tee "$WORKDIR/run.log"
log "run took $(( $(date +%s) - start )) s"

# --- check the events ----------------------------------------------------------------
EVENTS="$ROOTFS/tmp/edgesense-events.jsonl"
[ -s "$EVENTS" ] || die "no events were written ($EVENTS is missing or empty; log: $WORKDIR/run.log)"
python3 - "$EVENTS" <<'PY'
import json, sys
lines = [line for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
events = [json.loads(line) for line in lines]
kinds = {}
for e in events:
    kinds[e.get("type") or e.get("kind") or "?"] = kinds.get(e.get("type") or e.get("kind") or "?", 0) + 1
print(f"emulate_rpi5: {len(events)} events, by type: {kinds}")
print("emulate_rpi5: first event:", json.dumps(events[0])[:300])
PY
cp "$EVENTS" "$WORKDIR/events.jsonl"
log "OK: events in $WORKDIR/events.jsonl"
