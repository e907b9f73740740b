"""edgesense.bench.mining: the windows of talk where a model fires, mined from the training pool only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import require_speech_embedding
from datagen import make_speech_commands

from edgesense.app.cli import main
from edgesense.train.data import SplitSpec
from edgesense.bench.mining import MANIFEST_NAME, MineOptions, mine, peaks, training_other_words, write_mined
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.frontend.wav import read_wav, write_wav
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.second_opinion import SecondOpinionOptions
from edgesense.train.data import load_speech_commands
from edgesense.train.pools import speech_negative_pools
from edgesense.types import DEFAULT_COMMAND_WORDS

SR = 16000
LABELS = ("_silence_", "_unknown_", "yes", "no")
#: The tiny model (tests/conftest.py, trained on tones) scores some of the bursts here this high.
THRESHOLD = 0.25


def _bumps(hops: int, bumps: dict[tuple[int, int], float]) -> np.ndarray:
    post = np.zeros((hops, len(LABELS)), np.float32)
    post[:, 0] = 0.9
    for (hop, column), score in bumps.items():
        post[hop, column] = score
    return post


def test_peaks_keep_one_window_per_peak_strongest_first_and_never_silence_or_unknown():
    times = 1000.0 + 100.0 * np.arange(60)
    post = _bumps(60, {(10, 2): 0.9, (12, 2): 0.7, (13, 3): 0.8,  # one peak: "yes" at 0.9 wins its second
                       (40, 3): 0.6, (50, 2): 0.45,  # a second peak; one below the threshold
                       (30, 1): 0.99})  # _unknown_ is not a command word
    words = [2, 3]
    assert peaks(post, times, words, threshold=0.5, min_gap_ms=1000.0) == [(10, 2, pytest.approx(0.9)),
                                                                           (40, 3, pytest.approx(0.6))]
    # Without the gap every hop at or above the threshold is a window of its own, by hop.
    assert [hop for hop, _, _ in peaks(post, times, words, threshold=0.5, min_gap_ms=0.0)] == [10, 12, 13, 40]
    assert peaks(post, times, words, threshold=0.95, min_gap_ms=0.0) == []
    assert peaks(post[:0], times[:0], words, threshold=0.5, min_gap_ms=0.0) == []
    with pytest.raises(ValueError, match="posteriors"):
        peaks(post, times[:10], words, threshold=0.5, min_gap_ms=0.0)


@pytest.mark.parametrize("field, value", [("threshold", 1.0), ("threshold", 0.0), ("min_gap_ms", -1.0),
                                          ("max_windows", 0), ("talk_minutes", -1.0),
                                          ("talk_minutes", 0.1), ("hop_ms", 0.0), ("seed", -1), ("seed", 2**32)])
def test_mine_options_are_checked_when_built(field, value):
    with pytest.raises(ValueError, match=field):
        MineOptions(**{field: value})


def test_talk_past_a_week_is_refused_when_built_naming_talk_minutes():
    """StreamOptions refuses a stream past a week (MAX_STREAM_S): taken here, mine failed once the model was loaded,
    naming duration_s."""
    from edgesense.bench.streams import MAX_STREAM_S

    with pytest.raises(ValueError, match=r"^talk_minutes: expected 0 or a number of minutes in \[0.17, 10080\]"):
        MineOptions(talk_minutes=MAX_STREAM_S / 60 + 1)
    assert MineOptions(talk_minutes=MAX_STREAM_S / 60).talk_minutes == 10080


def test_a_bad_seed_is_one_line_naming_the_flag_before_anything_loads(tmp_path, capsys):
    assert main(["mine", "--model", str(tmp_path / "none.tflite"), "--negatives", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "edgesense: error: --seed: expected an integer in [0, 2**32), got -1"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--student-weight", "0.5"], "edgesense: error: --student-weight: acts only with --second-opinion, which is "
                                  "not given"),
    (["--noise", "README.md"], "edgesense: error: --noise README.md: expected a folder of .wav recordings or a .wav "
                               "file, got another file"),
    # a salt picks the speakers of --speech-commands; without it, it was silently left unused
    (["--salt", "edgesense"], "edgesense: error: --salt: acts only with --speech-commands, which is not given"),
])
def test_flags_that_would_be_ignored_or_misread_are_one_line_before_anything_loads(tmp_path, capsys, monkeypatch,
                                                                                    flags, expected):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(["mine", "--model", "models/edgesense.tflite", "--negatives", str(tmp_path),
                 "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / "out").exists()


def test_no_speech_to_stream_is_one_line_saying_what_was_expected(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(["mine", "--model", "models/edgesense.tflite", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == ("edgesense: error: --negatives/--speech-commands: expected other "
                                               "speech to stream (one or both), got neither")
    assert not (tmp_path / "out").exists()


def _talk_folder(root, rng):
    """Ten recordings of 'talk': tone bursts (what the tiny model knows of words) and noise."""
    folder = root / "negatives" / "read_speech"
    folder.mkdir(parents=True)
    t = np.arange(SR // 2) / SR
    for i in range(10):
        x = 0.01 * rng.normal(size=3 * SR)
        x[SR:SR + t.size] += 0.4 * np.hanning(t.size) * np.sin(2 * np.pi * (300.0 + 550.0 * (i % 6)) * t)
        write_wav(folder / f"talk_{i}.wav", x.astype(np.float32), SR)
    return folder


def _score(model, window: np.ndarray) -> np.ndarray:
    """The model's command posteriors on one window, computed apart from the stream."""
    features = log_mel_spectrogram(fit_clip(window, model.audio_frontend), model.audio_frontend)
    command, _ = model.fuse(model.encode_audio(features), None)
    return np.asarray(command)


