"""The MLPerf Tiny reference models: published architectures, trained and converted on tiny data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from datagen import make_scenes, make_speech_commands

from edgesense.bench.reference_models import (
    KWS_DSCNN,
    VWW_MOBILENET,
    REFERENCE_NAMES,
    ReferenceOptions,
    build_kws_dscnn,
    build_references,
    build_vww_mobilenet,
    load_sidecar,
    quick_schedule,
    reference_config,
    reference_fingerprint,
    training_fingerprint,
)
from edgesense.bench.references import ReferenceRunner, evaluate_reference
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.train.config import load_train_config
from edgesense.train.model import count_macs, count_params
from edgesense.types import DEFAULT_COMMAND_LABELS, DEFAULT_COMMAND_WORDS


def test_kws_dscnn_is_the_published_stack_on_our_features():
    model = build_kws_dscnn(AudioFrontendOptions(), 12)
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert model.input.shape[1:] == (49, 40)
    assert convs[0].kernel_size == (10, 4) and convs[0].strides == (2, 2) and convs[0].filters == 64
    assert len(depthwise) == 4 and all(d.kernel_size == (3, 3) for d in depthwise)
    assert [c.filters for c in convs[1:]] == [64] * 4 and all(c.kernel_size == (1, 1) for c in convs[1:])
    assert any(isinstance(layer, keras.layers.AveragePooling2D) for layer in model.layers)
    assert model.output.shape[-1] == 12
    # 25x20 map: stem 25*20*64*40, blocks 4 * (25*20*64*9 + 25*20*64*64), dense 64*12
    assert count_macs(model) == 25 * 20 * 64 * 40 + 4 * (25 * 20 * 64 * 9 + 25 * 20 * 64 * 64) + 64 * 12


def test_vww_mobilenet_is_mobilenet_v1_quarter_width():
    model = build_vww_mobilenet(ImageFrontendOptions(), 6, alpha=0.25)
    convs = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D]
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert model.input.shape[1:] == (96, 96, 3)
    assert len(depthwise) == 13 and len(convs) == 14
    assert [c.filters for c in convs] == [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
    assert [d.strides[0] for d in depthwise] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert model.output.shape[-1] == 6
    assert 7.0e6 < count_macs(model) < 8.0e6  # the published VWW model: about 7.5 M MACs
    assert 200_000 < count_params(model) < 230_000


def test_training_fingerprint_is_stable():
    # The committed sidecars hold hashes made this way: a change here makes every reference retrain.
    assert training_fingerprint(config={"seed": 42}, options={"vww_alpha": 0.25}) == "3e1f310634397877"


def test_the_reference_fingerprint_follows_what_the_references_learn_from_only():
    config = reference_config(speech_commands=Path("/a/speech_commands"), scenes=Path("/a/scenes"))
    base = reference_fingerprint(config, ReferenceOptions())
    # What only the student or its teachers read, and where the data lies, leave it alone.
    same = [dataclasses.replace(config, name="other"),
            dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_dim=64)),
            dataclasses.replace(config, audio_teacher=dataclasses.replace(config.audio_teacher, pad_ms=0.0)),
            dataclasses.replace(config, vision_teacher=dataclasses.replace(config.vision_teacher, hidden_units=0)),
            dataclasses.replace(config, bank=dataclasses.replace(config.bank, variants=1)),
            dataclasses.replace(config, train=dataclasses.replace(config.train, frozen_parts=("image_encoder",))),
            dataclasses.replace(config, audio_teacher=dataclasses.replace(config.audio_teacher, enabled=True),
                                train=dataclasses.replace(config.train, distill_weight=0.5, distill_temperature=4.0)),
            reference_config(speech_commands=Path("/elsewhere/speech_commands"), scenes=Path("/elsewhere/scenes")),
            dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=Path("/tmp/c")))]
    assert {reference_fingerprint(c, ReferenceOptions()) for c in same} == {base}
    # The schedule, the data and the options change it.
    changed = [dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=7)),
               dataclasses.replace(config, seed=1),
               reference_config(speech_commands=Path("/a/other_words"), scenes=Path("/a/scenes")),
               dataclasses.replace(config, audio_augment=dataclasses.replace(config.audio_augment,
                                                                             noise_probability=0.1)),
               dataclasses.replace(config, bank=dataclasses.replace(config.bank, placement_probability=0.0))]
    assert base not in {reference_fingerprint(c, ReferenceOptions()) for c in changed}
    assert reference_fingerprint(config, ReferenceOptions(vww_alpha=0.5)) != base


def test_the_student_s_teachers_and_training_machinery_leave_the_reference_fingerprint_alone(tmp_path):
    """What the references never read (docs/BENCHMARK.md: not "the teachers"): the models the student
    distils from (``data.teacher_models``, with the ``train.distill_weight`` they need, which was already
    left out), its embedding hint, checkpoint rule, weight averaging, batch threads, modality dropout
    (the references train with none) and calibration count. A change there cost a retrain of the references
    (40 min on the shared data) and overwrote them."""
    teacher = tmp_path / "teacher.tflite"
    teacher.write_bytes(b"an EdgeSense model the student distils from")
    config = reference_config(speech_commands=Path("/a/speech_commands"), scenes=Path("/a/scenes"))
    config = dataclasses.replace(config, bank=dataclasses.replace(config.bank, variants=0))
    base = reference_fingerprint(config, ReferenceOptions())
    same = [dataclasses.replace(config, data=dataclasses.replace(config.data, teacher_models=(teacher,)),
                                train=dataclasses.replace(config.train, distill_weight=0.5)),
            dataclasses.replace(config, data=dataclasses.replace(config.data, calibration_per_class=200)),
            *(dataclasses.replace(config, train=dataclasses.replace(config.train, **{field: value}))
              for field, value in (("embedding_hint_weight", 0.3), ("embedding_hint_talk", False),
                                   ("checkpoint_metric", "last"), ("ema_momentum", 0.998), ("workers", 6),
                                   ("modality_dropout", 0.3)))]
    assert [reference_fingerprint(c, ReferenceOptions()) for c in same] == [base] * len(same)
    # what they do read still changes it
    assert reference_fingerprint(dataclasses.replace(config, train=dataclasses.replace(
        config.train, real_speech_share=0.5)), ReferenceOptions()) != base


def _word_folder(root: Path, sizes: dict[str, int]) -> Path:
    """A Speech Commands-like folder ``root/yes`` of files of the given sizes."""
    (root / "yes").mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (root / "yes" / name).write_bytes(b"x" * size)
    return root


def test_the_reference_fingerprint_follows_what_the_data_folders_hold_wherever_they_lie(tmp_path):
    import shutil

    speech = _word_folder(tmp_path / "a" / "speech_commands", {"0.wav": 100, "1.wav": 200})
    noise = tmp_path / "a" / "fridge.wav"
    noise.write_bytes(b"n" * 50)

    def fingerprint(folder: Path, noise_file: Path = noise) -> str:
        return reference_fingerprint(reference_config(speech_commands=folder, scenes=None, noise=(noise_file,)),
                                     ReferenceOptions())

    base = fingerprint(speech)
    moved = shutil.copytree(speech, tmp_path / "elsewhere" / "speech_commands")
    assert fingerprint(moved) == base  # the same data somewhere else
    (speech / "yes" / ".DS_Store").write_bytes(b"a file no loader reads")
    assert fingerprint(speech) == base
    (speech / "yes" / "2.wav").write_bytes(b"x" * 300)  # more data at the same place
    assert fingerprint(speech) != base
    (speech / "yes" / "2.wav").unlink()
    (speech / "yes" / "1.wav").write_bytes(b"x" * 201)  # a file replaced by another
    assert fingerprint(speech) != base
    (speech / "yes" / "1.wav").write_bytes(b"x" * 200)
    assert fingerprint(speech) == base
    noise.write_bytes(b"n" * 60)  # a listed file changed
    assert fingerprint(speech) != base


@pytest.mark.slow
def test_references_train_convert_cache_and_run_on_litert(tmp_path):
    speech = make_speech_commands(tmp_path / "sc", words=DEFAULT_COMMAND_WORDS, speakers=6, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=12)
    # A salt that puts one of the six speakers in validation (the one noise recording's silence trains).
    config = quick_schedule(reference_config(speech_commands=speech, scenes=scenes, salt="references"))
    out = tmp_path / "refs"
    paths = build_references(config, out, ReferenceOptions.quick())
    assert set(paths) == {KWS_DSCNN, VWW_MOBILENET}
    for name, path in paths.items():
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["name"] == name and sidecar["quantization"]["mode"] == "int8"
        assert sidecar["macs"] > 1e6 and sidecar["params"] > 1e4
        runner = ReferenceRunner(path, InterpreterOptions(num_threads=1))
        assert runner.in_q.dtype == np.int8 and runner.out_q.dtype == np.int8  # full-integer I/O
    kws = json.loads(paths[KWS_DSCNN].with_suffix(".json").read_text())
    vww = json.loads(paths[VWW_MOBILENET].with_suffix(".json").read_text())
    assert kws["labels"] == list(DEFAULT_COMMAND_LABELS) and kws["input"]["shape"] == [1, 49, 40]
    assert vww["labels"] == ["beach", "forest", "street"] and vww["input"]["shape"] == [1, 96, 96, 3]

    # Cached: a second call does not retrain (same files, untouched).
    stamps = {p: p.stat().st_mtime_ns for p in paths.values()}
    again = build_references(config, out, ReferenceOptions.quick())
    assert {p: p.stat().st_mtime_ns for p in again.values()} == stamps

    # The benchmark's LiteRT runner evaluates them.
    rng = np.random.default_rng(0)
    clips = rng.normal(0, 0.01, (3, 16000)).astype(np.float32)
    result = evaluate_reference(ReferenceRunner(paths[KWS_DSCNN], InterpreterOptions()), clips=clips,
                                clip_labels=["yes", "no", "_silence_"], frames=None, frame_labels=None,
                                audio_frontend=AudioFrontendOptions())
    assert result["command"]["count"] == 3 and result["latency_ms"]["inference"]["n"] == 3
    assert result["model"]["macs"] == kws["macs"]


def test_the_shipped_references_are_those_of_the_recipe_they_name():
    """bench --train-references --reference-config train/configs/shared_data.yaml (the documented real benchmark)
    reuses models/references/ while their fingerprint matches the recipe's; a fingerprint rule or a recipe field that
    changes it makes that command retrain them (40 min) and overwrite the shipped files. When the references' own
    training is unchanged (a new field at a value that does nothing, a new rule), write the new fingerprint into
    their sidecars; otherwise retrain them and the model card's rows."""
    repo = Path(__file__).resolve().parents[2]
    recipe = repo / "train" / "configs" / "shared_data.yaml"
    if not (repo.parent / "shared" / "data").is_dir():
        pytest.skip("the recipe's data (../shared/data) is not here")
    expected = reference_fingerprint(load_train_config(recipe), ReferenceOptions())
    for name in REFERENCE_NAMES:
        assert load_sidecar(repo / "models" / "references" / f"{name}.tflite")["fingerprint"] == expected, name


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_reference_without_validation_items_writes_json_and_its_row_reads_n_a(tmp_path):
    """A reference config with ``image_validation_percent: 0`` (or a split that leaves a head no validation
    item) trains without a validation accuracy: the sidecar and report.json held ``NaN``, which is not JSON,
    and a teacher row of it read "validation nan" in report.md."""
    from edgesense.bench.reference_models import ReferenceModel, convert_reference
    from edgesense.bench.report import render_markdown

    model = build_kws_dscnn(AudioFrontendOptions(), 12, filters=4, blocks=1)
    calibration = np.random.default_rng(0).normal(size=(4, 49, 40)).astype(np.float32)
    ref = ReferenceModel(name=KWS_DSCNN, task="command", model=model, labels=DEFAULT_COMMAND_LABELS,
                         val_accuracy=float("nan"), epochs_run=1, calibration=calibration)
    path = convert_reference(ref, tmp_path, frontend=AudioFrontendOptions().to_dict())
    assert _strict_json(path.with_suffix(".json").read_text())["metrics"]["val_accuracy_float"] is None
    # a sidecar written before (NaN) scores as not measured, and report.json stays JSON
    sidecar = path.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"val_accuracy_float": null', '"val_accuracy_float": NaN'))
    row = evaluate_reference(ReferenceRunner(path, InterpreterOptions()), clips=np.zeros((2, 16000), np.float32),
                             clip_labels=["yes", "no"], frames=None, frame_labels=None,
                             audio_frontend=AudioFrontendOptions())
    assert _strict_json(json.dumps(row))["validation_accuracy_float"] is None
    teacher = {"task": "command", "command": {"accuracy": 0.5, "count": 2}, "architecture_note": "a teacher",
               "model": {"bytes": 10, "head_params": 5}, "ms_per_item_batched": 1.0,
               "validation_accuracy_float": float("nan")}
    text = render_markdown({"model": {"path": "m.tflite", "bytes": 1}, "settings": {}, "teachers": {"t": teacher}})
    assert "validation n/a." in text and "nan" not in text


