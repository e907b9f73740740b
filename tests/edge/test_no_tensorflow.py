"""edge/ is what runs on the device: numpy, OpenCV, sounddevice and LiteRT only."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

EDGE_DIR = Path(edge.__file__).parent
FORBIDDEN = ("tensorflow", "keras", "train", "quantize")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_module_under_edge_imports_tensorflow_or_desktop_code():
    offenders = [
        f"{path.relative_to(EDGE_DIR.parent)} imports {name}"
        for path in sorted(EDGE_DIR.rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_importing_every_edge_module_leaves_tensorflow_unloaded():
    modules = [m.name for m in pkgutil.walk_packages([str(EDGE_DIR)], prefix="edge.")]
    assert "edge.features" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
