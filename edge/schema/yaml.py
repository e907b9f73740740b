"""The one YAML loader for every config file EdgeSense reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_yaml_mapping"]


class _Yaml12BoolLoader(yaml.SafeLoader):
    """YAML with 1.2 booleans and floats. Booleans: only true/false (YAML 1.1 also reads
    yes/no/on/off as booleans, which would turn the command words ``[yes, no, on, off]`` into
    ``True``/``False``). Floats: ``1e-6`` is a number (YAML 1.1 wants ``1.0e-6``)."""


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; clear ValueError otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_Yaml12BoolLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_yaml_value(text: str, *, source: str = "value") -> Any:
    """One value written in YAML (a command-line override), read as config files are."""
    try:
        return yaml.load(text, Loader=_Yaml12BoolLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({exc})") from None
