"""Streaming keyword-spotting evaluation: hit rate, false accepts per hour, detection latency.

A long stream is assembled from held-out clips placed at known times over background
noise (command words, with ``_unknown_`` words mixed in as distractors), run through the
device's own path (:class:`edge.features.StreamingAudioFrontend` -> the last second of
log-mel frames every ``hop_ms`` -> ``EdgeModel.encode_audio`` -> ``EdgeModel.fuse`` with
the camera absent) and the device's post-processing (:class:`edge.postprocess.CommandRecognizer`).

The per-hop posteriors are computed once and cached (:class:`PosteriorCache`), so a sweep of
``threshold`` x ``suppression_ms`` (:func:`sweep`) only replays the recognizer.

Scoring (:func:`evaluate_stream`): a detection of label L at time t *hits* the earliest
not-yet-hit placed word of label L with ``start_ms <= t <= end_ms + match_tolerance_ms``;
every other detection is a *false accept*, split into ``substitutions`` (inside a command
word's span, wrong label or a second detection), ``on_unknown`` (inside an unknown word's
span) and ``on_background`` (elsewhere). Latency is ``t - end_ms`` of the hit word, where
``end_ms`` is the end of the *spoken* part of the clip (energy envelope), not of the clip.

Pure numpy plus ``edge``: runs on the device as well as the desktop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions, StreamingAudioFrontend
from edgesense.recognition.commands import CommandRecognizer, CommandRecognizerOptions
from edgesense.schema.validate import require
from edgesense.types import SILENCE_LABEL, UNKNOWN_LABEL

__all__ = ["PlacedWord", "Stream", "StreamOptions", "StreamPosteriors", "PosteriorCache", "StreamingMetrics", "SweepOptions", "SweepPoint", "build_stream", "speech_span", "stream_posteriors", "evaluate_stream", "sweep", "recommend", "plot_sweep", "update_firmware_config"]

logger = logging.getLogger(__name__)


_MS_PER_S = 1000.0
_MS_PER_HOUR = 3_600_000.0
_ENVELOPE_FRAME_MS = 10.0
#: A clip's spoken part: envelope frames within this many dB of the loudest frame.
_SPEECH_SPAN_DB = 25.0
_EPS = 1e-12




def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    require(ok, name, f"a (low, high) tuple with {lo:g} <= low <= high <= {hi:g}", value)


# --------------------------------------------------------------------------- the stream


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How to assemble a stream.

    Words follow each other with a silence of ``gap_s`` (uniform in the range) after the
    previous clip; ``unknown_fraction`` of the placed clips are ``_unknown_`` words. Each
    word's spoken part is scaled to an RMS level in ``speech_level_dbfs``; the background
    (noise recordings, or coloured noise when there are none) to ``noise_level_dbfs``.
    """

    duration_s: float = 1800.0
    sample_rate_hz: int = 16000
    gap_s: tuple[float, float] = (1.5, 5.0)
    unknown_fraction: float = 0.25
    speech_level_dbfs: tuple[float, float] = (-30.0, -18.0)
    noise_level_dbfs: tuple[float, float] = (-55.0, -40.0)
    lead_in_s: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(_is_number(self.duration_s) and self.duration_s >= 10, "duration_s", "a number >= 10",
                 self.duration_s)
        require(isinstance(self.sample_rate_hz, int) and self.sample_rate_hz > 0, "sample_rate_hz",
                 "a positive integer", self.sample_rate_hz)
        _check_range("gap_s", self.gap_s, 0.0, 600.0)
        require(_is_number(self.unknown_fraction) and 0 <= self.unknown_fraction < 1, "unknown_fraction",
                 "a number in [0, 1)", self.unknown_fraction)
        _check_range("speech_level_dbfs", self.speech_level_dbfs, -100.0, 0.0)
        _check_range("noise_level_dbfs", self.noise_level_dbfs, -120.0, 0.0)
        require(_is_number(self.lead_in_s) and self.lead_in_s >= 0, "lead_in_s", "a number >= 0", self.lead_in_s)
        require(isinstance(self.seed, int), "seed", "an integer", self.seed)


