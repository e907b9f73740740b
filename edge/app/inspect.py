"""``edgesense inspect MODEL``: a deployed model's metadata, signatures, tensors and sizes.

The runtime (numpy, OpenCV, the interpreter) is imported when the command runs, not with this module: ``edgesense
inspect --help`` (and ``edgesense adapt``, which reads :func:`model_metrics`) does not wait for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgesense.runtime.quant import QuantParams
    from edgesense.runtime.second_opinion import StreamHeads

__all__ = ["add_arguments", "model_metrics", "run"]


# --------------------------------------------------------------------------- edgesense inspect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesense.app.cli import file_argument

    parser.add_argument("model", type=file_argument,
                        help="path to a .tflite written by 'edgesense quantize' (or train-stream-heads)")
    parser.add_argument("--json", action="store_true", help="print only the embedded metadata JSON")


def model_metrics(metadata: dict) -> tuple[dict, dict | None]:
    """(a model's own figures, those of the model ``edgesense adapt`` made it from: None unless it
    is adapted). ``adapt`` keeps the latter as ``adapted.from.metrics``; before it did, an adapted
    file kept them as its ``metrics`` and its own as ``adapted.metrics``."""
    metrics = metadata.get("metrics") or {}
    adapted = metadata.get("adapted")
    if not isinstance(adapted, dict):
        return metrics, None
    source = adapted.get("from")
    if isinstance(source, dict) and "metrics" in source:
        return metrics, source["metrics"] or {}
    return adapted.get("metrics") or {}, metrics


def _format_quant(q: QuantParams) -> str:
    return f"scale={q.scale:.6g} zero_point={q.zero_point}" if q.is_quantized else "float"


def _inspect_heads(heads: StreamHeads, as_json: bool) -> int:
    """A stream-heads file (the second opinion): its metadata, labels, context and tensors."""
    from edgesense.runtime.model import _BYTES_PER_KB

    meta = heads.metadata
    if as_json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(f"stream heads (second opinion): {heads.path}")
    print(f"  size: {heads.size_bytes} bytes ({heads.size_bytes / _BYTES_PER_KB:.1f} KB)")
    print(f"  heads: {meta.get('heads')} on {heads.context} speech_embedding embeddings ({meta.get('embedding')})")
    print(f"  command labels ({len(heads.labels)}): {', '.join(heads.labels)}")
    for key in ("student", "data", "options", "hard_negatives", "training_windows", "validation_window_accuracy"):
        if meta.get(key) is not None:
            print(f"  {key}: {json.dumps(meta[key], sort_keys=True)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import input_file
    from edgesense.runtime.interpreter import read_model_bytes
    from edgesense.runtime.model import _BYTES_PER_KB, PART_NAMES, EdgeModel
    from edgesense.runtime.second_opinion import StreamHeads, is_stream_heads

    path = input_file("model", args.model)
    if hasattr(sys.stdout, "reconfigure"):  # a label such as 北京 on a stdout that is not UTF-8 (a Latin-1 locale,
        sys.stdout.reconfigure(errors="backslashreplace")  # PYTHONIOENCODING=ascii): \u5317\u4eac, not a codec error
    data, what = read_model_bytes(path)  # read once: a pipe (a shell's <(...)) cannot be read twice
    if is_stream_heads(data):
        return _inspect_heads(StreamHeads(data, name=what), args.json)
    model = EdgeModel.load(data, name=what)
    if args.json:
        print(json.dumps(model.metadata, indent=2, sort_keys=True))
        return 0
    meta = model.metadata
    print(f"model: {model.path}")
    print(f"  size: {model.size_bytes} bytes ({model.size_bytes / _BYTES_PER_KB:.1f} KB)")
    print(f"  name: {meta.get('name')}  version: {meta.get('model_version')}  created: {meta.get('created')}")
    print(f"  quantization: {(meta.get('quantization') or {}).get('mode')}")
    for key in sorted(model.untrained_encoders):  # a speech-only or scenes-only recipe
        print(f"  untrained: {key} (the recipe had no {'photos' if key == 'encode_image' else 'speech'}; "
              f"run leaves its {'camera' if key == 'encode_image' else 'microphone'} closed)")
    print(f"  command labels ({len(model.command_labels)}): {', '.join(model.command_labels)}")
    print(f"  scene labels ({len(model.scene_labels)}): {', '.join(model.scene_labels)}")
    print(f"  audio frontend: {model.audio_frontend.to_dict()} -> {model.audio_frontend.feature_shape}")
    print(f"  image frontend: {model.image_frontend.to_dict()} -> {model.image_frontend.input_shape}")
    for key in ("params", "macs"):
        if meta.get(key):
            print(f"  {key}: {json.dumps(meta[key], sort_keys=True)}")
    metrics, before = model_metrics(meta)
    if metrics:
        print(f"  metrics: {json.dumps(metrics, sort_keys=True)}")
    adapted = meta.get("adapted") if before is not None else None
    if adapted is not None:  # the figures and data of --model, measured with another scene head
        source = adapted.get("from") if isinstance(adapted.get("from"), dict) else {}
        print(f"  adapted from: {source.get('name')}  version: {source.get('model_version')}")
        if before:
            print(f"  metrics before adapting: {json.dumps(before, sort_keys=True)}")
        on = {key: value for key, value in adapted.items() if key not in ("from", "metrics")}
        print(f"  adapted on: {json.dumps(on, sort_keys=True)}")
    if meta.get("data"):
        label = "data before adapting" if adapted is not None else "data"
        print(f"  {label}: {json.dumps(meta['data'], sort_keys=True)}")
    print("signatures:")
    parts = model.part_bytes
    for key, sig in model.signatures.items():
        print(f"  {key} (subgraph {sig.subgraph_index}, {PART_NAMES[key]}, weights {parts.get(key, 0)} bytes)")
        for kind, tensors in (("in ", sig.inputs), ("out", sig.outputs)):
            for info in tensors.values():
                print(f"    {kind} {info.name:<16} {info.dtype.name:<8} {list(info.shape)!s:<16} "
                      f"{_format_quant(info.quant)}")
    return 0
