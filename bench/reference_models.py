"""Reference models from the MLPerf Tiny benchmark, trained and quantized like ours, for side-by-side numbers.

* ``kws_dscnn``: the MLPerf Tiny keyword-spotting DS-CNN (Zhang et al., "Hello Edge"; MLPerf
  Tiny ``keyword_spotting/keras_model.py``): conv 64 (10x4) stride 2 + BN + ReLU + dropout 0.2,
  four depthwise-separable blocks of 64 (3x3 depthwise + BN + ReLU, 1x1 conv 64 + BN + ReLU),
  dropout 0.4, average pool over the whole map, dense 12 softmax. The original input is
  49x10 MFCC; **here it is our 49x40 log-mel frontend**, so the data path is identical to our
  model's (the first conv therefore sees 4x more input columns than the published model).
* ``vww_mobilenet_v1``: the Visual Wake Words MobileNetV1 (Howard et al.; MLPerf Tiny
  ``visual_wake_words``): width multiplier alpha = 0.25, 96x96x3 input, the standard layer
  stack (3x3 conv 32a stride 2, then 13 depthwise-separable blocks 64a, 128a/2, 128a, 256a/2,
  256a, 512a/2, 5x 512a, 1024a/2, 1024a), global average pool, dense with **N scene classes
  instead of 2**. Pixels [0, 255] are rescaled to [-1, 1] inside the model, as in ours.

Both are trained by OUR training pipeline (:func:`train.trainer.load_dataset` for the
speaker-/photo-disjoint splits, :class:`train.trainer.FusionBatches` for class-balanced
sampling, augmentation and class weights), with the checkpoint chosen on the validation
split only, and quantized like ours: full-integer int8 (int8 inputs and outputs) with a
representative set of real, class-balanced training samples. Each is written as a
single-signature ``NAME.tflite`` plus a ``NAME.json`` sidecar (labels, frontend, input name,
params, MACs, validation accuracy, a fingerprint of what it was trained on).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np
from keras import layers

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.schema.validate import require, require_kinds, to_mapping
from edgesense.train import data as datasets
from edgesense.train.augment import AudioAugmentOptions
from edgesense.train.cache import replace_files
from edgesense.train.config import DataConfig, TrainConfig, TrainOptions
from edgesense.train.model import PIXEL_SCALE, FusedBatchNormalization, count_macs, count_params
from edgesense.train.pools import visible_files
from edgesense.train.trainer import (
    COSINE_DECAY_FLOOR,
    AudioSet,
    Dataset,
    FusionBatches,
    ImageSet,
    features_of,
    load_dataset,
    steps_per_epoch,
)

__all__ = [
    "KWS_DSCNN",
    "VWW_MOBILENET",
    "REFERENCE_NAMES",
    "ReferenceOptions",
    "quick_schedule",
    "ReferenceModel",
    "build_kws_dscnn",
    "build_vww_mobilenet",
    "reference_config",
    "train_reference",
    "convert_reference",
    "build_references",
    "reference_fingerprint",
    "config_identity",
    "load_sidecar",
]

log = logging.getLogger(__name__)

KWS_DSCNN = "kws_dscnn"
VWW_MOBILENET = "vww_mobilenet_v1"
REFERENCE_NAMES = (KWS_DSCNN, VWW_MOBILENET)
SIDECAR_FORMAT_VERSION = 1
OUTPUT_NAME = "probabilities"
#: MobileNetV1 (filters at alpha = 1, stride) of the 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                       (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
MOBILENET_V1_STEM = 32


# ----------------------------------------------------------------------------- architectures


def build_kws_dscnn(frontend: AudioFrontendOptions = AudioFrontendOptions(), num_classes: int = 12, *,
                    filters: int = 64, blocks: int = 4) -> keras.Model:
    """The MLPerf Tiny KWS DS-CNN on our log-mel features ``(frames, bins)``."""
    require(num_classes >= 2, "num_classes", ">= 2", num_classes)
    frames, bins = frontend.feature_shape
    reg = keras.regularizers.l2(1e-4)
    inputs = keras.Input((frames, bins), name="audio_features")
    x = layers.Reshape((frames, bins, 1))(inputs)
    x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg)(x)
    x = FusedBatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(0.2)(x)
    for _ in range(blocks):
        x = layers.DepthwiseConv2D((3, 3), padding="same", depthwise_regularizer=reg)(x)
        x = FusedBatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(filters, (1, 1), padding="same", kernel_regularizer=reg)(x)
        x = FusedBatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.Dropout(0.4)(x)
    x = layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=KWS_DSCNN)


def build_vww_mobilenet(frontend: ImageFrontendOptions = ImageFrontendOptions(), num_classes: int = 2, *,
                        alpha: float = 0.25) -> keras.Model:
    """MobileNetV1 (width ``alpha``) as in MLPerf Tiny Visual Wake Words, with ``num_classes`` outputs."""
    require(num_classes >= 2, "num_classes", ">= 2", num_classes)
    require(0 < alpha <= 1, "alpha", "in (0, 1]", alpha)
    inputs = keras.Input(frontend.input_shape, name="image")
    x = layers.Rescaling(PIXEL_SCALE, offset=-1.0)(inputs)
    x = layers.Conv2D(int(MOBILENET_V1_STEM * alpha), 3, strides=2, padding="same", use_bias=False)(x)
    x = FusedBatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    for filters, stride in MOBILENET_V1_BLOCKS:
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = FusedBatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        x = layers.Conv2D(int(filters * alpha), 1, padding="same", use_bias=False)(x)
        x = FusedBatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(1e-3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=VWW_MOBILENET)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class ReferenceOptions:
    """How the references are built beyond their training schedule.

    The schedule is the student's, read from the TrainConfig they are trained with: ``epochs``,
    ``batch_size``, steps per epoch (as many as the student takes: its larger training set over
    the batch size, or ``steps_per_epoch``), learning rate and its cosine decay, weight decay,
    ``patience`` and each head's label smoothing. "Ahead of the references" then compares models,
    not budgets.
    """

    calibration_per_class: int = 30
    vww_alpha: float = 0.25

    def __post_init__(self) -> None:
        require_kinds(self)
        require(isinstance(self.calibration_per_class, int) and self.calibration_per_class >= 1,
                "calibration_per_class", "an integer >= 1", self.calibration_per_class)
        require(0 < self.vww_alpha <= 1, "vww_alpha", "in (0, 1]", self.vww_alpha)

    @classmethod
    def quick(cls) -> "ReferenceOptions":
        return cls(calibration_per_class=4)


def quick_schedule(config: TrainConfig) -> TrainConfig:
    """``config`` with a schedule for smoke tests: one epoch of 3 steps of 16."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1, steps_per_epoch=3,
                                                                 batch_size=16))


