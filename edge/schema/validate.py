"""Strict loading of frozen dataclasses from plain mappings (parsed YAML or JSON).

Every error names the source (a file), the dotted field path, what was expected
and what was found, e.g. ``train.yaml: model.fusion: expected one of 'concat',
'attention', got 'sum'``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeGuard, TypeVar, Union

__all__ = ["from_mapping", "require", "require_range", "require_kinds", "to_mapping", "is_number", "is_positive",
           "is_int", "one_line", "Located", "found", "as_path", "as_paths"]


T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (an interpreter's or OpenSSL's own messages span several)."""
    return " ".join(str(exc).split())


def is_number(value: Any) -> TypeGuard[float]:
    """A finite real number (an int or a float, not a bool). An int past a float's range (``10**400``) is none:
    every sum or product of it with a float, and its ``:g``, raises ``OverflowError`` (a backoff's delay, a frame
    period, an error line), so it is refused where the options are built, naming the field."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -sys.float_info.max <= value <= sys.float_info.max  # compared exactly, never converted: no overflow
    return isinstance(value, float) and math.isfinite(value)


def is_positive(value: Any) -> TypeGuard[float]:
    """A finite real number above 0 (not a bool)."""
    return is_number(value) and value > 0


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


#: The digits of an integer an error line shows whole; a longer one (a mistyped or pasted value) is shortened.
SHOWN_DIGITS = 24


def found(value: Any) -> str:
    """``repr(value)`` as an error line's "got ...": an integer of more than :data:`SHOWN_DIGITS` digits is
    shortened to its first and last digits and its length (``999999...9999 (400 digits)``)."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's limit for conversion to text (sys.get_int_max_str_digits)
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    digits = len(text.lstrip("-"))
    if is_int(value) and digits > SHOWN_DIGITS:
        return f"{text[:-digits + 6]}...{text[-4:]} ({digits} digits)"
    return text


def require(ok: bool, field: str, expected: str, got: Any) -> None:
    """The validation every options dataclass uses: ValueError ``field: expected X, got Y``."""
    if not ok:
        raise ValueError(f"{field}: expected {expected}, got {found(got)}")


@dataclasses.dataclass(frozen=True)
class Located:
    """Where data came from: a source name (a file) and, for YAML files, each key's line."""

    source: str = "config"
    lines: Mapping[str, int | None] = dataclasses.field(default_factory=dict)

    def at(self, path: str) -> str:
        """``source:line: path`` (or ``source: path`` when the line is unknown, ``source`` alone without a path)."""
        line = _line_of(self.lines, path)
        where = f"{self.source}:{line}" if line is not None else self.source
        return f"{where}: {path}" if path else where


def as_path(field: str, value: Any) -> Path:
    """``value`` (a non-empty ``str`` or an ``os.PathLike``) as a :class:`~pathlib.Path`, else ``ValueError`` naming
    ``field``: an options dataclass stores its paths as Paths whatever its caller gave (``None``, ``1`` or ``""``,
    which is ``Path(".")``, failed later as a ``TypeError`` or a folder of the wrong name)."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    require(isinstance(text, str) and text != "", field, "a path", value)  # bytes from a PathLike: no str path
    return Path(typing.cast(str, text))


def as_paths(field: str, value: Any) -> tuple[Path, ...]:
    """``value`` (a tuple or list of paths) as a tuple of Paths, else ``ValueError`` naming ``field`` (a string,
    one path, is refused: it iterates as its letters)."""
    require(isinstance(value, (tuple, list)), field, "a list of paths", value)
    return tuple(as_path(f"{field}[{i}]", item) for i, item in enumerate(value))


def require_range(field: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> None:
    """``value`` must be a ``(low, high)`` pair of numbers with ``lo <= low <= high <= hi``."""
    ok = (isinstance(value, tuple) and len(value) == 2 and all(is_number(v) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    bounds = " <= ".join([*([f"{lo:g}"] if math.isfinite(lo) else []), "low", "high",
                          *([f"{hi:g}"] if math.isfinite(hi) else [])])
    require(ok, field, f"a (low, high) pair with {bounds}", value)


def require_kinds(options: Any) -> None:
    """Each field of the dataclass instance ``options`` holds a value of the kind its annotation names, else
    ``ValueError`` naming the first that does not (``epochs: expected an integer, got 2.0``). What the YAML loader
    (:func:`from_mapping`) converts and checks for a file, for options built in Python, where a string or None for a
    number was a ``TypeError`` in the first comparison and a bool passed as a number: an options class calls it
    first in its ``__post_init__``, and its own checks then compare values of the right kind. A ``float`` takes an
    int (not a bool, not one past a float's range) and any float (NaN and the infinities are its range checks' to
    refuse, with their own message); a ``tuple[...]`` takes a tuple only (a list would stay mutable in a frozen
    dataclass); a section (a dataclass) an instance of it; ``Any``, mappings and other classes are not checked here."""
    hints = _kind_hints(type(options))
    for f in dataclasses.fields(options):
        if f.init:
            value = getattr(options, f.name)
            require(_is_kind(hints[f.name], value), f.name, _kind_name(hints[f.name]), value)


_KIND_HINTS: dict[type, dict[str, Any]] = {}


def _kind_hints(cls: type) -> dict[str, Any]:
    """``cls``'s resolved annotations, once a class (resolving them costs more than checking the values)."""
    if cls not in _KIND_HINTS:
        _KIND_HINTS[cls] = typing.get_type_hints(cls)
    return _KIND_HINTS[cls]


