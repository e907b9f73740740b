"""``edgesense bench``: offline accuracy and latency of a deployed model, side by side with references.

What it measures (``report.json``, ``report.md`` and PNG figures in ``--out``):

* **commands**: every clip of ``--speech-commands`` (or its held-out split, see below) through
  the device path: ``fit_clip`` -> log-mel -> ``encode_audio`` -> ``fuse(audio, None)``
  (camera absent). Accuracy, per-class accuracy, confusion matrix.
* **scenes**: every photo of ``--scenes`` (or its held-out split): ``preprocess_frame`` ->
  ``encode_image`` -> ``fuse(None, image)`` (microphone absent); and a second figure with
  both present, the audio being ambient noise (``--noise`` / ``_background_noise_`` /
  coloured noise), which should not change the answer.
* **latency** per stage (audio_frontend, audio_encoder, image_preprocess, image_encoder,
  fusion): p50/p95/p99/mean of wall-clock times, one histogram panel per stage.
* **references** (``--train-references`` builds them once into ``--references``): the MLPerf
  Tiny KWS DS-CNN and VWW MobileNetV1 (``train/references.py``), evaluated on the same data
  with the same interpreter and thread count; compute per second of stream at 10 command
  hops and 5 scene frames per second, ours vs theirs, in MACs/s and measured ms/s.
* **streaming commands** (:mod:`edge.streaming_eval`): a long stream (30 min; 2 min with
  ``--quick``) of held-out clips over background noise through the device's
  ``CommandRecognizer``; hit rate, false accepts/hour, detection latency, and a
  threshold x suppression sweep. The recommended setting is chosen on a *tuning* stream
  built from other speakers (the validation split with ``--split testing``; otherwise half
  the speakers by hash) and reported on the evaluation stream.
* **fusion study** (``--fusion-study``, :mod:`train.fusion_study`).

Splits: ``--split all`` evaluates the whole folder, except that a Speech Commands folder
with a ``testing_list.txt`` is restricted to the clips it names; ``--split testing``
selects the held-out split exactly as training made it (speakers hashed with ``--salt``,
validation 10 %, testing 20 %; photos by file-name hash, validation 10 %, testing 15 %,
the percentages of train/configs/shared_data.yaml).

Deployed models run on the LiteRT interpreter only. Desktop-only parts (data loaders with
the training splits, the references, the fusion study) are imported by name at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import math
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from edge.audio_io import read_wav
from edge.features import fit_clip, log_mel_spectrogram, preprocess_frame
from edge.interpreter import InterpreterOptions, make_interpreter
from edge.model import EdgeModel
from edge.quant import QuantParams, dequantize, quantize
from edge.streaming_eval import (PosteriorCache, StreamOptions, SweepOptions, build_stream, evaluate_stream,
                                 plot_sweep, recommend, stream_posteriors, sweep, update_firmware_config)
from edge.types import SILENCE_LABEL, UNKNOWN_LABEL
from edge.schema import require

__all__ = ["BenchOptions", "STAGES", "COMMAND_HOPS_PER_S", "SCENE_FRAMES_PER_S", "run_bench", "add_arguments", "run"]

logger = logging.getLogger(__name__)

STAGES = ("audio_frontend", "audio_encoder", "image_preprocess", "image_encoder", "fusion")
COMMAND_HOPS_PER_S = 10
SCENE_FRAMES_PER_S = 5
SPLITS = ("all", "testing")
#: The split percentages of train/configs/shared_data.yaml (what --split testing reproduces).


@dataclass(frozen=True, kw_only=True)
class SplitSpec:
    """How training split the data: ``--split testing`` re-makes exactly its held-out part.
    Read from the model's metadata (``data.split``, written by the trainer); these defaults
    are train/configs/shared_data.yaml's, for models without it."""

    speaker_salt: str = ""
    validation_percent: float = 10.0
    testing_percent: float = 20.0
    image_validation_percent: float = 10.0
    image_testing_percent: float = 15.0

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], salt: str | None) -> "SplitSpec":
        """The model's recorded split; ``salt`` (the --salt option), when given, overrides its salt."""
        recorded = dict((metadata.get("data") or {}).get("split") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in recorded.items() if k in known})
        return dataclasses.replace(spec, speaker_salt=salt) if salt else spec
QUICK_PER_CLASS = 12
QUICK_STREAM_S, FULL_STREAM_S = 120.0, 1800.0
QUICK_TUNE_STREAM_S, FULL_TUNE_STREAM_S = 60.0, 900.0
QUICK_FUSION_PER_CLASS = 10
DEFAULT_REFERENCES_DIR = Path("models/references")
_MS_PER_S = 1000.0
_PERCENTILES = (50, 95, 99)




