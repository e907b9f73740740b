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


def test_a_name_splits_alike_in_either_unicode_form() -> None:
    """A Mac disk stores ``ü`` decomposed (``u`` + U+0308), Linux composed: the same photos, recordings and
    sessions copied from one to the other landed on other sides of the split."""
    import unicodedata
    from pathlib import Path

    from edgesense.train.data import ImageItem, split_image_items
    from edgesense.train.pools import split_recordings

    names = ["küche-20260101-120000", "café_terrasse", "crème", "Übersicht", "façade", "señor", "naïve"]
    for name in names:
        composed, decomposed = (unicodedata.normalize(form, name) for form in ("NFC", "NFD"))
        assert composed != decomposed
        assert hash_percent(decomposed) == hash_percent(composed)
        assert hash_percent(decomposed, salt="édition") == hash_percent(composed, salt=unicodedata.normalize(
            "NFD", "édition"))

    def sides(form: str) -> dict[str, list[str]]:
        label = unicodedata.normalize(form, "küche")
        items = [ImageItem(Path(f"{label}/{label}-20260101-120000-{i:04d}.jpg"), label) for i in range(1, 201)]
        split = split_image_items(items, validation_percent=10, testing_percent=15)
        return {name: [item.path.stem[-4:] for item in part] for name, part in split.items()}

    def pools(form: str) -> list[str]:
        recordings = [Path(unicodedata.normalize(form, f"geräusche/aufnahme_{i}.wav")) for i in range(8)]
        return [p.name for p in split_recordings(recordings)["evaluation"]]

    assert sides("NFD") == sides("NFC")
    assert pools("NFD") == pools("NFC")