@dataclass(frozen=True)
class ReferenceModel:
    """A trained (float) reference: the Keras model, its task, labels and validation accuracy."""

    name: str
    task: str  # "command" | "scene"
    model: keras.Model
    labels: tuple[str, ...]
    val_accuracy: float
    epochs_run: int
    calibration: np.ndarray


def reference_config(*, speech_commands: Path | None, scenes: Path | None, salt: str = "edgesense",
                     noise: tuple[Path, ...] = (), seed: int = 42, words: tuple[str, ...] | None = None,
                     audio_frontend: AudioFrontendOptions | None = None,
                     split: datasets.SplitSpec | None = None) -> TrainConfig:
    """A TrainConfig on the given folders, split like ``split`` (the benchmarked model's recorded split,
    so the references never train on the speakers or photos it is tested on; default:
    train/configs/shared_data.yaml's percentages with ``salt``). ``words`` and ``audio_frontend``: the
    benchmarked model's (default: the ten words and the standard log-mel), so that the KWS reference
    names the same classes from the same features as the model."""
    split = split or datasets.SplitSpec(speaker_salt=salt)
    data = DataConfig(speech_commands=(Path(speech_commands),) if speech_commands else (),
                      scenes=Path(scenes) if scenes else None, noise=tuple(Path(p) for p in noise),
                      validation_percent=split.validation_percent, testing_percent=split.testing_percent,
                      image_validation_percent=split.image_validation_percent,
                      image_testing_percent=split.image_testing_percent, speaker_split_salt=split.speaker_salt,
                      **({} if words is None else {"words": tuple(words)}))
    if audio_frontend is None:
        return TrainConfig(name="references", seed=seed, data=data)
    augment = AudioAugmentOptions()
    augment = dataclasses.replace(augment, sample_rate_hz=audio_frontend.sample_rate_hz,
                                  max_shift_ms=min(augment.max_shift_ms, audio_frontend.clip_duration_ms))
    return TrainConfig(name="references", seed=seed, data=data, audio_frontend=audio_frontend,
                       audio_augment=augment)


