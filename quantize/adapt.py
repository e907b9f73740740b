"""``edgesense adapt``: teach a deployed model places by retraining its fusion head alone.

Last-layer retraining in the manner of pycoral's on-device imprinting: the deployed model's
encoders (``encode_audio``, ``encode_image``) are kept bit for bit, and the command head inside
``fuse`` keeps its weights, a vision gate on it (``model.command_vision_gate``) included (frozen;
re-quantized with the new ``fuse``, its inputs on the encoders' scales, the presence flags on scales
of their own where 0 and 1 are exact, its calibration drawn apart from the photos), so command
recognition does not change: two adaptations of one model with the same places, sounds and seed
give the same command outputs bit for bit, whatever image encoder they graft. (The first adaptation
of a ``fuse`` that ``edgesense quantize`` wrote moves them once, by one 1/256 step where it does:
its command logits' int8 range is calibrated anew; one converted before the flags had scales of
their own read 1.0 as 1.02, and moves by a few 1/256.) Only the scene part of the fusion head
learns, on the model's own int8 embeddings of

* training photos (the model's recorded photo split, training part only; ``--scenes`` and/or
  the photos of a paired ``--av`` folder such as ``edgesense record`` writes), each in
  ``image_variants`` augmented copies of which ``degrade_probability`` are a poor camera
  (:mod:`edgesense.train.degrade`), and
* 1-s snippets of each class's sound: the *training* pool of ``--scene-ambient``
  (:func:`edgesense.train.pools.split_recordings`; the evaluation pool is the benchmark's) and
  the sounds of the ``--av`` pairs,

paired by class, with the camera or the microphone absent on a share of the rows (so the
head learns each modality alone and leans on sound when sight is poor). A class of ``--av``
the model does not know becomes a new scene class. Embeddings are computed once, so a run
takes minutes on a CPU and needs neither the bundled model's training run nor its speech data.

The new ``fuse`` is converted to full-integer int8 like ``edgesense quantize`` does (its inputs
calibrated over the encoders' whole output range, so no embedding is clipped) and merged with
the unchanged encoders into one ``.tflite`` with updated metadata: its ``metrics`` are adapting's own
(the held-out photos' accuracy, how far the command outputs moved), and those ``--model`` claimed,
measured with another scene head, are kept apart as ``adapted.from.metrics``.

``image_encoder`` (``--image-encoder``) grafts another model's ``encode_image`` in place of the
deployed one first (refused where a vision gate on the command head would read it), e.g. from a
run trained with the vision teacher or at another input size (the donor's image frontend comes
with it): its commands stay the deployed model's, and the scene head is
retrained on the new image embeddings, the layers that read them starting from the donor's own head
(learned on those embeddings; on a 128-px encoder this lifted the adapted validation photos from
88.8-89.5 % to 90.0-90.2 % over three seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesense.app.cli import path_argument, refuse_existing, refuse_file_in_the_way
from edgesense.app.inspect import model_metrics
from edgesense.frontend.audio import log_mel_batch
from edgesense.frontend.wav import read_wav
from edgesense.runtime.model import EdgeModel
from edgesense.schema.validate import is_int, is_number, require, require_kinds
from edgesense.shipped import SAMPLES, shipped_path
from edgesense.train import data as datasets
from edgesense.train.augment import ImageAugmentOptions, augment_images
from edgesense.train.config import INT_LIMIT, SEED_EXPECTED, is_seed
from edgesense.train.pools import place_sound_files
from edgesense.train.scene_audio import PlaceSounds, level_gain
from edgesense.types import label_twin

__all__ = ["AdaptOptions", "FuseLayer", "adapt_model", "add_arguments", "check_class_names", "command_changes",
           "fuse_layers", "has_vision_gate", "require_full_integer", "run"]

logger = logging.getLogger(__name__)

#: Shipped speech recordings: their 1-s windows calibrate the command path of the new ``fuse``.
SPEECH_SAMPLES = ("speech_commands.wav", "commands.wav")
SPEECH_HOP_S = 0.25
INT8_MAX = 127
OUTPUT_COMMAND, OUTPUT_SCENE = "command", "scene"
AUDIO_EMBEDDING, IMAGE_EMBEDDING = "audio_embedding", "image_embedding"  #: fuse's embedding inputs
COMMAND_VISION_GATE = "command_vision_gate"  #: build_fusion_head's layer that gates commands by sight
SCENE_LABEL_SMOOTHING = 0.1
FUSE_CALIBRATION_SAMPLES = 600  #: representative inputs for the new ``fuse``
#: The head learns places from their sounds too (and its command path is calibrated on them).
NO_SOUNDS = "--scene-ambient/--av: expected sounds of at least one scene class (one or both), got none"


@dataclass(frozen=True, kw_only=True)
class AdaptOptions:
    """How the fusion head is retrained (see the module docstring). ``rows_per_epoch`` rows are
    drawn class-balanced each epoch; ``audio_only_share`` / ``image_only_share`` of them have the
    camera / the microphone absent."""

    epochs: int = 30
    rows_per_epoch: int = 20000
    batch_size: int = 128
    learning_rate: float = 1e-3
    image_variants: int = 3
    degrade_probability: float = 0.35
    sounds_per_class: int = 800
    sound_dbfs_range: tuple[float, float] = (-45.0, -15.0)
    audio_only_share: float = 0.3
    image_only_share: float = 0.2
    #: Share of the rows with both modalities whose sound is another place's; None: one minus
    #: :func:`sound_reliability` (sound's accuracy on recordings left out, measured on the training pool).
    sound_mismatch: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require_kinds(self)
        for name in ("epochs", "rows_per_epoch", "batch_size", "image_variants", "sounds_per_class"):
            value = getattr(self, name)
            require(is_int(value) and 1 <= value < INT_LIMIT, name, "an integer in [1, 2**63)", value)
        require(is_number(self.learning_rate) and self.learning_rate > 0, "learning_rate", "> 0", self.learning_rate)
        require(self.sound_mismatch is None or (is_number(self.sound_mismatch) and 0 <= self.sound_mismatch < 1),
                "sound_mismatch", "null or a probability in [0, 1)", self.sound_mismatch)
        for name in ("degrade_probability", "audio_only_share", "image_only_share"):
            value = getattr(self, name)
            require(is_number(value) and 0.0 <= value <= 1.0, name, "a probability in [0, 1]", value)
        require(self.audio_only_share + self.image_only_share < 1.0, "audio_only_share",
                "audio_only_share + image_only_share < 1 (some rows must have both)",
                self.audio_only_share + self.image_only_share)
        lo, hi = self.sound_dbfs_range
        require(is_number(lo) and is_number(hi) and lo <= hi <= 0, "sound_dbfs_range", "(low, high) <= 0 dBFS",
                self.sound_dbfs_range)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)


# --------------------------------------------------------------------------- the deployed fuse part


def require_full_integer(flag: str, path: str | Path, model: EdgeModel) -> None:
    """ValueError naming ``flag`` unless ``model`` is full-integer int8 (int8 inputs and outputs
    everywhere, as ``edgesense quantize --mode int8`` writes it): its parts are merged with a new
    int8 ``fuse``, and :func:`fuse_layers` reads the deployed weights as int8."""
    for key, signature in model.signatures.items():
        for name, tensor in {**signature.inputs, **signature.outputs}.items():
            if tensor.dtype != np.int8:
                mode = (model.metadata.get("quantization") or {}).get("mode", "unknown")
                raise ValueError(f"{flag} {path}: expected a full-integer int8 model (edgesense quantize --mode "
                                 f"int8), got a {mode} model ({key} {name} is {tensor.dtype})")


def _fc_weights(obj: Any, graph: Any, op: Any) -> tuple[np.ndarray, np.ndarray]:
    """A FULLY_CONNECTED operator's weights, dequantized: (Keras kernel ``(in, out)``, bias ``(out,)``)."""
    w_t = graph.tensors[op.inputs[1]]
    out_dim, in_dim = (int(s) for s in w_t.shape)
    q = np.frombuffer(bytes(np.asarray(obj.buffers[w_t.buffer].data, np.uint8)), np.int8).reshape(out_dim, in_dim)
    scale = np.broadcast_to(np.asarray(w_t.quantization.scale, np.float64), (out_dim,))
    zero = np.broadcast_to(np.asarray(w_t.quantization.zeroPoint, np.float64), (out_dim,))
    kernel = ((q - zero[:, None]) * scale[:, None]).T.astype(np.float32)
    bias = np.zeros(out_dim, np.float32)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b_t = graph.tensors[op.inputs[2]]
        raw = np.frombuffer(bytes(np.asarray(obj.buffers[b_t.buffer].data, np.uint8)), np.int32)
        bias = (raw * np.broadcast_to(np.asarray(b_t.quantization.scale, np.float64), (out_dim,))).astype(np.float32)
    return kernel, bias


