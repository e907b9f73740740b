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
    except SystemExit as exc:  # argparse's errors (one line too: OneLineArgumentParser)
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


# The side tools: each number flag with values it cannot use, before any work (a model loaded, a clip spoken,
# a stream rendered) and before --out is made. Inputs are folders that exist; the options are checked first.
MODEL = str(REPO / "models" / "edgesense.tflite")
FOLDER = str(SAMPLES)
TOOLS = {
    "bench": ["bench", "--model", MODEL, "--speech-commands", FOLDER, "--out", "out"],
    "mine": ["mine", "--model", MODEL, "--negatives", FOLDER, "--out", "out"],
    "synth-commands": ["synth-commands", "--out", "out"],
    "synth-talk": ["synth-talk", "--out", "out"],
    "train-stream-heads": ["train-stream-heads", "--model", MODEL, "--out", "out/heads.tflite", "--speech-commands",
                           FOLDER, "--negatives", FOLDER, "--noise", FOLDER],
}
HUGE = str(2**63)  # past numpy's and TensorFlow's int64 (where counts end up)
NOT_INTS = ("nan", "inf", "1.5", "abc", "", "99999999999999999999", HUGE)
NOT_NUMBERS = ("nan", "inf", "1e400", "abc", "")
#: flag -> values it refuses beyond NOT_INTS / NOT_NUMBERS, by tool.
INT_FLAGS = {
    "bench": {"--threads": ("0", "-1", "65"), "--max-per-class": ("0",), "--seed": ("-1", str(2**32))},
    "mine": {"--threads": ("0", "65"), "--word-passes": ("-1",), "--max-windows": ("0",), "--seed": ("-1",)},
    "synth-commands": {"--per-word": ("0",), "--unknown-clips": ("-1",), "--workers": ("0", "65"),
                       "--seed": ("-1",)},
    "synth-talk": {"--sentences": ("0",), "--workers": ("0", "65"), "--seed": ("-1",)},
    "train-stream-heads": {"--heads": ("0",), "--context": ("0",), "--variants": ("0",), "--epochs": ("0",),
                           "--talk-per-variant": ("-1",), "--silence-per-variant": ("-1",), "--seed": ("-1",)},
}
FLOAT_FLAGS = {
    "bench": {"--stream-minutes": ("0", "-1"), "--talk-minutes": ("0",), "--max-false-accepts-per-hour": ("-1",),
              "--max-false-accepts-per-100-words": ("-1",), "--max-latency-p95-ms": ("-1",)},
    "mine": {"--talk-minutes": ("-1", "0.1"), "--threshold": ("0", "1"), "--min-gap-ms": ("-1",)},
    "train-stream-heads": {"--unknown-weight": ("0", "-1"), "--partial-words": ("1.5",), "--partial-end-share": ("-1",),
                           "--speed": ("1.5",), "--talk-ends": ("1.5",), "--talk-words": ("1.5",),
                           "--unknown-voices": ("1.5",)},
}
SIDE_TOOL_CASES = [
    *[(tool, [flag, v], flag) for tool, flags in INT_FLAGS.items() for flag, own in flags.items()
      for v in (*NOT_INTS, *own)],
    *[(tool, [flag, v], flag) for tool, flags in FLOAT_FLAGS.items() for flag, own in flags.items()
      for v in (*NOT_NUMBERS, *own)],
    *[("train-stream-heads", [flag, *pair], flag) for flag in ("--partial-kept", "--snr-db")
      for pair in (("nan", "1"), ("0", "inf"), ("1", "0"))],
    ("mine", ["--second-opinion", str(REPO / "models" / "stream_heads.tflite"), "--student-weight", "nan"],
     "--student-weight"),
    # what it would leave unused without a word
    ("synth-commands", ["--unknown-clips", "5"], "--unknown-clips"),
]


@pytest.mark.parametrize("tool, flags, flag", SIDE_TOOL_CASES,
                         ids=[f"{tool} {' '.join(flags)}" for tool, flags, _ in SIDE_TOOL_CASES])
def test_a_side_tool_refuses_a_number_it_cannot_use_naming_its_flag(capsys, tmp_path, monkeypatch, tool, flags,
                                                                    flag):
    """``--word-passes``/``--per-word``/``--sentences``/``--epochs`` past int64 started the work and hung in it (or,
    for ``train-stream-heads --context``, failed once the data had loaded, naming ``--negatives``),
    ``--unknown-weight inf`` trained on an infinite loss, ``--threads 65`` was refused as ``num_threads``, and
    ``--workers 2**63`` reached espeak-ng's pool and onnxruntime."""
    monkeypatch.chdir(tmp_path)
    line = _error(capsys, [*TOOLS[tool], *flags])
    assert flag in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, flag", [
    (["average", "a", "b", "--out", "notes.txt/run"], "--out"),
    ([*TOOLS["train-stream-heads"][:4], "notes.txt/heads.tflite", *TOOLS["train-stream-heads"][5:]], "--out"),
    ([*TOOLS["mine"][:3], "--speech-commands", "notes.txt", "--out", "out"], "--speech-commands"),
    ([*TOOLS["mine"][:5], "--out", "notes.txt/x"], "--out"),
    (["synth-commands", "--out", "notes.txt/x"], "--out"),
    (["synth-talk", "--out", "notes.txt"], "--out"),
    (["bench", *TOOLS["bench"][1:5], "--out", "notes.txt/x"], "--out"),
    (["deploy", "--target", "desktop", "--no-wheels", "--out", "notes.txt/x"], "--out"),
])
def test_a_side_tool_refuses_a_file_where_a_folder_is_wanted_before_any_work(capsys, tmp_path, monkeypatch, argv,
                                                                             flag):
    """``average --out FILE/run`` said ``[Errno 20] Not a directory`` once the soup was made, and
    ``train-stream-heads --out FILE/heads.tflite`` said ``[Errno 17] File exists`` once the heads had trained;
    ``mine --speech-commands FILE`` named no flag once the model had loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    line = _error(capsys, argv)
    assert line.startswith(f"edgesense: error: {flag}"), line
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine\n"


def test_train_stream_heads_refuses_a_folder_as_its_out_file_even_with_force(capsys, tmp_path, monkeypatch):
    """A folder named ``heads.tflite`` with ``--force`` was found only when the trained heads were moved onto it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "heads.tflite").mkdir(parents=True)
    line = _error(capsys, [*TOOLS["train-stream-heads"], "--force"])
    assert line == "edgesense: error: --out: expected a .tflite file to write, not a folder, got 'out/heads.tflite'"
