"""Property tests of ``train.yaml``'s strict loader: any bad recipe (a field of the wrong type, an edge
value, an unknown key, a duplicated section, random nested data) is one ``ValueError`` of one line that
names the file and the dotted field, never another exception, and whatever loads holds only finite
numbers and integers numpy and TensorFlow take. Deterministic (fixed values, a derandomized search)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
from config_fuzz import BEYOND_FLOAT, HUGE, SOURCE, error_field, leaf_fields, put, yaml_flow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesense.schema.validate import from_mapping
from edgesense.schema.yaml import load_yaml_document
from edgesense.train.config import (
    FOLDER_FIELDS, INT_LIMIT, RECORDING_FIELDS, TrainConfig, is_seed, load_train_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "train" / "configs"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
TINY = {"name": "tiny", "seed": 42, "data": {"speech_commands": ["sc"], "scenes": "scenes"}}
#: Wrong types and edge values, each put in place of every field in turn.
BAD_VALUES = (
    None, True, False, "", "x", "1e3", "inf", [], [None], ["x"], [1, "a"], [[1]], [{}], {}, {"a": 1},
    {"a": {"b": [1]}}, -1, 0, 1, 2, -0.5, 0.5, 5e-324, HUGE, -HUGE, INT_LIMIT, BEYOND_FLOAT, -BEYOND_FLOAT,
    math.inf, -math.inf, math.nan, 1e308, -1e308, [0, 0], [2, 1], [-1, 0], [1, 2], [0.5, math.nan],
    [math.inf, math.inf], [HUGE, HUGE], [BEYOND_FLOAT, 1], [1, 2, 3],
)
#: Crashes of ``edgesense.frontend.audio.AudioFrontendOptions`` (edge/, outside train/): it computes samples
#: from a rate and a duration before checking they fit a float. Tested apart, below, until it is fixed.


FIELDS = leaf_fields(TrainConfig)
SECTIONS = sorted({f.split(".")[0] for f in FIELDS if "." in f})
NAMES = sorted({f.split(".")[-1] for f in FIELDS})
PATHS = ("sc", "scenes", "noise")  # the tiny data folders of _data_folders


def _local(mapping: dict) -> dict:
    """A shipped recipe with its data fields pointed at :func:`_data_folders`' folders."""
    out = copy.deepcopy(dict(mapping))
    data = dict(out.get("data") or {})
    for name in (*FOLDER_FIELDS, *RECORDING_FIELDS, "teacher_models"):
        if name in data:
            many = isinstance(data[name], list)
            folder = ("scenes" if name in ("scenes", "av", "scene_ambient") else "sc" if name in FOLDER_FIELDS
                      else "noise")
            data[name] = [folder] if many and name != "teacher_models" else [] if many else folder
    data.pop("cache_dir", None)
    out["data"] = data
    return out


BASES = {"tiny": TINY, **{p.name: _local(load_yaml_document(p).data) for p in SHIPPED}}


def _data_folders(folder: Path) -> Path:
    """The folders the recipes' data fields point at (the loader checks that they exist), and the tiny recipe."""
    for name in PATHS:
        (folder / name).mkdir(exist_ok=True)
    (folder / "noise" / "take.wav").write_bytes(b"")  # a recording folder must hold a .wav
    path = folder / "train.yaml"
    path.write_text(json.dumps(TINY))  # JSON is YAML
    return path


