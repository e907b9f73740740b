"""The example bank: every training clip augmented ``variants`` times, with stream-aware
negatives, turned into features once and cached (:mod:`edgesense.train.cache`).

Per variant (its own seed): speed -> **word placement** (the word moved anywhere in the 1 s
window, kept whole) or, for a share of command clips, a **partial word** (only part of the word
left in the window; labelled ``_unknown_``) -> reverberation (a synthetic room or a **real room
response**) -> gain -> background noise. Beside the labelled clips each variant draws
**background windows** (``_silence_``) from the noise recordings at -70...-30 dBFS and **other
speech** windows (``_unknown_``) cut from other people's speech. Noise, room responses and other
speech come from the *training pool* of :func:`edgesense.train.pools.split_recordings` only.

Known negatives (background, other speech, partial words) keep their hard labels: the
``known_negative`` flag turns distillation off for them (a teacher that never heard talk fires
on it too). Training epochs then only draw rows and apply SpecAugment: no per-step audio work.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions, log_mel_batch
from edgesense.schema.validate import is_number, require, require_kinds, require_range
from edgesense.train import augment

__all__ = [
    "BankOptions",
    "ExampleBank",
    "augment_stream_rows",
    "background_windows",
    "convolve_rirs",
    "log_mel_features",
    "place_words",
    "prepare_rirs",
    "speech_windows",
    "word_extent",
]

log = logging.getLogger(__name__)

EXTENT_FRAME_MS = 10.0  #: frame length of the energy envelope that finds a word
_POWER_FLOOR = augment._POWER_FLOOR
_RIR_MAX_MS = 1000.0  #: real room responses are cut to this length after the direct path
_FEATURE_BATCH = 512  #: clips per log-mel call (bounds the spectra's memory)
_AT_END_SHARE = 0.5  #: partial words: share whose word runs off the window's end (the rest off its start)


@dataclass(frozen=True, kw_only=True)
class BankOptions:
    """How the cached example bank is made (see the module docstring).

    ``variants``: augmented copies of every training clip (0: no bank; every step augments the
    drawn clips anew, the trainer before the bank, about twice as slow). ``placement_probability``: share of
    clips whose word is moved to a uniformly drawn place where it fits whole (the others keep
    the ±``audio_augment.max_shift_ms`` shift). ``partial_word_probability``: share of command
    clips cut so that only ``partial_fraction_range`` of the word stays in the window, labelled
    ``_unknown_``. ``word_floor_db``: the word spans the 10 ms frames within this many dB of its
    loudest frame. ``silence_per_variant`` background windows at ``silence_dbfs_range`` and up to
    ``other_speech_per_variant`` windows of other speech are added per variant. The range is each
    window's level as drawn: like every row it then takes ``audio_augment``'s gain and noise, so the
    trained rows span the range widened by ``gain_db_range`` (and up to 3 dB more at 0 dB SNR).
    ``real_rir_probability``: share of clips convolved with a real room response (when
    ``data.rirs`` names some), drawn before the synthetic rooms of ``audio_augment``.

    The per-step pipeline (``variants: 0``) draws the same stream-aware data at every step
    (:func:`augment_stream_rows`): placement, partial words and real rooms as above, and
    ``background_silence_probability`` of its drawn ``_silence_`` rows replaced by a background
    window at ``silence_dbfs_range`` (its other speech is ``train.other_speech_share``).
    """

    variants: int = 4
    placement_probability: float = 1.0
    partial_word_probability: float = 0.1
    partial_fraction_range: tuple[float, float] = (0.1, 0.5)
    word_floor_db: float = 25.0
    silence_per_variant: int = 300
    silence_dbfs_range: tuple[float, float] = (-70.0, -30.0)
    other_speech_per_variant: int = 600
    other_speech_min_dbfs: float = -45.0
    real_rir_probability: float = 0.3
    background_silence_probability: float = 0.5

    def __post_init__(self) -> None:
        require_kinds(self)
        require(isinstance(self.variants, int) and self.variants >= 0, "variants", "an integer >= 0", self.variants)
        for name in ("placement_probability", "partial_word_probability", "real_rir_probability",
                     "background_silence_probability"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, name, "a probability in [0, 1]", value)
        require_range("partial_fraction_range", self.partial_fraction_range, lo=0.0, hi=1.0)
        require_range("silence_dbfs_range", self.silence_dbfs_range, hi=0.0)
        require(is_number(self.word_floor_db) and self.word_floor_db > 0, "word_floor_db", "a finite number > 0",
                self.word_floor_db)
        require(is_number(self.other_speech_min_dbfs) and self.other_speech_min_dbfs <= 0, "other_speech_min_dbfs",
                "a finite level <= 0 dBFS", self.other_speech_min_dbfs)
        for name in ("silence_per_variant", "other_speech_per_variant"):
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 0, name, "an integer >= 0", value)


# --------------------------------------------------------------------------- pieces (pure numpy)


def _dbfs(x: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(np.mean(np.square(x, dtype=np.float64), axis=-1), _POWER_FLOOR))


def word_extent(clips: np.ndarray, *, sample_rate_hz: int = 16000,
                floor_db: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` sample indices per clip of the span of 10 ms frames within ``floor_db``
    of the clip's loudest frame (the whole clip for digital silence)."""
    x = np.asarray(clips, dtype=np.float32)
    frame = int(round(sample_rate_hz * EXTENT_FRAME_MS / 1000))
    count = x.shape[1] // frame
    energy = np.empty((x.shape[0], count), np.float64)
    for rows in augment.row_passes(x.shape[0]):  # the squares in float64 are twice the clips' size
        energy[rows] = _dbfs(x[rows, :count * frame].reshape(rows.stop - rows.start, count, frame))
    loud = energy >= energy.max(axis=1, keepdims=True) - floor_db
    first = np.argmax(loud, axis=1)
    last = count - 1 - np.argmax(loud[:, ::-1], axis=1)
    return first * frame, np.minimum((last + 1) * frame, x.shape[1])


