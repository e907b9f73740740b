"""Benchmark references: the MLPerf Tiny models on the same data, and the compute comparison."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgesense.bench.accuracy import classification_report, item_correctness
from edgesense.bench.latency import COMMAND_HOPS_PER_S, SCENE_FRAMES_PER_S, _Timer
from edgesense.bench.options import BenchOptions, _progress
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.runtime.interpreter import InterpreterOptions, make_interpreter
from edgesense.runtime.model import EdgeModel
from edgesense.runtime.quant import QuantParams, dequantize, quantize
from edgesense.schema.validate import require
from edgesense.types import is_command_word

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- references


class ReferenceRunner:
    """A single-signature int8 reference ``.tflite`` with its JSON sidecar, on the LiteRT interpreter."""

    def __init__(self, path: Path, options: InterpreterOptions) -> None:
        self.path = Path(path)
        sidecar = self.path.with_suffix(".json")
        if not sidecar.is_file():
            raise ValueError(f"{path}: no sidecar {sidecar.name} next to it")
        self.info = json.loads(sidecar.read_text())
        for key in ("name", "task", "labels", "input"):
            require(key in self.info, f"{sidecar}: {key}", "present", None)
        name = self.info["name"]  # it names the reference's files in the bench's --out (confusion_NAME.png)
        require(isinstance(name, str) and name.strip() not in ("", ".", "..") and not set(name) & set("/\\\0:"),
                f"{sidecar}: name", "a plain name (no '/', '\\' or ':'; it names files in --out)", name)
        self.interpreter = make_interpreter(self.path, options)
        keys = list(self.interpreter.get_signature_list())
        require(len(keys) == 1, f"{path}: signatures", "exactly one", keys)
        self.runner = self.interpreter.get_signature_runner(keys[0])
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        self.input_name = next(iter(inputs))
        self.input_shape = tuple(inputs[self.input_name]["shape"])
        self.in_q = QuantParams.from_detail(inputs[self.input_name])
        self.output_name = next(iter(outputs))
        self.out_q = QuantParams.from_detail(outputs[self.output_name])
        self.size_bytes = self.path.stat().st_size

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def task(self) -> str:
        return str(self.info["task"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = quantize(np.asarray(x, np.float32).reshape(self.input_shape), self.in_q)
        return dequantize(self.runner(**{self.input_name: q})[self.output_name], self.out_q).reshape(-1)


def find_references(folder: Path, options: InterpreterOptions) -> list[ReferenceRunner]:
    if not Path(folder).is_dir():
        return []
    out = []
    for path in sorted(Path(folder).glob("*.tflite")):
        try:
            out.append(ReferenceRunner(path, options))
        except ValueError as exc:
            logger.warning("skipping reference %s: %s", path, exc)
    return out


def rows_it_learned(info: Mapping[str, Any], root: Path | None, index: Any, rows: Sequence[Any]) -> int:
    """How many of ``rows`` (items of ``index``, the folder ``root`` a benchmark scores) the reference or teacher
    whose sidecar is ``info`` trained on: the training part of the split its sidecar records
    (``training.data.split``), where it trained on that same folder; 0 where it records no split or trained on
    other folders (nothing to compare). A reference scored on its own training clips or photos (``--split all``
    on its folder, or the test part of another split) reads better than it is, beside a model scored fairly."""
    from edgesense.train.data import SplitSpec

    training = (info.get("training") or {}).get("data") if isinstance(info.get("training"), Mapping) else None
    if root is None or not isinstance(training, Mapping) or not isinstance(training.get("split"), Mapping):
        return 0
    task = info.get("task")
    source = training.get("speech_commands") if task == "command" else training.get("scenes")
    sources = source if isinstance(source, list) else [source] if source else []
    if Path(root).resolve() not in {Path(str(p)).resolve() for p in sources}:
        return 0
    try:
        spec = SplitSpec.from_metadata({"data": training}, None)
    except (TypeError, ValueError):  # a sidecar's split of other fields: nothing to compare
        return 0
    if task == "command":
        trained = {(it.path, it.offset_ms) for it in spec.split_clips(index)["training"]}
        return sum((it.path, it.offset_ms) in trained for it in rows)
    trained_photos = {it.path for it in spec.split_photos(index)["training"]}
    return sum(it.path in trained_photos for it in rows)


def evaluate_reference(ref: ReferenceRunner, *, clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                       frames: Sequence[np.ndarray] | None, frame_labels: Sequence[str] | None,
                       audio_frontend) -> dict[str, Any] | None:
    """The reference's row on the clips or photos of its task (``None`` without them)."""
    scored = score_reference(ref, clips=clips, clip_labels=clip_labels, frames=frames, frame_labels=frame_labels,
                             audio_frontend=audio_frontend)
    return None if scored is None else scored[0]


