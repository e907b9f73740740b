"""A second audio model beside the student: stream heads on Google's ``speech_embedding``.

The student (the fused model's audio path) scores every command hop on the last second of
log-mel frames. The **second opinion** listens to the same audio through
:class:`edgesense.runtime.speech_embedding.SpeechEmbeddingStream` (an embedding every 80 ms) and
runs a small file of **stream heads** (``edgesense train-stream-heads``; the mean of several
heads, trained on words anywhere in the window over noise, on continuous talk and on background)
on the newest ``context_embeddings`` embeddings. Each hop's command posteriors are then the
weighted mean ``student_weight * student + (1 - student_weight) * heads``, and the recognizer
sees that mean. A hop before the heads have their first context has no result (like the
student before its first full second).

The heads file is a float TFLite model: input ``(1, context, 96)`` embeddings, output
``(1, classes)`` probabilities, with its metadata JSON (kind ``stream_heads``, the labels, the
context, the embedding's wheel) embedded under the name ``edgesense``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np

from edgesense.runtime.flatbuffer import read_layout
from edgesense.runtime.interpreter import MAX_THREADS, InterpreterOptions, make_interpreter, read_model_bytes
from edgesense.runtime.model import embedded_metadata
from edgesense.runtime.speech_embedding import (
    DEFAULT_MEL_BLOCK_MS, DISTRIBUTION, EMBEDDING_DIM, MAX_MEL_BLOCK_MS, MEL_HOP_MS, SAMPLE_RATE_HZ,
    SpeechEmbeddingStream, SpeechEmbeddingStreamOptions,
)
from edgesense.schema.validate import is_int, is_number, one_line, require

__all__ = ["HEADS_KIND", "SecondOpinion", "SecondOpinionOptions", "StreamHeads", "is_stream_heads",
           "mel_block_ms_for_hop"]

logger = logging.getLogger(__name__)

HEADS_KIND = "stream_heads"
HEADS_FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class SecondOpinionOptions:
    """The ``second_opinion`` section of a device config.

    ``heads_path``: a stream-heads file (``edgesense train-stream-heads``), or ``null`` for none
    (the student alone). A relative path resolves against the config's folder.
    ``student_weight``: the student's share of each hop's posteriors (0: the heads alone).
    ``num_threads``: the second model's interpreter threads."""

    heads_path: str | None = None
    student_weight: float = 0.3
    num_threads: int = 1

    def __post_init__(self) -> None:
        require(self.heads_path is None or (isinstance(self.heads_path, str) and self.heads_path.strip() != ""),
                "heads_path", "null or a path to a stream-heads .tflite", self.heads_path)
        require(is_number(self.student_weight) and 0.0 <= self.student_weight < 1.0, "student_weight",
                "a number in [0, 1)", self.student_weight)
        require(isinstance(self.num_threads, int) and not isinstance(self.num_threads, bool)
                and 1 <= self.num_threads <= MAX_THREADS, "num_threads", f"an integer in [1, {MAX_THREADS}]",
                self.num_threads)

    @property
    def enabled(self) -> bool:
        return self.heads_path is not None


def _heads_metadata(data: bytes, what: str) -> dict[str, Any] | None:
    """The embedded metadata JSON object, or ``None`` when there is none (not a heads file)."""
    layout = read_layout(data, what)
    try:
        return embedded_metadata(layout, what)
    except ValueError:
        return None


def is_stream_heads(path: str | os.PathLike[str] | bytes | bytearray) -> bool:
    """Whether ``path`` (or a model's bytes) is a stream-heads file (its metadata says so); ``False`` for anything
    else."""
    try:
        data, what = read_model_bytes(path)
        metadata = _heads_metadata(data, what)
    except (ValueError, OSError):
        return False
    return metadata is not None and metadata.get("kind") == HEADS_KIND


class StreamHeads:
    """A stream-heads file: ``(context, 96)`` embeddings -> class probabilities."""

    def __init__(self, path: str | os.PathLike[str] | bytes | bytearray,
                 options: InterpreterOptions = InterpreterOptions(), *, name: str | None = None) -> None:
        data, what = read_model_bytes(path)
        what = name or what  # the file the caller read ``path``'s bytes from
        metadata = _heads_metadata(data, what)
        kind = metadata.get("kind") if metadata is not None else None
        if metadata is None or kind != HEADS_KIND:
            raise ValueError(f"{what}: expected a stream-heads file (metadata kind {HEADS_KIND!r}; edgesense "
                             f"train-stream-heads), got " + (f"kind {kind!r}" if kind else "a model without one"))
        version = metadata.get("format_version")
        require(is_int(version) and version == HEADS_FORMAT_VERSION, f"{what}: metadata format_version",
                str(HEADS_FORMAT_VERSION), version)
        labels, context = metadata.get("labels"), metadata.get("context_embeddings")
        require(isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels),
                f"{what}: metadata labels", "a list of class names", labels)
        require(is_int(context) and context >= 1, f"{what}: metadata context_embeddings", "an integer >= 1", context)
        self.path, self.size_bytes = what, len(data)
        self.metadata: dict[str, Any] = metadata
        self.labels: tuple[str, ...] = tuple(cast("list[str]", labels))
        self.context: int = cast(int, context)
        self._interpreter = make_interpreter(data, options, name=what)
        try:
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:  # a damaged file the interpreter cannot prepare
            raise ValueError(f"{what}: cannot be prepared to run ({one_line(exc)})") from None
        try:
            inp, out = self._interpreter.get_input_details()[0], self._interpreter.get_output_details()[0]
        except UnicodeDecodeError as exc:  # a damaged file: a tensor name that is not UTF-8
            raise ValueError(f"{what}: a tensor name is not UTF-8 ({one_line(exc)}); damaged?") from None
        wants = (("input", inp, (1, self.context, EMBEDDING_DIM)), ("output", out, (1, len(self.labels))))
        for kind, detail, want in wants:
            dtype, shape = np.dtype(detail["dtype"]), tuple(int(n) for n in detail["shape"])
            if dtype != np.float32 or shape != want:
                raise ValueError(f"{what}: {kind}: expected float32 {want}, got {dtype} {shape}")
        self._input, self._output = inp["index"], out["index"]

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """``(context, 96)`` -> ``(classes,)`` probabilities."""
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(embeddings[None], dtype=np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)[0].astype(np.float32)