#: Run in a child: kill this process (SIGXFSZ, as a SIGKILL) at the write that takes a file of ``sys.argv[1]``
#: whose name starts with ``sys.argv[2]`` (the file or a partial file of it) past 1 KiB: a bench killed in the
#: middle of writing that file.
_KILLED_WRITING = '''
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
def _kill_while_writing(event, args, folder=os.path.realpath(sys.argv[1]), name=sys.argv[2]):
    if event == "open" and isinstance(args[0], (str, os.PathLike)) \\
            and os.path.basename(os.fspath(args[0])).startswith(name) \\
            and os.path.dirname(os.path.realpath(os.fspath(args[0]))) == folder:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
sys.addaudithook(_kill_while_writing)
'''


#: A tiny reference, converted into ``sys.argv[1]`` with the sidecar fingerprint ``sys.argv[3]``.
_CONVERT_TINY_REFERENCE = '''
import sys
import numpy as np
from edgesense.bench.reference_models import KWS_DSCNN, ReferenceModel, build_kws_dscnn, convert_reference
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.types import DEFAULT_COMMAND_LABELS
model = build_kws_dscnn(AudioFrontendOptions(), 12, filters=4, blocks=1)
calibration = np.random.default_rng(0).normal(size=(4, 49, 40)).astype(np.float32)
ref = ReferenceModel(name=KWS_DSCNN, task="command", model=model, labels=DEFAULT_COMMAND_LABELS, val_accuracy=0.5,
                     epochs_run=1, calibration=calibration)
convert_reference(ref, sys.argv[1], frontend=AudioFrontendOptions().to_dict(), extra={"fingerprint": sys.argv[3]})
'''