@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What to benchmark. Paths are folders unless said otherwise."""

    model_path: Path
    out_dir: Path = Path("bench")
    speech_commands: Path | None = None
    scenes: Path | None = None
    av: Path | None = None
    noise: tuple[Path, ...] = ()
    threads: int = 1
    quick: bool = False
    split: str = "all"
    salt: str = ""
    train_references: bool = False
    references_dir: Path = DEFAULT_REFERENCES_DIR
    reference_config: Path | None = None
    fusion_study: bool = False
    streaming: bool = True
    stream_s: float | None = None
    write_config: Path | None = None
    max_per_class: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 1,
                 "threads", "an integer >= 1", self.threads)
        require(self.split in SPLITS, "split", f"one of {', '.join(SPLITS)}", self.split)
        require(self.speech_commands is not None or self.scenes is not None or self.av is not None
                 or self.fusion_study, "speech_commands", "at least one of speech_commands, scenes, av", None)
        require(self.max_per_class is None or (isinstance(self.max_per_class, int) and self.max_per_class >= 1),
                 "max_per_class", "None or an integer >= 1", self.max_per_class)
        require(self.stream_s is None or (isinstance(self.stream_s, (int, float)) and self.stream_s >= 20),
                 "stream_s", "None or a number >= 20", self.stream_s)
        require(self.write_config is None or self.speech_commands is not None, "write_config",
                 "--speech-commands too (the recommendation comes from the streaming evaluation)", self.write_config)
        for name in ("speech_commands", "scenes", "av"):
            path = getattr(self, name)
            require(path is None or Path(path).is_dir(), name, "an existing folder", str(path))

    @property
    def per_class_cap(self) -> int | None:
        return self.max_per_class if self.max_per_class is not None else (QUICK_PER_CLASS if self.quick else None)


# --------------------------------------------------------------------------- helpers


def _desktop(module: str):
    """A desktop-only module (train.*), imported by name; a clear error when its extra is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root in ("tensorflow", "keras", "tqdm", "matplotlib", "train", "quantize", "yaml"):
            raise RuntimeError(f"this part of the benchmark needs the desktop extra ({exc.name} is not "
                               f"installed): pip install 'edgesense[train]'") from exc
        raise


def _progress(iterable, total: int, what: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=what, unit="item", leave=False, disable=None)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/mean/max (ms) and the sample count."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "n": 0}
    out: dict[str, Any] = {f"p{p}": round(float(np.percentile(x, p)), 4) for p in _PERCENTILES}
    out.update(mean=round(float(x.mean()), 4), max=round(float(x.max()), 4), n=int(x.size))
    return out