def test_mine_keeps_the_windows_a_real_model_fires_on_from_the_training_pool_only(tmp_path, tiny_model_path):
    folder = _talk_folder(tmp_path, np.random.default_rng(3))
    model = EdgeModel.load(tiny_model_path)
    options = MineOptions(talk_minutes=1.0, word_passes=1, threshold=THRESHOLD)
    report = mine(model, options, negatives=[folder.parent])
    pools = speech_negative_pools(folder.glob("*.wav"))
    assert list(report.negatives) == [str(p) for p in pools["training"]]  # the tuning and evaluation pools unheard
    assert pools["evaluation"] and pools["tuning"]
    assert report.windows and report.talk_s == pytest.approx(60.0) and report.words_said > 0
    labels = model.command_labels
    for window in report.windows:
        assert window.word not in ("_silence_", "_unknown_") and window.score >= THRESHOLD
        assert window.samples.shape == (model.audio_frontend.clip_samples,)
        # The window is the audio the model scored: scored again on its own, the same word.
        assert _score(model, window.samples)[labels.index(window.word)] == pytest.approx(window.score, abs=0.08)
    scores = [w.score for w in report.windows]
    assert scores == sorted(scores, reverse=True)
    capped = mine(model, MineOptions(talk_minutes=1.0, word_passes=1, threshold=THRESHOLD, max_windows=1),
                  negatives=[folder])
    assert len(capped.windows) == 1 and capped.candidates == report.candidates

    out = tmp_path / "mined"
    manifest_path = write_mined(out, report, model_path=tiny_model_path, options=options, sample_rate_hz=SR)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["windows"] == len(report.windows) and sum(manifest["per_word"].values()) == len(report.windows)
    assert manifest["pool"] == "training" and manifest["negatives"] == list(report.negatives)
    first = report.windows[0]
    np.testing.assert_allclose(read_wav(out / first.file_name, sample_rate_hz=SR), first.samples, atol=1e-4)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == sorted(
        w.file_name for w in report.windows)
    with pytest.raises(ValueError, match="--force"):
        write_mined(out, report, model_path=tiny_model_path, options=options, sample_rate_hz=SR)


def test_mine_command_writes_its_folder_once_and_refuses_bad_input_in_one_line(tmp_path, tiny_model_path, capsys):
    folder = _talk_folder(tmp_path, np.random.default_rng(4))
    out = tmp_path / "mined"
    args = ["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
            "--talk-minutes", "1", "--word-passes", "0", "--threshold", str(THRESHOLD)]
    assert main(args) == 0
    assert "mined" in capsys.readouterr().out and (out / MANIFEST_NAME).is_file()
    assert list(out.rglob("*.wav"))

    kept = sorted(out.rglob("*"))
    assert main(args) == 2  # the folder holds the mined windows: nothing overwritten without --force
    assert sorted(out.rglob("*")) == kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "--force" in err[0]
    for bad, flag in (([*args[:4], str(tmp_path / "nowhere"), *args[5:]], "--negatives"),
                      ([*args, "--threshold", "1.5", "--force"], "--threshold"),
                      ([*args, "--noise", str(tmp_path / "nowhere"), "--force"], "--noise")):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"edgesense: error: {flag}"), err


