"""Streams for the streaming keyword-spotting evaluation: utterances placed at known times over
real backgrounds, and the model's per-hop posteriors on them (cached).

Three kinds of stream (:func:`build_stream`), each a plan of utterances with a gap before each
one, mixed over background noise and music:

* ``commands``: command words of unseen speakers among other words (``_unknown_`` clips and other
  people's wake words), 1.5–4 s apart, some only 0.2–0.6 s apart ("… stop, go …") and some
  repeated by the same speaker ("stop … stop"): hit rate, latency, substitutions.
* ``talk``: continuous talk without any command word (read sentences, other wake words, unknown
  words, 0.1–0.8 s pauses, sometimes a 3–10 s stretch of background alone): false accepts per hour.
* ``words``: other words said one at a time (every one, ``passes`` times): false accepts per 100 words.

Each utterance's spoken part (:func:`speech_span`) is scaled to an RMS level drawn from
``speech_level_dbfs`` (−32…−16 dBFS) and the background under it to that level minus an SNR drawn
from ``snr_db`` (5–20 dB); the background level changes in the gap before each utterance (a
200 ms ramp). Backgrounds are 10 s pieces of the noise and music recordings at random offsets
(50 ms crossfades), or pink/brown noise when there are none; a background's level is its RMS over
its piece, so an uneven recording (music) is louder or quieter than that right under a word.

Placing is cheap; :meth:`Stream.render` mixes the audio only when the posteriors are not in the
:class:`PosteriorCache` (keyed by model, stream fingerprint and hop), so a re-run or a new sweep
neither mixes nor runs the model again. Long streams are built as ``segment_s`` pieces
(:func:`build_segments`), and a stream (a ``words`` stream is one piece, as long as its words need: hours for
a large set) is mixed and scored a minute at a time (:meth:`Stream.blocks`), so that no more than a few
minutes of audio is in memory at once.

Pure numpy plus ``edge``: runs on the device as well as the desktop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions, StreamingAudioFrontend
from edgesense.loop.scheduler import SchedulerOptions
from edgesense.loop.stats import SECOND_OPINION_EMBEDDING, SECOND_OPINION_HEADS, SECOND_OPINION_STAGES
from edgesense.recognition.gate import speech_span
from edgesense.runtime import speech_embedding
from edgesense.runtime.second_opinion import SecondOpinion, SecondOpinionOptions
from edgesense.schema.validate import is_number, require, require_kinds, require_range
from edgesense.train.cache import file_sha256, replace_files
from edgesense.train.config import derived_seed
from edgesense.train.data import phase
from edgesense.train.teachers.speech_embedding import models_sha256
from edgesense.types import is_command_word

__all__ = ["Utterance", "PlacedWord", "StreamOptions", "Stream", "StreamAudio", "StreamPosteriors", "PosteriorCache",
           "MIN_STREAM_S", "MAX_STREAM_S", "STREAM_KINDS", "speech_span", "utterance", "build_stream", "build_segments",
           "word_windows", "stream_posteriors", "concat_posteriors", "speech_embedding_identity"]

logger = logging.getLogger(__name__)


_MS_PER_S = 1000.0
#: Audio kept before and after an utterance's spoken part (faded in and out).
UTTERANCE_MARGIN_MS = 100.0
_FADE_MS = 20.0
#: Backgrounds are cut into pieces this long, joined with crossfades of _CROSSFADE_MS.
_BACKGROUND_PIECE_S = 10.0
_CROSSFADE_MS = 50.0
#: The background level moves to the next utterance's level over this long (in the gap before it).
_LEVEL_RAMP_MS = 200.0
#: The background's level is applied this much of the stream at a time (:meth:`Stream.render`).
_LEVEL_PASS_S = 60.0
_EPS = 1e-12
#: A second opinion's key part when the speech-embedding wheel is missing (see :class:`PosteriorCache`).
_SPEECH_EMBEDDING_MISSING = "speech-embedding-missing"

#: The shortest stream (and stream piece) there is, in seconds.
MIN_STREAM_S = 10.0
#: The longest ``commands`` or ``talk`` stream, in seconds: a week (336 times the default half hour, far past any
#: benchmark's: its posteriors are computed hop by hop, days of work on a desktop). A longer one (1e30 s) was built
#: piece by piece for ever.
MAX_STREAM_S = 7 * 24 * 3600.0

STREAM_KINDS = ("commands", "talk", "words")
StreamKind = Literal["commands", "talk", "words"]


def _check_fraction(name: str, value: Any) -> None:
    require(is_number(value) and 0 <= value < 1, name, "a number in [0, 1)", value)


# --------------------------------------------------------------------------- utterances


@dataclass(frozen=True, eq=False)
class Utterance:
    """One recording's spoken part with ``UTTERANCE_MARGIN_MS`` around it (faded), float32;
    ``first``/``end``: the spoken part inside ``samples``. ``label``: a command word, or
    ``_unknown_`` for any other speech. ``group``: what a repeat may be drawn from (a speaker)."""

    samples: np.ndarray
    first: int
    end: int
    label: str
    source: str
    group: str = ""

    @property
    def is_command(self) -> bool:
        return is_command_word(self.label)


def utterance(clip: np.ndarray, label: str, source: str, sample_rate_hz: int, *, group: str = "") -> Utterance:
    """The spoken part of ``clip`` (:func:`speech_span`) with its margins, the DC removed."""
    x = np.asarray(clip, dtype=np.float64)
    x = x - x.mean()
    first, end = speech_span(x, sample_rate_hz)
    margin = int(round(sample_rate_hz * UTTERANCE_MARGIN_MS / _MS_PER_S))
    lo, hi = max(0, first - margin), min(x.size, end + margin)
    piece = x[lo:hi].copy()
    fade = min(int(round(sample_rate_hz * _FADE_MS / _MS_PER_S)), piece.size // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
    return Utterance(samples=piece.astype(np.float32), first=first - lo, end=end - lo, label=label, source=source,
                     group=group)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How to assemble a stream (see the module docstring); fields a kind does not use are ignored.

    ``gap_s``: silence between one spoken part and the next; ``close_fraction`` of the gaps
    (``commands``) are ``close_gap_s`` instead; after ``repeat_fraction`` of the command words the
    same speaker says the same word again after ``close_gap_s``. ``other_fraction``: share of
    ``commands`` placements that are other words. ``talk`` uses ``pause_s``, and
    ``long_pause_fraction`` of its pauses are ``long_pause_s`` of background alone. ``words``
    places every other word ``passes`` times (shuffled each pass)."""

    kind: StreamKind = "commands"
    duration_s: float = 1800.0
    sample_rate_hz: int = 16000
    speech_level_dbfs: tuple[float, float] = (-32.0, -16.0)
    snr_db: tuple[float, float] = (5.0, 20.0)
    gap_s: tuple[float, float] = (1.5, 4.0)
    close_fraction: float = 0.2
    close_gap_s: tuple[float, float] = (0.2, 0.6)
    repeat_fraction: float = 0.15
    other_fraction: float = 1.0 / 3.0
    pause_s: tuple[float, float] = (0.1, 0.8)
    long_pause_fraction: float = 0.1
    long_pause_s: tuple[float, float] = (3.0, 10.0)
    passes: int = 2
    lead_in_s: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.kind in STREAM_KINDS, "kind", f"one of {', '.join(STREAM_KINDS)}", self.kind)
        require(is_number(self.duration_s) and MIN_STREAM_S <= self.duration_s <= MAX_STREAM_S, "duration_s",
                f"a number in [{MIN_STREAM_S:g}, {MAX_STREAM_S:g}] (s)", self.duration_s)
        require(isinstance(self.sample_rate_hz, int) and self.sample_rate_hz > 0, "sample_rate_hz",
                "a positive integer", self.sample_rate_hz)
        require_range("speech_level_dbfs", self.speech_level_dbfs, -100.0, 0.0)
        require_range("snr_db", self.snr_db, -20.0, 100.0)
        for name in ("gap_s", "close_gap_s", "pause_s", "long_pause_s"):
            require_range(name, getattr(self, name), 0.0, 600.0)
        for name in ("close_fraction", "repeat_fraction", "other_fraction", "long_pause_fraction"):
            _check_fraction(name, getattr(self, name))
        require(isinstance(self.passes, int) and self.passes >= 1, "passes", "an integer >= 1", self.passes)
        require(is_number(self.lead_in_s) and self.lead_in_s >= 0, "lead_in_s", "a number >= 0", self.lead_in_s)
        require(isinstance(self.seed, int), "seed", "an integer", self.seed)


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class PlacedWord:
    """An utterance in a stream: ``start_ms``/``end_ms`` of its spoken part."""

    label: str
    start_ms: float
    end_ms: float
    is_command: bool
    source: str = ""

    def to_list(self) -> list[Any]:
        return [self.label, self.start_ms, self.end_ms, self.is_command, self.source]

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> "PlacedWord":
        label, start, end, is_command, source = row
        return cls(label=str(label), start_ms=float(start), end_ms=float(end), is_command=bool(is_command),
                   source=str(source))


