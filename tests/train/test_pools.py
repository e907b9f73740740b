"""edgesense.train.pools: recordings split by file, the same way for the trainer and the benchmark."""

from pathlib import Path

import pytest

from edgesense.train.pools import POOLS, TUNING_PERCENT, pool_of, speech_negative_pools, split_recordings


class ScandirOf:
    """What ``os.scandir`` returns (an iterator and a context manager) over chosen entries: a file system's
    listing, modelled."""

    def __init__(self, entries) -> None:
        self.entries = iter(entries)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.entries)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _names(n, folder="noise", prefix="rec"):
    return [Path(folder) / f"{prefix}_{i}.wav" for i in range(n)]


def test_every_recording_lands_in_exactly_one_pool_and_each_group_in_both():
    music = _names(7, prefix="music")
    other = _names(4)
    split = split_recordings(music + other)
    assert set(split) == set(POOLS) and split["tuning"] == []
    assert sorted(split["training"] + split["evaluation"]) == sorted(music + other)
    assert not set(split["training"]) & set(split["evaluation"])
    for group in (music, other):
        assert set(group) & set(split["evaluation"]) and set(group) & set(split["training"])


def test_other_speech_keeps_a_tuning_pool_without_moving_the_evaluation_pool():
    files = _names(50, folder="read_speech")
    two, three = split_recordings(files), speech_negative_pools(files)
    assert three["evaluation"] == two["evaluation"]  # earlier evaluation figures stay comparable
    assert sorted(three["training"] + three["tuning"] + three["evaluation"]) == sorted(files)
    assert not set(three["tuning"]) & (set(three["training"]) | set(three["evaluation"]))
    assert len(three["tuning"]) == round(50 * TUNING_PERCENT / 100)
    assert set(three["tuning"]) <= set(two["training"])
    small = speech_negative_pools(_names(3, folder="keywords"))  # one recording for each pool
    assert [len(small[pool]) for pool in ("training", "tuning", "evaluation")] == [1, 1, 1]
    pair = speech_negative_pools(_names(2, folder="keywords"))  # no tuning at the cost of training
    assert pair["tuning"] == [] and len(pair["training"]) == 1
    with pytest.raises(ValueError, match="tuning_percent"):
        split_recordings(files, tuning_percent=70)


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
    assert split_recordings(_names(1)) == {"training": _names(1), "tuning": [], "evaluation": []}
    with pytest.raises(ValueError, match="evaluation_percent"):
        split_recordings(_names(3), evaluation_percent=100)


@pytest.mark.shared_data
def test_shared_noise_and_negatives_have_both_pools():
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    for folder in ("noise", "speech_negatives/read_speech", "speech_negatives/keywords/alexa"):
        split = speech_negative_pools(sorted((SHARED / folder).glob("*.wav")))
        assert split["training"] and split["evaluation"], folder
        assert split["tuning"] or folder == "noise", folder


def test_recordings_are_found_in_any_case_in_nested_and_linked_folders_and_hidden_files_are_not(tmp_path):
    from edgesense.train.pools import wav_recordings

    other = tmp_path / "elsewhere" / "read_speech"
    other.mkdir(parents=True)
    (other / "reader.wav").write_bytes(b"")
    root = tmp_path / "talk"
    (root / "kitchen").mkdir(parents=True)
    (root / ".trash").mkdir()
    for name in ("a.wav", "B.WAV", "kitchen/c.Wav", "._a.wav", ".trash/d.wav", "notes.txt"):
        (root / name).write_bytes(b"")
    (root / "read_speech").symlink_to(other, target_is_directory=True)
    (root / "kitchen" / "loop").symlink_to(root, target_is_directory=True)  # a link back up the tree
    found = wav_recordings([root])
    assert sorted(p.relative_to(root).as_posix() for p in found) == [
        "B.WAV", "a.wav", "kitchen/c.Wav", "read_speech/reader.wav"]
    assert wav_recordings([root / "B.WAV"]) == [root / "B.WAV"]  # a file named is taken as it is


@pytest.mark.parametrize("listed", ["sorted", "reversed"])
def test_a_folder_reached_by_two_names_is_named_alike_in_any_listing_order(tmp_path, monkeypatch, listed):
    """Two links to one folder: the recordings are found once, under the first name in name order, whatever order
    the file system lists the links in (ext4 lists them in hash order, which differs between two disks): the pools
    hash FOLDER/NAME, so the other name gave other pools."""
    import os

    from edgesense.train.pools import wav_recordings

    store = tmp_path / "store" / "recordings"
    store.mkdir(parents=True)
    for i in range(6):
        (store / f"rec{i}.wav").write_bytes(b"")
    root = tmp_path / "noise"
    root.mkdir()
    for name in ("alpha", "beta"):
        (root / name).symlink_to(store, target_is_directory=True)
    scandir = os.scandir

    def listing(path):  # os.scandir in a given order (the file system's, modelled)
        with scandir(path) as it:
            return ScandirOf(sorted(it, key=lambda e: e.name, reverse=listed == "reversed"))

    monkeypatch.setattr(os, "scandir", listing)
    found = wav_recordings([root])
    assert [p.relative_to(root).as_posix() for p in found] == [f"alpha/rec{i}.wav" for i in range(6)]
    pools = split_recordings(found)
    assert pools == split_recordings([root / "alpha" / f"rec{i}.wav" for i in range(6)])


