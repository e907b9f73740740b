"""Quantization-aware fine-tuning (``edgesense quantize RUN --qat``).

For when post-training quantization loses more than the budget: the trained model is
fine-tuned for a few epochs on its own training data with every convolution and dense
kernel *fake-quantized* in the forward pass, so the weights settle where the int8 grid
costs little. Gradients are taken at the quantized weights and applied to float shadow
weights (the straight-through estimator). The grid is the converter's own: symmetric
int8, per output channel for convolutions (which is unchanged when batch norm is folded
in, a per-channel scale) and for dense layers too (TF 2.21's converter gives every
``FULLY_CONNECTED`` kernel a scale per output unit; a per-tensor grid would be moved by up to
half a step at conversion). Activations are left to the post-training calibration that follows,
as in any conversion.

The result is a new run folder (``RUN-qat`` by default) that ``edgesense quantize``
converts as usual. A folder already there is refused before the fine-tuning starts unless
``force`` (``--force``), and even then only when it is a run folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgesense.schema.validate import from_mapping, require, require_kinds
from edgesense.train.runfolder import check_out_dir, staged_run

log = logging.getLogger(__name__)

INT8_MAX = 127
QAT_SUFFIX = "-qat"


@dataclass(frozen=True, kw_only=True)
class QatOptions:
    """The fine-tuning schedule."""

    epochs: int = 3
    steps_per_epoch: int | None = None
    learning_rate: float = 2e-4

    def __post_init__(self) -> None:
        require_kinds(self)
        require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        require(self.steps_per_epoch is None or (isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 1),
                "steps_per_epoch", "None or an integer >= 1", self.steps_per_epoch)
        require(0 < self.learning_rate < 1, "learning_rate", "in (0, 1)", self.learning_rate)


def fake_quantize(kernel: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """Round ``kernel`` to the symmetric int8 grid (per last-axis channel, or per tensor) and back."""
    w = np.asarray(kernel, dtype=np.float32)
    if per_channel:
        flat = w.reshape(-1, w.shape[-1])
        peak = np.abs(flat).max(axis=0)
    else:
        peak = np.abs(w).max()
    scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    return (np.clip(np.round(w / scale), -INT8_MAX, INT8_MAX) * scale).astype(np.float32)


def _quantized_kernels(model) -> Iterator[tuple[object, bool]]:
    """(layer, per_channel) for every kernel the converter quantizes, nested models included."""
    from keras import layers

    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _quantized_kernels(layer)
        elif isinstance(layer, layers.DepthwiseConv2D):
            yield layer, True
        elif isinstance(layer, layers.Conv2D):
            yield layer, True
        elif isinstance(layer, layers.Dense):
            yield layer, True  # per output unit: the converter's FULLY_CONNECTED weights are per channel


def _depthwise_view(layer, kernel: np.ndarray) -> np.ndarray:
    """A depthwise kernel (h, w, in, multiplier) as (h, w, in * multiplier): TFLite's channel axis."""
    from keras import layers

    return kernel.reshape(*kernel.shape[:2], -1) if isinstance(layer, layers.DepthwiseConv2D) else kernel


def _quantize_layer_kernel(layer, per_channel: bool, kernel: np.ndarray) -> np.ndarray:
    return fake_quantize(_depthwise_view(layer, kernel), per_channel=per_channel).reshape(kernel.shape)


def _load_training_config(run_dir: Path):
    from edgesense.train.config import TrainConfig

    run_json = run_dir / "run.json"
    try:
        info = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_json}: cannot read the run's description ({exc})") from None
    if not isinstance(info, dict):  # it raised AttributeError (a traceback)
        raise ValueError(f"{run_json}: expected a JSON object, got {type(info).__name__}")
    if not isinstance(info.get("config"), dict) or "data" not in info["config"]:
        raise ValueError(f"{run_json}: config: --qat fine-tunes on the run's training data, but this run "
                         "records no training config (a run folder written by 'edgesense train' has one)")
    return info, from_mapping(TrainConfig, info["config"], source=f"{run_json}: config")


def default_out_dir(run_dir: str | Path) -> Path:
    """Where :func:`qat_finetune` writes the fine-tuned run by default: ``RUN-qat`` beside ``RUN``
    (for ``.`` or a path ending in ``..``, beside the folder they name)."""
    run_dir = Path(run_dir)
    if run_dir.name in ("", ".."):
        run_dir = run_dir.resolve()
    return run_dir.with_name(run_dir.name + QAT_SUFFIX)