def score_reference(ref: ReferenceRunner, *, clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                    frames: Sequence[np.ndarray] | None, frame_labels: Sequence[str] | None,
                    audio_frontend) -> tuple[dict[str, Any], np.ndarray] | None:
    """(the reference's row, each item named right or not in the order given: for the paired test against the
    model on the same items); ``None`` without items of its task."""
    timer = _Timer(("audio_frontend", "inference") if ref.task == "command" else ("inference",))
    labels = tuple(ref.info["labels"])
    lookup = {label: i for i, label in enumerate(labels)}
    true, pred = [], []
    if ref.task == "command" and clips is not None:
        for clip, label in _progress(zip(clips, clip_labels), len(clips), f"{ref.name} (commands)"):
            features = timer.time("audio_frontend", log_mel_spectrogram, fit_clip(clip, audio_frontend),
                                  audio_frontend)
            probs = timer.time("inference", ref, features)
            true.append(lookup[label])
            pred.append(int(np.argmax(probs)))
    elif ref.task == "scene" and frames is not None:
        for frame, label in _progress(zip(frames, frame_labels), len(frames), f"{ref.name} (scenes)"):
            probs = timer.time("inference", ref, frame)
            true.append(lookup[label])
            pred.append(int(np.argmax(probs)))
    else:
        return None
    report = classification_report(np.array(true), np.array(pred), labels)
    return ({"task": ref.task, ref.task: report, "latency_ms": timer.summary(),
             "model": {"bytes": ref.size_bytes, "params": ref.info.get("params"), "macs": ref.info.get("macs"),
                       "path": str(ref.path)},
             "validation_accuracy_float": _finite(ref.info.get("metrics", {}).get("val_accuracy_float")),
             "architecture_note": _REFERENCE_NOTES.get(ref.name, "")},
            item_correctness(np.array(true, np.int64), np.array(pred, np.int64)))


def _finite(x: Any) -> Any:
    """A sidecar's figure, ``None`` for the ``NaN`` that sidecars written before it was ``null`` hold
    (``NaN`` in report.json is not JSON)."""
    return None if isinstance(x, float) and np.isnan(x) else x


_REFERENCE_NOTES = {
    "kws_dscnn": "MLPerf Tiny KWS DS-CNN (conv 64 10x4/2, 4 DS blocks of 64, avg pool, dense); input is our 49x40 "
                 "log-mel instead of the published 49x10 MFCC, so the data path is identical to ours",
    "vww_mobilenet_v1": "MLPerf Tiny Visual Wake Words MobileNetV1, alpha 0.25, 96x96, N scene classes instead of 2",
}