def mel_block_ms_for_hop(hop_ms: float) -> float:
    """The mel block of a second opinion scored every ``hop_ms``: the hop itself within the stream's bounds
    ([10 ms, 10 s]); a shorter hop's smallest multiple from 10 ms, a longer one's largest whole fraction up to
    10 s, so that every block still ends on a hop."""
    require(is_number(hop_ms) and hop_ms > 0, "hop_ms", "a positive number of ms", hop_ms)
    if hop_ms < MEL_HOP_MS:
        return float(max(MEL_HOP_MS, hop_ms * math.ceil(MEL_HOP_MS / hop_ms)))
    if hop_ms > MAX_MEL_BLOCK_MS:
        return float(min(MAX_MEL_BLOCK_MS, hop_ms / math.ceil(hop_ms / MAX_MEL_BLOCK_MS)))
    return float(hop_ms)


class SecondOpinion:
    """The heads over a live stream, blended into the student's posteriors (module docstring).

    ``push(samples)`` every chunk, in order; at a command hop :attr:`ready` says whether the heads
    have their context, and :meth:`blend` turns the student's posteriors into the mean. ``hop_ms``: the
    command hop, the stream's mel block (the device loop and the benchmark's streams compute the same
    embeddings, whatever their chunks: :mod:`edgesense.runtime.speech_embedding`; a hop outside the block's
    bounds, any the scheduler allows: :func:`mel_block_ms_for_hop`); ``None``: one mel run per push (a caller
    that pushes whole windows)."""

    def __init__(self, options: SecondOpinionOptions, *, labels: Sequence[str], sample_rate_hz: int,
                 hop_ms: float | None = DEFAULT_MEL_BLOCK_MS) -> None:
        require(isinstance(options, SecondOpinionOptions) and options.enabled, "options",
                "SecondOpinionOptions with a heads_path", options)
        require(sample_rate_hz == SAMPLE_RATE_HZ, "second_opinion", f"a {SAMPLE_RATE_HZ} Hz stream "
                "(speech_embedding's rate)", f"{sample_rate_hz} Hz")
        block_ms = None if hop_ms is None else mel_block_ms_for_hop(hop_ms)
        self.options = options
        threads = InterpreterOptions(num_threads=options.num_threads)
        try:
            self.heads = StreamHeads(options.heads_path, threads)  # type: ignore[arg-type]
        except (ValueError, OSError) as exc:  # the config field the user wrote, then what is wrong with the file
            raise ValueError(f"second_opinion.heads_path: {exc}") from None
        if self.heads.labels != tuple(labels):  # e.g. a model of other words beside heads of the ten
            raise ValueError(f"second_opinion.heads_path: {self.heads.path}: labels: expected the model's "
                             f"{list(labels)}, got {list(self.heads.labels)}: heads of the model's words come from "
                             "edgesense train-stream-heads --model MODEL")
        self.stream = SpeechEmbeddingStream(SpeechEmbeddingStreamOptions(
            num_threads=options.num_threads, max_embeddings=self.heads.context, mel_block_ms=block_ms))
        self._probs: np.ndarray | None = None
        self._seen = -1

    @property
    def ready(self) -> bool:
        return self.stream.count >= self.heads.context

    def push(self, samples: np.ndarray) -> None:
        self.stream.push(samples)

    def reset(self) -> None:
        self.stream.reset()
        self._probs, self._seen = None, -1

    def probabilities(self) -> np.ndarray | None:
        """The heads on the newest context (computed once per new embedding), or ``None`` before it."""
        if not self.ready:
            return None
        if self._seen != self.stream.count:
            self._probs = self.heads(self.stream.latest(self.heads.context))  # type: ignore[arg-type]
            self._seen = self.stream.count
        return self._probs

    def blend(self, student: np.ndarray) -> np.ndarray:
        """``student_weight * student + (1 - student_weight) * heads`` (``student`` while not ready)."""
        student = np.asarray(student, np.float32)
        require(student.shape == (len(self.heads.labels),), "student", f"posteriors of shape "
                f"({len(self.heads.labels)},)", student.shape)
        heads = self.probabilities()
        if heads is None:
            return student
        w = np.float32(self.options.student_weight)
        return (w * student + (np.float32(1.0) - w) * heads).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """What the log names when the loop starts: the heads file, its context and the weights."""
        return {"heads_path": self.heads.path, "context_embeddings": self.heads.context,
                "student_weight": self.options.student_weight, "embedding": DISTRIBUTION,
                "heads": self.heads.metadata.get("heads")}
