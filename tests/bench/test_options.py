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
