"""Small immutable result types shared by the runtime, the outputs and the benchmark."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

#: The 12 keyword-spotting classes in the order of TensorFlow's speech_commands example.
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
DEFAULT_COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DEFAULT_COMMAND_LABELS = (SILENCE_LABEL, UNKNOWN_LABEL) + DEFAULT_COMMAND_WORDS


def is_command_word(label: str) -> bool:
    """Whether a command label is a word to act on (not ``_silence_`` or ``_unknown_``)."""
    return label not in (SILENCE_LABEL, UNKNOWN_LABEL)


def label_as_read(name: str) -> str:
    """A class's name (a word's, a place's folder) as a person reads it: case and Unicode form ignored (macOS
    writes ``ü`` decomposed, ``u`` + U+0308). Two names equal here are one class to a reader, two to a loader."""
    return unicodedata.normalize("NFKC", name).casefold()


def label_twin(name: str, names: Iterable[str]) -> str | None:
    """The first of ``names`` that reads as ``name`` (:func:`label_as_read`) but is not spelt as it is, if any."""
    read = label_as_read(name)
    return next((other for other in names if other != name and label_as_read(other) == read), None)


def _frozen_mapping(values: Mapping[str, float] | None) -> Mapping[str, float]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, kw_only=True)
class CommandEvent:
    """A voice command recognised on the stream.

    ``t_ms`` is stream time (monotonic milliseconds of the audio that completed the
    detection), ``wall_time`` Unix seconds, ``latency_ms`` per-stage timings.
    """

    label: str
    score: float
    t_ms: float
    wall_time: float
    latency_ms: Mapping[str, float] = field(default_factory=dict)

    type = "command"

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency_ms", _frozen_mapping(self.latency_ms))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "label": self.label,
            "score": round(float(self.score), 4),
            "t_ms": round(float(self.t_ms), 1),
            "wall_time": round(float(self.wall_time), 3),
            "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
        }


@dataclass(frozen=True, kw_only=True)
class SceneEvent:
    """The scene the device is in: emitted when the smoothed label changes (``reason='change'``)
    and periodically while it holds (``reason='heartbeat'``)."""

    label: str
    score: float
    t_ms: float
    wall_time: float
    reason: str = "change"
    previous: str | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)

    type = "scene"

    def __post_init__(self) -> None:
        if self.reason not in ("change", "heartbeat"):
            raise ValueError(f"reason: expected 'change' or 'heartbeat', got {self.reason!r}")
        object.__setattr__(self, "latency_ms", _frozen_mapping(self.latency_ms))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "type": self.type,
            "label": self.label,
            "score": round(float(self.score), 4),
            "t_ms": round(float(self.t_ms), 1),
            "wall_time": round(float(self.wall_time), 3),
            "reason": self.reason,
            "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
        }
        if self.previous is not None:
            out["previous"] = self.previous
        return out
