"""Benchmark streaming: the streams of each split, the sweep on the tuning split, the operating
point on the evaluation split, the DET curve and the firmware config.

Splits: *evaluation* = the test speakers of the model's recorded split (the clips the accuracy
section scores), with the **evaluation pool** of the noise and other-speech recordings
(:mod:`edgesense.train.pools`); *tuning* = the validation speakers, with the **training pool** of
the noise and the **tuning pool** of other speech, which trains nothing (the evaluation pool is
never used to choose anything; a model that learned talk as ``_unknown_`` is quiet on the talk it
learned, so that talk cannot choose its threshold; a model that learned none is tuned on the
training and tuning pools together). Each split has a
``commands`` stream, a ``talk`` stream and a ``words`` stream (:mod:`edgesense.bench.streams`).
With ``tuning_only`` (``--tuning-only``) only the tuning split is built and scored: what a change
to the model may be chosen by, without a look at the test speakers or the evaluation pools.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesense.bench.options import BenchOptions
from edgesense.bench.scoring import (
    OperatingPoint,
    Replay,
    SweepOptions,
    best_within,
    calibrate_class_thresholds,
    det_curve,
    evaluate,
    ranked,
    ranked_hit_rate,
    recommend,
    sweep,
)
from edgesense.bench.streams import (
    PosteriorCache,
    StreamOptions,
    StreamPosteriors,
    Utterance,
    build_segments,
    build_stream,
    concat_posteriors,
    utterance,
    word_windows,
)
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.frontend.wav import read_wav
from edgesense.loop.scheduler import SchedulerOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.recognition.gate import speech_span
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.second_opinion import SecondOpinion, SecondOpinionOptions
from edgesense.runtime.speech_embedding import samples_for_embeddings
from edgesense.schema.validate import require
from edgesense.train.config import derived_seed
from edgesense.train.data import phase
from edgesense.train.pools import (
    is_recording,
    speech_negative_pools,
    split_recordings,
    visible_files,
    wav_recordings,
)
from edgesense.types import SILENCE_LABEL, UNKNOWN_LABEL, is_command_word

__all__ = ["SEGMENT_S", "BREAKDOWN_OFFSETS_MS", "ENVELOPE_LEVELS_DBFS", "ENVELOPE_SNRS_DB",
           "TUNING_BUDGETS_PER_HOUR", "StreamingPlan", "WindowDetector", "clip_utterances", "cost_breakdown",
           "level_envelope", "other_speech_utterances", "read_recordings", "recording_pools", "run_streaming",
           "tuning_budgets", "cached_streams"]

logger = logging.getLogger(__name__)

SEGMENT_S = 600.0
_TALK_PART_SEEDS = 500  #: seeds apart between the talk stream's parts (one a segment within a part)
#: Other-speech recordings whose spoken part is longer than this are sentences (talk only);
#: shorter ones are words (talk, the words stream and the commands stream's distractors).
SENTENCE_MIN_S = 2.0
#: Other speech is said in pieces of at most this long (:func:`other_speech_utterances`): well under a stream
#: piece (``SEGMENT_S``, or the talk stream's whole share of a short ``--talk-minutes``).
TALK_PIECE_MAX_S = 30.0
#: Thresholds of the DET curve.
DET_THRESHOLDS = tuple(round(0.2 + 0.02 * k, 2) for k in range(40))  # 0.2 … 0.98
#: The tuning streams' other speech for a model that never learned any: the training and tuning
#: pools together (more talk, so one recording that fires weighs less in the false-accept rate).
TALK_NOT_LEARNED = "training+tuning"
#: The ``--tuning-negatives`` recordings alone (the second part of the tuning talk stream).
TUNING_NEGATIVES_ONLY = "tuning-negatives"
#: The tuning streams' noise pool when ``--tuning-noise`` names one (every recording of it).
TUNING_NOISE = "tuning-noise"
#: The tuning streams' other speech with ``--tuning-negatives`` added: the words stream draws from both, and
#: the talk stream gives each half its time (the pool's own talk is real people's, like the evaluation
#: talk; drawn from all the recordings alike, a few hundred synthesized ones would leave it a few per cent).
TUNING_NEGATIVES = "tuning+tuning-negatives"
#: The streaming-cost breakdown scores each command word this far off the middle of the model's window.
BREAKDOWN_OFFSETS_MS = (0.0, 200.0, 400.0)
#: The level envelope scores each command word, centred, with its spoken part at each of these
#: levels (a quiet talker far off to a loud one close to a hot microphone) …
ENVELOPE_LEVELS_DBFS = (-40.0, -32.0, -24.0, -16.0, -8.0)
#: … over the noise at each of these SNRs (100 dB: no audible noise).
ENVELOPE_SNRS_DB = (100.0, 20.0, 10.0, 5.0)
#: The tuning streams' best hit rate is also reported within each of these false-accept budgets (per
#: hour of talk; the per-100-words budget stays the sweep's), and their mean: a steadier figure to
#: compare models by than the one budget, which the few highest false peaks of talk decide.
TUNING_BUDGETS_PER_HOUR = (0.5, 1.0, 2.0, 5.0)
#: How many of the best settings within the budget the report lists (``sweep_top``).
SWEEP_TOP = 10
#: The firmware's settings before issue 14 (the recognizer re-armed only after a confident silence
#: then), replayed with today's rule, for comparison.
PREVIOUS_FIRMWARE = CommandRecognizerOptions(threshold=0.55, suppression_ms=1500.0, average_window_ms=1000.0,
                                             minimum_count=3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamingPlan:
    """Stream lengths and the sweep, full or ``--quick``."""

    commands_s: dict[str, float]
    talk_s: dict[str, float]
    word_passes: int
    sweep: SweepOptions

    @property
    def hop_ms(self) -> float:
        """Stream time between two scored windows, the device's ``scheduler.command_hop_ms``."""
        return self.sweep.hop_ms

    @classmethod
    def for_options(cls, options: BenchOptions, *, hop_ms: float = SweepOptions.hop_ms) -> "StreamingPlan":
        quick = options.quick
        commands = options.stream_s or (120.0 if quick else 1800.0)
        talk = options.talk_s or (240.0 if quick else 7200.0)
        budget = {name: value for name in ("max_false_accepts_per_hour", "max_false_accepts_per_100_words")
                  if (value := getattr(options, name)) is not None}
        if options.max_latency_p95_ms is not None:
            budget["max_latency_p95_ms"] = options.max_latency_p95_ms or None  # 0: no latency budget
        if options.latency_rule is not None:
            budget["latency_rule"] = options.latency_rule
        sweep_options = SweepOptions(average_windows_ms=(500.0, 1000.0), thresholds=(0.5, 0.7, 0.9),
                                     release_thresholds=(0.3,), minimum_counts=(3,), suppressions_ms=(500.0,),
                                     max_context_unknowns=(1.0, 0.5), hop_ms=hop_ms,
                                     **budget) if quick else SweepOptions(hop_ms=hop_ms, **budget)
        return cls(commands_s={"tuning": max(60.0, commands / 2), "evaluation": commands},
                   talk_s={"tuning": talk, "evaluation": talk}, word_passes=1 if quick else 2, sweep=sweep_options)


