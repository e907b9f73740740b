"""``edgesense bench --write-config``: the recommended recognizer settings written into a firmware
YAML's ``commands:`` section, in place.

The file is edited as a round trip (ruamel.yaml): every other field, comment, blank line, flow or
block style and key order stays as it was; only the recognizer's fields of ``commands:`` change
(a ``commands:`` section is added when there is none). A file with a duplicate key is refused
with one line naming the file, the line and the key (a YAML loader would silently keep the last
one). The result is validated with :func:`edgesense.config.device.load_config` before it
replaces the file; fields that this version of the config loader does not know are left out,
with a warning.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import typing
from pathlib import Path
from typing import Any

from edgesense.recognition.commands import CommandRecognizerOptions

__all__ = ["RECOGNIZER_FIELDS", "check_firmware_config", "update_firmware_config"]

logger = logging.getLogger(__name__)

#: The fields of ``commands:`` the benchmark chooses (CommandRecognizerOptions minus ignored_labels).
RECOGNIZER_FIELDS = ("threshold", "class_thresholds", "release_threshold", "suppression_ms", "average_window_ms",
                     "minimum_count")
_SECTION = "commands"
_WIDTH = 4096  # never re-wrap a long line
_DUPLICATE = re.compile(r'duplicate key "(?P<key>[^"]*)"')


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip
    yaml.width = _WIDTH
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None),
                                     lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _known_fields() -> set[str]:
    """The fields the device config's ``commands:`` section accepts."""
    from edgesense.config.device import DeviceConfig

    section = typing.get_type_hints(DeviceConfig)[_SECTION]
    return {f.name for f in dataclasses.fields(section)}


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() and not isinstance(value, bool) and abs(value) >= 1 else value


def _values(options: CommandRecognizerOptions) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in RECOGNIZER_FIELDS:
        value = getattr(options, name)
        if name == "class_thresholds":
            values[name] = {k: round(float(v), 4) for k, v in sorted(value.items())} or None  # None: remove
        elif isinstance(value, float):
            values[name] = _plain(round(value, 4))
        else:
            values[name] = value
    return values


def _leading_comments(text: str) -> str:
    """The comment and blank lines a file starts with (ruamel.yaml drops them before a flow mapping)."""
    lines = text.splitlines(keepends=True)
    count = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), len(lines))
    return "".join(lines[:count])


def _load(path: Path) -> tuple[Any, Any]:
    """(the round-trip YAML, its data) or a one-line ``ValueError``."""
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import YAMLError

    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    yaml = _yaml()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:
        found = _DUPLICATE.search(str(exc.problem))
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else "?"
        key = found.group("key") if found else "?"
        raise ValueError(f"{path}: line {line}: duplicate key {key!r}; remove one of them") from None
    except (YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    section = data.get(_SECTION)
    if section is not None and not isinstance(section, dict):
        raise ValueError(f"{path}: {_SECTION}: expected a mapping of fields, got {section!r}")
    return yaml, data


def check_firmware_config(path: str | Path) -> None:
    """Raise the one-line ``ValueError`` :func:`update_firmware_config` would (before a long run)."""
    _load(Path(path))


def update_firmware_config(path: str | Path, options: CommandRecognizerOptions) -> Path:
    """Write ``options`` into ``path``'s ``commands:`` (see the module docstring); returns the path.

    Raises ``ValueError`` (one line) for a missing or unreadable file, a duplicate key, or a
    result the config loader rejects; the file is then left untouched."""
    from ruamel.yaml.comments import CommentedMap

    from edgesense.config.device import load_config

    path = Path(path)
    yaml, data = _load(path)
    section = data.get(_SECTION)
    if section is None:
        section = data[_SECTION] = CommentedMap()
    known = _known_fields()
    written = {}
    for name, value in _values(options).items():
        if name not in known:
            if value is not None and value != getattr(CommandRecognizerOptions(), name):
                logger.warning("%s: %s.%s = %s not written: this config loader has no such field", path, _SECTION,
                               name, value)
            continue
        if value is None:
            section.pop(name, None)
        else:
            section[name] = value
            written[name] = value
    out = io.StringIO()
    yaml.dump(data, out)
    text, head = out.getvalue(), _leading_comments(path.read_text(encoding="utf-8"))
    if not text.startswith(head):
        text = head + text
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except ValueError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(str(exc).replace(str(tmp), str(path))) from None
    tmp.replace(path)
    logger.info("wrote %s into %s", ", ".join(f"{_SECTION}.{k}={v}" for k, v in written.items()), path)
    return path
