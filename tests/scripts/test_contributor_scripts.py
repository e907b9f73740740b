"""The scripts a contributor runs (README, docs/BENCHMARK.md, docs/DEPLOY.md, samples/README.md): bad flags are one
line and exit code 2, as for ``edgesense``; the sample makers replace no files unasked and reproduce the bundled
ground truth; a flag that would fail at the end of a long run is refused before it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
DATA = ROOT.parent / "shared" / "data"


def run_script(tmp_path: Path, name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``scripts/NAME ARGS`` run from ``tmp_path`` (another folder than the checkout's root)."""
    command = ["bash"] if name.endswith(".sh") else [sys.executable]
    return subprocess.run([*command, str(SCRIPTS / name), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("name", [
    "blend_study.py", "context_rule_study.py", "make_samples.py", "make_speech_sample.py", "mel_denoise_probe.py",
    "recognizer_check_probe.py", "resolve_targets.py", "scene_audio_probe.py", "scene_test_time_probe.py",
    "teacher_stream_study.py", "voice_probe.py",
])
def test_an_unknown_flag_is_one_line_and_exit_code_2(tmp_path, name):
    proc = run_script(tmp_path, name, "--no-such-flag")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"{name}: error: ") and proc.stderr.count("\n") == 1, proc.stderr  # no usage block


def _needs(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"needs {path}")


@pytest.mark.parametrize("name, files, flags", [
    ("make_samples.py", ("scene.mp4", "commands.json"), ["--ambient-dir", str(DATA / "ambient")]),
    ("make_speech_sample.py", ("speech_commands.json",), ["--data", str(DATA)]),
])
def test_the_sample_makers_replace_files_only_with_force(tmp_path, name, files, flags):
    """The default --out is samples/, the bundled (tracked) samples: a run replaced them unasked."""
    _needs(DATA / "ambient", DATA / "speech_commands")
    if name == "make_samples.py" and shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    out = tmp_path / "out"
    out.mkdir()
    for file in files:
        (out / file).write_text("mine\n")
    proc = run_script(tmp_path, name, *flags, "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.endswith(f"error: --out {out / files[0]}: exists; pass --force to replace it\n"), proc.stderr
    assert all((out / file).read_text() == "mine\n" for file in files)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)

    proc = run_script(tmp_path, name, *flags, "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    # the ground truth comes out as bundled (the WAVs differ by a PCM step, the video by its muxer's tag:
    # samples/README.md)
    for file in files:
        if file.endswith(".json"):
            assert (out / file).read_bytes() == (ROOT / "samples" / file).read_bytes(), file


@pytest.mark.parametrize("name", ["make_samples.py", "make_speech_sample.py"])
def test_an_out_that_is_a_file_is_one_line(tmp_path, name):
    (tmp_path / "afile").write_text("x")
    proc = run_script(tmp_path, name, "--out", "afile")
    assert proc.returncode == 2
    assert proc.stderr == f"{name}: error: --out: expected a folder, got afile, which is a file\n"


def test_resolve_targets_refuses_a_json_it_cannot_write_before_asking_pypi(tmp_path):
    """It failed after resolving every target (pip's metadata from PyPI) with a bare '[Errno 2] ...'."""
    proc = run_script(tmp_path, "resolve_targets.py", "--target", "desktop", "--json", "no-such-folder/r.json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("resolve_targets.py: error: --json no-such-folder/r.json: expected a file in an existing "
                           "folder, got a path whose folder does not exist\n")


def test_resolve_targets_names_a_bad_python_version_as_the_flag_before_asking_pypi(tmp_path):
    """It said "resolve_targets: rpi5: python_version: ...": the field, not the flag, blamed on the first target."""
    proc = run_script(tmp_path, "resolve_targets.py", "--python-version", "abc")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("resolve_targets.py: error: --python-version: expected a Python version like '3.11', "
                           "got 'abc'\n")


def test_resolve_targets_columns_are_the_projects_dependencies():
    """The table had a 'pyyaml' column, always '-', after the project moved to ruamel.yaml (that one came last)."""
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {canonicalize_name(dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip())
             for dep in project["dependencies"]}
    columns = set(load_script("resolve_targets").COLUMNS) - {"opencv", "interpreter"}
    assert columns <= names, columns - names


@pytest.fixture
def not_root(tmp_path) -> dict:
    """An environment whose ``id -u`` is not 0: the script cannot go on to debootstrap, mounts or apt-get."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "id").chmod(0o755)
    return {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("flags, expected", [
    (["--workdir"], "--workdir: expected a value after it, got none"),  # was bash's '$2: unbound variable', exit 1
    (["--video", "no-such.mp4"], "--video no-such.mp4: no such file"),  # was found after the rootfs and the bundle
    (["--swap-wheel", "no-such.whl"], "--swap-wheel no-such.whl: no such file"),  # after the emulated install
    (["--bundle", "."], "--bundle .: expected an edgesense deploy bundle, found no MANIFEST.json"),
])
def test_emulate_rpi5_checks_its_flags_before_the_slow_part(tmp_path, not_root, flags, expected):
    proc = run_script(tmp_path, "emulate_rpi5.sh", *flags, env=not_root)
    assert proc.returncode == 2 and proc.stderr == f"emulate_rpi5: error: {expected}\n", proc.stderr


def test_emulate_rpi5_help_is_its_header(tmp_path, not_root):
    proc = run_script(tmp_path, "emulate_rpi5.sh", "--help", env=not_root)
    assert proc.returncode == 0 and "--swap-wheel FILE" in proc.stdout
    assert "set -euo" not in proc.stdout and not any(line.startswith("#") for line in proc.stdout.splitlines())
