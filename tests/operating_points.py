"""Sweep points built by hand, for tests of how the bench ranks and recommends settings."""

from __future__ import annotations

from edgesense.bench.scoring import OperatingPoint, StreamScore
from edgesense.recognition.commands import CommandRecognizerOptions

COMMAND_WORDS = 10
COMMAND_HOURS = 0.25
TALK_WORDS = 100
TALK_HOURS = 1.0


def operating_point(threshold: float, latencies_ms: tuple[float, ...], talk_false_accepts: int) -> OperatingPoint:
    """A setting's figures as the sweep gives them: 10 command words, a hit per latency, 1 hour of talk
    holding 100 other words."""
    commands = StreamScore(command_words=COMMAND_WORDS, hits=len(latencies_ms), other_utterances=0, substitutions=0,
                           on_other_speech=0, on_background=0, hours=COMMAND_HOURS, latencies_ms=latencies_ms)
    talk = StreamScore(command_words=0, hits=0, other_utterances=TALK_WORDS, substitutions=0,
                       on_other_speech=talk_false_accepts, on_background=0, hours=TALK_HOURS)
    return OperatingPoint(options=CommandRecognizerOptions(threshold=threshold), commands=commands, talk=talk)