def _fully_connected(part: bytes) -> tuple[Any, Any, list]:
    """(the part's flatbuffer object, its graph, its FULLY_CONNECTED operators)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgesense.quantize.convert import _read_model_object

    obj = _read_model_object(part)
    graph = obj.subgraphs[0]
    return obj, graph, [op for op in graph.operators or []
                        if flatbuffer_utils.opcode_to_name(obj, op.opcodeIndex) == "FULLY_CONNECTED"]


@dataclass(frozen=True)
class FuseLayer:
    """A fully-connected layer of a converted ``fuse``: the embeddings it reads and the outputs it
    feeds (traced through the graph, so two layers of one shape are told apart), and its weights."""

    reads: frozenset[str]
    feeds: frozenset[str]
    kernel: np.ndarray
    bias: np.ndarray


def fuse_layers(part: bytes) -> list[FuseLayer]:
    """The fully-connected layers of a converted ``fuse`` part, dequantized, each with what it reads
    (``audio_embedding``, ``image_embedding``) and feeds (``command``, ``scene``)."""
    obj, graph, fcs = _fully_connected(part)
    signature = obj.signatureDefs[0]
    names = {int(t.tensorIndex): t.name.decode() if isinstance(t.name, bytes) else str(t.name)
             for t in [*signature.inputs, *signature.outputs]}
    operators = list(graph.operators or [])
    producer = {int(t): op for op in operators for t in op.outputs}
    consumers: dict[int, list] = {}
    for op in operators:
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(int(t), []).append(op)

    def named(start: int, step) -> frozenset[str]:
        seen, stack, found = set(), [start], set()
        while stack:
            tensor = stack.pop()
            if tensor not in seen:
                seen.add(tensor)
                found |= {names[tensor]} if tensor in names else set()
                stack += step(tensor)
        return frozenset(found)

    def up(tensor: int) -> list[int]:
        return [int(t) for t in producer[tensor].inputs if t >= 0] if tensor in producer else []

    def down(tensor: int) -> list[int]:
        return [int(t) for op in consumers.get(tensor, []) for t in op.outputs]

    layers = []
    for op in fcs:
        kernel, bias = _fc_weights(obj, graph, op)
        layers.append(FuseLayer(reads=named(int(op.inputs[0]), up) & {AUDIO_EMBEDDING, IMAGE_EMBEDDING},
                                feeds=named(int(op.outputs[0]), down) & {OUTPUT_COMMAND, OUTPUT_SCENE},
                                kernel=kernel, bias=bias))
    return layers


def _keras_roles(vision_gate: bool) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """What each dense layer of :func:`edgesense.train.model.build_fusion_head` reads and feeds."""
    audio, image = frozenset({AUDIO_EMBEDDING}), frozenset({IMAGE_EMBEDDING})
    command, scene = frozenset({OUTPUT_COMMAND}), frozenset({OUTPUT_SCENE})
    return {OUTPUT_COMMAND: (audio | image if vision_gate else audio, command), COMMAND_VISION_GATE: (image, command),
            "fuse_audio_proj": (audio, scene), "scene_audio_logits": (audio, scene),
            "fuse_image_proj": (image, scene), "scene_image_logits": (image, scene),
            "fuse_gate": (audio | image, scene), "fuse_dense": (audio | image, scene),
            "scene_logits": (audio | image, scene)}


#: A graft would feed the command head's vision gate another encoder's embeddings.
VISION_GATE_GRAFT = ("--image-encoder: expected a --model whose command head does not read the camera, got one with a "
                     "vision gate on it (model.command_vision_gate): another image encoder would change its commands")


def has_vision_gate(layers: Sequence[FuseLayer]) -> bool:
    """Whether the command head reads the camera (``model.command_vision_gate``): a layer reads the
    image embedding alone and feeds the commands."""
    return any((layer.reads, layer.feeds) == _keras_roles(vision_gate=True)[COMMAND_VISION_GATE] for layer in layers)


def _the_one(layers: Sequence[FuseLayer], role: tuple[frozenset[str], frozenset[str]],
             shape: tuple[int, ...]) -> FuseLayer | None:
    """The one layer of ``layers`` with this role and kernel shape; None where none or several are."""
    matches = [layer for layer in layers if (layer.reads, layer.feeds) == role and layer.kernel.shape == shape]
    return matches[0] if len(matches) == 1 else None


def build_head(model: EdgeModel, scene_labels: Sequence[str], fuse_part: bytes, donor_fuse: bytes | None = None):
    """The Keras fusion head with the deployed weights where they fit (each layer found by what it
    reads and feeds, :func:`fuse_layers`, so embeddings of one width or a projection as wide as the
    command head are told apart); the command head, and a vision gate on it, frozen. With
    ``donor_fuse`` (a graft: the image encoder's own model) the layers that read the image embedding
    alone start from the donor's weights, which were learned on that encoder's embeddings."""
    import keras

    from edgesense.train.config import ModelOptions
    from edgesense.train.model import build_fusion_head

    deployed = fuse_layers(fuse_part)
    roles = _keras_roles(vision_gate=False)
    vision_gate = has_vision_gate(deployed)
    if vision_gate and donor_fuse is not None:
        raise ValueError(VISION_GATE_GRAFT)
    fusion = model.metadata.get("fusion_strategy") or ModelOptions().fusion
    if fusion == "late":  # no fused embedding: its audio layer gives scene logits
        embedding_dim = ModelOptions().embedding_dim
    else:
        projections = [layer.kernel.shape[1] for layer in deployed
                       if (layer.reads, layer.feeds) == roles["fuse_audio_proj"]]
        require(len(projections) == 1, "--model", "a fusion head with one audio projection (a model written by "
                "edgesense quantize)", f"{len(projections)} layers that read the audio embedding for the scene")
        embedding_dim = projections[0]
    options = ModelOptions(fusion=fusion, embedding_dim=embedding_dim, command_vision_gate=vision_gate)
    head = build_fusion_head(model.audio_embedding_dim, model.image_embedding_dim, len(model.command_labels),
                             len(scene_labels), options)
    roles = _keras_roles(vision_gate)
    donor = fuse_layers(donor_fuse) if donor_fuse is not None else []
    loaded = []
    for layer in head.layers:
        if isinstance(layer, keras.layers.Dense) and layer.name in roles:
            role, shape = roles[layer.name], tuple(int(s) for s in layer.kernel.shape)
            theirs = _the_one(donor, role, shape) if role[0] == {IMAGE_EMBEDDING} else None
            mine = _the_one(deployed, role, shape)
            if theirs is not None or mine is not None:
                layer.set_weights([(theirs or mine).kernel, (theirs or mine).bias])
                loaded.append(f"{layer.name} (the donor's)" if theirs is not None else layer.name)
    frozen = [OUTPUT_COMMAND, *([COMMAND_VISION_GATE] if vision_gate else [])]
    for name in frozen:
        layer = head.get_layer(name)
        require(name in loaded, "--model", f"a {name} layer of shape {tuple(int(s) for s in layer.kernel.shape)}",
                "none")
        layer.trainable = False
    logger.info("fusion head: deployed weights for %s; %s frozen", ", ".join(loaded), " and ".join(frozen))
    return head


# --------------------------------------------------------------------------- data -> embeddings


@dataclass(frozen=True)
class Embeddings:
    """Per scene class: image embeddings (V, Di), sound embeddings (S, Da) and the recording
    (an index within the class) each sound snippet was cut from."""

    images: tuple[np.ndarray, ...]
    sounds: tuple[np.ndarray, ...]
    recordings: tuple[np.ndarray, ...]


def _split_percents(model: EdgeModel) -> tuple[float, float]:
    split = (model.metadata.get("data") or {}).get("split") or {}
    return float(split.get("image_validation_percent", 10.0)), float(split.get("image_testing_percent", 10.0))


def split_places(split: dict[str, list], places: Sequence[str]) -> dict[str, list]:
    """The user's pairs (``--av``) as adapting uses them, from the model's split of them (by block of
    consecutive pairs of a session): adapting tests nothing, so the pairs kept for testing train (an
    honest test is another session: README), and a place none of whose pairs fell in training trains
    on all of them (:func:`edgesense.train.data.train_every_class`)."""
    merged = {"training": split["training"] + split["testing"], "validation": list(split["validation"]), "testing": []}
    return datasets.train_every_class(merged, places, what="--av")


def check_class_names(model: EdgeModel, *, scenes: Path | None, av: Path | None) -> None:
    """ValueError naming the flag where a class folder differs from another scene class only by case or Unicode
    form (:func:`edgesense.types.label_as_read`: ``Sea`` beside the model's ``sea`` would be a second class of one
    place)."""
    known = list(model.scene_labels)
    for flag, root in (("--scenes", scenes), ("--av", av)):
        if root is None or not Path(root).is_dir():
            continue
        for name in sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
            twin = label_twin(name, known)
            if twin is not None:
                raise ValueError(f"{flag} {root}: expected class folders that differ from the other scene classes "
                                 f"by more than case or Unicode form, got {name!r} beside {twin!r} (name it "
                                 f"{twin!r} to teach that class)")
            known.append(name)


def gather(model: EdgeModel, *, scenes: Path | None, scene_ambient: Path | None, av: Path | None,
           options: AdaptOptions) -> tuple[tuple[str, ...], dict[str, Any], Embeddings, tuple[np.ndarray, np.ndarray]]:
    """(scene labels, a summary, training embeddings per class, validation (image embeddings, labels))."""
    val_percent, test_percent = _split_percents(model)
    splits: dict[str, list] = {"training": [], "validation": [], "testing": []}
    classes = set(model.scene_labels)
    indexes = ([datasets.load_image_folder(scenes)] if scenes is not None else []) + (
        [datasets.load_av_folder(av)] if av is not None else [])
    for index in indexes:
        classes |= set(index.classes)
        split = datasets.split_image_items(index.items, validation_percent=val_percent, testing_percent=test_percent)
        if isinstance(index, datasets.AVIndex):
            split = split_places(split, index.classes)
        for name, items in split.items():
            splits[name] += items
    labels = tuple(sorted(classes))
    lookup = {label: i for i, label in enumerate(labels)}
    # Photos and sounds draw from streams of their own: another image encoder (another input size)
    # leaves the sound snippets, and with them the command path's calibration, as they were.
    image_rng, sound_rng = np.random.default_rng(options.seed).spawn(2)

    size = (model.image_frontend.height_px, model.image_frontend.width_px)
    images, report = datasets.load_images(splits["training"], size_px=size, what="training photos")
    y_img = np.array([lookup[splits["training"][i].label] for i in report.kept], np.int32)
    augment = ImageAugmentOptions(degrade_probability=options.degrade_probability)
    variants = [augment_images(images, image_rng, augment) for _ in range(options.image_variants)]
    with datasets.phase(logger, "embedding %d photos x %d variants with the image encoder", len(images),
                        len(variants)):
        image_emb = np.concatenate([_encode_images(model, v, f"image encoder, variant {k + 1}/{len(variants)}")
                                    for k, v in enumerate(variants)])
    y_variants = np.tile(y_img, options.image_variants)

    summary: dict[str, Any] = {"training_photos": int(len(y_img)), "image_variants": options.image_variants}
    sound_paths, pools = place_sound_files(scene_ambient, labels, splits["training"], field="--scene-ambient")
    summary["scene_ambient"] = pools or None  # the recordings of each pool, or no --scene-ambient
    rate, clip = model.audio_frontend.sample_rate_hz, model.audio_frontend.clip_samples
    read, silent = silent_sounds_left_out(labels, sound_paths, rate)
    recordings = [[r for _, r in class_read] for class_read in read]
    if not any(recordings):
        raise ValueError(NO_SOUNDS + (f" (the {len(silent)} given are digital silence, every sample 0: a muted or "
                                      f"unplugged microphone?; e.g. {silent[0]})" if silent else ""))
    sessions = {item.audio_path: recording_of(item) for item in splits["training"] if isinstance(item, datasets.AVItem)}
    sound_emb, sound_rec = [], []
    for k, class_recordings in enumerate(recordings):
        embs, ids = [np.zeros((0, model.audio_embedding_dim), np.float32)], [np.zeros(0, np.int32)]
        # The recording each snippet comes from: a whole session of recorded pairs is one.
        keys = [sessions.get(p, str(p)) for p, _ in read[k]]
        recording_id = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        for key, recording in zip(keys, class_recordings):  # as many snippets from each recording
            r = recording_id[key]
            count = -(-options.sounds_per_class // len(class_recordings))
            snippets = PlaceSounds([[recording]], clip).draw(np.zeros(count, int), sound_rng).astype(np.float64)
            level = 10.0 ** (sound_rng.uniform(*options.sound_dbfs_range, size=count) / 20.0)
            # a snippet of a recording's silent stretch stays silent (raised 50-90 dB, it was hiss and clicks)
            embs.append(_encode_audio(model, np.clip(snippets * level_gain(snippets, level)[:, None], -1.0,
                                                     1.0).astype(np.float32)))
            ids.append(np.full(count, r, np.int32))
        sound_emb.append(np.concatenate(embs))
        sound_rec.append(np.concatenate(ids))
    summary["sound_seconds"] = {label: round(sum(r.size for r in rs) / rate, 1)
                                for label, rs in zip(labels, recordings)}
    per_class = Embeddings(images=tuple(image_emb[y_variants == k] for k in range(len(labels))),
                           sounds=tuple(sound_emb), recordings=tuple(sound_rec))
    untrained = [label for k, label in enumerate(labels) if not len(per_class.images[k]) and not len(sound_emb[k])]
    summary["untrained_labels"] = untrained
    if untrained:
        logger.warning("no photos or sounds of %s: the adapted model keeps these scene labels but never learned them "
                       "(it will not name them); to keep them, give their photos (--scenes) or sounds "
                       "(--scene-ambient), or your earlier places' pairs in --av", ", ".join(untrained))
    val_images, val_report = datasets.load_images(splits["validation"], size_px=size, what="validation photos")
    y_val = np.array([lookup[splits["validation"][i].label] for i in val_report.kept], np.int32)
    summary["validation_photos"] = int(len(y_val))
    seen = [k for k in range(len(labels)) if len(per_class.images[k])]  # the classes that train on photos
    summary["validation_photos_per_class"] = {labels[k]: int(np.sum(y_val == k)) for k in seen}
    unmeasured = [labels[k] for k in seen if not np.any(y_val == k)]
    if not len(y_val):
        logger.warning("no validation photos: adapt gives no validation figure")
    elif unmeasured:
        logger.warning("no validation photos of %s: the validation figure leaves %s out",
                       ", ".join(unmeasured), "it" if len(unmeasured) == 1 else "them")
    return labels, summary, per_class, (_encode_images(model, val_images), y_val)


def silent_sounds_left_out(labels: Sequence[str], sound_paths: dict[str, list[Path]],
                           rate: int) -> tuple[list[list[tuple[Path, np.ndarray]]], list[Path]]:
    """Each class's sounds read at ``rate`` (``[(path, samples)]`` per label), those of digital silence left out,
    and those left out: they have no level to scale to and no sound to learn, and a place whose every sound is
    silent (a session recorded with the microphone muted) learns from its photos alone, which a warning says."""
    read, silent = [], []
    for label in labels:
        class_read = []
        for path in sound_paths[label]:
            samples = read_wav(path, sample_rate_hz=rate)
            if samples.size and samples.any():
                class_read.append((path, samples))
            else:
                silent.append(path)
        read.append(class_read)
    unheard = [label for label, class_read in zip(labels, read) if sound_paths[label] and not class_read]
    if silent and len(silent) < sum(len(paths) for paths in sound_paths.values()):
        logger.warning("%d sound files are digital silence (every sample 0: a muted or unplugged microphone?), e.g. "
                       "%s: left out%s", len(silent), silent[0],
                       f"; {', '.join(unheard)} learn{'s' if len(unheard) == 1 else ''} from photos alone (no sound "
                       f"of {'its' if len(unheard) == 1 else 'their'} own)" if unheard else "")
    return read, silent


def recording_of(item: datasets.AVItem) -> str:
    """The recording a pair's sound belongs to: its ``edgesense record`` session (consecutive pairs
    share most of their sound, so one pair of a session is no recording never heard), else its file."""
    recorded = datasets.RECORDED_PAIR_NAME.match(Path(item.audio_path).stem)
    return f"{Path(item.audio_path).parent}/{recorded['session']}" if recorded else str(item.audio_path)


def _encode_images(model: EdgeModel, images: np.ndarray, what: str = "image encoder") -> np.ndarray:
    if not len(images):
        return np.zeros((0, model.image_embedding_dim), np.float32)
    return np.stack([model.encode_image(x.astype(np.float32))
                     for x in datasets._progress(images, len(images), what, unit="photo")])


def _encode_audio(model: EdgeModel, clips: np.ndarray) -> np.ndarray:
    return np.stack([model.encode_audio(f) for f in log_mel_batch(clips, model.audio_frontend)])


def speech_embeddings(model: EdgeModel) -> np.ndarray:
    """Embeddings of 1-s windows of the shipped speech samples (for calibrating the command path)."""
    rate, clip = model.audio_frontend.sample_rate_hz, model.audio_frontend.clip_samples
    hop = int(SPEECH_HOP_S * rate)
    windows = []
    for name in SPEECH_SAMPLES:
        samples = read_wav(shipped_path(SAMPLES, name), sample_rate_hz=rate)
        windows += [samples[s:s + clip] for s in range(0, max(1, samples.size - clip + 1), hop)]
    return _encode_audio(model, np.stack(windows).astype(np.float32))


def command_changes(before: EdgeModel, after: EdgeModel, audio: np.ndarray) -> dict[str, Any]:
    """How the command outputs moved from ``before`` to ``after`` on audio embeddings (camera
    absent): the windows whose probabilities differ at all, those whose top label changed, and the
    largest difference."""
    old = np.stack([before.fuse(a, None)[0] for a in audio])
    new = np.stack([after.fuse(a, None)[0] for a in audio])
    diff = np.abs(old - new).max(axis=1)
    return {"speech_windows": len(audio), "command_windows_changed": int(np.sum(diff > 0)),
            "command_top_label_changed": int(np.sum(old.argmax(axis=1) != new.argmax(axis=1))),
            "command_max_difference": round(float(diff.max(initial=0.0)), 5)}


# --------------------------------------------------------------------------- how far sound can be trusted

PROBE_STEPS = 500
PROBE_LEARNING_RATE = 0.5
PROBE_L2 = 1e-3
RELIABILITY_FOLDS = 2


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, classes: int) -> np.ndarray:
    """Predicted classes of ``x_test`` by softmax regression fitted on standardised ``x_train``."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    w, bias = np.zeros((a.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y_train]
    for _ in range(PROBE_STEPS):
        logits = a @ w + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / len(a)
        w -= PROBE_LEARNING_RATE * (a.T @ grad + PROBE_L2 * w)
        bias -= PROBE_LEARNING_RATE * grad.sum(0)
    return (b @ w + bias).argmax(1)


