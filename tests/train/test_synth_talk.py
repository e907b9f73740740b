"""train.synth_talk: sentences without any command word, read by synthetic voices (the
rendering tests are skipped without espeak-ng)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_run import edgesense, error_line, interrupted_once_a_wav_is_under, only_line

from edgesense.frontend.wav import probe_wav, read_wav
from edgesense.train.config import SEED_EXPECTED, SEED_LIMIT
from edgesense.train.synth import SynthOptions
from edgesense.train.synth_talk import (VOCABULARY, TalkOptions, clashes, draw_sentences, synthesize_talk,
                                        vocabulary_without)
from edgesense.types import DEFAULT_COMMAND_WORDS

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_the_vocabulary_never_says_a_command_word() -> None:
    assert clashes(VOCABULARY, DEFAULT_COMMAND_WORDS) == []
    sentences = draw_sentences(500, np.random.default_rng(0), clauses_range=(1, 3))
    tokens = {token.strip(".") for sentence in sentences for token in sentence.split()}
    assert not tokens & set(DEFAULT_COMMAND_WORDS) and len(tokens) > 200


def test_clashes_catch_homophones_and_words_that_begin_or_end_with_a_command() -> None:
    found = clashes({"noun": ("going", "know", "cargo", "cup", "station", "table")}, DEFAULT_COMMAND_WORDS)
    assert found == ["noun: going (go)", "noun: know (no)", "noun: cargo (go)", "noun: cup (up)"]


@pytest.mark.parametrize("words", [("music",), ("lights", "music", "lamp", "open", "red")])
def test_talk_for_a_model_of_other_words_leaves_out_the_words_that_say_them(words) -> None:
    # a model of one's own words ("music", "open") gets talk without them: it was refused, so no talk at all
    options = TalkOptions(words=words)
    vocabulary = vocabulary_without(options.words)
    assert clashes(vocabulary, words) == [] and clashes(VOCABULARY, words)
    sentences = draw_sentences(500, np.random.default_rng(0), clauses_range=(1, 3), vocabulary=vocabulary)
    tokens = {token.strip(".") for sentence in sentences for token in sentence.split()}
    assert not any(token.startswith(word) or token.endswith(word) for token in tokens for word in words)
    assert len(tokens) > 200
    # the default ten leave the vocabulary whole: the same seed draws the same sentences as before
    assert vocabulary_without(DEFAULT_COMMAND_WORDS) == VOCABULARY
    assert (draw_sentences(50, np.random.default_rng(3), vocabulary=vocabulary_without(DEFAULT_COMMAND_WORDS))
            == draw_sentences(50, np.random.default_rng(3)))


def test_words_that_would_leave_a_part_of_speech_empty_are_refused() -> None:
    names = VOCABULARY["name"]
    with pytest.raises(ValueError, match=r"words: expected command words that leave words of every part of speech "
                                         r"to the talk, got \['name: anna \(anna\)"):
        TalkOptions(words=names)


def test_sentences_follow_the_seed_and_the_clause_count() -> None:
    first = draw_sentences(20, np.random.default_rng(4), clauses_range=(1, 1))
    assert first == draw_sentences(20, np.random.default_rng(4), clauses_range=(1, 1))
    assert all(sentence.endswith(".") for sentence in first)
    longer = draw_sentences(50, np.random.default_rng(4), clauses_range=(3, 3))
    assert np.mean([len(s.split()) for s in longer]) > 2 * np.mean([len(s.split()) for s in first])


@needs_espeak
def test_writes_one_sentence_per_file_with_its_transcript(tmp_path: Path) -> None:
    options = TalkOptions(sentences=4, seed=2, voices=SynthOptions(variants=("", "m3")))
    report = synthesize_talk(tmp_path / "talk", options)
    assert report.failed == () and len(report.written) == 4 and report.seconds > 4 * 1.0
    lines = (tmp_path / "talk" / "transcripts.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    for line in lines:
        name, sentence = line.split("\t")
        path = tmp_path / "talk" / name
        assert path.parent.name.startswith("synth-") and path.name.startswith(path.parent.name)
        info = probe_wav(path)
        assert (info.sample_rate_hz, info.channels) == (16000, 1) and info.duration_s > 1.0
        x = read_wav(path)
        assert 0.5 < np.abs(x).max() <= 1.0 and len(sentence.split()) >= 4
    with pytest.raises(ValueError, match="--out: expected a new or empty folder"):
        synthesize_talk(tmp_path / "talk", options)  # never written into without being asked
    again = synthesize_talk(tmp_path / "talk", options, force=True)  # the same seed: the same sentences
    assert again.written == () and again.already_there == 4 and "4 sentences already there" in again.summary()
    assert len(list((tmp_path / "talk").rglob("*.wav"))) == 4 and len(lines) == 4


@needs_espeak
def test_the_cli_says_its_summary_once_on_stdout(tmp_path: Path) -> None:
    out = edgesense("synth-talk", "--out", tmp_path / "out", "--sentences", "1", "--voices", "en-us", "--seed", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote 1 sentences (") and f" to {tmp_path / 'out'} from " in out.stdout
    assert out.stdout.count("\n") == 1 and "wrote " not in out.stderr, out.stderr  # it was logged too: twice


def test_cli_errors_name_the_flag(tmp_path: Path) -> None:
    line = only_line(edgesense("synth-talk", "--out", tmp_path / "out", "--sentences", "0"))
    assert line == "edgesense: error: --sentences: expected an integer in [1, 2**63), got 0"
    line = only_line(edgesense("synth-talk", "--out", tmp_path / "out", "--words", "could,yes"))
    assert line.startswith("edgesense: error: --words: expected command words that the talk vocabulary never says")
    for seed in (-1, SEED_LIMIT):
        line = only_line(edgesense("synth-talk", "--out", tmp_path / "out", "--seed", seed))
        assert line == f"edgesense: error: --seed: expected {SEED_EXPECTED}, got {seed}"
    assert not (tmp_path / "out").exists()


def test_a_seed_numpy_refuses_is_refused_naming_the_field() -> None:
    for seed in (-1, SEED_LIMIT, True):
        with pytest.raises(ValueError) as info:
            TalkOptions(seed=seed)
        assert str(info.value) == f"seed: expected {SEED_EXPECTED}, got {seed!r}"
    assert TalkOptions(seed=SEED_LIMIT - 1).seed == SEED_LIMIT - 1


def test_a_command_word_in_another_case_clashes():
    from edgesense.train.synth_talk import clashes

    assert clashes({"noun": ("Cat", "dog")}, ("cat",)) and clashes({"noun": ("cat",)}, ("Cat",))


@pytest.mark.parametrize("word", ["look", "think", "there", "could"])
def test_a_command_word_the_sentence_patterns_say_clashes(word):
    sentences = draw_sentences(200, np.random.default_rng(0))
    assert any(token.strip(".").startswith(word) for s in sentences for token in s.split())  # the talk says it
    with pytest.raises(ValueError, match=rf"words: expected command words that the talk vocabulary never says, "
                                         rf"got \['sentence: \w+ \({word}\)"):
        TalkOptions(words=(word,))


@needs_espeak
def test_force_adds_sentences_beside_earlier_ones_and_their_transcripts(tmp_path: Path) -> None:
    options = TalkOptions(sentences=3, seed=2, voices=SynthOptions(voices=("en-us",), variants=("", "m3")))
    first = synthesize_talk(tmp_path, options)
    before = {path: path.read_bytes() for path in first.written}
    again = synthesize_talk(tmp_path, TalkOptions(**{**options.__dict__, "seed": 3}), force=True)
    assert len(again.written) == 3 and not set(again.written) & set(first.written)
    assert {path: path.read_bytes() for path in first.written} == before  # every earlier sentence as it was
    listed = [line.split("\t")[0] for line in (tmp_path / "transcripts.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(listed) == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert len(listed) == 6


@needs_espeak
def test_ctrl_c_stops_at_once_and_lists_the_sentences_written(tmp_path: Path) -> None:
    out = tmp_path / "talk"
    code, err = interrupted_once_a_wav_is_under(["synth-talk", "--out", str(out), "--sentences", "600",
                                                 "--voices", "en-us", "--workers", "1"], out)
    assert code == 130, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert 0 < len(written) < 300, len(written)  # no sentence started after Ctrl-C
    listed = [line.split("\t")[0] for line in (out / "transcripts.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(listed) == written
    assert f"interrupted: wrote {len(written)} of the 600 sentences planned into {out}" in err


def test_a_command_word_the_talk_says_a_homophone_of_is_refused(tmp_path: Path) -> None:
    # "four" (a Speech Commands word) beside talk full of "for": every sentence would teach it is no command
    line = only_line(edgesense("synth-talk", "--out", tmp_path / "out", "--words", "yes,four"))
    assert line == ("edgesense: error: --words: expected command words that the talk vocabulary never says, got "
                    "['sentence: for (four)']")
    assert not (tmp_path / "out").exists()


@needs_espeak
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_run_again_with_force_completes_it_without_copies(tmp_path: Path, sig) -> None:
    # SIGTERM (kill, timeout) ended the process at once: the sentences written were in no transcripts.txt, and the
    # same command again skipped them (already there) without listing them either
    out = tmp_path / "talk"
    argv = ["synth-talk", "--out", str(out), "--sentences", "30", "--voices", "en-us", "--workers", "1"]
    code, err = interrupted_once_a_wav_is_under(argv, out, sig=sig)
    assert code == 130, err
    first = {p: p.read_bytes() for p in out.rglob("*.wav")}
    assert 0 < len(first) < 30 and "run the same command again with --force" in err
    again = edgesense(*argv, "--force")
    assert again.returncode == 0, again.stderr
    assert f"; {len(first)} sentences already there, the same bytes" in again.stdout
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 30 and len({p.read_bytes() for p in wavs}) == 30  # the full set, and no sentence twice
    assert all(first[p] == p.read_bytes() for p in first)
    listed = [line.split("\t")[0] for line in (out / "transcripts.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(listed) == sorted(p.relative_to(out).as_posix() for p in wavs)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no .part file left behind


@pytest.mark.parametrize("words", ["lights music", "lights;music", "música", ""])
def test_words_the_talk_cannot_be_checked_against_are_refused_naming_the_flag(tmp_path: Path, words: str) -> None:
    # "lights music" (the commas left out) was taken as one word no entry says, so the talk said "music"
    line = only_line(edgesense("synth-talk", "--out", tmp_path / "out", "--sentences", "1", "--words", words))
    got = tuple(w for w in [words.strip()] if w)
    assert line == ("edgesense: error: --words: expected a tuple of words (letters and '-', starting with a letter), "
                    f"at least one, got {got!r}")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"^words: expected a tuple of words"):
        TalkOptions(words="lights")  # a string, not a tuple of words
    assert TalkOptions(words=("lights", "music")).words == ("lights", "music")


@needs_espeak
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device that is always full)")
def test_a_full_disk_stops_the_run_in_one_line_and_lists_what_it_wrote(tmp_path: Path) -> None:
    """Each sentence is written to ``.NAME.wav.part`` first: here some are links to /dev/full, whose writes fail with
    ENOSPC as on a full disk. Each sentence failed alike, a warning each, and the run exited 1; now the first stops
    it, in one line, exit 2, with the sentences it wrote in transcripts.txt."""
    voices = ["--voices", "en-us", "--workers", "1", "--seed", "2", "--sentences", "4"]
    assert edgesense("synth-talk", "--out", tmp_path / "plan", *voices).returncode == 0  # the same seed: the same names
    out = tmp_path / "talk"
    names = sorted(p.relative_to(tmp_path / "plan") for p in (tmp_path / "plan").rglob("*.wav"))
    for name in names[1:]:
        part = (out / name).with_name(f".{name.name}.part")
        part.parent.mkdir(parents=True, exist_ok=True)
        part.symlink_to("/dev/full")
    proc = edgesense("synth-talk", "--out", out, *voices, "--force")
    assert proc.returncode == 2, proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    line = error_line(proc)  # after the start of the synthesis only (what, how many): no warning per sentence
    assert "WARNING" not in proc.stderr and proc.stderr.count("\n") == 2, proc.stderr
    assert line.startswith("edgesense: error: ") and ": cannot write it (No space left on device); wrote " \
        f"{len(written)} of the 4 sentences planned into {out}, each one whole, in transcripts.txt; once there is " \
        "room, run the same command again with --force" in line, line
    listed = [line.split("\t")[0] for line in (out / "transcripts.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(listed) == written


def test_transcripts_on_a_disk_that_fills_keep_every_line_they_listed(tmp_path: Path) -> None:
    """transcripts.txt gains its new lines by being written again whole: truncated first, it lost the earlier
    sessions' lines where the disk filled (here a real limit on the size of a file, RLIMIT_FSIZE: writes past it fail
    with EFBIG as on a full disk); 15000 lines became 6843 and one cut short. Now it is replaced whole or not at all."""
    import subprocess
    import sys

    resource = pytest.importorskip("resource")
    out = tmp_path / "talk"
    out.mkdir()
    earlier = "".join(f"synth-en-us/synth-en-us_{i}.wav\tthe old red house is quiet number {i}\n" for i in range(15000))
    (out / "transcripts.txt").write_text(earlier, encoding="utf-8")
    script = ("import sys; from pathlib import Path; from edgesense.train import synth; "
              "from edgesense.train.synth_talk import _add_transcripts; out = Path(sys.argv[1]); "
              "job = synth.SpeakJob(path=out / 'synth-en-us' / 'synth-en-us_15000.wav', label='talk', "
              "word='a new sentence.', engine='espeak', voice='en-us'); _add_transcripts(out, [job], {job.path})")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(earlier) // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, preexec_fn=limit,
                          timeout=60, check=False)
    assert (out / "transcripts.txt").read_text(encoding="utf-8") == earlier, "the lines it listed were lost"
    assert proc.returncode != 0 and f"OSError: cannot write transcripts.txt {out / 'transcripts.txt'}" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["transcripts.txt"]  # no hidden file left beside it
