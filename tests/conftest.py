"""Shared fixtures: a tiny training run folder (docs/CONTRACTS.md) and its int8 model.

``tiny_run_dir`` (session): a run folder with a tiny, briefly trained Keras fusion
model on synthetic data: command "words" are tones (one frequency band per class,
silence is faint noise) turned into log-mel features by ``edgesense.frontend.audio``; scenes
are coloured shapes on tinted backgrounds. ``tiny_model_path`` (session): that run
converted to full-integer int8 by ``quantize.convert`` (one .tflite, three
signatures, embedded metadata). Building both takes a few seconds; TensorFlow is
imported only when a test asks for them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgesense.frontend.audio import AudioFrontendOptions, fit_clip, log_mel_spectrogram
from edgesense.frontend.image import ImageFrontendOptions  # noqa: E402
from edgesense.types import DEFAULT_COMMAND_LABELS  # noqa: E402

#: The project's scripts/ folder (study and tool scripts, see load_script).
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_SCENE_LABELS = ("indoor", "outdoor", "vehicle")
TINY_AUDIO_EMBEDDING = 8
TINY_IMAGE_EMBEDDING = 8
TINY_HIDDEN = 16
AUDIO_RESCALE = 0.1
TINY_TRAIN_PER_CLASS = {"command": 8, "scene": 16}
TINY_CALIBRATION_PER_CLASS = {"command": 3, "scene": 8}
TINY_VALIDATION_PER_CLASS = {"command": 4, "scene": 8}
TINY_EPOCHS = 8
TINY_SEED = 1234
TONE_BASE_HZ = 300.0
TONE_STEP_HZ = 550.0
NOISE_LEVEL = 0.02
SCENE_BACKGROUNDS_BGR = ((40, 60, 200), (60, 190, 60), (200, 90, 40))


def _command_clip(label_index: int, rng: np.random.Generator, options: AudioFrontendOptions) -> np.ndarray:
    n = options.clip_samples
    t = np.arange(n) / options.sample_rate_hz
    noise = rng.normal(0.0, NOISE_LEVEL, n)
    if label_index == 0:  # _silence_
        return fit_clip(noise * 0.5, options)
    freq = TONE_BASE_HZ + TONE_STEP_HZ * (label_index - 1) + rng.uniform(-40, 40)
    length = int(n * rng.uniform(0.4, 0.8))
    start = rng.integers(0, n - length)
    envelope = np.zeros(n)
    envelope[start:start + length] = np.hanning(length)
    signal = rng.uniform(0.2, 0.6) * envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, np.pi))
    return fit_clip(signal + noise, options)


def make_command_features(per_class: int, rng: np.random.Generator,
                          options: AudioFrontendOptions = AudioFrontendOptions()) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (features float32 (N, frames, bins), labels int32 (N,)), balanced over the 12 classes."""
    labels = np.repeat(np.arange(len(DEFAULT_COMMAND_LABELS)), per_class).astype(np.int32)
    features = np.stack([log_mel_spectrogram(_command_clip(int(k), rng, options), options) for k in labels])
    return features.astype(np.float32), labels