def sound_reliability(emb: Embeddings) -> float | None:
    """How often sound alone names the place of a recording it never heard: a linear probe on
    the sound embeddings, cross-validated by recording (folds of each class's recordings) over
    the classes with two recordings or more (a session of recorded pairs is one recording). None
    when no class has two, or when only one class has sounds at all."""
    split = [k for k in range(len(emb.sounds)) if len(np.unique(emb.recordings[k])) >= RELIABILITY_FOLDS]
    if not split or sum(len(s) > 0 for s in emb.sounds) < 2:  # with one place heard, sound names nothing apart
        return None
    x = np.concatenate([emb.sounds[k] for k in range(len(emb.sounds))])
    y = np.concatenate([np.full(len(emb.sounds[k]), k) for k in range(len(emb.sounds))])
    fold = np.concatenate([emb.recordings[k] % RELIABILITY_FOLDS if k in split else np.full(len(emb.sounds[k]), -1)
                           for k in range(len(emb.sounds))])
    hits = total = 0
    for f in range(RELIABILITY_FOLDS):
        test, train = fold == f, fold != f  # unsplit classes always train
        pred = linear_probe(x[train], y[train], x[test], len(emb.sounds))
        hits += int(np.sum(pred == y[test]))
        total += int(test.sum())
    return hits / max(total, 1)


