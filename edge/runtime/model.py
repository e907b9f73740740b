"""The deployed EdgeSense model: one ``.tflite`` with three signatures and embedded metadata.

``encode_audio(audio_features) -> audio_embedding`` and ``encode_image(image) ->
image_embedding`` run at their own rates; ``fuse(audio_embedding, image_embedding,
audio_present, image_present) -> command, scene`` combines the latest embeddings. Each
signature has its own quantization parameters, so an embedding is dequantized when it
leaves its encoder and quantized again for ``fuse`` (both through :mod:`edgesense.runtime.quant`).
Float models (float16 / dynamic-range exports) run through the same code: their
float tensors pass through :mod:`edgesense.runtime.quant` unchanged. Inputs of the wrong shape
or dtype, and NaN or infinite values, are refused with a ValueError naming the signature and input.
``fuse`` answers probabilities (its heads end in a softmax): a model whose ``fuse`` answers anything else
(logits) is refused when it is loaded, naming the file and the output.

``edgesense inspect MODEL`` prints what this loads (:mod:`edgesense.app.inspect`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.runtime.flatbuffer import ModelLayout, read_layout
from edgesense.runtime.interpreter import InterpreterOptions, make_interpreter, read_model_bytes
from edgesense.runtime.quant import QuantParams, dequantize, quantize
from edgesense.schema.validate import is_int, one_line, require

__all__ = ["METADATA_NAME", "METADATA_FORMAT_VERSION", "PART_NAMES", "SIGNATURE_INPUTS", "SIGNATURE_OUTPUTS",
           "EdgeModel", "SignatureInfo", "embedded_metadata", "labels_and_frontends"]


#: Name of the ``Model.metadata`` entry holding EdgeSense's metadata JSON (UTF-8).
DEFAULT_MODEL_PATH = "models/edgesense.tflite"
METADATA_NAME = "edgesense"
METADATA_FORMAT_VERSION = 1
#: Signature key -> the Keras sub-model it was converted from.
PART_NAMES = {"encode_audio": "audio_encoder", "encode_image": "image_encoder", "fuse": "fusion_head"}
SIGNATURE_INPUTS: Mapping[str, tuple[str, ...]] = {
    "encode_audio": ("audio_features",),
    "encode_image": ("image",),
    "fuse": ("audio_embedding", "image_embedding", "audio_present", "image_present"),
}
SIGNATURE_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "encode_audio": ("audio_embedding",),
    "encode_image": ("image_embedding",),
    "fuse": ("command", "scene"),
}
PRESENT, ABSENT = 1.0, 0.0
_MS_PER_S = 1000.0
#: How far the sum of a probe's ``fuse`` output may be from 1, beyond half a quantization step per class: a
#: float softmax sums to 1 within 1e-6, an int8 one (steps of 1/256) within about 0.5 % of 12 classes.
_PROBABILITY_SUM_TOLERANCE = 0.02
_BYTES_PER_KB = 1024


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: name, shape (with the batch axis), dtype, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: QuantParams


@dataclass(frozen=True)
class SignatureInfo:
    """A signature's tensors and the subgraph that runs it."""

    key: str
    subgraph_index: int
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]


def _tensor_info(name: str, detail: Mapping[str, Any]) -> TensorInfo:
    try:
        quant = QuantParams.from_detail(detail)
    except ValueError as exc:
        raise ValueError(f"tensor {name!r} {exc}") from None
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and not quant.is_quantized:  # every EdgeSense input and output is real
        raise ValueError(f"tensor {name!r}: expected quantization parameters (scale > 0) for its {dtype} values, "
                         f"got none (scale 0)")
    return TensorInfo(name=name, shape=tuple(int(s) for s in detail["shape"]), dtype=dtype, quant=quant)


def _check_quantization_metadata(what: str, quantization: Any) -> None:
    """The metadata's ``quantization`` section, read by :attr:`EdgeModel.untrained_encoders` and
    ``edgesense inspect``: absent, or a mapping whose ``stand_in_samples`` is absent or a mapping
    of signature keys (the encoders calibrated on stand-in inputs) to sample counts."""
    require(quantization is None or isinstance(quantization, dict), f"{what}: metadata quantization",
            "a mapping", quantization)
    stand_ins = (quantization or {}).get("stand_in_samples")
    require(stand_ins is None or (isinstance(stand_ins, dict) and all(key in SIGNATURE_INPUTS for key in stand_ins)),
            f"{what}: metadata quantization.stand_in_samples",
            f"a mapping of signature keys ({', '.join(SIGNATURE_INPUTS)}) to sample counts", stand_ins)