@dataclass(frozen=True, eq=False)
class _Placement:
    utterance: Utterance
    start: int  # sample of utterance.samples[0] in the stream
    gain: float
    background_db: float


class Stream:
    """Placed utterances and how to mix them; :meth:`render` makes the audio (float32)."""

    def __init__(self, *, options: StreamOptions, total: int, placements: Sequence[_Placement],
                 noise: Sequence[np.ndarray], fingerprint: str) -> None:
        self.options = options
        self.sample_rate_hz = options.sample_rate_hz
        self.total = total
        self._placements = tuple(placements)
        self._noise = tuple(noise)
        self.fingerprint = fingerprint
        sr = self.sample_rate_hz
        self.words = tuple(PlacedWord(label=p.utterance.label, start_ms=(p.start + p.utterance.first) * _MS_PER_S / sr,
                                      end_ms=(p.start + p.utterance.end) * _MS_PER_S / sr,
                                      is_command=p.utterance.is_command, source=p.utterance.source)
                           for p in self._placements)

    @property
    def duration_ms(self) -> float:
        return self.total * _MS_PER_S / self.sample_rate_hz

    def summary(self) -> dict[str, Any]:
        commands = sum(w.is_command for w in self.words)
        speech_ms = sum(w.end_ms - w.start_ms for w in self.words)
        return {"kind": self.options.kind, "duration_s": round(self.duration_ms / _MS_PER_S, 1),
                "command_words": commands, "other_utterances": len(self.words) - commands,
                "speech_s": round(speech_ms / _MS_PER_S, 1), "fingerprint": self.fingerprint}

    def _level_knots(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(sample, dB)`` knots of the background level: each placement's level, ramped in the gap before it
        (None without placements)."""
        if not self._placements:
            return None
        ramp = int(round(self.sample_rate_hz * _LEVEL_RAMP_MS / _MS_PER_S))
        knots_x, knots_y = [0.0], [self._placements[0].background_db]
        previous_end = 0
        for p in self._placements:
            spoken = p.start + p.utterance.first
            mid = (previous_end + spoken) / 2
            half = min(ramp, max(1, spoken - previous_end)) / 2
            knots_x += [mid - half, mid + half]
            knots_y += [knots_y[-1], p.background_db]
            previous_end = p.start + p.utterance.end
        knots_x.append(float(self.total))
        knots_y.append(knots_y[-1])
        return np.asarray(knots_x, np.float64), np.asarray(knots_y, np.float64)

    def _level_envelope_db(self, knots: tuple[np.ndarray, np.ndarray] | None, first: int, end: int) -> np.ndarray:
        """Background level (dB) of samples ``first`` to ``end`` (:meth:`_level_knots`)."""
        if knots is None:
            return np.full(end - first, float(np.mean(self.options.speech_level_dbfs) - np.mean(self.options.snr_db)),
                           np.float32)
        return np.interp(np.arange(first, end, dtype=np.float64), *knots).astype(np.float32)

    def render(self) -> np.ndarray:
        """The stream's samples, float32 in [-1, 1] (the same every time): :meth:`blocks` end to end."""
        samples = np.empty(self.total, np.float32)
        first = 0
        for block in self.blocks():
            samples[first:first + block.size] = block
            first += block.size
        return samples

    def blocks(self) -> "StreamAudio":
        """The stream's samples ``_LEVEL_PASS_S`` at a time (:class:`StreamAudio`), as :meth:`render` gives them."""
        return StreamAudio(self)

    def _render_blocks(self) -> Iterator[np.ndarray]:
        """:meth:`blocks`: each block mixed on its own (the background's level, the utterances in it, clipped); a
        background piece or an utterance across a block's end goes on in the next block."""
        rng = np.random.default_rng([self.options.seed, 2])
        # the level a stretch at a time: the envelope of a whole stream (a words stream of a large set's other
        # words runs for hours) in float64 would be several times the samples' own size
        knots, step = self._level_knots(), int(round(_LEVEL_PASS_S * self.sample_rate_hz))
        starts = np.array([p.start for p in self._placements], np.int64)
        ends = starts + np.array([p.utterance.samples.size for p in self._placements], np.int64)
        background = _background_blocks(self.total, self._noise, rng, self.sample_rate_hz, step)
        for first, samples in zip(range(0, self.total, step), background):
            end = first + samples.size
            samples *= np.power(np.float32(10.0), self._level_envelope_db(knots, first, end) / np.float32(20.0))
            for i in np.flatnonzero((starts < end) & (ends > first)):  # in stream order
                p = self._placements[int(i)]
                lo, hi = max(first, p.start), min(end, p.start + p.utterance.samples.size)
                samples[lo - first:hi - first] += p.utterance.samples[lo - p.start:hi - p.start] * np.float32(p.gain)
            np.clip(samples, -1.0, 1.0, out=samples)
            yield samples


class StreamAudio:
    """A stream's samples a block at a time, so that a stream of hours (a words stream of a large set's other
    words: 25 h, 5.8 GB of float32, for the full Speech Commands) is never in memory at once: iterating it mixes
    one block after the other (each float32, ``_LEVEL_PASS_S`` long, the last shorter); ``size`` is their total.
    ``np.asarray`` of it renders it whole (:meth:`Stream.render`), for a scorer that takes an array."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.size = stream.total

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._stream._render_blocks()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        samples = self._stream.render()
        return samples if dtype is None else samples.astype(dtype, copy=False)


def _coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n=n)
    return x / (np.sqrt(np.mean(x ** 2)) + _EPS)


def _background(n: int, noise: Sequence[np.ndarray], rng: np.random.Generator, sample_rate_hz: int) -> np.ndarray:
    """Unit-RMS float32 background: 10 s pieces of the recordings at random offsets, crossfaded
    (pink or brown noise when there are none)."""
    return next(_background_blocks(n, noise, rng, sample_rate_hz, max(n, 1)), np.zeros(0, np.float32))


def _background_blocks(n: int, noise: Sequence[np.ndarray], rng: np.random.Generator, sample_rate_hz: int,
                       block: int) -> Iterator[np.ndarray]:
    """:func:`_background`'s ``n`` samples ``block`` at a time (the last block shorter), the same values whatever
    ``block``: a piece across a block's end is kept, as the crossfade with it, for the next block."""
    piece_len = int(round(_BACKGROUND_PIECE_S * sample_rate_hz))
    fade = int(round(_CROSSFADE_MS * sample_rate_hz / _MS_PER_S))
    pool = [np.asarray(r, dtype=np.float32) for r in noise if np.asarray(r).size > fade * 2]
    fade_in = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    spill = np.zeros(0, np.float32)  # what the last block's pieces wrote past its end
    pieces = iter(range(0, n, piece_len))
    start = next(pieces, n)
    for first in range(0, n, block):
        end = min(first + block, n)
        out = np.zeros(min(end + piece_len + fade, n) - first, dtype=np.float32)
        out[:spill.size] = spill
        while start < end:
            length = min(piece_len + fade, n - start)
            if pool:
                rec = pool[int(rng.integers(len(pool)))]
                offset = int(rng.integers(0, rec.size))
                piece = rec[(offset + np.arange(length)) % rec.size].astype(np.float64)  # wraps around its end
            else:
                piece = _coloured_noise(length, rng, float(rng.choice([1.0, 2.0])))
            piece = piece - piece.mean()
            piece = (piece / (np.sqrt(np.mean(piece ** 2)) + _EPS)).astype(np.float32)
            at = start - first
            if start > 0:  # the crossfade, shortened when the last piece is shorter than it
                overlap = min(fade, length)
                piece[:overlap] *= fade_in[:overlap]
                out[at:at + overlap] *= fade_in[::-1][:overlap]
            out[at:at + length] += piece
            start = next(pieces, n)
        spill = out[end - first:].copy()
        yield out[:end - first]


def _fingerprint(parts: Iterable[Any]) -> str:
    """A key for ``parts``: arrays by every byte, wherever they sit in lists and tuples (their ``repr`` shows numpy's
    first and last three values of a long array only, so a recording changed in its middle kept its key and the
    posterior cache served the old stream's scores); anything else by its ``repr``."""
    h = hashlib.sha1()

    def add(part: Any) -> None:
        if isinstance(part, np.ndarray):
            h.update(f"array {part.dtype.str} {part.shape}:".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (list, tuple)):
            h.update(f"{type(part).__name__} {len(part)}:".encode())
            for item in part:
                add(item)
        else:
            h.update(f"{repr(part)};".encode("utf-8"))

    for part in parts:
        add(part)
    return h.hexdigest()[:16]


def _cycle(items: Sequence[Any], rng: np.random.Generator) -> Iterator[Any]:
    """The items in a new shuffled order on each pass, forever."""
    while True:
        for i in rng.permutation(len(items)):
            yield items[int(i)]


def _plan(options: StreamOptions, commands: Sequence[Utterance], others: Sequence[Utterance],
          rng: np.random.Generator) -> Iterator[tuple[Utterance, float]]:
    """(utterance, gap before its spoken part in s), in stream order."""
    o = options
    if o.kind == "words":
        for _ in range(o.passes):
            for i in rng.permutation(len(others)):
                yield others[int(i)], float(rng.uniform(*o.gap_s))
        return
    if o.kind == "talk":
        for u in _cycle(others, rng):
            long = rng.random() < o.long_pause_fraction
            yield u, float(rng.uniform(*(o.long_pause_s if long else o.pause_s)))
    by_group: dict[tuple[str, str], list[Utterance]] = {}
    for u in commands:
        by_group.setdefault((u.group, u.label), []).append(u)
    next_command, next_other = _cycle(commands, rng), (_cycle(others, rng) if others else None)
    while True:
        gap = float(rng.uniform(*(o.close_gap_s if rng.random() < o.close_fraction else o.gap_s)))
        if next_other is not None and rng.random() < o.other_fraction:
            yield next(next_other), gap
            continue
        u = next(next_command)
        yield u, gap
        if rng.random() < o.repeat_fraction:
            same = by_group[(u.group, u.label)]
            again = [v for v in same if v is not u] or same
            yield again[int(rng.integers(len(again)))], float(rng.uniform(*o.close_gap_s))


def _draw_levels(u: Utterance, options: StreamOptions, rng: np.random.Generator) -> tuple[float, float]:
    """(gain that brings ``u``'s spoken part to a level drawn from ``speech_level_dbfs``, the
    background's level in dBFS: that level minus an SNR drawn from ``snr_db``)."""
    spoken = u.samples[u.first:u.end].astype(np.float64)
    rms = float(np.sqrt(np.mean(spoken ** 2))) + _EPS
    level = float(rng.uniform(*options.speech_level_dbfs))
    return 10 ** (level / 20) / rms, level - float(rng.uniform(*options.snr_db))


def build_stream(options: StreamOptions, *, commands: Sequence[Utterance] = (), others: Sequence[Utterance] = (),
                 noise: Sequence[np.ndarray] = ()) -> Stream:
    """Place ``commands`` and ``others`` (see :class:`StreamOptions`) over ``noise`` recordings.

    ``commands`` streams need command words; ``talk`` and ``words`` streams need other speech and
    must not be given command words. A ``words`` stream lasts as long as its words need (its
    ``duration_s`` is ignored); the others are cut at ``duration_s`` (the last utterance that
    does not fit is dropped)."""
    commands, others = list(commands), list(others)
    require(all(u.is_command for u in commands), "commands", "command words only",
            sorted({u.label for u in commands if not u.is_command}))
    require(not any(u.is_command for u in others), "others", "no command words",
            sorted({u.label for u in others if u.is_command}))
    if options.kind == "commands":
        require(len(commands) > 0, "commands", "at least one command word for a 'commands' stream", 0)
    else:
        require(len(others) > 0, "others", f"other speech for a '{options.kind}' stream", 0)
    sr = options.sample_rate_hz
    rng = np.random.default_rng([options.seed, 1])
    limit = None if options.kind == "words" else int(round(options.duration_s * sr))
    placements: list[_Placement] = []
    spoken_end = int(round(options.lead_in_s * sr))
    for u, gap_s in _plan(options, commands, others, rng):
        spoken_start = spoken_end + int(round(gap_s * sr))
        start = max(0, spoken_start - u.first)
        if limit is not None and start + u.samples.size > limit:
            break
        gain, background_db = _draw_levels(u, options, rng)
        placements.append(_Placement(utterance=u, start=start, gain=gain, background_db=background_db))
        spoken_end = start + u.end
    total = limit if limit is not None else spoken_end + int(round(max(options.gap_s) * sr))
    fingerprint = _fingerprint([asdict(options), total,
                                [(u.source, u.label, u.samples) for u in commands + others],
                                [np.asarray(n) for n in noise]])
    stream = Stream(options=options, total=total, placements=placements, noise=noise, fingerprint=fingerprint)
    logger.info("%s stream: %.1f min, %d command words, %d other utterances", options.kind, total / sr / 60,
                sum(w.is_command for w in stream.words), sum(not w.is_command for w in stream.words))
    return stream


def build_segments(options: StreamOptions, segment_s: float, **kwargs: Any) -> list[Stream]:
    """A ``commands`` or ``talk`` stream of ``options.duration_s`` as independent pieces of at most
    ``segment_s`` (seeds ``seed``, ``seed + 1``, …, wrapped into the seed range: :func:`derived_seed`), so that
    only one piece is in memory at a time."""
    require(options.kind != "words", "kind", "'commands' or 'talk' (a words stream is one piece)", options.kind)
    require(is_number(segment_s) and segment_s >= MIN_STREAM_S, "segment_s", f"a number >= {MIN_STREAM_S:g}",
            segment_s)
    count = max(1, math.ceil(options.duration_s / segment_s - 1e-9))
    length = options.duration_s / count
    return [build_stream(dataclasses.replace(options, duration_s=length, seed=derived_seed(options.seed, k)), **kwargs)
            for k in range(count)]


def word_windows(utterances: Sequence[Utterance], options: StreamOptions, *, window_samples: int,
                 offset_ms: float = 0.0, noise: Sequence[np.ndarray] = (), lead_samples: int = 0) -> np.ndarray:
    """One window of ``window_samples`` per utterance as a stream holds it: the spoken part at the
    level and SNR :func:`build_stream` would draw, over a piece of ``noise`` (pink or brown noise
    when there is none), the middle of the spoken part ``offset_ms`` before or after the window's
    middle (the side drawn), and ``lead_samples`` of the same background before the window (for a
    detector that also listens further back). ``(len(utterances), lead_samples + window_samples)``
    float32 in [-1, 1]; the same for the same ``options.seed``, ``offset_ms`` and ``lead_samples``."""
    require(isinstance(window_samples, int) and window_samples >= 1, "window_samples", "a positive integer",
            window_samples)
    require(isinstance(lead_samples, int) and lead_samples >= 0, "lead_samples", "an integer >= 0", lead_samples)
    require(is_number(offset_ms) and offset_ms >= 0, "offset_ms", "a number >= 0", offset_ms)
    sr = options.sample_rate_hz
    rng = np.random.default_rng([options.seed, 3, int(round(offset_ms))])
    shift = int(round(sr * offset_ms / _MS_PER_S))
    total = lead_samples + window_samples
    out = np.empty((len(utterances), total), np.float32)
    for i, u in enumerate(utterances):
        gain, background_db = _draw_levels(u, options, rng)
        x = _background(total, noise, rng, sr) * np.float32(10 ** (background_db / 20))
        side = 1 if rng.random() < 0.5 else -1
        start = lead_samples + window_samples // 2 - (u.first + u.end) // 2 + side * shift
        lo, hi = max(0, start), min(total, start + u.samples.size)
        if lo < hi:
            x[lo:hi] += u.samples[lo - start:hi - start] * np.float32(gain)
        out[i] = np.clip(x, -1.0, 1.0)
    return out


# --------------------------------------------------------------------------- posteriors


@dataclass(frozen=True)
class StreamPosteriors:
    """Command posteriors for each hop: ``times_ms`` (H,) stream time of the hop's last sample,
    ``posteriors`` (H, C) float32, the placed ``words`` and the stream's ``duration_ms``."""

    times_ms: np.ndarray
    posteriors: np.ndarray
    labels: tuple[str, ...]
    hop_ms: float
    words: tuple[PlacedWord, ...] = ()
    duration_ms: float = 0.0
    timings_ms: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def hours(self) -> float:
        return self.duration_ms / (_MS_PER_S * 3600.0)


def _hops(blocks: Iterable[np.ndarray], hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(end sample, the ``hop`` samples before it) of each whole hop of ``blocks`` end to end: a hop across a
    block's end is the same samples as in one array."""
    done, rest = 0, np.zeros(0, np.float32)
    for block in blocks:
        x = np.concatenate([rest, block]) if rest.size else block
        whole = x.size - x.size % hop
        for start in range(0, whole, hop):
            yield done + start + hop, x[start:start + hop]
        done, rest = done + whole, x[whole:].copy()


def stream_posteriors(model: Any, samples: np.ndarray | StreamAudio, *,
                      hop_ms: float = SchedulerOptions.command_hop_ms,
                      frontend: AudioFrontendOptions | None = None, progress: bool = True,
                      second_opinion: SecondOpinionOptions | None = None) -> StreamPosteriors:
    """Run ``model`` (an :class:`edgesense.runtime.model.EdgeModel`) over a stream as the device does:
    push ``hop_ms`` of audio into :class:`StreamingAudioFrontend`, and once a clip's worth of
    frames exists, run ``encode_audio`` on the latest ``frames_per_clip`` frames and
    ``fuse(audio, None)`` (camera absent). With an enabled ``second_opinion``, the same audio also
    goes to :class:`SecondOpinion` and each hop's posteriors are its blend; hops before its heads
    have their context have no result, as in the device loop. ``samples``: an array, or a stream's
    :meth:`Stream.blocks` (the same posteriors, one block of audio in memory at a time)."""
    frontend = frontend or model.audio_frontend
    require(is_number(hop_ms) and hop_ms > 0, "hop_ms", "a positive number", hop_ms)
    hop = int(round(frontend.sample_rate_hz * hop_ms / _MS_PER_S))
    require(hop >= 1, "hop_ms", "at least one sample", hop_ms)
    second = None  # loaded after the cheap checks
    if second_opinion is not None and second_opinion.enabled:
        second = SecondOpinion(second_opinion, labels=model.command_labels, sample_rate_hz=frontend.sample_rate_hz,
                               hop_ms=hop_ms)
    streaming = StreamingAudioFrontend(frontend)
    frames_needed, bins = frontend.feature_shape
    window = np.zeros((0, bins), np.float32)
    times, posts = [], []
    timings: dict[str, list[float]] = {"audio_frontend": [], "audio_encoder": [], "fusion": []}
    if second is not None:
        timings.update({stage: [] for stage in SECOND_OPINION_STAGES})
    blocks = samples if isinstance(samples, StreamAudio) else [np.asarray(samples, dtype=np.float32)]
    total = int(blocks.size if isinstance(blocks, StreamAudio) else blocks[0].size)
    iterator: Iterable[tuple[int, np.ndarray]] = _hops(blocks, hop)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="streaming posteriors", unit="hop", leave=False, disable=None,
                        total=max(0, total // hop))
    for end, chunk in iterator:
        t0 = time.perf_counter()
        new = streaming.push(chunk)
        window = np.concatenate([window, new])[-frames_needed:]
        t1 = time.perf_counter()
        frontend_s = t1 - t0
        if second is not None:
            second.push(chunk)
        second_s = time.perf_counter() - t1
        if window.shape[0] < frames_needed or (second is not None and not second.ready):
            continue
        t1 = time.perf_counter()
        embedding = model.encode_audio(window)
        t2 = time.perf_counter()
        command, _ = model.fuse(embedding, None)
        t3 = time.perf_counter()
        if second is not None:
            command = second.blend(command)
            timings[SECOND_OPINION_EMBEDDING].append(second_s * _MS_PER_S)
            timings[SECOND_OPINION_HEADS].append((time.perf_counter() - t3) * _MS_PER_S)
        times.append(end * _MS_PER_S / frontend.sample_rate_hz)
        posts.append(np.asarray(command, np.float32))
        timings["audio_frontend"].append(frontend_s * _MS_PER_S)
        timings["audio_encoder"].append((t2 - t1) * _MS_PER_S)
        timings["fusion"].append((t3 - t2) * _MS_PER_S)
    labels = tuple(model.command_labels)
    posteriors = np.stack(posts) if posts else np.zeros((0, len(labels)), np.float32)
    return StreamPosteriors(times_ms=np.asarray(times, np.float64), posteriors=posteriors, labels=labels,
                            hop_ms=float(hop_ms), duration_ms=total * _MS_PER_S / frontend.sample_rate_hz,
                            timings_ms={k: np.asarray(v) for k, v in timings.items()})


def concat_posteriors(parts: Sequence[StreamPosteriors]) -> StreamPosteriors:
    """Pieces of one stream (:func:`build_segments`) end to end: times and words shifted by the
    durations before them."""
    require(len(parts) > 0, "parts", "at least one piece", 0)
    require(len({p.labels for p in parts}) == 1 and len({p.hop_ms for p in parts}) == 1, "parts",
            "pieces with the same labels and hop", [(p.labels, p.hop_ms) for p in parts])
    offsets = np.concatenate([[0.0], np.cumsum([p.duration_ms for p in parts])[:-1]])
    words = tuple(dataclasses.replace(w, start_ms=w.start_ms + off, end_ms=w.end_ms + off)
                  for p, off in zip(parts, offsets) for w in p.words)
    return StreamPosteriors(times_ms=np.concatenate([p.times_ms + off for p, off in zip(parts, offsets)]),
                            posteriors=np.concatenate([p.posteriors for p in parts]), labels=parts[0].labels,
                            hop_ms=parts[0].hop_ms, words=words, duration_ms=float(sum(p.duration_ms for p in parts)))


def speech_embedding_identity() -> tuple[str, ...]:
    """The sha256 of the speech-embedding model files a second opinion runs (another wheel may ship
    other models), or a marker when the wheel is missing: no posteriors are ever saved under it,
    since the second opinion cannot run, and the run then fails naming what to install."""
    try:
        return models_sha256(speech_embedding.model_files())  # the files the second opinion loads
    except speech_embedding.SpeechEmbeddingUnavailable:
        return (_SPEECH_EMBEDDING_MISSING,)


class PosteriorCache:
    """Per-hop posteriors and the placed words on disk (``<folder>/posteriors-<key>.npz``), keyed by
    model and stream."""

    def __init__(self, folder: str | Path, *, second_opinion: SecondOpinionOptions | None = None) -> None:
        self.folder = Path(folder)
        self.second_opinion = second_opinion if second_opinion is not None and second_opinion.enabled else None
        self._second_key: list[Any] = []
        if self.second_opinion is not None:  # the heads' bytes, the speech embedding's and the blend: what is cached
            self._second_key = [file_sha256(self.second_opinion.heads_path),  # type: ignore[arg-type]
                                *speech_embedding_identity(), self.second_opinion.student_weight]

    def key(self, model_sha256: str, stream: Stream, hop_ms: float) -> str:
        return _fingerprint([model_sha256, stream.fingerprint, float(hop_ms), *self._second_key])

    def path(self, key: str) -> Path:
        return self.folder / f"posteriors-{key}.npz"

    def load(self, key: str) -> StreamPosteriors | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                words = tuple(PlacedWord.from_list(r) for r in json.loads(str(data["words"])))
                return StreamPosteriors(times_ms=data["times_ms"], posteriors=data["posteriors"],
                                        labels=tuple(str(x) for x in data["labels"]), hop_ms=float(data["hop_ms"]),
                                        words=words, duration_ms=float(data["duration_ms"]))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # a cut or damaged file (a copy of --out stopped halfway, a full disk) is scored again, not a traceback
            logger.warning("ignoring unreadable posterior cache %s: %s", path, exc)
            return None

    def save(self, key: str, result: StreamPosteriors) -> Path:
        """Written whole or not at all (:func:`edgesense.train.cache.replace_files`): a full disk leaves no partial
        file behind and is an OSError naming the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)

        def write(partial: Path) -> None:
            np.savez_compressed(partial, times_ms=result.times_ms, posteriors=result.posteriors,
                                labels=np.array(result.labels), hop_ms=np.float64(result.hop_ms),
                                words=np.array(json.dumps([w.to_list() for w in result.words])),
                                duration_ms=np.float64(result.duration_ms))
        try:
            replace_files({path: write}, keep_suffix=True)  # np.savez names a file without .npz NAME.npz
        except OSError as exc:
            raise OSError(f"cannot write the posterior cache {path}: {exc.strerror or exc}") from exc
        return path

    def posteriors(self, model: Any, model_sha256: str, stream: Stream, *,
                   hop_ms: float = SchedulerOptions.command_hop_ms) -> StreamPosteriors:
        """The stream's posteriors from the cache, or rendered and computed (and saved)."""
        key = self.key(model_sha256, stream, hop_ms)
        cached = self.load(key)
        if cached is not None:
            logger.info("%s stream %s: posteriors from the cache", stream.options.kind, stream.fingerprint)
            return cached
        with phase(logger, "%s stream %s: posteriors of %.1f min, one every %g ms (cached once done)",
                   stream.options.kind, stream.fingerprint, stream.duration_ms / 60_000, hop_ms):
            result = stream_posteriors(model, stream.blocks(), hop_ms=hop_ms, second_opinion=self.second_opinion)
        result = dataclasses.replace(result, words=stream.words, duration_ms=stream.duration_ms)
        self.save(key, result)
        return result
