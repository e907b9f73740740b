"""The one YAML loader for every config file EdgeSense reads: device, training and benchmark.

* **YAML 1.2** (ruamel.yaml): only ``true``/``false`` are booleans, so ``words: [yes, no, on,
  off]`` are words and ``vad_enabled: yes`` is the string ``'yes'`` (which the field's check
  then refuses); ``1e-6`` is a number, ``0750`` is 750. A ``%YAML`` directive of another version
  (``%YAML 1.1``, under which ruamel would read ``on``/``off`` as booleans and ``0750`` as 488)
  is refused, naming its line.
* **Strict**: a key written twice in one mapping is an error naming the file, the line and the
  key (YAML 1.1 loaders silently keep the last value).
* **Located**: every key keeps its line, so a later error about a field (a wrong type, an
  unknown name) names the line too: ``firmware_configs/rpi4.yaml:34: commands.threshold: ...``.
* **Round trip**: :func:`update_yaml_file` changes some values of a file in place and keeps
  every other field, the order and the comments, and the file's own layout: its mapping and
  sequence indentation, its line endings (LF or CRLF), a UTF-8 byte order mark, a ``%YAML``
  directive and the ``---`` / ``...`` document markers.

Errors are ``ValueError`` with one line; the command line prints it and exits with 2.
"""

from __future__ import annotations

import copy
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import DocumentEndEvent, DocumentStartEvent

__all__ = ["YamlDocument", "load_yaml_document", "load_yaml_mapping", "parse_yaml_value", "dump_yaml",
           "update_yaml_file", "DELETE"]

_DUPLICATE_KEY = re.compile(r'found duplicate key "(?P<key>.*?)"')
#: Python's refusal of an integer literal longer than ``sys.get_int_max_str_digits()``: "(4300)" on 3.10,
#: "(4300 digits)" from 3.11, and advice (``sys.set_int_max_str_digits()``) for a programmer, not a config's author.
_INT_DIGITS = re.compile(r"^Exceeds the limit \((?P<limit>\d+)(?: digits)?\) for integer string conversion"
                         r"(?:: value has (?P<found>\d+) digits)?")
_FIRST_LINE = 1  #: ruamel counts lines from 0; people and editors from 1
_NEVER_WRAP = 4096  #: line width for writing: never re-wrap a long line (a GStreamer pipeline)
DELETE = object()  #: a value for :func:`update_yaml_file` that removes the key
_MAPPING_INDENT = 2  #: how far a nested mapping is indented, where a file has none to copy
_DASH_WIDTH = 2  #: ``- ``: a sequence's dash and the space before its item
_BOM = "\ufeff"  #: the UTF-8 byte order mark, as a character of the decoded text
_CRLF, _LF = "\r\n", "\n"


def _parser() -> YAML:
    yaml = YAML(typ="rt")  # round-trip: keeps line numbers (and comments, for update_yaml_file)
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True
    yaml.width = _NEVER_WRAP
    _indent(yaml, _MAPPING_INDENT, None)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _indent(yaml: YAML, mapping: int, sequence: tuple[int, int] | None) -> None:
    """Indent nested mappings by ``mapping`` and a sequence's items and dashes by ``sequence``
    (``(item, dash)``, both counted from its key's column); without one, a sequence's dash goes
    where a nested key would, its item after ``- ``."""
    item, dash = sequence if sequence is not None else (mapping + _DASH_WIDTH, mapping)
    yaml.indent(mapping=mapping, sequence=item, offset=dash)


def _leading_comments(text: str) -> str:
    """The comment and blank lines a file starts with (ruamel drops them before a flow mapping)."""
    lines = text.splitlines(keepends=True)
    count = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), len(lines))
    return "".join(lines[:count])


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: plain data (dicts, lists, str, int, float, bool, None) and where each key is.

    ``lines`` maps a dotted key path (``"commands.threshold"``, ``"data.noise[1]"``) to its
    1-based line: give it to :func:`edgesense.schema.validate.from_mapping` so that errors name lines.
    """

    path: Path
    data: Any
    lines: Mapping[str, int] = field(default_factory=dict)


def _line(node: CommentedMap | CommentedSeq, at: Any, fallback: int | None) -> int | None:
    """The 0-based line of key or index ``at`` of ``node``; else the line ``node`` starts on, else
    ``fallback``. A key merged in with ``<<: *anchor`` and the entries of ``!!omap`` have no line of
    their own in ruamel's ``node.lc``."""
    position = (node.lc.data or {}).get(at)
    if position is not None:
        return position[0]
    return node.lc.line if node.lc.line is not None else fallback


