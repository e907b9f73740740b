"""Import boundaries: the import-linter contracts of pyproject.toml, and the device side at run time."""

import subprocess
import sys
from pathlib import Path

import pytest

from edgesense import editable_install

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
DEVICE_ROOMS = ("app", "frontend", "loop", "recognition", "runtime", "schema", "sinks", "sources")


def test_import_linter_contracts_are_kept():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extra ({editable_install('dev')})")
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_importing_every_device_module_loads_no_desktop_package():
    """What the contracts say statically, checked dynamically (lazy imports inside functions included)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "names = ['edgesense.types']\n"
        f"for room in {DEVICE_ROOMS!r}:\n"
        "    package = importlib.import_module('edgesense.' + room)\n"
        "    names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')\n"
        "                or m.startswith(('edgesense.train', 'edgesense.quantize', 'edgesense.bench',\n"
        "                                 'edgesense.deploy')))\n"
        "print(len(names), ','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    count, loaded = out.stdout.strip().split(" ", 1) if " " in out.stdout.strip() else (out.stdout.strip(), "")
    assert int(count) >= 30  # every device module was imported
    assert loaded == ""