def place_words(clips: np.ndarray, rng: np.random.Generator, *, placeable: np.ndarray, partial_ok: np.ndarray,
                placement_probability: float, partial_probability: float,
                partial_fraction_range: tuple[float, float] = (0.1, 0.5), max_shift_samples: int = 0,
                shift_probability: float = 1.0, sample_rate_hz: int = 16000, floor_db: float = 25.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Move each ``placeable`` clip's word (see :func:`word_extent`) to a random place where it
    fits whole (with ``placement_probability``; else, with ``shift_probability``, a shift of at
    most ``max_shift_samples``);
    cut a ``partial_ok`` clip with ``partial_probability`` so that only a fraction in
    ``partial_fraction_range`` of its word stays in the window. Returns ``(clips, partial)``."""
    x = np.asarray(clips, dtype=np.float32)
    batch, n = x.shape
    start, end = word_extent(x, sample_rate_hz=sample_rate_hz, floor_db=floor_db)
    length = end - start
    shifts = rng.integers(-max_shift_samples, max_shift_samples + 1, size=batch)
    if shift_probability < 1.0:  # (always shifting draws nothing more: the same rows as before there was a choice)
        shifts[rng.random(batch) >= shift_probability] = 0
    place = placeable & (rng.random(batch) < placement_probability)
    target = (rng.random(batch) * (n - length + 1)).astype(np.int64)
    shifts = np.where(place, target - start, shifts)
    partial = partial_ok & (rng.random(batch) < partial_probability) & (length > 0)
    visible = (rng.uniform(*partial_fraction_range, size=batch) * length).astype(np.int64)
    at_end = rng.random(batch) < _AT_END_SHARE
    partial_target = np.where(at_end, n - visible, visible - length)
    shifts = np.where(partial, partial_target - start, shifts)
    shifts[~placeable & ~partial] = 0
    return augment.shift_rows(x, shifts), partial


def prepare_rirs(recordings: Sequence[np.ndarray], *, sample_rate_hz: int = 16000) -> np.ndarray:
    """Real room responses -> ``(R, taps)``: each starts at its direct path (the peak), is cut
    to 1 s and scaled to unit peak."""
    taps = int(round(_RIR_MAX_MS * sample_rate_hz / 1000))
    out = np.zeros((len(recordings), taps), np.float32)
    for i, rec in enumerate(recordings):
        rec = np.asarray(rec, dtype=np.float32)
        peak = int(np.argmax(np.abs(rec)))
        part = rec[peak:peak + taps]
        out[i, :part.size] = part / max(float(np.abs(part).max()), _POWER_FLOOR)
    return out


def convolve_rirs(clips: np.ndarray, rng: np.random.Generator, rirs: np.ndarray, *,
                  probability: float) -> tuple[np.ndarray, np.ndarray]:
    """Convolve a ``probability`` share of clips with a randomly drawn row of ``rirs``, keeping
    length and RMS; returns ``(clips, applied)``."""
    x = np.asarray(clips, dtype=np.float32)
    batch, n = x.shape
    apply = (rng.random(batch) < probability) & (len(rirs) > 0)
    out = x.copy()
    rows = np.flatnonzero(apply)
    if rows.size == 0:
        return out, apply
    which = rng.integers(0, len(rirs), size=rows.size)
    size = 1 << int(np.ceil(np.log2(n + rirs.shape[1])))
    for part in augment.row_passes(rows.size):  # the spectra are 8 times the clips' size: a pass at a time
        dry = x[rows[part]]
        wet = np.fft.irfft(np.fft.rfft(dry, size, axis=1) * np.fft.rfft(rirs[which[part]], size, axis=1), size,
                           axis=1)[:, :n]
        dry_rms = np.sqrt(np.mean(np.square(dry, dtype=np.float64), axis=1))
        wet_rms = np.sqrt(np.maximum(np.mean(np.square(wet), axis=1), _POWER_FLOOR))
        scaled = wet * (dry_rms / wet_rms)[:, None]  # (float64: wet is float32)
        out[rows[part]] = np.clip(scaled, -1.0, 1.0, out=scaled)
    return out, apply


def background_windows(pool: augment.NoisePool, count: int, rng: np.random.Generator, *,
                       dbfs_range: tuple[float, float]) -> np.ndarray:
    """``count`` one-clip windows of the pool's recordings, each scaled to an RMS level drawn
    uniformly (in dB) from ``dbfs_range``."""
    n = pool.clip_samples
    which = rng.integers(0, pool.lengths.size, size=count)
    offsets = (rng.random(count) * (pool.lengths[which] - n + 1)).astype(np.int64)
    x = pool.windows(pool.starts[which] + offsets, np.float64)
    level = rng.uniform(dbfs_range[0], dbfs_range[1], size=count)
    gain = 10.0 ** ((level - _dbfs(x)) / 20.0)
    return np.clip(x * gain[:, None], -1.0, 1.0).astype(np.float32)


def speech_windows(recordings: Sequence[np.ndarray], clip_samples: int, *, min_dbfs: float) -> np.ndarray:
    """Every window of ``clip_samples`` at half-window hops of each recording (a shorter one is
    centred in one window) whose level is at least ``min_dbfs``."""
    hop = clip_samples // 2
    windows = []
    for rec in recordings:
        rec = np.asarray(rec, dtype=np.float32)
        if rec.size < clip_samples:
            padded = np.zeros(clip_samples, np.float32)
            padded[(clip_samples - rec.size) // 2:][:rec.size] = rec
            rec = padded
        starts = np.arange(0, rec.size - clip_samples + 1, hop)
        windows.append(rec[starts[:, None] + np.arange(clip_samples)[None, :]])
    if not windows:
        return np.zeros((0, clip_samples), np.float32)
    out = np.concatenate(windows)
    return out[_dbfs(out) >= min_dbfs]


def log_mel_features(clips: np.ndarray, frontend: AudioFrontendOptions) -> np.ndarray:
    """Clips ``(N, samples)`` -> float32 features ``(N, frames, bins)``, a batch of clips at a time."""
    if len(clips) <= _FEATURE_BATCH:  # one call (a training step's batch): its own array, without a copy
        features = log_mel_batch(clips, frontend)
        if features.shape == (len(clips), *frontend.feature_shape) and features.dtype == np.float32:
            return features
    out = np.empty((len(clips), *frontend.feature_shape), np.float32)
    for start in range(0, len(clips), _FEATURE_BATCH):
        out[start:start + _FEATURE_BATCH] = log_mel_batch(clips[start:start + _FEATURE_BATCH], frontend)
    return out


def augment_stream_rows(clips: np.ndarray, rng: np.random.Generator, *, options: BankOptions,
                        augment_options: augment.AudioAugmentOptions, sample_rate_hz: int, placeable: np.ndarray,
                        partial_ok: np.ndarray, noise_pool: augment.NoisePool | None, rirs: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The stream-aware augmentation both pipelines share: speed -> word placement or a partial
    word (:func:`place_words`) -> a real room (``options.real_rir_probability``) or a synthetic
    one -> gain -> background noise. Returns ``(clips, partial)``: the rows cut to part of a word,
    which the caller relabels ``_unknown_``."""
    x = clips
    if augment_options.speed_probability > 0:
        x = augment.change_speed(x, rng, speed_range=augment_options.speed_range,
                                 probability=augment_options.speed_probability)
    x, partial = place_words(x, rng, placeable=placeable, partial_ok=partial_ok,
                             placement_probability=options.placement_probability,
                             partial_probability=options.partial_word_probability,
                             partial_fraction_range=options.partial_fraction_range,
                             max_shift_samples=augment_options.max_shift_samples,
                             shift_probability=augment_options.shift_probability,
                             sample_rate_hz=sample_rate_hz, floor_db=options.word_floor_db)
    x, real_room = convolve_rirs(x, rng, rirs, probability=options.real_rir_probability if len(rirs) else 0.0)
    if augment_options.reverb_probability > 0:
        reverb = augment.add_reverb(x, rng, sample_rate_hz=augment_options.sample_rate_hz,
                                    rt60_ms_range=augment_options.rt60_ms_range,
                                    probability=augment_options.reverb_probability)
        reverb[real_room] = x[real_room]  # (in place: a third copy of a whole set's rows would be one too many)
        x = reverb
    x = augment.random_gain(x, rng, gain_db_range=augment_options.gain_db_range,
                            probability=augment_options.gain_probability)
    if noise_pool is not None:
        x = augment.mix_noise(x, noise_pool, rng, snr_db_range=augment_options.snr_db_range,
                              probability=augment_options.noise_probability,
                              silent_reference_dbfs=augment_options.silent_reference_dbfs)
    return x, partial


# --------------------------------------------------------------------------- the bank


@dataclass(frozen=True)
class ExampleBank:
    """Rows of cached training examples. ``source``: the training clip a row was made from
    (-1 for background and other-speech windows)."""

    features: np.ndarray  # float16 (M, frames, bins)
    labels: np.ndarray  # int32 (M,)
    known_negative: np.ndarray  # bool (M,): hard label only, no distillation
    synthetic: np.ndarray  # bool (M,)
    source: np.ndarray  # int32 (M,)
    embeddings: np.ndarray | None = None  # float16 (M, windows, dim): the audio teacher's input

    def __len__(self) -> int:
        return int(self.labels.size)


def make_variant(clips: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, *, variant: int, seed: int,
                 options: BankOptions, augment_options: augment.AudioAugmentOptions,
                 frontend: AudioFrontendOptions, word_ids: np.ndarray, silence_id: int, unknown_id: int,
                 noise_pool: augment.NoisePool | None, rirs: np.ndarray, other_speech: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """One variant of the bank as arrays (``clips`` are returned too, for the teacher)."""
    rng = np.random.default_rng([seed, variant])
    rows = [clips]
    row_labels = [labels]
    negative = [labels == silence_id]
    source = [np.arange(labels.size, dtype=np.int32)]
    is_synthetic = [synthetic]
    if noise_pool is not None and options.silence_per_variant:
        rows.append(background_windows(noise_pool, options.silence_per_variant, rng,
                                       dbfs_range=options.silence_dbfs_range))
        row_labels.append(np.full(options.silence_per_variant, silence_id, np.int32))
    if other_speech.shape[0] and options.other_speech_per_variant:
        take = rng.choice(other_speech.shape[0], size=min(options.other_speech_per_variant, other_speech.shape[0]),
                          replace=False)
        rows.append(other_speech[np.sort(take)])
        row_labels.append(np.full(take.size, unknown_id, np.int32))
    for extra in rows[1:]:
        negative.append(np.ones(extra.shape[0], bool))
        source.append(np.full(extra.shape[0], -1, np.int32))
        is_synthetic.append(np.zeros(extra.shape[0], bool))
    x = np.concatenate(rows, dtype=np.float32)  # (not concatenated, then copied: the bank's rows are a whole set)
    y = np.concatenate(row_labels).astype(np.int32)
    negative_mask = np.concatenate(negative)
    from_clip = np.concatenate(source) >= 0
    is_word = np.isin(y, word_ids) & from_clip

    x, partial = augment_stream_rows(x, rng, options=options, augment_options=augment_options,
                                     sample_rate_hz=frontend.sample_rate_hz,
                                     placeable=from_clip & (y != silence_id), partial_ok=is_word,
                                     noise_pool=noise_pool, rirs=rirs)
    y = np.where(partial, unknown_id, y).astype(np.int32)
    negative_mask |= partial
    features = log_mel_features(x, frontend)
    return {"clips": x, "features": features.astype(np.float16), "labels": y, "known_negative": negative_mask,
            "synthetic": np.concatenate(is_synthetic), "source": np.concatenate(source)}


def build_bank(clips: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, *, seed: int, options: BankOptions,
               augment_options: augment.AudioAugmentOptions, frontend: AudioFrontendOptions,
               word_ids: np.ndarray, silence_id: int, unknown_id: int, noise: Sequence[np.ndarray],
               rirs: np.ndarray, other_speech: np.ndarray, cache, embed=None, embed_key=None) -> ExampleBank:
    """All ``options.variants`` variants, each computed once and cached under a key of the
    clips' content, the noise, rooms and other speech, every option and the seed; ``embed``
    (clips -> teacher embeddings, identified by ``embed_key``) adds the teacher's input."""
    from edgesense.train.cache import content_key
    from edgesense.train.data import phase

    noise_pool = augment.prepare_noise_pool(noise, frontend.clip_samples) if len(noise) else None
    inputs_key = content_key(clips, labels, synthetic, list(noise), rirs, other_speech, word_ids.tolist(),
                             silence_id, unknown_id)
    # Not ``variants``: a run with more variants reuses the variants a shorter one computed.
    settings_key = content_key(repr(dataclasses.replace(options, variants=1)), repr(augment_options), repr(frontend),
                               seed, embed_key)
    parts = []
    for variant in range(options.variants):
        def compute(variant=variant):
            with phase(log, "example bank: computing variant %d of %d (%d clips%s; cached once done)", variant + 1,
                       options.variants, len(clips), ", with the teacher's embeddings" if embed is not None else ""):
                out = make_variant(clips, labels, synthetic, variant=variant, seed=seed, options=options,
                                   augment_options=augment_options, frontend=frontend, word_ids=word_ids,
                                   silence_id=silence_id, unknown_id=unknown_id, noise_pool=noise_pool, rirs=rirs,
                                   other_speech=other_speech)
                x = out.pop("clips")
                if embed is not None:
                    out["embeddings"] = embed(x).astype(np.float16)
                return out

        parts.append(cache.get_or_compute("bank", content_key(inputs_key, settings_key, variant), compute))
        log.info("example bank: variant %d of %d ready (%d rows)", variant + 1, options.variants,
                 parts[-1]["labels"].size)
    joined = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return ExampleBank(features=joined["features"], labels=joined["labels"],
                       known_negative=joined["known_negative"], synthetic=joined["synthetic"],
                       source=joined["source"], embeddings=joined.get("embeddings"))
