"""Parity report: the float Keras model vs the converted TFLite model on validation.npz.

The TFLite side runs through :class:`edgesense.runtime.model.EdgeModel`, exactly the device path
(per-sample, quantize -> signature -> dequantize, embeddings requantized for
``fuse``). The float side runs the same computation with the Keras sub-models.

Evaluation protocol (validation audio and photos are not paired):

* command head: each validation clip with audio present and image absent,
  ``fuse(encode_audio(clip), None)``;
* scene head: each validation photo with image present and audio absent,
  ``fuse(None, encode_image(photo))``.

Budget: at most ``max_accuracy_drop_points`` accuracy points lost per head and at most
``max_model_bytes`` for the whole file, printed as PASS/FAIL lines.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgesense.app.cli import write_atomic
from edgesense.quantize.convert import RunFolder, float_embeddings, load_run, load_validation
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.runtime.model import EdgeModel
from edgesense.schema.validate import require_kinds

__all__ = [
    "ReportOptions",
    "EVALUATION_PROTOCOL",
    "build_report",
    "budget_lines",
    "render_markdown",
    "report_paths",
    "write_report",
]

logger = logging.getLogger(__name__)

POINTS_PER_UNIT = 100.0
BYTES_PER_KB = 1024
DEFAULT_MAX_MODEL_KB = 200
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: Batch size of the float reference's fusion head.
FLOAT_BATCH = 256

EVALUATION_PROTOCOL = {
    "command": "each validation clip with audio present and image absent: fuse(encode_audio(clip), None)",
    "scene": "each validation photo with image present and audio absent: fuse(None, encode_image(photo)) "
             "(scene validation photos have no paired audio)",
    "float_reference": "the run's Keras sub-models (audio_encoder, image_encoder, fusion_head) with the same "
                       "inputs; an absent modality is a zero embedding with presence flag 0, as on the device",
    "tflite": "edgesense.runtime.model.EdgeModel, one sample at a time (the device path)",
}


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """Budget limits and how to run the TFLite model."""

    max_accuracy_drop_points: float = 0.5
    max_model_bytes: int = DEFAULT_MAX_MODEL_KB * BYTES_PER_KB
    interpreter: InterpreterOptions = InterpreterOptions()

    def __post_init__(self) -> None:
        require_kinds(self)
        if not (isinstance(self.max_accuracy_drop_points, (int, float)) and 0 <= self.max_accuracy_drop_points <= 100):
            raise ValueError("max_accuracy_drop_points: expected a number in [0, 100], "
                             f"got {self.max_accuracy_drop_points!r}")
        size = self.max_model_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"max_model_bytes: expected a positive integer, got {size!r}")
        if not isinstance(self.interpreter, InterpreterOptions):
            raise ValueError(f"interpreter: expected InterpreterOptions, got {type(self.interpreter).__name__}")


def _float_head(run: RunFolder, audio_emb: np.ndarray | None, image_emb: np.ndarray | None, n: int) -> dict:
    ones, zeros = np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)
    a = audio_emb if audio_emb is not None else np.zeros((n, run.audio_embedding_dim), np.float32)
    v = image_emb if image_emb is not None else np.zeros((n, run.image_embedding_dim), np.float32)
    ap, ip = (ones if audio_emb is not None else zeros), (ones if image_emb is not None else zeros)
    outs: dict[str, list[np.ndarray]] = {"command": [], "scene": []}
    for i in range(0, n, FLOAT_BATCH):
        s = slice(i, i + FLOAT_BATCH)
        out = run.fusion_head([a[s], v[s], ap[s], ip[s]], training=False)
        for key in outs:
            outs[key].append(np.asarray(out[key], dtype=np.float32))
    return {key: np.concatenate(values) for key, values in outs.items()}


def _head_stats(float_probs: np.ndarray, tflite_probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    float_top1, tflite_top1 = float_probs.argmax(axis=1), tflite_probs.argmax(axis=1)
    float_right, tflite_right = int((float_top1 == labels).sum()), int((tflite_top1 == labels).sum())
    diff = np.abs(float_probs - tflite_probs)
    return {
        "samples": int(len(labels)),
        "float_accuracy": float_right / len(labels),
        "tflite_accuracy": tflite_right / len(labels),
        # From the counts: a difference of the two accuracies is off by a rounding (1 clip of 200 lost gave
        # 0.5000000000000004 points, a FAIL of the 0.5-point budget).
        "accuracy_drop_points": (float_right - tflite_right) * POINTS_PER_UNIT / len(labels),
        "top1_agreement": float((float_top1 == tflite_top1).mean()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": float(diff.max()),
    }


def _embedding_stats(float_emb: np.ndarray, tflite_emb: np.ndarray) -> dict[str, float]:
    diff = np.abs(float_emb - tflite_emb)
    scale = float(np.abs(float_emb).mean()) or 1.0
    return {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "relative_mean_abs_diff": float(diff.mean()) / scale}


def build_report(run_dir: str | os.PathLike, model_path: str | os.PathLike,
                 options: ReportOptions = ReportOptions()) -> dict[str, Any]:
    """Compare the run's float model with the TFLite model on validation.npz; return the report dict."""
    run = load_run(run_dir)
    validation = load_validation(run)
    model = EdgeModel.load(model_path, options.interpreter, expected_audio_frontend=run.audio_frontend)
    for head, labels in (("command", run.command_labels), ("scene", run.scene_labels)):
        got = model.command_labels if head == "command" else model.scene_labels
        if tuple(got) != tuple(labels):
            raise ValueError(f"{model_path}: {head} labels differ from the run's ({list(got)} vs {list(labels)})")
    if model.image_frontend != run.image_frontend:
        raise ValueError(f"{model_path}: image frontend {model.image_frontend} differs from the run's "
                         f"{run.image_frontend}")

    heads: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    audio_x, audio_y = validation["audio_features"], validation["command_label"]
    image_x, image_y = validation["image"].astype(np.float32), validation["scene_label"]
    if len(audio_x) == 0 and len(image_x) == 0:
        raise ValueError(f"{run.path}: validation.npz has no audio clips and no images")
    if len(audio_x):
        f_emb = float_embeddings(run.audio_encoder, audio_x)
        float_probs = _float_head(run, f_emb, None, len(audio_x))["command"]
        t_emb = np.stack([model.encode_audio(x) for x in audio_x])
        tflite_probs = np.stack([model.fuse(e, None)[0] for e in t_emb])
        heads["command"] = _head_stats(float_probs, tflite_probs, audio_y)
        embeddings["audio"] = _embedding_stats(f_emb, t_emb)
    if len(image_x):
        f_emb = float_embeddings(run.image_encoder, image_x)
        float_probs = _float_head(run, None, f_emb, len(image_x))["scene"]
        t_emb = np.stack([model.encode_image(x) for x in image_x])
        tflite_probs = np.stack([model.fuse(None, e)[1] for e in t_emb])
        heads["scene"] = _head_stats(float_probs, tflite_probs, image_y)
        embeddings["image"] = _embedding_stats(f_emb, t_emb)

    checks = []
    for head in ("command", "scene"):
        if head in heads:
            drop = heads[head]["accuracy_drop_points"]
            checks.append({"name": f"{head} accuracy drop", "value": drop, "limit": options.max_accuracy_drop_points,
                           "unit": "points", "status": "PASS" if drop <= options.max_accuracy_drop_points else "FAIL"})
        else:
            checks.append({"name": f"{head} accuracy drop", "value": None, "limit": options.max_accuracy_drop_points,
                           "unit": "points", "status": "SKIP"})
    checks.append({"name": "model size", "value": model.size_bytes, "limit": options.max_model_bytes, "unit": "bytes",
                   "status": "PASS" if model.size_bytes <= options.max_model_bytes else "FAIL"})
    meta = model.metadata
    return {
        "model": str(model_path),
        "run": str(run.path),
        "name": meta.get("name"),
        "model_version": meta.get("model_version"),
        "mode": meta.get("quantization", {}).get("mode"),
        "evaluation": dict(EVALUATION_PROTOCOL),
        "heads": heads,
        "embeddings": embeddings,
        "size": {"total_bytes": model.size_bytes, "part_weight_bytes": model.part_bytes,
                 "part_model_bytes": meta.get("part_model_bytes", {})},
        "params": run.info.get("params", {}),
        "macs": run.info.get("macs", {}),
        "budget": {
            "max_accuracy_drop_points": options.max_accuracy_drop_points,
            "max_model_bytes": options.max_model_bytes,
            "checks": checks,
            "pass": all(c["status"] != "FAIL" for c in checks),
        },
    }