def test_a_model_that_never_fires_writes_a_valid_empty_manifest_and_says_so(tmp_path, tiny_model_path, capsys):
    folder = tmp_path / "negatives" / "hush"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(10):  # talk too quiet to hold a word: nothing reaches the threshold
        write_wav(folder / f"hush_{i}.wav", (1e-4 * rng.normal(size=3 * SR)).astype(np.float32), SR)
    out = tmp_path / "mined"
    assert main(["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
                 "--talk-minutes", "0.5", "--word-passes", "0", "--threshold", "0.99"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("mined 0 windows (0 peaks at or above the threshold)")
    assert printed[1] == (f"wrote only {out / MANIFEST_NAME}: the model never reached --threshold 0.99 on this talk, "
                          "so there is no window to train on (a lower --threshold or more --talk-minutes finds some)")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["windows"] == 0 and manifest["files"] == [] and manifest["per_word"] == {}
    assert not list(out.rglob("*.wav"))


def test_mine_with_a_second_opinion_keeps_where_the_blend_fires(tmp_path, tiny_model_path, tiny_heads_path, capsys):
    require_speech_embedding()
    folder = _talk_folder(tmp_path, np.random.default_rng(5))
    model = EdgeModel.load(tiny_model_path)
    second = SecondOpinionOptions(heads_path=str(tiny_heads_path), student_weight=0.5)
    report = mine(model, MineOptions(talk_minutes=1.0, word_passes=0, threshold=0.05, second_opinion=second),
                  negatives=[folder.parent])
    alone = mine(model, MineOptions(talk_minutes=1.0, word_passes=0, threshold=0.05), negatives=[folder.parent])
    assert report.windows and alone.windows
    ends = {(w.stream, w.end_ms): w.score for w in alone.windows}
    blended = [w for w in report.windows if (w.stream, w.end_ms) in ends]
    assert any(abs(w.score - ends[(w.stream, w.end_ms)]) > 1e-3 for w in blended)  # the heads took part
    out = tmp_path / "mined"
    assert main(["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
                 "--talk-minutes", "1", "--word-passes", "0", "--threshold", "0.05",
                 "--second-opinion", str(tiny_heads_path)]) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["options"]["second_opinion"]["heads_path"] == str(tiny_heads_path)
    assert len(manifest["second_opinion_sha256"]) == 64
    capsys.readouterr()
    assert main(["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out",
                 str(tmp_path / "m2"), "--second-opinion", str(tmp_path / "none.tflite")]) == 2
    assert capsys.readouterr().err.strip().startswith("edgesense: error: --second-opinion")


def test_mine_streams_the_training_speakers_other_words_and_no_held_out_speaker(tmp_path, tiny_model_path, capsys):
    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS, speakers=12, per_speaker=1,
                                  unknown_words=("bed", "cat"))
    model = EdgeModel.load(tiny_model_path)
    split = SplitSpec.from_metadata(model.metadata, None)
    splits = load_speech_commands(speech).split(validation_percent=split.validation_percent,
                                                testing_percent=split.testing_percent, salt=split.speaker_salt)
    expected = sorted(f"{it.path.parent.name}/{it.path.name}" for it in splits["training"] if it.label == "_unknown_")
    held_out = {it.speaker for name in ("validation", "testing") for it in splits[name]}
    assert expected and held_out  # twelve speakers: some on each side
    words = training_other_words(model, speech)
    assert sorted(u.source for u in words) == expected
    assert all(u.label == "_unknown_" and u.group not in held_out for u in words)

    report = mine(model, MineOptions(talk_minutes=0, word_passes=1, threshold=THRESHOLD), other_words=words)
    assert sorted(report.speaker_words) == expected and report.words_said == len(expected)
    assert report.negatives == () and report.talk_s == 0

    out = tmp_path / "mined"
    args = ["mine", "--model", str(tiny_model_path), "--speech-commands", str(speech), "--out", str(out),
            "--talk-minutes", "0", "--word-passes", "1", "--threshold", str(THRESHOLD)]
    assert main(args) == 0
    assert f"with the {len(expected)} other words of training speakers" in capsys.readouterr().out
    assert sorted(json.loads((out / MANIFEST_NAME).read_text())["speaker_words"]) == expected
    no_other_words = make_speech_commands(tmp_path / "commands_only", words=DEFAULT_COMMAND_WORDS, speakers=12,
                                          per_speaker=1, unknown_words=())
    for bad, flag in ((["mine", "--model", str(tiny_model_path), "--out", str(tmp_path / "m2")], "--negatives"),
                      ([*args[:4], str(no_other_words), *args[5:], "--force"], "--speech-commands")):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"edgesense: error: {flag}"), err


SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "edgesense.tflite"


def test_a_salt_other_than_the_one_the_model_records_is_refused_not_mined_from_its_test_speakers(tmp_path, capsys):
    """``--salt`` replaced the salt the model records: another salt names other speakers "training", and on the
    real data (salt ``edgesense``, ``--salt other``) 30 of the 137 words streamed were the model's test speakers'
    and 8 its validation speakers', mined as hard negatives that train the next run."""
    model = EdgeModel.load(SHIPPED_MODEL)
    recorded = SplitSpec.from_metadata(model.metadata, None).speaker_salt
    assert recorded == "edgesense"
    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS, speakers=12, per_speaker=1,
                                  unknown_words=("bed",))
    with pytest.raises(ValueError, match=r"^salt: expected the speaker-split salt the model records \('edgesense'\)"):
        training_other_words(model, speech, salt="other")
    same = [u.source for u in training_other_words(model, speech, salt=recorded)]
    assert same and same == [u.source for u in training_other_words(model, speech)]
    out = tmp_path / "mined"
    assert main(["mine", "--model", str(SHIPPED_MODEL), "--speech-commands", str(speech), "--salt", "other",
                 "--out", str(out), "--talk-minutes", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgesense: error: --salt: expected the speaker-split salt the model records") and \
        "'other'" in err and "\n" not in err, err
    assert not out.exists()


def test_mine_force_leaves_exactly_the_new_windows_and_never_a_users_file(tmp_path, tiny_model_path, capsys):
    """``--force`` into a folder of an earlier mine kept the old windows the new ``mined.json`` no longer lists,
    and a training run (``data.hard_negatives``) reads every window in the folder: it trained on stale ones."""
    folder = _talk_folder(tmp_path, np.random.default_rng(4))
    out = tmp_path / "mined"
    args = ["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
            "--talk-minutes", "1", "--word-passes", "0", "--threshold", str(THRESHOLD), "--force"]
    assert main(args) == 0
    first = {p.relative_to(out).as_posix() for p in out.rglob("*.wav")}
    assert first
    assert main([*args, "--max-windows", "1"]) == 0  # fewer windows: the others must go
    capsys.readouterr()
    listed = [f["file"] for f in json.loads((out / MANIFEST_NAME).read_text())["files"]]
    assert len(listed) == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == listed
    assert all(any(d.iterdir()) for d in out.iterdir() if d.is_dir())  # no emptied WORD folder left

    # A file mine did not write (the user's notes, a window copied in by hand) is never deleted: refused.
    notes = out / "notes.txt"
    notes.write_text("mine\n")
    kept = sorted(out.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: --out: expected a folder that only earlier "
                                               "edgesense mine runs wrote into") and "notes.txt" in err[0], err
    assert sorted(out.rglob("*")) == kept and notes.read_text() == "mine\n"
    # ... and so is a folder of files without a mined.json (not a folder mine wrote).
    other = tmp_path / "clips"
    (other / "yes").mkdir(parents=True)
    write_wav(other / "yes" / "a.wav", np.zeros(SR, np.float32), SR)
    assert main([*args[:6], str(other), *args[7:]]) == 2
    assert "--out" in capsys.readouterr().err and (other / "yes" / "a.wav").is_file()


def test_ctrl_c_while_writing_keeps_the_earlier_windows_and_the_same_command_completes_the_run(
        tmp_path, tiny_model_path, capsys, monkeypatch):
    """Ctrl-C while ``mine --force`` wrote its windows left new windows beside the earlier run's (training read
    them, mined.json did not list them) and the same command again refused the folder as not mine's."""
    import edgesense.bench.mining as mining
    from edgesense.train.pools import wav_recordings

    folder = _talk_folder(tmp_path, np.random.default_rng(4))
    out = tmp_path / "mined"
    args = ["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
            "--talk-minutes", "1", "--word-passes", "0", "--threshold", str(THRESHOLD), "--force"]

    def visible() -> dict[str, bytes]:  # what a training run (data.hard_negatives) reads
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in wav_recordings([out])}

    def listed() -> list[str]:
        return sorted(f["file"] for f in json.loads((out / MANIFEST_NAME).read_text())["files"])

    real_write_wav, written = mining.write_wav, []

    def ctrl_c_at_the_second_window(*a, **k):
        written.append(a[0])
        if len(written) == 2:
            raise KeyboardInterrupt
        return real_write_wav(*a, **k)

    # a first run stopped while it wrote: no window where training reads, and the same command completes it
    monkeypatch.setattr(mining, "write_wav", ctrl_c_at_the_second_window)
    assert main(args) == 130  # Ctrl-C's exit code
    assert visible() == {} and not (out / MANIFEST_NAME).exists()
    monkeypatch.setattr(mining, "write_wav", real_write_wav)
    assert main(args) == 0
    earlier = visible()
    assert len(earlier) > 1 and sorted(earlier) == listed()
    manifest = (out / MANIFEST_NAME).read_bytes()

    # a run into it with another seed, stopped while it wrote: the earlier windows and manifest as they were
    written.clear()
    monkeypatch.setattr(mining, "write_wav", ctrl_c_at_the_second_window)
    assert main([*args, "--seed", "7"]) == 130
    assert visible() == earlier and (out / MANIFEST_NAME).read_bytes() == manifest
    monkeypatch.setattr(mining, "write_wav", real_write_wav)
    capsys.readouterr()
    assert main([*args, "--seed", "7"]) == 0, capsys.readouterr().err
    assert sorted(visible()) == listed()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [MANIFEST_NAME, *listed()])  # nothing of the stopped run left


