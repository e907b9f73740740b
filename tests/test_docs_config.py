"""What the docs say about the device config and the events against the code: docs/DEVICE.md's
"Configuration" documents every field a device config accepts (the options dataclasses the loader
builds) once, with its real default, and no field a config does not accept; the events the docs
spell out have the keys the code writes."""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from edgesense.loop.config import SECTIONS, DeviceConfig
from edgesense.loop.stats import AUDIO_END_TO_EVENT, STAGES
from edgesense.schema.yaml import parse_yaml_value
from edgesense.types import CommandEvent, SceneEvent

REPO = Path(__file__).resolve().parents[1]
REQUIRED = "required"  #: what the default column says of a field without a default
#: A heading that names the section of the bare field names in the tables under it: "(`commands:`)".
SECTION_HEADING = re.compile(r"^#+ .*\(`(\w+):`\)\s*$")


def _leaf_fields(cls: type, prefix: str, defaults: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_leaf_fields(hints[f.name], name + ".", defaults[f.name]))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            out[name] = REQUIRED
        else:
            out[name] = defaults[f.name]
    return out


def config_fields() -> dict[str, Any]:
    """Every field a device config accepts, dotted (``camera.backoff.max_ms``) -> its default as plain data
    (the default of a config that leaves it out: a nested section's default is its parent's)."""
    defaults = DeviceConfig.from_dict({"device": {"name": "x"}}).to_dict()
    out: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        out.update(_leaf_fields(cls, section + ".", defaults[section]))
    return out


def _configuration_text() -> str:
    text = (REPO / "docs/DEVICE.md").read_text(encoding="utf-8")
    start = text.index("### Configuration")
    return text[start:text.index("\n### ", start + 1)]


def documented_fields() -> list[tuple[str, str]]:
    """(dotted field, the text of its default cell) of each row of every ``| field | default |`` table of
    DEVICE.md's "Configuration"; a bare name is of the section the heading above its table names."""
    rows: list[tuple[str, str]] = []
    section, in_table = None, False
    for line in _configuration_text().splitlines():
        heading = SECTION_HEADING.match(line)
        if heading:
            section = heading.group(1)
        if line.startswith("| field | default |"):
            in_table = True
            continue
        if not (in_table and line.startswith("|")):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if set(cells[0]) <= {"-", " "}:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        defaults = [REQUIRED] if cells[1] == REQUIRED else re.findall(r"`([^`]*)`", cells[1])
        assert len(defaults) == len(names), f"DEVICE.md: {line[:80]}: one default per field"
        for name, default in zip(names, defaults):
            rows.append((name if name.split(".")[0] in SECTIONS else f"{section}.{name}", default))
    return rows


def test_every_field_a_device_config_accepts_is_documented_once_and_no_other():
    documented = collections.Counter(name for name, _ in documented_fields())
    accepted = set(config_fields())
    assert not sorted(accepted - set(documented)), "fields a config accepts that DEVICE.md does not document"
    assert not sorted(set(documented) - accepted), "fields DEVICE.md documents that no config accepts"
    assert not sorted(name for name, count in documented.items() if count > 1), "fields documented twice"


def test_each_field_documented_has_the_default_the_code_gives_it():
    accepted = config_fields()
    wrong = []
    for name, text in documented_fields():
        default = text if text == REQUIRED else parse_yaml_value(text, source=name)
        if name in accepted and default != accepted[name]:
            wrong.append(f"{name}: DEVICE.md says {text}, the code {accepted[name]!r}")
    assert not wrong


def test_the_section_table_names_each_sections_options_class():
    rows = dict(re.findall(r"^\| `(\w+)` \| `(edgesense\.[\w.]+)`", _configuration_text(), flags=re.M))
    assert rows == {name: f"{cls.__module__}.{cls.__qualname__}" for name, cls in SECTIONS.items()}


def _event_keys(event: CommandEvent | SceneEvent) -> tuple[set[str], set[str]]:
    data = event.to_dict()
    return set(data), set(data["latency_ms"])


COMMAND = CommandEvent(label="yes", score=0.9, t_ms=1.0, wall_time=2.0,
                       latency_ms={**dict.fromkeys(STAGES, 0.0), AUDIO_END_TO_EVENT: 0.0})
FIRST_SCENE = SceneEvent(label="sea", score=0.9, t_ms=1.0, wall_time=2.0, latency_ms=dict.fromkeys(STAGES, 0.0))
CHANGE = dataclasses.replace(FIRST_SCENE, label="forest", previous="sea")
HEARTBEAT = dataclasses.replace(FIRST_SCENE, reason="heartbeat")


def test_the_example_events_of_the_device_doc_have_the_keys_the_code_writes():
    text = (REPO / "docs/DEVICE.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", text, flags=re.S).group(1)
    decoder, at, examples = json.JSONDecoder(), 0, []
    while block[at:].strip():
        at += len(block[at:]) - len(block[at:].lstrip())
        example, at = decoder.raw_decode(block, at)
        examples.append(example)
    assert [e["type"] for e in examples] == ["command", "scene"]
    command, scene = examples
    assert (set(command), set(command["latency_ms"])) == _event_keys(COMMAND)
    assert scene["reason"] == "change" and (set(scene), set(scene["latency_ms"])) == _event_keys(CHANGE)


@pytest.mark.parametrize("event", [COMMAND, FIRST_SCENE, CHANGE, HEARTBEAT],
                         ids=["command", "first scene", "change", "heartbeat"])
def test_the_contracts_doc_lists_the_keys_of_each_event(event):
    text = " ".join((REPO / "docs/CONTRACTS.md").read_text(encoding="utf-8").split())
    stated = re.search(r'a command is `\{(.*?)\}`, a scene `\{(.*?)\}` plus `"previous"`', text)
    assert stated, "CONTRACTS.md: the keys of the two events"
    keys = set(re.findall(r'"(\w+)"', stated.group(1 if event.type == "command" else 2))) - {event.type}
    if event is CHANGE:
        keys.add("previous")
    assert keys == set(event.to_dict())
