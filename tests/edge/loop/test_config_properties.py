"""Property tests of the device config (``firmware_configs/*.yaml``): a wrong type or an edge value in any field of
any shipped config is either one ``ValueError`` of one line naming the file and a field, or a config whose loop
options build and run (the recognizer, the energy gate, the scene smoother and both schedules fed a few seconds of
stream). Deterministic (a fixed grid of values, a derandomized search) and fast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from config_fuzz import BEYOND_FLOAT, HUGE, SOURCE, error_field, leaf_fields, put, yaml_flow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesense.app.cli import main
from edgesense.loop.config import DeviceConfig
from edgesense.loop.pipeline import PipelineOptions
from edgesense.loop.scheduler import PeriodicSchedule
from edgesense.recognition.commands import CommandRecognizer
from edgesense.recognition.gate import EnergyGate
from edgesense.recognition.scenes import SceneSmoother
from edgesense.schema.yaml import load_yaml_document
from edgesense.types import DEFAULT_COMMAND_LABELS

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "firmware_configs"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
BASES = {p.name: load_yaml_document(p).data for p in SHIPPED}
#: Wrong types and edge values, each put in place of every field in turn.
BAD_VALUES = (
    None, True, False, "", "x", "1e3", "inf", [], [None], ["x"], [1, 2], {}, {"a": 1}, -1, 0, 1, 2, -0.5, 0.5,
    5e-324, 1e-300, HUGE, -HUGE, 2**63, BEYOND_FLOAT, -BEYOND_FLOAT, math.inf, -math.inf, math.nan, 1e308, -1e308,
)
SCENE_LABELS = ("home", "office", "street")
#: Stream time fed to the loop's pieces (ms), and the chunks it is cut in at most.
RUN_MS, MAX_CHUNKS = 3000.0, 150


FIELDS = leaf_fields(DeviceConfig)


def _run(config: DeviceConfig) -> None:
    """Build the loop's options from ``config`` and push a few seconds of stream through its pieces."""
    options = PipelineOptions.from_config(config)
    scheduler = options.scheduler
    assert math.isfinite(scheduler.max_embedding_age_ms) and scheduler.max_embedding_age_ms > 0
    hop, scene = PeriodicSchedule(scheduler.command_hop_ms), PeriodicSchedule(scheduler.scene_period_ms)
    recognizer = CommandRecognizer(DEFAULT_COMMAND_LABELS, options.recognizer)
    smoother = SceneSmoother(SCENE_LABELS, options.smoother)
    gate = EnergyGate(options.energy_gate or config.vad)
    step_ms = max(config.audio.chunk_ms, RUN_MS / MAX_CHUNKS)
    samples = max(1, round(config.audio.sample_rate_hz * step_ms / 1000.0))
    chunk = np.full(samples, 0.1, dtype=np.float32)
    rng = np.random.default_rng(0)
    for origin_ms in (0.0, 1e9):  # a replay's stream time, a live clock's
        hop.anchor(origin_ms)
        scene.anchor(origin_ms)
        smoother.reset()
        gate.reset()
        recognizer = CommandRecognizer(DEFAULT_COMMAND_LABELS, options.recognizer)
        for k in range(int(RUN_MS // step_ms) + 1):
            t_ms = origin_ms + k * step_ms
            gate.update(chunk, t_ms)
            if hop.due(t_ms):
                recognizer.process(rng.dirichlet(np.ones(len(DEFAULT_COMMAND_LABELS))), t_ms)
            if scene.due(t_ms):
                smoother.update(rng.dirichlet(np.ones(len(SCENE_LABELS))), t_ms)
    config.outputs.mqtt_options(node_id=config.device.node_id, device_name=config.device.name)


def _load_or_refuse(mapping: object) -> DeviceConfig | None:
    try:
        return DeviceConfig.from_dict(mapping, source=SOURCE, base_dir=CONFIG_DIR)
    except ValueError as exc:
        if mapping is None or isinstance(mapping, dict):
            error_field(exc)
        else:
            assert str(exc).startswith(f"{SOURCE}: expected a mapping, got ") and "\n" not in str(exc), exc
        return None


@pytest.mark.parametrize("field", FIELDS)
def test_each_field_with_a_wrong_type_or_an_edge_value_is_refused_naming_a_field_or_runs(field):
    bases = list(BASES.values())
    for i, value in enumerate(BAD_VALUES):
        base = bases[(i + FIELDS.index(field)) % len(bases)]  # every config meets every value somewhere
        try:
            config = _load_or_refuse(put(base, field, value))
            if config is not None:
                _run(config)
        except Exception as exc:  # noqa: BLE001 - the failure this test is about
            pytest.fail(f"{field}={value!r}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("name", BASES)
def test_a_value_of_the_wrong_type_is_refused_naming_its_own_field(name):
    for field in FIELDS:
        with pytest.raises(ValueError) as info:
            DeviceConfig.from_dict(put(BASES[name], field, {"a": 1}), source=SOURCE, base_dir=CONFIG_DIR)
        named = error_field(info.value)
        # or its entry: class_thresholds {a: 1} is "commands.class_thresholds.a: expected a number in [0, 1)"
        assert named == field or named.startswith(f"{field}."), (field, named)


@pytest.mark.parametrize("name", BASES)
def test_the_shipped_configs_run(name):
    """The bases above are sound: what the other tests see is the value they put in."""
    _run(DeviceConfig.from_dict(BASES[name], source=SOURCE, base_dir=CONFIG_DIR))


@pytest.mark.parametrize(("field", "value"), [("scheduler.command_hop_ms", 5e-324),
                                              ("scheduler.command_hop_ms", 0.5),
                                              ("scheduler.scene_rate_hz", 5e-324),
                                              ("scheduler.scene_rate_hz", 1e308)])
def test_a_schedule_period_out_of_range_is_one_cli_error_naming_the_file_line_and_field(tmp_path, capsys, field,
                                                                                         value):
    base = put(BASES["desktop.yaml"], "model.path", str(REPO / "models" / "edgesense.tflite"))
    base = put(base, "second_opinion.heads_path", None)
    path = tmp_path / "device.yaml"
    path.write_text("".join(f"{key}: {yaml_flow(item)}\n" for key, item in put(base, field, value).items()))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("scheduler:"))
    assert err.startswith(f"edgesense: error: {path}:{line}: {field}: expected a number in ") and err.count("\n") == 1


# --------------------------------------------------------------------------- random nested data

scalars = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, -1, 2, HUGE, -HUGE, 2**63, BEYOND_FLOAT]),
                    st.integers(-10**4, 10**4),
                    st.sampled_from([0.5, -0.5, 5e-324, 1e-300, 1e300, 1e308, math.inf, -math.inf, math.nan]),
                    st.floats(-1e6, 1e6), st.sampled_from(["", "x", "-", "ema", "window", "none", "auto", "a/#"]))
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text("ab", min_size=1, max_size=2), inner,
                                                                         max_size=3)), max_leaves=6)


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), items=st.lists(st.tuples(st.sampled_from(FIELDS), scalars),
                                                           min_size=2, max_size=4))