# --------------------------------------------------------------------------- material


def clip_utterances(clips: np.ndarray, items: Sequence[Any], sample_rate_hz: int) -> list[Utterance]:
    """One utterance per clip (``items``: their :class:`edgesense.train.data.AudioItem`), silence
    dropped; its source is ``FOLDER/FILE`` (clip names repeat across the word folders of a v2 layout)."""
    return [utterance(clip, item.label, f"{item.path.parent.name}/{item.path.name}", sample_rate_hz,
                      group=item.speaker)
            for clip, item in zip(clips, items) if item.label != SILENCE_LABEL]


def recording_pools(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """The recordings under ``paths`` split by :func:`edgesense.train.pools.split_recordings`."""
    files = wav_recordings(paths)
    return split_recordings(files)


def read_recordings(paths: Sequence[Path], sample_rate_hz: int) -> list[tuple[Path, np.ndarray]]:
    """``(path, samples)`` of each readable recording at ``sample_rate_hz``; an unreadable one is logged and skipped."""
    out = []
    for p in paths:
        try:
            out.append((p, read_wav(p, sample_rate_hz=sample_rate_hz)))
        except (OSError, ValueError) as exc:
            logger.warning("skipping recording %s: %s", p, exc)
    return out


def other_speech_utterances(paths: Sequence[Path], sample_rate_hz: int) -> tuple[list[Utterance], list[Utterance]]:
    """(words, sentences) of other-speech recordings. A recording whose spoken part is longer than
    ``TALK_PIECE_MAX_S`` (one's own talk recorded in one go) is said as consecutive pieces of about equal length, each
    at most that long, all of them named by the recording: a stream places an utterance only where it fits, so a
    recording longer than a stream piece was never said at all, and its talk stream was background alone."""
    words, sentences = [], []
    for p, x in read_recordings(paths, sample_rate_hz):
        source = f"{p.parent.name}/{p.name}"
        u = utterance(x, UNKNOWN_LABEL, source, sample_rate_hz)
        spoken = u.end - u.first
        if spoken <= SENTENCE_MIN_S * sample_rate_hz:
            words.append(u)
            continue
        longest = int(TALK_PIECE_MAX_S * sample_rate_hz)
        if spoken <= longest:
            sentences.append(u)
            continue
        first, end = speech_span(np.asarray(x, np.float64) - np.mean(x), sample_rate_hz)
        bounds = np.linspace(first, end, math.ceil((end - first) / longest) + 1).round().astype(int)
        sentences += [utterance(x[a:b], UNKNOWN_LABEL, source, sample_rate_hz) for a, b in zip(bounds, bounds[1:])]
    return words, sentences


class WindowDetector:
    """The detector the streams run, on single windows: the model's command posteriors on a
    1-s window and, with an enabled ``second_opinion``, their blend with its heads, which also hear
    ``lead_samples`` before the window so that their newest embedding ends where the window ends
    (as at the stream's hop that ends there). The cost breakdown, the level envelopes and the clip
    accuracy the streaming cost is measured from score this, so with a second opinion they describe
    the pair the streams ran, not the model alone."""

    def __init__(self, model: EdgeModel, second_opinion: SecondOpinionOptions | None = None) -> None:
        self.model = model
        self.window_samples = model.audio_frontend.clip_samples
        self.second: SecondOpinion | None = None
        self.lead_samples = 0
        if second_opinion is not None and second_opinion.enabled:
            self.second = SecondOpinion(second_opinion, labels=model.command_labels,
                                        sample_rate_hz=model.audio_frontend.sample_rate_hz,
                                        hop_ms=None)  # one window a push, its mel in one run
            embeddings = self.second.heads.context
            while samples_for_embeddings(embeddings) < self.window_samples:
                embeddings += 1
            self.lead_samples = samples_for_embeddings(embeddings) - self.window_samples

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model.command_labels)

    def scores(self, audio: np.ndarray) -> np.ndarray:
        """``(N, lead_samples + window_samples)`` audio -> ``(N, labels)`` command posteriors, the
        model's on each window (its last ``window_samples``), blended with the heads' on all of it."""
        frontend = self.model.audio_frontend
        out = np.empty((len(audio), len(self.labels)), np.float64)
        for i, x in enumerate(audio):
            window = x[self.lead_samples:]
            command, _ = self.model.fuse(self.model.encode_audio(log_mel_spectrogram(window, frontend)), None)
            if self.second is not None:
                self.second.reset()
                self.second.push(x)
                command = self.second.blend(command)
            out[i] = command
        return out

    def clip_accuracy(self, clips: np.ndarray, labels: Sequence[str]) -> float | None:
        """The share of the command-word clips among ``clips`` (one per label) named right, each
        clip a window with silence before it; ``None`` without any."""
        keep = [k for k, label in enumerate(labels) if is_command_word(label) and label in self.labels]
        if not keep:
            return None
        frontend = self.model.audio_frontend
        audio = np.zeros((len(keep), self.lead_samples + self.window_samples), np.float32)
        for row, k in enumerate(keep):
            audio[row, self.lead_samples:] = fit_clip(clips[k], frontend)
        truth = np.array([self.labels.index(labels[k]) for k in keep])
        return round(float(np.mean(self.scores(audio).argmax(axis=1) == truth)), 4)


