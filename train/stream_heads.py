"""``edgesense train-stream-heads``: the second opinion's heads, trained for the stream.

Heads of the audio teacher's shape (layer norm, Conv1D, max-pool, dense) on Google's
``speech_embedding`` (the ``[teacher]`` extra), taught what a device hears between words:

* every training speaker's clip ``variants`` times, scaled to a drawn level (−40…−14 dBFS over its
  spoken span) over the training pool's noise at 0–30 dB SNR (``snr_db``), and placed by ``placement``:
  ``word`` (the default), the spoken part anywhere in what the last embedding sees, its end as near
  the window's end as a stream has it when the word has just ended (the clip's audio around it cut
  at the window's edges), or ``clip``, the whole second anywhere it fits (its spoken part near the
  window's centre, so a head is surest some 0.3–0.5 s after a word ends: the heads before);
* windows of other people's talk (the training pool of ``speech_negatives``, and all of any
  ``--talk`` folder, e.g. ``edgesense synth-talk`` sentences, so never a recording of ``--negatives``;
  a recording shorter than a window gives none) as ``_unknown_``;
* background alone at −70…−30 dBFS as ``_silence_``;
* with ``--partial-words SHARE``, for that share of the command clips, one window more holding only
  part of the word (``--partial-kept``, 10–50 % of its spoken span: its beginning or, with
  ``--partial-end-share``, half the time, its end; the rest of the clip silent), placed like a word,
  as ``_unknown_``: what a stream shows in the middle of a word, or of a longer one that holds a
  command word's sound;
* with ``--speed SHARE``, that share of the clips played faster or slower in each variant (the
  student's speed range, 0.9–1.1);
* with ``--talk-ends SHARE``, that share of the talk windows cut where the talk stops (the end of a
  word or phrase, :func:`speech_ends`) and placed as ``word`` places a command word: other words that
  have just ended, the moment a device decides on a command;
* with ``--talk-words SHARE``, that share of the talk windows ``--talk-ends`` leaves a piece of talk
  said alone instead (:func:`talk_word_window`: :data:`TALK_WORD_MS` of it up to where the talk stops, quiet before and
  after), placed as ``word`` places a command word: real people's other words said alone, in voices
  the 144 ``_unknown_`` clips lack;
* with ``--unknown-voices SHARE``, for that share of the ``_unknown_`` clips (real other words) one
  window more of the clip played 0.8–1.25 times as fast (:data:`VOICE_SPEED_RANGE`: pitch and formants
  move with it, another voice), the command clips untouched.

A window is as long as ``context_embeddings`` embeddings need (five: 1.1 s), so a head sees at
each hop what the device's :class:`edgesense.runtime.second_opinion.SecondOpinion` gives it.
``heads`` heads (seeds ``seed`` …) are trained and their mean is written as one TFLite file (float
inputs, int8 weights; ``--float-weights``: float32) with its metadata (``kind: stream_heads``,
labels, context). ``--hard-negatives`` adds windows where a detector fired on talk
(``edgesense mine``) as ``_unknown_``. One head's stream figures swing by
tens of points from seed to seed; the mean of five does not (docs/BENCHMARK.md).

The speakers are split as ``--model`` (the student the heads will sit beside) was trained, so the
benchmark's held-out speakers stay unheard by both; the labels are that model's.

    edgesense train-stream-heads --out models/stream_heads.tflite
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesense.app.cli import path_argument, write_atomic
from edgesense.frontend.audio import AudioFrontendOptions, fit_clip
from edgesense.frontend.wav import read_wav
from edgesense.recognition.gate import ENVELOPE_FRAME_MS, MS_PER_S, SPEECH_SPAN_DB, rms_dbfs, speech_span
from edgesense.runtime.model import METADATA_NAME, EdgeModel
from edgesense.runtime.second_opinion import HEADS_FORMAT_VERSION, HEADS_KIND
from edgesense.runtime.speech_embedding import (
    DISTRIBUTION, DISTRIBUTION_VERSION, EMBEDDING_DIM, MEL_HOP_SAMPLES, MEL_LEAD_FRAMES, SAMPLE_RATE_HZ,
    samples_for_embeddings,
)
from edgesense.schema.validate import is_int, is_positive, require, require_kinds, require_range
from edgesense.train import augment, data
from edgesense.train.bank import BankOptions
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, derived_seed, is_seed
from edgesense.train.pools import say_held_out, speech_negative_pools, split_recordings, wav_recordings
from edgesense.types import SILENCE_LABEL, UNKNOWN_LABEL

__all__ = ["StreamHeadsOptions", "TrainingMaterial", "ensemble_model", "hard_negative_clips", "heads_tflite",
           "partial_word", "place", "seen_samples", "speech_ends", "talk_end_window", "talk_word_window",
           "train_stream_heads", "training_material", "training_windows", "window_samples"]

logger = logging.getLogger(__name__)

SPARE_FRAMES = 7  #: a training window's frames after its last embedding
#: A training window's samples after what its last embedding sees (the mel model's lead and the spare frames).
UNSEEN_SAMPLES = (MEL_LEAD_FRAMES + SPARE_FRAMES) * MEL_HOP_SAMPLES
SPEECH_DBFS = (-40.0, -14.0)  #: RMS of the spoken span
SNR_DB = (0.0, 30.0)
SILENCE_DBFS = (-70.0, -30.0)
PLACEMENTS = ("clip", "word")
SPEED_RANGE = augment.AudioAugmentOptions().speed_range  #: playback speeds of ``--speed``, as the student's
#: Playback speeds of ``--unknown-voices``: wide enough to move a voice's pitch and formants.
VOICE_SPEED_RANGE = (0.8, 1.25)
PAUSE_MS = 100.0  #: quiet after speech that makes a place where talk stops (:func:`speech_ends`)
#: The least time of talk that a ``--talk-ends`` window holds before the place where the talk stops.
TALK_BEFORE_END_MS = 300.0
#: How long a ``--talk-words`` piece of talk is, about a word or two.
TALK_WORD_MS = (200.0, 800.0)
FADE_IN_MS = 20.0  #: a ``--talk-words`` piece's fade in from quiet (its start is cut in the talk)
SHARED = Path("../shared/data")


def window_samples(context: int) -> int:
    """A training window's length for a head on ``context`` embeddings (18,880 samples for five)."""
    return seen_samples(context) + UNSEEN_SAMPLES