# --------------------------------------------------------------------------- training and export


def _rows(emb: Embeddings, count: int, options: AdaptOptions, rng: np.random.Generator, mismatch: float = 0.0):
    """``count`` class-balanced rows: (x dict, classes). Where both modalities are present the
    sound is another place's with probability ``mismatch``: on places it never heard, sound is only
    that reliable, and the head must not trust it more than that."""
    usable = [k for k in range(len(emb.images)) if len(emb.images[k]) or len(emb.sounds[k])]
    cls = np.array(usable)[rng.integers(0, len(usable), size=count)]
    da, dv = emb.sounds[0].shape[1], emb.images[0].shape[1]
    audio, image = np.zeros((count, da), np.float32), np.zeros((count, dv), np.float32)
    draw = rng.random(count)
    pa = (draw >= options.image_only_share).astype(np.float32)  # image-only rows: no sound
    pv = (draw < 1.0 - options.audio_only_share).astype(np.float32)  # audio-only rows: no photo
    for k in usable:
        rows = np.flatnonzero(cls == k)
        if len(emb.sounds[k]):
            audio[rows] = emb.sounds[k][rng.integers(0, len(emb.sounds[k]), size=rows.size)]
        else:
            pa[rows] = 0.0
        if len(emb.images[k]):
            image[rows] = emb.images[k][rng.integers(0, len(emb.images[k]), size=rows.size)]
        else:
            pv[rows] = 0.0
    if mismatch > 0:
        with_sound = [k for k in usable if len(emb.sounds[k])]
        swap = np.flatnonzero((rng.random(count) < mismatch) & (pa > 0) & (pv > 0))
        for i in swap:
            others = [k for k in with_sound if k != cls[i]]
            if others:
                k = others[rng.integers(len(others))]
                audio[i] = emb.sounds[k][rng.integers(len(emb.sounds[k]))]
    both_absent = (pa == 0) & (pv == 0)
    pv[both_absent & np.array([len(emb.images[k]) > 0 for k in cls])] = 1.0
    pa[both_absent & (pv == 0)] = 1.0
    x = {"audio_embedding": audio * pa[:, None], "image_embedding": image * pv[:, None],
         "audio_present": pa[:, None], "image_present": pv[:, None]}
    return x, cls