def _window_figures(detector: WindowDetector, words: Sequence[Utterance], options: StreamOptions, *,
                    offset_ms: float, noise: Sequence[np.ndarray], recognizer: CommandRecognizerOptions
                    ) -> dict[str, Any]:
    """``words`` (the detector's command words) each in one window (:func:`word_windows`): how many,
    the share named right (``accuracy``) and the share whose own word scores above its threshold in
    ``recognizer`` (``confident``: what the detector can fire on)."""
    labels = list(detector.labels)
    truth = np.array([labels.index(u.label) for u in words], np.int64)
    thresholds = np.array([recognizer.threshold_of(u.label) for u in words])
    windows = word_windows(words, options, window_samples=detector.window_samples, offset_ms=offset_ms, noise=noise,
                           lead_samples=detector.lead_samples)
    scores = detector.scores(windows).reshape(len(words), len(labels))
    own = scores[np.arange(truth.size), truth]
    return {"words": int(truth.size),
            "accuracy": round(float(np.mean(scores.argmax(axis=1) == truth)), 4) if truth.size else None,
            "confident": round(float(np.mean(own > thresholds)), 4) if truth.size else None}


def cost_breakdown(detector: WindowDetector, commands: Sequence[Utterance], options: StreamOptions, *,
                   noise: Sequence[np.ndarray], recognizer: CommandRecognizerOptions) -> list[dict[str, Any]]:
    """Where a stream's hits go: each command word in one 1-s window in the stream's levels and
    noise (:func:`edgesense.bench.streams.word_windows`), at each of ``BREAKDOWN_OFFSETS_MS`` off
    the window's middle; per offset the share named right and the share confident (:func:`_window_figures`)."""
    words = [u for u in commands if u.label in detector.labels]
    return [{"offset_ms": offset_ms, **_window_figures(detector, words, options, offset_ms=offset_ms, noise=noise,
                                                       recognizer=recognizer)}
            for offset_ms in BREAKDOWN_OFFSETS_MS]


