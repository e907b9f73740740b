"""Convert a training run folder to one multi-signature ``.tflite`` with embedded metadata.

TF 2.21's converter cannot calibrate several signatures at once, so each part of the
fusion model (audio encoder, image encoder, fusion head) is converted *alone* from a
batch-1 ``tf.function`` with named inputs, then the three single-subgraph flatbuffers
are merged into one model with three subgraphs and three SignatureDefs
(``encode_audio``, ``encode_image``, ``fuse``; see docs/CONTRACTS.md). The merged model
carries the metadata JSON in ``Model.metadata["edgesense"]``.

Modes: ``int8`` (full-integer: int8 weights, activations, inputs and outputs; builtin
int8 ops only), ``float16`` (float16 weights, float I/O) and ``dynamic`` (int8 weights,
float activations and I/O).

The int8 representative set comes from ``calibration.npz``: the encoders see the real
samples; the fusion head sees the *float* encoders' embeddings of those samples, with
the presence flags cycling through (1, 1), (1, 0) and (0, 1) (an absent modality's
embedding is zeros, exactly as ``edgesense.runtime.model.EdgeModel.fuse`` feeds it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from edgesense.app.cli import refuse_existing, write_atomic
from edgesense.frontend.audio import AudioFrontendOptions, log_mel_batch
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.runtime.interpreter import make_interpreter
from edgesense.runtime.model import (
    METADATA_FORMAT_VERSION,
    METADATA_NAME,
    PART_NAMES,
    SIGNATURE_INPUTS,
    SIGNATURE_OUTPUTS,
    labels_and_frontends,
)
from edgesense.runtime.quant import QuantParams, quantize

__all__ = [
    "MODES",
    "QuantizeOptions",
    "ExportResult",
    "RunFolder",
    "load_run",
    "load_calibration",
    "load_validation",
    "read_run_info",
    "validation_arrays",
    "convert_run",
    "convert_parts",
    "build_metadata",
    "portable_paths",
    "float_embeddings",
    "fuse_samples",
    "stand_in_inputs",
    "read_npz",
    "merge_tflite_parts",
    "part_metadata",
    "merged_model",
    "write_merged",
    "split_tflite_parts",
    "check_builtin_ops",
]

logger = logging.getLogger(__name__)

MODES = ("int8", "float16", "dynamic")
RUN_FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
CALIBRATION_FILE = "calibration.npz"
VALIDATION_FILE = "validation.npz"
#: Presence flags (audio, image) the fusion head is calibrated with, cycled over the samples.
FUSION_PRESENCE_PATTERNS = ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0))
#: Batch size for computing float embeddings.
EMBEDDING_BATCH = 64
#: Hex digits of the weights' sha256 in ``model_version``.
VERSION_HASH_CHARS = 12
#: The builtin operator code of custom (and Flex) ops in schema.fbs.
CUSTOM_BUILTIN_CODE = 32
#: TFLite TensorType enum values (schema.fbs).
TFLITE_INT8 = 9
TFLITE_FLOAT_TYPES = (0, 1, 8, 10, 11)  # FLOAT32, FLOAT16, COMPLEX64, FLOAT64, COMPLEX128
MAX_CALIBRATION_SAMPLES = 100_000
#: A run that trained one modality only (a recipe without scenes, or without speech) leaves the other
#: encoder untrained and its calibration set empty. That encoder is then calibrated on this many
#: stand-in inputs (see :func:`stand_in_inputs`), so that the run still converts and its file runs.
STAND_IN_SAMPLES = 32
#: Stand-in audio: white noise from the quietest to the loudest level (dBFS), spread over the samples.
STAND_IN_NOISE_DBFS = (-90.0, 0.0)
#: Stand-in photos: uniform pixels over the whole [0, 255] range of a camera frame.
PIXEL_RANGE = 256
#: The seed of the stand-in inputs: the same run always converts to the same file.
STAND_IN_SEED = 0
#: Lines of a converter error that name the unsupported ops.
_UNSUPPORTED_OP_PREFIXES = ("TF Select ops:", "Flex ops:", "Custom ops:")
_MAX_ERROR_CHARS = 600
#: Beyond a part's float32 weights, what the converter's temporary SavedModel of it may take (its graph).
_SAVED_MODEL_SLACK_BYTES = 1 << 20
_PROBE_CHUNK_BYTES = 1 << 20
#: How a .npz (a zip archive) begins: its first member, or the end record of an empty one.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions:
    """How to convert a run.

    ``calibration_samples``: at most this many audio clips and this many images from
    calibration.npz (evenly spread), or ``None`` for every one the run wrote (the default: over eight
    runs, 300 of 360 clips lost 8 validation clips to int8 and all of them 5); ``fusion_calibration_samples``:
    representative samples for the fusion head (default: the larger of the two counts).
    ``name``: the model name in the metadata (default: run.json's name).
    """

    mode: str = "int8"
    calibration_samples: int | None = None
    fusion_calibration_samples: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        for field_name in ("calibration_samples", "fusion_calibration_samples"):
            value = getattr(self, field_name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CALIBRATION_SAMPLES:
                raise ValueError(f"{field_name}: expected an integer in [1, {MAX_CALIBRATION_SAMPLES}], got {value!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ValueError(f"name: expected a non-empty string or None, got {self.name!r}")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`convert_run` wrote."""

    path: Path
    mode: str
    size_bytes: int
    part_bytes: Mapping[str, int]
    metadata: Mapping[str, Any]
    calibration_counts: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- run folder


@dataclass(frozen=True)
class RunFolder:
    """A loaded training run: the Keras model, its three parts and run.json."""

    path: Path
    model: Any
    info: Mapping[str, Any]
    audio_encoder: Any
    image_encoder: Any
    fusion_head: Any
    audio_frontend: AudioFrontendOptions
    image_frontend: ImageFrontendOptions
    command_labels: tuple[str, ...]
    scene_labels: tuple[str, ...]
    audio_embedding_dim: int
    image_embedding_dim: int


def _import_tf():
    import tensorflow as tf  # desktop only: quantize/ needs the [train] extra

    return tf


def _load_keras_model(path: Path) -> Any:
    from edgesense.train.runfolder import keras_archive_problem

    problem = keras_archive_problem(path)  # Keras would say "File not found" of a damaged file
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    import keras

    import edgesense.train.model  # noqa: F401  (registers the custom layers)

    try:
        return keras.models.load_model(path)
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{path}: cannot load the Keras model ({exc})") from exc


def _shape_tail(tensor_or_layer: Any) -> tuple[int | None, ...]:
    return tuple(tensor_or_layer.shape[1:])


def _require_run_files(run_dir: str | os.PathLike) -> Path:
    """The run folder's path; ValueError when it or its model.keras / run.json is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run folder {path} does not exist or is not a folder")
    if not (path / MODEL_FILE).is_file():
        raise ValueError(f"run folder {path} has no {MODEL_FILE} (train a model first: edgesense train)")
    if not (path / RUN_FILE).is_file():
        raise ValueError(f"run folder {path} has no {RUN_FILE}")
    return path


def read_run_info(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, list[str]],
                                                       AudioFrontendOptions, ImageFrontendOptions]:
    """A run folder's checked run.json: (the JSON, its labels, audio frontend, image frontend); no Keras."""
    run_path = _require_run_files(run_dir) / RUN_FILE
    try:
        info = json.loads(run_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{run_path}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise ValueError(f"{run_path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format_version") != RUN_FORMAT_VERSION:
        raise ValueError(f"{run_path}: format_version: expected {RUN_FORMAT_VERSION}, "
                         f"got {info.get('format_version')!r}")
    labels, audio_frontend, image_frontend = labels_and_frontends(info, f"{run_path}:")
    return info, labels, audio_frontend, image_frontend


def load_run(run_dir: str | os.PathLike) -> RunFolder:
    """Load and check a run folder (docs/CONTRACTS.md): model.keras, run.json, the parts."""
    path = _require_run_files(run_dir)
    model_path = path / MODEL_FILE
    info, labels, audio_frontend, image_frontend = read_run_info(path)

    model = _load_keras_model(model_path)
    parts = {}
    for part in PART_NAMES.values():
        try:
            parts[part] = model.get_layer(part)
        except ValueError as exc:
            raise ValueError(f"{model_path}: expected a nested sub-model named {part!r} ({exc})") from exc
    audio_in = _shape_tail(parts["audio_encoder"].inputs[0])
    image_in = _shape_tail(parts["image_encoder"].inputs[0])
    if audio_in != audio_frontend.feature_shape:
        raise ValueError(f"{model_path}: audio_encoder input shape: expected {audio_frontend.feature_shape} "
                         f"(run.json audio_frontend), got {audio_in}")
    if image_in != image_frontend.input_shape:
        raise ValueError(f"{model_path}: image_encoder input shape: expected {image_frontend.input_shape} "
                         f"(run.json image_frontend), got {image_in}")
    audio_dim = _shape_tail(parts["audio_encoder"].outputs[0])
    image_dim = _shape_tail(parts["image_encoder"].outputs[0])
    if len(audio_dim) != 1 or len(image_dim) != 1 or None in audio_dim + image_dim:
        raise ValueError(f"{model_path}: encoders must output (None, D) embeddings, got {audio_dim} and {image_dim}")
    head_outputs = parts["fusion_head"].output
    if not isinstance(head_outputs, dict) or set(head_outputs) != {"command", "scene"}:
        raise ValueError(f"{model_path}: fusion_head outputs: expected a dict with 'command' and 'scene'")
    for head in ("command", "scene"):
        width = _shape_tail(head_outputs[head])
        if width != (len(labels[head]),):
            raise ValueError(f"{model_path}: {head} output width: expected {len(labels[head])} "
                             f"(run.json labels.{head}), got {width}")
    return RunFolder(
        path=path, model=model, info=info,
        audio_encoder=parts["audio_encoder"], image_encoder=parts["image_encoder"], fusion_head=parts["fusion_head"],
        audio_frontend=audio_frontend, image_frontend=image_frontend,
        command_labels=tuple(labels["command"]), scene_labels=tuple(labels["scene"]),
        audio_embedding_dim=int(audio_dim[0]), image_embedding_dim=int(image_dim[0]),
    )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive; a ValueError naming the file when it is missing or damaged."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(len(_ZIP_MAGICS[0]))
    if magic not in _ZIP_MAGICS:  # np.load would take it for a pickle or an .npy, or fail on it with EOFError
        found = "an empty file (0 bytes)" if not magic else f"a file that starts with {magic!r}"
        raise ValueError(f"{path}: expected a NumPy .npz archive (numpy.savez), found {found}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot read it as a NumPy .npz archive ({exc})") from exc
    return arrays


def _load_npz(path: Path, spec: Mapping[str, tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """Arrays of an .npz (:func:`read_npz`), checked against {key: (dtype, shape after the sample axis)}."""
    arrays = read_npz(path)
    out = {}
    for key, (dtype, tail) in spec.items():
        if key not in arrays:
            raise ValueError(f"{path}: missing array {key!r} (has {', '.join(sorted(arrays)) or 'none'})")
        array = arrays[key]
        if array.dtype != np.dtype(dtype) or tuple(array.shape[1:]) != tuple(tail):
            raise ValueError(f"{path}: {key}: expected {dtype} (N, {', '.join(map(str, tail))}), "
                             f"got {array.dtype} {array.shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # An inf gives the calibrator an infinite int8 scale (the converter dies, SIGSEGV); a NaN moves it.
            bad = np.argwhere(~np.isfinite(array))[0]
            raise ValueError(f"{path}: {key}: expected finite values, got {array[tuple(bad)]} "
                             f"(sample {int(bad[0])})")
        out[key] = array
    return out


def load_calibration(run: RunFolder) -> dict[str, np.ndarray]:
    """calibration.npz: ``audio_features`` float32 (N, frames, bins), ``image`` uint8 (M, H, W, 3)."""
    return _load_npz(run.path / CALIBRATION_FILE, {
        "audio_features": ("float32", run.audio_frontend.feature_shape),
        "image": ("uint8", run.image_frontend.input_shape),
    })


def load_validation(run: RunFolder) -> dict[str, np.ndarray]:
    """validation.npz: audio_features, command_label, image, scene_label (docs/CONTRACTS.md)."""
    return validation_arrays(run.path / VALIDATION_FILE, {"command": run.command_labels, "scene": run.scene_labels},
                             run.audio_frontend, run.image_frontend)


def validation_arrays(where: Path, labels: Mapping[str, Any], audio_frontend: AudioFrontendOptions,
                      image_frontend: ImageFrontendOptions) -> dict[str, np.ndarray]:
    """The checked arrays of the validation set ``where`` of a run of these ``labels`` ({'command': [...],
    'scene': [...]}) and frontends (:func:`load_validation` without loading the model)."""
    arrays = _load_npz(where, {
        "audio_features": ("float32", audio_frontend.feature_shape),
        "command_label": ("int32", ()),
        "image": ("uint8", image_frontend.input_shape),
        "scene_label": ("int32", ()),
    })
    for data_key, label_key, names in (("audio_features", "command_label", labels["command"]),
                                       ("image", "scene_label", labels["scene"])):
        if len(arrays[data_key]) != len(arrays[label_key]):
            raise ValueError(f"{where}: {label_key}: expected {len(arrays[data_key])} labels "
                             f"(one per {data_key}), got {len(arrays[label_key])}")
        bad = arrays[label_key][(arrays[label_key] < 0) | (arrays[label_key] >= len(names))]
        if bad.size:
            raise ValueError(f"{where}: {label_key}: expected values in [0, {len(names)}), got {int(bad[0])}")
    return arrays


def float_embeddings(encoder: Any, x: np.ndarray) -> np.ndarray:
    """The float Keras encoder's embeddings of ``x`` (batched), float32 (N, D)."""
    out = [np.asarray(encoder(x[i:i + EMBEDDING_BATCH].astype(np.float32), training=False), dtype=np.float32)
           for i in range(0, len(x), EMBEDDING_BATCH)]
    return np.concatenate(out) if out else np.zeros((0,) + tuple(encoder.outputs[0].shape[1:]), np.float32)


def _spread(count: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` indices evenly spread over ``range(count)`` (keeps the class balance); all for ``None``."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


# --------------------------------------------------------------------------- conversion


def _part_functions(run: RunFolder) -> dict[str, tuple[Callable, Any]]:
    """signature key -> (batch-1 tf.function with named inputs returning a dict, the Keras part)."""
    tf = _import_tf()
    a_shape = (1,) + run.audio_frontend.feature_shape
    i_shape = (1,) + run.image_frontend.input_shape
    da, dv = run.audio_embedding_dim, run.image_embedding_dim
    audio_enc, image_enc, head = run.audio_encoder, run.image_encoder, run.fusion_head

    @tf.function(input_signature=[tf.TensorSpec(a_shape, tf.float32, name="audio_features")])
    def encode_audio(audio_features):
        return {"audio_embedding": audio_enc(audio_features, training=False)}

    @tf.function(input_signature=[tf.TensorSpec(i_shape, tf.float32, name="image")])
    def encode_image(image):
        return {"image_embedding": image_enc(image, training=False)}

    return {"encode_audio": (encode_audio, audio_enc), "encode_image": (encode_image, image_enc),
            "fuse": (fuse_function(head, da, dv), head)}


def fuse_function(head: Any, audio_dim: int, image_dim: int) -> Callable:
    """The batch-1 tf.function of the ``fuse`` signature around a Keras fusion head."""
    tf = _import_tf()

    @tf.function(input_signature=[
        tf.TensorSpec((1, audio_dim), tf.float32, name="audio_embedding"),
        tf.TensorSpec((1, image_dim), tf.float32, name="image_embedding"),
        tf.TensorSpec((1, 1), tf.float32, name="audio_present"),
        tf.TensorSpec((1, 1), tf.float32, name="image_present"),
    ])
    def fuse(audio_embedding, image_embedding, audio_present, image_present):
        out = head([audio_embedding, image_embedding, audio_present, image_present], training=False)
        return {"command": out["command"], "scene": out["scene"]}

    return fuse


def _temporary_room_problem(part: Any) -> str | None:
    """Why the temporary folder cannot take the SavedModel the converter writes of ``part`` first (its float32
    weights and :data:`_SAVED_MODEL_SLACK_BYTES`), or None: TensorFlow's converter says nothing when that write
    fails (a full disk) and goes on by another way, whose model has no signature; the error it then gave blamed the
    model ("SignatureDef signature_key is None", or ops that are not builtin)."""
    size = sum(int(np.prod(w.shape)) for w in part.weights) * 4 + _SAVED_MODEL_SLACK_BYTES
    chunk = bytes(min(size, _PROBE_CHUNK_BYTES))
    try:
        with tempfile.TemporaryFile(prefix=".edgesense-room-") as probe:  # removed when closed
            for start in range(0, size, len(chunk)):
                os.write(probe.fileno(), chunk[:size - start])
    except OSError as exc:
        return f"{tempfile.gettempdir()}: {exc.strerror or exc}"
    return None


def _refuse_without_temporary_room(key: str, mode: str, part: Any, cause: BaseException | None) -> None:
    """OSError naming the temporary folder when it has no room for the converter's files of ``part``."""
    problem = _temporary_room_problem(part)
    if problem is not None:
        raise OSError(f"part {PART_NAMES[key]!r} cannot be converted to {mode} TFLite: the converter's temporary "
                      f"files do not fit in {problem}; free space there, or set TMPDIR to a folder with "
                      "room") from cause


def _convert_part(key: str, function: Callable, part: Any, mode: str,
                  representative: Callable[[], Iterator[dict[str, np.ndarray]]] | None) -> bytes:
    tf = _import_tf()
    # The converter saves the function's captured variables only when they are tracked
    # by a tf.Module; Keras 3 variables wrap tf.Variables in ``.value``.
    holder = tf.Module()
    holder.variables_ = [getattr(v, "value", v) for v in part.weights]
    holder.function = function
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
    try:
        with warnings.catch_warnings():
            # The calibrator uses tf.lite.Interpreter, which warns that it is deprecated.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            model = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types (ConverterError, RuntimeError...)
        _refuse_without_temporary_room(key, mode, part, exc)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        op_lines = [ln for ln in lines if ln.startswith(_UNSUPPORTED_OP_PREFIXES)]
        errors = [ln.split("error:", 1)[1].strip() for ln in lines if "error:" in ln]
        detail = "; ".join(op_lines or errors or lines[:1])[:_MAX_ERROR_CHARS] or type(exc).__name__
        raise ValueError(f"part {PART_NAMES[key]!r} cannot be converted to {mode} TFLite "
                         f"with builtin ops only: {detail}") from exc
    if len(_read_model_object(model).signatureDefs or []) != 1:
        _refuse_without_temporary_room(key, mode, part, None)
        raise ValueError(f"part {PART_NAMES[key]!r} cannot be converted to {mode} TFLite: the converter gave a model "
                         "without its signature (TensorFlow could not save the part as a SavedModel)")
    check_builtin_ops(model, f"part {PART_NAMES[key]!r}")
    if mode == "int8":
        _check_full_integer(model, key)
    return bytes(model)


def _read_model_object(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _opcode(op: Any) -> int:
    return max(int(op.builtinCode), int(op.deprecatedBuiltinCode))


def check_builtin_ops(model: bytes, what: str = "model") -> list[str]:
    """Names of the model's operators; ValueError when any is a custom or Flex (TF select) op."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = _read_model_object(model)
    names, bad = [], []
    for index, op in enumerate(obj.operatorCodes or []):
        if _opcode(op) == CUSTOM_BUILTIN_CODE or op.customCode:
            custom = op.customCode.decode() if isinstance(op.customCode, bytes) else str(op.customCode or "")
            bad.append(custom or "CUSTOM")
        else:
            names.append(flatbuffer_utils.opcode_to_name(obj, index))
    if bad:
        raise ValueError(f"{what} needs ops outside the TFLite builtins (Flex/custom): {', '.join(sorted(set(bad)))}")
    return names


def _check_full_integer(model: bytes, key: str) -> None:
    """int8 inputs and outputs, and no float tensor anywhere (int8 weights and activations)."""
    obj = _read_model_object(model)
    graph = obj.subgraphs[0]
    for kind, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for index in indices:
            tensor = graph.tensors[index]
            if tensor.type != TFLITE_INT8:
                raise ValueError(f"part {PART_NAMES[key]!r}: {kind} {tensor.name.decode()!r} is not int8 "
                                 f"after full-integer conversion (TFLite type {tensor.type})")
    floats = [t.name.decode() for t in graph.tensors if t.type in TFLITE_FLOAT_TYPES]
    if floats:
        raise ValueError(f"part {PART_NAMES[key]!r}: float tensors left after full-integer conversion: "
                         f"{', '.join(floats[:5])}")


def _parse_runtime_version(raw: bytes) -> tuple[int, ...]:
    text = bytes(raw).split(b"\0", 1)[0].decode("ascii", "replace")
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


def merge_tflite_parts(parts: Mapping[str, bytes], metadata: Mapping[str, bytes],
                       description: str = "EdgeSense", *, short_tensor_names: bool = True) -> bytes:
    """Merge single-subgraph models into one model with one subgraph and SignatureDef per part.

    ``parts``: signature key -> a converted single-signature model whose signature
    input/output names are :data:`edgesense.runtime.model.SIGNATURE_INPUTS` / ``SIGNATURE_OUTPUTS``.
    Operator codes are deduplicated and remapped, buffers concatenated (buffer 0 stays
    the empty sentinel), ``min_runtime_version`` is the highest of the parts', and each
    ``metadata`` entry (name -> bytes) is added with its own buffer. ``short_tensor_names``
    renames the intermediate tensors ``KEY/INDEX``: the converter names them after the fused
    op chain (hundreds of bytes each, about 7 % of the file); inputs and outputs keep theirs.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    merged = schema.ModelT()
    merged.version = 3
    merged.description = description.encode()
    merged.operatorCodes, merged.subgraphs, merged.signatureDefs, merged.metadata = [], [], [], []
    merged.buffers = [schema.BufferT()]  # buffer 0: the empty sentinel
    opcode_index: dict[tuple, int] = {}
    runtime_versions: list[bytes] = []

    for graph_index, (key, data) in enumerate(parts.items()):
        if key not in SIGNATURE_INPUTS:
            raise ValueError(f"parts: unknown signature {key!r}; expected some of {', '.join(SIGNATURE_INPUTS)}")
        part = _read_model_object(data)
        if len(part.subgraphs) != 1:
            raise ValueError(f"part {key!r}: expected 1 subgraph, got {len(part.subgraphs)} "
                             "(control flow is not supported)")
        if len(part.signatureDefs or []) != 1:
            raise ValueError(f"part {key!r}: expected 1 SignatureDef, got {len(part.signatureDefs or [])}")
        # Operator codes.
        local_ops = []
        for op in part.operatorCodes or []:
            ident = (_opcode(op), op.customCode, op.version)
            if ident not in opcode_index:
                opcode_index[ident] = len(merged.operatorCodes)
                merged.operatorCodes.append(op)
            local_ops.append(opcode_index[ident])
        # Buffers (0 -> 0).
        local_buffers = [0]
        for buffer in part.buffers[1:]:
            local_buffers.append(len(merged.buffers))
            merged.buffers.append(buffer)
        graph = part.subgraphs[0]
        boundary = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
        for i, tensor in enumerate(graph.tensors or []):
            tensor.buffer = local_buffers[tensor.buffer]
            if short_tensor_names and i not in boundary:
                tensor.name = f"{key}/{i}".encode()
        for op in graph.operators or []:
            op.opcodeIndex = local_ops[op.opcodeIndex]
        graph.name = key.encode()
        merged.subgraphs.append(graph)
        # Signature: rename to the contract's key and check the tensor names.
        sig = part.signatureDefs[0]
        for kind, expected, maps in (("inputs", SIGNATURE_INPUTS[key], sig.inputs or []),
                                     ("outputs", SIGNATURE_OUTPUTS[key], sig.outputs or [])):
            got = sorted(m.name.decode() for m in maps)
            if got != sorted(expected):
                raise ValueError(f"part {key!r}: signature {kind}: expected {sorted(expected)}, got {got}")
        by_name = {m.name.decode(): m for m in sig.inputs}
        sig.inputs = [by_name[name] for name in SIGNATURE_INPUTS[key]]
        by_name = {m.name.decode(): m for m in sig.outputs}
        sig.outputs = [by_name[name] for name in SIGNATURE_OUTPUTS[key]]
        sig.signatureKey = key.encode()
        sig.subgraphIndex = graph_index
        merged.signatureDefs.append(sig)
        for entry in part.metadata or []:
            if entry.name == b"min_runtime_version":
                runtime_versions.append(bytes(np.asarray(part.buffers[entry.buffer].data, dtype=np.uint8)))

    entries = dict(metadata)
    if runtime_versions:
        entries = {"min_runtime_version": max(runtime_versions, key=_parse_runtime_version), **entries}
    for name, payload in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(payload), dtype=np.uint8).copy()
        entry = schema.MetadataT()
        entry.name = name.encode()
        entry.buffer = len(merged.buffers)
        merged.buffers.append(buffer)
        merged.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(merged))


def split_tflite_parts(data: bytes) -> dict[str, bytes]:
    """The inverse of :func:`merge_tflite_parts`: signature key -> a single-subgraph model of that
    signature alone (its tensors, operators and buffers; the model's ``min_runtime_version``), so
    that a deployed model's parts can be merged again with one of them replaced (``edgesense adapt``)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    keys = [sig.signatureKey.decode() for sig in _read_model_object(data).signatureDefs or []]
    parts: dict[str, bytes] = {}
    for position, key in enumerate(keys):
        source = _read_model_object(data)  # a fresh copy: the objects below are moved into the part
        sig = source.signatureDefs[position]
        graph = source.subgraphs[sig.subgraphIndex]
        used = sorted({int(t.buffer) for t in graph.tensors or []} - {0})
        remap = {0: 0, **{b: i + 1 for i, b in enumerate(used)}}
        for tensor in graph.tensors or []:
            tensor.buffer = remap[int(tensor.buffer)]
        part = schema.ModelT()
        part.version = source.version
        part.description = source.description
        part.operatorCodes = source.operatorCodes
        part.buffers = [schema.BufferT()] + [source.buffers[b] for b in used]
        part.subgraphs = [graph]
        sig.subgraphIndex = 0
        part.signatureDefs = [sig]
        part.metadata = []
        for entry in source.metadata or []:
            if entry.name == b"min_runtime_version":
                payload = source.buffers[entry.buffer]
                entry.buffer = len(part.buffers)
                part.buffers.append(payload)
                part.metadata.append(entry)
        parts[key] = bytes(flatbuffer_utils.convert_object_to_bytearray(part))
    return parts


def _verify_merged(merged: bytes, parts: Mapping[str, bytes]) -> None:
    """Run every signature of the merged model and of its part on one random input: bit-exact or RuntimeError."""
    rng = np.random.default_rng(0)
    merged_interp = make_interpreter(merged)
    available = merged_interp.get_signature_list()
    for key, data in parts.items():
        if key not in available:
            raise RuntimeError(f"merged model lacks signature {key!r} (has {sorted(available)})")
        part_runner = make_interpreter(data).get_signature_runner()
        merged_runner = merged_interp.get_signature_runner(key)
        feeds = {}
        for name, detail in merged_runner.get_input_details().items():
            params = QuantParams.from_detail(detail)
            feeds[name] = quantize(rng.uniform(-1.0, 1.0, detail["shape"]).astype(np.float32), params)
        want, got = part_runner(**feeds), merged_runner(**feeds)
        for name in SIGNATURE_OUTPUTS[key]:
            if not np.array_equal(want[name], got[name]):
                raise RuntimeError(f"merged model: signature {key!r} output {name!r} differs from the separate part")


# --------------------------------------------------------------------------- metadata

#: An absolute path in shipped metadata keeps this many trailing parts ("data/speech_commands").
PORTABLE_PATH_PARTS = 2


def _absolute_path(text: str) -> PurePath | None:
    if not text or any(c.isspace() for c in text):
        return None
    for flavour in (PurePosixPath, PureWindowsPath):
        path = flavour(text)
        if path.is_absolute() and len(path.parts) > 1:
            return path
    return None


def portable_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path cut to its last :data:`PORTABLE_PATH_PARTS`
    parts (``/home/me/shared/data/speech_commands`` -> ``data/speech_commands``): metadata that
    ships with a model names the data, never the build machine's folders."""
    if isinstance(value, Mapping):
        return {key: portable_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_paths(item) for item in value]
    if isinstance(value, str):
        path = _absolute_path(value)
        if path is not None:
            return "/".join(path.parts[-PORTABLE_PATH_PARTS:])
    return value


def _weights_sha256(model: Any) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _io_spec(data: bytes, key: str) -> dict[str, Any]:
    runner = make_interpreter(data).get_signature_runner()
    out: dict[str, Any] = {}
    for kind, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
        out[kind] = {name: {"shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
                     for name, d in details.items()}
    return out


def _part_weight_bytes(data: bytes) -> int:
    obj = _read_model_object(data)
    used = {t.buffer for t in obj.subgraphs[0].tensors}
    return int(sum(len(obj.buffers[b].data) if obj.buffers[b].data is not None else 0 for b in used if b > 0))


def parts_version_hash(parts: Mapping[str, bytes]) -> str:
    """The first :data:`VERSION_HASH_CHARS` hex digits of the sha256 of the parts (by signature
    name): the ``model_version`` suffix of a file assembled from parts (``edgesense adapt``)."""
    digest = hashlib.sha256()
    for key in sorted(parts):
        digest.update(key.encode())
        digest.update(parts[key])
    return digest.hexdigest()[:VERSION_HASH_CHARS]


def part_metadata(parts: Mapping[str, bytes]) -> dict[str, Any]:
    """The metadata entries that describe the parts: each signature's inputs and outputs, the
    bytes of its weights and of its whole single-signature model."""
    return {"signatures": {key: _io_spec(data, key) for key, data in parts.items()},
            "part_bytes": {key: _part_weight_bytes(data) for key, data in parts.items()},
            "part_model_bytes": {key: len(data) for key, data in parts.items()}}


def build_metadata(run: RunFolder, parts: Mapping[str, bytes], options: QuantizeOptions,
                   calibration_counts: Mapping[str, int]) -> dict[str, Any]:
    """The metadata JSON embedded as ``Model.metadata['edgesense']``."""
    tf = _import_tf()
    info = run.info
    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "format_version": METADATA_FORMAT_VERSION,
        "name": options.name or info.get("name") or run.path.name,
        "model_version": f"{now:%Y%m%d}-{_weights_sha256(run.model)[:VERSION_HASH_CHARS]}",
        "created": now.isoformat(timespec="seconds"),
        "source_run": {"path": run.path.name, "name": info.get("name"), "created": info.get("created")},
        "labels": {"command": list(run.command_labels), "scene": list(run.scene_labels)},
        "audio_frontend": run.audio_frontend.to_dict(),
        "image_frontend": run.image_frontend.to_dict(),
        "embedding_dims": {"audio": run.audio_embedding_dim, "image": run.image_embedding_dim},
        "quantization": {
            "mode": options.mode,
            "io_dtype": "int8" if options.mode == "int8" else "float32",
            "calibration_samples": dict(calibration_counts),
            # An encoder the run never trained (no real sample): calibrated on stand-ins (stand_in_inputs).
            "stand_in_samples": {key: STAND_IN_SAMPLES for key in ("encode_audio", "encode_image")
                                 if calibration_counts.get(key) == 0},
            "fusion_presence_patterns": [list(p) for p in FUSION_PRESENCE_PATTERNS] if options.mode == "int8" else [],
        },
        **part_metadata(parts),
        "fusion_strategy": info.get("fusion_strategy"),
        "params": info.get("params", {}),
        "macs": info.get("macs", {}),
        "data": portable_paths(info.get("data", {})),
        "metrics": info.get("metrics", {}),
        "converter": {"tensorflow": tf.__version__},
    }


# --------------------------------------------------------------------------- entry point


def _check_writable(out_path: Path, *, replace: bool = True) -> None:
    """Fail early (OSError naming the path) when ``out_path`` cannot be written; unless ``replace``,
    also when it already exists (a model already there, a user's or an earlier conversion, is never
    replaced unasked: ValueError)."""
    if out_path.is_dir():
        raise IsADirectoryError(f"output path {out_path} is a folder; expected a .tflite file path")
    refuse_existing("out_path", out_path, force=replace, force_flag="force=True")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_path.parent, prefix=".probe-", delete=True):
            pass
    except OSError as exc:
        raise OSError(f"cannot write the output model {out_path}: {exc.strerror or exc}") from exc


def fuse_samples(audio: np.ndarray, image: np.ndarray, count: int) -> Iterator[dict[str, np.ndarray]]:
    """``count`` representative inputs of ``fuse``: sample ``i`` is ``audio[i % len]`` and
    ``image[i % len]`` under the presence pattern ``i`` of :data:`FUSION_PRESENCE_PATTERNS` (cycled),
    an absent embedding zeroed as the device does."""
    for i in range(count):
        a_on, v_on = FUSION_PRESENCE_PATTERNS[i % len(FUSION_PRESENCE_PATTERNS)]
        yield {
            "audio_embedding": (audio[i % len(audio)] * a_on)[None].astype(np.float32),
            "image_embedding": (image[i % len(image)] * v_on)[None].astype(np.float32),
            "audio_present": np.full((1, 1), a_on, np.float32),
            "image_present": np.full((1, 1), v_on, np.float32),
        }


def stand_in_inputs(run: RunFolder, key: str, count: int = STAND_IN_SAMPLES) -> np.ndarray:
    """``count`` inputs of the calibration array ``key`` (``audio_features`` or ``image``) for an
    encoder that the run never trained: log-mel features of white noise from
    :data:`STAND_IN_NOISE_DBFS` low to high, or photos of uniform pixels. They set the untrained
    part's int8 ranges over what the device can feed it; its outputs mean nothing either way."""
    rng = np.random.default_rng(STAND_IN_SEED)
    if key == "image":
        shape = (count, *run.image_frontend.input_shape)
        return rng.integers(0, PIXEL_RANGE, size=shape, dtype=np.int64).astype(np.uint8)
    if key != "audio_features":
        raise ValueError(f"key: expected 'audio_features' or 'image', got {key!r}")
    frontend = run.audio_frontend
    levels = 10.0 ** (np.linspace(*STAND_IN_NOISE_DBFS, count) / 20.0)
    clips = levels[:, None] * np.clip(rng.standard_normal((count, frontend.clip_samples)), -1.0, 1.0)
    return log_mel_batch(clips.astype(np.float32), frontend)


def _representative_sets(run: RunFolder, options: QuantizeOptions) -> tuple[dict[str, Callable], dict[str, int]]:
    calibration = load_calibration(run)
    audio = calibration["audio_features"][_spread(len(calibration["audio_features"]), options.calibration_samples)]
    image = calibration["image"][_spread(len(calibration["image"]), options.calibration_samples)]
    where = run.path / CALIBRATION_FILE
    if len(audio) == 0 and len(image) == 0:
        raise ValueError(f"{where}: 'audio_features' has no samples; full-integer int8 needs a representative set, "
                         "and 'image' has none either")
    # A run that trained one modality: its other encoder is untrained, calibrated on stand-ins.
    real = {"encode_audio": len(audio), "encode_image": len(image)}
    if len(audio) == 0:
        logger.warning("%s: no audio samples (the run trained no commands): encode_audio is calibrated on "
                       "%d stand-in noise clips and its command head means nothing", where, STAND_IN_SAMPLES)
        audio = stand_in_inputs(run, "audio_features")
    elif len(image) == 0:
        logger.warning("%s: no photos (the run trained no scenes): encode_image is calibrated on %d stand-in "
                       "photos and its scene head means nothing", where, STAND_IN_SAMPLES)
        image = stand_in_inputs(run, "image")
    audio_emb = float_embeddings(run.audio_encoder, audio)
    image_emb = float_embeddings(run.image_encoder, image.astype(np.float32))
    n_fuse = options.fusion_calibration_samples or max(len(audio), len(image))

    def audio_set():
        for x in audio:
            yield {"audio_features": x[None].astype(np.float32)}

    def image_set():
        for x in image:
            yield {"image": x[None].astype(np.float32)}

    def fuse_set():
        return fuse_samples(audio_emb, image_emb, n_fuse)

    counts = {**real, "fuse": n_fuse}
    return {"encode_audio": audio_set, "encode_image": image_set, "fuse": fuse_set}, counts


def convert_parts(run: RunFolder,
                  options: QuantizeOptions = QuantizeOptions()) -> tuple[dict[str, bytes], dict[str, int]]:
    """Convert each part alone: ({signature key: single-signature .tflite bytes}, calibration counts)."""
    from edgesense.train.data import phase

    if options.mode == "int8":
        representative, counts = _representative_sets(run, options)
    else:
        representative, counts = {}, {}
    parts = {}
    for key, (function, part) in _part_functions(run).items():
        calibrated = f", calibrated on {counts[key]} samples" if key in representative and counts.get(key) else ""
        with phase(logger, "converting %s (%s) to %s%s", PART_NAMES[key], key, options.mode, calibrated):
            parts[key] = _convert_part(key, function, part, options.mode, representative.get(key))
    return parts, counts


def merged_model(parts: Mapping[str, bytes], metadata: Mapping[str, Any], what: str) -> bytes:
    """``parts`` merged into one model with ``metadata`` embedded; its ops checked (``what`` names it
    in errors) and every signature checked against its part."""
    payload = json.dumps(metadata, indent=None, sort_keys=True, default=str).encode("utf-8")
    merged = merge_tflite_parts(parts, {METADATA_NAME: payload}, description=f"EdgeSense {metadata['name']}")
    check_builtin_ops(merged, what)
    _verify_merged(merged, parts)
    return merged


def write_merged(parts: Mapping[str, bytes], metadata: Mapping[str, Any], out_path: Path, *,
                 shown_as: Path | None = None) -> int:
    """:func:`merged_model`, written to ``out_path`` atomically; returns the file's size. ``shown_as``: the
    path the log names (default ``out_path``), where the caller renames the file there once it is complete."""
    merged = merged_model(parts, metadata, str(out_path))
    write_atomic(out_path, merged)
    logger.info("wrote %s (%d bytes; parts %s)", shown_as or out_path, len(merged), metadata["part_bytes"])
    return len(merged)


def convert_run(run_dir: str | os.PathLike, out_path: str | os.PathLike,
                options: QuantizeOptions = QuantizeOptions(), *, force: bool = False,
                shown_as: str | os.PathLike | None = None) -> ExportResult:
    """Convert a run folder to one ``.tflite`` (three signatures + metadata) at ``out_path``; a file
    already at ``out_path`` is refused (ValueError) unless ``force``. ``shown_as``: the path the log
    names as written (default ``out_path``): the caller's final one, when ``out_path`` is a hidden
    file that it renames there once more is done (``quantize --report``)."""
    out_path = Path(out_path)
    _require_run_files(run_dir)  # cheap checks first, then the output, then the slow model load
    _check_writable(out_path, replace=force)
    run = load_run(run_dir)
    parts, counts = convert_parts(run, options)
    metadata = build_metadata(run, parts, options, counts)
    size = write_merged(parts, metadata, out_path, shown_as=None if shown_as is None else Path(shown_as))
    return ExportResult(path=out_path, mode=options.mode, size_bytes=size,
                        part_bytes=dict(metadata["part_bytes"]), metadata=metadata, calibration_counts=counts)
