"""scripts/setup.sh (what `make demo` and `make test` run first): which Debian packages it asks for,
what it prints, the OpenCV swap for the demo window, the extras and the Python it accepts, and a
second run that installs nothing unless the install was undone. apt-get, dpkg, Python and the
virtual environment's pip are stand-ins that record their arguments: nothing is installed."""

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
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")  # the extras and requires-python
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    debs = tmp_path / "debs"  # what the stand-in apt-get installed; dpkg -s knows these
    _script(bin_dir / "dpkg", f'grep -qxF -- "$2" {debs} 2>/dev/null\n')
    _script(bin_dir / "apt-get", f'echo "apt-get $*" >> {log}\n'
                                 f'[ "$1" = install ] && printf "%s\\n" "${{@:4}}" >> {debs}\nexit 0\n')
    _script(bin_dir / "sudo", '"$@"\n')
    # The stand-in venv python: `-m venv [--clear] DIR` makes DIR/bin/python, itself this script; its
    # version is the file `version` beside it (default 3.11); EdgeSense is installed (the shipped config
    # found) while the file `installed` exists, which `pip install -e` makes; pip prints noise.
    python = bin_dir / "python3"
    _script(python, f'''echo "python $*" >> {log}
if [ "$1 $2" = "-m venv" ]; then
  dir="$3"; if [ "$3" = "--clear" ]; then dir="$4"; rm -rf "$dir"; fi
  mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python"; exit 0
fi
if [ "$1" = "-c" ]; then
  case "$2" in
    *version_info*) cat "$(dirname "$0")/version" 2>/dev/null || echo 3.11 ;;
    *shipped_config*) [ -f "{tmp_path}/installed" ] || exit 1 ;;
  esac
  exit 0
fi
if [ "$3 $4" = "list --format=freeze" ]; then
  if [ -f "{tmp_path}/swapped" ]; then echo "opencv-python=={HEADLESS_VERSION}"
  else echo "opencv-python-headless=={HEADLESS_VERSION}"; fi
  exit 0
fi
if [ "$3" = "install" ] && [[ "$*" == *"opencv-python=="* ]]; then touch "{tmp_path}/swapped"; fi
if [ "$3" = "install" ] && [[ "$*" == *"opencv-python-headless=="* ]]; then rm -f "{tmp_path}/swapped"; fi
if [ "$3 $4 $5" = "install -q -e" ]; then touch "{tmp_path}/installed"; fi
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
    log = checkout.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def new_calls(checkout: Path, before: int) -> list[str]:
    return calls(checkout)[before:]


def test_make_demo_setup_installs_only_portaudio_and_prints_two_lines(checkout):
    proc = run_setup(checkout, EXTRAS="mqtt")
    assert proc.returncode == 0, proc.stderr
    installs = [c for c in calls(checkout) if c.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq libportaudio2"]
    out = (proc.stdout + proc.stderr).splitlines()
    assert out == ["setup: installing Debian packages: libportaudio2", "setup: ready (.venv, extras: mqtt)"]
    assert NOISE in (checkout / ".venv" / "edgesense-install.log").read_text()  # kept, not shown
    assert not any("opencv" in c for c in calls(checkout))  # no display: the headless OpenCV stays


def test_the_desktop_and_test_setup_adds_espeak_mosquitto_and_logrotate(checkout):
    proc = run_setup(checkout)
    assert proc.returncode == 0, proc.stderr
    installs = [c for c in calls(checkout) if c.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq libportaudio2 espeak-ng mosquitto logrotate"]


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


def test_gui_0_brings_the_headless_opencv_back_after_a_swap(checkout):
    assert run_setup(checkout, EXTRAS="mqtt", GUI="1").returncode == 0  # the GUI build is in
    before = len(calls(checkout))
    proc = run_setup(checkout, EXTRAS="mqtt", GUI="0")
    assert proc.returncode == 0, proc.stderr
    pip = [c for c in new_calls(checkout, before) if "opencv" in c and "list" not in c]
    assert pip == ["python -m pip uninstall -q -y opencv-python-headless opencv-python",
                   f"python -m pip install -q opencv-python-headless=={HEADLESS_VERSION}"]
    assert f"installing OpenCV's headless build (opencv-python-headless {HEADLESS_VERSION})" in proc.stdout
    again = run_setup(checkout, EXTRAS="mqtt", GUI="0")  # headless already: nothing to do
    assert again.returncode == 0 and "OpenCV" not in again.stdout


def test_an_unknown_extra_is_refused_in_one_line_before_anything_is_installed(checkout):
    proc = run_setup(checkout, EXTRAS="mqtt,trian")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("setup: EXTRAS: expected a comma-separated list of train,")
    assert "got 'mqtt,trian' (unknown: trian)" in line
    assert calls(checkout) == [] and not (checkout / ".venv").exists()
    assert run_setup(checkout, EXTRAS=",").returncode == 2
    spaced = run_setup(checkout, EXTRAS="mqtt, bench,")  # a space after a comma, a comma at the end: fine
    assert spaced.returncode == 0 and "setup: ready (.venv, extras: mqtt,bench)" in spaced.stdout
    assert any("pip install -q -e .[mqtt,bench] " in c for c in calls(checkout))


def test_a_second_run_installs_nothing_even_after_bench_cached_its_references(checkout):
    assert run_setup(checkout, EXTRAS="mqtt").returncode == 0
    # what bench keeps beside the reference models (models/references/) is not installed: no reason
    # to install again
    (checkout / "models" / "references").mkdir()
    (checkout / "models" / "references" / "kws_teacher.tflite").write_text("")
    before = len(calls(checkout))
    again = run_setup(checkout, EXTRAS="mqtt")
    assert again.returncode == 0, again.stderr
    assert not [c for c in new_calls(checkout, before) if " install " in f"{c} "]  # neither apt nor pip
    assert (again.stdout + again.stderr).splitlines() == ["setup: ready (.venv, extras: mqtt)"]


def test_a_run_after_the_install_was_undone_installs_again(checkout):
    assert run_setup(checkout, EXTRAS="mqtt").returncode == 0
    # build/ (the strict install's link tree) removed, or a plain `pip install -e .` over it: the
    # shipped config is not found any more (`edgesense demo` fails), and the next run installs again
    (checkout.parent / "installed").unlink()
    before = len(calls(checkout))
    repaired = run_setup(checkout, EXTRAS="mqtt")
    assert repaired.returncode == 0, repaired.stderr
    assert any("pip install -q -e .[mqtt]" in c for c in new_calls(checkout, before))
    assert (checkout.parent / "installed").exists()


def test_a_python_older_than_requires_python_is_refused_in_one_line(checkout):
    (checkout.parent / "bin" / "version").write_text("3.9\n")
    proc = run_setup(checkout, EXTRAS="mqtt")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line == (f"setup: PYTHON: expected a Python >= 3.10 (e.g. PYTHON=python3.11), got "
                    f"{checkout.parent / 'bin' / 'python3'} (Python 3.9)")
    assert not (checkout / ".venv").exists() and not [c for c in calls(checkout) if c.startswith("apt-get")]
    missing = run_setup(checkout, EXTRAS="mqtt", PYTHON=str(checkout.parent / "no-such-python"))
    assert missing.returncode == 2 and "no-such-python, which does not run" in missing.stderr


def test_a_venv_of_an_old_python_is_made_again_with_the_python_given(checkout):
    old = checkout / ".venv" / "bin"
    old.mkdir(parents=True)
    shutil.copy(checkout.parent / "bin" / "python3", old / "python")
    (old / "version").write_text("3.9\n")  # made before by a python3 that was 3.9
    (checkout / ".venv" / ".edgesense-installed-mqtt").write_text("stale")
    proc = run_setup(checkout, EXTRAS="mqtt")
    assert proc.returncode == 0, proc.stderr
    assert "setup: making .venv again with" in proc.stdout and "it had 3.9" in proc.stdout
    assert any(c.startswith("python -m venv --clear ") for c in calls(checkout))
    assert not (old / "version").exists() and any("pip install -q -e .[mqtt]" in c for c in calls(checkout))
    # the venv's Python is the one PYTHON names: nothing made again
    before = len(calls(checkout))
    again = run_setup(checkout, EXTRAS="mqtt")
    assert again.returncode == 0 and "making .venv again" not in again.stdout
    assert not [c for c in new_calls(checkout, before) if "venv" in c]
    # another Python named with PYTHON: the venv is made again with it
    (checkout.parent / "bin" / "version").write_text("3.12\n")
    other = run_setup(checkout, EXTRAS="mqtt")
    assert other.returncode == 0 and "it had 3.11" in other.stdout
