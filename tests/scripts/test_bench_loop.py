"""scripts/bench_loop.py (``make bench``): the loop's speed and the words it hears, by default on the
demo's media (real speakers the bundled model never heard) with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script, require_speech_embedding

from edgesense.loop.stats import SECOND_OPINION_STAGES
from edgesense.types import CommandEvent

ROOT = Path(__file__).resolve().parents[2]
#: The bundled pair hears 11 of the demo's 12 words with desktop.yaml's settings, the default
#: (tests/edge/app/test_speech_sample.py holds the loop to the same figure); one word of margin.
MINIMUM_DETECTED = 10


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


def test_model_alone_times_the_loop_without_the_configs_second_opinion(capsys):
    require_speech_embedding()
    stages = {}
    for extra in ([], ["--model-alone"]):
        assert load_script("bench_loop").main(["--repeat", "1", "--json", *extra]) == 0
        stages[bool(extra)] = set(json.loads(capsys.readouterr().out.splitlines()[-1])["stages"])
    assert set(SECOND_OPINION_STAGES) <= stages[False]  # desktop.yaml, the default, runs the pair
    assert not set(SECOND_OPINION_STAGES) & stages[True] and stages[True] < stages[False]


def test_other_audio_is_scored_against_the_truth_beside_it_or_not_at_all(capsys, tmp_path):
    commands = ROOT / "samples" / "commands.wav"
    assert load_script("bench_loop").main(["--repeat", "1", "--json", "--audio", str(commands)]) == 0
    words = [row["word"] for row in json.loads(capsys.readouterr().out.splitlines()[-1])["words"]]
    truth = json.loads(commands.with_suffix(".json").read_text())
    assert words == [word["word"] for word in truth["words"]]  # not the demo's twelve words

    alone = tmp_path / "talk.wav"
    alone.write_bytes(commands.read_bytes())  # no talk.json beside it
    assert load_script("bench_loop").main(["--repeat", "1", "--json", "--audio", str(alone)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[-1])["words"] == []
    assert "spoken commands: not scored (talk.json is not beside the audio; pass --truth)" in out


@pytest.mark.parametrize("flags, expected", [
    (["--model", "nope.tflite"], "bench_loop.py: error: --model nope.tflite: no such file"),
    (["--truth", "README.md"], "bench_loop.py: error: --truth README.md: not JSON"),
    (["--truth", "samples/scenes.json"], "bench_loop.py: error: --truth samples/scenes.json: expected {\"words\""),
    (["--repeat", "0"], "bench_loop.py: error: --repeat: expected a whole number >= 1, got '0'"),
])
def test_bad_input_gets_one_line_and_exit_code_2(capsys, monkeypatch, flags, expected):
    monkeypatch.chdir(ROOT)
    try:
        code = load_script("bench_loop").main(flags)
    except SystemExit as exc:  # argparse's errors (OneLineArgumentParser)
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(expected)


def test_bench_loop_credits_one_event_to_one_word():
    """The same word said twice within the window: one event counted both as detected."""
    truth = {"words": [{"word": "go", "start_ms": 1000.0, "end_ms": 1400.0},
                       {"word": "go", "start_ms": 1900.0, "end_ms": 2300.0}]}
    event = CommandEvent(label="go", score=0.9, t_ms=2000.0, wall_time=0.0)
    rows = load_script("bench_loop").match_words([event], truth)
    assert [row["detected"] for row in rows] == [True, False]
    two = load_script("bench_loop").match_words([event, CommandEvent(label="go", score=0.9, t_ms=2400.0,
                                                                     wall_time=0.0)], truth)
    assert [row["event_t_ms"] for row in two] == [2000.0, 2400.0]
