"""edgesense.app.cli: one console script over every command, each module in the edgesense namespace."""

import argparse
import contextlib
import importlib
import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import Callable

import pytest
from cli_run import edgesense, hang_up_as_a_shell_would, only_line

from edgesense.app import cli


def test_every_command_module_lives_in_edgesense_and_has_the_command_interface():
    for name, (module_name, help_text) in cli.COMMANDS.items():
        assert module_name.startswith("edgesense."), name
        module = importlib.import_module(module_name)  # the test environment has every extra
        assert callable(module.add_arguments) and callable(module.run), module_name
        assert help_text


def test_every_flag_of_every_command_says_what_it_does():
    for name in cli.COMMANDS:
        sub = next(a for a in cli.build_parser([name])._actions if isinstance(a, argparse._SubParsersAction))
        silent = [action.option_strings or action.dest for action in sub.choices[name]._actions if not action.help]
        assert silent == [], f"edgesense {name}: flags without help: {silent}"


@pytest.mark.parametrize("argv", [[], ["-v"], ["-vv"]])
def test_no_command_is_one_error_line_naming_the_commands_and_exit_2(capsys, argv):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [error] = captured.err.strip().splitlines()
    assert error.startswith("edgesense: error: expected a COMMAND, one of run, demo, ") and "synth-commands" in error


# argparse printed its usage block (up to 20 lines for bench) before its own words ("argument --threads: invalid
# int value: 'abc'"); every other bad input is one line FLAG: expected ..., got ...
@pytest.mark.parametrize("argv, line", [
    (["bench", "--threads", "abc"], "edgesense bench: error: --threads: expected an integer, got 'abc'"),
    (["run", "--duration-s", "soon"], "edgesense run: error: --duration-s: expected a number, got 'soon'"),
    (["bench", "--split", "dev"], "edgesense bench: error: --split: expected one of 'all', 'testing', got 'dev'"),
    (["run", "--config"], "edgesense run: error: --config: expected a value after it, got none"),
    (["train"], "edgesense train: error: --config: expected a value (required; edgesense train --help lists the "
                "flags), got none"),
    (["run", "--config", "x.yaml", "--stats", "3", "--colour"],
     "edgesense run: error: expected the flags edgesense run --help lists, got 3 --colour"),
    (["frob"], "edgesense: error: COMMAND: expected one of 'run', 'demo', 'record', 'inspect', 'bench', 'train', "
               "'average', 'synth-commands', 'train-stream-heads', 'synth-talk', 'mine', 'quantize', 'adapt', "
               "'deploy', got 'frob'"),
    (["demo", "--out", ""], "edgesense demo: error: --out: expected a path, got an empty string"),
])
def test_a_flag_argparse_refuses_is_one_line_in_the_projects_form_and_exit_2(capsys, argv, line):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line + "\n")


def test_bench_with_nothing_to_score_names_the_flags_it_needs(capsys):
    # It said "--speech-commands: expected at least one of speech_commands, scenes, av": field names, and
    # --fusion-study (which needs none of them) left out.
    assert cli.main(["bench", "--model", str(REPO / "models" / "edgesense.tflite")]) == 2
    assert capsys.readouterr().err == ("edgesense: error: --speech-commands/--scenes/--av: expected at least one, "
                                       "the data to score (or --fusion-study), got none\n")


def test_the_verbose_flag_says_what_it_does():
    """One -v is debug logging already; the help once promised it only for -vv."""
    levels = {}
    for argv in ([], ["-v"], ["-vv"]):
        with pytest.MonkeyPatch.context() as mp:
            seen = []
            mp.setattr(logging, "basicConfig", lambda **kwargs: seen.append(kwargs["level"]))
            cli.main([*argv, "inspect", str(REPO / "models" / "no.tflite")])
        levels[len(argv) and len(argv[0]) - 1] = seen[0]
    assert levels == {0: logging.INFO, 1: logging.DEBUG, 2: logging.DEBUG}
    verbose = next(a for a in cli.build_parser([])._actions if "-v" in a.option_strings)
    assert "debug" in verbose.help and "-vv" not in verbose.help


# --------------------------------------------------------------------------- what a user sees