#: The most values (mappings, lists and scalars) a document may hold once its aliases (``*name``) are expanded: a
#: config holds hundreds; a file of a few hundred bytes of anchors made of anchors ("billion laughs") expands to
#: 10^9, which took minutes and tens of gigabytes.
MAX_YAML_VALUES = 100_000


def _plain(node: Any, prefix: str, lines: dict[str, int], fallback: int | None = None, *,
           where: str = "value", counted: list[int] | None = None) -> Any:
    """ruamel's round-trip nodes -> plain Python, recording each key's line (merge keys ``<<``
    resolved: a merged key gets the line of the mapping it was merged into). ValueError naming
    ``where`` (the file) beyond :data:`MAX_YAML_VALUES` values."""
    counted = [0] if counted is None else counted
    counted[0] += 1
    if counted[0] > MAX_YAML_VALUES:
        at = f":{fallback + _FIRST_LINE}" if fallback is not None else ""
        raise ValueError(f"{where}{at}: {prefix or 'the document'}: expected at most {MAX_YAML_VALUES} values once "
                         f"its aliases (*name) are expanded, got more")
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            line = _line(node, key, fallback)
            if line is not None:
                lines[dotted] = line + _FIRST_LINE
            out[_scalar(key)] = _plain(value, dotted, lines, line, where=where, counted=counted)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, value in enumerate(node):
            dotted = f"{prefix}[{i}]"
            line = _line(node, i, fallback)
            if line is not None:
                lines[dotted] = line + _FIRST_LINE
            out_list.append(_plain(value, dotted, lines, line, where=where, counted=counted))
        return out_list
    return _scalar(node)


