"""Strict loading of frozen dataclasses from plain mappings (parsed YAML or JSON).

Every error names the source (a file), the dotted field path, what was expected
and what was found, e.g. ``train.yaml: model.fusion: expected one of 'concat',
'attention', got 'sum'``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union

import yaml

from edgesense.schema.yaml import _Yaml12BoolLoader

__all__ = ["from_mapping", "require", "to_mapping"]


T = TypeVar("T")


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def require(ok: bool, field: str, expected: str, got: Any) -> None:
    """The validation every options dataclass uses: ValueError ``field: expected X, got Y``."""
    if not ok:
        raise ValueError(f"{field}: expected {expected}, got {got!r}")


def from_mapping(cls: type[T], data: Any, *, source: str = "config", path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types field by field."""
    where = f"{source}: {path}" if path else source
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(
            f"{where}{'.' if path else ': '}{unknown[0]}: unknown field; expected one of {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        field_path = f"{path}.{name}" if path else name
        kwargs[name] = _convert(hints[name], value, source, field_path)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        field_path = f"{path}.{missing[0]}" if path else missing[0]
        raise ValueError(f"{source}: {field_path}: required field is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # the dataclass's own validation
        raise ValueError(f"{where}{'.' if path else ': '}{exc}") from None


def to_mapping(obj: Any) -> Any:
    """Dataclass tree -> plain dicts/lists (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _describe(value: Any) -> str:
    return f"{value!r}" if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _convert(tp: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    fail = f"{source}: {path}: expected {{}}, got {_describe(value)}"
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, source, path)
            except ValueError as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        raise ValueError(fail.format(" or ".join(_name(o) for o in options) + (" or null" if type(None) in args else "")))
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise ValueError(fail.format("one of " + ", ".join(repr(a) for a in args)))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, source=source, path=path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(fail.format(f"a list of {_name(args[0])}"))
        item_type = args[0]
        return tuple(_convert(item_type, v, source, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(fail.format("true or false"))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(fail.format("an integer"))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(fail.format("a number"))
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(fail.format("a string"))
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ValueError(fail.format("a path"))
    raise TypeError(f"unsupported field type {tp!r} at {path}")  # a programming error, not user input


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"a list of {_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )
