"""train.data: indexing, splits, loading with reports, balanced sampling."""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions, preprocess_frame
from edgesense.frontend.wav import read_wav, write_wav
from edgesense.train.data import (
    BACKGROUND_NOISE_DIR,
    RECORDED_PAIRS_PER_BLOCK,
    AudioItem,
    AVItem,
    ImageItem,
    SpeechCommandsOptions,
    balanced_indices,
    load_av_folder,
    load_clips,
    load_image_folder,
    load_images,
    load_noise_pool,
    load_speech_commands,
    snippet_sources,
    speaker_of,
    split_image_items,
    split_items,
    which_set,
    without_snippets_of,
)
from edgesense.train.hashing import MAX_NUM_WAVS_PER_CLASS, hash_percent
from edgesense.train.pools import split_recordings

FRONTEND = AudioFrontendOptions()
RATE = FRONTEND.sample_rate_hz


def tone(freq_hz: float, seconds: float = 1.0, amp: float = 0.3, rate: int = RATE) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq_hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def write_tone(path: Path, freq_hz: float, seconds: float = 1.0, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_wav(path, tone(freq_hz, seconds, rate=rate), rate)


def write_image(path: Path, bgr_value: tuple[int, int, int], size_hw: tuple[int, int] = (40, 60)) -> Path:
    """A flat-coloured image whose left half is saturated blue (so orientation and channel order show)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros(size_hw + (3,), dtype=np.uint8)
    img[:] = bgr_value
    img[:, : size_hw[1] // 2, 0] = 255
    assert cv2.imwrite(str(path), img)
    return path


def _tf_which_set(filename: str, validation_percentage: float, testing_percentage: float) -> str:
    """TensorFlow's speech_commands/input_data.py which_set, verbatim apart from tf.compat."""
    base_name = Path(filename).name
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    hash_name_hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage_hash = ((int(hash_name_hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1))
                       * (100.0 / MAX_NUM_WAVS_PER_CLASS))
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < (testing_percentage + validation_percentage):
        return "testing"
    return "training"


# --------------------------------------------------------------------------- speech commands index


def test_index_labels_speakers_and_noise(speech_root: Path) -> None:
    index = load_speech_commands(speech_root, words=("yes", "no"),
                                 options=SpeechCommandsOptions(silence_per_noise_file=3))
    assert index.labels == ("_silence_", "_unknown_", "yes", "no")
    by_name = {it.path.name: it for it in index.items if it.offset_ms is None}
    assert by_name["aaaa1111_nohash_1.wav"].label == "yes"
    assert by_name["eeee5555_nohash_0.wav"].label == "_unknown_"  # bed/ is not a command word
    assert by_name["eeee5555_nohash_0.wav"].speaker == "eeee5555"
    assert by_name["house_ffff6666_nohash_2.wav"].speaker == "ffff6666"  # WORD_ prefix dropped
    assert by_name["1024.wav"].label == "_silence_" and by_name["1024.wav"].speaker == "1024"
    snippets = [it for it in index.items if it.offset_ms is not None]
    assert [it.offset_ms for it in snippets] == [0, 1250, 2500]  # 3 evenly spaced 1-s cuts of 3.5 s
    assert {it.label for it in snippets} == {"_silence_"}
    assert {it.speaker for it in snippets} == {"white_noise"}  # one recording: one pseudo-speaker
    assert index.noise_paths == (speech_root / "_background_noise_" / "white_noise.wav",)
    assert index.counts() == {"_silence_": 5, "_unknown_": 2, "yes": 4, "no": 2}
    np.testing.assert_array_equal(index.label_ids(index.items[:1]), [index.labels.index(index.items[0].label)])
    assert "13 clips" in index.summary()


def test_speaker_of() -> None:
    assert speaker_of("yes/0bac8a71_nohash_3.wav") == "0bac8a71"
    assert speaker_of("_unknown_/backward_0cb74144_nohash_2.wav", unknown_layout=True) == "0cb74144"
    assert speaker_of("_silence_/1024.wav") == "1024"


def test_missing_root_word_and_empty_class_are_value_errors(tmp_path: Path, speech_root: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_speech_commands(tmp_path / "absent")
    with pytest.raises(ValueError, match="missing up"):
        load_speech_commands(speech_root, words=("yes", "up"))
    (speech_root / "go").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(speech_root / "go"))):
        load_speech_commands(speech_root, words=("yes", "no"))
    with pytest.raises(ValueError, match="words"):
        load_speech_commands(speech_root, words=("yes", "yes"))