#: The YAML core schema's string tag: ``!!str 123`` is the string "123" (ruamel keeps it as a TaggedScalar).
_STR_TAG = "tag:yaml.org,2002:str"


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, ScalarInt, quoted strings, ``!!str`` values, ...) -> the builtin
    type."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, TaggedScalar) and value.tag.value == _STR_TAG:
        return str(value.value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _describe_error(exc: YAMLError) -> tuple[int | None, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + _FIRST_LINE if mark is not None else None
    if isinstance(exc, DuplicateKeyError):
        found = _DUPLICATE_KEY.search(str(exc.problem))
        key = found.group("key") if found else "?"
        return line, f"duplicate key {key!r} (each key may appear once in a mapping)"
    problem = exc.problem if isinstance(exc, MarkedYAMLError) and exc.problem else str(exc).splitlines()[0]
    context = exc.context if isinstance(exc, MarkedYAMLError) and exc.context else ""
    return line, f"not valid YAML: {problem}" + (f" ({context})" if context else "")


def _read_text(path: Path, *, newline: str | None = None) -> str:
    """The file's text; ``newline=""`` keeps its line endings as they are (else they read as ``\\n``)."""
    if path.is_dir():
        raise ValueError(f"{path}: expected a YAML file, found a folder")
    try:
        with path.open(encoding="utf-8", newline=newline) as file:
            return file.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}{_not_utf8(path, exc)}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None


#: Byte order marks of the text encodings an editor saves as other than UTF-8 (Windows Notepad's "Unicode" is
#: UTF-16 LE), longest first: UTF-32 LE's mark begins with UTF-16 LE's.
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
               (b"\xfe\xff", "UTF-16"))


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """What a file that is not UTF-8 holds, after its name in an error line: text in UTF-16 or UTF-32 (by its byte
    order mark), binary data (NUL bytes), or else text in a legacy encoding (Latin-1, Windows-1252: ``Küche`` in a
    comment), with the line of its first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError:
        data = bytes(exc.object)
    for mark, encoding in _OTHER_BOMS:
        if data.startswith(mark):
            try:
                text = data.decode(encoding.lower())
            except UnicodeDecodeError:
                break
            if "\0" not in text:
                return f": expected a UTF-8 text file, found {encoding} text (save it as UTF-8)"
            break
    if b"\0" in data:
        return ": expected a UTF-8 text file, found binary data"
    try:
        data.decode("utf-8")
        first = exc.start
    except UnicodeDecodeError as whole:
        first = whole.start
    line = data[:first].count(b"\n") + _FIRST_LINE
    return (f":{line}: expected a UTF-8 text file, found the byte 0x{data[first]:02X}, not UTF-8 (text in another "
            "encoding, such as Latin-1 or Windows-1252): save it as UTF-8")


#: A ``%YAML`` directive's version (the directives come before a document's first content line).
_VERSION_DIRECTIVE = re.compile(r"%YAML[ \t]+(?P<version>[^ \t#]*)")
_VERSION = "1.2"


def _refuse_other_version(text: str, where: str) -> None:
    """ValueError for a ``%YAML`` directive of another version than 1.2: ruamel would read a
    ``%YAML 1.1`` file by YAML 1.1's rules (``on``/``off``/``yes``/``no`` booleans, ``0750`` octal)
    and fail with an assertion on ``%YAML 1.3``."""
    for number, line in enumerate(text.removeprefix(_BOM).splitlines(), _FIRST_LINE):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith("%"):
            return  # ``---`` or the document's content: no directive comes after it
        directive = _VERSION_DIRECTIVE.match(line)
        if directive is not None and directive.group("version") != _VERSION:
            raise ValueError(f"{where}:{number}: expected YAML {_VERSION} (no %YAML line, or %YAML {_VERSION}), "
                             f"got %YAML {directive.group('version')}: every EdgeSense file is read as YAML "
                             f"{_VERSION}, where yes/no/on/off are words and 0750 is 750")


def _parse(text: str, where: str) -> Any:
    _refuse_other_version(text, where)
    try:
        return _parser().load(text)
    except YAMLError as exc:
        line, message = _describe_error(exc)
        raise ValueError(f"{where}:{line}: {message}" if line is not None else f"{where}: {message}") from None
    except ValueError as exc:  # a tagged scalar that is not what its tag says (``!!int abc``), a 5000-digit int
        problem = (str(exc).splitlines() or [type(exc).__name__])[0]
        digits = _INT_DIGITS.match(problem)
        if digits is not None:  # the same words on every Python
            found = f"one of {digits['found']} digits" if digits["found"] else "a longer one"
            problem = f"expected an integer of at most {digits['limit']} digits, got {found}"
        raise ValueError(f"{where}: not valid YAML: {problem}") from None


def load_yaml_document(path: str | os.PathLike[str]) -> YamlDocument:
    """Read a YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    node = _parse(_read_text(path), str(path))
    lines: dict[str, int] = {}
    data = _plain(node, "", lines, where=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return YamlDocument(path=path, data=data, lines=lines)


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The plain data of :func:`load_yaml_document`."""
    return load_yaml_document(path).data


def parse_yaml_value(text: str, *, source: str = "value") -> Any:
    """One value written in YAML (a command-line override), read as config files are."""
    return _plain(_parse(text, source), "", {}, where=source)


def dump_yaml(data: Any) -> str:
    """Plain data as block-style YAML 1.2 (what :func:`load_yaml_mapping` reads back)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # ruamel declares it None
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _tail_key(node: CommentedMap) -> tuple[CommentedMap, Any]:
    """The mapping and key whose line is ``node``'s last (the last key of a mapping value, deep)."""
    holder, at = node, next(reversed(node))
    while isinstance(holder[at], CommentedMap) and len(holder[at]):
        holder, at = holder[at], next(reversed(holder[at]))
    return holder, at


def _detach_tail(node: CommentedMap) -> Any:
    """Take the blank lines and full-line comments that end ``node`` (ruamel keeps them with its
    last line's key, after that key's own inline comment) off that key; None when there are none."""
    if not len(node):
        return None
    holder, at = _tail_key(node)
    comments = holder.ca.items.get(at)
    token = comments[2] if comments and len(comments) > 2 else None
    if token is None or "\n" not in token.value:
        return None
    inline, rest = token.value.split("\n", 1)
    if not rest:
        return None  # only the key's own inline comment
    tail = copy.copy(token)
    tail.value = "\n" + rest
    token.value = inline + "\n"
    return tail


def _attach_tail(node: CommentedMap, tail: Any) -> None:
    """Put :func:`_detach_tail`'s lines back after ``node``'s (new) last line."""
    if tail is None or not len(node):
        return
    holder, at = _tail_key(node)
    comments = holder.ca.items.setdefault(at, [None, None, None, None])
    own = comments[2]
    if own is None:
        comments[2] = tail
    else:  # the key's own inline comment ends its line
        own.value = own.value + tail.value[1:] if own.value.endswith("\n") else own.value + tail.value


def _commented(value: Any) -> Any:
    """``value`` with every mapping in it a ``CommentedMap``, which can carry the lines after it."""
    return CommentedMap((k, _commented(v)) for k, v in value.items()) if isinstance(value, Mapping) else value


def _set(node: CommentedMap, key: str, value: Any) -> None:
    """``node[key] = value``, a mapping merged into the one there (its order, style and comments
    kept; keys it lacks removed), or added at the end; the lines that ended ``node`` end it still,
    so a section keeps its blank line and comments before the next one."""
    tail = _detach_tail(node)
    old = node.get(key)
    if value is DELETE:
        node.pop(key, None)
    elif isinstance(old, CommentedMap) and isinstance(value, Mapping):
        for gone in [k for k in old if k not in value]:
            del old[gone]
        for k, v in value.items():
            old[k] = _commented(v)
    else:
        node[key] = _commented(value)
    _attach_tail(node, tail)


def _shared(root: Any) -> set[int]:
    """The ``id`` of every mapping and list that ``root`` reaches more than once: through an alias
    (``*name``) or a merge key (``<<: *name``), so that changing it in place changes every place."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, (CommentedMap, CommentedSeq)):
            continue
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, CommentedMap):
            stack.extend(node.values())  # merged-in values too: reached through the merged mapping as well
            merged = getattr(node, "merge", None) or ()
            stack.extend(m[1] if isinstance(m, tuple) else m for m in merged)
        else:
            stack.extend(node)
    return shared


def _refuse_shared(path: Path, node: CommentedMap, key: str, dotted: str, at: str) -> None:
    """ValueError when ``node[key]`` (the mapping at dotted key ``at``) is shared (:func:`_shared`)."""
    line = _line(node, key, None)
    where = f"{path}:{line + _FIRST_LINE}" if line is not None else str(path)
    anchor = getattr(getattr(node[key], "anchor", None), "value", None)
    name = f" (&{anchor})" if anchor else ""
    raise ValueError(f"{where}: {dotted}: cannot write it: {at} is shared through a YAML anchor{name} and "
                     f"alias or merge key, so writing it would change other sections too; edit the file by hand")


def _block(node: Any, key_line: int) -> bool:
    """Whether ``node`` is a block mapping or sequence with items, starting on a line after its key's."""
    return (isinstance(node, (CommentedMap, CommentedSeq)) and bool(len(node)) and not node.fa.flow_style()
            and node.lc.line is not None and node.lc.line > key_line)


def _indent_samples(node: Any, seen: set[int], mappings: Counter[int], sequences: Counter[tuple[int, int]]) -> None:
    """Count, in document order, how far each block mapping is indented under its key and how far each
    block sequence's items and dashes are (``(item, dash)``); a node reached again (an alias) counts once."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, CommentedSeq):
        for item in node:
            _indent_samples(item, seen, mappings, sequences)
        return
    if not isinstance(node, CommentedMap):
        return
    for key, (key_line, key_column, *_) in (node.lc.data or {}).items():
        value = node[key]
        if _block(value, key_line) and id(value) not in seen:
            if isinstance(value, CommentedMap):
                mappings[value.lc.col - key_column] += 1
            else:
                item_line, item_column = value.lc.data[0][:2]
                if item_line == value.lc.line:  # ``- item``, not a dash alone on its line
                    sequences[(item_column - key_column, value.lc.col - key_column)] += 1
        _indent_samples(value, seen, mappings, sequences)


def _file_indent(yaml: YAML, root: Any) -> None:
    """Indent as the file does (:func:`_indent`): its most common mapping and sequence indentation
    (the first of equally common ones; ruamel writes one indentation for the whole file)."""
    mappings: Counter[int] = Counter()
    sequences: Counter[tuple[int, int]] = Counter()
    _indent_samples(root, set(), mappings, sequences)
    mapping = mappings.most_common(1)[0][0] if mappings else _MAPPING_INDENT
    _indent(yaml, mapping, sequences.most_common(1)[0][0] if sequences else None)


def _file_markers(yaml: YAML, text: str) -> None:
    """Write the ``%YAML`` / ``%TAG`` directives and the ``---`` / ``...`` markers ``text`` has."""
    for event in YAML(typ="rt").parse(text):
        if isinstance(event, DocumentStartEvent):
            yaml.explicit_start = event.explicit
            yaml.version = event.version
            yaml.tags = event.tags
        elif isinstance(event, DocumentEndEvent):
            yaml.explicit_end = event.explicit
            return


def _newline(text: str) -> str:
    """The file's line ending: that of its first line."""
    first = text.find(_LF)
    return _CRLF if first > 0 and text[first - 1] == "\r" else _LF


def update_yaml_file(path: str | os.PathLike[str], updates: Mapping[str, Any], *,
                     out: str | os.PathLike[str] | None = None,
                     header: str = "") -> Path:
    """Set dotted keys (``{"commands.threshold": 0.6}``) in a YAML file, keeping everything else.

    Comments, order, quoting, flow or block style and the other fields are kept (ruamel's round
    trip); a missing section or key is added at the end of its mapping, a mapping value replaces the
    one there in place (:func:`_set`); the value :data:`DELETE` removes a key. The file is checked
    like :func:`load_yaml_document` first (duplicate keys are refused). Writes ``out`` (default: in
    place) and returns its path; ``header``, comment lines ending in ``\\n``, is written first (after
    a byte order mark).

    The file's layout is kept too: the indentation of its nested mappings and of its sequences'
    items and dashes (:func:`_file_indent`: ruamel writes one indentation for the whole file, so a
    file that mixes several comes back with its most common one), its line endings (CRLF or LF, that
    of its first line), a UTF-8 byte order mark, its ``%YAML`` / ``%TAG`` directives and its ``---``
    / ``...`` markers.

    A mapping shared through a YAML anchor (``base: &b {...}`` with ``commands: *b`` or
    ``<<: *b`` elsewhere) is never written into: changing it would change every section that refers
    to it, so such an update is refused with a ``ValueError`` naming the file, line and field, and
    nothing is written. Replacing a whole aliased value (``commands: *b`` -> a new mapping, or
    :data:`DELETE`) and setting a key of a mapping that merges ``<<: *b`` (the key is then written
    in that mapping, overriding the merged value) change only that section, so they are done.
    """
    path = Path(path)
    raw = _read_text(path, newline="")
    bom, newline = raw.startswith(_BOM), _newline(raw)
    text = raw.removeprefix(_BOM).replace(_CRLF, _LF)
    yaml = _parser()
    root = _parse(text, str(path))
    if root is None:
        root = CommentedMap()
    if not isinstance(root, CommentedMap):
        raise ValueError(f"{path}: expected a mapping of fields at the top level, got {type(root).__name__}")
    _file_indent(yaml, root)  # before the updates: the file's own layout, not that of the values added
    _file_markers(yaml, text)
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        shared = _shared(root)
        node = root
        for i, key in enumerate(parents):
            child = node.get(key)
            if child is None:
                child = node[key] = CommentedMap()
            if not isinstance(child, CommentedMap):
                raise ValueError(f"{path}: {'.'.join(parents[:i + 1])}: expected a mapping, got {child!r}")
            if id(child) in shared:
                _refuse_shared(path, node, key, dotted, ".".join(parents[:i + 1]))
            node = child
        if isinstance(node.get(leaf), CommentedMap) and isinstance(value, Mapping) and id(node[leaf]) in shared:
            _refuse_shared(path, node, leaf, dotted, dotted)  # _set would merge ``value`` into it in place
        _set(node, leaf, value)
    target = Path(out) if out is not None else path
    buffer = io.StringIO()
    yaml.dump(root, buffer)
    written, head = buffer.getvalue(), _leading_comments(text)
    written = header + (written if written.startswith(head) else head + written)
    with target.open("w", encoding="utf-8", newline="") as file:
        file.write((_BOM if bom else "") + written.replace(_LF, newline))
    return target