class _SingleHead(keras.utils.PyDataset):
    """One input and one head out of the trainer's :class:`FusionBatches`."""

    def __init__(self, batches: FusionBatches, input_name: str, output_name: str):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batches, self.input_name, self.output_name = batches, input_name, output_name

    def __len__(self) -> int:
        return len(self.batches)

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()

    def __getitem__(self, step: int):
        x, y, w = self.batches[step]
        return x[self.input_name], y[self.output_name], w[self.output_name]


def _only(ds: Dataset, task: str, config: TrainConfig) -> Dataset:
    """The dataset with the other modality's training data removed (so batches skip its work)."""
    if task == "command":
        empty = ImageSet(np.zeros((0, *config.image_frontend.input_shape), np.uint8), np.zeros(0, np.int32))
        return dataclasses.replace(ds, image_train=empty)
    empty_audio = AudioSet(np.zeros((0, config.audio_frontend.clip_samples), np.float32), np.zeros(0, np.int32))
    return dataclasses.replace(ds, audio_train=empty_audio)


class _EpochLines(keras.callbacks.Callback):
    """One info line per epoch of a reference's training (its fit prints nothing): minutes of it are not silent."""

    def __init__(self, name: str, epochs: int) -> None:
        super().__init__()
        self.name, self.epochs, self.started = name, epochs, time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        shown = ("loss", "val_categorical_accuracy")
        figures = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k in shown)
        log.info("reference %s: epoch %d/%d, %s, %.0f s", self.name, epoch + 1, self.epochs, figures,
                 time.perf_counter() - self.started)


def train_reference(name: str, ds: Dataset, config: TrainConfig,
                    options: ReferenceOptions = ReferenceOptions(), *, verbose: int = 0) -> ReferenceModel:
    """Train one reference on ``ds`` (from :func:`train.trainer.load_dataset`) with the trainer's batches."""
    require(name in REFERENCE_NAMES, "name", f"one of {', '.join(REFERENCE_NAMES)}", name)
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if name == KWS_DSCNN:
        task, labels, input_name = "command", ds.command_labels, "audio_features"
        train_y = ds.audio_train.labels
        require(train_y.size > 0, "data.speech_commands", "training clips for the KWS reference", 0)
        model = build_kws_dscnn(config.audio_frontend, len(labels))
        val_x = features_of(ds.audio_val.clips, config)
        val_y = ds.audio_val.labels
        calibration = features_of(ds.audio_train.clips[datasets.balanced_indices(
            train_y, options.calibration_per_class, rng)], config)
    else:
        task, labels, input_name = "scene", ds.scene_labels, "image"
        train_y = ds.image_train.labels
        require(train_y.size > 0, "data.scenes", "training photos for the VWW reference", 0)
        model = build_vww_mobilenet(config.image_frontend, len(labels), alpha=options.vww_alpha)
        val_x = ds.image_val.images.astype(np.float32)
        val_y = ds.image_val.labels
        calibration = ds.image_train.images[datasets.balanced_indices(
            train_y, options.calibration_per_class, rng)].astype(np.float32)
    schedule_options = config.train
    train_config = dataclasses.replace(config, train=dataclasses.replace(schedule_options, modality_dropout=0.0))
    steps = steps_per_epoch(ds, config)
    epochs = schedule_options.epochs
    batches = _SingleHead(FusionBatches(_only(ds, task, config), train_config, steps=steps, epoch_seed=config.seed),
                          input_name, task)
    schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate=schedule_options.learning_rate,
                                                      decay_steps=steps * epochs, alpha=COSINE_DECAY_FLOOR)
    smoothing = (schedule_options.command_label_smoothing if task == "command"
                 else schedule_options.label_smoothing)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule,
                                                   weight_decay=schedule_options.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                  weighted_metrics=["categorical_accuracy"])
    callbacks = []
    validation_data = None
    if val_y.size:
        validation_data = (val_x, keras.utils.to_categorical(val_y, len(labels)))
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_categorical_accuracy", mode="max",
                                                       patience=schedule_options.patience,
                                                       restore_best_weights=True))
    started = time.perf_counter()
    log.info("training reference %s: %d epochs x %d steps ...", name, epochs, steps)
    history = model.fit(batches, epochs=epochs, validation_data=validation_data, callbacks=[
        *callbacks, *([] if verbose else [_EpochLines(name, epochs)])], verbose=verbose)
    val_accuracy = float("nan")
    if val_y.size:
        probs = model.predict(val_x, batch_size=256, verbose=0)
        val_accuracy = float(np.mean(probs.argmax(-1) == val_y))
    log.info("reference %s: validation accuracy %.4f, %.0f s", name, val_accuracy, time.perf_counter() - started)
    return ReferenceModel(name=name, task=task, model=model, labels=tuple(labels), val_accuracy=val_accuracy,
                          epochs_run=len(history.history.get("loss", [])), calibration=calibration)