def seen_samples(context: int) -> int:
    """How much of a training window, from its start, the ``context`` embeddings see (17,280 samples for five):
    the audio that gives them, less the mel model's lead."""
    return samples_for_embeddings(context) - MEL_LEAD_FRAMES * MEL_HOP_SAMPLES


@dataclass(frozen=True, kw_only=True)
class StreamHeadsOptions:
    """What :func:`train_stream_heads` trains (module docstring). ``unknown_weight``: ``_unknown_``'s
    weight, in classes."""

    heads: int = 5
    context_embeddings: int = 5
    variants: int = 6
    talk_per_variant: int = 1500
    silence_per_variant: int = 200
    unknown_weight: float = 1.0
    #: Share of the command clips that also give a window of part of their word, as ``_unknown_``.
    partial_share: float = 0.0
    #: A partial word's share of its spoken span (the student's range).
    partial_kept: tuple[float, float] = BankOptions().partial_fraction_range
    #: Share of the partial words that keep the word's end (the rest its beginning).
    partial_end_share: float = 0.5
    #: Share of the clips played at another speed (:data:`SPEED_RANGE`) in each variant.
    speed_share: float = 0.0
    #: Share of the talk windows cut where the talk stops (:func:`talk_end_window`).
    talk_ends_share: float = 0.0
    #: Share of the talk windows not cut by ``talk_ends_share`` that are a piece of talk said alone
    #: (:func:`talk_word_window`): of all of them, ``(1 - talk_ends_share) * talk_words_share``.
    talk_words_share: float = 0.0
    #: Share of the ``_unknown_`` clips that also give a window in another voice (:data:`VOICE_SPEED_RANGE`).
    unknown_voices_share: float = 0.0
    #: The range of SNRs (the spoken span's power over the noise's) every window is mixed at.
    snr_db: tuple[float, float] = SNR_DB
    epochs: int = 30
    seed: int = 10
    #: Where a word sits in its training windows (module docstring): ``clip`` or ``word``.
    placement: str = "word"
    #: The file's weights: int8 (dynamic range, a quarter of the size) or float32.
    int8_weights: bool = True

    def __post_init__(self) -> None:
        require_kinds(self)
        for name in ("heads", "context_embeddings", "variants", "epochs"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value < INT_LIMIT, name, "an integer in [1, 2**63)", value)
        for name in ("talk_per_variant", "silence_per_variant"):
            value = getattr(self, name)
            require(is_int(value) and 0 <= value < INT_LIMIT, name, "an integer in [0, 2**63)", value)
        require(is_positive(self.unknown_weight), "unknown_weight", "a finite positive number", self.unknown_weight)
        for name in ("partial_share", "speed_share", "partial_end_share", "talk_ends_share", "talk_words_share",
                     "unknown_voices_share"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, "a share in [0, 1]", value)
        require_range("partial_kept", self.partial_kept, lo=0.0, hi=1.0)
        require_range("snr_db", self.snr_db)
        require(self.placement in PLACEMENTS, "placement", f"one of {', '.join(PLACEMENTS)}", self.placement)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)

    @property
    def window_samples(self) -> int:
        return window_samples(self.context_embeddings)

    def for_validation(self) -> StreamHeadsOptions:
        """The options of the validation windows: each clip once, placed as in training (seed + 1),
        nothing added."""
        return dataclasses.replace(self, variants=1, talk_per_variant=0, silence_per_variant=0, partial_share=0.0,
                                   speed_share=0.0, talk_ends_share=0.0, talk_words_share=0.0,
                                   unknown_voices_share=0.0, seed=derived_seed(self.seed, 1))