def level_envelope(detector: WindowDetector, commands: Sequence[Utterance], options: StreamOptions, *,
                   noise: Sequence[np.ndarray], recognizer: CommandRecognizerOptions) -> list[dict[str, Any]]:
    """Where on the microphone's scale the detector works: each command word, centred in one window,
    with its spoken part at each of ``ENVELOPE_LEVELS_DBFS`` over ``noise`` at each of
    ``ENVELOPE_SNRS_DB``; per level and SNR the share named right and the share confident."""
    words = [u for u in commands if u.label in detector.labels]
    return [{"level_dbfs": level, "snr_db": snr,
             **_window_figures(detector, words, dataclasses.replace(options, speech_level_dbfs=(level, level),
                                                                    snr_db=(snr, snr)),
                               offset_ms=0.0, noise=noise, recognizer=recognizer)}
            for level in ENVELOPE_LEVELS_DBFS for snr in ENVELOPE_SNRS_DB]


def tuning_budgets(points: Sequence[OperatingPoint], options: SweepOptions, *, chosen_on: str) -> dict[str, Any]:
    """The sweep's best hit rate (its setting and that setting's p95 latency) within each of
    ``TUNING_BUDGETS_PER_HOUR`` false accepts per hour, ``options``' per-100-words (and latency)
    budget kept, and the mean of those hit rates (a budget no setting meets counts as 0). Two models
    compare fairly by the mean only at like latencies: a setting that waits longer hears more.
    With a latency budget the main rows cap the p95 (the ``p95`` rule, whichever rule ``options``
    recommends by), ``uncapped`` gives the same without it (where the best settings sit just above
    the budget, a few milliseconds decide the capped figures, and the two side by side show it), and
    ``timely`` the most words detected within that latency (the ``in-time`` rule: a later detection
    a miss): a late word costs its own share, not the whole setting, so this figure moves little
    when a few of the slowest words change."""

    def budgets(sweep: SweepOptions) -> dict[str, Any]:
        rows = []
        for budget in TUNING_BUDGETS_PER_HOUR:
            best = best_within(points, dataclasses.replace(sweep, max_false_accepts_per_hour=budget))
            point = {} if best is None else {**best.to_dict(), "hit_rate": round(ranked_hit_rate(best, sweep), 4)}
            rows.append({"max_false_accepts_per_hour": budget, "hit_rate": point.get("hit_rate"),
                         "false_accepts_per_hour": point.get("false_accepts_per_hour"),
                         "latency_p95_ms": (point.get("latency_ms") or {}).get("p95"),
                         "settings": point.get("settings")})
        return {"budgets": rows, "mean_hit_rate": round(float(np.mean([r["hit_rate"] or 0.0 for r in rows])), 4)}

    out = {"streams": chosen_on, "max_false_accepts_per_100_words": options.max_false_accepts_per_100_words,
           "max_latency_p95_ms": options.max_latency_p95_ms, "latency_rule": options.latency_rule,
           **budgets(dataclasses.replace(options, latency_rule="p95"))}
    if options.max_latency_p95_ms is not None:
        out["uncapped"] = budgets(dataclasses.replace(options, max_latency_p95_ms=None))
        out["timely"] = budgets(dataclasses.replace(options, latency_rule="in-time"))
    return out


# --------------------------------------------------------------------------- streams