def _is_kind(tp: Any, value: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_is_kind(a, value) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is_kind(args[0], v) for v in value)
        return len(value) == len(args) and all(_is_kind(a, v) for a, v in zip(args, value))
    checks: dict[Any, Callable[[Any], bool]] = {
        type(None): lambda v: v is None, bool: lambda v: isinstance(v, bool), int: _is_integral,
        float: lambda v: isinstance(v, float) or is_number(v) or (_is_real(v) and not isinstance(v, int)),
        str: lambda v: isinstance(v, str), Path: lambda v: isinstance(v, Path)}
    if tp in checks:
        return checks[tp](value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True  # Any, a mapping, or a kind the class checks itself


def _is_integral(value: Any) -> bool:
    """An integer of any kind (Python's, numpy's: a count computed with numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A real number of any kind (numpy's float32 too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_kind_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple, each {_kind_name(args[0])}"
        return f"a tuple of {len(args)} ({', '.join(_kind_name(a) for a in args)})"
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp.__name__
    return _name(tp)


def _line_of(lines: Mapping[str, int | None], path: str) -> int | None:
    """The line of ``path`` or of its nearest enclosing key; a key mapped to None has no line."""
    key = path
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def from_mapping(cls: type[T], data: Any, *, source: str = "config", path: str = "",
                 lines: Mapping[str, int | None] | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types field by field.

    ``lines`` (from :class:`edgesense.schema.yaml.YamlDocument`) lets every error name the
    line of the field it is about.
    """
    return _from_mapping(cls, data, Located(source=source, lines=lines or {}), path)


def _field_default(f: dataclasses.Field) -> Any:
    """The value field ``f`` takes when a mapping leaves it out (``dataclasses.MISSING`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _from_mapping(cls: type[T], data: Any, loc: Located, path: str, base: Any = None) -> T:
    """``base``: the instance the enclosing field holds by default (``CameraOptions.backoff`` is a
    ``BackoffOptions(max_ms=1000)``, not a ``BackoffOptions()``); the fields ``data`` leaves out keep its
    values, not those of ``cls``'s own defaults (``camera: {backoff: {initial_ms: 100}}`` made ``max_ms`` 10000)."""
    if not isinstance(base, cls):
        base = None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{loc.at(path)}: expected a mapping, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(f"{loc.at(_join(path, str(unknown[0])))}: unknown field; expected one of "
                         f"{', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)

    def default(name: str) -> Any:
        return getattr(base, name) if base is not None else _field_default(fields[name])

    kwargs = {name: _convert(hints[name], value, loc, _join(path, name), functools.partial(default, name))
              for name, value in data.items()}
    if base is not None:
        kwargs = {**{name: getattr(base, name) for name in fields}, **kwargs}
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{loc.at(_join(path, missing[0]))}: required field is missing")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # the dataclass's own validation: "field: expected ..., got ..."
        field_name, _, rest = str(exc).partition(": ")
        if rest:
            raise ValueError(f"{loc.at(_join(path, field_name))}: {rest}") from None
        raise ValueError(f"{loc.at(path)}: {exc}") from None


def to_mapping(obj: Any) -> Any:
    """Dataclass tree -> plain dicts/lists (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _describe(value: Any) -> str:
    return found(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _convert(tp: Any, value: Any, loc: Located, path: str, default: Callable[[], Any] | None = None) -> Any:
    """``value`` as type ``tp``; ``default`` gives the field's default (a nested section's base values)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    fail = f"{loc.at(path)}: expected {{}}, got {_describe(value)}"
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, loc, path, default)
            except ValueError as exc:
                errors.append(exc)
        if len(options) == 1:
            raise errors[0]
        nullable = " or null" if type(None) in args else ""
        raise ValueError(fail.format(" or ".join(_name(o) for o in options) + nullable))
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise ValueError(fail.format("one of " + ", ".join(repr(a) for a in args)))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_mapping(tp, value, loc, path, default() if default is not None else None)
    if origin in (dict, collections.abc.Mapping):
        key_type, value_type = args
        if not isinstance(value, Mapping):
            raise ValueError(fail.format(f"a mapping of {_name(key_type)} to {_name(value_type)}"))
        return types.MappingProxyType({_convert(key_type, k, loc, path):
                                           _convert(value_type, v, loc, _join(path, str(k)))
                                       for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(fail.format(f"a list of {_name(args[0])}"))
        item_type = args[0]
        return tuple(_convert(item_type, v, loc, f"{path}[{i}]") for i, v in enumerate(value))
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
            try:
                return float(value)
            except OverflowError:  # an integer past float's range (about 1.8e308)
                pass
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