def compute_comparison(ours_macs: Mapping[str, Any], latency: Mapping[str, Mapping[str, Any]],
                       references: Mapping[str, Mapping[str, Any]], *, command_hops_per_s: float = COMMAND_HOPS_PER_S,
                       scene_frames_per_s: float = SCENE_FRAMES_PER_S) -> dict[str, Any]:
    """Ours vs the references per second of stream at the device's rates (by default the loop's: 10
    command hops and 5 scene frames per second; ``rates_per_s`` in the result).

    Ours: each hop runs audio_encoder + fusion, each frame image_encoder + fusion. Theirs: each hop
    the KWS model, each frame the VWW model. Frontends are the same code for both and listed apart
    (those of the parts compared). A figure that is missing (a MAC count or a latency not known)
    stays ``None`` through every sum and ratio it enters: no total or ratio of partial numbers.
    """
    def mean(stage_stats: Mapping[str, Any] | None) -> float | None:
        return None if not stage_stats or stage_stats.get("mean") is None else float(stage_stats["mean"])

    fusion_macs = _count(ours_macs.get("fusion_head"))
    parts = {}
    frontends = []
    for part, task, rate, encoder, frontend in (
            ("commands", "command", command_hops_per_s, "audio_encoder", "audio_frontend"),
            ("scenes", "scene", scene_frames_per_s, "image_encoder", "image_preprocess")):
        reference = next((r for r in references.values() if r.get("task") == task), None)
        if reference is None:
            continue
        parts[part] = {
            "rate_per_s": rate,
            "ours_macs_per_s": _mul(rate, _add(_count(ours_macs.get(encoder)), fusion_macs)),
            "theirs_macs_per_s": _mul(rate, _count(reference["model"].get("macs"))),
            "ours_ms_per_s": _mul(rate, _add(mean(latency.get(encoder)), mean(latency.get("fusion")))),
            "theirs_ms_per_s": _mul(rate, mean(reference["latency_ms"].get("inference"))),
        }
        frontends.append(_mul(rate, mean(latency.get(frontend))))
    if len(parts) == 2:
        parts["total"] = {key: _add(parts["commands"][key], parts["scenes"][key])
                          for key in ("ours_macs_per_s", "theirs_macs_per_s", "ours_ms_per_s", "theirs_ms_per_s")}
    for values in parts.values():
        values["macs_ratio"] = _ratio(values["ours_macs_per_s"], values["theirs_macs_per_s"])
        values["ms_ratio"] = _ratio(values["ours_ms_per_s"], values["theirs_ms_per_s"])
    parts["frontend_ms_per_s"] = functools.reduce(_add, frontends) if frontends else None
    parts["rates_per_s"] = {"command_hops": command_hops_per_s, "scene_frames": scene_frames_per_s}
    return parts


def _count(x: Any) -> int | None:
    """A MAC count as an integer; ``None`` (not 0) when it is not known."""
    return None if x is None else int(x)


def _add(a, b):
    """``a + b``; ``None`` when either is: a sum of partial figures is no figure."""
    if a is None or b is None:
        return None
    return round(a + b, 4) if isinstance(a, float) or isinstance(b, float) else a + b


def _mul(k, a):
    return None if a is None else round(k * a, 4)


def _ratio(a, b):
    return None if a is None or not b else float(f"{a / b:.4g}")


def reference_train_config(options: BenchOptions, model: EdgeModel | None = None):
    """The TrainConfig the references and teachers learn from: ``--reference-config``, or the
    benchmark's own folders split as ``model`` records its training split (``--salt`` replacing its
    salt, as ``--split testing`` evaluates it: the references never train on the speakers or photos
    the rows are scored on), with ``model``'s command words and audio frontend (a model of a user's own
    words is compared with references of those words)."""
    from edgesense.bench import reference_models as references
    from edgesense.train.config import load_train_config
    from edgesense.train.data import SplitSpec
    if options.reference_config is not None:
        return load_train_config(options.reference_config)
    if model is None:
        return references.reference_config(speech_commands=options.speech_commands, scenes=options.scenes,
                                           salt=options.salt, noise=tuple(options.noise))
    return references.reference_config(
        speech_commands=options.speech_commands, scenes=options.scenes, noise=tuple(options.noise),
        words=tuple(w for w in model.command_labels if is_command_word(w)), audio_frontend=model.audio_frontend,
        split=SplitSpec.from_metadata(model.metadata, options.salt or None))


def _build_references(options: BenchOptions, model: EdgeModel | None = None) -> dict[str, Path]:
    from edgesense.bench import reference_models as references
    config = reference_train_config(options, model)
    if options.quick:
        return references.build_references(references.quick_schedule(config), options.references_dir,
                                           references.ReferenceOptions.quick())
    return references.build_references(config, options.references_dir, references.ReferenceOptions())
