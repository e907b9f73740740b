"""scripts/setup.sh (what `make demo` and `make test` run first): which Debian packages it asks for,
what it prints, and the OpenCV swap for the demo window. apt-get, dpkg and the virtual
environment's pip are stand-ins that record their arguments: nothing is installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = "BuildBackendWarning: a warning from the build backend"
HEADLESS_VERSION = "5.0.0.93"


def _script(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of setup.sh in a folder shaped like the checkout, with stand-in tools on PATH."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    for folder in ("edge", "train", "quantize", "bench", "deploy", "firmware_configs", "samples", "models"):
        (root / folder).mkdir()
        (root / folder / "x").write_text("")
    (root / "pyproject.toml").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _script(bin_dir / "dpkg", "exit 1\n")  # nothing is installed
    _script(bin_dir / "apt-get", f'echo "apt-get $*" >> {log}\n')
    _script(bin_dir / "sudo", '"$@"\n')
    # The stand-in venv python: `-m venv DIR` makes DIR/bin/python, itself this script; pip prints noise.
    python = bin_dir / "python3"
    _script(python, f'''echo "python $*" >> {log}
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [ "$3 $4" = "list --format=freeze" ]; then
  if [ -f "{tmp_path}/swapped" ]; then echo "opencv-python=={HEADLESS_VERSION}"
  else echo "opencv-python-headless=={HEADLESS_VERSION}"; fi
  exit 0
fi
if [ "$3" = "install" ] && [[ "$*" == *"opencv-python=="* ]]; then touch "{tmp_path}/swapped"; fi
for i in $(seq 100); do echo "{NOISE} $i" >&2; done
''')
    return root


def run_setup(checkout: Path, **env: str) -> subprocess.CompletedProcess:
    bin_dir = checkout.parent / "bin"
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python3"),
            "DISPLAY": "", "WAYLAND_DISPLAY": "", **env}
    return subprocess.run(["bash", str(checkout / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=full, timeout=60, check=False)


def calls(checkout: Path) -> list[str]:
    return (checkout.parent / "calls.log").read_text().splitlines()


def test_make_demo_setup_installs_only_portaudio_and_prints_two_lines(checkout):
    proc = run_setup(checkout, EXTRAS="mqtt")
    assert proc.returncode == 0, proc.stderr
    installs = [c for c in calls(checkout) if c.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq libportaudio2"]
    out = (proc.stdout + proc.stderr).splitlines()
    assert out == ["setup: installing Debian packages: libportaudio2", "setup: ready (.venv, extras: mqtt)"]
    assert NOISE in (checkout / ".venv" / "edgesense-install.log").read_text()  # kept, not shown
    assert not any("opencv" in c for c in calls(checkout))  # no display: the headless OpenCV stays


def test_the_desktop_and_test_setup_adds_espeak_and_mosquitto(checkout):
    proc = run_setup(checkout)
    assert proc.returncode == 0, proc.stderr
    installs = [c for c in calls(checkout) if c.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq libportaudio2 espeak-ng mosquitto"]


def test_with_a_display_the_gui_opencv_replaces_the_headless_one(checkout):
    proc = run_setup(checkout, EXTRAS="mqtt", DISPLAY=":0")
    assert proc.returncode == 0, proc.stderr
    pip = [c for c in calls(checkout) if "opencv" in c and "list" not in c]
    assert pip == ["python -m pip uninstall -q -y opencv-python-headless opencv-python",
                   f"python -m pip install -q opencv-python=={HEADLESS_VERSION}"]
    assert "installing OpenCV's GUI build (opencv-python 5.0.0.93) for the demo window" in proc.stdout
    again = run_setup(checkout, EXTRAS="mqtt", DISPLAY=":0")  # already swapped: nothing to do
    assert again.returncode == 0 and "OpenCV" not in again.stdout
    assert run_setup(checkout, EXTRAS="mqtt", GUI="maybe").returncode == 2