REPO = Path(__file__).resolve().parents[3]
#: `pip install edgesense`, `pip install 'edgesense[mqtt]'`, `pip install --no-deps edgesense`: a name
#: from PyPI, where "edgesense" is somebody else's project. (A path or a wheel file is fine.)
INSTALL_BY_NAME = re.compile(r"pip3? install (?:-[-\w]+ )*['\"]?edgesense(?:\[[\w,]+\])?(?![\w./-])")


def test_nothing_tells_users_to_install_edgesense_by_name_from_pypi():
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "models").glob("*.md"),
             *(REPO / "deploy" / "templates").glob("*.in")]
    for folder in ("edge", "train", "quantize", "bench", "deploy", "scripts"):
        files += (REPO / folder).rglob("*.py")
    found = [f"{p.relative_to(REPO)}: {m.group(0).strip()}" for p in files
             for m in INSTALL_BY_NAME.finditer(p.read_text(encoding="utf-8"))]
    assert not found
    assert INSTALL_BY_NAME.search("pip install 'edgesense[mqtt]'") and INSTALL_BY_NAME.search("pip install edgesense")
    assert not INSTALL_BY_NAME.search("pip install './edgesense-0.1.0-py3-none-any.whl[mqtt]'")


def test_a_missing_desktop_library_names_the_extra_to_install_from_the_checkout(tmp_path):
    shim = tmp_path / "shim"
    for name in ("tensorflow", "tqdm"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", "
                                                 f"name='{name}')\n")
    env = {"PYTHONPATH": str(shim)}
    config, photos = tmp_path / "train.yaml", tmp_path / "photos"
    photos.mkdir()
    config.write_text(f"name: x\ndata: {{scenes: {photos}}}\n")  # --out beside it, not inside (refused first)
    line = only_line(edgesense("train", "--config", config, "--out", tmp_path / "run", env=env))
    assert line.endswith("needs the train extra (tensorflow is not installed): from the EdgeSense checkout: "
                         "pip install -e '.[train]' --config-settings editable_mode=strict (or scripts/setup.sh); "
                         "from a wheel: pip install 'edgesense-0.1.0-py3-none-any.whl[train]'")
    line = only_line(edgesense("bench", "--model", REPO / "models" / "edgesense.tflite", "--scenes", tmp_path,
                               env=env))
    assert "needs the bench extra (tqdm is not installed)" in line and "pip install -e '.[bench]'" in line