def test_recordings_in_other_formats_are_counted_in_a_warning(tmp_path, caplog):
    import logging

    from edgesense.train.pools import wav_recordings

    (tmp_path / "kitchen").mkdir()
    for name in ("a.wav", "b.flac", "kitchen/c.MP3", "notes.txt", "._d.ogg"):
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="edgesense.train.pools"):
        assert wav_recordings([tmp_path]) == [tmp_path / "a.wav"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: 2 audio files are not read (only .wav recordings are; convert them, e.g. ffmpeg -i NAME.flac "
        "NAME.wav): b.flac, kitchen/c.MP3"]


def test_a_recording_named_alone_keeps_the_pool_its_folder_gives_it(tmp_path, caplog, monkeypatch):
    """Pools were made per group of the files given: ``--noise noise/exercise_bike.wav`` (an evaluation recording
    when ``noise/`` is named) made a group of one, always training, and was mined and trained on without a word;
    named twice (a relative and an absolute path) a recording counted twice and could land in both pools (``rirs``
    named both ways put ``hall.wav`` in training and evaluation)."""
    import logging

    from edgesense.train.pools import say_held_out, wav_recordings

    folder = tmp_path / "noise"
    folder.mkdir()
    for name in [*(f"rec_{i}.wav" for i in range(7)), *(f"music_{i}.wav" for i in range(4)), ".hidden.wav"]:
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / "sub" / "rec_9.wav").write_bytes(b"")
    whole = speech_negative_pools(wav_recordings([folder]))
    for pool, files in whole.items():
        for path in files:
            assert speech_negative_pools([path])[pool] == [path], (path, pool)
            assert split_recordings([path])[pool if pool != "tuning" else "training"] == [path]
    held = [whole["evaluation"][0], whole["tuning"][0]]
    assert speech_negative_pools([*held, whole["training"][0]]) == {
        "training": [whole["training"][0]], "tuning": [held[1]], "evaluation": [held[0]]}
    monkeypatch.chdir(tmp_path)
    twice = split_recordings(wav_recordings([folder, Path("noise")]))
    for pool, files in twice.items():
        assert files == sorted([*split_recordings(wav_recordings([folder]))[pool],
                                *split_recordings(wav_recordings([Path("noise")]))[pool]])
    with caplog.at_level(logging.WARNING, logger="edgesense.train.pools"):
        assert say_held_out("--noise", [folder, *held], whole) == sorted(held)
    assert [r.getMessage() for r in caplog.records] == [
        f"--noise {p}: in the {pool} pool of its folder's recordings (the benchmark's, as when the folder is named), "
        "so it is not trained or mined on" for p, pool in sorted(zip(held, ("evaluation", "tuning")))]


@pytest.mark.shared_data
def test_each_shared_recording_named_alone_is_in_the_pool_of_its_folder():
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    from edgesense.train.pools import wav_recordings

    for folder in ("noise", "ambient", "rirs", "speech_negatives", "scene_ambient"):
        whole = speech_negative_pools(wav_recordings([SHARED / folder]))
        assert whole["training"] and whole["evaluation"], folder
        for pool, files in whole.items():
            assert all(speech_negative_pools([path])[pool] == [path] for path in files), (folder, pool)
    assert split_recordings([SHARED / "noise" / "exercise_bike.wav"])["evaluation"] == [
        SHARED / "noise" / "exercise_bike.wav"]


def _case_insensitive(monkeypatch, folder, aliases):
    """``folder`` as a Mac's disk (APFS) or Windows' (NTFS) shows it: each of ``aliases`` (another spelling of a name
    stored there: a link here, for the lookup) is found, and not listed (``os.listdir``, ``os.scandir``); only the
    stored spelling is."""
    import os

    for alias, stored in aliases.items():
        (folder / alias).symlink_to(stored, target_is_directory=(folder / stored).is_dir())
    listdir, scandir = os.listdir, os.scandir

    def hidden(path, name):
        return os.path.realpath(path) == os.path.realpath(folder) and name in aliases

    def listing(path="."):
        return [n for n in listdir(path) if not hidden(path, n)]

    def entries(path="."):  # os.scandir without the aliases
        with scandir(path) as it:
            return ScandirOf([e for e in it if not hidden(path, e.name)])

    monkeypatch.setattr(os, "listdir", listing)
    monkeypatch.setattr(os, "scandir", entries)


def test_a_folder_or_file_named_in_another_case_on_a_mac_keeps_the_pools_of_its_stored_name(tmp_path, monkeypatch):
    """On a case-insensitive disk ``--noise data/Noise`` opens the folder ``data/noise`` that the training config
    names: the pools hashed the name as typed, so the benchmark evaluated on recordings the model trained on."""
    from edgesense.train.pools import wav_recordings

    root = tmp_path / "data"
    (root / "noise").mkdir(parents=True)
    for i in range(14):
        (root / "noise" / f"rec{i:02d}.wav").write_bytes(b"")
    as_trained = split_recordings(wav_recordings([root / "noise"]))
    held = as_trained["evaluation"][0]
    _case_insensitive(monkeypatch, root, {"Noise": "noise"})
    _case_insensitive(monkeypatch, root / "noise", {held.name.upper(): held.name})
    assert sorted(wav_recordings([root / "Noise"])) == sorted(root / "Noise" / p.name for p in wav_recordings(
        [root / "noise"]))  # the simulated disk lists each recording once, as stored
    typed = split_recordings(wav_recordings([root / "Noise"]))
    assert {pool: [p.name for p in files] for pool, files in typed.items()} == \
        {pool: [p.name for p in files] for pool, files in as_trained.items()}
    assert all(p.parent == root / "Noise" for files in typed.values() for p in files)  # given back as named
    # a file named alone in another case (in a folder named in another case or not): its stored name's pool
    for path in (root / "Noise" / held.name.upper(), root / "noise" / held.name.upper()):
        assert split_recordings([path])["evaluation"] == [path]
