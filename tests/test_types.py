"""The device runtime passes ``mypy`` with pyproject.toml's settings: ``edge/`` ships ``py.typed``, so the
annotations of its Python API are what the type checkers of its users read (an attribute typed ``X | None``
that is never ``None``, a context manager that gives ``Any`` make their code fail to check or check nothing).
``mypy`` comes with the ``dev`` extra; without it the test is skipped."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (the dev extra has it: scripts/setup.sh)")

#: How a user's code reads the public API: each line's expression and the type mypy must reveal for it.
USER_CODE = '''
from edgesense.runtime.second_opinion import StreamHeads
from edgesense.sinks.base import CallbackSink
from edgesense.sources.microphone import MicrophoneSource
from edgesense.sources.replay import VideoReplaySource, WavReplaySource


def user(heads: StreamHeads) -> None:
    reveal_type(heads.metadata)
    with WavReplaySource("a.wav") as wav:
        reveal_type(wav)
        for chunk in wav:
            reveal_type(chunk)
    with VideoReplaySource("a.mp4") as video:
        reveal_type(video.read())
    with MicrophoneSource() as microphone:
        reveal_type(microphone.read())
    with CallbackSink(print) as sink:
        reveal_type(sink)
'''
REVEALED = [
    "dict[str, Any]",
    "edgesense.sources.replay.WavReplaySource",
    "edgesense.sources.base.AudioChunk",
    "edgesense.sources.base.VideoFrame | None",
    "edgesense.sources.base.AudioChunk | None",
    "edgesense.sinks.base.CallbackSink",
]


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")  # one per run: the second check reuses the first's analysis


def _mypy(cache: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """``mypy`` with pyproject.toml's settings (on its ``files``, edge/, unless ``files`` are given)."""
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(cache), "--no-error-summary", *map(str, files)],
                          cwd=REPO, capture_output=True, text=True, check=False)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    hint = ""
    if 'module named "edgesense' in proc.stdout:
        hint = ("\n(edgesense.* cannot be resolved: install the checkout as scripts/setup.sh does, "
                "pip install -e '.[dev]' --config-settings editable_mode=strict)")
    return proc.stdout[-4000:] + proc.stderr[-1000:] + hint


@needs_mypy
def test_mypy_finds_nothing_in_the_device_runtime(mypy_cache):
    proc = _mypy(mypy_cache)
    assert proc.returncode == 0, _output(proc)


@needs_mypy
def test_the_public_api_reads_as_its_types_to_a_users_type_checker(mypy_cache, tmp_path):
    user = tmp_path / "user.py"
    user.write_text(USER_CODE, encoding="utf-8")
    proc = _mypy(mypy_cache, user)
    revealed = [line.split('Revealed type is "', 1)[1].rstrip('"') for line in proc.stdout.splitlines()
                if 'Revealed type is "' in line]
    assert revealed == REVEALED, _output(proc)