def embedded_metadata(layout: ModelLayout, what: str) -> dict[str, Any]:
    """The metadata JSON that ``edgesense quantize`` embeds; ValueError naming ``what`` when it is
    missing or not a JSON object."""
    raw = layout.metadata.get(METADATA_NAME)
    if raw is None:
        raise ValueError(f"{what}: no {METADATA_NAME!r} metadata in the model (has "
                         f"{sorted(layout.metadata) or 'none'}); convert it with 'edgesense quantize'")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: the {METADATA_NAME!r} metadata is not UTF-8 JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ValueError(f"{what}: the {METADATA_NAME!r} metadata is not a JSON object")
    return metadata


def _names(value: Any) -> bool:
    """A non-empty list of class names."""
    return isinstance(value, list) and bool(value) and all(isinstance(x, str) for x in value)


def labels_and_frontends(info: Mapping[str, Any], where: str
                         ) -> tuple[dict[str, list[str]], AudioFrontendOptions, ImageFrontendOptions]:
    """The ``labels`` and frontend parameters shared by a model's metadata and a run's
    ``run.json``; ValueError prefixed with ``where`` when they are malformed."""
    labels = info.get("labels")
    if (not isinstance(labels, dict) or not _names(labels.get("command")) or not _names(labels.get("scene"))):
        raise ValueError(f"{where} labels: expected {{'command': [...], 'scene': [...]}}, got {labels!r}")
    for kind in ("command", "scene"):  # the recognizers take each label once (events name them)
        names = labels[kind]
        if "" in names or len(set(names)) != len(names):
            raise ValueError(f"{where} labels.{kind}: expected distinct, non-empty names, got {names!r}")
    try:
        audio_frontend = AudioFrontendOptions.from_dict(info.get("audio_frontend", {}))
        image_frontend = ImageFrontendOptions.from_dict(info.get("image_frontend", {}))
    except ValueError as exc:
        raise ValueError(f"{where} {exc}") from exc
    return labels, audio_frontend, image_frontend


@dataclass(frozen=True, kw_only=True)
class ModelOptions(InterpreterOptions):
    """A deployed model file and how to run it (the ``model:`` section of a device config).

    A relative ``path`` in a device config resolves against the config file's folder.
    """

    path: str = DEFAULT_MODEL_PATH

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"path: expected a path to a .tflite file, got {self.path!r}")
        super().__post_init__()

    def interpreter_options(self) -> InterpreterOptions:
        """The interpreter part alone."""
        return InterpreterOptions(num_threads=self.num_threads, delegate=self.delegate,
                                  delegate_library=self.delegate_library)


