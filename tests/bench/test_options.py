"""``BenchOptions``: checked when built."""

from __future__ import annotations

import pytest

from edgesense.bench.options import BenchOptions
from edgesense.train.config import SEED_EXPECTED, SEED_LIMIT


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, True])
def test_a_seed_numpy_refuses_is_refused_naming_the_field(tmp_path, seed):
    with pytest.raises(ValueError) as info:
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, seed=seed)
    assert str(info.value) == f"seed: expected {SEED_EXPECTED}, got {seed!r}"


def test_the_edge_seeds_are_taken(tmp_path):
    for seed in (0, SEED_LIMIT - 1):
        assert BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, seed=seed).seed == seed


@pytest.mark.parametrize("name", ["stream_s", "talk_s"])
def test_an_endless_stream_is_refused_when_built(tmp_path, name):
    """Not after the accuracy section, as a StreamOptions' duration_s the user never typed."""
    with pytest.raises(ValueError, match=rf"^{name}: expected None or a number >= 20, got inf$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, **{name: float("inf")})


def test_write_config_without_the_streaming_evaluation_is_refused(tmp_path):
    """--no-streaming has no recommendation to write: the file was left as it was, and the run said nothing."""
    config = tmp_path / "device.yaml"
    with pytest.raises(ValueError, match=r"^write_config: expected the streaming evaluation .*got '--no-streaming'$"):
        BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, write_config=(config,),
                     streaming=False)
    assert BenchOptions(model_path=tmp_path / "m.tflite", speech_commands=tmp_path, write_config=(config,)).streaming