@dataclass(frozen=True)
class PlacedWord:
    """A clip placed in the stream. ``start_ms``/``end_ms``: its spoken part; ``clip_*``: the whole clip."""

    label: str
    start_ms: float
    end_ms: float
    clip_start_ms: float
    clip_end_ms: float
    is_command: bool
    source: str = ""


@dataclass(frozen=True)
class Stream:
    samples: np.ndarray  # float32 (n,)
    sample_rate_hz: int
    words: tuple[PlacedWord, ...]
    fingerprint: str

    @property
    def duration_ms(self) -> float:
        return self.samples.size * _MS_PER_S / self.sample_rate_hz

    def summary(self) -> dict[str, Any]:
        commands = sum(w.is_command for w in self.words)
        return {"duration_s": round(self.duration_ms / _MS_PER_S, 1), "command_words": commands,
                "unknown_words": len(self.words) - commands, "fingerprint": self.fingerprint}


def speech_span(clip: np.ndarray, sample_rate_hz: int) -> tuple[int, int]:
    """(first, end) sample of a clip's spoken part: 10 ms envelope frames within 25 dB of the loudest."""
    x = np.asarray(clip, dtype=np.float64)
    frame = max(1, int(round(sample_rate_hz * _ENVELOPE_FRAME_MS / _MS_PER_S)))
    n = x.size // frame
    if n == 0:
        return 0, x.size
    power = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-_SPEECH_SPAN_DB / 10) + _EPS)
    if loud.size == 0:
        return 0, x.size
    return int(loud[0] * frame), int(min(x.size, (loud[-1] + 1) * frame))


def _coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n=n)
    return x / (np.sqrt(np.mean(x ** 2)) + _EPS)


def _background(n: int, noise: Sequence[np.ndarray], rng: np.random.Generator, segment: int) -> np.ndarray:
    """Unit-RMS background: segments cut from the recordings at random offsets (or pink/brown noise)."""
    out = np.empty(n, dtype=np.float64)
    pool = [np.asarray(r, dtype=np.float64) for r in noise if np.asarray(r).size >= 2]
    for start in range(0, n, segment):
        length = min(segment, n - start)
        if pool:
            rec = pool[int(rng.integers(len(pool)))]
            reps = int(math.ceil(length / rec.size)) + 1
            tiled = np.tile(rec, reps) if reps > 1 else rec
            offset = int(rng.integers(0, max(1, tiled.size - length)))
            piece = tiled[offset:offset + length]
        else:
            piece = _coloured_noise(length, rng, float(rng.choice([1.0, 2.0])))
        piece = piece - piece.mean()
        out[start:start + length] = piece / (np.sqrt(np.mean(piece ** 2)) + _EPS)
    return out


def _fingerprint(parts: Iterable[Any]) -> str:
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode("utf-8"))
    return h.hexdigest()[:16]