@pytest.mark.slow
def test_a_bench_killed_while_it_rewrites_a_reference_leaves_the_old_one_whole(tmp_path):
    """Two benches that train the same references into one folder (a sweep): the first wrote the model and its
    sidecar; the second, killed while it wrote the same model again, left the file cut short beside the first's
    sidecar, whose fingerprint matched: every later bench took it for trained and failed on it
    (``not a valid TFLite model``) until the file was deleted by hand."""
    import subprocess
    import sys

    out = tmp_path / "refs"
    fingerprint = "f" * 16
    name = f"{KWS_DSCNN}.tflite"
    first = subprocess.run([sys.executable, "-c", _CONVERT_TINY_REFERENCE, str(out), name, fingerprint],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    path = out / name
    whole = path.read_bytes()
    assert len(whole) > 2048
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITING + _CONVERT_TINY_REFERENCE, str(out), name,
                             fingerprint], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -25, killed.stderr[-2000:]  # killed mid-write, as planned
    assert path.read_bytes() == whole  # the first bench's model, whole
    assert load_sidecar(path)["fingerprint"] == fingerprint
    ReferenceRunner(path, InterpreterOptions())  # loads: the next bench can use it
    assert sorted(p.name for p in out.glob("*.tflite")) == [path.name]  # nothing else a bench would try to load
