"""Sound that belongs to the place: training rows whose audio is the scene's own ambience.

Photos and sounds come unpaired, so the scene head used to see each photo beside an
unrelated speech clip and learned that sound says nothing about the place. With a
:class:`PlaceSounds` pool (``data.scene_ambient``: ``CLASS/*.wav``, only the training pool of
:func:`edgesense.train.pools.split_recordings`; plus the sounds of a paired ``data.av``
folder), every training row's audio carries the sound of its photo's class:

* with ``only_probability`` the row's audio is the place's sound alone, at a level drawn from
  ``level_dbfs_range``; its command label becomes ``_silence_`` (nobody speaks), and the
  command loss is switched off unless the drawn clip was ``_silence_`` anyway, so the command
  classes keep their balance;
* otherwise the drawn command clip is spoken over the place's sound at an SNR drawn from
  ``snr_db_range``: speech over a forest is still a forest, and still the word.

A snippet that holds no sound (quieter than one 16-bit step: a recording's silent stretch) is used as it
is in either case, never raised to a level.

Pure numpy; the batch generators in :mod:`edgesense.train.trainer` call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgesense.recognition.gate import INT16_FULL_SCALE
from edgesense.schema.validate import is_number, require, require_range
from edgesense.train.augment import NoisePool, prepare_noise_pool

__all__ = ["PlaceSounds", "SceneAudioOptions", "level_gain", "mix_under", "place_rows"]

_POWER_FLOOR = 1e-12
#: A snippet whose RMS is under one step of 16-bit audio (-90.3 dBFS) holds no sound of its place, only what
#: rounding left of silence (a loop's silent stretch: a 1-step pulse here and there, as most of the shared sea
#: recording flightgear-base_wave is). It is used as it is, never raised to a level or an SNR: that took 50 to 90 dB
#: of gain and made the place's row hiss and clicks.
_SILENT_RMS = 1.0 / INT16_FULL_SCALE


@dataclass(frozen=True, kw_only=True)
class SceneAudioOptions:
    """How a place's sound enters a training row (see the module docstring)."""

    only_probability: float = 0.4
    level_dbfs_range: tuple[float, float] = (-45.0, -15.0)
    snr_db_range: tuple[float, float] = (0.0, 20.0)

    def __post_init__(self) -> None:
        require(is_number(self.only_probability) and 0.0 <= self.only_probability <= 1.0, "only_probability",
                "a probability in [0, 1]", self.only_probability)
        require_range("level_dbfs_range", self.level_dbfs_range, hi=0.0)
        require_range("snr_db_range", self.snr_db_range)


class PlaceSounds:
    """Recordings of each scene class, for drawing 1-s snippets of a class's sound.

    ``recordings[c]`` are the 1-D float recordings of scene class ``c`` (may be empty: that
    class has no sound, and its rows keep their unrelated audio)."""

    def __init__(self, recordings: Sequence[Sequence[np.ndarray]], clip_samples: int):
        self.pools: list[NoisePool | None] = [prepare_noise_pool(list(r), clip_samples) if len(r) else None
                                              for r in recordings]
        self.has_sound = np.array([p is not None for p in self.pools], dtype=bool)
        self.clip_samples = int(clip_samples)
        require(bool(self.has_sound.any()), "recordings", "at least one scene class with a recording", "none")

    def draw(self, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One snippet per row of its class (zeros for a class without sound), float32 (B, clip)."""
        n = self.clip_samples
        out = np.zeros((len(classes), n), np.float32)
        for i, c in enumerate(classes):
            pool = self.pools[int(c)]
            if pool is None:
                continue
            k = rng.integers(0, pool.lengths.size)
            start = pool.starts[k] + rng.integers(0, pool.lengths[k] - n + 1)
            out[i] = pool.samples[start:start + n]
        return out


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(np.mean(np.square(x, dtype=np.float64), axis=-1), _POWER_FLOOR))


def _sound_gain(sound: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``gain`` per row of ``sound``, but 1 for a row quieter than :data:`_SILENT_RMS` (silence is not raised)."""
    return np.where(_rms(sound) < _SILENT_RMS, 1.0, gain)


def level_gain(sound: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The gain per row of ``sound`` (snippets, one a row) that sets its RMS to ``level`` (a ratio to full scale),
    but 1 for a row that holds no sound (:data:`_SILENT_RMS`): a place's snippet set to a level."""
    return _sound_gain(sound, level / _rms(sound))


def place_rows(scene_classes: np.ndarray, command_labels: np.ndarray, sounds: PlaceSounds,
               rng: np.random.Generator, options: SceneAudioOptions, *, silence_id: int) -> dict[str, np.ndarray]:
    """Which rows carry their place's sound and how; see the module docstring.

    Returns ``sound`` (B, clip) float32 (zeros where a class has none), ``only`` (rows whose
    audio is that sound alone, already at its level), ``under`` (rows where it goes under the
    spoken clip, see :func:`mix_under`), ``labels`` (the command labels after: ``_silence_`` on
    ``only`` rows) and ``command_weight`` (0 where the drawn word was replaced by the place).
    """
    scene_classes = np.asarray(scene_classes)
    command_labels = np.asarray(command_labels)
    has = sounds.has_sound[scene_classes]
    only = has & ((rng.random(len(scene_classes)) < options.only_probability) | (command_labels == silence_id))
    sound = sounds.draw(scene_classes, rng)
    level = 10.0 ** (rng.uniform(*options.level_dbfs_range, size=len(scene_classes)) / 20.0)
    sound[only] *= level_gain(sound[only], level[only]).astype(np.float32)[:, None]
    labels = np.where(only, silence_id, command_labels).astype(command_labels.dtype)
    weight = np.where(only & (command_labels != silence_id), 0.0, 1.0).astype(np.float32)
    return {"sound": sound, "only": only, "under": has & ~only, "labels": labels, "command_weight": weight}


def mix_under(clips: np.ndarray, rows: dict[str, np.ndarray], rng: np.random.Generator,
              options: SceneAudioOptions) -> np.ndarray:
    """The clips with :func:`place_rows`' sound: replacing ``only`` rows, under the speech of
    ``under`` rows at an SNR from ``options.snr_db_range``; clipped to [-1, 1]."""
    out = np.array(clips, dtype=np.float32, copy=True)
    only, under, sound = rows["only"], rows["under"], rows["sound"]
    out[only] = sound[only]
    if under.any():
        snr_db = rng.uniform(*options.snr_db_range, size=int(under.sum()))
        gain = _sound_gain(sound[under], _rms(out[under]) / (_rms(sound[under]) * 10.0 ** (snr_db / 20.0)))
        out[under] += (gain.astype(np.float32)[:, None] * sound[under])
    return np.clip(out, -1.0, 1.0)
