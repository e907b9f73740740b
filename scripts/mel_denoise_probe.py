"""Would removing steady noise from the mel frames help ``speech_embedding`` name words in noise? A probe for issue 14.

Noise takes the pair's confidence: of the tuning streams' words (validation speakers) at −24 dBFS,
90 % score above the threshold clean and 60 % at 5 dB SNR (``edgesense bench``'s level envelope). A
classic remedy sits between the mel model and the embedding model, where the device could run it in
numpy: spectral subtraction with a noise floor followed per mel channel (the least smoothed power of
the last ``HISTORY_FRAMES`` frames, a minimum-statistics estimate), each frame's power reduced by
``over`` times that floor and kept above ``floor_gain`` of itself (:func:`suppress`). Google's
embedding never saw such frames, so whatever learns on top must learn on them too.

The probe asks the question before any stream heads are trained that way. Clips of the training and
validation speakers (the written-down split: salt ``edgesense``; the test speakers are never read) are
each placed 2 s into a stream of the training pool's noise at a speech level of −32…−16 dBFS. For every
processing a softmax regression learns the ten commands and ``_unknown_`` from the mean and the maximum of
the last nine embeddings (1.4 s) at 0–30 dB SNR (15 % clean) and is scored out of fold (five folds by
speaker) on every clip at each SNR of the table::

    .venv/bin/python scripts/mel_denoise_probe.py --speech-commands ../shared/data/speech_commands \\
        --noise ../shared/data/noise --noise ../shared/data/ambient
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.frontend.wav import read_wav
from edgesense.runtime.speech_embedding import (MEL_BINS, MEL_OFFSET, MEL_SCALE, STRIDE_FRAMES, WINDOW_FRAMES,
                                              make_interpreters, run_resized, to_pcm16)
from edgesense.train.data import AudioItem, SplitSpec, load_speech_commands
from edgesense.train.pools import split_recordings, wav_recordings
from edgesense.types import DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL

SAMPLE_RATE_HZ = 16000
SPLIT = SplitSpec(speaker_salt="edgesense")
PARTS = ("training", "validation")
LABELS = (*DEFAULT_COMMAND_WORDS, UNKNOWN_LABEL)
LEAD_S = 2.0  #: noise alone before the clip: the floor's history
TAIL_S = 0.3  #: after the clip, as a word end on a stream is followed
LEVEL_DBFS = (-32.0, -16.0)  #: the clip's RMS level, as the bench's streams draw it
TRAIN_SNR_DB = (0.0, 30.0)
TRAIN_CLEAN_SHARE = 0.15
SNRS_DB = (None, 20.0, 10.0, 5.0)  #: the table's columns (None: no noise)
EMBEDDINGS = 9  #: the newest embeddings a clip is described by (1.4 s)
FOLDS = 5
#: name -> (over, floor_gain) of :func:`suppress`; ``None``: the mel frames as they are
PROCESSING = {"none": None, "subtract 1x, floor -10 dB": (1.0, 0.1), "subtract 2x, floor -13 dB": (2.0, 0.05),
              "subtract 1x, floor -5 dB": (1.0, 0.3)}
HISTORY_FRAMES = 150  #: 1.5 s of 10-ms mel frames
SMOOTHING = 0.7  #: one-pole smoothing of each channel's power before its minimum is taken
FLOOR_BIAS = 1.5  #: a minimum of smoothed power underestimates the mean noise power by about this
_TINY = 1e-12


def _clips(root: Path) -> list[AudioItem]:
    """The whole command and ``_unknown_`` clips of the training and validation speakers."""
    parts = SPLIT.split_clips(load_speech_commands(root))
    return [item for part in PARTS for item in parts[part] if item.offset_ms is None and item.label in LABELS]


def suppress(mel_db: np.ndarray, *, over: float, floor_gain: float, history_frames: int = HISTORY_FRAMES,
             smoothing: float = SMOOTHING, bias: float = FLOOR_BIAS) -> np.ndarray:
    """Spectral subtraction on mel frames in dB (``(frames, bins)``, the mel model's raw output), causal."""
    power = 10.0 ** (mel_db / 10.0)
    smoothed = np.empty_like(power)
    state = power[0]
    for t, frame in enumerate(power):
        state = smoothing * state + (1.0 - smoothing) * frame
        smoothed[t] = state
    padded = np.concatenate([np.repeat(smoothed[:1], history_frames - 1, axis=0), smoothed])
    floor = np.lib.stride_tricks.sliding_window_view(padded, history_frames, axis=0).min(axis=-1) * bias
    gain = np.maximum(1.0 - over * floor / np.maximum(power, _TINY), floor_gain)
    return (mel_db + 10.0 * np.log10(gain)).astype(np.float32)


def stream(clip: np.ndarray, noise: list[np.ndarray], snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """``clip`` after ``LEAD_S`` of background and before ``TAIL_S``, noise at ``snr_db`` under it (``None``:
    none), the clip's RMS at a level drawn from ``LEVEL_DBFS``."""
    lead, tail = int(LEAD_S * SAMPLE_RATE_HZ), int(TAIL_S * SAMPLE_RATE_HZ)
    speech = np.concatenate([np.zeros(lead, np.float32), clip, np.zeros(tail, np.float32)])
    clip_power = np.mean(clip ** 2) + _TINY
    level = 10 ** (rng.uniform(*LEVEL_DBFS) / 20) / np.sqrt(clip_power)
    mixed = speech
    if snr_db is not None:
        recording = noise[int(rng.integers(len(noise)))]
        start = int(rng.integers(0, recording.size - speech.size))
        part = recording[start:start + speech.size]
        mixed = speech + part * np.sqrt(clip_power / (np.mean(part ** 2) + _TINY) / 10 ** (snr_db / 10))
    return np.clip(mixed * level, -1.0, 1.0).astype(np.float32)


class Describer:
    """Audio -> the mean and maximum of its newest ``EMBEDDINGS`` embeddings, after ``processing``."""

    def __init__(self) -> None:
        self._mel, self._embed = make_interpreters(num_threads=2)
        self._shapes: dict[str, tuple[int, ...] | None] = {"mel": None, "embed": None}

    def mel_db(self, audio: np.ndarray) -> np.ndarray:
        raw, self._shapes["mel"] = run_resized(self._mel, to_pcm16(audio)[None], self._shapes["mel"])
        return raw.reshape(-1, MEL_BINS)

    def __call__(self, mel_db: np.ndarray) -> np.ndarray:
        frames = mel_db * MEL_SCALE + MEL_OFFSET
        out = []
        for k in range(EMBEDDINGS):
            end = frames.shape[0] - k * STRIDE_FRAMES
            window = np.ascontiguousarray(frames[None, end - WINDOW_FRAMES:end, :, None], dtype=np.float32)
            embedding, self._shapes["embed"] = run_resized(self._embed, window, self._shapes["embed"])
            out.append(embedding.reshape(-1))
        stacked = np.stack(out)
        return np.concatenate([stacked.mean(axis=0), stacked.max(axis=0)])


def describe(items, snrs, noise, describer: Describer, rng) -> dict[str, np.ndarray]:
    rows: dict[str, list[np.ndarray]] = {name: [] for name in PROCESSING}
    for item, snr_db in zip(items, snrs):
        mel_db = describer.mel_db(stream(read_wav(item.path), noise, snr_db, rng))
        for name, setting in PROCESSING.items():
            rows[name].append(describer(mel_db if setting is None else suppress(mel_db, over=setting[0],
                                                                                floor_gain=setting[1])))
    return {name: np.stack(r) for name, r in rows.items()}


def fit(x: np.ndarray, y: np.ndarray, *, steps: int = 300, learning_rate: float = 0.5, l2: float = 1e-3):
    """A class-balanced softmax regression on standardized ``x``; returns the predictor of labels."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    classes = len(LABELS)
    weights, bias = np.zeros((z.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    balance = 1.0 / np.bincount(y, minlength=classes).clip(1)
    sample = balance[y] / balance[y].mean()
    for _ in range(steps):
        logits = z @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) * sample[:, None] / len(y)
        weights -= learning_rate * (z.T @ grad + l2 * weights)
        bias -= learning_rate * grad.sum(axis=0)
    return lambda q: (((q - mean) / std) @ weights + bias).argmax(axis=1)


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech-commands", type=Path, required=True)
    parser.add_argument("--noise", type=Path, action="append", required=True,
                        help="noise folder (repeatable); its training pool is used")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    items = sorted(_clips(args.speech_commands), key=lambda item: item.path)
    labels = np.array([LABELS.index(item.label) for item in items])
    speakers = sorted({item.speaker for item in items})
    fold_of = {s: k % FOLDS for k, s in enumerate(rng.permutation(speakers))}
    folds = np.array([fold_of[item.speaker] for item in items])
    noise = [read_wav(p) for p in split_recordings(wav_recordings(args.noise))["training"]]
    noise = [n for n in noise if n.size > (LEAD_S + TAIL_S + 2) * SAMPLE_RATE_HZ]
    print(f"{len(items)} clips of {len(speakers)} training and validation speakers, {len(noise)} noise recordings")
    describer = Describer()
    train_snrs = [None if rng.random() < TRAIN_CLEAN_SHARE else rng.uniform(*TRAIN_SNR_DB) for _ in items]
    train = describe(items, train_snrs, noise, describer, rng)
    scored = {snr: describe(items, [snr] * len(items), noise, describer, rng) for snr in SNRS_DB}
    columns = " | ".join("clean" if snr is None else f"{snr:g} dB" for snr in SNRS_DB)
    print(f"| mel frames | {columns} |")
    print("| --- |" + " ---: |" * len(SNRS_DB))
    for name in PROCESSING:
        predictors = [fit(train[name][folds != k], labels[folds != k]) for k in range(FOLDS)]
        cells = []
        for snr in SNRS_DB:
            right = sum(int(np.sum(predictors[k](scored[snr][name][folds == k]) == labels[folds == k]))
                        for k in range(FOLDS))
            cells.append(f"{100 * right / len(items):.1f} %")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
