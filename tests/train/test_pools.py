"""edgesense.train.pools: recordings split by file, the same way for the trainer and the benchmark."""

from pathlib import Path

import pytest

from edgesense.train.pools import POOLS, pool_of, split_recordings

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _names(n, folder="noise", prefix="rec"):
    return [Path(folder) / f"{prefix}_{i}.wav" for i in range(n)]


def test_every_recording_lands_in_exactly_one_pool_and_each_group_in_both():
    music = _names(7, prefix="music")
    other = _names(4)
    split = split_recordings(music + other)
    assert set(split) == set(POOLS)
    assert sorted(split["training"] + split["evaluation"]) == sorted(music + other)
    assert not set(split["training"]) & set(split["evaluation"])
    for group in (music, other):
        assert set(group) & set(split["evaluation"]) and set(group) & set(split["training"])


def test_the_split_is_stable_and_independent_of_order_and_folder_prefix():
    files = _names(20)
    a = split_recordings(files)
    b = split_recordings(list(reversed(files)))
    assert a == b
    moved = split_recordings([Path("/elsewhere") / p for p in files])
    assert [p.name for p in moved["evaluation"]] == [p.name for p in a["evaluation"]]
    assert 4 <= len(a["evaluation"]) <= 8  # about 30 %
    assert pool_of(files[0], files) in POOLS


def test_a_single_recording_stays_in_training_and_bad_percent_is_refused():
    assert split_recordings(_names(1)) == {"training": _names(1), "evaluation": []}
    with pytest.raises(ValueError, match="evaluation_percent"):
        split_recordings(_names(3), evaluation_percent=100)


@pytest.mark.shared_data
def test_shared_noise_and_negatives_have_both_pools():
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    for folder in ("noise", "speech_negatives/read_speech", "speech_negatives/keywords/alexa"):
        split = split_recordings(sorted((SHARED / folder).glob("*.wav")))
        assert split["training"] and split["evaluation"], folder
