"""The degraded-camera table (edgesense.bench.scenes_av), the bundled model in the real interpreter.

The sounds are a tmp ``scene_ambient``-like folder of coloured noise (seven recordings per class,
two of them in the evaluation pool); the training-pool recordings are written as broken WAV files,
so a run that read one would fail. The photos are real ones from ../shared/data/intel_scenes when
it is there, generated ones otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_run import edgesense, error_line

from edgesense.bench.cli import run_bench
from edgesense.bench.options import BenchOptions
from edgesense.bench.scenes_av import (
    CONDITIONS,
    EITHER_PATH,
    PATHS,
    ambience_clips,
    leave_out_trained,
    load_scene_ambience,
    trained_recordings,
)
from edgesense.frontend.wav import write_wav
from edgesense.runtime.model import EdgeModel
from edgesense.train import data
from edgesense.train.pools import place_sound_files, split_recordings

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "edgesense.tflite"
INTEL = REPO.parent / "shared" / "data" / "intel_scenes" / "train"
SAMPLE_RATE_HZ = 16000
RECORDINGS_PER_CLASS = 7
RECORDING_S = 2.0
PHOTOS_PER_CLASS = 3
PHOTO_PX = 100
BROKEN_WAV = b"not a wav file"


@pytest.fixture(scope="module")
def labels() -> tuple[str, ...]:
    return EdgeModel.load(MODEL).scene_labels


def _coloured_noise(exponent: float, rng: np.random.Generator) -> np.ndarray:
    n = int(RECORDING_S * SAMPLE_RATE_HZ)
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft((rng.normal(size=f.size) + 1j * rng.normal(size=f.size)) / f ** (exponent / 2), n=n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def make_ambient_folder(root: Path, labels, per_class: int = RECORDINGS_PER_CLASS) -> dict[str, list[Path]]:
    """``root/CLASS/*.wav``: coloured noise, its colour per class; the training pool written broken.
    Returns the pools."""
    rng = np.random.default_rng(5)
    paths = []
    for k, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / label / f"{label}_{i}.wav"
            write_wav(path, _coloured_noise(k / 2, rng), SAMPLE_RATE_HZ)
            paths.append(path)
    pools = split_recordings(paths)
    for path in pools["training"]:
        path.write_bytes(BROKEN_WAV)
    return pools


def make_photo_folder(root: Path, labels, per_class: int = PHOTOS_PER_CLASS, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    for k, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        real = sorted((INTEL / label).glob("*.jpg"))[:per_class] if (INTEL / label).is_dir() else []
        for i in range(per_class):
            if i < len(real):
                shutil.copy(real[i], root / label / real[i].name)
            else:
                image = np.clip(rng.normal(40 * k, 30, (PHOTO_PX, PHOTO_PX, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / label / f"gen_{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory, labels):
    base = tmp_path_factory.mktemp("scenes_av")
    pools = make_ambient_folder(base / "ambient", labels)
    return base, make_photo_folder(base / "photos", labels), base / "ambient", pools


def _bench(base: Path, photos: Path, ambient: Path, out: str, seed: int = 0, **more):
    return run_bench(BenchOptions(model_path=MODEL, scenes=photos, scene_ambient=ambient, streaming=False,
                                  references_dir=base / "no_refs", out_dir=base / out, seed=seed, **more))


@pytest.fixture(scope="module")
def report(folders):
    base, photos, ambient, _ = folders
    return _bench(base, photos, ambient, "out")


def test_the_table_has_every_condition_and_path(report, labels):
    av = report["scene_av"]
    assert av["conditions"] == ["clean", "dark", "blurred", "occluded"] == list(CONDITIONS)
    assert set(av["table"]) == set(CONDITIONS)
    for row in av["table"].values():
        assert set(row) == {*PATHS, EITHER_PATH} and all(0.0 <= row[p] <= 1.0 for p in PATHS)
        # Right where either path is right: at least each path's share, at most both together.
        assert max(row["image_only"], row["audio_only"]) <= row[EITHER_PATH] <= min(
            1.0, row["image_only"] + row["audio_only"] + 1e-4)
    # Audio only does not depend on the camera; image only on the clean camera is the scene figure.
    assert {row["audio_only"] for row in av["table"].values()} == {av["audio_only"]["accuracy"]}
    assert av["table"]["clean"]["image_only"] == report["scene"]["accuracy"]
    assert av["count"] == report["scene"]["count"] == PHOTOS_PER_CLASS * len(labels)
    s = av["summary"]
    gains = [(av["table"][c]["fused"] - av["table"][c]["image_only"]) * 100 for c in ("dark", "blurred", "occluded")]
    assert s["degraded_fused_minus_image_only_points"] == pytest.approx(np.mean(gains), abs=0.051)
    ceiling = [(av["table"][c][EITHER_PATH] - av["table"][c]["image_only"]) * 100
               for c in ("dark", "blurred", "occluded")]
    assert s["degraded_either_path_minus_image_only_points"] == pytest.approx(np.mean(ceiling), abs=0.051)
    assert s["clean_fused_minus_image_only_points"] == pytest.approx(
        (av["table"]["clean"]["fused"] - av["table"]["clean"]["image_only"]) * 100, abs=0.051)
    assert (s["degraded_target_points"], s["clean_target_points"]) == (20.0, 0.0)
    assert av["ambience"]["dbfs_range"] == [-35.0, -20.0]


def test_audio_only_per_class_sums_to_the_whole(report, labels):
    audio = report["scene_av"]["audio_only"]
    assert set(audio["per_class"]) == set(labels)
    assert all(c["count"] == PHOTOS_PER_CLASS for c in audio["per_class"].values())
    matrix = np.array(audio["confusion"])
    assert matrix.sum() == audio["count"] and list(matrix.sum(axis=1)) == [PHOTOS_PER_CLASS] * len(labels)
    correct = sum(c["accuracy"] * c["count"] for c in audio["per_class"].values())
    assert correct == pytest.approx(np.trace(matrix), abs=1e-3)  # figures are rounded to 4 digits
    assert audio["accuracy"] == pytest.approx(np.trace(matrix) / audio["count"], abs=1e-4)
    assert report["figures"]["scene_av_audio_only_confusion"] == "confusion_scene_audio_only.png"


def test_only_evaluation_pool_recordings_are_used(report, folders, labels):
    _, _, _, pools = folders
    amb = report["scene_av"]["ambience"]
    evaluation = {label: sorted(p.name for p in pools["evaluation"] if p.parent.name == label) for label in labels}
    assert amb["evaluation_files"] == evaluation and all(evaluation.values())
    assert amb["training_files_left_out"] == len(pools["training"]) > 0  # written broken: never read
    used = amb["snippets_per_file"]
    assert sum(used.values()) == report["scene_av"]["count"]
    assert {name.split("/")[0] for name in used} == set(labels)
    assert all(name.split("/")[1] in evaluation[name.split("/")[0]] for name in used)


def test_snippets_are_one_clip_at_a_level_in_the_range(folders, labels):
    _, _, ambient, pools = folders
    ambience = load_scene_ambience(ambient, labels, SAMPLE_RATE_HZ)
    clips, sources = ambience_clips(ambience, list(labels) * 5, SAMPLE_RATE_HZ, (-35.0, -20.0),
                                    np.random.default_rng(0))
    assert clips.shape == (5 * len(labels), SAMPLE_RATE_HZ)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(clips.astype(np.float64) ** 2, axis=1)))
    assert np.all(rms_dbfs >= -35.01) and np.all(rms_dbfs <= -19.99) and np.ptp(rms_dbfs) > 3
    evaluation = {f"{p.parent.name}/{p.name}" for p in pools["evaluation"]}
    assert set(sources) <= evaluation and [s.split("/")[0] for s in sources] == list(labels) * 5


def test_the_same_seed_gives_the_same_figures(report, folders):
    base, photos, ambient, _ = folders
    again = _bench(base, photos, ambient, "again")
    assert again["scene_av"] == report["scene_av"]
    other = _bench(base, photos, ambient, "other", seed=1)
    assert other["scene_av"]["ambience"]["snippets_per_file"] != report["scene_av"]["ambience"]["snippets_per_file"]


def test_markdown_renders_the_table(report, folders):
    md = (folders[0] / "out" / "report.md").read_text()
    assert "| photo | fused | image only | audio only | either path (ceiling) |" in md
    for condition in CONDITIONS:
        row = report["scene_av"]["table"][condition]
        assert (f"| {condition} | {row['fused']:.3f} | {row['image_only']:.3f} | {row['audio_only']:.3f} "
                f"| {row[EITHER_PATH]:.3f} |") in md
    ceiling = report["scene_av"]["summary"]["degraded_either_path_minus_image_only_points"]
    assert f"(right where image only or audio only is right): {ceiling:+.1f} points." in md
    assert "mean over the degraded conditions" in md and "Audio only, per class:" in md
    saved = json.loads((folders[0] / "out" / "report.json").read_text())
    assert saved["scene_av"]["table"] == report["scene_av"]["table"]


def test_the_av_folder_gets_the_same_table(tmp_path, labels):
    rng = np.random.default_rng(3)
    photos = make_photo_folder(tmp_path / "av", labels, per_class=2)
    for k, label in enumerate(labels):
        for photo in (photos / label).iterdir():
            write_wav(photo.with_suffix(".wav"), _coloured_noise(k / 2, rng), SAMPLE_RATE_HZ)
    report = run_bench(BenchOptions(model_path=MODEL, av=photos, streaming=False, references_dir=tmp_path / "no_refs",
                                    out_dir=tmp_path / "out"))
    av = report["av"]
    assert av["count"] == 2 * len(labels) and set(av["table"]) == set(CONDITIONS)
    assert all(set(row) == {*PATHS, EITHER_PATH} for row in av["table"].values())
    assert sum(c["count"] for c in av["audio_only"]["per_class"].values()) == av["count"]
    assert "Paired audio-visual folder (--av)" in (tmp_path / "out" / "report.md").read_text()


def test_an_av_class_the_model_does_not_know_is_one_line_before_the_run(tmp_path, labels):
    """Its pairs cannot be scored: the table was drawn from the other classes (or none: n=0), silently."""
    rng = np.random.default_rng(4)
    photos = make_photo_folder(tmp_path / "av", labels[:2], per_class=1)
    (photos / labels[1]).rename(photos / "kitchen")
    for k, folder in enumerate(sorted(photos.iterdir())):
        for photo in folder.iterdir():
            write_wav(photo.with_suffix(".wav"), _coloured_noise(k / 2, rng), SAMPLE_RATE_HZ)
    proc = edgesense("bench", "--model", MODEL, "--av", photos, "--no-streaming", "--references", tmp_path / "no_refs",
                     "--out", tmp_path / "out")
    assert error_line(proc) == (f"edgesense: error: --av: expected class folders named like the model's scene labels "
                                f"{list(labels)}, got ['kitchen']")
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_class_without_sounds_is_one_line_naming_the_flag_and_folder(tmp_path, labels):
    photos = make_photo_folder(tmp_path / "photos", labels, per_class=1)
    make_ambient_folder(tmp_path / "ambient", labels)
    shutil.rmtree(tmp_path / "ambient" / labels[0])
    for path in (tmp_path / "ambient" / labels[1]).glob("*.wav"):
        if path.name != f"{labels[1]}_0.wav":
            path.unlink()  # one recording left: nothing for the evaluation pool
    proc = edgesense("bench", "--model", MODEL, "--scenes", photos, "--scene-ambient", tmp_path / "ambient",
                     "--no-streaming", "--references", tmp_path / "no_refs", "--out", tmp_path / "out")
    line = error_line(proc)
    assert line.startswith("edgesense: error: --scene-ambient: ")
    assert f"{tmp_path / 'ambient' / labels[0]} (no such folder)" in line
    assert f"{tmp_path / 'ambient' / labels[1]} (1 .wav file(s), none in the evaluation pool)" in line
    assert not (tmp_path / "out" / "report.json").exists()


def test_scene_ambient_needs_scenes(tmp_path, labels):
    make_ambient_folder(tmp_path / "ambient", labels)
    proc = edgesense("bench", "--model", MODEL, "--av", tmp_path, "--scene-ambient", tmp_path / "ambient",
                     "--out", tmp_path / "out")
    assert "--scene-ambient: expected --scenes too" in error_line(proc)


def test_the_pools_are_of_the_files_training_splits(tmp_path, labels):
    """A ``NAME.WAV`` is a recording to the trainer and to adapt (``place_sound_files``), a hidden
    ``._NAME.wav`` (macOS resource fork) is not: the bench split other files, so its evaluation pool
    held a recording that trained the model, or it stopped on the resource fork."""
    rng = np.random.default_rng(6)
    for label in labels:
        (tmp_path / label).mkdir()
        for i in range(3):
            name = f"{label}_{i}" + (".WAV" if i == 1 else ".wav")
            write_wav(tmp_path / label / name, _coloured_noise(1.0, rng), SAMPLE_RATE_HZ)
            (tmp_path / label / f"._{name}").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    _, trained = place_sound_files(tmp_path, labels, [])
    ambience = load_scene_ambience(tmp_path, labels, SAMPLE_RATE_HZ)
    evaluation = sorted(f"{label}/{name}" for label, names in ambience.evaluation_files().items() for name in names)
    assert evaluation == trained["evaluation"] and not set(evaluation) & set(trained["training"])
    assert ambience.training_files == len(trained["training"])


def test_recordings_the_model_trained_on_are_left_out(tmp_path, labels):
    """The split by recording depends on how many a folder holds: three recordings added to the bundled
    model's glacier folder put one it was adapted on (its metadata names it) in the evaluation pool."""
    model = EdgeModel.load(MODEL)
    trained = trained_recordings(model.metadata)
    taught = "glacier/redeclipse_stormwind.wav"
    assert taught in trained
    ambient = tmp_path / "ambient"
    make_ambient_folder(ambient, [label for label in labels if label != "glacier"])
    rng = np.random.default_rng(7)
    (ambient / "glacier").mkdir()
    for name in ("0ad_windstorm_11", "megaglest_wind", "redeclipse_stormwind", "my_glacier_0", "my_glacier_1",
                 "my_glacier_2"):
        write_wav(ambient / "glacier" / f"{name}.wav", _coloured_noise(1.0, rng), SAMPLE_RATE_HZ)
    assert ambient / taught in split_recordings((ambient / "glacier").iterdir())["evaluation"]  # the case
    report = _bench(tmp_path, make_photo_folder(tmp_path / "photos", labels, per_class=1), ambient, "out")
    amb = report["scene_av"]["ambience"]
    used = {f"{label}/{name}" for label, names in amb["evaluation_files"].items() for name in names}
    assert amb["evaluation_files"]["glacier"] and not used & trained
    assert not {name for name in amb["snippets_per_file"] if name in trained}
    assert amb["taught_the_model_left_out"] == [taught]
    # A class whose evaluation recordings all taught the model: refused, naming the folder.
    for path in (ambient / "glacier").iterdir():
        if f"glacier/{path.name}" not in trained:
            path.unlink()
    with pytest.raises(ValueError, match=r"scene_ambient: expected an evaluation-pool recording the model did not "
                                         r"train on for each scene class, got .*glacier \(1 in the evaluation pool, "
                                         r"all taught the model\)"):
        leave_out_trained(load_scene_ambience(ambient, labels, SAMPLE_RATE_HZ), trained)


def test_split_testing_scores_the_av_pairs_training_held_out(tmp_path, labels):
    """``--split testing`` was ignored for ``--av``: a model trained on the folder (``data.av``) was scored on
    every pair, its training pairs too, under a report that said the test split."""
    rng = np.random.default_rng(8)
    photos = make_photo_folder(tmp_path / "av", labels, per_class=4)
    for k, label in enumerate(labels):
        for photo in (photos / label).iterdir():
            write_wav(photo.with_suffix(".wav"), _coloured_noise(k / 2, rng), SAMPLE_RATE_HZ)
    index = data.load_av_folder(photos)
    split = data.SplitSpec.from_metadata(EdgeModel.load(MODEL).metadata, None)
    held_out = data.train_every_class(split.split_photos(index), index.classes, what="--av")["testing"]
    assert 0 < len(held_out) < len(index.items)  # the case: some pairs trained
    options = dict(model_path=MODEL, av=photos, streaming=False, references_dir=tmp_path / "no_refs")
    testing = run_bench(BenchOptions(**options, split="testing", out_dir=tmp_path / "testing"))["av"]
    assert testing["count"] == len(held_out)
    assert {label: c["count"] for label, c in testing["audio_only"]["per_class"].items()} == {
        label: sum(item.label == label for item in held_out) for label in labels}
    assert testing["selection"].startswith("testing split: file-name hash")
    every = run_bench(BenchOptions(**options, out_dir=tmp_path / "all"))["av"]
    assert every["count"] == len(index.items) and every["selection"] == "every pair of the folder"
