"""The stable hash of every split (edgesense.train.hashing)."""

from __future__ import annotations

import numpy as np
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


def test_a_file_name_that_is_not_utf8_splits_by_its_bytes(tmp_path) -> None:
    """A clip, photo or noise recording whose name is Latin-1 bytes (``caf\\xe9_nohash_0.wav`` from an old archive;
    Python reads it with a surrogate escape) stopped ``edgesense train`` with ``'utf-8' codec can't encode character
    '\\udce9' ... surrogates not allowed``, naming no file: now it is hashed by the bytes of its name."""
    import hashlib
    import os

    from edgesense.frontend.wav import write_wav
    from edgesense.train.data import load_speech_commands

    latin1 = os.fsdecode(b"caf\xe9")
    assert hash_percent(latin1) == pytest.approx(
        int(hashlib.sha1(b"caf\xe9").hexdigest(), 16) % 2 ** 27 * (100.0 / (2 ** 27 - 1)))
    assert hash_percent("café") == hash_percent("cafe\u0301")  # valid UTF-8 names hash as before
    # ... and as they are read in a C locale without UTF-8 mode (LC_ALL=C PYTHONUTF8=0): the UTF-8 as escapes
    assert hash_percent("cafe\u0301".encode().decode("ascii", "surrogateescape")) == hash_percent("café")
    root = tmp_path / "speech"
    for word in ("yes", "no"):
        (root / word).mkdir(parents=True)
        for speaker in ("a1", "b2", latin1):
            write_wav(root / word / f"{speaker}_nohash_0.wav", np.zeros(16000, np.float32), 16000)
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / os.fsdecode(b"n\xe4he.wav"), np.zeros(32000, np.float32), 16000)
    index = load_speech_commands(root, words=("yes", "no"))
    split = index.split(validation_percent=10, testing_percent=10)
    assert sum(len(part) for part in split.values()) == len(index.items) == 8  # six clips, two silence snippets