def _walk(value: object, path: str = ""):
    """``(dotted path, leaf)`` of every number in a loaded config."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), f"{path}.{f.name}".lstrip("."))
    elif isinstance(value, tuple):
        for item in value:
            yield from _walk(item, path)
    else:
        yield path, value


def _check_loaded(config: TrainConfig) -> None:
    """What loads is sound: numbers finite, integers int64, seeds in range, and it round-trips."""
    for path, value in _walk(config):
        if isinstance(value, float):
            assert math.isfinite(value), f"{path} accepted {value}"
        if isinstance(value, int) and not isinstance(value, bool):
            assert -INT_LIMIT <= value < INT_LIMIT, f"{path} accepted {value}"
    seed = config.vision_teacher.seed  # numpy and Keras refuse a negative one, after the data has loaded
    assert seed is None or is_seed(seed), f"vision_teacher.seed accepted {seed}"
    shift = config.audio_augment.max_shift_ms  # its samples are drawn as int64
    assert shift <= config.audio_frontend.clip_duration_ms, f"audio_augment.max_shift_ms accepted {shift}"
    assert from_mapping(TrainConfig, config.to_dict()) == config


def _build(mapping: object) -> None:
    try:
        config = from_mapping(TrainConfig, mapping, source=SOURCE)
    except ValueError as exc:
        if mapping is None or isinstance(mapping, dict):
            error_field(exc)
        else:  # nothing to name but the file
            assert str(exc).startswith(f"{SOURCE}: expected a mapping, got ") and "\n" not in str(exc), exc
        return
    _check_loaded(config)


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_with_a_wrong_type_or_an_edge_value_is_one_value_error_naming_a_field(field):
    bases = list(BASES.values())
    for i, value in enumerate(BAD_VALUES):
        base = bases[(i + FIELDS.index(field)) % len(bases)]  # every recipe meets every value somewhere
        mapping = put(base, field, value)
        try:
            config = from_mapping(TrainConfig, mapping, source=SOURCE)
        except ValueError as exc:
            error_field(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - the failure this test is about
            pytest.fail(f"{field}={value!r}: {type(exc).__name__}: {exc}")
        _check_loaded(config)


@pytest.mark.parametrize("name", BASES)
def test_a_value_of_the_wrong_type_is_refused_naming_its_own_field(name):
    for field in FIELDS:
        with pytest.raises(ValueError) as info:
            from_mapping(TrainConfig, put(BASES[name], field, {"a": 1}), source=SOURCE)
        assert error_field(info.value) == field


@pytest.mark.parametrize("name", BASES)
def test_an_unknown_key_at_every_level_is_refused_naming_it(name):
    base = BASES[name]
    for section in ["", *SECTIONS]:
        key = f"{section}.colour".lstrip(".")
        with pytest.raises(ValueError) as info:
            from_mapping(TrainConfig, put(base, key, 1), source=SOURCE)
        assert error_field(info.value) == key and "unknown field; expected one of" in str(info.value)


@pytest.mark.parametrize("name", BASES)
def test_a_section_or_field_written_twice_is_refused_naming_it(tmp_path, name):
    _data_folders(tmp_path)
    base, path = BASES[name], tmp_path / "twice.yaml"
    for section, value in base.items():
        twice, key = [(section, value), *base.items()], section
        if isinstance(value, dict) and value:  # a field written twice within its section
            key, item = next(iter(value.items()))
            twice = [(f"{section}:\n  {key}: {yaml_flow(item)}\n  {key}", item), *base.items()]
        path.write_text("".join(f"{key}: {yaml_flow(item)}\n" for key, item in twice))
        with pytest.raises(ValueError) as info:
            load_train_config(path)
        assert "\n" not in str(info.value) and f"duplicate key {key!r}" in str(info.value)


@pytest.mark.parametrize("name", BASES)
def test_the_local_recipes_load(tmp_path, name):
    """The bases above are valid: the errors the other tests see are the values they put in."""
    path = tmp_path / "recipe.yaml"
    _data_folders(tmp_path)
    path.write_text(json.dumps(BASES[name]))
    _check_loaded(load_train_config(path))


# --------------------------------------------------------------------------- random nested data, --set

#: Values that YAML reads back as they are (``_yaml`` writes them).
scalars = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, -1, 2, HUGE, -HUGE, INT_LIMIT]),
                    st.integers(-10**4, 10**4), st.sampled_from([0.5, -0.5, 1e-300, 1e300, 1e308, math.inf, -math.inf,
                                                                 math.nan]),
                    st.floats(-1e6, 1e6), st.sampled_from(["", "x", "yes", "sc", "scenes", "attention", "_x"]))
keys = st.one_of(st.sampled_from(SECTIONS), st.sampled_from(NAMES), st.sampled_from(["colour", "0", "a b"]))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
paths = st.lists(keys, min_size=1, max_size=4).map(".".join)
known = st.sampled_from(FIELDS)
settings_set = st.lists(st.tuples(st.one_of(known, known, paths), anything), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    return _data_folders(tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(sorted(BASES)), items=settings_set)
def test_random_set_overrides_are_one_value_error_or_a_sound_config(tiny_path, base, items):
    path = tiny_path.parent / f"{base}.yaml"
    if not path.exists():
        path.write_text(json.dumps(BASES[base]))
    overrides = [f"{key}={yaml_flow(value)}" for key, value in items]
    try:
        config = load_train_config(path, overrides)
    except ValueError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith((f"{path}", "--set ")), text
        return
    _check_loaded(config)


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(data=st.one_of(anything, st.dictionaries(st.sampled_from(SECTIONS),
                                                st.one_of(st.dictionaries(st.sampled_from(NAMES), anything,
                                                                          max_size=5), anything), max_size=6)),
       base=st.sampled_from(sorted(BASES)))
def test_random_nested_data_merged_into_a_recipe_is_one_value_error_or_a_sound_config(data, base):
    mapping = copy.deepcopy(BASES[base])
    if isinstance(data, dict):
        for key, value in data.items():
            section = mapping.get(key)
            mapping[key] = {**section, **value} if isinstance(section, dict) and isinstance(value, dict) else value
    else:
        mapping = data
    _build(mapping)