def test_split_follows_tensorflow_rule_and_is_speaker_disjoint() -> None:
    names = [f"{i:08x}_nohash_{j}.wav" for i in range(0, 4000, 7) for j in range(2)]
    items = [AudioItem(Path("yes") / n, "yes", speaker_of(n)) for n in names]
    splits = split_items(items, validation_percent=10, testing_percent=10)
    for name, members in splits.items():
        assert all(_tf_which_set(str(it.path), 10, 10) == name for it in members)
    speakers = [{it.speaker for it in members} for members in splits.values()]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    shares = {k: len(v) / len(items) for k, v in splits.items()}
    assert 0.7 < shares["training"] < 0.9 and 0.05 < shares["validation"] < 0.15 and 0.05 < shares["testing"] < 0.15


def test_a_speaker_of_the_official_test_set_is_testing() -> None:
    assert which_set("0bac8a71", 10, 10) == "testing"  # the unsalted rule


def test_split_warns_when_the_rule_is_lopsided(caplog: pytest.LogCaptureFixture) -> None:
    # Speakers that all hash into [10, 20): the situation of the official test set.
    speakers = [s for s in (f"{i:08x}" for i in range(20000)) if 10 <= hash_percent(s) < 20][:250]
    items = [AudioItem(Path(f"{s}_nohash_0.wav"), "yes", s) for s in speakers]
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        splits = split_items(items, validation_percent=10, testing_percent=10)
    assert len(splits["testing"]) == len(items)
    assert "pass a non-empty salt" in caplog.text
    salted = split_items(items, validation_percent=10, testing_percent=10, salt="edgesense")
    assert 0 < len(salted["validation"]) < len(items) and len(salted["training"]) > len(items) // 2


def test_split_percent_validation() -> None:
    with pytest.raises(ValueError, match="testing_percent"):
        split_items([], validation_percent=60, testing_percent=50)
    with pytest.raises(ValueError, match="validation_percent"):
        split_items([], validation_percent=-1, testing_percent=0)


def test_list_files_are_honoured(speech_root: Path) -> None:
    (speech_root / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\n")
    (speech_root / "testing_list.txt").write_text("no/dddd4444_nohash_0.wav\nyes/cccc3333_nohash_0.wav\n")
    index = load_speech_commands(speech_root, words=("yes", "no"),
                                 options=SpeechCommandsOptions(silence_per_noise_file=0))
    assert index.has_list_files
    splits = index.split(validation_percent=50, testing_percent=50)  # percentages only for noise snippets
    assert [it.path.name for it in splits["validation"]] == ["bbbb2222_nohash_0.wav"]
    assert sorted(it.path.name for it in splits["testing"]) == ["cccc3333_nohash_0.wav", "dddd4444_nohash_0.wav"]
    assert len(splits["training"]) == len(index.items) - 3


def test_silence_snippets_are_split_by_their_recording(speech_root: Path) -> None:
    # The canonical layout: a _background_noise_ folder of recordings, 40 snippets cut from each. Every recording's
    # snippets land in one split, and no held-out snippet comes from a recording the training pool holds (it would
    # train as silence and as noise while scoring the held-out figure).
    rng = np.random.default_rng(1)
    for name in ("doing_the_dishes", "dude_miaowing", "exercise_bike", "pink_noise", "running_tap"):
        write_wav(speech_root / BACKGROUND_NOISE_DIR / f"{name}.wav",
                  (0.1 * rng.standard_normal(RATE * 41)).astype(np.float32), RATE)
    index = load_speech_commands(speech_root, words=("yes", "no"))
    splits = index.split(validation_percent=30, testing_percent=30, salt="edgesense")
    where: dict[Path, set[str]] = {}
    for name, items in splits.items():
        for item in items:
            if item.offset_ms is not None:
                where.setdefault(item.path, set()).add(name)
    assert len(where) == 6 and all(len(names) == 1 for names in where.values()), where
    pools = split_recordings(index.noise_paths)
    assert {path for path, names in where.items() if names == {"training"}} == set(pools["training"])
    held_out = {path for path, names in where.items() if names != {"training"}}
    assert held_out == set(pools["evaluation"]) and held_out


def test_held_out_recordings_follow_the_asked_bands(speech_root: Path) -> None:
    for k in range(20):
        write_wav(speech_root / BACKGROUND_NOISE_DIR / f"noise{k}.wav", np.zeros(RATE * 2, np.float32), RATE)
    index = load_speech_commands(speech_root, words=("yes", "no"))
    only_validation = index.split(validation_percent=20, testing_percent=0)
    assert not [it for it in only_validation["testing"] if it.offset_ms is not None]
    assert [it for it in only_validation["validation"] if it.offset_ms is not None]
    both = index.split(validation_percent=10, testing_percent=10)
    assert {it.path for it in both["validation"] if it.offset_ms is not None}
    assert {it.path for it in both["testing"] if it.offset_ms is not None}


def test_silence_clips_cut_from_an_evaluation_recording_are_found_by_content_and_left_out(tmp_path: Path) -> None:
    # Speech Commands' test set names its _silence_ clips by a number: 1 s of a background recording at some gain,
    # written as 16-bit again. A clip of a recording kept for evaluation must not train (the benchmark's streams
    # play that recording); a split by the clip's name cannot see where it came from.
    rng = np.random.default_rng(3)
    bike, tap = (0.2 * rng.standard_normal(RATE * 20), 0.2 * rng.standard_normal(RATE * 12))
    for folder in ("noise", "_silence_"):
        (tmp_path / folder).mkdir()
    write_wav(tmp_path / "noise" / "exercise_bike.wav", bike.astype(np.float32), RATE)
    write_wav(tmp_path / "noise" / "running_tap.wav", tap.astype(np.float32), RATE)
    pieces = {"1024": 0.8 * bike[77_773:77_773 + RATE], "1041": 0.05 * bike[5 * RATE + 3:6 * RATE + 3],
              "1050": 0.3 * tap[123_457:123_457 + RATE], "1060": 0.1 * rng.standard_normal(RATE)}
    for name, samples in pieces.items():
        write_wav(tmp_path / "_silence_" / f"{name}.wav", samples.astype(np.float32), RATE)
    clips = [read_wav(tmp_path / "_silence_" / f"{name}.wav") for name in pieces]
    recordings = [read_wav(tmp_path / "noise" / name) for name in ("exercise_bike.wav", "running_tap.wav")]
    assert snippet_sources(clips, recordings) == [0, 0, 1, None]
    items = [AudioItem(tmp_path / "_silence_" / f"{name}.wav", "_silence_", name) for name in pieces]
    word = AudioItem(tmp_path / "_silence_" / "1024.wav", "yes", "aaaa1111")  # only silence clips are searched
    kept = without_snippets_of([*items, word], [tmp_path / "noise" / "exercise_bike.wav"])
    assert [it.speaker for it in kept] == ["1050", "1060", "aaaa1111"]
    assert without_snippets_of(items, []) == items


@pytest.mark.shared_data
def test_no_real_silence_clip_of_the_evaluation_noise_trains(shared_data: Path) -> None:
    # 34 of the shared _silence_ clips are 1 s of noise/exercise_bike.wav, which the noise's evaluation pool holds
    # (the benchmark's evaluation streams play it); 24 of them fall in the training split of the shipped config.
    evaluation = split_recordings(sorted((shared_data / "noise").glob("*.wav")))["evaluation"]
    assert shared_data / "noise" / "exercise_bike.wav" in evaluation
    index = load_speech_commands(shared_data / "speech_commands")
    training = index.split(validation_percent=10, testing_percent=20, salt="edgesense")["training"]
    silence = [it for it in training if it.label == "_silence_"]
    bike = [read_wav(shared_data / "noise" / "exercise_bike.wav")]
    assert sum(source == 0 for source in snippet_sources([read_wav(it.path) for it in silence], bike)) == 24
    kept = without_snippets_of(training, evaluation)
    assert len(training) - len(kept) == 24 and all(it.label == "_silence_" for it in set(training) - set(kept))


# --------------------------------------------------------------------------- loading clips


def test_load_clips_fits_resamples_and_cuts_snippets(speech_root: Path) -> None:
    write_tone(speech_root / "yes" / "short8k_nohash_0.wav", 500, seconds=0.5, rate=8000)
    index = load_speech_commands(speech_root, words=("yes", "no"),
                                 options=SpeechCommandsOptions(silence_per_noise_file=3))
    clips, report = load_clips(index.items, FRONTEND)
    assert clips.shape == (len(index.items), FRONTEND.clip_samples) and clips.dtype == np.float32
    assert report.loaded == len(index.items) and report.skipped == () and report.kept == tuple(range(len(index.items)))
    short = next(i for i, it in enumerate(index.items) if it.path.name == "short8k_nohash_0.wav")
    row = clips[short]
    assert np.all(row[:3000] == 0) and np.all(row[-3000:] == 0) and np.abs(row[4000:12000]).max() > 0.25
    noise = read_wav(index.noise_paths[0])
    for i, item in enumerate(index.items):
        if item.offset_ms is not None:
            start = item.offset_ms * RATE // 1000
            np.testing.assert_array_equal(clips[i], noise[start:start + FRONTEND.clip_samples])


def test_corrupt_files_are_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_tone(tmp_path / "yes" / "a_nohash_0.wav", 400)
    empty = tmp_path / "yes" / "b_nohash_0.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "yes" / "c_nohash_0.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00JUNKJUNK")
    good2 = write_tone(tmp_path / "yes" / "d_nohash_0.wav", 800)
    items = [AudioItem(p, "yes", speaker_of(p)) for p in (good, empty, garbage, good2)]
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        clips, report = load_clips(items, FRONTEND)
    assert clips.shape[0] == 2 and report.kept == (0, 3) and report.requested == 4
    assert [p for p, _ in report.skipped] == [empty, garbage]
    assert "empty file" in report.skipped[0][1]
    assert str(empty) in caplog.text and str(garbage) in caplog.text
    assert "loaded 2 of 4" in report.summary() and "skipped 2" in report.summary()
    assert report.summary().count(str(garbage)) == 1  # named once, not again by the reader's own reason
    np.testing.assert_allclose(clips[1], tone(800), atol=1e-4)


def test_load_noise_pool(speech_root: Path) -> None:
    pool, report = load_noise_pool(sorted((speech_root / "_background_noise_").glob("*.wav")))
    assert report.loaded == 1 and pool[0].size == int(RATE * 3.5)


def test_a_recording_of_digital_silence_is_skipped_and_named(speech_root: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A silent WAV among the noise recordings (``_background_noise_/``, ``data.noise``) stopped training with
    ``noise_pool[0]: expected a noise recording, got all zeros``, naming no file; among the room responses
    (``data.rirs``) it silenced every clip it reverberated, which trained as its word. It is skipped and named."""
    from edgesense.train.augment import prepare_noise_pool
    from edgesense.train.bank import convolve_rirs, prepare_rirs

    silent = write_wav(speech_root / "_background_noise_" / "quiet.wav", np.zeros(RATE * 2, np.float32), RATE)
    paths = sorted((speech_root / "_background_noise_").glob("*.wav"))
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        pool, report = load_noise_pool(paths)
    assert report.kept == (1,) and [p for p, _ in report.skipped] == [silent]
    assert f"{silent}: expected sound, found digital silence (all 32000 samples are zero)" in caplog.text
    assert prepare_noise_pool(pool, FRONTEND.clip_samples).lengths.tolist() == [int(RATE * 3.5)]
    rooms, _ = load_noise_pool([silent, paths[1]])
    clips = tone(440)[None].repeat(8, axis=0)
    wet, applied = convolve_rirs(clips, np.random.default_rng(0), prepare_rirs(rooms), probability=1.0)
    assert applied.all() and np.all(np.sqrt(np.mean(wet ** 2, axis=1)) > 0.1)
    # a _silence_ clip of digital silence is cut from no recording: kept, and not reported as skipped
    quiet_clip = write_wav(speech_root / "_silence_" / "5.wav", np.zeros(RATE, np.float32), RATE)
    items = [AudioItem(quiet_clip, "_silence_", "5")]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        assert without_snippets_of(items, paths) == items
    assert str(quiet_clip) not in caplog.text


# --------------------------------------------------------------------------- images


def _image_root(tmp_path: Path) -> Path:
    root = tmp_path / "img"
    write_image(root / "sea" / "1.jpg", (200, 100, 0))
    write_image(root / "sea" / "2.png", (180, 90, 0))
    write_image(root / "forest" / "3.bmp", (0, 160, 0))
    write_image(root / "forest" / "4.jpeg", (0, 140, 0))
    (root / "forest" / "notes.txt").write_text("ignored")
    return root


def test_image_folder_index_and_split(tmp_path: Path) -> None:
    index = load_image_folder(_image_root(tmp_path))
    assert index.classes == ("forest", "sea")
    assert [it.path.name for it in index.items] == ["3.bmp", "4.jpeg", "1.jpg", "2.png"]
    np.testing.assert_array_equal(index.label_ids(), [0, 0, 1, 1])
    items = [ImageItem(Path(f"c/{i}.jpg"), "c") for i in range(1000)]
    splits = split_image_items(items, validation_percent=20)
    assert 150 < len(splits["validation"]) < 250 and not splits["testing"]
    again = split_image_items(list(reversed(items)), validation_percent=20)
    assert {it.path for it in again["validation"]} == {it.path for it in splits["validation"]}


def test_recorded_pairs_split_by_block_of_a_session_not_one_by_one(tmp_path: Path) -> None:
    from edgesense.app.record import PairWriter

    sessions = ("kitchen-20261201-101500-", "kitchen-20261202-090000-")
    names = [PairWriter(tmp_path, prefix, sample_rate_hz=RATE).name(number)
             for prefix in sessions for number in range(1, 8 * RECORDED_PAIRS_PER_BLOCK + 1)]
    items = [AVItem(tmp_path / f"{name}.jpg", tmp_path / f"{name}.wav", "kitchen") for name in names]
    splits = split_image_items(items, validation_percent=30)
    side = {item.image_path.stem: name for name, held in splits.items() for item in held}
    blocks = [[side[name] for name in names[start:start + RECORDED_PAIRS_PER_BLOCK]]
              for start in range(0, len(names), RECORDED_PAIRS_PER_BLOCK)]
    assert all(len(set(block)) == 1 for block in blocks)  # a block's neighbouring pairs stay on one side
    assert {block[0] for block in blocks} == {"training", "validation"}
    # photos of any other name are still split one by one
    photos = split_image_items([AVItem(Path(f"c/{i}.jpg"), Path(f"c/{i}.wav"), "c") for i in range(400)],
                               validation_percent=30)
    assert 80 < len(photos["validation"]) < 160


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    root = _image_root(tmp_path)
    (root / "glacier").mkdir()
    with pytest.raises(ValueError, match="glacier"):
        load_image_folder(root)


def test_photos_in_a_class_folders_sub_folders_are_said_not_to_be_read(tmp_path: Path, caplog) -> None:
    root = _image_root(tmp_path)
    write_image(root / "sea" / "2019" / "6.jpg", (190, 95, 0))
    write_image(root / "sea" / "2019" / "7.jpg", (190, 95, 0))
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        index = load_image_folder(root)
    assert [it.path.name for it in index.items] == ["3.bmp", "4.jpeg", "1.jpg", "2.png"]  # the layout: CLASS/NAME
    assert [r.getMessage() for r in caplog.records] == [
        f"{root / 'sea'}: 2 files in its sub-folders (e.g. 2019/6.jpg) are not read: a class's files lie directly "
        f"in its folder (CLASS/NAME)"]


def test_webp_and_tiff_photos_are_read_and_photos_it_cannot_read_are_counted(tmp_path: Path, caplog) -> None:
    root = _image_root(tmp_path)
    write_image(root / "sea" / "5.webp", (190, 95, 0))
    write_image(root / "sea" / "6.TIFF", (190, 95, 0))
    (root / "sea" / "7.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "sea" / "8.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "sea" / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        index = load_image_folder(root)
    assert [it.path.name for it in index.items if it.label == "sea"] == ["1.jpg", "2.png", "5.webp", "6.TIFF"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{root / 'sea'}: 2 files are not read (only .jpg/.jpeg/.png/.bmp/.webp/.tif/.tiff files are): 7.heic, "
        "8.jpg (a link to nothing)"]
    images, report = load_images(index.items, (8, 8))
    assert report.loaded == len(index.items) and not report.skipped
    np.testing.assert_allclose(images[-1], images[-2], atol=3)  # the TIFF and the WebP of one colour


def test_clips_in_other_formats_are_counted(speech_root: Path, caplog) -> None:
    (speech_root / "yes" / "mine.flac").write_bytes(b"fLaC")
    with caplog.at_level(logging.WARNING, logger="edgesense.train.data"):
        load_speech_commands(speech_root, words=("yes", "no"))
    assert [r.getMessage() for r in caplog.records] == [
        f"{speech_root / 'yes'}: 1 files are not read (only .wav files are): mine.flac"]


def test_a_jpeg_cut_short_is_skipped_not_filled_with_grey(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    whole = cv2.imencode(".jpg", noise)[1].tobytes()
    progressive = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    paths = []
    for name, data in [("whole.jpg", whole), ("trailer.jpg", whole + b"\xff\xda\x00\x04more"),
                       ("cut.jpg", whole[:len(whole) * 9 // 10]), ("cut_progressive.jpg", progressive[:-50]),
                       ("no_end.jpg", whole[:-2])]:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    images, report = load_images(paths, (16, 16))
    assert report.kept == (0, 1)
    assert [p.name for p, _ in report.skipped] == ["cut.jpg", "cut_progressive.jpg", "no_end.jpg"]
    assert all("a JPEG cut short" in reason for _, reason in report.skipped)


def png_declaring(width: int, height: int) -> bytes:
    """A grey PNG whose header declares ``width`` x ``height`` pixels, with the compressed data of its first rows
    only (a few hundred bytes: the decoder allocates the whole image before it finds the data short)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(8)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_a_photo_declaring_gigabytes_of_pixels_is_skipped_before_it_is_decoded(tmp_path: Path) -> None:
    """A PNG of 20000 x 20000 pixels of one colour is 389 KB; decoded it took 2.4 GB and 8 s before it was shrunk to
    96 x 96 (OpenCV's own bound is 2**30 pixels, 3.2 GB). Its header is read first and it is skipped, named."""
    small = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    jpeg = bytearray(cv2.imencode(".jpg", small)[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 20000, 30000)  # height, width
    files = {"bomb.png": png_declaring(20000, 20000), "bomb.jpg": bytes(jpeg),
             "fine.png": cv2.imencode(".png", small)[1].tobytes()}
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    images, report = load_images(paths, (16, 16))
    assert report.kept == (2,) and images.shape == (1, 16, 16, 3)
    assert [(p.name, reason.split(", found ")[1].split(" in ")[0]) for p, reason in report.skipped] == [
        ("bomb.png", "20000 x 20000 (400 megapixels)"), ("bomb.jpg", "30000 x 20000 (600 megapixels)")]
    assert "expected an image of at most 268 megapixels (16384 x 16384)" in report.summary()
    from edgesense.train.data import image_size

    for ext in (".png", ".jpg", ".bmp", ".tif"):
        assert image_size(cv2.imencode(ext, small)[1].tobytes()) == (53, 37), ext


def test_a_folder_named_like_a_class_in_another_case_is_refused(tmp_path: Path, speech_root: Path) -> None:
    for name in ("Yes", "_Silence_"):
        write_tone(speech_root / name / "mine_nohash_0.wav", 440)
        with pytest.raises(ValueError) as info:
            load_speech_commands(speech_root, words=("yes", "no"))
        assert str(info.value).startswith(f"{speech_root / name}: expected the folder of {name.lower()!r} named "
                                          f"exactly {name.lower()!r}")
        (speech_root / name / "mine_nohash_0.wav").unlink()
        (speech_root / name).rmdir()
    root = _image_root(tmp_path)
    write_image(root / "Sea" / "9.jpg", (190, 95, 0))
    with pytest.raises(ValueError, match="expected class folders whose names differ in more than case .*'Sea' and "
                                         "'sea'"):
        load_image_folder(root)
    (root / "Sea" / "9.jpg").rename(root / "sea" / "9.jpg")
    (root / "Sea").rmdir()
    write_image(root / "cafe\u0301" / "1.jpg", (0, 0, 0))  # macOS writes an accented name decomposed
    write_image(root / "caf\u00e9" / "1.jpg", (0, 0, 0))
    with pytest.raises(ValueError, match="differ in more than case or Unicode form"):
        load_image_folder(root)


def test_a_class_folder_whose_name_is_not_utf8_is_refused_and_a_utf8_one_is_its_label_in_any_locale(
        tmp_path: Path) -> None:
    """A place's folder named in Latin-1 bytes (``k\\xfcche``, from an old archive) became a scene label with a
    surrogate escape (``k\\udcfcche``): ``adapt`` wrote it into the model, and every event of that place was then
    lost (``'utf-8' codec can't encode character '\\udcfc'``, a warning each). In a C locale without UTF-8 mode a
    UTF-8 ``café`` became ``caf\\udcc3\\udca9`` the same way."""
    import os
    import subprocess
    import sys

    from edgesense.train.data import load_av_folder

    root = tmp_path / "places"
    write_image(root / "sea" / "1.jpg", (190, 95, 0))
    write_image(root / "kuche" / "1.jpg", (0, 95, 0))
    write_tone(root / "sea" / "1.wav", 440.0)
    write_tone(root / "kuche" / "1.wav", 660.0)
    (root / "kuche").rename(root / os.fsdecode(b"k\xfcche"))
    for load in (load_image_folder, load_av_folder):
        with pytest.raises(ValueError, match=r"places/k.*che: expected a class folder whose name is UTF-8 .*got one "
                                             r"whose bytes are not \(k\\xfcche\): rename it"):
            load(root)
    (root / os.fsdecode(b"k\xfcche")).rename(root / "küche")
    (root / "café").mkdir()
    (root / "sea" / "1.jpg").rename(root / "café" / "1.jpg")
    (root / "sea" / "1.wav").rename(root / "café" / "1.wav")
    (root / "sea").rmdir()
    script = ("import sys; from edgesense.train.data import load_av_folder, load_image_folder\n"
              "for index in (load_image_folder(sys.argv[1]), load_av_folder(sys.argv[1])):\n"
              "    print(ascii(index.classes), ascii(sorted({item.label for item in index.items})))")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    proc = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [r"('caf\xe9', 'k\xfcche') ['caf\xe9', 'k\xfcche']"] * 2


def test_load_images_matches_device_preprocessing(tmp_path: Path) -> None:
    index = load_image_folder(_image_root(tmp_path))
    broken = index.root / "sea" / "5.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    items = list(index.items) + [ImageItem(broken, "sea")]
    images, report = load_images(items, size_px=(32, 48))
    assert images.shape == (4, 32, 48, 3) and images.dtype == np.uint8
    assert report.kept == (0, 1, 2, 3) and report.skipped[0][0] == broken
    expected = preprocess_frame(cv2.imread(str(items[2].path)), ImageFrontendOptions(height_px=32, width_px=48))
    np.testing.assert_array_equal(images[2], expected.astype(np.uint8))
    assert images[2, :, 0, 2] .min() > images[2, :, -1, 2].max()  # RGB order: blue (left) is channel 2


def test_av_folder_pairs_and_unpaired(tmp_path: Path) -> None:
    root = tmp_path / "av"
    for cls, stems in (("cafe", ("a", "b")), ("street", ("c",))):
        for stem in stems:
            write_image(root / cls / f"{stem}.jpg", (10, 20, 30))
            write_tone(root / cls / f"{stem}.wav", 300)
    write_image(root / "cafe" / "lonely.jpg", (0, 0, 0))
    index = load_av_folder(root)
    assert index.classes == ("cafe", "street")
    assert [(it.image_path.stem, it.audio_path.suffix, it.label) for it in index.items] == [
        ("a", ".wav", "cafe"), ("b", ".wav", "cafe"), ("c", ".wav", "street")]
    assert index.unpaired == (root / "cafe" / "lonely.jpg",)
    images, report = load_images(index.items, size_px=(16, 16))
    assert images.shape == (3, 16, 16, 3) and report.loaded == 3


# --------------------------------------------------------------------------- balanced sampling


def test_balanced_indices() -> None:
    labels = np.array([0] * 50 + [1] * 3 + [2] * 20)
    picked = balanced_indices(labels, 10, np.random.default_rng(0))
    counts = np.bincount(labels[picked])
    assert counts.tolist() == [10, 3, 10]
    assert np.unique(picked).size == picked.size and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(picked, balanced_indices(labels, 10, np.random.default_rng(0)))
    assert not np.array_equal(picked, balanced_indices(labels, 10, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="per_class"):
        balanced_indices(labels, 0, np.random.default_rng(0))


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_speech_commands(shared_data: Path) -> None:
    index = load_speech_commands(shared_data / "speech_commands")
    assert len(index.items) == 2176 and len(index.speakers()) > 300
    splits = index.split(validation_percent=10, testing_percent=10, salt="edgesense")
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes["training"] > 0.7 * 2176 and sizes["validation"] > 0.04 * 2176 and sizes["testing"] > 0.04 * 2176
    s = [index.speakers(v) for v in splits.values()]
    assert not (s[0] & s[1] or s[0] & s[2] or s[1] & s[2])
    clips, report = load_clips(index.items[:50], FRONTEND)
    assert report.loaded == 50 and np.all(np.abs(clips).max(axis=1) > 0)


@pytest.mark.shared_data
def test_real_images(shared_data: Path) -> None:
    index = load_image_folder(shared_data / "intel_scenes" / "train")
    assert index.classes == ("buildings", "forest", "glacier", "mountain", "sea", "street")
    images, report = load_images(index.items[:20])
    assert images.shape == (20, 96, 96, 3) and report.loaded == 20 and images.std() > 10
