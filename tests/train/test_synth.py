"""train.synth: espeak-ng clips in the Speech Commands layout (skipped without espeak-ng)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_run import edgesense, only_line

from edgesense.app.cli import main as cli_main
from edgesense.frontend.wav import probe_wav, read_wav
from edgesense.train.data import load_speech_commands, split_items
from edgesense.train.synth import DEFAULT_UNKNOWN_WORDS, SynthOptions, synthesize_commands

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@needs_espeak
def test_synthesizes_loadable_clips_with_speech(tmp_path: Path) -> None:
    options = SynthOptions(words=("yes", "stop"), per_word=2, unknown_words=("bed", "tree"), unknown_clips=2, seed=3)
    report = synthesize_commands(tmp_path, options)
    assert report.failed == () and report.counts == {"yes": 2, "stop": 2, "_unknown_": 2}
    assert len(report.written) == 6 and all(p.is_file() for p in report.written)
    for path in report.written:
        info = probe_wav(path)
        assert (info.sample_rate_hz, info.channels, info.bits_per_sample, info.num_frames) == (16000, 1, 16, 16000)
        x = read_wav(path)
        frame_rms = np.sqrt(np.mean(x.reshape(50, -1) ** 2, axis=1))  # 20 ms frames
        assert frame_rms.max() > 0.05, path  # speech is there
        assert frame_rms[0] < 0.01 and frame_rms[-1] < 0.01, path  # and centred, with silence around it
    index = load_speech_commands(tmp_path, words=("yes", "stop"))
    assert index.counts() == {"_silence_": 0, "_unknown_": 2, "yes": 2, "stop": 2}
    assert all(it.speaker.startswith("synth-") and "_" not in it.speaker for it in index.items)
    unknown = [it for it in index.items if it.label == "_unknown_"]
    assert {it.path.name.split("_", 1)[0] for it in unknown} <= {"bed", "tree"}
    again = synthesize_commands(tmp_path / "again", options)  # same seed: same voices, names and audio
    assert [p.name for p in again.written] == [p.name for p in report.written]
    np.testing.assert_array_equal(read_wav(again.written[0]), read_wav(report.written[0]))


@needs_espeak
def test_pseudo_speakers_split_disjointly(tmp_path: Path) -> None:
    report = synthesize_commands(tmp_path, SynthOptions(words=("go",), per_word=40, seed=0))
    assert report.failed == () and len(report.speakers) == 40
    index = load_speech_commands(tmp_path, words=("go",))
    splits = split_items(index.items, validation_percent=25, testing_percent=25)
    sides = [index.speakers(v) for v in splits.values()]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


@needs_espeak
def test_cli_subcommand(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert cli_main(["synth-commands", "--out", str(out), "--words", "no", "--per-word", "1",
                     "--unknown-words", "default", "--unknown-clips", "1", "--seed", "5"]) == 0
    assert len(list((out / "no").glob("synth-*_nohash_*.wav"))) == 1
    unknown = list((out / "_unknown_").glob("*.wav"))
    assert len(unknown) == 1 and unknown[0].name.split("_", 1)[0] in DEFAULT_UNKNOWN_WORDS
    alias = tmp_path / "alias"
    assert cli_main(["synth-commands", "--out", str(alias), "--words", "no", "--per-word", "1",
                     "--unknown-words", "auto", "--seed", "5"]) == 0
    assert len(list((alias / "_unknown_").glob("*.wav"))) == 1


def test_cli_errors_name_the_flags_not_the_fields(tmp_path: Path) -> None:
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--per-word", "0"))
    assert line == "edgesense: error: --per-word: expected an integer >= 1, got 0"
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--unknown-clips", "-2"))
    assert line.startswith("edgesense: error: --unknown-clips: expected")
    assert not (tmp_path / "out").exists()


def test_missing_espeak_is_a_runtime_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize_commands(tmp_path, SynthOptions(words=("yes",), per_word=1,
                                                   espeak_binary="espeak-ng-definitely-not-installed"))


def test_options_validation() -> None:
    assert len(DEFAULT_UNKNOWN_WORDS) >= 100 and len(set(DEFAULT_UNKNOWN_WORDS)) == len(DEFAULT_UNKNOWN_WORDS)
    with pytest.raises(ValueError, match="unknown_words"):
        SynthOptions(words=("yes",), unknown_words=("yes",))
    with pytest.raises(ValueError, match="words"):
        SynthOptions(words=("rm -rf",))
    with pytest.raises(ValueError, match="speed_wpm_range"):
        SynthOptions(speed_wpm_range=(200, 120))
    with pytest.raises(ValueError, match="per_word"):
        SynthOptions(per_word=0)
