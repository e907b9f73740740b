"""edgesense.schema.yaml: the one strict YAML 1.2 loader, with lines, and the round-trip editor."""

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgesense.loop.config import load_config
from edgesense.schema.validate import from_mapping
from edgesense.schema.yaml import (
    DELETE,
    dump_yaml,
    load_yaml_document,
    load_yaml_mapping,
    parse_yaml_value,
    update_yaml_file,
)


def test_yaml_loading_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_yaml_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml:2: not valid YAML: expected ',' or ']'"):
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


def test_a_yaml_1_1_directive_is_refused_not_read_by_yaml_1_1_rules(tmp_path):
    # "%YAML 1.1" switched ruamel to 1.1's rules: class_thresholds {on: 0.8} got the key True, ``enabled: off``
    # was false and ``suppression_ms: 0750`` was 488, silently; "%YAML 1.3" was an AssertionError traceback.
    path = tmp_path / "device.yaml"
    body = "---\ndevice:\n  name: t\ncommands:\n  suppression_ms: 0750\n  class_thresholds: {on: 0.8, off: 0.8}\n"
    for version in ("1.1", "1.3", "1.0"):
        path.write_text(f"# my device\n%YAML {version}\n{body}")
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:2: expected YAML 1\.2 \(no %YAML line, "
                                             rf"or %YAML 1\.2\), got %YAML {re.escape(version)}: .*0750 is 750$"):
            load_config(path)
        with pytest.raises(ValueError, match=r":2: expected YAML 1\.2"):
            update_yaml_file(path, {"commands.threshold": 0.7})
    path.write_bytes(b"\xef\xbb\xbf%YAML 1.2\n" + body.encode())
    config = load_config(path)
    assert config.commands.suppression_ms == 750 and dict(config.commands.class_thresholds) == {"on": 0.8, "off": 0.8}
    path.write_text("device:\n  name: '%YAML 1.1'\n")  # not a directive
    assert load_config(path).device.name == "%YAML 1.1"


def test_an_explicit_string_tag_is_a_string(tmp_path):
    # "!!str 123" is YAML 1.2's way to say the string "123"; it was refused as "got TaggedScalar".
    path = tmp_path / "device.yaml"
    path.write_text("device: {name: !!str 123}\nwords: [!!str yes, !!str 7]\n")
    assert load_yaml_mapping(path) == {"device": {"name": "123"}, "words": ["yes", "7"]}
    path.write_text("device: {name: !!str 123}\n")
    assert load_config(path).device.name == "123"


def test_a_duplicate_key_is_an_error_naming_file_line_and_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("commands:\n  threshold: 0.5\n  minimum_count: 3\n  threshold: 0.9\n")
    with pytest.raises(ValueError) as info:
        load_yaml_mapping(path)
    assert str(info.value) == f"{path}:4: duplicate key 'threshold' (each key may appear once in a mapping)"
    flow = tmp_path / "flow.yaml"
    flow.write_text("{commands: {threshold: 0.5}, commands: {threshold: 0.6}}\n")
    with pytest.raises(ValueError, match=r"flow.yaml:1: duplicate key 'commands'"):
        load_yaml_mapping(flow)


