from dataclasses import dataclass
import math
import sys
from pathlib import Path
from typing import Literal

import pytest

from edgesense.schema.validate import (as_path, as_paths, from_mapping, is_number, is_positive, require, require_kinds,
                                        to_mapping)


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


def test_errors_name_the_line_when_lines_are_known():
    lines = {"name": 1, "inner": 2, "inner.rate_hz": 3, "paths": 4, "paths[1]": 5}
    with pytest.raises(ValueError, match=r"^cfg.yaml:3: inner.rate_hz: expected > 0"):
        from_mapping(Outer, {"name": "x", "inner": {"rate_hz": -1}}, source="cfg.yaml", lines=lines)
    with pytest.raises(ValueError, match=r"^cfg.yaml:5: paths\[1\]: expected a path"):
        from_mapping(Outer, {"name": "x", "paths": ["a", 3]}, source="cfg.yaml", lines=lines)
    with pytest.raises(ValueError, match=r"^cfg.yaml:2: inner.speed: unknown field; expected one of mode, rate_hz"):
        from_mapping(Outer, {"name": "x", "inner": {"speed": 1}}, source="cfg.yaml", lines=lines)


@dataclass(frozen=True, kw_only=True)
class WithMapping:
    thresholds: dict[str, float] = None


def test_mappings_of_plain_values_are_read_and_checked():
    cfg = from_mapping(WithMapping, {"thresholds": {"yes": 0.5, "off": 1}})
    assert cfg.thresholds == {"yes": 0.5, "off": 1.0} and isinstance(cfg.thresholds["off"], float)
    assert to_mapping(cfg) == {"thresholds": {"yes": 0.5, "off": 1.0}}
    with pytest.raises(ValueError, match="thresholds.off: expected a number, got 'high'"):
        from_mapping(WithMapping, {"thresholds": {"off": "high"}})



def test_an_integer_too_large_for_a_float_is_a_one_line_error_not_an_overflow():
    huge = 10 ** 400
    with pytest.raises(ValueError) as info:
        from_mapping(Outer, {"name": "x", "inner": {"rate_hz": huge}}, source="cfg.yaml", lines={"inner.rate_hz": 3})
    assert str(info.value) == "cfg.yaml:3: inner.rate_hz: expected a number, got 100000...0000 (401 digits)"
    assert not is_number(float("inf")) and not is_number(True)


def test_an_integer_past_a_floats_range_is_no_number():
    """An options class that took 10**400 as a number overflowed when it first did arithmetic with it (a backoff's
    next delay, a camera's frame period, an error line's :g): OverflowError, naming no field."""
    assert not is_number(10**400) and not is_positive(10**400) and not is_number(-10**400)
    assert is_number(10**300) and is_number(int(sys.float_info.max)) and not is_number(int(sys.float_info.max) * 2)


@pytest.mark.parametrize("value", [None, 1, "", b"x"])
def test_as_path_refuses_what_is_no_path_naming_the_field(value):
    with pytest.raises(ValueError, match=r"^out_dir: expected a path, got "):
        as_path("out_dir", value)


def test_as_path_and_as_paths_store_paths_and_tuples():
    assert as_path("out_dir", "a/b") == Path("a/b") and isinstance(as_path("out_dir", "a"), Path)
    assert as_paths("noise", ["a", Path("b")]) == (Path("a"), Path("b"))
    with pytest.raises(ValueError, match=r"^noise: expected a list of paths, got 'ab'"):
        as_paths("noise", "ab")
    with pytest.raises(ValueError, match=r"^noise\[1\]: expected a path, got None"):
        as_paths("noise", ("a", None))


def test_an_integer_past_pythons_text_limit_is_described_not_a_conversion_error():
    """require() on an integer Python will not turn into text (sys.get_int_max_str_digits) still says its line."""
    huge = 10 ** (sys.get_int_max_str_digits() + 10)
    with pytest.raises(ValueError) as info:
        require(False, "count", "an integer up to 100", huge)
    assert str(info.value) == (f"count: expected an integer up to 100, got an integer of more than "
                               f"{sys.get_int_max_str_digits()} digits")


@dataclass(frozen=True, kw_only=True)
class Kinds:
    count: int = 1
    rate: float = 1.0
    on: bool = True
    mode: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.0, 1.0)
    paths: tuple[Path, ...] = ()
    limit: int | None = None
    inner: Inner = Inner()

    def __post_init__(self):
        require_kinds(self)


@pytest.mark.parametrize("field, value, expected", [
    ("count", True, "an integer"), ("count", 2.0, "an integer"), ("count", "1", "an integer"),
    ("rate", None, "a number"), ("rate", False, "a number"), ("rate", 10**400, "a number"),
    ("on", 1, "true or false"), ("mode", "c", "one of 'a', 'b'"),
    ("pair", [0.0, 1.0], r"a tuple of 2 \(a number, a number\)"), ("pair", (0.0, "1"), "a tuple of 2"),
    ("paths", ("x",), "a tuple, each a path"), ("limit", 1.5, "an integer or None"), ("inner", {}, "Inner"),
])
def test_require_kinds_refuses_a_value_of_another_kind_naming_the_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"^{field}: expected {expected}"):
        Kinds(**{field: value})


def test_require_kinds_takes_an_int_for_a_float_and_leaves_nan_to_the_range_checks():
    assert Kinds(rate=2, limit=None, paths=(Path("x"),)).rate == 2
    assert math.isnan(Kinds(rate=math.nan).rate)


def test_require_kinds_takes_numpy_numbers_a_caller_computed():
    """A count or a level computed with numpy (``np.int64``, ``np.float32``) is a number of its kind: the checks
    before ``require_kinds`` compared them and took them."""
    import numpy as np

    assert Kinds(count=np.int64(3), rate=np.float32(0.5)).count == 3
    assert Kinds(rate=np.int64(2)).rate == 2
    with pytest.raises(ValueError, match=r"^count: expected"):
        Kinds(count=np.float64(3.0))