def _fmt_value(check: Mapping[str, Any]) -> str:
    if check["value"] is None:
        return "n/a (no validation samples)"
    if check["unit"] == "bytes":
        return f"{check['value']} bytes ({check['value'] / BYTES_PER_KB:.1f} KB) <= {check['limit']} bytes"
    return f"{check['value']:.2f} {check['unit']} <= {check['limit']:g} {check['unit']}"


def budget_lines(report: Mapping[str, Any]) -> list[str]:
    """One ``PASS|FAIL|SKIP <check>: <value> <= <limit>`` line per budget check."""
    return [f"{c['status']} {c['name']}: {_fmt_value(c)}" for c in report["budget"]["checks"]]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown."""
    lines = [f"# Parity report: {report.get('name')} ({report.get('mode')})", "",
             f"- model: `{report['model']}` (version {report.get('model_version')})",
             f"- run: `{report['run']}`", "", "## Budget", ""]
    lines += [f"- {line}" for line in budget_lines(report)]
    lines += ["", "## Accuracy (validation.npz)", "",
              "| head | samples | float acc | tflite acc | drop (points) | top-1 agreement | mean abs diff "
              "| max abs diff |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for head, s in report["heads"].items():
        lines.append(f"| {head} | {s['samples']} | {s['float_accuracy']:.4f} | {s['tflite_accuracy']:.4f} | "
                     f"{s['accuracy_drop_points']:.2f} | {s['top1_agreement']:.4f} | {s['mean_abs_diff']:.5f} | "
                     f"{s['max_abs_diff']:.5f} |")
    lines += ["", "## Embeddings (dequantized vs float)", "", "| encoder | mean abs diff | max abs diff | relative |",
              "|---|---:|---:|---:|"]
    for name, s in report["embeddings"].items():
        lines.append(f"| {name} | {s['mean_abs_diff']:.5f} | {s['max_abs_diff']:.5f} | "
                     f"{s['relative_mean_abs_diff']:.4f} |")
    size = report["size"]
    lines += ["", "## Size", "",
              f"- whole file: {size['total_bytes']} bytes ({size['total_bytes'] / BYTES_PER_KB:.1f} KB)",
              "", "| part | weight bytes | converted part bytes | params | MACs |", "|---|---:|---:|---:|---:|"]
    part_models = {"encode_audio": "audio_encoder", "encode_image": "image_encoder", "fuse": "fusion_head"}
    for key, part in part_models.items():
        lines.append(f"| {key} ({part}) | {size['part_weight_bytes'].get(key, '')} | "
                     f"{size['part_model_bytes'].get(key, '')} | {report['params'].get(part, '')} | "
                     f"{report['macs'].get(part, '')} |")
    lines += ["", f"- params total: {report['params'].get('total', 'n/a')}; "
                  f"MACs total: {report['macs'].get('total', 'n/a')}",
              "", "## Evaluation protocol", ""]
    lines += [f"- {key}: {text}" for key, text in report["evaluation"].items()]
    return "\n".join(lines) + "\n"


def report_paths(model_path: str | os.PathLike, report: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(report.json, report.md) paths: next to the model by default; ``report`` may be a
    folder, or a ``.json``/``.md`` path whose sibling with the other suffix is used too."""
    if report is None or str(report) == "":
        folder = Path(model_path).parent
        return folder / REPORT_JSON, folder / REPORT_MD
    path = Path(report)
    if path.suffix.lower() in (".json", ".md"):
        return path.with_suffix(".json"), path.with_suffix(".md")
    return path / REPORT_JSON, path / REPORT_MD


def write_report(report: Mapping[str, Any], json_path: str | os.PathLike, md_path: str | os.PathLike) -> None:
    """Write the report as JSON and Markdown (OSError naming the path when that fails), each file whole or not at
    all (:func:`edgesense.app.cli.write_atomic`: interrupted, or on a full disk, an earlier report stays as
    it was, never a file cut short)."""
    for path, text in ((Path(json_path), json.dumps(report, indent=2, sort_keys=True) + "\n"),
                       (Path(md_path), render_markdown(report))):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot write the report {path}: {exc.strerror or exc}") from exc
        write_atomic(path, text.encode("utf-8"), what="the report")
    logger.info("wrote %s and %s", json_path, md_path)