# ----------------------------------------------------------------------------- conversion


def convert_reference(ref: ReferenceModel, out_dir: str | Path, *, frontend: Mapping[str, Any],
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Full-integer int8 ``NAME.tflite`` (one signature) + ``NAME.json`` sidecar in ``out_dir``."""
    import tensorflow as tf

    from edgesense.quantize.convert import check_builtin_ops

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = ref.model
    input_name = "audio_features" if ref.task == "command" else "image"
    shape = (1,) + tuple(int(s) for s in model.inputs[0].shape[1:])

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)])
    def serving(x):
        return {OUTPUT_NAME: model(x, training=False)}

    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in model.weights]
    holder.function = serving
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.get_concrete_function()], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration = ref.calibration

    def representative():
        for x in calibration:
            yield {input_name: x[None].astype(np.float32)}

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        data = bytes(converter.convert())
    check_builtin_ops(data, ref.name)
    path = out_dir / f"{ref.name}.tflite"
    sidecar = {
        "format_version": SIDECAR_FORMAT_VERSION,
        "name": ref.name,
        "task": ref.task,
        "labels": list(ref.labels),
        "input": {"name": input_name, "shape": list(shape)},
        "output": OUTPUT_NAME,
        "frontend": dict(frontend),
        "params": count_params(model),
        "macs": count_macs(model),
        "quantization": {"mode": "int8", "calibration_samples": int(len(calibration))},
        "metrics": {"val_accuracy_float": finite_or_none(ref.val_accuracy), "epochs_run": ref.epochs_run},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "converter": {"tensorflow": tf.__version__},
        **dict(extra or {}),
    }
    text = json.dumps(sidecar, indent=2, default=str) + "\n"
    # Whole or not at all, the sidecar last: a bench killed here (or another one reading the folder) never finds
    # part of a model, nor the sidecar of the model it replaces, whose fingerprint would vouch for it.
    replace_files({path: lambda partial: partial.write_bytes(data),
                   path.with_suffix(".json"): lambda partial: partial.write_text(text)})
    log.info("wrote %s (%d bytes)", path, len(data))
    return path


def finite_or_none(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded, or ``None`` when it is not a number (an accuracy without validation items): a sidecar
    or report.json holding ``NaN`` is not JSON (``jq``, JavaScript and strict parsers refuse it)."""
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def load_sidecar(tflite_path: str | Path) -> dict[str, Any]:
    """The JSON sidecar next to a reference ``.tflite``."""
    path = Path(tflite_path).with_suffix(".json")
    if not path.is_file():
        raise ValueError(f"{tflite_path}: no sidecar {path.name} next to it")
    return json.loads(path.read_text())


def training_fingerprint(**parts: Any) -> str:
    """A short hash of what a model next to the references was trained from (its sidecar's
    ``fingerprint``: the model is reused while it matches)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


#: Sections of a training config that only the student (its architecture) or its teachers read:
#: the references train without them, so they stay out of the fingerprint.
STUDENT_ONLY_SECTIONS = ("name", "model", "audio_teacher", "vision_teacher")
#: Fields of ``bank`` that only the cached bank reads (the references train per step, which reads
#: the rest: word placement, partial words, background silence, real rooms).
_BANK_ONLY_FIELDS = ("variants", "silence_per_variant", "other_speech_per_variant")


#: Fields of ``train`` that only the student's run reads: the references train from scratch on
#: hard labels (no ``--init-from`` parts to freeze, no teacher's soft targets).
_STUDENT_ONLY_TRAIN_FIELDS = ("frozen_parts", "distill_weight", "scene_distill_weight", "distill_temperature")


#: Data fields that say where files go, not what the references learn from.
_PLACE_ONLY_DATA_FIELDS = ("cache_dir",)


#: Fields the references never read (the student's teachers, hint, checkpoint rule, weight averaging,
#: batch threads, distribution strategy and calibration; its modality dropout, which the references set
#: to 0): a fingerprint sees each at its default value, whatever the config says, rather than without
#: it, so the fingerprints written before they were named here (the shipped references') still match.
_UNREAD_DATA_FIELDS = ("teacher_models", "calibration_per_class")
_UNREAD_TRAIN_FIELDS = ("modality_dropout", "embedding_hint_weight", "embedding_hint_talk", "scene_distill_views",
                        "ema_momentum", "checkpoint_metric", "workers", "strategy")


def _contents(path: Path) -> str | None:
    """A short hash of what a data path holds, read cheaply: the sorted relative paths and sizes of
    the files under a folder (:func:`edgesense.train.pools.visible_files`: hidden entries, which no
    loader reads, left out), or a file's size; ``None`` when nothing is there. No file is read, so a file
    rewritten at its size keeps it (``--force`` retrains)."""
    if path.is_file():
        listing = [("", path.stat().st_size)]
    elif path.is_dir():
        listing = []
        for file in visible_files(path):
            try:
                size = file.stat().st_size
            except OSError:  # a broken link
                continue
            listing.append((file.relative_to(path).as_posix(), size))
        listing.sort()
    else:
        return None
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()[:16]


def _data_paths(value: Any) -> Any:
    """A data field with each path replaced by its last component and a hash of what it holds
    (:func:`_contents`): the same data in a checkout somewhere else keeps its fingerprint, other
    data at the same place (or changed data) does not."""
    if isinstance(value, Path):
        return {"name": value.name, "contents": _contents(value)}
    if isinstance(value, tuple) and value and all(isinstance(v, Path) for v in value):
        return [_data_paths(v) for v in value]
    return value


def config_identity(config: TrainConfig) -> dict[str, Any]:
    """``config`` as a fingerprint sees it: its fields, with its data folders by name and what they hold
    (:func:`_data_paths`) instead of where they lie, and without where its caches live."""
    inputs = config.to_dict()
    inputs["data"] = {f.name: _data_paths(getattr(config.data, f.name)) for f in dataclasses.fields(config.data)
                      if f.name not in _PLACE_ONLY_DATA_FIELDS}
    return inputs


def reference_fingerprint(config: TrainConfig, options: ReferenceOptions) -> str:
    """The fingerprint of what the references train from: ``config`` (:func:`config_identity`) without
    :data:`STUDENT_ONLY_SECTIONS` and the bank-only and student-only training fields, the fields they never
    read at their defaults (:data:`_UNREAD_TRAIN_FIELDS`, :data:`_UNREAD_DATA_FIELDS`), and ``options``."""
    inputs = {k: v for k, v in config_identity(config).items() if k not in STUDENT_ONLY_SECTIONS}
    data_defaults = {f.name: f.default for f in dataclasses.fields(DataConfig)}
    inputs["data"].update({k: _data_paths(data_defaults[k]) for k in _UNREAD_DATA_FIELDS})
    train_defaults = to_mapping(TrainOptions())
    inputs["bank"] = {k: v for k, v in inputs["bank"].items() if k not in _BANK_ONLY_FIELDS}
    inputs["train"] = {k: train_defaults[k] if k in _UNREAD_TRAIN_FIELDS else v for k, v in inputs["train"].items()
                       if k not in _STUDENT_ONLY_TRAIN_FIELDS}
    return training_fingerprint(config=inputs, options=dataclasses.asdict(options))


def build_references(config: TrainConfig, out_dir: str | Path, options: ReferenceOptions = ReferenceOptions(), *,
                     names: tuple[str, ...] = REFERENCE_NAMES, force: bool = False) -> dict[str, Path]:
    """Train and convert the references (once): reused from ``out_dir`` while their sidecars'
    fingerprint (:func:`reference_fingerprint`) matches. Returns {name: .tflite path}."""
    out_dir = Path(out_dir)
    fingerprint = reference_fingerprint(config, options)
    wanted = [n for n in names if (n != KWS_DSCNN or config.data.speech_commands)
              and (n != VWW_MOBILENET or config.data.scenes is not None)]
    paths: dict[str, Path] = {}
    todo = []
    for name in wanted:
        path = out_dir / f"{name}.tflite"
        try:
            cached = not force and path.is_file() and load_sidecar(path).get("fingerprint") == fingerprint
        except (ValueError, json.JSONDecodeError):
            cached = False
        if cached:
            log.info("reference %s: cached at %s", name, path)
            paths[name] = path
        else:
            todo.append(name)
    if not todo:
        return paths
    ds = load_dataset(config)
    for name in todo:
        ref = train_reference(name, ds, config, options)
        frontend = (config.audio_frontend.to_dict() if ref.task == "command" else config.image_frontend.to_dict())
        paths[name] = convert_reference(ref, out_dir, frontend=frontend, extra={
            "fingerprint": fingerprint,
            "training": {"data": {k: v for k, v in ds.summary.items() if k != "load_reports"},
                         "options": dataclasses.asdict(options)},
        })
    return paths
