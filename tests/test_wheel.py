"""EdgeSense as a wheel installs it: the demo, the shipped configs, the model and the samples
work from a virtual environment, from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from cli_run import folder_files

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {
    "edgesense/firmware_configs": {"desktop.yaml", "rpi4.yaml", "rpi5.yaml", "jetson-orin.yaml", "jetson-nano.yaml"},
    "edgesense/models": {"edgesense.tflite", "stream_heads.tflite", "README.md"},
    "edgesense/samples": {"scene.mp4", "commands.wav", "commands.json", "scenes.json", "speech_commands.wav",
                          "speech_commands.json", "README.md"},
}
NO_DISPLAY = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}

pytestmark = pytest.mark.slow  # builds a wheel and a virtual environment (about ten seconds)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dest), str(REPO)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    (path,) = dest.glob("edgesense-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (``pip install --no-deps``, offline). Its
    dependencies come from this environment's site-packages through a ``.pth`` line: that adds the
    folder only, not the editable install of the checkout that this environment's own ``.pth`` adds."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return root


def test_the_wheel_ships_the_configs_the_model_and_the_samples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, files in SHIPPED.items():
        assert {f"{folder}/{name}" for name in files} <= names, folder
    assert not [n for n in names if n.startswith("edgesense/models/references/")]  # the card's model only


def test_demo_and_run_work_from_the_installed_wheel(venv, tmp_path):
    python, cli = venv / "bin" / "python", venv / "bin" / "edgesense"
    where = subprocess.run([str(python), "-c", "import edgesense.shipped as s; print(s.shipped_config('desktop'))"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(REPO)

    cache = tmp_path / "cache"
    env = {**os.environ, **NO_DISPLAY, "XDG_CACHE_HOME": str(cache)}
    demo = subprocess.run([str(cli), "demo", "--duration-s", "2"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300, check=False)
    assert demo.returncode == 0, demo.stderr
    assert [json.loads(line)["type"] for line in demo.stdout.splitlines()]
    assert (cache / "edgesense" / "demo.mp4").stat().st_size > 0
    assert folder_files(tmp_path) == ["cache"]

    samples = Path(where).parent.parent / "samples"
    run = subprocess.run([str(cli), "run", "--config", where, "--video", str(samples / "scene.mp4"),
                          "--audio", str(samples / "speech_commands.wav"), "--fast", "--headless"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert {e["type"] for e in events} == {"command", "scene"}
    assert "edgesense run: events:" in run.stderr


def test_the_wheel_holds_the_package_and_its_data_only_and_the_device_needs_no_tensorflow(wheel):
    with zipfile.ZipFile(wheel) as whl:
        infos = whl.infolist()
        metadata = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    names = {i.filename for i in infos}
    assert "edgesense/py.typed" in names and "edgesense/deploy/templates/install.sh.in" in names
    data = {n for n in names if not n.endswith(".py") and not n.startswith("edgesense-0.1.0.dist-info/")}
    shipped = {f"{folder}/{name}" for folder, files in SHIPPED.items() for name in files}
    templates = {n for n in data if n.startswith("edgesense/deploy/templates/") and n.endswith(".in")}
    assert data - shipped - templates == {"edgesense/py.typed"}  # no data sets, caches, runs, references
    assert max(i.file_size for i in infos) < 1_000_000 and sum(i.file_size for i in infos) < 5_000_000
    device = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert device and not [line for line in device if any(w in line for w in ("tensorflow", "keras", "torch"))]


def test_the_wheel_carries_the_licence_it_declares(wheel):
    """pyproject's ``license = "Apache-2.0"`` with the licence's text (Apache-2.0, section 4(a)): the checkout's
    LICENSE, which setuptools puts into the wheel's .dist-info (and the sdist) by default."""
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        texts = [whl.read(n).decode() for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert texts == [(REPO / "LICENSE").read_text()] and "Apache License" in texts[0] and "Version 2.0" in texts[0]