def train_head(head, emb: Embeddings, validation: tuple[np.ndarray, np.ndarray], options: AdaptOptions,
               n_scenes: int, mismatch: float) -> dict[str, float]:
    import keras

    rng = np.random.default_rng(options.seed)
    head.compile(optimizer=keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.CosineDecay(
                     options.learning_rate, decay_steps=options.rows_per_epoch * options.epochs // options.batch_size,
                     alpha=0.05)),
                 loss={OUTPUT_SCENE: keras.losses.CategoricalCrossentropy(label_smoothing=SCENE_LABEL_SMOOTHING)})
    logger.info("training the fusion head: %d epochs of %d rows ...", options.epochs, options.rows_per_epoch)
    for _ in datasets._progress(range(options.epochs), options.epochs, "fusion head", unit="epoch"):  # fresh rows
        x, cls = _rows(emb, options.rows_per_epoch, options, rng, mismatch)
        y = {OUTPUT_SCENE: keras.utils.to_categorical(cls, n_scenes).astype(np.float32)}
        history = head.fit(x, y, batch_size=options.batch_size, epochs=1, verbose=0, shuffle=False)
    val_images, val_labels = validation
    metrics = {"rows": options.rows_per_epoch * options.epochs,
               "final_loss": round(float(history.history["loss"][-1]), 4)}
    if len(val_labels):
        n = len(val_labels)
        out = head.predict({"audio_embedding": np.zeros((n, head.inputs[0].shape[-1]), np.float32),
                            "image_embedding": val_images, "audio_present": np.zeros((n, 1), np.float32),
                            "image_present": np.ones((n, 1), np.float32)}, verbose=0, batch_size=512)
        metrics["validation_image_only_accuracy"] = round(float(np.mean(out[OUTPUT_SCENE].argmax(-1) == val_labels)), 4)
    return metrics


