"""What does a real microphone add that training never showed the model? A measurement of the int8 model.

Real USB and Pi microphones deliver things the training clips (Speech Commands, augmented with noise,
rooms, speed and ±6 dB of gain) never held: a DC offset, mains hum, words clipped by a close talker, an
automatic gain control that pumps, a narrow-band (8 kHz) microphone, a 44.1/48 kHz microphone resampled by
the device's :class:`edgesense.frontend.resample.StreamingResampler` in 20-ms chunks (as
:mod:`edgesense.sources.microphone` does), and a quiet one. Each is applied to the command clips of the
split the model records (``--part testing`` by default: a measurement, nothing here is chosen on it), and
every clip is scored the way ``edgesense bench`` scores it with the camera absent
(:func:`edgesense.bench.accuracy.evaluate_commands`: ``fit_clip`` -> ``log_mel_spectrogram`` ->
``encode_audio`` -> ``fuse``, argmax of the command head).

A second table scores device-side remedies fixed before any figure was read (textbook settings, not tuned
here): each remedy on the impairment it answers, on clean clips, and how far it moves clean clips' log-mel
features (mean and 99th percentile of the change in dB, and the share of feature cells that move by half
an int8 input step or more, where the quantized ``encode_audio`` input can see it). A remedy that moves
clean features is one training would have to apply as well: a retraining matter, not a device change.

    .venv/bin/python scripts/mic_impairment_probe.py --speech-commands ../shared/data/speech_commands
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.bench.accuracy import evaluate_commands, select_command_items
from edgesense.bench.latency import STAGES, _Timer
from edgesense.bench.options import BenchOptions
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.frontend.resample import StreamingResampler, resample
from edgesense.runtime.model import DEFAULT_MODEL_PATH, EdgeModel
from edgesense.train import data
from edgesense.train.data import SplitSpec
from edgesense.types import SILENCE_LABEL, is_command_word

logger = logging.getLogger("mic_impairment_probe")

PARTS = ("testing", "validation")
MIC_CHUNK_MS = 20.0  #: the microphone's chunks (MicrophoneOptions.chunk_ms's default)
HUM_HARMONICS = (1.0, 0.5, 0.7, 0.3, 0.4, 0.2, 0.25)  #: relative amplitudes: a buzzy ground-loop hum, odd ones strong
AGC_TARGET_DBFS = -12.0  #: the peak level the automatic gain control steers to
AGC_GAIN_DB = (-12.0, 24.0)  #: the gain range it may use
AGC_ATTACK_MS, AGC_RELEASE_MS, AGC_BLOCK_MS = 10.0, 300.0, 1.0
DC_BLOCKER_POLE = 0.995  #: one-pole DC blocker: -3 dB at about 13 Hz at 16 kHz (the textbook setting)
RUNNING_MEAN_S = 1.0  #: the running-mean remover's time constant
HUM_HIGHPASS_HZ = 100.0  #: a 2nd-order Butterworth high-pass just below the lowest mel band (125 Hz)
#: The mains notches' quality factor: 1.7 Hz wide at 50 Hz, 33 Hz at 1 kHz. (A comb 2 Hz wide at every harmonic
#: rings for 160 ms after each word: it moved clean clips' lowest 12 mel channels by 10 dB on average.)
NOTCH_Q = 30.0
NOTCH_UP_TO_HZ = 1000.0  #: mains harmonics notched up to here
FFT_SIZE = 1 << 17  #: the grid the remedies' filters are applied on (:func:`response`)
DB_PER_NEPER = 10.0 / np.log(10.0)  #: log-mel is a natural log of power: one unit is 4.34 dB


# --------------------------------------------------------------------------- impairments


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def dc_offset(clip: np.ndarray, fraction: float) -> np.ndarray:
    """A constant ``fraction`` of full scale added (a cheap MEMS or USB microphone's offset)."""
    return (clip.astype(np.float64) + fraction).astype(np.float32)


def hum(clip: np.ndarray, mains_hz: float, level_dbfs: float, rng: np.random.Generator,
        rate_hz: int = 16000) -> np.ndarray:
    """Mains hum at ``mains_hz`` with its harmonics (:data:`HUM_HARMONICS`, random phases), RMS ``level_dbfs``."""
    t = np.arange(clip.size) / rate_hz
    phases = rng.uniform(0.0, 2 * np.pi, len(HUM_HARMONICS))
    tone = sum(a * np.sin(2 * np.pi * mains_hz * (k + 1) * t + p)
               for k, (a, p) in enumerate(zip(HUM_HARMONICS, phases)))
    tone *= 10 ** (level_dbfs / 20) / _rms(tone)
    return (clip.astype(np.float64) + tone).astype(np.float32)


def overdriven(clip: np.ndarray, over_db: float) -> np.ndarray:
    """The clip scaled so that its peak is ``over_db`` past full scale, then clipped as a converter clips."""
    peak = float(np.max(np.abs(clip)))
    if peak == 0.0:
        return clip.copy()
    return np.clip(clip.astype(np.float64) * 10 ** (over_db / 20) / peak, -1.0, 1.0).astype(np.float32)


def gain(clip: np.ndarray, db: float) -> np.ndarray:
    """A constant gain of ``db`` (a quiet microphone for a negative one), clipped to full scale."""
    return np.clip(clip.astype(np.float64) * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def agc_gains(clip: np.ndarray, rate_hz: int = 16000) -> np.ndarray:
    """The per-sample gain of a microphone's automatic gain control on ``clip``: a peak follower (attack
    :data:`AGC_ATTACK_MS`, release :data:`AGC_RELEASE_MS`, on :data:`AGC_BLOCK_MS` blocks) steering the peak
    to :data:`AGC_TARGET_DBFS` within :data:`AGC_GAIN_DB`, settled on the clip's background before it starts
    (its quietest tenth of blocks), interpolated between blocks."""
    x = clip.astype(np.float64)
    block = max(1, int(round(rate_hz * AGC_BLOCK_MS / 1000)))
    blocks = x.size // block
    if blocks == 0:
        return np.ones(x.size)
    envelope = np.abs(x[:blocks * block]).reshape(blocks, block).max(axis=1)
    attack = np.exp(-AGC_BLOCK_MS / AGC_ATTACK_MS)
    release = np.exp(-AGC_BLOCK_MS / AGC_RELEASE_MS)
    level = max(float(np.percentile(envelope, 10)), 1e-6)
    target = 10 ** (AGC_TARGET_DBFS / 20)
    lo, hi = 10 ** (AGC_GAIN_DB[0] / 20), 10 ** (AGC_GAIN_DB[1] / 20)
    gains = np.empty(blocks)
    for k, e in enumerate(envelope):
        a = attack if e > level else release
        level = a * level + (1 - a) * e
        gains[k] = min(max(target / max(level, 1e-9), lo), hi)
    return np.interp(np.arange(x.size), (np.arange(blocks) + 0.5) * block, gains)


def agc(clip: np.ndarray, *, held: bool = False) -> np.ndarray:
    """``clip`` through :func:`agc_gains`, which pumps: the background rises between words and drops under
    them. ``held``: the same AGC's mean gain (in dB) held for the whole clip instead, the level it sets
    without the pumping."""
    g = agc_gains(clip)
    if held:
        g = np.full_like(g, 10 ** np.mean(np.log10(g)))
    return np.clip(clip.astype(np.float64) * g, -1.0, 1.0).astype(np.float32)


def at_rate(clip: np.ndarray, rate_hz: int, to_hz: int) -> np.ndarray:
    """A 1-s-or-so clip at ``to_hz`` > ``rate_hz`` by ideal band-limited interpolation (zero-padding its
    spectrum; the clip is taken as periodic, and Speech Commands clips start and end quietly): the "analog"
    signal a microphone at ``to_hz`` would have sampled, with nothing of its own filter in it."""
    n_out = int(round(clip.size * to_hz / rate_hz))
    spectrum = np.fft.rfft(clip.astype(np.float64))
    if clip.size % 2 == 0:
        spectrum[-1] *= 0.5  # the Nyquist bin, split between +f and -f at the higher rate
    padded = np.zeros(n_out // 2 + 1, complex)
    padded[:spectrum.size] = spectrum
    return np.fft.irfft(padded, n_out) * (n_out / clip.size)


def through_device_resampler(clip: np.ndarray, mic_hz: int, rate_hz: int = 16000) -> np.ndarray:
    """The clip as a microphone at ``mic_hz`` would deliver it to the device: at ``mic_hz`` (:func:`at_rate`;
    for an 8 kHz microphone the project's :func:`resample`, its band limit at 3.8 kHz standing for the
    microphone's own at 4 kHz), then through the device's :class:`StreamingResampler` in :data:`MIC_CHUNK_MS`
    chunks (flushed at the end, so the samples line up with the clip), clipped to full scale as
    :class:`edgesense.sources.microphone.Microphone` clips them."""
    x = clip.astype(np.float64)
    at_mic = at_rate(x, rate_hz, mic_hz) if mic_hz > rate_hz else resample(x, rate_hz, mic_hz)
    resampler = StreamingResampler(mic_hz, rate_hz)
    chunk = max(1, int(round(mic_hz * MIC_CHUNK_MS / 1000)))
    parts = [resampler.push(at_mic[i:i + chunk]) for i in range(0, at_mic.size, chunk)]
    parts.append(resampler.flush())
    out = np.concatenate(parts)[:clip.size]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Impairment:
    name: str
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    #: Whether ``_silence_`` snippets get it too (a close talker's clipping is a word's, not the room's).
    silence_too: bool = True


IMPAIRMENTS: tuple[Impairment, ...] = (
    Impairment("DC offset 0.5 %", lambda x, rng: dc_offset(x, 0.005)),
    Impairment("DC offset 2 %", lambda x, rng: dc_offset(x, 0.02)),
    Impairment("DC offset 5 %", lambda x, rng: dc_offset(x, 0.05)),
    Impairment("hum 50 Hz -50 dBFS", lambda x, rng: hum(x, 50.0, -50.0, rng)),
    Impairment("hum 50 Hz -40 dBFS", lambda x, rng: hum(x, 50.0, -40.0, rng)),
    Impairment("hum 50 Hz -30 dBFS", lambda x, rng: hum(x, 50.0, -30.0, rng)),
    Impairment("hum 60 Hz -30 dBFS", lambda x, rng: hum(x, 60.0, -30.0, rng)),
    Impairment("peak at full scale, not clipped", lambda x, rng: overdriven(x, 0.0), silence_too=False),
    Impairment("clipped, peak +6 dB", lambda x, rng: overdriven(x, 6.0), silence_too=False),
    Impairment("clipped, peak +12 dB", lambda x, rng: overdriven(x, 12.0), silence_too=False),
    Impairment("AGC pumping", lambda x, rng: agc(x)),
    Impairment("AGC's mean gain, held", lambda x, rng: agc(x, held=True)),
    Impairment("narrow band (8 kHz mic)", lambda x, rng: through_device_resampler(x, 8000)),
    Impairment("44.1 kHz mic, device resampler", lambda x, rng: through_device_resampler(x, 44100)),
    Impairment("48 kHz mic, device resampler", lambda x, rng: through_device_resampler(x, 48000)),
    Impairment("gain -10 dB", lambda x, rng: gain(x, -10.0)),
    Impairment("gain -20 dB", lambda x, rng: gain(x, -20.0)),
)


# --------------------------------------------------------------------------- remedies (device side)


Sections = Sequence[tuple[Sequence[float], Sequence[float]]]


def response(sections: Sections, size: int = FFT_SIZE) -> np.ndarray:
    """The frequency response of a cascade of IIR ``(b, a)`` sections (``a[0] == 1``) on the ``rfft`` grid of
    ``size`` points: filtering by it is the filters' causal recursion up to a wrap-around of their tails past
    ``size`` samples (under 1e-9 for the filters here, whose slowest decays in a few thousand samples)."""
    z1 = np.exp(-2j * np.pi * np.fft.rfftfreq(size))  # z^-1
    h = np.ones(z1.size, complex)
    for b, a in sections:
        h *= np.polyval(list(b)[::-1], z1) / np.polyval(list(a)[::-1], z1)
    return h


def filtered(clip: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``clip`` through the filter of response ``h`` (:func:`response`), from rest, its length kept."""
    size = 2 * (h.size - 1)
    if clip.size > size // 2:
        raise ValueError(f"filtered: at most {size // 2} samples, got {clip.size}")
    return np.fft.irfft(np.fft.rfft(clip.astype(np.float64), size) * h, size)[:clip.size].astype(np.float32)


def biquad_highpass(cutoff_hz: float, rate_hz: int, q: float = 1 / np.sqrt(2)) -> tuple[list[float], list[float]]:
    """RBJ cookbook high-pass (Butterworth for the default ``q``)."""
    w = 2 * np.pi * cutoff_hz / rate_hz
    alpha, cos = np.sin(w) / (2 * q), np.cos(w)
    a0 = 1 + alpha
    return ([(1 + cos) / 2 / a0, -(1 + cos) / a0, (1 + cos) / 2 / a0], [1.0, -2 * cos / a0, (1 - alpha) / a0])


def biquad_notch(f_hz: float, rate_hz: int, q: float) -> tuple[list[float], list[float]]:
    """RBJ cookbook notch."""
    w = 2 * np.pi * f_hz / rate_hz
    alpha, cos = np.sin(w) / (2 * q), np.cos(w)
    a0 = 1 + alpha
    return [1 / a0, -2 * cos / a0, 1 / a0], [1.0, -2 * cos / a0, (1 - alpha) / a0]


def dc_blocker(rate_hz: int = 16000) -> tuple[list[float], list[float]]:
    """y[n] = x[n] - x[n-1] + p y[n-1], p = :data:`DC_BLOCKER_POLE` (at 16 kHz; scaled for ``rate_hz``)."""
    return [1.0, -1.0], [1.0, -DC_BLOCKER_POLE ** (16000 / rate_hz)]


def mains_notches(mains_hz: float, rate_hz: int = 16000) -> list[tuple[list[float], list[float]]]:
    """Notches (Q :data:`NOTCH_Q`) at ``mains_hz`` and its harmonics up to :data:`NOTCH_UP_TO_HZ`."""
    return [biquad_notch(k * mains_hz, rate_hz, NOTCH_Q) for k in range(1, int(NOTCH_UP_TO_HZ // mains_hz) + 1)]


def running_mean_removal(clip: np.ndarray, rate_hz: int = 16000) -> np.ndarray:
    """Each :data:`MIC_CHUNK_MS` chunk minus the running mean of the chunks so far (an exponential average
    of the chunks' means, time constant :data:`RUNNING_MEAN_S`, started from the first chunk's mean): what
    a device could do per chunk in two numpy operations."""
    chunk = max(1, int(round(rate_hz * MIC_CHUNK_MS / 1000)))
    keep = np.exp(-MIC_CHUNK_MS / 1000 / RUNNING_MEAN_S)
    x = clip.astype(np.float64)
    out = np.empty_like(x)
    mean = None
    for start in range(0, x.size, chunk):
        part = x[start:start + chunk]
        mean = part.mean() if mean is None else keep * mean + (1 - keep) * part.mean()
        out[start:start + chunk] = part - mean
    return out.astype(np.float32)


def warmed_up(remedy: Callable[[np.ndarray], np.ndarray], clip: np.ndarray) -> np.ndarray:
    """``remedy`` on ``clip`` as on a device that has run it all along: it first hears the clip once (the
    state it settles in holds the clip's offset and hum; 50 and 60 Hz hum runs on across the seam, whole
    cycles per second), and the second hearing is kept."""
    return remedy(np.concatenate([clip, clip]))[clip.size:]


@dataclass(frozen=True)
class Remedy:
    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    #: the impairments (names in :data:`IMPAIRMENTS`) it answers
    answers: tuple[str, ...]


def remedies() -> tuple[Remedy, ...]:
    """The device-side remedies, each at the setting fixed before any figure was read."""
    dc = response([dc_blocker()])
    highpass = response([biquad_highpass(HUM_HIGHPASS_HZ, 16000)])
    notch50, notch60 = response([dc_blocker(), *mains_notches(50.0)]), response([dc_blocker(), *mains_notches(60.0)])
    dc_rows = tuple(i.name for i in IMPAIRMENTS if i.name.startswith("DC offset"))
    return (
        Remedy(f"DC blocker (one pole at {DC_BLOCKER_POLE})", lambda x: filtered(x, dc), dc_rows),
        Remedy(f"running mean removed ({RUNNING_MEAN_S:g} s, per chunk)", running_mean_removal, dc_rows),
        Remedy(f"high-pass {HUM_HIGHPASS_HZ:g} Hz (2nd order)", lambda x: filtered(x, highpass),
               dc_rows + ("hum 50 Hz -30 dBFS", "hum 60 Hz -30 dBFS")),
        Remedy(f"50 Hz notches to {NOTCH_UP_TO_HZ:g} Hz + DC blocker",
               lambda x: filtered(x, notch50), ("hum 50 Hz -40 dBFS", "hum 50 Hz -30 dBFS")),
        Remedy(f"60 Hz notches to {NOTCH_UP_TO_HZ:g} Hz + DC blocker",
               lambda x: filtered(x, notch60), ("hum 60 Hz -30 dBFS",)),
    )


# --------------------------------------------------------------------------- scoring


class _Recorder(_Timer):
    """:func:`evaluate_commands`' timer, keeping each clip's command scores as well (the answer per clip)."""

    def __init__(self) -> None:
        super().__init__(STAGES)
        self.commands: list[np.ndarray] = []

    def time(self, stage: str, fn, *args):
        out = super().time(stage, fn, *args)
        if stage == "fusion":
            self.commands.append(np.asarray(out[0]))
        return out


def score(model: EdgeModel, clips: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(accuracy, each clip's answer) as ``edgesense bench`` scores the clips with the camera absent."""
    recorder = _Recorder()
    report = evaluate_commands(model, clips, labels, recorder)
    answers = np.array([int(np.argmax(c)) for c in recorder.commands], np.int64)
    return float(report["accuracy"]), answers


def feature_change(model: EdgeModel, before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """How far ``after`` moves the clips' log-mel features from ``before``: mean and 99th percentile of
    the change in dB, and the share of cells moved by half an int8 input step or more."""
    options = model.audio_frontend
    diffs = np.stack([log_mel_spectrogram(fit_clip(b, options), options)
                      - log_mel_spectrogram(fit_clip(a, options), options) for b, a in zip(before, after)])
    diffs = np.abs(diffs.astype(np.float64))
    step = float(model.signatures["encode_audio"].inputs["audio_features"].quant.scale)
    return {"mean_db": float(diffs.mean() * DB_PER_NEPER), "p99_db": float(np.percentile(diffs, 99) * DB_PER_NEPER),
            "half_step_share": float(np.mean(diffs >= step / 2)) if step > 0 else float(np.mean(diffs > 0)),
            "step_db": step * DB_PER_NEPER}


@dataclass
class Row:
    name: str
    accuracy: float
    answers: np.ndarray


def _changed(clean: np.ndarray, now: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(answers changed, right -> wrong, wrong -> right)."""
    changed = clean != now
    return (int(changed.sum()), int(np.sum(changed & (clean == truth))), int(np.sum(changed & (now == truth))))


def mcnemar_p(lost: int, won: int) -> float:
    """Two-sided exact McNemar p-value of ``lost`` clips right -> wrong against ``won`` wrong -> right: how
    often a change that costs nothing would split the changed answers at least this unevenly."""
    n = lost + won
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, won) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def load(model: EdgeModel, model_path: Path, speech_commands: Path,
         part: str) -> tuple[list[Any], np.ndarray, np.ndarray, str]:
    """(items, clips, label indices, how chosen): ``part`` of the split the model records, as ``edgesense bench
    --split testing`` (``--tuning-only`` for ``validation``) selects it."""
    options = BenchOptions(model_path=model_path, speech_commands=speech_commands, split="testing",
                           tuning_only=part == "validation")
    words = [w for w in model.command_labels if is_command_word(w)]
    _, items, _, how = select_command_items(options, words, SplitSpec.from_metadata(model.metadata, None))
    if not items:
        raise ValueError(f"--speech-commands {speech_commands}: no clip of the {part} speakers")
    clips, report = data.load_clips(items, model.audio_frontend, what=f"{part} clips")
    items = [items[i] for i in report.kept]
    lookup = {label: i for i, label in enumerate(model.command_labels)}
    unknown = sorted({item.label for item in items} - set(lookup))
    if unknown:
        raise ValueError(f"--speech-commands {speech_commands}: labels {unknown} are not the model's {list(lookup)}")
    return items, clips, np.array([lookup[item.label] for item in items], np.int64), how


def impaired(clips: np.ndarray, items: Sequence[Any], impairment: Impairment, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([impairment.apply(clip, rng) if impairment.silence_too or item.label != SILENCE_LABEL
                     else clip.copy() for clip, item in zip(clips, items)])


def _clip_name(item: Any) -> str:
    return f"{item.label}/{Path(item.path).name}"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL_PATH), help="a deployed EdgeSense .tflite")
    parser.add_argument("--speech-commands", type=Path, required=True, help="the Speech Commands folder it trained on")
    parser.add_argument("--part", choices=PARTS, default="testing",
                        help="which speakers of the split the model records (default: testing, a measurement only)")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="score only the impairments whose name holds NAME (repeatable)")
    parser.add_argument("--no-remedies", action="store_true", help="leave out the remedies' table")
    parser.add_argument("--list-changed", type=int, default=8, metavar="N",
                        help="name at most N clips whose answer changed, per impairment (default 8; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hum's phases")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.list_changed < 0:
            raise ValueError(f"--list-changed: expected a count >= 0, got {args.list_changed}")
        chosen = [i for i in IMPAIRMENTS if args.only is None or any(s.lower() in i.name.lower() for s in args.only)]
        if not chosen:
            raise ValueError(f"--only {args.only}: names no impairment of {[i.name for i in IMPAIRMENTS]}")
        if not args.speech_commands.is_dir():
            raise ValueError(f"--speech-commands {args.speech_commands}: not a folder")
        model = EdgeModel.load(args.model)
        if model.audio_frontend.sample_rate_hz != 16000:
            raise ValueError(f"--model {args.model}: its audio frontend runs at "
                             f"{model.audio_frontend.sample_rate_hz} Hz; the impairments are made for 16 kHz")
        started = time.perf_counter()
        items, clips, truth, how = load(model, args.model, args.speech_commands, args.part)
        logger.info("%d clips of %d speakers: %s", len(items), len({it.speaker for it in items}), how)
        clean_accuracy, clean = score(model, clips, truth)
        rows = []
        for impairment in chosen:
            accuracy, answers = score(model, impaired(clips, items, impairment, args.seed), truth)
            rows.append(Row(impairment.name, accuracy, answers))
        remedy_rows = []
        if not args.no_remedies:
            by_name = {i.name: i for i in IMPAIRMENTS}
            for remedy in remedies():
                fixed = np.stack([warmed_up(remedy.apply, c) for c in clips])
                accuracy, answers = score(model, fixed, truth)
                change = feature_change(model, clips, fixed)
                on = []
                for name in remedy.answers:
                    if name in {i.name for i in chosen}:
                        bad = impaired(clips, items, by_name[name], args.seed)
                        on.append((name, score(model, np.stack([warmed_up(remedy.apply, c) for c in bad]), truth)[0]))
                remedy_rows.append((remedy.name, accuracy, answers, change, on))
        elapsed = time.perf_counter() - started
    except (ValueError, OSError) as exc:
        print(f"mic_impairment_probe: {exc}", file=sys.stderr)
        return 2

    # The script's own figures.
    n = len(items)
    print(f"{args.model}: {n} {args.part} clips ({how})")
    print("| impairment | accuracy | change (points) | answers changed | right -> wrong | wrong -> right | "
          "McNemar p |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| clean | {100 * clean_accuracy:.1f} % | | | | | |")
    for row in rows:
        changed, lost, won = _changed(clean, row.answers, truth)
        print(f"| {row.name} | {100 * row.accuracy:.1f} % | {100 * (row.accuracy - clean_accuracy):+.1f} | "
              f"{changed} | {lost} | {won} | {mcnemar_p(lost, won):.2g} |")
    if args.list_changed:
        labels = model.command_labels
        for row in rows:
            moved = np.flatnonzero(clean != row.answers)
            if moved.size:
                named = ", ".join(f"{_clip_name(items[i])} {labels[clean[i]]}->{labels[row.answers[i]]}"
                                  for i in moved[:args.list_changed])
                more = f" and {moved.size - args.list_changed} more" if moved.size > args.list_changed else ""
                print(f"  {row.name}: {named}{more}")
    if remedy_rows:
        step_db = remedy_rows[0][3]["step_db"]
        print()
        print(f"| remedy (before the frontend) | clean accuracy | clean answers changed | clean log-mel change: "
              f"mean dB | p99 dB | cells >= half an int8 step ({step_db / 2:.2f} dB) | on the impairments it answers |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, accuracy, answers, change, on in remedy_rows:
            fixes = "; ".join(f"{what}: {100 * acc:.1f} %" for what, acc in on) or "-"
            print(f"| {name} | {100 * accuracy:.1f} % | {int(np.sum(answers != clean))} | {change['mean_db']:.3f} | "
                  f"{change['p99_db']:.3f} | {100 * change['half_step_share']:.2f} % | {fixes} |")
    print(f"{elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