def test_several_edge_values_at_once_are_one_value_error_or_a_config_that_runs(base, items):
    mapping = BASES[base]
    for field, value in items:
        mapping = put(mapping, field, value)
    config = _load_or_refuse(mapping)
    if config is not None:
        _run(config)


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(data=anything, section=st.sampled_from(sorted(BASES["desktop.yaml"])))
def test_random_data_as_a_config_or_a_section_is_one_value_error_or_a_config_that_runs(data, section):
    for mapping in (data, {**BASES["desktop.yaml"], section: data}):
        config = _load_or_refuse(mapping)
        if config is not None:
            _run(config)


@pytest.mark.parametrize(("field", "value"), [("commands.average_window_ms", 1e12),
                                              ("commands.context_window_ms", 1e308),
                                              ("commands.context_offset_ms", 1e308),
                                              ("scenes.window_ms", 10**30)])
def test_a_window_past_an_hour_is_refused_naming_it(field, value):
    """Every result of these windows is held: a longer one grew for as long as the loop ran (a window of 1e12 ms
    held 36,000 results an hour, and the recognizer never fired, its results never spanning a quarter of it)."""
    mapping = put(BASES["rpi5.yaml"], "commands.max_context_unknown", 0.5)  # the context rule on
    mapping = put(put(mapping, "scenes.smoothing", "window"), field, value)
    with pytest.raises(ValueError) as info:
        DeviceConfig.from_dict(mapping, source=SOURCE, base_dir=CONFIG_DIR)
    assert error_field(info.value) == field and "an hour" in str(info.value)