@pytest.mark.parametrize("command", ["run", "demo", "record", "inspect"])
def test_a_device_commands_help_imports_no_numpy_opencv_audio_or_interpreter(command):
    """``edgesense demo|record|inspect --help`` imported OpenCV and numpy (inspect the interpreter's modules too) with
    their command's module: 0.2-0.4 s here against 0.05 s for ``run --help``, seconds on a Raspberry Pi, for a list
    of flags."""
    import subprocess
    import sys

    heavy = ("numpy", "cv2", "sounddevice", "paho", "ai_edge_litert", "tflite_runtime", "tensorflow")
    code = (f"import sys\nfrom edgesense.app import cli\ntry:\n    cli.main([{command!r}, '--help'])\n"
            f"except SystemExit:\n    pass\nprint(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert f"usage: edgesense {command}" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr


def test_inspect_names_a_folder_or_a_missing_file_as_such(tmp_path):
    assert only_line(edgesense("inspect", tmp_path)).endswith(f"model {tmp_path}: is a folder; expected a file")
    missing = tmp_path / "m.tflite"
    assert only_line(edgesense("inspect", missing)).endswith(f"model {missing}: no such file")


def test_running_out_of_memory_is_one_line_not_a_traceback(monkeypatch, capsys):
    def run(args):
        raise MemoryError("Unable to allocate 1.16 TiB for an array with shape (100000000, 49, 40, 2)")

    inspect = importlib.import_module("edgesense.app.inspect")
    monkeypatch.setattr(inspect, "run", run)
    assert cli.main(["inspect", "m.tflite"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesense: error: out of memory (Unable to allocate 1.16 TiB")


def test_verbose_is_accepted_before_and_after_the_command():
    model = REPO / "models" / "edgesense.tflite"
    for args in (("-v", "inspect", model), ("inspect", model, "-v"), ("inspect", "-v", model)):
        proc = edgesense(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "encode_audio" in proc.stdout


class _Runner:
    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


def test_stop_on_signals_stops_the_attached_runner_and_restores_the_handlers():
    before = {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}
    runner = _Runner()
    with cli.stop_on_signals() as stop:
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)  # before attach: only the request is kept
        assert stop.requested and runner.stops == 0
        stop.attach(runner)
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt: the handler only sets flags
        assert runner.stops == 1
    assert {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS} == before


def test_stop_on_signals_off_the_main_thread_installs_nothing():
    before = {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}
    seen = []

    def body() -> None:
        with cli.stop_on_signals() as stop:
            seen.append(({sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}, stop.requested))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [(before, False)]


def test_refuse_files_in_names_a_file_where_a_folder_was_expected(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    for force in (False, True):
        with pytest.raises(ValueError) as exc:
            cli.refuse_files_in("--out", file, force=force)
        assert str(exc.value) == f"--out: expected a new or empty folder, got {file}, which is a file"
        with pytest.raises(ValueError) as exc:
            cli.refuse_files_in("--out", file / "sub", force=force)
        assert str(exc.value) == (f"--out: expected a new or empty folder, got {file / 'sub'}, inside {file}, "
                                  "which is a file")
    cli.refuse_files_in("--out", tmp_path / "new" / "folder", force=False)  # new: fine
    assert file.read_text() == "keep"


def test_an_out_that_is_a_file_is_one_line_before_any_work(tmp_path):
    """synth-commands, synth-talk and mine write folders: a file there is refused up front (mine
    before it streams), not an OS error after the work."""
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    talk = tmp_path / "talk.wav"
    talk.write_bytes(b"")
    expected = f"edgesense: error: --out: expected a new or empty folder, got {file}, which is a file"
    for args in (("synth-commands",), ("synth-talk",),
                 ("mine", "--model", REPO / "models" / "edgesense.tflite", "--negatives", talk)):
        assert only_line(edgesense(*args, "--out", file)) == expected, args
    assert file.read_text() == "keep"


_STAGING_COMMAND = """
import sys, time
from pathlib import Path
from edgesense.app.cli import run_main, say

def main():
    staging = Path(sys.argv[1])
    staging.mkdir()
    try:
        (staging / "ready").write_text("")
        time.sleep(60)
    except BaseException:  # what a command does when interrupted: its staging folder goes, it says so
        (staging / "ready").unlink()
        staging.rmdir()
        say("cmd: interrupted; nothing left behind")
        raise

sys.exit(run_main("cmd", main))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_sigterm_interrupts_a_command_as_ctrl_c_does_so_it_cleans_up(tmp_path, sig):
    # SIGTERM (kill, timeout, systemctl stop) ended a desktop command at once: `edgesense deploy` left its hidden
    # .OUT.partial-* folder, synth-talk the sentences it wrote out of transcripts.txt; exit 143, not 130. SIGHUP
    # (the terminal closed) did too, exit 129.
    import subprocess
    import sys
    import time

    staging = tmp_path / ".out.partial"
    proc = subprocess.Popen([sys.executable, "-c", _STAGING_COMMAND, str(staging)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=hang_up_as_a_shell_would)
    deadline = time.monotonic() + 60
    while not (staging / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED and err == "cmd: interrupted; nothing left behind\n"
    assert not staging.exists()


def test_sigterm_interrupts_leaves_a_handler_of_its_own_and_restores_the_default():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with cli.sigterm_interrupts():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        with cli.stop_on_signals() as stop:  # run, record, demo: their own handler, within
            signal.raise_signal(signal.SIGTERM)
            assert stop.requested
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sighup_that_nohup_ignores_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cli.sigterm_interrupts(), cli.stop_on_signals() as stop:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)
            assert not stop.requested
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def _close_its_terminal(argv: list[str], ready: Callable[[], bool], cwd: Path | None = None) -> int:
    """Run ``argv`` in a terminal of its own (a pseudo-terminal it leads, as a shell's command in a window or over
    ssh) and close that terminal once ``ready()``: the kernel sends it SIGHUP, and every later write to the
    terminal fails (EIO). Its exit code (-N: killed by signal N)."""
    import fcntl
    import pty
    import select
    import subprocess
    import termios
    import time

    master, slave = pty.openpty()

    def lead_the_terminal() -> None:
        hang_up_as_a_shell_would()
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, preexec_fn=lead_the_terminal)
    os.close(slave)
    said = b""
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    said += os.read(master, 1 << 16)  # what it says, read as the terminal does
        assert proc.poll() is None, said.decode(errors="replace")
    finally:
        os.close(master)  # the window closes
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_command_whose_terminal_closes_cleans_up_says_so_and_exits_130(tmp_path):
    # Closing the window (or a dropped ssh connection) killed the command at once, its staging folder left behind;
    # then what it said while stopping went to a terminal that was gone: OSError (EIO), exit 1 with a traceback.
    import sys

    staging = tmp_path / ".out.partial"
    code = _close_its_terminal([sys.executable, "-c", _STAGING_COMMAND, str(staging)],
                               lambda: (staging / "ready").exists())
    assert code == cli.EXIT_INTERRUPTED and not staging.exists()


def test_edgesense_run_whose_terminal_closes_stops_as_on_sigterm_and_exits_0(tmp_path):
    # `edgesense run` in a terminal that was closed (or over ssh that dropped) was killed at once by SIGHUP: no
    # summary, no flush of the sinks (MQTT events in memory, the spool), exit 129.
    import sys

    events = tmp_path / "events.jsonl"
    code = _close_its_terminal(
        [sys.executable, "-m", "edgesense.app.cli", "run", "--config", "firmware_configs/desktop.yaml", "--video",
         "samples/scene.mp4", "--audio", "samples/speech_commands.wav", "--events", str(events), "--headless"],
        lambda: events.exists() and events.read_text().count("\n") >= 2, cwd=REPO)
    assert code == 0
    text = events.read_text()
    assert text.endswith("\n") and text.count("\n") >= 2


def test_write_atomic_writes_whole_files_readable_as_the_umask_says_and_leaves_no_hidden_file(tmp_path):
    out = tmp_path / "model.tflite"
    cli.write_atomic(out, b"first")
    cli.write_atomic(out, b"second")  # replaces, never appends
    assert out.read_bytes() == b"second" and sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
    umask = os.umask(0o022)
    try:
        cli.write_atomic(out, b"third")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: the device's service user reads it too


def test_write_atomic_that_fails_keeps_the_earlier_file_and_names_it(tmp_path, monkeypatch):
    out = tmp_path / "heads.tflite"
    out.write_bytes(b"earlier")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match=f"cannot write the stream heads {re.escape(str(out))}: No space left"):
        cli.write_atomic(out, b"new", what="the stream heads")
    assert out.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["heads.tflite"]


def test_a_reader_that_goes_away_ends_the_command_quietly_with_0(tmp_path):
    """``edgesense inspect MODEL | head -1``: when head had its line and left, the next write raised EPIPE and the
    command said ``edgesense: error: [Errno 32] Broken pipe`` and exited 2 (half the time: it depends on when head
    leaves). Here the pipe's reader is gone before the command writes, every time."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "inspect", str(REPO / "models" /
                                                                                        "edgesense.tflite")],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, check=False, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_broken_pipe_that_is_not_stdout_is_still_one_line_and_exit_2(capsys):
    def main():
        raise BrokenPipeError(32, "Broken pipe")  # a helper process's pipe, say: stdout is fine

    assert cli.run_main("edgesense", main) == 2
    assert capsys.readouterr().err == "edgesense: error: [Errno 32] Broken pipe\n"


def test_the_commands_import_and_stop_where_the_system_has_no_sighup(tmp_path):
    """Windows' ``signal`` module has no SIGHUP: reading it at import failed every command (``edgesense.app.cli``'s
    stop signals, the MQTT sink's). Without it, the others are still handled and an inspect runs."""
    import subprocess
    import sys

    code = ("import signal\ndel signal.SIGHUP\nfrom edgesense.app import cli\nfrom edgesense.sinks import mqtt\n"
            "assert signal.SIGTERM in cli.STOP_SIGNALS and signal.SIGINT in mqtt._STOP_SIGNALS, cli.STOP_SIGNALS\n"
            "with cli.sigterm_interrupts():\n    pass\n"
            f"raise SystemExit(cli.main(['inspect', {str(tmp_path / 'missing.tflite')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith("missing.tflite: no such file"), proc.stderr