def test_errors_are_one_line_and_a_folder_is_not_a_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n  b: 2\nc: [\n")
    with pytest.raises(ValueError) as info:
        load_yaml_mapping(bad)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{bad}:")
    with pytest.raises(ValueError, match="expected a YAML file, found a folder"):
        load_yaml_mapping(tmp_path)
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\xff\xfe\x00TFL3")
    with pytest.raises(ValueError, match="expected a UTF-8 text file"):
        load_yaml_mapping(binary)


def test_a_yaml_saved_in_another_encoding_says_which_not_binary_data(tmp_path):
    """Windows Notepad saves "Unicode" as UTF-16 and "ANSI" as Windows-1252: a config with ``# Küche`` in a comment
    saved either way was "expected a UTF-8 text file, found binary data", as if the file were broken. A UTF-8 byte
    order mark is read (Notepad's "UTF-8 with BOM")."""
    text = "# Gerät in der Küche\ndevice:\n  name: Küche\n"
    path = tmp_path / "device.yaml"
    path.write_text(text, encoding="utf-8-sig")
    assert load_yaml_mapping(path) == {"device": {"name": "Küche"}}
    for encoding, found in (("utf-16", "UTF-16"), ("utf-32", "UTF-32")):
        path.write_text(text, encoding=encoding)
        with pytest.raises(ValueError) as info:
            load_yaml_mapping(path)
        assert str(info.value) == f"{path}: expected a UTF-8 text file, found {found} text (save it as UTF-8)"
    path.write_text(text.replace("# Gerät", "# Geraet"), encoding="cp1252")
    with pytest.raises(ValueError) as info:
        load_yaml_mapping(path)
    assert str(info.value) == (f"{path}:1: expected a UTF-8 text file, found the byte 0xFC, not UTF-8 (text in "
                               "another encoding, such as Latin-1 or Windows-1252): save it as UTF-8")


def test_yes_is_a_string_so_a_boolean_field_names_its_line(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True, kw_only=True)
    class Section:
        vad_enabled: bool = False

    path = tmp_path / "c.yaml"
    path.write_text("# a comment\nvad_enabled: yes\n")
    doc = load_yaml_document(path)
    assert doc.data == {"vad_enabled": "yes"} and doc.lines == {"vad_enabled": 2}
    with pytest.raises(ValueError, match=r"c.yaml:2: vad_enabled: expected true or false, got 'yes'"):
        from_mapping(Section, doc.data, source=str(path), lines=doc.lines)


def test_update_keeps_comments_order_and_other_fields(tmp_path):
    path = tmp_path / "device.yaml"
    original = ("# my device\ndevice:\n  name: pi   # the kitchen one\ncommands:\n  threshold: 0.5  # tuned\n"
                "  minimum_count: 3\nscenes: {window_ms: 2000}\n")
    path.write_text(original)
    update_yaml_file(path, {"commands.threshold": 0.61, "commands.release": 0.3, "scenes.window_ms": 1500,
                            "vad.enabled": True})
    text = path.read_text()
    assert text.startswith("# my device\ndevice:\n  name: pi   # the kitchen one\n")
    assert "threshold: 0.61 # tuned" in text  # the comment stays on its line
    assert load_yaml_mapping(path) == {"device": {"name": "pi"},
                                       "commands": {"threshold": 0.61, "minimum_count": 3, "release": 0.3},
                                       "scenes": {"window_ms": 1500}, "vad": {"enabled": True}}
    dup = tmp_path / "dup.yaml"
    dup.write_text("commands: {threshold: 0.5}\ncommands: {threshold: 0.6}\n")
    with pytest.raises(ValueError, match="duplicate key 'commands'"):
        update_yaml_file(dup, {"commands.threshold": 0.7})
    assert dup.read_text() == "commands: {threshold: 0.5}\ncommands: {threshold: 0.6}\n"  # untouched


def test_a_key_added_to_a_section_comes_before_the_blank_line_and_comments_that_end_it(tmp_path):
    path = tmp_path / "device.yaml"
    path.write_text("commands:\n  threshold: 0.9\n  minimum_count: 3  # three\n\n# the gate\nvad:\n  enabled: false\n")
    update_yaml_file(path, {"commands.release_threshold": 0.5})
    assert path.read_text() == ("commands:\n  threshold: 0.9\n  minimum_count: 3  # three\n  release_threshold: 0.5\n"
                                "\n# the gate\nvad:\n  enabled: false\n")
    last = tmp_path / "last.yaml"  # a section at the end of the file: nothing to move
    last.write_text("commands:\n  threshold: 0.9\n")
    update_yaml_file(last, {"commands.release_threshold": 0.5})
    assert last.read_text() == "commands:\n  threshold: 0.9\n  release_threshold: 0.5\n"


def test_a_mapping_added_to_a_section_keeps_its_items_under_its_key_and_the_blank_line_after_them(tmp_path):
    path = tmp_path / "device.yaml"
    path.write_text("commands:\n  threshold: 0.8\n\nvad:\n  enabled: false\n")
    update_yaml_file(path, {"commands.class_thresholds": {"go": 0.725, "no": 0.775}})
    assert path.read_text() == ("commands:\n  threshold: 0.8\n  class_thresholds:\n    go: 0.725\n    no: 0.775\n"
                                "\nvad:\n  enabled: false\n")
    assert load_yaml_mapping(path)["commands"]["class_thresholds"] == {"go": 0.725, "no": 0.775}
    # Replaced, the mapping keeps its place, its style and the lines that end the section; removed, too.
    path.write_text("commands:\n  threshold: 0.8\n  class_thresholds:\n    go: 0.725\n    no: 0.775  # weak\n"
                    "\n# the gate\nvad:\n  enabled: false\n")
    update_yaml_file(path, {"commands.class_thresholds": {"go": 0.7, "up": 0.75}})
    assert path.read_text() == ("commands:\n  threshold: 0.8\n  class_thresholds:\n    go: 0.7\n    up: 0.75\n"
                                "\n# the gate\nvad:\n  enabled: false\n")
    update_yaml_file(path, {"commands.class_thresholds": DELETE})
    assert path.read_text() == "commands:\n  threshold: 0.8\n\n# the gate\nvad:\n  enabled: false\n"
    path.write_text("commands:\n  class_thresholds: {go: 0.725}\n  threshold: 0.8\n")
    update_yaml_file(path, {"commands.class_thresholds": {"go": 0.7, "up": 0.75}})
    assert path.read_text() == "commands:\n  class_thresholds: {go: 0.7, up: 0.75}\n  threshold: 0.8\n"


def test_dump_reads_back():
    data = {"device": {"name": "x"}, "words": ["yes", "no", "on"], "lr": 1e-6, "flag": False, "none": None}
    assert parse_yaml_value(dump_yaml(data)) == data


def test_merge_keys_and_omap_load_with_the_merged_values_and_lines(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {fps: 10, height_px: 240}\n\ncamera: {<<: *b, width_px: 320, height_px: 480}\n"
                    "list: {<<: [*b, *b]}\nitems:\n  - *b\nordered: !!omap\n  - fps: 10\n  - width_px: 320\n")
    doc = load_yaml_document(path)
    assert doc.data["camera"] == {"fps": 10, "width_px": 320, "height_px": 480}  # own keys win over merged ones
    assert doc.data["list"] == {"fps": 10, "height_px": 240}
    assert doc.data["items"] == [{"fps": 10, "height_px": 240}]
    assert doc.data["ordered"] == {"fps": 10, "width_px": 320}
    # a merged key has no line of its own: it is named at the line of the mapping it was merged into
    assert doc.lines["camera.fps"] == 3 and doc.lines["camera.width_px"] == 3 and doc.lines["list.fps"] == 4
    assert doc.lines["ordered.fps"] == 7

    @dataclass(frozen=True, kw_only=True)
    class Camera:
        fps: float = 30.0
        width_px: int = 640
        height_px: int = 480

    path.write_text("camera:\n  <<: {fps: fast}\n  width_px: 320\n")
    doc = load_yaml_document(path)
    with pytest.raises(ValueError, match=r"^.*merge.yaml:2: camera.fps: expected a number, got 'fast'$"):
        from_mapping(Camera, doc.data["camera"], source=str(path), path="camera", lines=doc.lines)


def test_a_value_that_is_not_what_its_tag_says_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "tags.yaml"
    for text, problem in [("t: !!int abc\n", "invalid literal"), ("t: " + "1" * 5000 + "\n", "4300 digits")]:
        path.write_text(text)
        with pytest.raises(ValueError) as info:
            load_yaml_mapping(path)
        assert str(info.value).startswith(f"{path}: not valid YAML: ") and problem in str(info.value)
        assert "\n" not in str(info.value)


def test_an_integer_too_long_for_python_is_said_the_same_on_every_python(tmp_path):
    # Python's own words differ ("the limit (4300)" on 3.10, "(4300 digits)" from 3.11) and end with advice for a
    # programmer ("use sys.set_int_max_str_digits()"), which the author of a config cannot follow.
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if not limit:
        pytest.skip("this Python converts integers of any length (no sys.get_int_max_str_digits limit)")
    path = tmp_path / "long.yaml"
    path.write_text("t: " + "1" * (limit + 700) + "\n")
    with pytest.raises(ValueError) as info:
        load_yaml_mapping(path)
    assert str(info.value) == (f"{path}: not valid YAML: expected an integer of at most {limit} digits, "
                               f"got one of {limit + 700} digits")


def test_update_refuses_to_write_into_a_mapping_shared_through_an_anchor(tmp_path):
    path = tmp_path / "device.yaml"
    original = "base: &b {threshold: 0.5}  # shared\ncommands: *b\nother: *b\n"
    for dotted, value, field in [("commands.threshold", 0.6, "commands"), ("base.threshold", 0.6, "base"),
                                 ("other", {"threshold": 0.6}, "other")]:
        path.write_text(original)
        with pytest.raises(ValueError) as info:
            update_yaml_file(path, {dotted: value})
        message = str(info.value)
        assert message.startswith(f"{path}:") and f": {dotted}: cannot write it: {field} is shared" in message
        assert "(&b)" in message and "\n" not in message
        assert path.read_text() == original  # nothing written
    # a merge key shares the mapping too: writing `base` would change `commands`
    path.write_text("base: &b {threshold: 0.5}\ncommands: {<<: *b}\n")
    with pytest.raises(ValueError, match=r"device.yaml:1: base.threshold: cannot write it: base is shared"):
        update_yaml_file(path, {"base.threshold": 0.6})
    # ... but a key set in the mapping that merges it is written there, overriding the merged value only
    update_yaml_file(path, {"commands.threshold": 0.6})
    assert load_yaml_mapping(path) == {"base": {"threshold": 0.5}, "commands": {"threshold": 0.6}}
    # replacing an aliased value changes that section only
    path.write_text(original)
    update_yaml_file(path, {"commands": 3})
    assert load_yaml_mapping(path) == {"base": {"threshold": 0.5}, "commands": 3, "other": {"threshold": 0.5}}


# The write-back keeps the file's layout: each variant of each shipped config, with one value edited,
# changes the line of that value only, every other line byte for byte as it was (docs/BENCHMARK.md).
FIRMWARE = sorted((Path(__file__).resolve().parents[3] / "firmware_configs").glob("*.yaml"))
BOM = b"\xef\xbb\xbf"
SHIPPED_INDENT = 2  # the shipped configs indent nested keys by 2
THRESHOLD, EDITED = "threshold: 0.75", "threshold: 0.65"  # the shipped value, and one as long: comments stay put
DASH_AT_KEY = "  ignored_labels:\n  - _silence_\n  - _unknown_\n"  # a sequence's dashes in its key's column
DASH_UNDER_KEY = "  ignored_labels:\n    - _silence_\n    - _unknown_\n"  # ... and indented under it


def _reindent(text: str, width: int) -> str:
    """``text`` (indented by 2) indented by ``width`` instead."""
    return re.sub(r"(?m)^( +)", lambda m: " " * (len(m.group(1)) // SHIPPED_INDENT * width), text)


def _with_sequence(text: str, sequence: str) -> str:
    assert "\ncommands:\n" in text
    return text.replace("\ncommands:\n", "\ncommands:\n" + sequence, 1)


VARIANTS = {
    "four_spaces": lambda t: _reindent(t, 4).encode(),
    "four_spaces_dash_under_key": lambda t: _reindent(_with_sequence(t, DASH_UNDER_KEY), 4).encode(),
    "dash_at_key": lambda t: _with_sequence(t, DASH_AT_KEY).encode(),
    "four_spaces_dash_at_key": lambda t: _reindent(_with_sequence(t, DASH_AT_KEY), 4).encode(),
    "crlf": lambda t: t.replace("\n", "\r\n").encode(),
    "bom": lambda t: BOM + t.encode(),
    "directive_and_markers": lambda t: f"%YAML 1.2\n---\n{t}...\n".encode(),
    "all_at_once": lambda t: BOM + f"%YAML 1.2\n---\n{_reindent(_with_sequence(t, DASH_AT_KEY), 4)}...\n"
    .replace("\n", "\r\n").encode(),
}


def _changed_lines(before: bytes, after: bytes) -> list[tuple[bytes, bytes]]:
    """The (before, after) pairs of lines that differ, line endings included; the files have as many lines."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(new) == len(old), after.decode("utf-8")
    return [(a, b) for a, b in zip(old, new) if a != b]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("src", FIRMWARE, ids=[p.stem for p in FIRMWARE])
def test_update_keeps_the_files_indentation_line_endings_bom_directive_and_markers(src, variant, tmp_path):
    before = VARIANTS[variant](src.read_text(encoding="utf-8"))
    path = tmp_path / src.name
    path.write_bytes(before)
    assert load_config(path).commands.threshold == 0.75  # the variant is a valid config to begin with
    update_yaml_file(path, {"commands.threshold": 0.65})
    after = path.read_bytes()
    [(old, new)] = _changed_lines(before, after)  # the edited line, and only it
    assert THRESHOLD.encode() in old and new == old.replace(THRESHOLD.encode(), EDITED.encode())
    config = load_config(path)
    assert config.commands.threshold == 0.65
    assert config.commands.ignored_labels == ("_silence_", "_unknown_")
    update_yaml_file(path, {"commands.threshold": 0.65})
    assert path.read_bytes() == after  # and as stable as before


def test_a_key_added_to_a_four_space_crlf_file_is_indented_and_ended_as_the_file_is(tmp_path):
    path = tmp_path / "device.yaml"
    path.write_bytes(b"commands:\r\n    threshold: 0.8\r\n\r\nvad:\r\n    enabled: false\r\n")
    update_yaml_file(path, {"commands.class_thresholds": {"go": 0.7}})
    assert path.read_bytes() == (b"commands:\r\n    threshold: 0.8\r\n    class_thresholds:\r\n        go: 0.7\r\n"
                                 b"\r\nvad:\r\n    enabled: false\r\n")
    # a sequence added to a file that has none: its dashes where a nested key would be
    path.write_bytes(b"commands:\r\n    threshold: 0.8\r\n")
    update_yaml_file(path, {"commands.ignored_labels": ["_silence_"]})
    assert path.read_bytes() == b"commands:\r\n    threshold: 0.8\r\n    ignored_labels:\r\n        - _silence_\r\n"


def test_a_header_goes_after_the_bom_and_ends_its_lines_as_the_file_does(tmp_path):
    """``edgesense deploy`` writes its bundled copy of a config with a header of comments."""
    src, out = tmp_path / "src.yaml", tmp_path / "config.yaml"
    src.write_bytes(BOM + b"%YAML 1.2\r\n---\r\nmodel:\r\n    path: a.tflite  # the model\r\n...\r\n")
    update_yaml_file(src, {"model.path": "b.tflite"}, out=out, header="# bundled\n# by deploy\n")
    assert out.read_bytes() == (BOM + b"# bundled\r\n# by deploy\r\n%YAML 1.2\r\n---\r\nmodel:\r\n"
                                b"    path: b.tflite  # the model\r\n...\r\n")
    assert load_yaml_mapping(out) == {"model": {"path": "b.tflite"}}


def test_aliases_that_expand_past_the_bound_are_refused_not_expanded(tmp_path):
    # "Billion laughs": anchors made of anchors, 10 aliases a level. Nine levels (600 bytes) made 10^9 values,
    # expanded before any field was checked: minutes and tens of gigabytes, then the OOM killer.
    levels = [f"x0: &a0 [{', '.join(['1'] * 10)}]"]
    levels += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(levels) + "\n")
    expected = (rf"^{re.escape(str(path))}:1: x[45](\[[0-9]\])+: expected at most 100000 values once its "
                r"aliases \(\*name\) are expanded, got more$")
    with pytest.raises(ValueError, match=expected):
        load_yaml_document(path)
    path.write_text("\n".join(levels[:4]) + "\n")  # 10^3 values: read
    assert len(load_yaml_mapping(path)["x3"]) == 10
