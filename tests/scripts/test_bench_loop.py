"""scripts/bench_loop.py (``make bench``): the loop's speed and the words it hears, by default on the
demo's media (real speakers the bundled model never heard) with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
#: The bundled model hears 6 of the demo's 12 words with the firmware settings
#: (tests/edge/app/test_speech_sample.py holds the loop to the same figure); one word of margin.
MINIMUM_DETECTED = 5


def test_make_bench_scores_the_words_of_the_demos_real_speakers_by_default(capsys):
    assert load_script("bench_loop").main(["--repeat", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert "scene.mp4 + speech_commands.wav" in out.splitlines()[0]
    figures = json.loads(out.splitlines()[-1])
    truth = json.loads((ROOT / "samples" / "speech_commands.json").read_text())
    assert [row["word"] for row in figures["words"]] == [word["word"] for word in truth["words"]]
    detected = [row for row in figures["words"] if row["detected"]]
    assert len(detected) >= MINIMUM_DETECTED, out
    assert all(row["detection_delay_ms"] is not None for row in detected)
    assert f"spoken commands detected: {len(detected)}/12" in out
    assert figures["real_time_factor"] > 0  # reported, not held to a speed: the machines are shared