def classification_report(true: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and counts, and the confusion matrix (rows: true)."""
    true, pred = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    k = len(labels)
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (true, pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        n = int(matrix[i].sum())
        per_class[label] = {"accuracy": round(float(matrix[i, i] / n), 4) if n else None, "count": n}
    return {"accuracy": round(float(np.mean(true == pred)), 4) if true.size else None, "count": int(true.size),
            "per_class": per_class, "confusion": matrix.tolist(), "labels": list(labels)}


class _Timer:
    """Collects wall-clock milliseconds per stage."""

    def __init__(self, stages: Sequence[str]) -> None:
        self.samples: dict[str, list[float]] = {s: [] for s in stages}

    def time(self, stage: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.samples.setdefault(stage, []).append((time.perf_counter() - start) * _MS_PER_S)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        return {stage: latency_summary(v) for stage, v in self.samples.items()}


def _noise_recordings(paths: Sequence[Path], sample_rate_hz: int) -> list[np.ndarray]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(sorted(p.glob("*.wav")) if p.is_dir() else [p])
    out = []
    for f in files:
        try:
            out.append(read_wav(f, sample_rate_hz=sample_rate_hz))
        except (ValueError, OSError) as exc:
            logger.warning("skipping noise recording %s: %s", f, exc)
    return out


def _ambient_snippet(noise: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    if noise:
        rec = noise[int(rng.integers(len(noise)))]
        if rec.size < n:
            rec = np.tile(rec, n // max(rec.size, 1) + 1)
        start = int(rng.integers(0, rec.size - n + 1))
        x = rec[start:start + n].astype(np.float64)
    else:  # pink noise
        spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        x = np.fft.irfft(spectrum / np.sqrt(f), n=n)
    x = x - x.mean()
    level = 10 ** (rng.uniform(-45, -25) / 20)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * level).astype(np.float32)


def _cap(items: Sequence[Any], cap: int | None, seed: int) -> list[Any]:
    if cap is None:
        return list(items)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Any]] = {}
    for it in items:
        by_label.setdefault(it.label, []).append(it)
    out = []
    for group in by_label.values():
        out.extend(group[i] for i in sorted(rng.permutation(len(group))[:cap]))
    return out


# --------------------------------------------------------------------------- data selection


def select_command_items(options: BenchOptions, words: Sequence[str] | None = None,
                         split: SplitSpec | None = None) -> tuple[Any, list[Any], list[Any], str]:
    """(index, evaluation items, tuning items for the streaming threshold, how they were chosen).
    ``words``: the model's command words (default: the 10 standard ones); ``split``: how
    training split the data (default: the standard percentages with ``options.salt``)."""
    split = split or SplitSpec(speaker_salt=options.salt)
    data = _desktop("train.data")
    index = (data.load_speech_commands(options.speech_commands) if words is None
             else data.load_speech_commands(options.speech_commands, words=tuple(words)))
    if options.split == "testing":
        splits = index.split(validation_percent=split.validation_percent, testing_percent=split.testing_percent,
                             salt=split.speaker_salt)
        how = ("testing split (list files)" if index.has_list_files else
               f"testing split: speakers hashed with salt {split.speaker_salt!r}, validation "
               f"{split.validation_percent:g} %, testing {split.testing_percent:g} %")
        return index, splits["testing"], splits["validation"], how
    if index.has_list_files and any(v == "testing" for v in index.assigned.values()):
        items = [it for it in index.items if index.assigned.get(it.path.resolve()) == "testing"]
        how = "the clips named in testing_list.txt"
    else:
        items = list(index.items)
        how = "every clip of the folder"
        logger.warning("--split all: evaluating every clip of %s; if the model trained on any of them, use "
                       "--split testing --salt SALT", options.speech_commands)
    # Streaming threshold: tuned on half the speakers, reported on the other half.
    tune = [it for it in items if data.hash_percent(it.speaker, options.salt + "/stream-tuning") < 50.0]
    return index, items, tune, how


def select_scene_items(options: BenchOptions, split: SplitSpec | None = None) -> tuple[Any, list[Any], str]:
    split = split or SplitSpec(speaker_salt=options.salt)
    data = _desktop("train.data")
    index = data.load_image_folder(options.scenes)
    if options.split == "testing":
        items = data.split_image_items(index.items, validation_percent=split.image_validation_percent,
                                       testing_percent=split.image_testing_percent)["testing"]
        return index, items, (f"testing split: file-name hash, validation {split.image_validation_percent:g} %, "
                              f"testing {split.image_testing_percent:g} %")
    return index, list(index.items), "every photo of the folder"


# --------------------------------------------------------------------------- our model


def evaluate_commands(model: EdgeModel, clips: np.ndarray, labels: np.ndarray, timer: _Timer) -> dict[str, Any]:
    preds = np.empty(len(clips), np.int64)
    for i in _progress(range(len(clips)), len(clips), "commands (camera absent)"):
        features = timer.time("audio_frontend", log_mel_spectrogram, fit_clip(clips[i], model.audio_frontend),
                              model.audio_frontend)
        embedding = timer.time("audio_encoder", model.encode_audio, features)
        command, _ = timer.time("fusion", model.fuse, embedding, None)
        preds[i] = int(np.argmax(command))
    return classification_report(labels, preds, model.command_labels)


def _read_bgr(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        logger.warning("skipping unreadable image %s", path)
    return image


def evaluate_scenes(model: EdgeModel, items: Sequence[Any], classes: Sequence[str], timer: _Timer,
                    noise: Sequence[np.ndarray], seed: int
                    ) -> tuple[dict[str, Any], dict[str, Any], list[np.ndarray], list[str]]:
    """(microphone absent, with ambient audio, the preprocessed frames and their labels for the references)."""
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    missing = sorted(set(classes) - set(lookup))
    require(not missing, "scenes", f"class folders named like the model's scene labels {list(model.scene_labels)}",
             missing)
    rng = np.random.default_rng(seed)
    true, pred, pred_ambient, frames, frame_labels = [], [], [], [], []
    for item in _progress(items, len(items), "scenes (microphone absent)"):
        bgr = _read_bgr(item.path)
        if bgr is None:
            continue
        frame = timer.time("image_preprocess", preprocess_frame, bgr, model.image_frontend)
        embedding = timer.time("image_encoder", model.encode_image, frame)
        _, scene = timer.time("fusion", model.fuse, None, embedding)
        ambient = log_mel_spectrogram(_ambient_snippet(noise, model.audio_frontend.clip_samples, rng),
                                      model.audio_frontend)
        _, scene_with_audio = model.fuse(model.encode_audio(ambient), embedding)
        true.append(lookup[item.label])
        pred.append(int(np.argmax(scene)))
        pred_ambient.append(int(np.argmax(scene_with_audio)))
        frames.append(frame)
        frame_labels.append(item.label)
    labels = model.scene_labels
    return (classification_report(np.array(true), np.array(pred), labels),
            classification_report(np.array(true), np.array(pred_ambient), labels), frames, frame_labels)


def evaluate_av(model: EdgeModel, av_root: Path, cap: int | None, seed: int) -> dict[str, Any]:
    data = _desktop("train.data")
    index = data.load_av_folder(av_root)
    items = _cap(index.items, cap, seed)
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    true, preds = [], {"both": [], "image_only": [], "audio_only": []}
    for item in _progress(items, len(items), "audio-visual pairs"):
        bgr = _read_bgr(item.image_path)
        if bgr is None or item.label not in lookup:
            continue
        v = model.encode_image(preprocess_frame(bgr, model.image_frontend))
        a = model.encode_audio(log_mel_spectrogram(fit_clip(read_wav(item.audio_path), model.audio_frontend),
                                                   model.audio_frontend))
        true.append(lookup[item.label])
        for key, (ea, ev) in {"both": (a, v), "image_only": (None, v), "audio_only": (a, None)}.items():
            preds[key].append(int(np.argmax(model.fuse(ea, ev)[1])))
    return {key: classification_report(np.array(true), np.array(p), model.scene_labels) for key, p in preds.items()}


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


def evaluate_reference(ref: ReferenceRunner, *, clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                       frames: Sequence[np.ndarray] | None, frame_labels: Sequence[str] | None,
                       audio_frontend) -> dict[str, Any] | None:
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
    return {"task": ref.task, ref.task: report, "latency_ms": timer.summary(),
            "model": {"bytes": ref.size_bytes, "params": ref.info.get("params"), "macs": ref.info.get("macs"),
                      "path": str(ref.path)},
            "validation_accuracy_float": ref.info.get("metrics", {}).get("val_accuracy_float"),
            "architecture_note": _REFERENCE_NOTES.get(ref.name, "")}


_REFERENCE_NOTES = {
    "kws_dscnn": "MLPerf Tiny KWS DS-CNN (conv 64 10x4/2, 4 DS blocks of 64, avg pool, dense); input is our 49x40 "
                 "log-mel instead of the published 49x10 MFCC, so the data path is identical to ours",
    "vww_mobilenet_v1": "MLPerf Tiny Visual Wake Words MobileNetV1, alpha 0.25, 96x96, N scene classes instead of 2",
}


def compute_comparison(ours_macs: Mapping[str, Any], latency: Mapping[str, Mapping[str, Any]],
                       references: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Ours vs the references per second of stream: 10 command hops and 5 scene frames per second.

    Ours: each hop runs audio_encoder + fusion, each frame image_encoder + fusion. Theirs: each hop
    the KWS model, each frame the VWW model. Frontends are the same code for both and listed apart.
    """
    def mean(stage_stats: Mapping[str, Any] | None) -> float | None:
        return None if not stage_stats or stage_stats.get("mean") is None else float(stage_stats["mean"])

    fusion_macs = int(ours_macs.get("fusion_head", 0) or 0)
    parts = {}
    for part, task, rate, encoder in (("commands", "command", COMMAND_HOPS_PER_S, "audio_encoder"),
                                      ("scenes", "scene", SCENE_FRAMES_PER_S, "image_encoder")):
        reference = next((r for r in references.values() if r.get("task") == task), None)
        if reference is None:
            continue
        parts[part] = {
            "rate_per_s": rate,
            "ours_macs_per_s": rate * (int(ours_macs.get(encoder, 0)) + fusion_macs),
            "theirs_macs_per_s": rate * int(reference["model"]["macs"] or 0),
            "ours_ms_per_s": _mul(rate, _add(mean(latency.get(encoder)), mean(latency.get("fusion")))),
            "theirs_ms_per_s": _mul(rate, mean(reference["latency_ms"].get("inference"))),
        }
    if len(parts) == 2:
        parts["total"] = {key: _add(parts["commands"][key], parts["scenes"][key])
                          for key in ("ours_macs_per_s", "theirs_macs_per_s", "ours_ms_per_s", "theirs_ms_per_s")}
    for values in parts.values():
        values["macs_ratio"] = _ratio(values["ours_macs_per_s"], values["theirs_macs_per_s"])
        values["ms_ratio"] = _ratio(values["ours_ms_per_s"], values["theirs_ms_per_s"])
    parts["frontend_ms_per_s"] = _add(_mul(COMMAND_HOPS_PER_S, mean(latency.get("audio_frontend"))),
                                      _mul(SCENE_FRAMES_PER_S, mean(latency.get("image_preprocess"))))
    return parts


def _add(a, b):
    if a is None or b is None:
        return a if b is None else b
    return round(a + b, 4) if isinstance(a, float) or isinstance(b, float) else a + b


def _mul(k, a):
    return None if a is None else round(k * a, 4)


def _ratio(a, b):
    return None if a is None or not b else float(f"{a / b:.4g}")


# --------------------------------------------------------------------------- streaming


def run_streaming(model: EdgeModel, eval_clips: np.ndarray, eval_labels: Sequence[str], tune_clips: np.ndarray,
                  tune_labels: Sequence[str], noise: Sequence[np.ndarray], options: BenchOptions,
                  model_sha256: str) -> dict[str, Any]:
    eval_s = options.stream_s or (QUICK_STREAM_S if options.quick else FULL_STREAM_S)
    tune_s = max(20.0, eval_s / 2) if options.stream_s else (QUICK_TUNE_STREAM_S if options.quick else FULL_TUNE_STREAM_S)
    sweep_options = SweepOptions(thresholds=(0.5, 0.7, 0.8, 0.9), suppressions_ms=(500.0, 1000.0)) \
        if options.quick else SweepOptions()
    cache = PosteriorCache(options.out_dir / "cache")
    out: dict[str, Any] = {"hop_ms": 100.0, "average_window_ms": sweep_options.average_window_ms,
                           "minimum_count": sweep_options.minimum_count,
                           "max_false_accepts_per_hour": sweep_options.max_false_accepts_per_hour}
    curves, results = {}, {}
    for name, clips, labels, seconds, seed in (("tuning", tune_clips, tune_labels, tune_s, options.seed + 101),
                                               ("evaluation", eval_clips, eval_labels, eval_s, options.seed + 202)):
        if not any(lab not in (SILENCE_LABEL, UNKNOWN_LABEL) for lab in labels):
            logger.warning("streaming: no command-word clips for the %s stream; skipped", name)
            continue
        stream = build_stream(clips, list(labels), StreamOptions(duration_s=seconds, seed=seed), noise=noise)
        key = cache.key(model_sha256, stream, 100.0)
        posteriors = cache.load(key)
        if posteriors is None:
            posteriors = stream_posteriors(model, stream.samples, hop_ms=100.0)
            cache.save(key, posteriors)
        else:
            logger.info("streaming: %s posteriors from the cache", name)
        points = sweep(posteriors, stream.words, stream.duration_ms, sweep_options)
        curves[name], results[name] = points, (stream, posteriors)
        out[f"{name}_stream"] = stream.summary()
    if "evaluation" not in results:
        return out
    tuned_on = "tuning" if "tuning" in curves else "evaluation"
    best = recommend(curves[tuned_on], sweep_options.max_false_accepts_per_hour)
    stream, posteriors = results["evaluation"]
    at_best = evaluate_stream(posteriors.times_ms, posteriors.posteriors, posteriors.labels, stream.words,
                              sweep_options.recognizer_options(best.threshold, best.suppression_ms),
                              duration_ms=stream.duration_ms, match_tolerance_ms=sweep_options.match_tolerance_ms)
    device_default = evaluate_stream(posteriors.times_ms, posteriors.posteriors, posteriors.labels, stream.words,
                                     sweep_options.recognizer_options(0.7, 750.0), duration_ms=stream.duration_ms,
                                     match_tolerance_ms=sweep_options.match_tolerance_ms)
    out.update({
        "recommended": {"threshold": best.threshold, "suppression_ms": best.suppression_ms, "chosen_on": tuned_on,
                        "tuning_metrics": best.to_dict()},
        "at_recommended": at_best.to_dict(),
        "at_firmware_default": device_default.to_dict(),
        "sweep": {name: [p.to_dict() for p in pts] for name, pts in curves.items()},
    })
    if tuned_on == "evaluation":
        logger.warning("streaming: no tuning stream; the recommendation was chosen on the evaluation stream")
    plot_sweep({"evaluation stream": curves["evaluation"], **({"tuning stream": curves["tuning"]}
                                                               if "tuning" in curves else {})},
               at_best, options.out_dir / "streaming_sweep.png",
               title=f"Streaming commands ({stream.duration_ms / 60000:.0f} min evaluation stream)")
    out["figure"] = "streaming_sweep.png"
    if options.write_config is not None:
        update_firmware_config(options.write_config, threshold=best.threshold, suppression_ms=best.suppression_ms)
        out["written_to"] = str(options.write_config)
    return out


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: Mapping[str, Any], path: Path, title: str) -> Path:
    plt = _plt()
    matrix = np.asarray(report["confusion"], np.float64)
    labels = report["labels"]
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 3 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {report['accuracy']:.3f} on {report['count']}" if report["count"] else title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(samples: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    plt = _plt()
    stages = [s for s, v in samples.items() if len(v)]
    cols = min(3, max(1, len(stages)))
    rows = max(1, math.ceil(len(stages) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, stage in zip(axes.ravel(), stages):
        x = np.asarray(samples[stage])
        ax.hist(x, bins=40, color="tab:blue", alpha=0.8)
        for p, style in zip(_PERCENTILES, ("-", "--", ":")):
            ax.axvline(np.percentile(x, p), color="k", linestyle=style, label=f"p{p} {np.percentile(x, p):.3f} ms")
        ax.set_title(stage)
        ax.set_xlabel("ms")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(stages):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the run


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _build_references(options: BenchOptions) -> dict[str, Path]:
    references = _desktop("train.references")
    if options.reference_config is not None:
        config = _desktop("train.config").load_train_config(options.reference_config)
    else:
        config = references.reference_config(speech_commands=options.speech_commands, scenes=options.scenes,
                                             salt=options.salt, noise=tuple(options.noise))
    ref_options = references.ReferenceOptions.quick() if options.quick else references.ReferenceOptions()
    return references.build_references(config, options.references_dir, ref_options)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark and write report.json, report.md and the figures; returns the report."""
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    interpreter_options = InterpreterOptions(num_threads=options.threads)
    model = EdgeModel.load(options.model_path, options=interpreter_options)
    meta = model.metadata
    model_sha = _sha256(Path(options.model_path))
    report: dict[str, Any] = {
        "model": {"path": str(options.model_path), "name": meta.get("name"), "version": meta.get("model_version"),
                  "bytes": model.size_bytes, "part_bytes": model.part_bytes,
                  "params": (meta.get("params") or {}).get("total"), "macs": (meta.get("macs") or {}).get("total"),
                  "params_by_part": meta.get("params", {}), "macs_by_part": meta.get("macs", {}),
                  "sha256": model_sha},
        "settings": {"threads": options.threads, "split": options.split, "salt": options.salt, "quick": options.quick,
                     "per_class_cap": options.per_class_cap, "interpreter": "LiteRT (edge.interpreter)"},
        "figures": {},
    }
    split = SplitSpec.from_metadata(meta, options.salt or None)
    report["settings"]["split_spec"] = dataclasses.asdict(split)
    timer = _Timer(STAGES)
    noise_paths = list(options.noise)
    clips = clip_labels = tune_clips = tune_labels = None
    data = None
    if options.speech_commands is not None:
        data = _desktop("train.data")
        words = [w for w in model.command_labels if w not in (SILENCE_LABEL, UNKNOWN_LABEL)]
        index, items, tune_items, how = select_command_items(options, words, split)
        noise_paths += list(index.noise_paths)
        items = _cap(items, options.per_class_cap, options.seed)
        require(len(items) > 0, "speech_commands", "clips to evaluate", 0)
        clips, load_report = data.load_clips(items, model.audio_frontend, what="benchmark clips")
        clip_labels = [items[i].label for i in load_report.kept]
        lookup = {label: i for i, label in enumerate(model.command_labels)}
        unknown = sorted(set(clip_labels) - set(lookup))
        require(not unknown, "speech_commands", f"labels among the model's {list(model.command_labels)}", unknown)
        report["command"] = evaluate_commands(model, clips, np.array([lookup[x] for x in clip_labels]), timer)
        report["command"]["selection"] = how
        report["command"]["speakers"] = len({items[i].speaker for i in load_report.kept})
        report["figures"]["command_confusion"] = plot_confusion(
            report["command"], out / "confusion_command.png", "Commands (camera absent)").name
        tune_items = _cap(tune_items, options.per_class_cap, options.seed)
        if options.split != "testing":
            tune_set = {id(it) for it in tune_items}
            keep = [k for k, i in enumerate(load_report.kept) if id(items[i]) not in tune_set]
            stream_clips, stream_labels = clips[keep], [clip_labels[k] for k in keep]
        else:
            stream_clips, stream_labels = clips, clip_labels
        if tune_items:
            tune_clips, tune_report = data.load_clips(tune_items, model.audio_frontend, what="tuning clips")
            tune_labels = [tune_items[i].label for i in tune_report.kept]
        else:
            tune_clips, tune_labels = np.zeros((0, model.audio_frontend.clip_samples), np.float32), []
    noise = _noise_recordings(noise_paths, model.audio_frontend.sample_rate_hz)
    report["settings"]["noise"] = [str(p) for p in noise_paths] or "synthetic pink noise"

    frames = frame_labels = None
    if options.scenes is not None:
        index, items, how = select_scene_items(options, split)
        items = _cap(items, options.per_class_cap, options.seed)
        require(len(items) > 0, "scenes", "photos to evaluate", 0)
        scene, scene_ambient, frames, frame_labels = evaluate_scenes(model, items, index.classes, timer, noise,
                                                                     options.seed)
        report["scene"] = {**scene, "selection": how}
        report["scene_with_ambient_audio"] = scene_ambient
        report["figures"]["scene_confusion"] = plot_confusion(scene, out / "confusion_scene.png",
                                                              "Scenes (microphone absent)").name
        report["figures"]["scene_ambient_confusion"] = plot_confusion(
            scene_ambient, out / "confusion_scene_ambient_audio.png", "Scenes (microphone: ambient noise)").name

    if options.av is not None:
        report["av"] = evaluate_av(model, Path(options.av), options.per_class_cap, options.seed)

    report["latency_ms"] = timer.summary()
    report["figures"]["latency"] = plot_latency(timer.samples, out / "latency.png",
                                                f"Latency per stage ({options.threads} thread(s))").name

    # References: built on request, evaluated whenever present.
    if options.train_references:
        _build_references(options)
    references: dict[str, Any] = {}
    for ref in find_references(options.references_dir, interpreter_options):
        if ref.task == "scene" and frames is not None and set(frame_labels) - set(ref.info["labels"]):
            logger.warning("reference %s: scene labels differ from the data's; skipped", ref.name)
            continue
        result = evaluate_reference(ref, clips=clips, clip_labels=clip_labels, frames=frames,
                                    frame_labels=frame_labels, audio_frontend=model.audio_frontend)
        if result is not None:
            references[ref.name] = result
    if references:
        report["references"] = references
        report["comparison_per_second"] = compute_comparison(meta.get("macs", {}), report["latency_ms"], references)
        for name, result in references.items():
            task = result["task"]
            fig = plot_confusion(result[task], out / f"confusion_{name}.png", f"{name} ({task}s)")
            report["figures"][f"{name}_confusion"] = fig.name

    if options.speech_commands is not None and options.streaming:
        report["streaming"] = run_streaming(model, stream_clips, stream_labels, tune_clips, tune_labels, noise,
                                            options, model_sha)
        if "figure" in report["streaming"]:
            report["figures"]["streaming_sweep"] = report["streaming"]["figure"]

    if options.fusion_study:
        study = _desktop("train.fusion_study")
        study_options = study.FusionStudyOptions.quick() if options.quick else study.FusionStudyOptions()
        ambient = next((p for p in options.noise if Path(p).is_dir()), None)
        report["fusion_study"] = study.run_fusion_study(options.scenes, out, ambient_dir=ambient, av_root=options.av,
                                                        options=study_options)
        report["figures"]["fusion_study"] = "fusion_study.png"

    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    logger.info("wrote %s", out / "report.json")
    return report


# --------------------------------------------------------------------------- markdown


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def render_markdown(report: Mapping[str, Any]) -> str:
    m = report["model"]
    lines = [f"# EdgeSense benchmark: {m.get('name')} ({m.get('version')})", "",
             f"Model `{m['path']}`: {_fmt(m['bytes'])} bytes, {_fmt(m.get('params'))} params, "
             f"{_fmt(m.get('macs'))} MACs per full pass. Settings: {json.dumps(report['settings'])}.", ""]
    refs = report.get("references", {})
    lines += ["## Accuracy", "", "| task | model | accuracy | n | data |", "| --- | --- | --- | --- | --- |"]
    for key, title in (("command", "commands (camera absent)"), ("scene", "scenes (microphone absent)"),
                       ("scene_with_ambient_audio", "scenes (mic: ambient noise)")):
        if key in report:
            r = report[key]
            lines.append(f"| {title} | ours | {_fmt(r['accuracy'])} | {r['count']} | {r.get('selection', '')} |")
    for name, r in refs.items():
        lines.append(f"| {r['task']}s | {name} | {_fmt(r[r['task']]['accuracy'])} | {r[r['task']]['count']} | same |")
    if "av" in report:
        for key, r in report["av"].items():
            lines.append(f"| scenes, paired AV ({key}) | ours | {_fmt(r['accuracy'])} | {r['count']} | --av |")
    lines += ["", "## Latency (ms, wall clock per call)", "", "| stage | p50 | p95 | p99 | mean | n |",
              "| --- | --- | --- | --- | --- | --- |"]
    for stage, s in report.get("latency_ms", {}).items():
        lines.append(f"| {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | {_fmt(s['mean'])} | {s['n']} |")
    for name, r in refs.items():
        for stage, s in r["latency_ms"].items():
            lines.append(f"| {name}: {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | "
                         f"{_fmt(s['mean'])} | {s['n']} |")
    if refs:
        lines += ["", "## References", ""]
        for name, r in refs.items():
            lines.append(f"* **{name}**: {r['architecture_note']}; {_fmt(r['model']['bytes'])} bytes, "
                         f"{_fmt(r['model']['params'])} params, {_fmt(r['model']['macs'])} MACs.")
        comp = report.get("comparison_per_second", {})
        lines += ["", f"Compute per second of stream ({COMMAND_HOPS_PER_S} command hops/s, {SCENE_FRAMES_PER_S} "
                  "scene frames/s; ours = encoder + fusion head per call, theirs = the reference model):", "",
                  "| part | ours MACs/s | theirs MACs/s | ratio | ours ms/s | theirs ms/s | ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for part in ("commands", "scenes", "total"):
            if part in comp:
                c = comp[part]
                lines.append(f"| {part} | {_fmt(c['ours_macs_per_s'])} | {_fmt(c['theirs_macs_per_s'])} | "
                             f"{_fmt(c['macs_ratio'])} | {_fmt(c['ours_ms_per_s'])} | {_fmt(c['theirs_ms_per_s'])} | "
                             f"{_fmt(c['ms_ratio'])} |")
        lines.append(f"\nFrontends (same code for both): {_fmt(comp.get('frontend_ms_per_s'))} ms/s.")
    st = report.get("streaming", {})
    if "at_recommended" in st:
        rec, at, dflt = st["recommended"], st["at_recommended"], st["at_firmware_default"]
        lines += ["", "## Streaming commands", "",
                  f"Evaluation stream: {json.dumps(st.get('evaluation_stream'))}; tuning stream: "
                  f"{json.dumps(st.get('tuning_stream'))}.", "",
                  f"**Recommended** (chosen on the {rec['chosen_on']} stream: highest hit rate with at most "
                  f"{st['max_false_accepts_per_hour']:g} false accepts/hour): `commands.threshold: {rec['threshold']:g}`, "
                  f"`commands.suppression_ms: {rec['suppression_ms']:g}`.", "",
                  "| setting | hit rate | FA/hour | FA (subst./unknown/background) | latency p50 / p90 ms |",
                  "| --- | --- | --- | --- | --- |"]
        for title, r in (("recommended", at), ("firmware default 0.7 / 750 ms", dflt)):
            lat = r["latency_ms"]
            lines.append(f"| {title} | {_fmt(r['hit_rate'])} | {_fmt(r['false_accepts_per_hour'], 2)} | "
                         f"{r['false_accepts']} ({r['substitutions']}/{r['false_accepts_on_unknown_words']}/"
                         f"{r['false_accepts_on_background']}) | {_fmt(lat['p50'], 0)} / {_fmt(lat['p90'], 0)} |")
    fs = report.get("fusion_study")
    if fs:
        lines += ["", "## Fusion study", "", f"> {fs['note']}", "",
                  f"Scene accuracy on {fs['sizes'].get(fs['evaluated_on'])} {fs['evaluated_on']} pairs "
                  f"(trained on {fs['sizes']['training']}):", "",
                  "| variant | " + " | ".join(fs["conditions"]) + " |", "| --- |" + " --- |" * len(fs["conditions"])]
        for name, r in fs["accuracy"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(r[c]) for c in fs["conditions"]) + " |")
        lines += ["", "Gain of each fusion strategy over image-only (accuracy points):", "",
                  "| variant | " + " | ".join(fs["conditions"]) + " |", "| --- |" + " --- |" * len(fs["conditions"])]
        for name, r in fs["gain_over_image_only"].items():
            lines.append(f"| {name} | " + " | ".join(f"{r[c]:+.3f}" for c in fs["conditions"]) + " |")
    lines += ["", "## Figures", ""] + [f"* {k}: ![{k}]({v})" for k, v in report.get("figures", {}).items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=Path("models/edgesense.tflite"), help="the deployed .tflite")
    parser.add_argument("--speech-commands", type=Path, help="a Speech Commands layout folder")
    parser.add_argument("--scenes", type=Path, help="an image-folder layout (CLASS/NAME.jpg)")
    parser.add_argument("--av", type=Path, help="paired audio-visual folder (CLASS/NAME.jpg + CLASS/NAME.wav)")
    parser.add_argument("--noise", type=Path, action="append", default=[],
                        help="background noise .wav file or folder (repeatable) for streams and the ambient figure")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (ours and the references)")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="small subsets, 2-min stream, tiny references (CI)")
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="'testing': only the held-out split, as training made it (with --salt)")
    parser.add_argument("--salt", default="", help="speaker-split salt used in training (e.g. edgesense)")
    parser.add_argument("--train-references", action="store_true",
                        help="train + quantize the MLPerf Tiny references into --references (cached)")
    parser.add_argument("--references", type=Path, default=DEFAULT_REFERENCES_DIR, help="reference models folder")
    parser.add_argument("--reference-config", type=Path,
                        help="train YAML for the references' data (default: --speech-commands/--scenes/--salt)")
    parser.add_argument("--fusion-study", action="store_true", help="run the fusion study (trains small models)")
    parser.add_argument("--no-streaming", action="store_true", help="skip the streaming evaluation")
    parser.add_argument("--stream-minutes", type=float, help="evaluation stream length (default 30; 2 with --quick)")
    parser.add_argument("--write-config", type=Path,
                        help="write the recommended threshold/suppression into this firmware YAML's commands:")
    parser.add_argument("--max-per-class", type=int, help="evaluate at most this many items per class")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    options = BenchOptions(
        model_path=args.model, out_dir=args.out, speech_commands=args.speech_commands, scenes=args.scenes,
        av=args.av, noise=tuple(args.noise), threads=args.threads, quick=args.quick, split=args.split,
        salt=args.salt, train_references=args.train_references, references_dir=args.references,
        reference_config=args.reference_config, fusion_study=args.fusion_study, streaming=not args.no_streaming,
        stream_s=None if args.stream_minutes is None else args.stream_minutes * 60.0,
        write_config=args.write_config, max_per_class=args.max_per_class, seed=args.seed)
    report = run_bench(options)
    print(f"benchmark of {report['model']['path']} -> {options.out_dir}/report.md")
    for key in ("command", "scene", "scene_with_ambient_audio"):
        if key in report:
            print(f"  {key:<26} accuracy {_fmt(report[key]['accuracy'])}  (n={report[key]['count']})")
    for name, r in report.get("references", {}).items():
        print(f"  {name:<26} accuracy {_fmt(r[r['task']]['accuracy'])}  ({r['task']}s)")
    for stage, s in report.get("latency_ms", {}).items():
        print(f"  latency {stage:<18} p50 {_fmt(s['p50'])} ms  p95 {_fmt(s['p95'])} ms  p99 {_fmt(s['p99'])} ms")
    st = report.get("streaming", {})
    if "at_recommended" in st:
        r = st["at_recommended"]
        print(f"  streaming: threshold {st['recommended']['threshold']:g}, suppression "
              f"{st['recommended']['suppression_ms']:g} ms -> hit rate {r['hit_rate']:.3f}, "
              f"{r['false_accepts_per_hour']:.2f} FA/hour")
    return 0