def _range_rows(model: EdgeModel) -> list[np.ndarray]:
    """The largest value each encoder can output, as an embedding: calibrates ``fuse``'s inputs
    over the encoders' whole int8 range."""
    out = []
    for key, name in (("encode_audio", "audio_embedding"), ("encode_image", "image_embedding")):
        q = model.signatures[key].outputs[name].quant
        out.append(np.full((1, model.signatures[key].outputs[name].shape[-1]),
                           (INT8_MAX - float(np.ravel(q.zero_point)[0])) * float(np.ravel(q.scale)[0]), np.float32))
    return out


def convert_fuse(head, model: EdgeModel, emb: Embeddings, speech: np.ndarray, rng: np.random.Generator) -> bytes:
    """The retrained head as an int8 ``fuse`` part, calibrated on the encoders' largest outputs
    (first sample), then on random sounds (places and speech) and photos."""
    from edgesense.quantize.convert import _convert_part, fuse_function, fuse_samples

    sounds = np.concatenate([s for s in emb.sounds if len(s)] + [speech])
    images = np.concatenate([i for i in emb.images if len(i)])
    top_audio, top_image = _range_rows(model)
    # The sounds are drawn first, so the command path's calibration does not depend on the photos.
    audio = np.concatenate([top_audio, sounds[rng.integers(len(sounds), size=FUSE_CALIBRATION_SAMPLES - 1)]])
    image = np.concatenate([top_image, images[rng.integers(len(images), size=FUSE_CALIBRATION_SAMPLES - 1)]])
    function = fuse_function(head, model.audio_embedding_dim, model.image_embedding_dim)
    return _convert_part("fuse", function, head, "int8", lambda: fuse_samples(audio, image, len(audio)))


def _with_part(counts: dict[str, int] | None, part: str, count: int) -> dict[str, int] | None:
    """Per-part counts (``params`` or ``macs`` of the metadata) with ``part``'s replaced by ``count``,
    and their total."""
    if not counts:
        return counts
    counts = {key: value for key, value in {**counts, part: count}.items() if key != "total"}
    return {**counts, "total": sum(counts.values())}


def _with_image_encoder(deployed: dict[str, int] | None, donor: dict[str, int] | None) -> dict[str, int] | None:
    """Per-part counts (``params`` or ``macs`` of the metadata) with the donor's image encoder in
    place of the deployed one, and their total."""
    if not donor or "image_encoder" not in donor:
        return deployed
    return _with_part(deployed, "image_encoder", donor["image_encoder"])


