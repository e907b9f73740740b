"""Files shipped inside the package: the device configs, the bundled model and the sample media.

They live in the checkout's top-level ``firmware_configs/``, ``models/`` and ``samples/``
folders, which the wheel installs as the data-only subpackages ``edgesense.firmware_configs``,
``edgesense.models`` and ``edgesense.samples`` (pyproject.toml). Looking them up through
:mod:`importlib.resources` finds them in an editable install, a wheel and a deploy bundle alike.
The configs' ``model.path: ../models/edgesense.tflite`` holds in both layouts.
"""

from __future__ import annotations

import sysconfig
from importlib import resources
from pathlib import Path

__all__ = ["CONFIGS", "MODELS", "SAMPLES", "config_argument", "model_argument", "part_of_an_installation",
           "shipped_path", "shipped_config"]

CONFIGS = "firmware_configs"
MODELS = "models"
SAMPLES = "samples"
_FOLDERS = (CONFIGS, MODELS, SAMPLES)


def shipped_path(folder: str, name: str) -> Path:
    """The installed file ``folder/name`` (``folder``: one of :data:`CONFIGS`, :data:`MODELS`,
    :data:`SAMPLES`); ``ValueError`` naming it when this installation does not have it."""
    if folder not in _FOLDERS:
        raise ValueError(f"folder: expected one of {', '.join(_FOLDERS)}, got {folder!r}")
    try:
        path = Path(str(resources.files(f"edgesense.{folder}").joinpath(name)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ValueError(f"{folder}/{name}: not part of this EdgeSense installation (the wheel and the "
                         f"checkout ship it; reinstall EdgeSense)")
    return path


def shipped_config(name: str) -> Path:
    """A shipped device config by name, e.g. ``shipped_config("desktop")`` -> ``.../firmware_configs/desktop.yaml``."""
    return shipped_path(CONFIGS, name if name.endswith(".yaml") else f"{name}.yaml")


def config_argument(value: str | None) -> str | None:
    """A ``--config`` value as the commands read it: the file when one is there; else, when it names a
    shipped config (``rpi4``, ``rpi4.yaml`` or ``firmware_configs/rpi4.yaml``: the checkout's path, typed in
    another folder or on a wheel install), that config's installed path; else the value as given (the
    command then says it is no such file)."""
    if value is None or Path(value).exists():
        return value
    parts = Path(value).parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == CONFIGS):
        try:
            return str(shipped_config(parts[-1]))
        except ValueError:
            return value
    return value


def model_argument(value: Path | None) -> Path | None:
    """A ``--model`` value as the commands read it: the file when one is there; else, when it is the checkout's
    path of a shipped model (``models/edgesense.tflite``, bench's default, typed in another folder or on a wheel
    install), that model's installed path; else the value as given (the command then says it is no such file)."""
    if value is None or value.exists() or len(value.parts) != 2 or value.parts[0] != MODELS:
        return value
    try:
        return shipped_path(MODELS, value.parts[1])
    except ValueError:
        return value


def part_of_an_installation(path: str | Path) -> bool:
    """Whether ``path`` lies in an installed package folder (a shipped config of a wheel install, ``--config
    desktop``): a file there is replaced by the next upgrade, so a user edits a copy of it instead."""
    resolved = Path(path).resolve()
    roots = {Path(p).resolve() for key in ("purelib", "platlib") if (p := sysconfig.get_paths().get(key))}
    return any(resolved.is_relative_to(root) for root in roots)
