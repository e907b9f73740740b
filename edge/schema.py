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

T = TypeVar("T")


class _Yaml12BoolLoader(yaml.SafeLoader):
    """YAML with 1.2 booleans and floats. Booleans: only true/false (YAML 1.1 also reads
    yes/no/on/off as booleans, which would turn the command words ``[yes, no, on, off]`` into
    ``True``/``False``). Floats: ``1e-6`` is a number (YAML 1.1 wants ``1.0e-6``)."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

__all__ = ["from_mapping", "load_yaml_mapping", "require", "to_mapping"]


def require(ok: bool, field: str, expected: str, got: Any) -> None:
    """The validation every options dataclass uses: ValueError ``field: expected X, got Y``."""
    if not ok:
        raise ValueError(f"{field}: expected {expected}, got {got!r}")


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
