"""The fusion study on generated scenes: the synthetic AV set, camera degradations, the report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from datagen import make_scenes

from edgesense.frontend.wav import write_wav
from edgesense.train.data import load_av_folder
from edgesense.train.fusion_study import CONDITIONS, FusionStudyOptions, degrade, make_paired_av_set, run_fusion_study


def _ambient(folder, seconds: float = 3.0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_wav(folder / "traffic.wav", (0.1 * rng.normal(size=int(16000 * seconds))).astype(np.float32), 16000)
    return folder


def test_paired_set_has_the_load_av_folder_layout_and_says_it_is_synthetic(tmp_path):
    scenes = make_scenes(tmp_path / "scenes", per_class=6)
    info = make_paired_av_set(scenes, _ambient(tmp_path / "ambient"), tmp_path / "av",
                              FusionStudyOptions(per_class=4, match_probability=1.0))
    index = load_av_folder(tmp_path / "av")
    assert len(index.items) == 12 and not index.unpaired and index.classes == ("beach", "forest", "street")
    assert info["sound_for_scene"]["street"] == "traffic"  # the real recording goes to its scene
    assert len(set(info["sound_for_scene"].values())) == 3
    assert info["matched_fraction"] == 1.0 and "SYNTHETIC" in info["note"]
    assert "SYNTHETIC" in (tmp_path / "av" / "README.json").read_text()


def test_the_note_names_the_pairing_of_the_classes_it_was_given(tmp_path):
    # Places of one's own (not the six stock scenes): the note says what they were paired with, not street-traffic.
    scenes = make_scenes(tmp_path / "scenes", per_class=4)
    for old, new in (("beach", "garage"), ("forest", "kitchen"), ("street", "office")):
        (scenes / old).rename(scenes / new)
    info = make_paired_av_set(scenes, _ambient(tmp_path / "ambient"), tmp_path / "av",
                              FusionStudyOptions(per_class=2, match_probability=1.0))
    assert info["sound_for_scene"] == {"garage": "traffic", "kitchen": "pink", "office": "brown"}
    assert "(garage-traffic, kitchen-pink noise, office-brown noise)" in info["note"]
    assert "street" not in info["note"] and "glacier" not in info["note"]


def test_degradations_damage_the_frame_as_named():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    assert np.array_equal(degrade(images, "clean", rng), images)
    assert degrade(images, "dark", rng).mean() < 0.2 * images.mean()
    assert degrade(images, "blurred", rng).std() < 0.5 * images.std()
    occluded = degrade(images, "occluded", rng)
    covered = np.mean(np.all(occluded != images, axis=-1) | np.all(occluded < 60, axis=-1))
    assert 0.5 < covered < 0.7
    with pytest.raises(ValueError, match="condition"):
        degrade(images, "foggy", rng)


@pytest.mark.slow
def test_quick_study_scores_every_variant_in_every_condition(tmp_path):
    scenes = make_scenes(tmp_path / "scenes", per_class=20)
    options = dataclasses.replace(FusionStudyOptions.quick(), per_class=20, epochs=6, batch_size=8,
                                  learning_rate=1e-2)
    report = run_fusion_study(scenes, tmp_path / "out", ambient_dir=_ambient(tmp_path / "ambient"),
                              options=options)
    names = {"image_only", "audio_only", "fusion_concat", "fusion_weighted_sum", "fusion_attention", "fusion_late"}
    assert set(report["accuracy"]) == names
    for r in report["accuracy"].values():
        assert all(0.0 <= r[c] <= 1.0 for c in CONDITIONS)
    assert set(report["gain_over_image_only"]) == {n for n in names if n.startswith("fusion_")}
    g = report["gain_over_image_only"]["fusion_concat"]["clean"]
    assert g == pytest.approx(report["accuracy"]["fusion_concat"]["clean"] - report["accuracy"]["image_only"]["clean"],
                              abs=1e-3)
    assert report["sizes"]["training"] > report["sizes"][report["evaluated_on"]] > 0
    assert (tmp_path / "out" / "fusion_study.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "fusion_study.json").read_text())["accuracy"] == report["accuracy"]
    # The solid-colour scenes are trivially visible: clean image-only is far above chance.
    assert report["accuracy"]["image_only"]["clean"] > 0.6
    assert report["accuracy"]["image_only"]["validation"] > 0.6


def _two_places(root) -> None:
    """An --av folder of 12 noisy pairs each of beach and street."""
    import cv2

    rng = np.random.default_rng(0)
    for label in ("beach", "street"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(root / label / f"{label}{i}.jpg"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            write_wav(root / label / f"{label}{i}.wav", (0.1 * rng.normal(size=16000)).astype(np.float32), 16000)


def test_a_set_without_validation_or_testing_pairs_is_one_line_before_any_training(tmp_path):
    """A user's small folder whose every pair hashes into training stopped after training every variant, with
    numpy's "need at least one array to stack"."""
    root = tmp_path / "av"
    _two_places(root)
    split = load_av_folder(root).split(validation_percent=10.0, testing_percent=15.0)
    for name in ("validation", "testing"):
        for item in split[name]:
            item.image_path.unlink()
            item.audio_path.unlink()
    assert {item.label for item in split["training"]} == {"beach", "street"}
    with pytest.raises(ValueError, match=r"av set .*: expected validation or testing pairs to score the study on"):
        run_fusion_study(None, tmp_path / "out", av_root=root, options=FusionStudyOptions.quick())