def build_stream(clips: np.ndarray, labels: Sequence[str], options: StreamOptions = StreamOptions(), *,
                 noise: Sequence[np.ndarray] = (), sources: Sequence[str] | None = None) -> Stream:
    """Assemble a stream from one-clip arrays ``clips`` (N, samples) with string ``labels``.

    Command words (labels other than ``_silence_``/``_unknown_``) are cycled through in a
    shuffled order, ``_unknown_`` clips are mixed in at ``unknown_fraction``; ``_silence_``
    clips are not placed (the background is the silence).
    """
    clips = np.asarray(clips)
    require(clips.ndim == 2 and clips.shape[0] == len(labels), "clips",
             f"an array (N, samples) with N = len(labels) = {len(labels)}", clips.shape)
    rng = np.random.default_rng(options.seed)
    sr = options.sample_rate_hz
    command_idx = [i for i, lab in enumerate(labels) if lab not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    unknown_idx = [i for i, lab in enumerate(labels) if lab == UNKNOWN_LABEL]
    require(len(command_idx) > 0, "labels", "at least one command-word clip", sorted(set(labels)))
    total = int(round(options.duration_s * sr))
    background = _background(total, noise, rng, segment=10 * sr)
    envelope_db = np.repeat(rng.uniform(*options.noise_level_dbfs, size=total // sr + 1), sr)[:total]
    samples = background * 10 ** (envelope_db / 20)

    command_order = list(rng.permutation(command_idx))
    unknown_order = list(rng.permutation(unknown_idx)) if unknown_idx else []
    words: list[PlacedWord] = []
    t = int(options.lead_in_s * sr)
    clip_len = clips.shape[1]
    while t + clip_len <= total:
        if unknown_order and rng.random() < options.unknown_fraction:
            i = unknown_order.pop(0)
            unknown_order.append(i)
        else:
            i = command_order.pop(0)
            command_order.append(i)
        clip = clips[i].astype(np.float64)
        first, end = speech_span(clip, sr)
        rms = np.sqrt(np.mean(clip[first:end] ** 2)) + _EPS
        gain = 10 ** (rng.uniform(*options.speech_level_dbfs) / 20) / rms
        samples[t:t + clip_len] += np.clip(clip * gain, -1.0, 1.0)
        label = labels[i]
        words.append(PlacedWord(label=label, start_ms=(t + first) * _MS_PER_S / sr, end_ms=(t + end) * _MS_PER_S / sr,
                                clip_start_ms=t * _MS_PER_S / sr, clip_end_ms=(t + clip_len) * _MS_PER_S / sr,
                                is_command=label not in (SILENCE_LABEL, UNKNOWN_LABEL),
                                source=str(sources[i]) if sources is not None else str(i)))
        t += clip_len + int(rng.uniform(*options.gap_s) * sr)
    samples = np.clip(samples, -1.0, 1.0).astype(np.float32)
    fingerprint = _fingerprint([asdict(options), clips.shape, list(labels), clips[:, ::97],
                                [n[::997] for n in noise]])
    logger.info("stream: %.1f min, %d command words, %d unknown words", total / sr / 60,
                sum(w.is_command for w in words), sum(not w.is_command for w in words))
    return Stream(samples=samples, sample_rate_hz=sr, words=tuple(words), fingerprint=fingerprint)


# --------------------------------------------------------------------------- posteriors


@dataclass(frozen=True)
class StreamPosteriors:
    """Command posteriors for each hop: ``times_ms`` (H,) stream time of the hop's last sample,
    ``posteriors`` (H, C) float32, and the model's per-hop timings."""

    times_ms: np.ndarray
    posteriors: np.ndarray
    labels: tuple[str, ...]
    hop_ms: float
    timings_ms: Mapping[str, np.ndarray] = field(default_factory=dict)


def stream_posteriors(model: Any, samples: np.ndarray, *, hop_ms: float = 100.0,
                      frontend: AudioFrontendOptions | None = None, progress: bool = True) -> StreamPosteriors:
    """Run ``model`` (an :class:`edge.model.EdgeModel`) over a stream as the device does:
    push ``hop_ms`` of audio into :class:`StreamingAudioFrontend`, and once a clip's worth of
    frames exists, run ``encode_audio`` on the latest ``frames_per_clip`` frames and
    ``fuse(audio, None)`` (camera absent)."""
    frontend = frontend or model.audio_frontend
    require(_is_number(hop_ms) and hop_ms > 0, "hop_ms", "a positive number", hop_ms)
    hop = int(round(frontend.sample_rate_hz * hop_ms / _MS_PER_S))
    require(hop >= 1, "hop_ms", "at least one sample", hop_ms)
    streaming = StreamingAudioFrontend(frontend)
    frames_needed, bins = frontend.feature_shape
    window = np.zeros((0, bins), np.float32)
    times, posts = [], []
    timings: dict[str, list[float]] = {"audio_frontend": [], "audio_encoder": [], "fusion": []}
    samples = np.asarray(samples, dtype=np.float32)
    steps = range(0, samples.size - hop + 1, hop)
    iterator: Iterable[int] = steps
    if progress:
        from tqdm import tqdm

        iterator = tqdm(steps, desc="streaming posteriors", unit="hop", leave=False, disable=None)
    for start in iterator:
        t0 = time.perf_counter()
        new = streaming.push(samples[start:start + hop])
        window = np.concatenate([window, new])[-frames_needed:]
        t1 = time.perf_counter()
        if window.shape[0] < frames_needed:
            continue
        embedding = model.encode_audio(window)
        t2 = time.perf_counter()
        command, _ = model.fuse(embedding, None)
        t3 = time.perf_counter()
        times.append((start + hop) * _MS_PER_S / frontend.sample_rate_hz)
        posts.append(np.asarray(command, np.float32))
        timings["audio_frontend"].append((t1 - t0) * _MS_PER_S)
        timings["audio_encoder"].append((t2 - t1) * _MS_PER_S)
        timings["fusion"].append((t3 - t2) * _MS_PER_S)
    labels = tuple(model.command_labels)
    posteriors = np.stack(posts) if posts else np.zeros((0, len(labels)), np.float32)
    return StreamPosteriors(times_ms=np.asarray(times, np.float64), posteriors=posteriors, labels=labels,
                            hop_ms=float(hop_ms), timings_ms={k: np.asarray(v) for k, v in timings.items()})


class PosteriorCache:
    """Per-hop posteriors on disk (``<folder>/posteriors-<key>.npz``), keyed by model and stream."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(model_sha256: str, stream: Stream, hop_ms: float) -> str:
        return _fingerprint([model_sha256, stream.fingerprint, float(hop_ms)])

    def path(self, key: str) -> Path:
        return self.folder / f"posteriors-{key}.npz"

    def load(self, key: str) -> StreamPosteriors | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return StreamPosteriors(times_ms=data["times_ms"], posteriors=data["posteriors"],
                                        labels=tuple(str(x) for x in data["labels"]), hop_ms=float(data["hop_ms"]))
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring unreadable posterior cache %s: %s", path, exc)
            return None

    def save(self, key: str, result: StreamPosteriors) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        np.savez_compressed(path, times_ms=result.times_ms, posteriors=result.posteriors,
                            labels=np.array(result.labels), hop_ms=np.float64(result.hop_ms))
        return path


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, kw_only=True)
class StreamingMetrics:
    """Detections scored against the placed words (see the module docstring)."""

    threshold: float
    suppression_ms: float
    command_words: int
    hits: int
    misses: int
    false_accepts: int
    substitutions: int
    on_unknown: int
    on_background: int
    duration_hours: float
    latencies_ms: tuple[float, ...]
    per_class_hit_rate: Mapping[str, float] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.command_words if self.command_words else 0.0

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / self.duration_hours if self.duration_hours > 0 else 0.0

    def latency_summary(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"mean": None, "p50": None, "p90": None, "max": None}
        x = np.asarray(self.latencies_ms)
        return {"mean": round(float(x.mean()), 1), "p50": round(float(np.percentile(x, 50)), 1),
                "p90": round(float(np.percentile(x, 90)), 1), "max": round(float(x.max()), 1)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "suppression_ms": self.suppression_ms,
            "hit_rate": round(self.hit_rate, 4), "false_accepts_per_hour": round(self.false_accepts_per_hour, 2),
            "command_words": self.command_words, "hits": self.hits, "misses": self.misses,
            "false_accepts": self.false_accepts, "substitutions": self.substitutions,
            "false_accepts_on_unknown_words": self.on_unknown, "false_accepts_on_background": self.on_background,
            "duration_hours": round(self.duration_hours, 4),
            "latency_ms": self.latency_summary(),
            "per_class_hit_rate": {k: round(v, 4) for k, v in self.per_class_hit_rate.items()},
        }


def evaluate_stream(times_ms: np.ndarray, posteriors: np.ndarray, labels: Sequence[str],
                    words: Sequence[PlacedWord], options: CommandRecognizerOptions, *, duration_ms: float,
                    match_tolerance_ms: float = 1000.0) -> StreamingMetrics:
    """Replay ``posteriors`` through :class:`CommandRecognizer` and score its events."""
    times_ms = np.asarray(times_ms, dtype=np.float64)
    posteriors = np.asarray(posteriors, dtype=np.float64)
    require(posteriors.ndim == 2 and posteriors.shape == (times_ms.size, len(labels)), "posteriors",
             f"shape ({times_ms.size}, {len(labels)})", posteriors.shape)
    require(_is_number(duration_ms) and duration_ms > 0, "duration_ms", "a positive number", duration_ms)
    require(_is_number(match_tolerance_ms) and match_tolerance_ms >= 0, "match_tolerance_ms", "a number >= 0",
             match_tolerance_ms)
    recognizer = CommandRecognizer(labels, options, wall_time=lambda: 0.0)
    events = [(e.label, e.t_ms) for t, p in zip(times_ms, posteriors)
              if (e := recognizer.process(p, float(t))) is not None]
    words = sorted(words, key=lambda w: w.start_ms)
    hit = [False] * len(words)
    latencies: list[float] = []
    substitutions = on_unknown = on_background = 0
    starts = np.array([w.start_ms for w in words])
    for label, t in events:
        matched = False
        # Candidate words: started at or before t, and t within their tolerance window.
        for j in range(int(np.searchsorted(starts, t, side="right")) - 1, -1, -1):
            w = words[j]
            if w.end_ms + match_tolerance_ms < t - 60 * _MS_PER_S:
                break
            if not hit[j] and w.is_command and w.label == label and w.start_ms <= t <= w.end_ms + match_tolerance_ms:
                hit[j] = matched = True
                latencies.append(t - w.end_ms)
                break
        if matched:
            continue
        inside = [w for w in words if w.start_ms <= t <= w.end_ms + match_tolerance_ms]
        if any(w.is_command for w in inside):
            substitutions += 1
        elif inside:
            on_unknown += 1
        else:
            on_background += 1
    command_words = [j for j, w in enumerate(words) if w.is_command]
    per_class: dict[str, list[bool]] = {}
    for j in command_words:
        per_class.setdefault(words[j].label, []).append(hit[j])
    hits = sum(hit[j] for j in command_words)
    return StreamingMetrics(
        threshold=float(options.threshold), suppression_ms=float(options.suppression_ms),
        command_words=len(command_words), hits=hits, misses=len(command_words) - hits,
        false_accepts=substitutions + on_unknown + on_background, substitutions=substitutions,
        on_unknown=on_unknown, on_background=on_background, duration_hours=duration_ms / _MS_PER_HOUR,
        latencies_ms=tuple(latencies),
        per_class_hit_rate={k: float(np.mean(v)) for k, v in sorted(per_class.items())},
    )


# --------------------------------------------------------------------------- sweep


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """The grid of post-processing settings to replay, and the false-accept budget for the recommendation."""

    thresholds: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    suppressions_ms: tuple[float, ...] = (500.0, 750.0, 1000.0, 1500.0)
    average_window_ms: float = 1000.0
    minimum_count: int = 3
    max_false_accepts_per_hour: float = 2.0
    match_tolerance_ms: float = 1000.0

    def __post_init__(self) -> None:
        require(len(self.thresholds) >= 1 and all(_is_number(t) and 0 <= t < 1 for t in self.thresholds),
                 "thresholds", "a non-empty tuple of numbers in [0, 1)", self.thresholds)
        require(len(self.suppressions_ms) >= 1 and all(_is_number(s) and s >= 0 for s in self.suppressions_ms),
                 "suppressions_ms", "a non-empty tuple of numbers >= 0", self.suppressions_ms)
        require(_is_number(self.average_window_ms) and self.average_window_ms > 0, "average_window_ms",
                 "a positive number", self.average_window_ms)
        require(isinstance(self.minimum_count, int) and self.minimum_count >= 1, "minimum_count",
                 "an integer >= 1", self.minimum_count)
        require(_is_number(self.max_false_accepts_per_hour) and self.max_false_accepts_per_hour >= 0,
                 "max_false_accepts_per_hour", "a number >= 0", self.max_false_accepts_per_hour)
        require(_is_number(self.match_tolerance_ms) and self.match_tolerance_ms >= 0, "match_tolerance_ms",
                 "a number >= 0", self.match_tolerance_ms)

    def recognizer_options(self, threshold: float, suppression_ms: float) -> CommandRecognizerOptions:
        return CommandRecognizerOptions(average_window_ms=self.average_window_ms, threshold=threshold,
                                        suppression_ms=suppression_ms, minimum_count=self.minimum_count)


SweepPoint = StreamingMetrics


def sweep(posteriors: StreamPosteriors, words: Sequence[PlacedWord], duration_ms: float,
          options: SweepOptions = SweepOptions()) -> list[StreamingMetrics]:
    """Every (threshold, suppression) of the grid, replayed on cached posteriors."""
    out = []
    for suppression in options.suppressions_ms:
        for threshold in options.thresholds:
            out.append(evaluate_stream(posteriors.times_ms, posteriors.posteriors, posteriors.labels, words,
                                       options.recognizer_options(threshold, suppression), duration_ms=duration_ms,
                                       match_tolerance_ms=options.match_tolerance_ms))
    return out


def recommend(points: Sequence[StreamingMetrics], max_false_accepts_per_hour: float) -> StreamingMetrics:
    """The highest hit rate within the false-accept budget (ties: fewer false accepts, then the
    higher threshold); when no point is within budget, the one with the fewest false accepts."""
    require(len(points) > 0, "points", "at least one sweep point", len(points))
    within = [p for p in points if p.false_accepts_per_hour <= max_false_accepts_per_hour]
    if within:
        return max(within, key=lambda p: (p.hit_rate, -p.false_accepts, p.threshold, p.suppression_ms))
    logger.warning("no setting reaches %.2f false accepts/hour; recommending the fewest", max_false_accepts_per_hour)
    return min(points, key=lambda p: (p.false_accepts, -p.hit_rate, -p.threshold))


def plot_sweep(curves: Mapping[str, Sequence[StreamingMetrics]], recommended: StreamingMetrics | None,
               path: str | Path, *, title: str = "") -> Path:
    """Hit rate vs false accepts/hour, one line per (stream, suppression) over the thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = ["-", "--", ":", "-."]
    for k, (name, points) in enumerate(curves.items()):
        for suppression in sorted({p.suppression_ms for p in points}):
            pts = sorted((p for p in points if p.suppression_ms == suppression), key=lambda p: p.threshold)
            ax.plot([p.false_accepts_per_hour for p in pts], [p.hit_rate for p in pts], styles[k % len(styles)],
                    marker="o", markersize=3, label=f"{name}, suppression {suppression:g} ms")
    if recommended is not None:
        ax.plot([recommended.false_accepts_per_hour], [recommended.hit_rate], "k*", markersize=14,
                label=f"recommended: threshold {recommended.threshold:g}, suppression {recommended.suppression_ms:g} ms")
    ax.set_xscale("symlog", linthresh=1.0)
    most = max([p.false_accepts_per_hour for pts in curves.values() for p in pts] + [1.0])
    ax.set_xlim(0, most * 1.3)
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("hit rate (command words detected)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Streaming commands: threshold sweep")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- firmware config


def update_firmware_config(path: str | Path, *, threshold: float, suppression_ms: float) -> Path:
    """Set ``commands.threshold`` and ``commands.suppression_ms`` in a firmware YAML in place, every
    other field and comment kept (:func:`edgesense.schema.yaml.update_yaml_file`). The result is
    validated with :func:`edgesense.loop.config.load_config` before the file is replaced."""
    from edgesense.loop.config import load_config
    from edgesense.schema.yaml import update_yaml_file

    path = Path(path)
    load_config(path)  # the file as it is must be valid (a duplicate key is refused here)
    tmp = path.with_name(f".{path.name}.tmp")
    update_yaml_file(path, {"commands.threshold": float(threshold), "commands.suppression_ms": float(suppression_ms)},
                     out=tmp)
    try:
        load_config(tmp)
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(str(exc).replace(str(tmp), str(path))) from None
    tmp.replace(path)
    logger.info("wrote commands.threshold=%g, commands.suppression_ms=%g into %s", threshold, suppression_ms, path)
    return path