def _split_streams(model: EdgeModel, model_sha: str, cache: PosteriorCache, name: str, seed: int,
                   commands: list[Utterance], words: list[Utterance], talk: Sequence[list[Utterance]],
                   noise: list[np.ndarray], plan: StreamingPlan) -> dict[str, tuple[StreamPosteriors, list[str]]]:
    """Each stream kind's posteriors and the cache keys of its segments (the report names them, so a
    study can replay the split's streams from ``cache/`` without the model: :func:`cached_streams`).
    ``words``: the other words, said alone and between commands; ``talk``: the talk stream's parts,
    each given an equal share of its time."""
    sr = model.audio_frontend.sample_rate_hz
    out: dict[str, tuple[StreamPosteriors, list[str]]] = {}

    def run(streams) -> tuple[StreamPosteriors, list[str]]:
        return (concat_posteriors([cache.posteriors(model, model_sha, s, hop_ms=plan.hop_ms) for s in streams]),
                [cache.key(model_sha, s, plan.hop_ms) for s in streams])

    base = StreamOptions(sample_rate_hz=sr, seed=seed)
    if commands:
        out["commands"] = run(build_segments(dataclasses.replace(base, kind="commands",
                                                                 duration_s=plan.commands_s[name]),
                                             SEGMENT_S, commands=commands, others=words, noise=noise))
    else:
        logger.warning("streaming: no command words for the %s split", name)
    parts = [part for part in talk if part]
    if parts:
        share = plan.talk_s[name] / len(parts)
        out["talk"] = run([segment for k, part in enumerate(parts) for segment in build_segments(  # part by part
            dataclasses.replace(base, kind="talk", duration_s=share,
                                seed=derived_seed(seed, 1000 + _TALK_PART_SEEDS * k)),
            SEGMENT_S, others=part, noise=noise)])
    if words:
        out["words"] = run([build_stream(dataclasses.replace(base, kind="words", passes=plan.word_passes,
                                                             seed=derived_seed(seed, 2000)),
                                         others=words, noise=noise)])
    return out


def _minutes(summaries: dict[str, dict[str, Any]]) -> float:
    """The minutes of a split's streams, from their :func:`_summary`'s."""
    return sum(summary["duration_s"] for summary in summaries.values()) / 60.0