def noise_window(noise: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a drawn recording from a drawn start (tiled when it is shorter)."""
    rec = noise[rng.integers(len(noise))]
    if rec.size <= n:
        rec = np.tile(rec, n // max(rec.size, 1) + 1)
    start = rng.integers(rec.size - n + 1)
    return rec[start:start + n].astype(np.float32)


def mix(speech: np.ndarray, span: tuple[int, int], noise: Sequence[np.ndarray], rng: np.random.Generator, *,
        snr_db: tuple[float, float] = SNR_DB) -> np.ndarray:
    """``speech`` (a window) scaled so its spoken ``span`` sits at a drawn level, over noise at a drawn
    SNR in ``snr_db``."""
    a, b = span
    level = rng.uniform(*SPEECH_DBFS)
    spoken = speech[a:b] if b > a else speech
    out = speech * np.float32(10 ** ((level - rms_dbfs(spoken)) / 20))
    bg = noise_window(noise, speech.size, rng)  # the streams are never clean
    out = out + bg * np.float32(10 ** ((level - rng.uniform(*snr_db) - rms_dbfs(bg)) / 20))
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def place(clip: np.ndarray, span: tuple[int, int], length: int, *, placement: str, seen: int,
          rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A window of ``length`` samples holding ``clip`` and where its spoken ``span`` lies in it:
    ``clip``: the whole clip anywhere it fits; ``word``: the span anywhere within the first ``seen``
    samples (at the start when it is longer), the rest of the clip cut at the window's edges."""
    window = np.zeros(length, np.float32)
    a, b = span
    if placement == "clip":
        shift = int(rng.integers(length - clip.size + 1))
    else:
        shift = int(rng.integers(max(seen - (b - a), 0) + 1)) - a
    first, last = max(shift, 0), min(shift + clip.size, length)
    window[first:last] = clip[first - shift:last - shift]
    return window, (max(a + shift, 0), min(b + shift, length))


def speech_ends(recording: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Sample indices where ``recording``'s speech stops: the end of a 10-ms envelope frame within
    25 dB of the loudest that is followed by at least :data:`PAUSE_MS` of quieter frames (or by the
    recording's end)."""
    x = np.asarray(recording, dtype=np.float64)
    frame = int(round(sample_rate_hz * ENVELOPE_FRAME_MS / MS_PER_S))
    n = x.size // frame
    if n == 0:
        return np.zeros(0, np.int64)
    power = np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1)
    loud = power >= power.max() * 10 ** (-SPEECH_SPAN_DB / 10) if power.max() > 0 else np.zeros(n, bool)
    pause = int(round(PAUSE_MS / ENVELOPE_FRAME_MS))
    quiet_after = np.concatenate([~loud, np.ones(pause, bool)])  # past the recording's end is quiet
    window = np.lib.stride_tricks.sliding_window_view(quiet_after[1:], pause)[:n]
    return (np.flatnonzero(loud & window.all(axis=1)) + 1) * frame


def talk_stop(ended: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A drawn recording of ``ended`` (recordings of talk, each with its :func:`speech_ends`, at
    least one) and a drawn place of its ends."""
    rec, ends = ended[rng.integers(len(ended))]
    return rec, int(ends[rng.integers(ends.size)])


def talk_end_window(ended: Sequence[tuple[np.ndarray, np.ndarray]], length: int, seen: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of talk around a :func:`talk_stop` of ``ended``, that place anywhere from
    :data:`TALK_BEFORE_END_MS` into the window up to ``seen``; silent where the recording runs out."""
    rec, end = talk_stop(ended, rng)
    at = int(rng.integers(min(int(TALK_BEFORE_END_MS * SAMPLE_RATE_HZ / MS_PER_S), seen), seen + 1))
    start = end - at
    window = np.zeros(length, np.float32)
    first, last = max(start, 0), min(start + length, rec.size)
    window[first - start:last - start] = rec[first:last]
    return window


def talk_word_window(ended: Sequence[tuple[np.ndarray, np.ndarray]], length: int, seen: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A piece of talk said alone: a drawn :data:`TALK_WORD_MS` of it up to a :func:`talk_stop` of
    ``ended``, faded in over :data:`FADE_IN_MS`, :func:`place`d as ``word`` places a word in
    ``length`` silent samples; the window and the piece's span in it."""
    rec, end = talk_stop(ended, rng)
    start = max(end - int(rng.uniform(*TALK_WORD_MS) * SAMPLE_RATE_HZ / MS_PER_S), 0)
    piece = rec[start:end].astype(np.float32)
    fade = min(int(FADE_IN_MS * SAMPLE_RATE_HZ / MS_PER_S), piece.size)
    piece[:fade] *= np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
    return place(piece, (0, piece.size), length, placement="word", seen=seen, rng=rng)


def partial_word(clip: np.ndarray, span: tuple[int, int], rng: np.random.Generator, *,
                 kept: tuple[float, float] = StreamHeadsOptions.partial_kept,
                 end_share: float = StreamHeadsOptions.partial_end_share) -> tuple[np.ndarray, tuple[int, int]]:
    """``clip`` with only part of its spoken ``span`` left (a drawn ``kept`` share of it, its end
    with probability ``end_share``, else its beginning), everything else silent, and the span of
    what is left."""
    a, b = span
    size = max(int(rng.uniform(*kept) * (b - a)), 1)
    a, b = (b - size, b) if rng.random() < end_share else (a, a + size)
    out = np.zeros_like(clip)
    out[a:b] = clip[a:b]
    return out, (a, b)


def training_windows(clips: np.ndarray, labels: np.ndarray, talk: Sequence[np.ndarray], noise: Sequence[np.ndarray],
                     options: StreamHeadsOptions, *, unknown: int, silence: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``options.window_samples`` samples, drawn from ``options.seed``: every word clip
    ``variants`` times (:func:`place`d within what the embeddings see of the window, over noise;
    ``speed_share`` of them at a drawn :data:`SPEED_RANGE` speed, about the clip's centre), for
    ``partial_share`` of the command clips one more window of a :func:`partial_word` as ``unknown``,
    for ``unknown_voices_share`` of the ``unknown`` clips one more window at a drawn
    :data:`VOICE_SPEED_RANGE` speed, ``talk_per_variant`` windows of talk as ``unknown``
    (``talk_ends_share`` of them a :func:`talk_end_window`, ``talk_words_share`` of the rest a
    :func:`talk_word_window`), ``silence_per_variant`` windows of
    background alone at a drawn level as ``silence``."""
    o, length = options, options.window_samples
    seen = length - UNSEEN_SAMPLES
    rng = np.random.default_rng(o.seed)
    rows, ys = [], []
    mix_at = functools.partial(mix, snr_db=o.snr_db)
    spans = [speech_span(c, SAMPLE_RATE_HZ) for c in clips]
    # the talk recordings where talk stops, with those places (none: the lever draws nothing)
    cut = o.talk_ends_share > 0 or o.talk_words_share > 0
    ended = [(t, e) for t, e in ((t, speech_ends(t)) for t in talk) if e.size] if cut else []
    for _ in range(o.variants):
        varied, varied_spans = clips, spans
        if o.speed_share > 0:  # (0 draws nothing)
            varied = augment.change_speed(clips, rng, speed_range=SPEED_RANGE, probability=o.speed_share)
            varied_spans = [speech_span(c, SAMPLE_RATE_HZ) for c in varied]
        for clip, y, (a, b) in zip(varied, labels, varied_spans):
            if y == silence:  # snippets of a noise recording: the background windows below stand for them
                continue
            window, spoken = place(clip, (a, b), length, placement=o.placement, seen=seen, rng=rng)
            rows.append(mix_at(window, spoken, noise, rng))
            ys.append(y)
            if o.partial_share > 0 and y != unknown and rng.random() < o.partial_share:  # (0 draws nothing)
                part, kept = partial_word(clip, (a, b), rng, kept=o.partial_kept, end_share=o.partial_end_share)
                window, spoken = place(part, kept, length, placement=o.placement, seen=seen, rng=rng)
                rows.append(mix_at(window, spoken, noise, rng))
                ys.append(unknown)
            if o.unknown_voices_share > 0 and y == unknown and rng.random() < o.unknown_voices_share:  # (0: none)
                voiced = augment.change_speed(clip[None], rng, speed_range=VOICE_SPEED_RANGE)[0]
                window, spoken = place(voiced, speech_span(voiced, SAMPLE_RATE_HZ), length, placement=o.placement,
                                       seen=seen, rng=rng)
                rows.append(mix_at(window, spoken, noise, rng))
                ys.append(unknown)
        for _ in range(o.talk_per_variant):
            spoken = (0, length)
            if ended and o.talk_ends_share > 0 and rng.random() < o.talk_ends_share:  # (0 draws nothing)
                window = talk_end_window(ended, length, seen, rng)
            elif ended and o.talk_words_share > 0 and rng.random() < o.talk_words_share:  # (0 draws nothing)
                window, spoken = talk_word_window(ended, length, seen, rng)
            else:
                window = noise_window(talk, length, rng)
            rows.append(mix_at(window, spoken, noise, rng))
            ys.append(unknown)
        for _ in range(o.silence_per_variant):
            bg = noise_window(noise, length, rng)
            rows.append((bg * np.float32(10 ** ((rng.uniform(*SILENCE_DBFS) - rms_dbfs(bg)) / 20))).astype(np.float32))
            ys.append(silence)
    if not rows:  # e.g. no validation speakers
        return np.zeros((0, length), np.float32), np.zeros(0, np.int32)
    return np.stack(rows), np.asarray(ys, np.int32)


def ensemble_model(heads: Sequence[Any], context: int):
    """One Keras model: ``(1, context, 96)`` embeddings -> the mean of ``heads``' probabilities."""
    import keras

    x = keras.Input((context, EMBEDDING_DIM), batch_size=1, name="embeddings")
    # each head under a name of its own (the teacher's heads all share one)
    outs = [keras.Model(head.input, head.output, name=f"head_{k}")(x, training=False) for k, head in enumerate(heads)]
    y = keras.layers.Average(name="mean")(outs) if len(outs) > 1 else outs[0]
    return keras.Model(x, y, name="stream_heads")


def heads_tflite(model, metadata: dict[str, Any], *, int8_weights: bool = True) -> bytes:
    """``model`` (:func:`ensemble_model`) as a TFLite file with float inputs and activations, its
    weights int8 (dynamic range; ``int8_weights=False``: float32), with ``metadata`` embedded under
    :data:`METADATA_NAME`."""
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="embeddings")
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    holder = tf.Module()  # the converter saves captured variables only when a tf.Module tracks them
    holder.variables_ = [getattr(v, "value", v) for v in model.weights]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    if int8_weights:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(converter.convert()))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), len(flat.buffers)
    flat.buffers.append(buffer)
    flat.metadata = list(flat.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


def hard_negative_clips(folders: Sequence[Path]) -> np.ndarray:
    """Every WAV under ``folders`` (``edgesense mine``'s windows) as a 1 s clip ``(N, 16000)``."""
    frontend = AudioFrontendOptions()
    clips = [fit_clip(read_wav(p, sample_rate_hz=SAMPLE_RATE_HZ), frontend) for p in wav_recordings(folders)]
    return np.stack(clips).astype(np.float32) if clips else np.zeros((0, frontend.clip_samples), np.float32)


@dataclass(frozen=True)
class TrainingMaterial:
    """What the heads learn from: training windows ``x``/``y``, one window per validation clip
    ``vx``/``vy``, the training pools' ``talk`` and ``noise`` recordings, the labels and the
    indices of ``_unknown_`` and ``_silence_``; ``mined``: how many hard negatives took part."""

    labels: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    talk: list[np.ndarray]
    noise: list[np.ndarray]
    unknown: int
    silence: int
    mined: int


def training_material(student: EdgeModel, speech_commands: Path, noise: Sequence[Path], negatives: Path,
                      options: StreamHeadsOptions, *, hard_negatives: Sequence[Path] = (),
                      talk: Sequence[Path] = ()) -> TrainingMaterial:
    """The windows of :func:`training_windows` from the training speakers (split as ``student`` was
    trained), the training pools of ``noise`` and ``negatives``, every recording of the ``talk``
    folders (talk for training only), and ``hard_negatives`` (folders of windows where a detector
    fired on other speech, ``edgesense mine``), learned as ``_unknown_`` like the clips: placed
    anywhere, over noise, ``variants`` times."""
    # the student's own words: a folder of another word (one the student was not taught) is _unknown_ as in training
    words = [label for label in student.command_labels if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    index = data.load_speech_commands(speech_commands, words=words)
    labels = tuple(index.labels)
    require(labels == tuple(student.command_labels), "--model",
            f"the command labels of {speech_commands} {list(labels)}", list(student.command_labels))
    split = data.SplitSpec.from_metadata(student.metadata, None).split_clips(index)
    lookup = {label: i for i, label in enumerate(labels)}

    def clips_of(part: str) -> tuple[np.ndarray, np.ndarray]:
        clips, report = data.load_clips(split[part], AudioFrontendOptions(), what=f"{part} clips")
        return clips, np.array([lookup[split[part][i].label] for i in report.kept], np.int32)

    length = options.window_samples
    silence, unknown = lookup[SILENCE_LABEL], lookup[UNKNOWN_LABEL]
    clips, ys = clips_of("training")
    # a word no training speaker says gives heads that never learned it: refused, not written as if they had
    untaught = [label for label in words if lookup[label] not in set(ys.tolist())]
    if untaught:
        raise ValueError(f"--speech-commands: expected clips of every word of --model by its training speakers (the "
                         f"speakers split as --model was trained), got none of {', '.join(untaught)} in "
                         f"{speech_commands}; give a folder with more speakers of them (e.g. the one --model was "
                         "trained on)")
    mined = hard_negative_clips(hard_negatives)
    if hard_negatives:
        require(len(mined) > 0, "--hard-negatives", "folders with .wav windows", [str(p) for p in hard_negatives])
        clips = np.concatenate([clips, mined])
        ys = np.concatenate([ys, np.full(len(mined), unknown, np.int32)])
    val_clips, val_ys = clips_of("validation")
    if not len(val_clips):
        logger.warning("%s: no clips of validation speakers (the speakers split as --model was trained): the heads "
                       "of the last epoch are kept, with no validation figure", speech_commands)
    found = {folder: wav_recordings([folder]) for folder in noise}  # a folder without any: said, not left out
    empty = [str(folder) for folder, recordings in found.items() if not recordings]
    require(not empty, "--noise", "folders with .wav recordings", empty)
    noise_recordings = sorted({path for recordings in found.values() for path in recordings})
    noise_pools = split_recordings(noise_recordings + list(index.noise_paths))
    say_held_out("--noise", noise, noise_pools)  # a file named alone keeps its folder's pool
    noise_pool, _ = data.load_noise_pool(noise_pools["training"])
    negative_paths = wav_recordings([negatives])
    negative_pools = speech_negative_pools(negative_paths)
    say_held_out("--negatives", [negatives], negative_pools)
    talk_paths = negative_pools["training"]
    extra_talk = wav_recordings(talk)
    require(not talk or bool(extra_talk), "--talk", "folders with .wav recordings", [str(p) for p in talk])
    # all of --talk is learned: a recording of --negatives there would teach its tuning and evaluation pools
    known = {p.resolve() for p in negative_paths}
    overlap = [p for p in extra_talk if p.resolve() in known]
    if overlap:
        more = f" and {len(overlap) - 1} more" if len(overlap) > 1 else ""
        raise ValueError(f"--talk: expected talk apart from --negatives (all of --talk is learned; only the training "
                         f"pool of --negatives is, its tuning and evaluation pools are the benchmark's), got "
                         f"{overlap[0]}{more}, recordings of --negatives {negatives}")
    # a recording shorter than a window gives none (talk is never tiled): said, not silently left out
    pool_audio, extra_audio = ([t for t in (read_wav(p, sample_rate_hz=SAMPLE_RATE_HZ) for p in paths)
                                if t.size >= length] for paths in (talk_paths, extra_talk))
    window_s = f"{length / SAMPLE_RATE_HZ:g} s"
    if talk and not extra_audio:
        raise ValueError(f"--talk: expected recordings of at least {window_s} (a training window), got "
                         f"{len(extra_talk)} recordings, all shorter")
    if len(extra_audio) < len(extra_talk):
        logger.warning("--talk: %d of its %d recordings are shorter than a training window (%s) and are left out",
                       len(extra_talk) - len(extra_audio), len(extra_talk), window_s)
    talk_audio = pool_audio + extra_audio
    require(bool(noise_pool), "--noise", "recordings in the training pool", "none")
    require(bool(talk_audio), "--negatives", f"talk recordings of at least {window_s} in the training pool", "none")
    logger.info("%d training clips, %d noise recordings, %d talk recordings (training pools; %d of --talk)",
                len(clips), len(noise_pool), len(talk_audio), len(extra_audio))
    x, y = training_windows(clips, ys, talk_audio, noise_pool, options, unknown=unknown, silence=silence)
    vx, vy = training_windows(val_clips, val_ys, talk_audio, noise_pool, options.for_validation(), unknown=unknown,
                              silence=silence)
    return TrainingMaterial(labels=labels, x=x, y=y, vx=vx, vy=vy, talk=talk_audio, noise=noise_pool, unknown=unknown,
                            silence=silence, mined=len(mined))


def train_stream_heads(model_path: Path, speech_commands: Path, noise: Sequence[Path], negatives: Path,
                       options: StreamHeadsOptions = StreamHeadsOptions(), *,
                       hard_negatives: Sequence[Path] = (), talk: Sequence[Path] = ()) -> tuple[bytes, dict[str, Any]]:
    """Train the heads (module docstring) on :func:`training_material`; the TFLite file's bytes and
    its metadata."""
    from edgesense.train.teachers.audio import AudioTeacherOptions, fit_audio_head
    from edgesense.train.teachers.speech_embedding import SpeechEmbedding, SpeechEmbeddingOptions

    started = time.perf_counter()
    embedder = SpeechEmbedding(SpeechEmbeddingOptions(pad_ms=0))  # the teacher extra first: one line if missing
    student = EdgeModel.load(model_path)
    m = training_material(student, speech_commands, noise, negatives, options, hard_negatives=hard_negatives,
                          talk=talk)
    labels, x, y, vx, vy = m.labels, m.x, m.y, m.vx, m.vy
    with data.phase(logger, "embedding %d training and %d validation windows", len(x), len(vx)):
        ex, vex = embedder(x), embedder(vx)
    require(ex.shape[1] == options.context_embeddings, "windows", f"{options.context_embeddings} embeddings each",
            ex.shape[1])
    teacher = AudioTeacherOptions(enabled=True, pad_ms=0, epochs=options.epochs)
    validation = (vex, vy) if len(vx) else None  # no validation speakers: the last epoch's heads
    heads = []
    for k in range(options.heads):
        with data.phase(logger, "training head %d of %d (%d epochs at most)", k + 1, options.heads, options.epochs):
            heads.append(fit_audio_head(ex, y, len(labels), teacher, seed=derived_seed(options.seed, k),
                                        validation=validation, class_scale={m.unknown: options.unknown_weight}))
    model = ensemble_model(heads, options.context_embeddings)
    val_accuracy = (float(np.mean(np.argmax(np.mean([h.predict(vex, verbose=0) for h in heads], axis=0), axis=1)
                                  == vy)) if validation is not None else None)
    metadata = {"kind": HEADS_KIND, "format_version": HEADS_FORMAT_VERSION, "labels": list(labels),
                "context_embeddings": options.context_embeddings, "heads": options.heads,
                "embedding": {"distribution": DISTRIBUTION, "version": DISTRIBUTION_VERSION},
                "student": {"path": str(model_path), "name": student.metadata.get("name")},
                # what the heads learned, so a reader can tell they never heard its held-out speakers (bench and
                # mine compare this split with theirs): the student's split of this folder, its training speakers
                "data": {"speech_commands": [str(Path(speech_commands).resolve())],
                         "split": dataclasses.asdict(data.SplitSpec.from_metadata(student.metadata, None)),
                         "noise": [str(p) for p in noise], "negatives": str(negatives)},
                "options": dataclasses.asdict(options), "training_windows": int(len(x)),
                "hard_negatives": {"folders": [str(p) for p in hard_negatives], "windows": m.mined},
                "talk": [str(p) for p in talk],
                "validation_window_accuracy": None if val_accuracy is None else round(val_accuracy, 4),
                "elapsed_s": round(time.perf_counter() - started, 1)}
    return heads_tflite(model, metadata, int8_weights=options.int8_weights), metadata


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StreamHeadsOptions()
    parser.add_argument("--out", type=path_argument, required=True, help="the heads file to write (.tflite)")
    parser.add_argument("--model", type=path_argument, default=Path("models/edgesense.tflite"),
                        help="the student the heads sit beside: its labels and speaker split (default %(default)s)")
    parser.add_argument("--speech-commands", type=path_argument, default=SHARED / "speech_commands",
                        help="the labelled clips, split by speaker as --model was (default %(default)s)")
    parser.add_argument("--noise", type=path_argument, action="append",
                        help=f"noise and music folders, their training pool (default: {SHARED / 'ambient'} and "
                             f"{SHARED / 'noise'})")
    parser.add_argument("--negatives", type=path_argument, default=SHARED / "speech_negatives",
                        help="other people's speech, its training pool as _unknown_ (default %(default)s)")
    parser.add_argument("--hard-negatives", type=path_argument, action="append", default=[],
                        help="folders of windows where a detector fired on talk (edgesense mine), as _unknown_")
    parser.add_argument("--talk", type=path_argument, action="append", default=[],
                        help="more talk to learn as _unknown_, all of it (e.g. edgesense synth-talk sentences; "
                             "keep the voices you tune on out; never recordings of --negatives)")
    parser.add_argument("--heads", type=int, default=defaults.heads,
                        help="heads averaged (seeds SEED, SEED+1, ...; default %(default)s)")
    parser.add_argument("--context", type=int, default=defaults.context_embeddings,
                        help="embeddings a head sees at each hop (default %(default)s: 1.1 s)")
    parser.add_argument("--variants", type=int, default=defaults.variants,
                        help="noisy placements of every clip (default %(default)s)")
    parser.add_argument("--placement", choices=PLACEMENTS, default=defaults.placement,
                        help="where a word sits in its windows: word (default): its spoken part anywhere, its end "
                             "up to the window's end; clip: the whole clip anywhere it fits (its spoken part near "
                             "the centre: detections come later)")
    parser.add_argument("--talk-per-variant", type=int, default=defaults.talk_per_variant,
                        help="windows of other speech as _unknown_ in each variant (default %(default)s)")
    parser.add_argument("--silence-per-variant", type=int, default=defaults.silence_per_variant,
                        help="windows of background alone as _silence_ in each variant (default %(default)s)")
    parser.add_argument("--unknown-weight", type=float, default=defaults.unknown_weight,
                        help="_unknown_'s weight in the loss, in classes (default %(default)s)")
    parser.add_argument("--partial-words", type=float, default=defaults.partial_share, metavar="SHARE",
                        help="share of the command clips that also give a window of part of their word, as "
                             f"_unknown_ (default {defaults.partial_share:g})")
    # None: not given (they act only with --partial-words; run() says so); the defaults are the options'.
    parser.add_argument("--partial-kept", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="a partial word's share of its spoken part (with --partial-words; default "
                             f"{defaults.partial_kept[0]:g} {defaults.partial_kept[1]:g})")
    parser.add_argument("--partial-end-share", type=float, default=None, metavar="SHARE",
                        help="share of the partial words that keep the word's end, the rest its beginning "
                             f"(with --partial-words; default {defaults.partial_end_share:g})")
    parser.add_argument("--speed", type=float, default=defaults.speed_share, metavar="SHARE",
                        help=f"share of the clips played {SPEED_RANGE[0]:g}-{SPEED_RANGE[1]:g} times as fast in each "
                             f"variant (default {defaults.speed_share:g})")
    parser.add_argument("--talk-ends", type=float, default=defaults.talk_ends_share, metavar="SHARE",
                        help="share of the talk windows cut where the talk stops, placed as a word is "
                             f"(default {defaults.talk_ends_share:g})")
    parser.add_argument("--talk-words", type=float, default=defaults.talk_words_share, metavar="SHARE",
                        help=f"share of the talk windows that --talk-ends leaves that are a {TALK_WORD_MS[0]:g}-"
                             f"{TALK_WORD_MS[1]:g} ms piece of talk said alone, placed as a word is (default "
                             f"{defaults.talk_words_share:g})")
    parser.add_argument("--unknown-voices", type=float, default=defaults.unknown_voices_share, metavar="SHARE",
                        help="share of the _unknown_ clips that also give a window played "
                             f"{VOICE_SPEED_RANGE[0]:g}-{VOICE_SPEED_RANGE[1]:g} times as fast, another voice "
                             f"(default {defaults.unknown_voices_share:g})")
    parser.add_argument("--snr-db", type=float, nargs=2, default=defaults.snr_db, metavar=("LOW", "HIGH"),
                        help="the SNRs the words and talk are mixed at over the noise, in dB (default "
                             f"{defaults.snr_db[0]:g} {defaults.snr_db[1]:g})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs of each head (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the first head's seed (default %(default)s)")
    parser.add_argument("--float-weights", action="store_true", help="write float32 weights (default: int8)")
    parser.add_argument("--force", action="store_true", help="replace --out when it exists")


FLAGS = {"heads": "--heads", "context_embeddings": "--context", "variants": "--variants",
         "talk_per_variant": "--talk-per-variant", "silence_per_variant": "--silence-per-variant",
         "unknown_weight": "--unknown-weight", "partial_share": "--partial-words", "speed_share": "--speed",
         "partial_kept": "--partial-kept", "partial_end_share": "--partial-end-share",
         "talk_ends_share": "--talk-ends", "talk_words_share": "--talk-words",
         "unknown_voices_share": "--unknown-voices", "snr_db": "--snr-db", "epochs": "--epochs",
         "seed": "--seed", "placement": "--placement"}


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import input_file, refuse_existing, refuse_file_in_the_way, user_names
    from edgesense.shipped import model_argument

    args.model = model_argument(args.model)  # the default, models/edgesense.tflite, from any folder (as bench)
    input_file("--model", args.model)
    noise = args.noise or [SHARED / "ambient", SHARED / "noise"]
    for flag, folder in [("--speech-commands", args.speech_commands), ("--negatives", args.negatives)] + \
            [("--noise", n) for n in noise] + [("--hard-negatives", h) for h in args.hard_negatives] + \
            [("--talk", t) for t in args.talk]:
        require(Path(folder).is_dir(), flag, "a folder", str(folder))
    require(args.out.suffix == ".tflite", "--out", "a .tflite path", str(args.out))
    # refused now, not once the heads have trained (a folder is never replaced, --force or not)
    refuse_file_in_the_way("--out", args.out.parent, expected="a folder for the heads file")
    require(not args.out.is_dir(), "--out", "a .tflite file to write, not a folder", str(args.out))
    refuse_existing("--out", args.out, force=args.force)
    defaults = StreamHeadsOptions()
    partial_kept = defaults.partial_kept if args.partial_kept is None else tuple(args.partial_kept)
    partial_end_share = defaults.partial_end_share if args.partial_end_share is None else args.partial_end_share
    with user_names(FLAGS):
        options = StreamHeadsOptions(heads=args.heads, context_embeddings=args.context, variants=args.variants,
                                     talk_per_variant=args.talk_per_variant,
                                     silence_per_variant=args.silence_per_variant,
                                     unknown_weight=args.unknown_weight, partial_share=args.partial_words,
                                     partial_kept=partial_kept, partial_end_share=partial_end_share,
                                     speed_share=args.speed, talk_ends_share=args.talk_ends,
                                     talk_words_share=args.talk_words,
                                     unknown_voices_share=args.unknown_voices, snr_db=tuple(args.snr_db),
                                     epochs=args.epochs,
                                     seed=args.seed,
                                     placement=args.placement, int8_weights=not args.float_weights)
    # A flag that acts only with another is refused without it, not silently left unused.
    for flag, given, needed, value in (
            ("--partial-kept", args.partial_kept is not None, "--partial-words", args.partial_words),
            ("--partial-end-share", args.partial_end_share is not None, "--partial-words", args.partial_words),
            ("--talk-ends", args.talk_ends > 0, "--talk-per-variant", args.talk_per_variant),
            ("--talk-words", args.talk_words > 0, "--talk-per-variant", args.talk_per_variant)):
        if given and not value > 0:
            raise ValueError(f"{flag}: acts only with {needed} above 0, got {needed} {value:g}")
    blob, metadata = train_stream_heads(args.model, args.speech_commands, noise, args.negatives, options,
                                        hard_negatives=args.hard_negatives, talk=args.talk)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, blob, what="the stream heads")
    print(f"wrote {args.out} ({len(blob):,} bytes; {options.heads} heads on {options.context_embeddings} embeddings; "
          f"validation windows {metadata['validation_window_accuracy']}; {metadata['elapsed_s']:.0f} s)")
    return 0