class EdgeModel:
    """A loaded EdgeSense model. Create with :meth:`load`."""

    def __init__(self, *, path: str, interpreter: Any, metadata: Mapping[str, Any],
                 audio_frontend: AudioFrontendOptions, image_frontend: ImageFrontendOptions,
                 signatures: Mapping[str, SignatureInfo], part_bytes: Mapping[str, int], size_bytes: int) -> None:
        self.path = path
        self._interpreter = interpreter
        self._metadata = dict(metadata)
        self._audio_frontend = audio_frontend
        self._image_frontend = image_frontend
        self._signatures = dict(signatures)
        self._runners = {key: interpreter.get_signature_runner(key) for key in SIGNATURE_INPUTS}
        # fuse's inputs that are the same on every call, quantized once (each call quantized them afresh, a third
        # of the fusion stage's time): the presence flags, (flag, PRESENT or ABSENT), and an absent modality's
        # embedding, (name, None): zeros
        fuse = self._signatures["fuse"].inputs
        self._fuse_constants = {
            (name, value): self._quantized("fuse", name,
                                           np.full(fuse[name].shape, 0.0 if value is None else value, np.float32))
            for name, value in (("audio_present", PRESENT), ("audio_present", ABSENT), ("image_present", PRESENT),
                                ("image_present", ABSENT), ("audio_embedding", None), ("image_embedding", None))}
        for constant in self._fuse_constants.values():
            constant.flags.writeable = False
        #: The interpreter runs one inference at a time: pipelines sharing this model (one per camera, each
        #: on its thread) take turns.
        self._lock = threading.Lock()
        self._part_bytes = dict(part_bytes)
        self._size_bytes = size_bytes
        self.last_timings_ms: dict[str, float] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: bytes | bytearray | str | os.PathLike, options: InterpreterOptions = InterpreterOptions(),
             expected_audio_frontend: AudioFrontendOptions | None = None, *, name: str | None = None) -> "EdgeModel":
        """Load a model written by ``edgesense quantize`` (a path, or the model's bytes; ``name``: what
        messages and :attr:`path` call it, e.g. the file bytes were read from, once, by the caller).

        Raises ValueError naming the file when the metadata is missing or malformed, a
        signature is missing, an input/output has the wrong shape, or the model's audio
        frontend differs from ``expected_audio_frontend`` (naming each differing field).
        """
        require(isinstance(options, InterpreterOptions), "options", "InterpreterOptions (or ModelOptions)", options)
        data, what = read_model_bytes(path)
        what = name or what
        layout = read_layout(data, what)
        metadata = embedded_metadata(layout, what)
        if metadata.get("kind") is not None:  # e.g. the second opinion's stream heads, given as the model
            raise ValueError(f"{what}: expected an EdgeSense model ('edgesense quantize'; no metadata kind), got a "
                             f"file of metadata kind {metadata.get('kind')!r}" + (
                                 " (stream heads go in a config's second_opinion.heads_path)"
                                 if metadata.get("kind") == "stream_heads" else ""))
        version = metadata.get("format_version")
        if not (is_int(version) and version == METADATA_FORMAT_VERSION):
            raise ValueError(f"{what}: metadata format_version: expected {METADATA_FORMAT_VERSION}, "
                             f"got {version!r}")
        labels, audio_frontend, image_frontend = labels_and_frontends(metadata, f"{what}: metadata")
        _check_quantization_metadata(what, metadata.get("quantization"))
        if expected_audio_frontend is not None and expected_audio_frontend != audio_frontend:
            diffs = [f"{f.name}: model has {getattr(audio_frontend, f.name)!r}, "
                     f"expected {getattr(expected_audio_frontend, f.name)!r}"
                     for f in dataclasses.fields(AudioFrontendOptions)
                     if getattr(audio_frontend, f.name) != getattr(expected_audio_frontend, f.name)]
            raise ValueError(f"{what}: audio frontend mismatch ({'; '.join(diffs)})")

        interpreter = make_interpreter(data, options, name=what)
        available = interpreter.get_signature_list()
        signatures = {}
        for key in SIGNATURE_INPUTS:
            if key not in available:
                raise ValueError(f"{what}: missing signature {key!r} (has {sorted(available) or 'none'})")
            try:  # a damaged file can hold names that are not UTF-8, or quantization no tensor can have
                runner = interpreter.get_signature_runner(key)
                inputs, outputs = runner.get_input_details(), runner.get_output_details()
                for kind, want, got in (("inputs", SIGNATURE_INPUTS[key], inputs),
                                        ("outputs", SIGNATURE_OUTPUTS[key], outputs)):
                    if sorted(got) != sorted(want):
                        raise ValueError(f"{kind}: expected {sorted(want)}, got {sorted(got)}")
                signatures[key] = SignatureInfo(
                    key=key, subgraph_index=layout.signatures.get(key, -1),
                    inputs={n: _tensor_info(n, inputs[n]) for n in SIGNATURE_INPUTS[key]},
                    outputs={n: _tensor_info(n, outputs[n]) for n in SIGNATURE_OUTPUTS[key]},
                )
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{what}: signature {key!r} {one_line(exc)}") from None
        _check_shapes(what, signatures, audio_frontend, image_frontend,
                      len(labels["command"]), len(labels["scene"]))
        for key, sig in signatures.items():  # prepared now: a file the interpreter cannot run fails here, named
            try:
                interpreter.get_signature_runner(key)(**{n: np.zeros(t.shape, t.dtype) for n, t in sig.inputs.items()})
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"{what}: signature {key!r} cannot run ({one_line(exc)})") from None
        part_bytes = {key: layout.subgraph_weight_bytes[sig.subgraph_index]
                      for key, sig in signatures.items() if 0 <= sig.subgraph_index < len(layout.subgraph_weight_bytes)}
        model = cls(path=what, interpreter=interpreter, metadata=metadata, audio_frontend=audio_frontend,
                    image_frontend=image_frontend, signatures=signatures, part_bytes=part_bytes,
                    size_bytes=len(data))
        model._check_probabilities()
        model.last_timings_ms.clear()  # the probe's are no inference of the caller's
        return model

    def _check_probabilities(self) -> None:
        """``fuse`` must answer probabilities (a softmax: each in [0, 1], summing to 1), as the recognizers,
        the second opinion's blend and the events read them: a head that ends in logits is refused, naming the
        file and the output. Probed with both modalities present, their embeddings zero (not both absent: a
        ``weighted_sum`` fusion divides by the present modalities' weights, and the loop never asks it that)."""
        outputs = self._signatures["fuse"].outputs
        zeros = {name: np.zeros(self._signatures["fuse"].inputs[name].shape[1:], np.float32)
                 for name in ("audio_embedding", "image_embedding")}
        for probe, audio, image in (("zero embeddings", zeros["audio_embedding"], zeros["image_embedding"]),):
            for name, values in zip(("command", "scene"), self.fuse(audio, image)):
                step = outputs[name].quant.scale
                low, high, total = float(values.min()), float(values.max()), float(values.sum())
                if (np.isfinite(values).all() and low >= -step and high <= 1.0 + step
                        and abs(total - 1.0) <= _PROBABILITY_SUM_TOLERANCE + values.size * step / 2):
                    continue
                raise ValueError(f"{self.path}: signature 'fuse' output {name!r}: expected probabilities (each in "
                                 f"[0, 1], summing to 1: a softmax), got values in [{low:.4g}, {high:.4g}] summing "
                                 f"to {total:.4g} ({probe}); a head that ends in logits needs a softmax layer")

    # ------------------------------------------------------------------ properties

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def command_labels(self) -> tuple[str, ...]:
        return tuple(self._metadata["labels"]["command"])

    @property
    def scene_labels(self) -> tuple[str, ...]:
        return tuple(self._metadata["labels"]["scene"])

    @property
    def audio_frontend(self) -> AudioFrontendOptions:
        return self._audio_frontend

    @property
    def image_frontend(self) -> ImageFrontendOptions:
        return self._image_frontend

    @property
    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self._signatures

    @property
    def size_bytes(self) -> int:
        """Size of the whole .tflite file."""
        return self._size_bytes

    @property
    def part_bytes(self) -> dict[str, int]:
        """Per signature: bytes of the constant buffers (weights) its subgraph references."""
        return dict(self._part_bytes)

    @property
    def untrained_encoders(self) -> frozenset[str]:
        """The encoders (``encode_audio``, ``encode_image``) the model's training never fed: those of
        a speech-only or scenes-only recipe, which ``edgesense quantize`` calibrated on stand-in inputs
        (``quantization.stand_in_samples``); what their modality's head says means nothing."""
        quantization = self._metadata.get("quantization")
        stand_ins = quantization.get("stand_in_samples") if isinstance(quantization, Mapping) else None
        return frozenset(key for key in (stand_ins or ()) if key in ("encode_audio", "encode_image"))

    @property
    def audio_embedding_dim(self) -> int:
        return self._signatures["encode_audio"].outputs["audio_embedding"].shape[-1]

    @property
    def image_embedding_dim(self) -> int:
        return self._signatures["encode_image"].outputs["image_embedding"].shape[-1]

    # ------------------------------------------------------------------ inference

    def _quantized(self, key: str, name: str, value: np.ndarray) -> np.ndarray:
        """A real input of signature ``key`` as the interpreter takes it (shape with the batch axis, dtype)."""
        info = self._signatures[key].inputs[name]
        return quantize(value.reshape(info.shape), info.quant)

    def _run(self, key: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Signature ``key`` on its inputs, quantized (:meth:`_quantized`); its outputs as reals."""
        sig = self._signatures[key]
        with self._lock:  # one inference at a time (interleaved, two threads' answers were each other's)
            start = time.perf_counter()
            raw = self._runners[key](**feeds)
            self.last_timings_ms[key] = (time.perf_counter() - start) * _MS_PER_S
            return {name: dequantize(raw[name], info.quant).reshape(-1) for name, info in sig.outputs.items()}

    def _checked(self, value: Any, key: str, name: str) -> np.ndarray:
        info = self._signatures[key].inputs[name]
        array = np.asarray(value)
        want = info.shape[1:]
        if array.shape != want and array.shape != info.shape:
            raise ValueError(f"{key}: {name}: expected shape {want}, got {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{key}: {name}: expected real numbers, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            array = array.astype(np.float32, copy=False)
        finite = np.isfinite(array)
        if not finite.all():  # a float model would answer NaN probabilities, an int8 one saturate
            raise ValueError(f"{key}: {name}: expected finite float32 values, got {int(finite.size - finite.sum())} "
                             f"NaN or infinite of {finite.size}")
        return array

    def encode_audio(self, features: np.ndarray) -> np.ndarray:
        """Log-mel features (frames, bins) float32 -> the audio embedding, float32 (Da,)."""
        x = self._quantized("encode_audio", "audio_features", self._checked(features, "encode_audio", "audio_features"))
        return self._run("encode_audio", {"audio_features": x})["audio_embedding"]

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """An RGB image (H, W, 3) with values in [0, 255] -> the image embedding, float32 (Dv,)."""
        x = self._quantized("encode_image", "image", self._checked(image, "encode_image", "image"))
        return self._run("encode_image", {"image": x})["image_embedding"]

    def fuse(self, audio_embedding: np.ndarray | None,
             image_embedding: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (None = modality absent) -> (command probabilities, scene probabilities), float32 1-D."""
        feeds = {}
        for name, flag, value in (("audio_embedding", "audio_present", audio_embedding),
                                  ("image_embedding", "image_present", image_embedding)):
            if value is None:
                feeds[name] = self._fuse_constants[name, None]
                feeds[flag] = self._fuse_constants[flag, ABSENT]
            else:
                feeds[name] = self._quantized("fuse", name, self._checked(value, "fuse", name))
                feeds[flag] = self._fuse_constants[flag, PRESENT]
        out = self._run("fuse", feeds)
        return out["command"], out["scene"]

    def __repr__(self) -> str:
        return (f"EdgeModel({self.path!r}, {self._metadata.get('name')!r}, version "
                f"{self._metadata.get('model_version')!r}, {self._size_bytes} bytes)")


def _check_shapes(what: str, sigs: Mapping[str, SignatureInfo], audio: AudioFrontendOptions,
                  image: ImageFrontendOptions, n_commands: int, n_scenes: int) -> None:
    da = sigs["encode_audio"].outputs["audio_embedding"].shape
    dv = sigs["encode_image"].outputs["image_embedding"].shape
    expected = {
        ("encode_audio", "audio_features"): (1,) + audio.feature_shape,
        ("encode_image", "image"): (1,) + image.input_shape,
        ("fuse", "audio_embedding"): da,
        ("fuse", "image_embedding"): dv,
        ("fuse", "audio_present"): (1, 1),
        ("fuse", "image_present"): (1, 1),
        ("fuse", "command"): (1, n_commands),
        ("fuse", "scene"): (1, n_scenes),
    }
    for (key, name), want in expected.items():
        info = sigs[key].inputs.get(name) or sigs[key].outputs[name]
        if info.shape != tuple(want):
            raise ValueError(f"{what}: signature {key!r} tensor {name!r}: expected shape {tuple(want)}, "
                             f"got {info.shape}")
    for key, name in (("encode_audio", "audio_embedding"), ("encode_image", "image_embedding")):
        shape = sigs[key].outputs[name].shape
        if len(shape) != 2 or shape[0] != 1:
            raise ValueError(f"{what}: signature {key!r} tensor {name!r}: expected shape (1, D), got {shape}")