def test_the_hidden_file_of_a_manifest_write_cut_short_is_minings_own(tmp_path):
    """A run killed (or a power cut) while it wrote its manifest leaves the writer's hidden file: --force then
    replaces the folder as mine's own; a user's file beside it is still refused."""
    from edgesense.bench.mining import earlier_files

    out = tmp_path / "mined"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps({"files": []}))
    (out / f".{MANIFEST_NAME}-k3x9q1.tmp").write_text("{\"fi")
    assert earlier_files(out, force=True) == {MANIFEST_NAME, f".{MANIFEST_NAME}-k3x9q1.tmp"}
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="also holds notes.txt"):
        earlier_files(out, force=True)


def test_heads_of_other_words_are_one_line_naming_the_flag_before_the_other_words_load(tmp_path, tiny_model_path,
                                                                                        capsys):
    """``--second-opinion`` heads that know other words than ``--model`` were said as the config field
    ``second_opinion.heads_path`` (no config in ``mine``), and only once the streaming began, after the
    training speakers' other words had loaded (here: refused first for having none)."""
    require_speech_embedding()
    from datagen import write_stream_heads

    heads = write_stream_heads(tmp_path / "own_heads.tflite", ["_silence_", "_unknown_", "lights", "music"])
    folder = _talk_folder(tmp_path, np.random.default_rng(6))
    speech = make_speech_commands(tmp_path / "speech", words=DEFAULT_COMMAND_WORDS, speakers=4, per_speaker=1,
                                  unknown_words=())
    out = tmp_path / "mined"
    assert main(["mine", "--model", str(tiny_model_path), "--negatives", str(folder.parent), "--out", str(out),
                 "--speech-commands", str(speech), "--talk-minutes", "0.5", "--second-opinion", str(heads)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgesense: error: --second-opinion: {heads}: labels: expected the "
                                               "model's ['_silence_', '_unknown_', 'yes'"), err
    assert "got ['_silence_', '_unknown_', 'lights', 'music']" in err[0] and "train-stream-heads --model" in err[0]
    assert not out.exists()


def test_a_recording_named_alone_is_mined_only_if_its_folder_puts_it_in_training(tmp_path, tiny_model_path, capsys):
    """``mine --noise noise/exercise_bike.wav`` (or ``--negatives`` one file) split the files given: one file was a
    group of one, always the training pool, so an evaluation recording of its folder was mined as background or
    talk without a word. A file named alone keeps its folder's pool: held out, it is said, and a flag left with
    nothing to mine is one line."""
    folder = _talk_folder(tmp_path, np.random.default_rng(6))
    talk = speech_negative_pools(folder.glob("*.wav"))
    noise_folder = tmp_path / "noise"
    noise_folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        write_wav(noise_folder / f"hum_{i}.wav", (0.01 * rng.normal(size=2 * SR)).astype(np.float32), SR)
    from edgesense.train.pools import split_recordings

    noise = split_recordings(noise_folder.glob("*.wav"))
    model = EdgeModel.load(tiny_model_path)
    options = MineOptions(talk_minutes=0.5, word_passes=0, threshold=THRESHOLD)
    report = mine(model, options, negatives=[talk["evaluation"][0], talk["training"][0]],
                  noise=[noise["evaluation"][0], noise["training"][0]])
    assert list(report.negatives) == [str(talk["training"][0])] and list(report.noise) == [str(noise["training"][0])]
    out = tmp_path / "mined"
    common = ["mine", "--model", str(tiny_model_path), "--out", str(out), "--talk-minutes", "0.5", "--word-passes", "0"]
    for extra, flag in ((["--negatives", str(talk["evaluation"][0])], "--negatives"),
                        (["--negatives", str(folder), "--noise", str(noise["evaluation"][0])], "--noise")):
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"edgesense: error: {flag}: ") and "training pool" in err[0], err
        assert not out.exists()