def make_scene_images(per_class: int, rng: np.random.Generator,
                      options: ImageFrontendOptions = ImageFrontendOptions()) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic RGB uint8 images (N, H, W, 3) of coloured shapes, and int32 scene labels."""
    import cv2

    h, w = options.height_px, options.width_px
    labels = np.repeat(np.arange(len(TINY_SCENE_LABELS)), per_class).astype(np.int32)
    images = []
    for k in labels:
        base = np.array(SCENE_BACKGROUNDS_BGR[k], dtype=np.float64) + rng.uniform(-30, 30, 3)
        img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy, r = int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20)), int(rng.integers(8, 18))
        if k == 0:
            cv2.circle(img, (cx, cy), r, colour, -1)
        elif k == 1:
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(img, [pts], colour)
        img[0, 0], img[-1, -1] = (0, 0, 0), (255, 255, 255)  # span the full pixel range
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(images), labels


def build_tiny_model(audio: AudioFrontendOptions, image: ImageFrontendOptions, n_scenes: int,
                     image_extra_layer=None):
    """The contract's model structure (three nested sub-models, dict outputs), tiny.

    ``image_extra_layer``: an optional Keras layer inserted into the image encoder
    (tests use it to build a model with an op TFLite cannot run).
    """
    import keras

    a_in = keras.Input(audio.feature_shape, name="audio_features")
    x = keras.layers.Rescaling(AUDIO_RESCALE)(a_in)  # log-mel values span roughly [-14, 6]
    x = keras.layers.Conv1D(8, 3, strides=2, activation="relu")(x)  # mel bins as channels
    x = keras.layers.GlobalAveragePooling1D()(x)
    audio_encoder = keras.Model(a_in, keras.layers.Dense(TINY_AUDIO_EMBEDDING)(x), name="audio_encoder")

    i_in = keras.Input(image.input_shape, name="image")
    y = keras.layers.Rescaling(1.0 / 255.0)(i_in)
    if image_extra_layer is not None:
        y = image_extra_layer(y)
    y = keras.layers.Conv2D(6, 4, strides=4, activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    image_encoder = keras.Model(i_in, keras.layers.Dense(TINY_IMAGE_EMBEDDING)(y), name="image_encoder")

    ea = keras.Input((TINY_AUDIO_EMBEDDING,), name="audio_embedding")
    ev = keras.Input((TINY_IMAGE_EMBEDDING,), name="image_embedding")
    ap = keras.Input((1,), name="audio_present")
    ip = keras.Input((1,), name="image_present")
    h = keras.layers.Concatenate()([keras.layers.Multiply()([ea, ap]), keras.layers.Multiply()([ev, ip]), ap, ip])
    h = keras.layers.Dense(TINY_HIDDEN, activation="relu")(h)
    head = keras.Model(
        [ea, ev, ap, ip],
        {"command": keras.layers.Dense(len(DEFAULT_COMMAND_LABELS), activation="softmax", name="command")(h),
         "scene": keras.layers.Dense(n_scenes, activation="softmax", name="scene")(h)},
        name="fusion_head",
    )
    inputs = {
        "audio_features": keras.Input(audio.feature_shape, name="audio_features"),
        "image": keras.Input(image.input_shape, name="image"),
        "audio_present": keras.Input((1,), name="audio_present"),
        "image_present": keras.Input((1,), name="image_present"),
    }
    outputs = head([audio_encoder(inputs["audio_features"]), image_encoder(inputs["image"]),
                    inputs["audio_present"], inputs["image_present"]])
    return keras.Model(inputs, outputs, name="edgesense_tiny")


def _count_macs(model) -> dict[str, int]:
    import keras

    macs = {}
    for part in ("audio_encoder", "image_encoder", "fusion_head"):
        total = 0
        for layer in model.get_layer(part).layers:
            if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
                out = layer.output.shape
                total += int(np.prod(out[1:])) * int(np.prod(layer.kernel_size)) * int(layer.input.shape[-1])
            elif isinstance(layer, keras.layers.Dense):
                total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        macs[part] = total
    macs["total"] = sum(macs.values())
    return macs


def write_tiny_run(dest: Path, seed: int = TINY_SEED,
                   image_options: ImageFrontendOptions = ImageFrontendOptions()) -> Path:
    """Train the tiny model briefly and write a complete run folder at ``dest`` (photos as ``image_options``)."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    audio_options = AudioFrontendOptions()
    dest.mkdir(parents=True, exist_ok=True)

    xa, ya = make_command_features(TINY_TRAIN_PER_CLASS["command"], rng, audio_options)
    xi, yi = make_scene_images(TINY_TRAIN_PER_CLASS["scene"], rng, image_options)
    n = max(len(xa), len(xi))
    ia, ii = rng.permutation(np.resize(np.arange(len(xa)), n)), rng.permutation(np.resize(np.arange(len(xi)), n))
    patterns = np.array([(1, 1), (1, 0), (0, 1)], np.float32)[np.arange(n) % 3]
    model = build_tiny_model(audio_options, image_options, len(TINY_SCENE_LABELS))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
                  loss={"command": "sparse_categorical_crossentropy", "scene": "sparse_categorical_crossentropy"},
                  metrics={"command": "accuracy", "scene": "accuracy"})
    history = model.fit(
        x={"audio_features": xa[ia], "image": xi[ii].astype(np.float32),
           "audio_present": patterns[:, :1], "image_present": patterns[:, 1:]},
        y={"command": ya[ia], "scene": yi[ii]},
        epochs=TINY_EPOCHS, batch_size=16, verbose=0, shuffle=True,
    )
    model.save(dest / "model.keras")

    ca, _ = make_command_features(TINY_CALIBRATION_PER_CLASS["command"], rng, audio_options)
    ci, _ = make_scene_images(TINY_CALIBRATION_PER_CLASS["scene"], rng, image_options)
    np.savez(dest / "calibration.npz", audio_features=ca, image=ci)
    va, vya = make_command_features(TINY_VALIDATION_PER_CLASS["command"], rng, audio_options)
    vi, vyi = make_scene_images(TINY_VALIDATION_PER_CLASS["scene"], rng, image_options)
    np.savez(dest / "validation.npz", audio_features=va, command_label=vya, image=vi, scene_label=vyi)

    params = {part: int(model.get_layer(part).count_params())
              for part in ("audio_encoder", "image_encoder", "fusion_head")}
    params["total"] = int(model.count_params())
    metrics = {key: float(values[-1]) for key, values in history.history.items()}
    run_info = {
        "format_version": 1,
        "name": "tiny",
        "created": "2025-01-01T00:00:00+00:00",
        "labels": {"command": list(DEFAULT_COMMAND_LABELS), "scene": list(TINY_SCENE_LABELS)},
        "audio_frontend": audio_options.to_dict(),
        "image_frontend": image_options.to_dict(),
        "fusion_strategy": "late_concat_masked",
        "params": params,
        "macs": _count_macs(model),
        "metrics": metrics,
        "data": {"commands": "synthetic tones", "scenes": "synthetic shapes",
                 "train": {"audio": int(len(xa)), "image": int(len(xi))},
                 "calibration": {"audio": int(len(ca)), "image": int(len(ci))},
                 "validation": {"audio": int(len(va)), "image": int(len(vi))}},
        "config": {"epochs": TINY_EPOCHS, "seed": seed},
    }
    (dest / "run.json").write_text(json.dumps(run_info, indent=2), encoding="utf-8")
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    (dest / "model_summary.txt").write_text("\n".join(lines), encoding="utf-8")
    import cv2

    cv2.imwrite(str(dest / "curves.png"), np.full((8, 8, 3), 255, np.uint8))
    return dest


