#!/usr/bin/env python3
"""Make the bundled sample media in samples/ (licence-clean, reproducible).

* ``samples/scene.mp4``: 640x480 at 10 fps, 14 s, rendered procedurally with
  numpy/OpenCV (no photographs): a "sea" (sky gradient, sun, moving waves) for the
  first half, then a "forest" (textured tree trunks and canopy, swaying). Encoded
  with the mp4v codec, which OpenCV's headless wheels decode.
* ``samples/commands.wav``: 16 kHz mono 16-bit, the same length: espeak-ng
  speaking command words at known times over CC0 ambient recordings (cafe, then
  traffic; crossfaded) at a comfortable SNR.
* ``samples/commands.json``: the words with their start/end times (ground truth for
  the tests of the loop's mechanics, and for ``scripts/bench_loop.py --audio samples/commands.wav``);
  ``samples/scenes.json``: the scene segments.

Usage: ``.venv/bin/python scripts/make_samples.py [--ambient-dir ../shared/data/ambient] [--out DIR] [--force]``
(files already in ``--out``, by default the bundled samples, are replaced only with ``--force``).
Needs espeak-ng on the PATH and the ambient WAVs (``../shared/data/ambient``).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesense.app.cli import OneLineArgumentParser, refuse_existing, refuse_file_in_the_way, run_main  # noqa: E402
from edgesense.frontend.resample import resample  # noqa: E402
from edgesense.frontend.wav import read_wav, read_wav_native, write_wav  # noqa: E402
from edgesense.recognition.gate import rms_dbfs  # noqa: E402

WIDTH_PX, HEIGHT_PX = 640, 480
FPS = 10
DURATION_MS = 14000
SCENE_CHANGE_MS = 7000
SAMPLE_RATE_HZ = 16000
SEED = 20250101
#: (word, start time in ms): spaced so each has a quiet second around it.
WORDS = (("yes", 1000), ("left", 3300), ("stop", 5600), ("go", 8200), ("up", 10500), ("no", 12600))
ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MINUTE = 130
AMBIENT = (("cafe.wav", 0, SCENE_CHANGE_MS), ("traffic.wav", SCENE_CHANGE_MS, DURATION_MS))
AMBIENT_LEVEL_DBFS = -36.0
SNR_DB = 15.0
CROSSFADE_MS = 500
WORD_TRIM_DBFS = -45.0  #: frames (10 ms) quieter than this at a word's ends are trimmed
TRIM_FRAME_MS = 10
PEAK_LIMIT = 0.9
MS_PER_S = 1000.0


# --------------------------------------------------------------------------- video


def _sky(h: int, top_bgr, bottom_bgr) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = (1 - ramp) * np.array(top_bgr, np.float32) + ramp * np.array(bottom_bgr, np.float32)
    return np.repeat(sky, WIDTH_PX, axis=1)


def render_sea(t_s: float) -> np.ndarray:
    """Sky gradient, a sun, and a sea of moving sine waves with glints."""
    horizon = int(HEIGHT_PX * 0.45)
    img = np.empty((HEIGHT_PX, WIDTH_PX, 3), np.float32)
    img[:horizon] = _sky(horizon, (200, 140, 60), (245, 225, 200))
    y = np.arange(HEIGHT_PX - horizon, dtype=np.float32)[:, None]
    x = np.arange(WIDTH_PX, dtype=np.float32)[None, :]
    depth = 1.0 + y / 40.0  # waves grow towards the viewer
    phase = (x / (18.0 * depth) + y / 6.0 - t_s * 1.6)
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * phase) * np.sin(2 * np.pi * (x / 230.0 + t_s * 0.15))
    base = np.array((140, 90, 20), np.float32) + (y / (HEIGHT_PX - horizon))[..., None] * np.array((-50, -30, 0),
                                                                                                    np.float32)
    img[horizon:] = base + waves[..., None] * np.array((70, 60, 35), np.float32)
    sun_x = int(WIDTH_PX * 0.72 + 8 * math.sin(t_s * 0.3))
    cv2.circle(img, (sun_x, int(horizon * 0.45)), 34, (190, 245, 255), -1, cv2.LINE_AA)
    glint = np.exp(-((x - sun_x) / 40.0) ** 2) * (waves > 0.8)
    img[horizon:] += glint[..., None] * 60.0
    return np.clip(img, 0, 255).astype(np.uint8)


def _forest_layout(rng: np.random.Generator) -> list[tuple[int, int, int, tuple[int, int, int]]]:
    trees = []
    for _ in range(14):
        x = int(rng.integers(-20, WIDTH_PX + 20))
        width = int(rng.integers(18, 46))
        crown = int(rng.integers(70, 140))
        green = (int(rng.integers(20, 60)), int(rng.integers(90, 170)), int(rng.integers(20, 70)))
        trees.append((x, width, crown, green))
    return sorted(trees, key=lambda tree: tree[1])  # thin (far) trees first


def render_forest(t_s: float, layout, texture: np.ndarray) -> np.ndarray:
    """Soft green background, textured trunks and swaying round canopies."""
    img = _sky(HEIGHT_PX, (90, 160, 110), (40, 90, 50))
    img = np.clip(img + texture, 0, 255).astype(np.uint8)
    ground = int(HEIGHT_PX * 0.78)
    cv2.rectangle(img, (0, ground), (WIDTH_PX, HEIGHT_PX), (30, 70, 60), -1)
    for i, (x, width, crown, green) in enumerate(layout):
        sway = int(6 * math.sin(t_s * 1.1 + i))
        top = ground - int(crown * 2.2)
        cv2.rectangle(img, (x - width // 2, top), (x + width // 2, ground), (30, 55, 80), -1)
        for k in range(3):
            cx = x + sway + (k - 1) * crown // 3
            cy = top + (k % 2) * crown // 4
            cv2.circle(img, (cx, cy), crown // 2 + 6 * (k % 2), green, -1, cv2.LINE_AA)
            cv2.circle(img, (cx - crown // 6, cy - crown // 6), crown // 5,
                       tuple(min(255, c + 40) for c in green), -1, cv2.LINE_AA)
    return img


def make_video(path: Path) -> dict:
    rng = np.random.default_rng(SEED)
    layout = _forest_layout(rng)
    texture = cv2.GaussianBlur(rng.normal(0, 14, (HEIGHT_PX, WIDTH_PX, 3)).astype(np.float32), (0, 0), 3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(FPS), (WIDTH_PX, HEIGHT_PX))
    if not writer.isOpened():
        raise RuntimeError("this OpenCV cannot encode mp4v")
    frames = DURATION_MS * FPS // int(MS_PER_S)
    for i in range(frames):
        t_s = i / FPS
        if t_s * MS_PER_S < SCENE_CHANGE_MS:
            writer.write(render_sea(t_s))
        else:
            writer.write(render_forest(t_s, layout, texture))
    writer.release()
    return {"video": path.name, "codec": "mp4v", "fps": FPS, "width_px": WIDTH_PX, "height_px": HEIGHT_PX,
            "frames": frames, "duration_ms": DURATION_MS,
            "segments": [{"label": "sea", "start_ms": 0, "end_ms": SCENE_CHANGE_MS},
                         {"label": "forest", "start_ms": SCENE_CHANGE_MS, "end_ms": DURATION_MS}],
            "source": "procedurally rendered by scripts/make_samples.py (numpy + OpenCV); no photographs"}


# --------------------------------------------------------------------------- audio


def speak(word: str, workdir: Path) -> np.ndarray:
    """One word from espeak-ng, at 16 kHz, with the silence around it trimmed."""
    out = workdir / f"{word}.wav"
    subprocess.run(["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WORDS_PER_MINUTE), "-w", str(out), word],
                   check=True, capture_output=True)
    samples, rate = read_wav_native(out)
    samples = resample(samples, rate, SAMPLE_RATE_HZ) if rate != SAMPLE_RATE_HZ else samples
    frame = SAMPLE_RATE_HZ * TRIM_FRAME_MS // int(MS_PER_S)
    loud = [i for i in range(0, samples.size - frame, frame) if rms_dbfs(samples[i:i + frame]) > WORD_TRIM_DBFS]
    if not loud:
        raise RuntimeError(f"espeak-ng produced silence for {word!r}")
    return samples[loud[0]:loud[-1] + frame].astype(np.float64)


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = math.sqrt(float(np.mean(x * x)))
    return x * (10 ** (dbfs / 20) / rms)


def make_audio(path: Path, ambient_dir: Path) -> dict:
    total = DURATION_MS * SAMPLE_RATE_HZ // int(MS_PER_S)
    fade = CROSSFADE_MS * SAMPLE_RATE_HZ // int(MS_PER_S)
    background = np.zeros(total)
    for name, start_ms, end_ms in AMBIENT:
        clip = _level(read_wav(ambient_dir / name, sample_rate_hz=SAMPLE_RATE_HZ).astype(np.float64),
                      AMBIENT_LEVEL_DBFS)
        start = max(0, start_ms * SAMPLE_RATE_HZ // int(MS_PER_S) - fade // 2)
        end = min(total, end_ms * SAMPLE_RATE_HZ // int(MS_PER_S) + fade // 2)
        piece = np.resize(clip, end - start)  # loops the clip if it is shorter
        ramp = np.ones(end - start)
        if start > 0:
            ramp[:fade] = np.linspace(0, 1, fade)
        if end < total:
            ramp[-fade:] = np.linspace(1, 0, fade)
        background[start:end] += piece * ramp
    speech = np.zeros(total)
    words = []
    with tempfile.TemporaryDirectory() as tmp:
        for word, start_ms in WORDS:
            voice = _level(speak(word, Path(tmp)), AMBIENT_LEVEL_DBFS + SNR_DB)
            start = start_ms * SAMPLE_RATE_HZ // int(MS_PER_S)
            speech[start:start + voice.size] += voice
            words.append({"word": word, "start_ms": start_ms,
                          "end_ms": round(start_ms + voice.size * MS_PER_S / SAMPLE_RATE_HZ, 1)})
    mix = background + speech
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak
    write_wav(path, mix.astype(np.float32), SAMPLE_RATE_HZ)
    return {"audio": path.name, "sample_rate_hz": SAMPLE_RATE_HZ, "duration_ms": DURATION_MS, "words": words,
            "speech": f"espeak-ng voice {ESPEAK_VOICE} at {ESPEAK_WORDS_PER_MINUTE} words per minute",
            "snr_db": SNR_DB, "ambient_level_dbfs": AMBIENT_LEVEL_DBFS,
            "ambient": [{"file": name, "start_ms": s, "end_ms": e, "licence": "CC0 (freesound.org)"}
                        for name, s, e in AMBIENT]}


#: The files written into ``--out``.
OUTPUTS = ("scene.mp4", "commands.wav", "scenes.json", "commands.json")


def check_out(out: Path, *, force: bool) -> None:
    """``--out`` is a folder (or will be one) whose sample files are replaced only with ``--force``: run without
    it, the script replaced the bundled samples (tracked files; today's WAVs differ from them by a step of PCM)."""
    refuse_file_in_the_way("--out", out)
    for name in OUTPUTS:
        refuse_existing("--out", out / name, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ambient-dir", type=Path, default=ROOT.parent / "shared" / "data" / "ambient",
                        help="folder with the CC0 cafe.wav and traffic.wav (default: ../shared/data/ambient)")
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="output folder (default: samples/)")
    parser.add_argument("--force", action="store_true", help="replace the files already in --out (the bundled "
                        "samples, by default)")
    args = parser.parse_args(argv)
    check_out(args.out, force=args.force)
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng is not installed (apt-get install espeak-ng)")
    for name, _, _ in AMBIENT:
        if not (args.ambient_dir / name).is_file():
            parser.error(f"{args.ambient_dir / name}: not found (pass --ambient-dir)")
    args.out.mkdir(parents=True, exist_ok=True)
    scenes = make_video(args.out / "scene.mp4")
    commands = make_audio(args.out / "commands.wav", args.ambient_dir)
    (args.out / "scenes.json").write_text(json.dumps(scenes, indent=2) + "\n", encoding="utf-8")
    (args.out / "commands.json").write_text(json.dumps(commands, indent=2) + "\n", encoding="utf-8")
    for name in OUTPUTS:
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