def qat_finetune(run_dir: str | Path, out_dir: str | Path | None = None,
                 options: QatOptions = QatOptions(), *, force: bool = False) -> Path:
    """Fine-tune ``run_dir``'s model with fake-quantized kernels; write a new run folder and return it.
    An ``out_dir`` (default ``RUN-qat``) that holds files is refused, before any training, unless
    ``force`` (and it is a run folder)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(run_dir)
    require(out_dir.resolve() != run_dir.resolve(), "out_dir", "a folder other than the run's", str(out_dir))
    check_out_dir(out_dir, force, flag="out_dir", force_flag="force=True")

    import keras

    from edgesense.train.config import derived_seed
    from edgesense.train.model import OUTPUT_COMMAND, OUTPUT_SCENE
    from edgesense.train.trainer import MODEL_FILE, FusionBatches, HeadValidation, features_of, load_dataset

    info, config = _load_training_config(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise ValueError(f"{run_dir}: no {MODEL_FILE}; expected a run folder written by 'edgesense train'")
    model = keras.models.load_model(model_path)
    keras.utils.set_random_seed(config.seed)

    try:
        ds = load_dataset(config)
    except ValueError as exc:  # its data moved or changed since training: said as the run's, not a bare path
        raise ValueError(f"{run_dir / 'run.json'}: config.data: expected the run's training data to fine-tune on, "
                         f"got {exc}") from None
    steps = options.steps_per_epoch or max(1, max(ds.image_train.labels.size, ds.audio_train.labels.size)
                                           // config.train.batch_size)
    batches = FusionBatches(ds, config, steps=steps, epoch_seed=derived_seed(config.seed, 1))
    # Each head's smoothing as the run trained it (train.label_smoothing is the scene head's only).
    smoothing = {OUTPUT_COMMAND: config.train.command_label_smoothing, OUTPUT_SCENE: config.train.label_smoothing}
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=options.learning_rate),
                  loss={head: keras.losses.CategoricalCrossentropy(label_smoothing=value)
                        for head, value in smoothing.items()})
    kernels = list(_quantized_kernels(model))
    validation = HeadValidation(features_of(ds.audio_val.clips, config), ds.audio_val.labels,
                                ds.image_val.images, ds.image_val.labels)
    validation.set_model(model)
    before = validation.evaluate()

    for epoch in range(options.epochs):
        losses = []
        for step in range(steps):
            x, y, w = batches[step]
            shadow = [layer.kernel.numpy() for layer, _ in kernels]
            quantized = [_quantize_layer_kernel(layer, pc, k) for (layer, pc), k in zip(kernels, shadow)]
            for (layer, _), q in zip(kernels, quantized):
                layer.kernel.assign(q)
            losses.append(float(np.asarray(model.train_on_batch(x, y, w, return_dict=True)["loss"])))
            # Straight-through: the step taken at the quantized point moves the float shadow.
            for (layer, _), s, q in zip(kernels, shadow, quantized):
                layer.kernel.assign(s + (layer.kernel.numpy() - q))
        batches.on_epoch_end()
        log.info("qat epoch %d/%d: loss %.4f", epoch + 1, options.epochs, float(np.mean(losses)))

    after = validation.evaluate()
    log.info("qat: validation before %s, after %s", before, after)
    check_out_dir(out_dir, force, flag="out_dir", force_flag="force=True")  # again: the fine-tuning took a while
    info["name"] = f"{info.get('name', run_dir.name)}{QAT_SUFFIX}"
    info.setdefault("metrics", {})["qat"] = {"options": asdict(options), "kernels": len(kernels),
                                            "validation_before": before, "validation_after": after}
    # Written whole or not at all, as a trained run: into a hidden folder beside out_dir, moved there once complete.
    # (It emptied out_dir first and copied the run in: Ctrl-C or a full disk then lost the earlier fine-tuned run, or
    # left the run's own model.keras and run.json there, a folder that read as a complete fine-tuned run.)
    with staged_run(out_dir, force, flag="out_dir", force_flag="force=True") as staging:
        shutil.copytree(run_dir, staging, dirs_exist_ok=True)
        model.save(staging / MODEL_FILE)
        (staging / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return out_dir