def test_bench_holds_the_study_files_with_its_figures_until_the_report(tmp_path, monkeypatch):
    """bench wrote fusion_study.json and .png itself, outside held_outputs: a Ctrl-C before the report left them
    in --out beside the earlier run's report. Passed bench's writer, the study's files are held with the figures
    (no model trained here: the study's results are what this test does not look at)."""
    from edgesense.bench.report import held_outputs, write_outputs
    from edgesense.train import fusion_study

    monkeypatch.setattr(fusion_study, "_train_variant", lambda *args, **kwargs: (None, 0.5))
    monkeypatch.setattr(fusion_study, "_accuracy", lambda *args, **kwargs: 0.5)
    root, out = tmp_path / "av", tmp_path / "out"
    _two_places(root)
    with held_outputs():
        report = run_fusion_study(None, out, av_root=root, options=FusionStudyOptions.quick(),
                                  write=lambda files: write_outputs(files, what="the fusion study"))
        assert not (out / "fusion_study.json").exists() and not (out / "fusion_study.png").exists()
        write_outputs({out / "report.json": b"{}\n"}, what="the report", release=True)
    assert json.loads((out / "fusion_study.json").read_text())["accuracy"] == report["accuracy"]
    assert (out / "fusion_study.png").read_bytes().startswith(b"\x89PNG")


def test_without_validation_pairs_a_variant_keeps_its_last_epoch_not_its_first(monkeypatch):
    """With no validation pair every epoch "scored" 0.0, which never beat the first epoch's 0.0: the study kept the
    weights of its first epoch of eight and reported a validation accuracy of 0."""
    import keras

    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.frontend.image import ImageFrontendOptions
    from edgesense.train import fusion_study

    audio, image = AudioFrontendOptions(), ImageFrontendOptions()
    rng = np.random.default_rng(0)

    def split(n: int) -> fusion_study._Split:
        return fusion_study._Split(rng.normal(size=(n, *audio.feature_shape)).astype(np.float32),
                                   rng.integers(0, 256, (n, *image.input_shape), dtype=np.uint8),
                                   (np.arange(n) % 2).astype(np.int32))

    after_each_epoch = []
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        after_each_epoch.append(self.get_weights())
        return history

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    options = dataclasses.replace(FusionStudyOptions.quick(), epochs=3, batch_size=4)
    model, validation = fusion_study._train_variant("image_only", "concat", split(8), split(0), 2, options, audio,
                                                    image)
    assert len(after_each_epoch) == 3
    assert not all(np.array_equal(a, b) for a, b in zip(after_each_epoch[0], after_each_epoch[-1]))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), after_each_epoch[-1]))
    assert validation is None  # no figure, not an accuracy of 0
