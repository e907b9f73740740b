"""Mistyped numbers and paths on the flags of every ``edgesense`` command: one error line naming the flag,
exit 2, before any work starts (a recording, a training run, a model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesense.app.cli import main
from cli_run import edgesense, error_line

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
REPLAY = ["--video", str(SAMPLES / "scene.mp4"), "--audio", str(SAMPLES / "commands.wav"), "--fast"]
RUN = ["run", "--config", str(REPO / "firmware_configs" / "desktop.yaml"), "--headless", *REPLAY]


def _record(out: str, seconds: str = "1") -> list[str]:
    return ["record", "--label", "kitchen", "--seconds", seconds, "--out", out, "--no-preview", *REPLAY]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """``edgesense ARGV`` in this process: its exit code must be 2 and its stderr end in one error line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage + error line
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "error:" in lines[-1], err
    return lines[-1]


# An empty path flag (a shell variable that was not set) became Path(""), the current folder: train --av ''
# trained on whatever the current folder held, record --out '' wrote its pairs into it, bench --out '' wrote
# its report there, demo --out '' silently wrote the default file instead.
@pytest.mark.parametrize("argv, flag", [
    (["train", "--config", "train/configs/shared_data.yaml", "--av", ""], "--av"),
    (["train", "--config", "", "--out", "x"], "--config"),
    (["average", "runs/a", "--out", ""], "--out"),
    (["bench", "--speech-commands", "", "--out", "x"], "--speech-commands"),
    (["bench", "--speech-commands", "x", "--out", ""], "--out"),
    (["deploy", "--target", "desktop", "--out", ""], "--out"),
    (["deploy", "--target", "desktop", "--out", "x", "--model", ""], "--model"),
    (["demo", "--out", ""], "--out"),
    (_record(""), "--out"),
])
def test_an_empty_path_is_refused_naming_its_flag(capsys, tmp_path, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, [a.replace("train/configs", str(REPO / "train" / "configs")) for a in argv])
    assert flag in line and "empty" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_record_out_inside_a_file_is_refused_before_recording(capsys, tmp_path):
    """It was refused only after the media were opened and the first pair was due, as ``.../kitchen: cannot
    write it (Not a directory); the 0 pairs written before it are kept``, without naming --out."""
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    line = _error(capsys, _record(str(file / "x")))
    assert line.startswith("edgesense: error: --out: expected a folder"), line
    assert f"inside {file}, which is a file" in line, line
    assert file.read_text() == "mine\n"


def test_a_path_with_a_line_break_is_said_in_one_line(tmp_path):
    """A file name holding a newline split the error into two lines (the second without the prefix)."""
    name = tmp_path / "a\nb.tflite"
    line = error_line(edgesense(*RUN, "--model", name, timeout=60))
    assert line.startswith("edgesense: error: --model") and "a\\nb.tflite" in line, line


# What was already right, kept so: numbers a command cannot use are refused naming their flag.
@pytest.mark.parametrize("argv, flag", [
    *[([*RUN, "--duration-s", v], "--duration-s") for v in ("nan", "inf", "-inf", "-1", "0", "1e400", "", "abc")],
    *[(_record("unused", seconds=v), "--seconds") for v in ("nan", "inf", "-1", "0", "1e400", "", "abc")],
    *[(["demo", "--duration-s", v], "--duration-s") for v in ("nan", "-inf", "0")],
    *[(["train", "--config", "c.yaml", "--epochs", v], "--epochs") for v in ("nan", "1e400", "", "abc")],
    *[(["bench", "--speech-commands", "x", "--threads", v], "--threads") for v in ("inf", "abc")],
    ([*RUN, "--model", "/etc/passwd/x"], "--model"),
    ([*RUN, "--video", "."], "--video"),
])
def test_a_number_or_path_it_cannot_use_is_refused_naming_its_flag(capsys, tmp_path, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, argv)
    assert flag in line, line
    assert list(tmp_path.iterdir()) == []


def test_adapt_refuses_an_out_inside_a_file_and_epochs_past_int64_before_any_work(capsys, tmp_path):
    """``--out /etc/passwd/x.tflite`` said "cannot write the output model ...: File exists" after the work, and
    ``--epochs 99999999999999999999`` started it."""
    model = str(REPO / "models" / "edgesense.tflite")
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    line = _error(capsys, ["adapt", "--model", model, "--av", str(tmp_path), "--out", str(file / "x.tflite")])
    assert line.startswith("edgesense: error: --out: expected a folder for the model") and str(file) in line, line
    line = _error(capsys, ["adapt", "--model", model, "--av", str(tmp_path), "--out", str(tmp_path / "x.tflite"),
                           "--epochs", "99999999999999999999"])
    assert line.startswith("edgesense: error: --epochs: expected an integer in [1, 2**63)"), line