def _with_image_calibration(deployed: dict[str, Any], donor: dict[str, Any]) -> dict[str, Any]:
    """The deployed model's ``quantization`` metadata with the donor's word on its image encoder: how
    many photos calibrated it, and whether it is a stand-in (a recipe without photos), which the
    device reads to keep the camera closed (:attr:`EdgeModel.untrained_encoders`)."""
    quantization, theirs = deployed.get("quantization") or {}, donor.get("quantization") or {}
    counts = {**(quantization.get("calibration_samples") or {}),
              "encode_image": (theirs.get("calibration_samples") or {}).get("encode_image")}
    stand_ins = {**{key: n for key, n in (quantization.get("stand_in_samples") or {}).items() if key != "encode_image"},
                 **{key: n for key, n in (theirs.get("stand_in_samples") or {}).items() if key == "encode_image"}}
    return {**quantization, "calibration_samples": counts, "stand_in_samples": stand_ins}


class GraftedModel:
    """The deployed model with another model's image encoder, as far as adapting reads a model:
    photos are prepared and encoded as the donor does (its image frontend, e.g. another input
    size, comes along), everything else is the deployed model's."""

    def __init__(self, deployed: EdgeModel, donor: EdgeModel) -> None:
        self._deployed = deployed
        self.image_frontend = donor.image_frontend
        self.metadata = {**deployed.metadata, "image_frontend": donor.image_frontend.to_dict(),
                         "embedding_dims": {"audio": deployed.audio_embedding_dim, "image": donor.image_embedding_dim},
                         "quantization": _with_image_calibration(deployed.metadata, donor.metadata),
                         **{key: _with_image_encoder(deployed.metadata.get(key), donor.metadata.get(key))
                            for key in ("params", "macs")}}
        self.encode_image = donor.encode_image
        self.image_embedding_dim = donor.image_embedding_dim
        self.signatures = {**deployed.signatures, "encode_image": donor.signatures["encode_image"]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._deployed, name)


def adapt_model(model_path: Path, out_path: Path, *, scenes: Path | None = None, scene_ambient: Path | None = None,
                av: Path | None = None, options: AdaptOptions = AdaptOptions(), name: str | None = None,
                image_encoder: Path | None = None) -> dict[str, Any]:
    """Adapt ``model_path``'s scene head (module docstring); write ``out_path``; return its metadata."""
    from edgesense.quantize.convert import _check_writable

    if scenes is None and av is None:
        raise ValueError("--scenes/--av: expected photos to learn from (one or both), got neither")
    if name is not None and (not isinstance(name, str) or not name.strip()):  # "" was taken as no name at all
        raise ValueError(f"name: expected a non-empty string or None, got {name!r}")
    if scene_ambient is None and av is None:  # said before minutes of embedding the photos, not after
        raise ValueError(NO_SOUNDS)
    _check_writable(out_path)
    # The models are checked before TensorFlow starts (and logs).
    model = EdgeModel.load(model_path)
    require_full_integer("--model", model_path, model)
    check_class_names(model, scenes=scenes, av=av)
    donor = EdgeModel.load(image_encoder) if image_encoder is not None else None
    if donor is not None:
        require_full_integer("--image-encoder", image_encoder, donor)

    import keras

    from edgesense.quantize.convert import split_tflite_parts

    keras.utils.set_random_seed(options.seed)
    parts = split_tflite_parts(Path(model_path).read_bytes())
    # Its figures were measured with its own scene head: they stay with its name (module docstring).
    deployed = {"name": model.metadata.get("name"), "model_version": model.metadata.get("model_version"),
                "metrics": model_metrics(model.metadata)[0]}
    donor_summary, donor_fuse = None, None
    if donor is not None:
        donor_summary = {"file": Path(image_encoder).name, "name": donor.metadata.get("name"),
                         "model_version": donor.metadata.get("model_version")}
        if has_vision_gate(fuse_layers(parts["fuse"])):  # before minutes of embedding photos and sounds
            raise ValueError(VISION_GATE_GRAFT)
        model = GraftedModel(model, donor)
        donor_parts = split_tflite_parts(Path(image_encoder).read_bytes())
        parts["encode_image"], donor_fuse = donor_parts["encode_image"], donor_parts["fuse"]
        logger.info("image encoder from %s", image_encoder)
    return _adapt(model, parts, deployed, out_path, scenes=scenes, scene_ambient=scene_ambient, av=av,
                  options=options, name=name, image_encoder=donor_summary, donor_fuse=donor_fuse)


