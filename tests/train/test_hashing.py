"""The stable hash of every split (edgesense.train.hashing)."""

from __future__ import annotations

import pytest

from edgesense.train.hashing import hash_percent


def test_hash_is_stable_across_machines() -> None:
    assert hash_percent("0bac8a71") == pytest.approx(11.732665536796045, abs=1e-9)  # a speaker of the official test set
    assert hash_percent("0bac8a71", salt="x") != hash_percent("0bac8a71")


def test_hash_spans_zero_to_a_hundred() -> None:
    values = [hash_percent(f"{i:08x}") for i in range(2000)]
    assert 0.0 <= min(values) < 1.0 and 99.0 < max(values) <= 100.0