@pytest.fixture(autouse=True)
def _own_state_folder(tmp_path_factory, monkeypatch):
    """The automatic MQTT spool goes to the state folder: a test's own, never the user's."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


#: Fixtures that train or convert a model (``tiny_builders``: the builders, for a test that trains a variant):
#: tests using them are marked ``slow`` automatically.
SLOW_FIXTURES = frozenset({"tiny_run_dir", "tiny_model_path", "run_dir_copy", "tiny_builders"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    """Training runs in tests cache their features in a temporary folder, never ~/.cache."""
    monkeypatch.setenv("EDGESENSE_CACHE", str(tmp_path_factory.getbasetemp() / "edgesense-cache"))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A complete, tiny run folder (docs/CONTRACTS.md). Treat as read-only: copy it to modify."""
    return write_tiny_run(tmp_path_factory.mktemp("tiny_run") / "run")


@pytest.fixture(scope="session")
def tiny_model_path(tiny_run_dir, tmp_path_factory) -> Path:
    """``tiny_run_dir`` converted to a full-integer int8 EdgeSense .tflite (read-only)."""
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    out = tmp_path_factory.mktemp("tiny_model") / "tiny_int8.tflite"
    convert_run(tiny_run_dir, out, QuantizeOptions(mode="int8", calibration_samples=64))
    return out


def installed_speech_embedding(pad_ms: float):
    """Google's ``speech_embedding`` from the ``[teacher]`` extra, or the test skipped naming what to install."""
    from edgesense.train.teachers import speech_embedding as se

    require_speech_embedding()
    return se.SpeechEmbedding(se.SpeechEmbeddingOptions(pad_ms=pad_ms))


def require_speech_embedding() -> None:
    """Skip the test, naming what to install, when the wheel holding ``speech_embedding`` is missing."""
    from edgesense.runtime.speech_embedding import SpeechEmbeddingUnavailable, model_files

    try:
        model_files()
    except SpeechEmbeddingUnavailable as exc:
        pytest.skip(str(exc))


TINY_HEADS_CONTEXT = 3


@pytest.fixture(scope="session")
def tiny_heads_path(tmp_path_factory) -> Path:
    """A stream-heads file (two small untrained heads of the teacher's shape on three embeddings),
    labelled like the tiny model, written by ``edgesense train-stream-heads``' own writer."""
    import keras

    from edgesense.runtime.second_opinion import HEADS_FORMAT_VERSION, HEADS_KIND
    from edgesense.train.stream_heads import ensemble_model, heads_tflite
    from edgesense.train.teachers.audio import AudioTeacherOptions, build_audio_head

    options = AudioTeacherOptions(conv_channels=8, dense_units=8)
    heads = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        heads.append(build_audio_head(TINY_HEADS_CONTEXT, 96, len(DEFAULT_COMMAND_LABELS), options))
    metadata = {"kind": HEADS_KIND, "format_version": HEADS_FORMAT_VERSION, "labels": list(DEFAULT_COMMAND_LABELS),
                "context_embeddings": TINY_HEADS_CONTEXT, "heads": 2}
    out = tmp_path_factory.mktemp("tiny_heads") / "heads.tflite"
    out.write_bytes(heads_tflite(ensemble_model(heads, TINY_HEADS_CONTEXT), metadata))
    return out


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` imported as module ``NAME`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_builders() -> SimpleNamespace:
    """The builders behind the fixtures, for tests that need a variant."""
    return SimpleNamespace(build_tiny_model=build_tiny_model, write_tiny_run=write_tiny_run,
                           make_command_features=make_command_features, make_scene_images=make_scene_images,
                           scene_labels=TINY_SCENE_LABELS)


@pytest.fixture
def run_dir_copy(tiny_run_dir, tmp_path) -> Path:
    """A writable copy of ``tiny_run_dir``."""
    return Path(shutil.copytree(tiny_run_dir, tmp_path / "run"))