def test_a_file_managers_files_in_an_earlier_mine_are_neither_refused_nor_deleted(tmp_path):
    """Finder leaves ``.DS_Store`` in a folder it opened (to listen to the windows), Explorer ``Thumbs.db`` or
    ``desktop.ini``, and macOS ``._NAME`` beside each file on a USB drive: ``mine --force`` refused the folder as
    holding a file mine did not write, until the user found and deleted the hidden file."""
    from edgesense.bench.mining import earlier_files

    out = tmp_path / "mined"
    (out / "yes").mkdir(parents=True)
    write_wav(out / "yes" / "talk00_00001000ms.wav", np.zeros(SR, np.float32), SR)
    (out / MANIFEST_NAME).write_text(json.dumps({"files": [{"file": "yes/talk00_00001000ms.wav"}]}))
    litter = [out / ".DS_Store", out / "yes" / ".DS_Store", out / "yes" / "._talk00_00001000ms.wav",
              out / "Thumbs.db", out / "yes" / "desktop.ini"]
    for path in litter:
        path.write_bytes(b"\x00")
    assert earlier_files(out, force=True) == {MANIFEST_NAME, "yes/talk00_00001000ms.wav"}  # none of them to delete
    # a folder made in Finder, holding only its .DS_Store, is a new one to --force
    made = tmp_path / "new"
    made.mkdir()
    (made / ".DS_Store").write_bytes(b"\x00")
    assert earlier_files(made, force=True) == set()
    (out / "notes.txt").write_text("mine")  # a user's own file is still refused
    with pytest.raises(ValueError, match="also holds notes.txt"):
        earlier_files(out, force=True)
    assert all(path.is_file() for path in litter)