def _adapt(model: EdgeModel, parts: dict[str, bytes], deployed: dict[str, Any], out_path: Path, *,
           scenes: Path | None, scene_ambient: Path | None, av: Path | None, options: AdaptOptions, name: str | None,
           image_encoder: dict[str, Any] | None, donor_fuse: bytes | None = None) -> dict[str, Any]:
    from edgesense.quantize.convert import merged_model, part_metadata, parts_version_hash, portable_paths, write_merged
    from edgesense.train.model import count_macs, count_params

    labels, summary, emb, validation = gather(model, scenes=scenes, scene_ambient=scene_ambient, av=av,
                                              options=options)
    logger.info("scene classes %s; photos %d (x%d variants), sounds %s", list(labels), summary["training_photos"],
                options.image_variants, summary["sound_seconds"])
    head = build_head(model, labels, parts["fuse"], donor_fuse)
    reliability = sound_reliability(emb)
    mismatch = options.sound_mismatch if options.sound_mismatch is not None else (
        1.0 - reliability if reliability is not None else 0.0)
    logger.info("sound names an unheard recording's place %s of the time: mismatched sound in %.0f %% of the rows",
                "?" if reliability is None else f"{reliability:.0%}", 100 * mismatch)
    if reliability is None and options.sound_mismatch is None and any(len(s) for s in emb.sounds):
        logger.warning("sound is trusted fully: how well it names a place it never heard cannot be measured, since "
                       "no place has two recordings (a record session is one); record a second session of each "
                       "place, or pass --sound-mismatch P (the share of rows whose sound is another place's)")
    metrics = {"sound_reliability": None if reliability is None else round(reliability, 4),
               "sound_mismatch": round(mismatch, 4),
               **train_head(head, emb, validation, options, len(labels), mismatch)}
    logger.info("trained the fusion head: %s", metrics)
    speech = speech_embeddings(model)
    parts["fuse"] = convert_fuse(head, model, emb, speech, np.random.default_rng(options.seed))
    metadata = dict(model.metadata)
    quantization = metadata.get("quantization") or {}
    now = _dt.datetime.now(_dt.timezone.utc)
    metadata.update({
        "name": name or f"{metadata.get('name', 'edgesense')}-adapted",
        # This file's own parts name it; where it came from is "adapted.from" (a chain of versions
        # would grow with every adaptation).
        "model_version": f"{now:%Y%m%d}-adapted-{parts_version_hash(parts)}",
        "created": now.isoformat(timespec="seconds"),
        "labels": {"command": list(model.command_labels), "scene": list(labels)},
        **part_metadata(parts),
        "quantization": {**quantization, "calibration_samples": {**(quantization.get("calibration_samples") or {}),
                                                                 "fuse": FUSE_CALIBRATION_SAMPLES}},
        # The retrained head's own size and cost (new scene classes, another image embedding change them).
        "params": _with_part(metadata.get("params"), "fusion_head", count_params(head)),
        "macs": _with_part(metadata.get("macs"), "fusion_head", count_macs(head)),
        # Its own figures only; those of --model, measured on another scene head, are "adapted.from.metrics".
        "metrics": metrics,
        "adapted": portable_paths({
            "from": deployed,
            "image_encoder": image_encoder,
            "scenes": str(scenes) if scenes else None, "av": str(av) if av else None,
            "options": dataclasses.asdict(options), **summary, "metrics": metrics}),
    })
    # The command path should not have moved (module docstring): measured on the merged model, recorded in it.
    changes = command_changes(model, EdgeModel.load(merged_model(parts, metadata, str(out_path))), speech)
    logger.info("command outputs against --model's on %d speech windows: %d differ, %d change their top label "
                "(largest difference %.4f)", changes["speech_windows"], changes["command_windows_changed"],
                changes["command_top_label_changed"], changes["command_max_difference"])
    metadata["metrics"] = {**metrics, **changes}
    metadata["adapted"] = {**metadata["adapted"], "metrics": metadata["metrics"]}
    write_merged(parts, metadata, out_path)
    return metadata


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=path_argument, help="the deployed .tflite to adapt")
    parser.add_argument("--out", required=True, type=path_argument, help="the adapted .tflite to write")
    parser.add_argument("--scenes", type=path_argument,
                        help="photos CLASS/*.jpg (the model's training split of them is used)")
    parser.add_argument("--scene-ambient", type=path_argument,
                        help="sounds of each place, CLASS/*.wav (training pool only)")
    parser.add_argument("--av", type=path_argument,
                        help="your own places: CLASS/NAME.jpg + CLASS/NAME.wav (edgesense record)")
    parser.add_argument("--image-encoder", type=path_argument, metavar="TFLITE",
                        help="take the image encoder (and its image frontend) from this model, e.g. one trained "
                             "with the vision teacher; the commands stay --model's")
    parser.add_argument("--epochs", type=int, default=AdaptOptions.epochs,
                        help="passes of fresh rows (default %(default)s)")
    parser.add_argument("--sound-mismatch", type=float, default=None, metavar="P",
                        help="share of the rows with both modalities whose sound is another place's (default: one "
                             "minus how often sound names the place of a recording left out)")
    parser.add_argument("--seed", type=int, default=AdaptOptions.seed,
                        help="random seed of the drawn photos, sounds and weights (default %(default)s)")
    parser.add_argument("--name", help="the adapted model's name in its metadata")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import input_file, user_names
    from edgesense.shipped import model_argument

    # models/edgesense.tflite, as record's next step and the README name it, from any folder (as bench reads it)
    args.model, args.image_encoder = model_argument(args.model), model_argument(args.image_encoder)
    input_file("--model", args.model)
    if args.image_encoder is not None:
        input_file("--image-encoder", args.image_encoder)
    for flag, path in (("--scenes", args.scenes), ("--scene-ambient", args.scene_ambient), ("--av", args.av)):
        if path is not None and not path.is_dir():
            raise ValueError(f"{flag}: expected a folder, got {str(path)!r} "
                             f"({'a file' if path.exists() else 'does not exist'})")
    if args.scenes is None and args.av is None:
        raise ValueError("--scenes/--av: expected photos to learn from (one or both), got neither")
    if args.out.resolve() == args.model.resolve():  # before --force is offered: it would not help
        raise ValueError(f"--out: expected another file than --model, got {args.out}")
    if args.out.is_dir():
        raise ValueError(f"--out: expected a .tflite file path, got {args.out} (a folder)")
    refuse_file_in_the_way("--out", args.out.parent, expected="a folder for the model")
    refuse_existing("--out", args.out, force=args.force)
    with user_names({"epochs": "--epochs", "sound_mismatch": "--sound-mismatch", "seed": "--seed"}):
        options = AdaptOptions(epochs=args.epochs, sound_mismatch=args.sound_mismatch, seed=args.seed)
    if args.name is not None and not args.name.strip():  # as quantize --name says it
        raise ValueError(f"--name: expected a non-empty string, got {args.name!r}")
    metadata = adapt_model(args.model, args.out, scenes=args.scenes, scene_ambient=args.scene_ambient, av=args.av,
                           options=options, name=args.name, image_encoder=args.image_encoder)
    adapted = metadata["adapted"]
    print(json.dumps({"model": str(args.out), "labels": metadata["labels"]["scene"],
                      "untrained_labels": adapted["untrained_labels"],
                      "validation_photos_per_class": adapted["validation_photos_per_class"], **adapted["metrics"]},
                     indent=2))
    return 0

