#!/usr/bin/env python3
"""Make the bundled real-speech sample: samples/speech_commands.wav and its ground truth.

Real Speech Commands speakers (CC BY 4.0) that the bundled model never heard (the **test**
speakers of the split recorded in ``models/edgesense.tflite``'s metadata) say the ten command
words, one clip each from a different speaker plus two repeats, over a real CC BY 4.0 background
recording (Speech Commands ``exercise_bike``, from the evaluation pool of
``edgesense.train.pools``). The clips are drawn with a fixed seed among all test-split clips of
each word, never by what the model answers.

* ``samples/speech_commands.wav``: 16 kHz mono 16-bit, about 17 s.
* ``samples/speech_commands.json``: each word's spoken part (``start_ms`` / ``end_ms``), speaker
  and source clip; the levels and the background with their licences.

Usage: ``.venv/bin/python scripts/make_speech_sample.py [--data ../shared/data] [--out DIR] [--force]``
(files already in ``--out``, by default the bundled samples, are replaced only with ``--force``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, refuse_existing, refuse_file_in_the_way, run_main
from edgesense.train.data import SplitSpec
from edgesense.bench.streams import utterance
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.wav import read_wav, write_wav
from edgesense.runtime.model import EdgeModel
from edgesense.train import data

ROOT = Path(__file__).resolve().parents[1]

SAMPLE_RATE_HZ = 16000
SEED = 20261201
#: The order the words are said in; the last two are said again by their first speaker.
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
REPEATS = ("stop", "go")
NOISE = "exercise_bike.wav"
SPEECH_LEVEL_DBFS = -22.0
SNR_DB = 15.0
LEAD_IN_MS = 1000.0
GAP_MS = (700.0, 1000.0)  #: silence between one spoken part and the next
REPEAT_GAP_MS = 500.0
TAIL_MS = 1500.0
PEAK_LIMIT = 0.9
MS_PER_S = 1000.0
SPEECH_LICENCE = ("Speech Commands v0.02 (Pete Warden, Google), CC BY 4.0, "
                  "https://creativecommons.org/licenses/by/4.0/")
NOISE_LICENCE = "Speech Commands v0.02 _background_noise_ (Pete Warden, Google), CC BY 4.0"


def _level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10 ** (dbfs / 20) / math.sqrt(float(np.mean(x * x))))


def choose_clips(speech_commands: Path, model_path: Path) -> list[data.AudioItem]:
    """One test-split clip per word from a different speaker (seeded), then the repeats."""
    model = EdgeModel.load(model_path)
    split = SplitSpec.from_metadata(model.metadata, None)
    index = data.load_speech_commands(speech_commands, words=WORDS)
    testing = index.split(validation_percent=split.validation_percent, testing_percent=split.testing_percent,
                          salt=split.speaker_salt)["testing"]
    rng = np.random.default_rng(SEED)
    chosen: list[data.AudioItem] = []
    for word in WORDS:
        pool = sorted((it for it in testing if it.label == word and it.speaker not in {c.speaker for c in chosen}),
                      key=lambda it: it.path.name)
        chosen.append(pool[int(rng.integers(len(pool)))])
    for word in REPEATS:
        first = next(c for c in chosen if c.label == word)
        same = sorted((it for it in testing if it.label == word and it.speaker == first.speaker
                       and it.path != first.path), key=lambda it: it.path.name)
        chosen.append(same[int(rng.integers(len(same)))] if same else first)
    return chosen


def make(speech_commands: Path, noise_dir: Path, model_path: Path, out: Path) -> dict:
    sr = SAMPLE_RATE_HZ
    items = choose_clips(speech_commands, model_path)
    clips, _ = data.load_clips(items, AudioFrontendOptions(), what="sample clips")
    rng = np.random.default_rng(SEED + 1)
    placed, cursor_ms, previous = [], LEAD_IN_MS, None
    for item, clip in zip(items, clips):
        u = utterance(clip, item.label, item.path.name, sr, group=item.speaker)
        gap = REPEAT_GAP_MS if previous is not None and previous.label == item.label else float(rng.uniform(*GAP_MS))
        start_ms = cursor_ms + (gap if placed else 0.0)
        placed.append((item, u, start_ms))
        cursor_ms = start_ms + (u.end - u.first) * MS_PER_S / sr
        previous = item
    total = int(round((cursor_ms + TAIL_MS) * sr / MS_PER_S))
    noise = read_wav(noise_dir / NOISE, sample_rate_hz=sr).astype(np.float64)
    offset = int(rng.integers(0, max(1, noise.size - total)))
    mix = _level(np.resize(noise[offset:], total) - noise.mean(), SPEECH_LEVEL_DBFS - SNR_DB)
    words = []
    for item, u, start_ms in placed:
        spoken = u.samples[u.first:u.end].astype(np.float64)
        gain = 10 ** (SPEECH_LEVEL_DBFS / 20) / math.sqrt(float(np.mean(spoken ** 2)))
        at = int(round(start_ms * sr / MS_PER_S)) - u.first
        mix[at:at + u.samples.size] += u.samples * gain
        words.append({"word": item.label, "start_ms": round(start_ms, 1),
                      "end_ms": round(start_ms + (u.end - u.first) * MS_PER_S / sr, 1),
                      "speaker": item.speaker, "clip": f"{item.label}/{item.path.name}"})
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK_LIMIT:
        mix *= PEAK_LIMIT / peak
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "speech_commands.wav", mix.astype(np.float32), sr)
    return {"audio": "speech_commands.wav", "sample_rate_hz": sr, "duration_ms": round(total * MS_PER_S / sr, 1),
            "words": words, "speech": f"real speakers: {SPEECH_LICENCE}; test speakers of the bundled model's split",
            "speech_level_dbfs": SPEECH_LEVEL_DBFS, "snr_db": SNR_DB,
            "background": [{"file": NOISE, "offset_s": round(offset / sr, 2), "licence": NOISE_LICENCE}],
            "made_by": "scripts/make_speech_sample.py"}


#: The files written into ``--out``.
OUTPUTS = ("speech_commands.wav", "speech_commands.json")


def check_out(out: Path, *, force: bool) -> None:
    """``--out`` is a folder (or will be one) whose sample files are replaced only with ``--force``: run without
    it, the script replaced the bundled samples (tracked files; today's WAVs differ from them by a step of PCM)."""
    refuse_file_in_the_way("--out", out)
    for name in OUTPUTS:
        refuse_existing("--out", out / name, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared data folder (speech_commands/, noise/)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "edgesense.tflite",
                        help="the model whose recorded split says which speakers are test speakers")
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="output folder (default: samples/)")
    parser.add_argument("--force", action="store_true", help="replace the files already in --out (the bundled "
                        "samples, by default)")
    args = parser.parse_args(argv)
    check_out(args.out, force=args.force)
    for needed in (args.data / "speech_commands", args.data / "noise" / NOISE, args.model):
        if not needed.exists():
            parser.error(f"{needed}: not found")
    truth = make(args.data / "speech_commands", args.data / "noise", args.model, args.out)
    (args.out / "speech_commands.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    for name in OUTPUTS:
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KB")
    print("speakers:", ", ".join(sorted({w["speaker"] for w in truth["words"]})))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