@pytest.mark.parametrize("link", ["yes", ".mining"])
@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_link_inside_an_earlier_mine_is_refused_never_written_through(tmp_path, link, with_manifest):
    """A mined folder shared as an archive keeps its links: ``mine --force`` into one whose ``WORD`` folder (or hidden
    staging folder) was a link to a folder elsewhere wrote its windows there, over a user's file of a window's name;
    refused in one line naming the link, nothing written. ``--out`` itself a link (a folder on another disk) is
    fine."""
    from edgesense.bench.mining import MinedWindow, MineReport

    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "talk00_00001000ms.wav").write_bytes(b"the user's own file")
    out = tmp_path / "shared"
    out.mkdir()
    if with_manifest:
        (out / MANIFEST_NAME).write_text(json.dumps({"files": []}))
    (out / link).symlink_to(victim, target_is_directory=True)
    model = tmp_path / "model.tflite"
    model.write_bytes(b"model")
    window = MinedWindow(samples=np.zeros(SR, np.float32), word="yes", score=0.9, stream="talk00", end_ms=1000.0)
    report = MineReport(windows=(window,), talk_s=60.0, words_said=0, candidates=1, negatives=(), noise=(),
                        elapsed_s=0.0)
    with pytest.raises(ValueError, match=rf"^--out: .*holds {re.escape(link)}, a symbolic link \(to .*elsewhere\)"):
        write_mined(out, report, model_path=model, options=MineOptions(), sample_rate_hz=SR, force=True)
    assert sorted(p.name for p in victim.iterdir()) == ["talk00_00001000ms.wav"]
    assert (victim / "talk00_00001000ms.wav").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == sorted([link, *([MANIFEST_NAME] if with_manifest else [])])

    # the folder given through a link of its own is written as ever
    (out / link).unlink()
    through = tmp_path / "through"
    through.symlink_to(out, target_is_directory=True)
    write_mined(through, report, model_path=model, options=MineOptions(), sample_rate_hz=SR, force=True)
    assert (out / "yes" / "talk00_00001000ms.wav").read_bytes()[:4] == b"RIFF"
    assert (victim / "talk00_00001000ms.wav").read_bytes() == b"the user's own file"


def _model_with_command_labels(path: Path, out: Path, labels: list[str]) -> Path:
    """A copy of a model whose metadata names other command labels (through TF's flatbuffer object API)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgesense.runtime.model import METADATA_NAME

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for entry in obj.metadata:
        if entry.name.decode() == METADATA_NAME:
            meta = json.loads(bytes(obj.buffers[entry.buffer].data))
            meta["labels"]["command"] = labels
            obj.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8).copy()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return out


@pytest.mark.parametrize("word", ["../../escaped", "TMP/escaped", "..", "a\\..\\..\\b", "C:escaped", ".mining"])
def test_a_model_whose_word_is_a_path_is_refused_before_it_writes_outside_out(tmp_path, tiny_model_path, capsys,
                                                                               word):
    """``mine`` writes each window as ``OUT/WORD/NAME.wav``, WORD a command label from the model's own metadata: a
    model someone shared whose word was ``../../escaped`` wrote its windows two folders above ``--out`` (``/x``:
    anywhere), over a file of a window's name there. Refused in one line naming the model and the word, before the
    streaming; nothing written."""
    pytest.importorskip("tensorflow")
    word = word.replace("TMP", str(tmp_path))  # an absolute path, here inside the test's folder
    labels = list(EdgeModel.load(tiny_model_path).command_labels)
    hostile = [word if label == labels[-1] else label for label in labels]
    model = _model_with_command_labels(tiny_model_path, tmp_path / "shared" / "model.tflite", hostile)
    assert EdgeModel.load(model).command_labels[-1] == word  # the loader takes it: any distinct non-empty names
    folder = _talk_folder(tmp_path / "talk", np.random.default_rng(4))
    out = tmp_path / "a" / "b" / "mined"
    before = sorted(tmp_path.rglob("*"))
    assert main(["mine", "--model", str(model), "--negatives", str(folder.parent), "--out", str(out),
                 "--talk-minutes", "1", "--word-passes", "0", "--threshold", str(THRESHOLD)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgesense: error: --model {model}: metadata labels.command: expected "
                                               "command words that name a folder inside --out"), err
    assert repr(word) in err[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_window_words_name_one_folder_inside_out():
    from edgesense.bench.mining import word_folder_problem

    for word in ("yes", "lights on", "turn_on", "café", "a..b", "_unknown_"):
        assert word_folder_problem(word) is None, word
    for word in ("", ".", "..", "../x", "x/..", "/x", "a/b", "a\\b", "C:x", "\\\\server\\share", ".hidden", "a\0b"):
        assert word_folder_problem(word) is not None, word