def _summary(posteriors: StreamPosteriors) -> dict[str, Any]:
    words = posteriors.words
    return {"duration_s": round(posteriors.duration_ms / 1000.0, 1), "hops": int(posteriors.times_ms.size),
            "command_words": sum(w.is_command for w in words),
            "other_utterances": sum(not w.is_command for w in words),
            "unique_sources": len({w.source for w in words}),
            "speech_s": round(sum(w.end_ms - w.start_ms for w in words) / 1000.0, 1)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FirmwareSetting:
    """A device config's command recognizer and its rates (the streams are scored at its command
    hop; the references are compared at its hops and frames per second), named by the config's
    file name in the report."""

    file: str
    recognizer: CommandRecognizerOptions
    scheduler: SchedulerOptions = SchedulerOptions()
    #: The config's second audio model: with heads, the streams are scored on the blend, as the loop runs it.
    second_opinion: SecondOpinionOptions = SecondOpinionOptions()
    #: The config's second opinion left out on purpose (``bench --model-alone``): the model is scored alone.
    model_alone: bool = False

    @classmethod
    def load(cls, path: Path, *, model_alone: bool = False) -> "FirmwareSetting":
        """``path``'s settings; with ``model_alone``, without its second opinion."""
        from edgesense.loop.config import load_config

        config = load_config(path)
        second = SecondOpinionOptions() if model_alone else config.second_opinion
        heads = second.heads_path
        if heads is not None and not Path(heads).is_file():  # before any stream is scored (and hashed for the cache)
            raise ValueError(f"{path}: second_opinion.heads_path: expected a stream-heads file, {heads} does not exist")
        return cls(file=Path(path).name, recognizer=config.commands, scheduler=config.scheduler,
                   second_opinion=second, model_alone=model_alone)

    @property
    def command_hop_ms(self) -> float:
        return self.scheduler.command_hop_ms

    @property
    def title(self) -> str:
        r = self.recognizer
        alone = ", the model alone" if self.model_alone else ""
        return f"firmware {self.file}{alone} ({r.threshold:g} / {r.suppression_ms:g} ms)"


def cached_streams(bench_dir: str | Path, split: str = "tuning") -> dict[str, StreamPosteriors]:
    """A split's streams as a bench run left them (its ``report.json`` and ``cache/``), by kind.

    Raises ``ValueError`` naming the file when the report has no such split or a segment is missing."""
    bench_dir = Path(bench_dir)
    report_path = bench_dir / "report.json"
    try:
        streams = json.loads(report_path.read_text())["streaming"][f"{split}_streams"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{report_path}: expected a bench report with {split} streams, got "
                         f"{type(exc).__name__}: {exc}") from None
    cache = PosteriorCache(bench_dir / "cache")
    out = {}
    for kind, summary in streams.items():
        keys = summary.get("cache_keys") if isinstance(summary, dict) else None
        require(isinstance(keys, list) and keys, f"{report_path}: streaming.{split}_streams.{kind}.cache_keys",
                "the segments' cache keys (a report of this version of edgesense bench)", keys)
        parts = [cache.load(key) for key in keys]
        missing = [key for key, part in zip(keys, parts) if part is None]
        require(not missing, f"{bench_dir / 'cache'}", f"the cached posteriors of {split} {kind}",
                f"none for {missing[:3]}")
        out[kind] = concat_posteriors(parts)
    return out


def learned_other_speech(model: EdgeModel) -> bool:
    """Whether ``model`` trained on windows of other people's speech (its metadata's
    ``data.other_speech_windows``; models from before there were any have no such field)."""
    data = model.metadata.get("data")
    return bool(isinstance(data, dict) and data.get("other_speech_windows"))


#: The recording flags of the streams (:func:`_require_recordings`).
_RECORDING_FLAGS = {"noise": "--noise", "tuning_noise": "--tuning-noise", "negatives": "--negatives",
                    "tuning_negatives": "--tuning-negatives"}


def _require_recordings(options: BenchOptions) -> None:
    """Refuse a recording flag that names no WAV recording (a folder without any, e.g. of ``.m4a`` files, or a
    file that is none): the streams left it out, so ``--tuning-negatives`` was ignored (its pool named all the
    same), ``--tuning-noise`` replaced the training pool's noise with pink noise, and ``--noise`` or
    ``--negatives`` added nothing, a warning at most said."""
    for name, flag in _RECORDING_FLAGS.items():
        for path in map(Path, getattr(options, name)):
            if path.is_dir():
                if not any(is_recording(f) for f in visible_files(path)):
                    raise ValueError(f"{flag}: expected WAV recordings (NAME.wav) in {path}, got none; convert other "
                                     f"formats first (e.g. ffmpeg -i NAME.m4a NAME.wav)")
            elif not is_recording(path):
                raise ValueError(f"{flag}: expected a WAV recording (NAME.wav), got {path}")


#: Whose command words each split's streams say (:func:`_require_command_words`).
_SPLIT_SPEAKERS = {"tuning": "the validation speakers of the model's split with --split testing, else half the "
                             "speakers by hash; the evaluation streams never choose it",
                   "evaluation": "the test speakers with --split testing, else the speakers the tuning half leaves"}


def _require_command_words(name: str, commands: Sequence[Utterance], said: Sequence[Utterance]) -> None:
    """Refuse, before any stream is built, a split whose speakers say no command word (``said``: every split's
    utterances, to name the speakers there are): without tuning words the operating point was chosen on the
    evaluation streams (their figures flattered, and ``--write-config`` wrote that point); without evaluation
    words no figure was measured and the recommendation (and ``--write-config``) was left out, a warning said.
    Speakers are split, never clips, so a folder of one speaker has one split."""
    if commands:
        return
    speakers = sorted({u.group for u in said if u.is_command})
    shown = ", ".join(speakers[:3]) + (", ..." if len(speakers) > 3 else "")
    raise ValueError(f"--speech-commands: expected command words of the {name} speakers for the {name} streams "
                     f"({_SPLIT_SPEAKERS[name]}), got none (the command words' {len(speakers)} speaker(s): "
                     f"{shown or 'none'}); add speakers, or --no-streaming to score clips only")


def run_streaming(model: EdgeModel, model_sha: str, options: BenchOptions, *, evaluation: Sequence[Utterance],
                  tuning: Sequence[Utterance], noise_paths: Sequence[Path], negative_paths: Sequence[Path],
                  clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                  firmware: FirmwareSetting) -> dict[str, Any]:
    """The streaming section of the report (see the module docstring); ``firmware``: the device
    config whose command hop the streams are scored at (with its second opinion, when it has one),
    and whose own setting is scored on the evaluation streams next to the recommendation;
    ``clips``: the clips of the accuracy section that the evaluation streams say (their speakers'; with
    ``--split all`` not the tuning half's): their command words' accuracy, by the same detector, is what
    the streaming cost is measured from."""
    _require_recordings(options)
    started = time.perf_counter()
    plan = StreamingPlan.for_options(options, hop_ms=firmware.command_hop_ms)
    sr = model.audio_frontend.sample_rate_hz
    noise_pools, speech_pools = recording_pools(noise_paths), speech_negative_pools(wav_recordings(negative_paths))
    # (noise pool, other-speech pool) of each split: the tuning split's talk is talk the model never learned.
    tuning_talk = "tuning" if learned_other_speech(model) else TALK_NOT_LEARNED
    speech_pools[TALK_NOT_LEARNED] = sorted(speech_pools["training"] + speech_pools["tuning"])
    tuning_noise = "training"
    if options.tuning_noise:  # noise no training used, all of it
        tuning_noise = TUNING_NOISE
        noise_pools[TUNING_NOISE] = wav_recordings(options.tuning_noise)
    talk_parts = {"tuning": [tuning_talk], "evaluation": ["evaluation"]}  # each pool a share of the talk stream
    if options.tuning_negatives:  # talk like the device's, beside the tuning pool's reader
        speech_pools[TUNING_NEGATIVES_ONLY] = wav_recordings(options.tuning_negatives)
        talk_parts["tuning"].append(TUNING_NEGATIVES_ONLY)
        speech_pools[TUNING_NEGATIVES] = sorted(speech_pools[tuning_talk] + speech_pools[TUNING_NEGATIVES_ONLY])
        tuning_talk = TUNING_NEGATIVES
    pools_of_split = {"tuning": (tuning_noise, tuning_talk)}
    if not options.tuning_only:
        pools_of_split["evaluation"] = ("evaluation", "evaluation")
    cache = PosteriorCache(options.out_dir / "cache", second_opinion=firmware.second_opinion)
    out: dict[str, Any] = {"hop_ms": plan.hop_ms, "second_opinion": dataclasses.asdict(firmware.second_opinion),
                           "model_alone": firmware.model_alone,
                           "sweep_options": dataclasses.asdict(plan.sweep),
                           "pools": {split: {"pool": noise_pool, "noise": [str(p) for p in noise_pools[noise_pool]],
                                             "other_speech_pool": speech_pool,
                                             "other_speech": len(speech_pools[speech_pool])}
                                     for split, (noise_pool, speech_pool) in pools_of_split.items()}}
    replays: dict[str, dict[str, Replay]] = {}
    # each split's (command words, noise recordings, stream options), for the cost breakdown and level envelopes
    material: dict[str, tuple[list[Utterance], list[np.ndarray], StreamOptions]] = {}
    utterances_of_split = {"tuning": (tuning, derived_seed(options.seed, 101)),
                           "evaluation": (evaluation, derived_seed(options.seed, 202))}
    prepared = {}  # each split's material, every split's checked before any stream is built
    for name, (noise_pool, _) in pools_of_split.items():  # --tuning-only: the evaluation pools unread
        utterances, seed = utterances_of_split[name]
        noise = [x for _, x in read_recordings(noise_pools[noise_pool], sr)]
        if not noise:
            logger.warning("streaming: no %s-pool noise recordings; the %s streams use pink/brown noise", noise_pool,
                           name)
        parts = [other_speech_utterances(speech_pools[part], sr) for part in talk_parts[name]]
        commands = [u for u in utterances if u.is_command]
        others = [u for u in utterances if not u.is_command]  # the split's speakers' other words, in the first part
        words = [u for part_words, _ in parts for u in part_words] + others
        talk = {pool: part_words + (others if k == 0 else []) + sentences
                for k, (pool, (part_words, sentences)) in enumerate(zip(talk_parts[name], parts))}
        talk = {pool: part for pool, part in talk.items() if part}
        if not talk:  # no talk and no other words: every setting would read 0 false accepts, the loosest best
            raise ValueError(f"--negatives: expected other speech for the {name} streams' false accepts (talk or "
                             f"other words: a folder of them, or _unknown_ clips of the {name} speakers in "
                             f"--speech-commands), got none; pass --negatives DIR, or --no-streaming to score clips "
                             f"only")
        _require_command_words(name, commands, [*tuning, *evaluation])
        prepared[name] = (seed, commands, words, talk, noise)
    for name, (seed, commands, words, talk, noise) in prepared.items():
        out["pools"][name]["talk_shares"] = {pool: round(1 / len(talk), 4) for pool in talk}
        streams = _split_streams(model, model_sha, cache, name, seed, commands, words, list(talk.values()), noise,
                                 plan)
        material[name] = (commands, noise, StreamOptions(sample_rate_hz=sr, seed=seed))
        replays[name] = {kind: Replay(p) for kind, (p, _) in streams.items()}
        out[f"{name}_streams"] = {kind: {**_summary(p), "cache_keys": keys} for kind, (p, keys) in streams.items()}
    out["posteriors_s"] = round(time.perf_counter() - started, 1)
    eval_replays = replays.get("evaluation", {})
    tuned_on = "tuning"  # never the evaluation streams (_require_command_words)
    chosen_from = replays[tuned_on]
    with phase(logger, "streaming: sweeping the detector's settings over the %s streams (%.1f min)", tuned_on,
               _minutes(out[f"{tuned_on}_streams"])):
        points = sweep(chosen_from, plan.sweep)
        best, missed = recommend(points, plan.sweep)
        in_budget = missed is None
        recommended = best.options
        per_word = calibrate_class_thresholds(chosen_from, recommended, plan.sweep)
        if options.class_thresholds:
            recommended = per_word
        match = plan.sweep.match_tolerance_ms
        tuned = evaluate(chosen_from, recommended, match_tolerance_ms=match).to_dict()
    tune_commands, tune_noise, tune_options = material["tuning"]
    detector = WindowDetector(model, firmware.second_opinion)
    with phase(logger, "streaming: level envelope of the %d %s command words (%d levels)", len(tune_commands),
               tuned_on, len(ENVELOPE_LEVELS_DBFS) * len(ENVELOPE_SNRS_DB)):
        envelope_tuning = level_envelope(detector, tune_commands, tune_options, noise=tune_noise,
                                         recognizer=recommended)
    out.update({
        "recommended": {"settings": tuned["settings"], "chosen_on": tuned_on, "within_budget_on_tuning": in_budget,
                        "budget_missed": missed, "tuning": tuned},
        # the tuning streams' words (validation speakers): what a change to the model may be chosen by
        "level_envelope_tuning": envelope_tuning,
        "tuning_budgets": tuning_budgets(points, plan.sweep, chosen_on=tuned_on),
        "sweep_points": len(points),
        "sweep_top": [p.to_dict() for p in ranked(points, plan.sweep)[:SWEEP_TOP]],
        "det": {"tuning": det_curve(chosen_from, recommended, DET_THRESHOLDS, match_tolerance_ms=match)},
    })
    if options.tuning_only:
        out["elapsed_s"] = round(time.perf_counter() - started, 1)
        return out
    with phase(logger, "streaming: scoring 5 settings on the evaluation streams (%.1f min)",
               _minutes(out["evaluation_streams"])):
        at = {
            "recommended": evaluate(eval_replays, recommended, match_tolerance_ms=match),
            "one_threshold": evaluate(eval_replays, best.options, match_tolerance_ms=match),
            "class_thresholds": evaluate(eval_replays, per_word, match_tolerance_ms=match),
            "previous_firmware": evaluate(eval_replays, PREVIOUS_FIRMWARE, match_tolerance_ms=match),
            "firmware_config": evaluate(eval_replays, firmware.recognizer, match_tolerance_ms=match),
        }
    hit_rate = at["recommended"].hit_rate
    eval_commands, eval_noise, eval_options = material["evaluation"]
    with phase(logger, "streaming: the evaluation command words alone: clip accuracy, cost breakdown (%d offsets) "
               "and level envelope (%d levels) of %d words", len(BREAKDOWN_OFFSETS_MS),
               len(ENVELOPE_LEVELS_DBFS) * len(ENVELOPE_SNRS_DB), len(eval_commands)):
        clip_accuracy = None if clips is None or clip_labels is None else detector.clip_accuracy(clips, clip_labels)
        breakdown = cost_breakdown(detector, eval_commands, eval_options, noise=eval_noise, recognizer=recommended)
        envelope = level_envelope(detector, eval_commands, eval_options, noise=eval_noise, recognizer=recommended)
    out.update({
        "evaluation": {k: p.to_dict() for k, p in at.items()},
        "firmware_config": {"file": firmware.file, "title": firmware.title},
        "clip_accuracy_commands": clip_accuracy,
        "streaming_cost_points": None if clip_accuracy is None else round(100 * (clip_accuracy - hit_rate), 2),
        "cost_breakdown": breakdown,
        "level_envelope": envelope,
        "det": {"evaluation": det_curve(eval_replays, recommended, DET_THRESHOLDS, match_tolerance_ms=match),
                **out["det"]},
    })
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out
