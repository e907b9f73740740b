from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from edgesense.schema.validate import from_mapping, to_mapping
from edgesense.schema.yaml import load_yaml_mapping, parse_yaml_value


@dataclass(frozen=True, kw_only=True)
class Inner:
    rate_hz: float = 5.0
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz: expected > 0, got {self.rate_hz}")


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    count: int = 1
    enabled: bool = True
    paths: tuple[Path, ...] = ()
    device: int | str | None = None
    inner: Inner = Inner()


def test_builds_nested_dataclasses_and_converts_types():
    cfg = from_mapping(Outer, {"name": "x", "paths": ["a", "b"], "device": "hw:1", "inner": {"rate_hz": 2}})
    assert cfg == Outer(name="x", paths=(Path("a"), Path("b")), device="hw:1", inner=Inner(rate_hz=2.0))
    assert isinstance(cfg.inner.rate_hz, float)
    assert to_mapping(cfg)["paths"] == ["a", "b"]


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "colour": 1}, "cfg.yaml: colour: unknown field; expected one of"),
    ({"name": "x", "inner": {"rate": 1}}, "cfg.yaml: inner.rate: unknown field"),
    ({"name": "x", "count": "3"}, "cfg.yaml: count: expected an integer, got '3'"),
    ({"name": "x", "count": True}, "cfg.yaml: count: expected an integer, got True"),
    ({"name": "x", "enabled": "yes"}, "cfg.yaml: enabled: expected true or false"),
    ({"name": "x", "inner": {"mode": "c"}}, "cfg.yaml: inner.mode: expected one of 'a', 'b', got 'c'"),
    ({"name": "x", "inner": {"rate_hz": -1}}, "cfg.yaml: inner.rate_hz: expected > 0"),
    ({"name": "x", "paths": "a"}, "cfg.yaml: paths: expected a list of a path"),
    ({"name": "x", "device": 1.5}, "cfg.yaml: device: expected an integer or a string or null"),
    ({"name": "x", "inner": 3}, "cfg.yaml: inner: expected a mapping, got 3"),
    ({}, "cfg.yaml: name: required field is missing"),
])
def test_errors_name_the_file_and_the_field(data, message):
    with pytest.raises(ValueError) as info:
        from_mapping(Outer, data, source="cfg.yaml")
    assert message in str(info.value)


def test_yaml_loading_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_yaml_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_yaml_mapping(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ValueError, match="scalar.yaml: expected a mapping"):
        load_yaml_mapping(scalar)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml_mapping(empty) == {}


def test_yaml_reads_command_words_as_words_not_booleans(tmp_path):
    path = tmp_path / "words.yaml"
    path.write_text("words: [yes, no, on, off, stop]\nenabled: true\nother: False\n")
    assert load_yaml_mapping(path) == {"words": ["yes", "no", "on", "off", "stop"], "enabled": True, "other": False}


def test_yaml_reads_exponents_as_numbers_as_yaml_1_2_does(tmp_path):
    path = tmp_path / "numbers.yaml"
    path.write_text("lr: 1e-6\nbig: 3E+2\nplain: 1.5e-3\nint: 12\nword: e5\nversion: 1.2.3\n")
    assert load_yaml_mapping(path) == {"lr": 1e-6, "big": 300.0, "plain": 1.5e-3, "int": 12, "word": "e5",
                                       "version": "1.2.3"}
    assert parse_yaml_value("1e-6") == 1e-6 and parse_yaml_value("no") == "no"
