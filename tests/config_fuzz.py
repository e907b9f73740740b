"""What the config property tests share (tests/train/test_config_properties.py for ``train.yaml``,
tests/edge/loop/test_config_properties.py for the device YAML): the dotted leaf fields of an options
dataclass, a value put at one of them, values written as YAML flow text, and the one-line error checked."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import typing

#: The file name the fuzzed configs are loaded as (what every error must start with).
SOURCE = "fuzz.yaml"
HUGE = 10**30
#: Past float's range: YAML reads it as an integer that no float holds.
BEYOND_FLOAT = 10**400
#: ``fuzz.yaml: field.path: ...`` or ``fuzz.yaml:12: field.path[3]: ...`` (one line; an unknown key as written).
MESSAGE = re.compile(rf"^{re.escape(SOURCE)}(:\d+)?: (?P<field>[^:]+): \S")


def leaf_fields(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of the options dataclass ``cls`` that a config sets, dotted (``train.learning_rate``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.init:
            tp = hints[f.name]
            out.extend(leaf_fields(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [prefix + f.name])
    return out


def put(mapping: dict, path: str, value: object) -> dict:
    """A copy of ``mapping`` with ``value`` at the dotted ``path`` (sections made or replaced as needed)."""
    out = copy.deepcopy(mapping)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        child = node.get(part)
        node[part] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[last] = value
    return out


def yaml_flow(value: object) -> str:
    """``value`` in YAML flow style (JSON, with YAML's spellings of the floats JSON has none for)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {yaml_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def error_field(exc: ValueError) -> str:
    """The field a config error names, checking it is one line that names the file and a field."""
    text = str(exc)
    assert "\n" not in text, text
    match = MESSAGE.match(text)
    assert match, text
    return match["field"]
