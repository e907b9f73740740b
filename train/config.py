"""``train.yaml``: the training configuration, loaded strictly (unknown or wrong-typed
fields are errors that name the field)."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal, get_args

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.schema.validate import (as_path, as_paths, from_mapping, is_int, is_number, require, require_kinds,
                                        to_mapping)
from edgesense.schema.yaml import load_yaml_document, parse_yaml_value
from edgesense.train.augment import AudioAugmentOptions, ImageAugmentOptions
from edgesense.train.bank import BankOptions
from edgesense.train.data import check_words
from edgesense.train.pools import wav_recordings
from edgesense.train.scene_audio import SceneAudioOptions
from edgesense.train.teachers.audio import AudioTeacherOptions
from edgesense.train.teachers.vision import VisionTeacherOptions
from edgesense.types import DEFAULT_COMMAND_WORDS

Strategy = Literal["default", "mirrored", "multi_worker"]
FusionStrategy = Literal["concat", "weighted_sum", "attention", "late"]
#: Validation figures a checkpoint can follow (``edgesense average --monitor`` ranks by them too).
ValidationMetric = Literal["score", "command", "scene", "command_loss"]
VALIDATION_METRICS: tuple[str, ...] = get_args(ValidationMetric)
#: ``train.checkpoint_metric`` -> the validation figure (``trainer.HeadValidation``) it monitors,
#: whether the highest (``max``) or the lowest (``min``) is best, and the held-out data it needs
#: (``clips``, ``photos``; None: either). ``last`` monitors nothing: the last epoch is kept.
CHECKPOINT_MONITORS = {"score": ("val_score", "max", None), "command": ("val_command_accuracy", "max", "clips"),
                       "scene": ("val_scene_accuracy", "max", "photos"),
                       "command_loss": ("val_command_loss", "min", "clips")}
#: ``train.checkpoint_metric``: one of those, or the last epoch's weights.
CheckpointMetric = Literal[ValidationMetric, "last"]
#: The fused model's three parts, each a sub-model of that name (``train/model.py``).
ModelPart = Literal["audio_encoder", "image_encoder", "fusion_head"]
MODEL_PARTS: tuple[str, ...] = get_args(ModelPart)
AUDIO_ENCODER, IMAGE_ENCODER, FUSION_HEAD = MODEL_PARTS
FUSION_STRATEGIES: tuple[str, ...] = ("concat", "weighted_sum", "attention", "late")

#: Every random seed of the desktop tools lies in ``[0, SEED_LIMIT)``: what numpy's generators (and
#: Keras', seeded from them) take. Each options class with a seed checks it with :func:`is_seed` and
#: says :data:`SEED_EXPECTED`, so a bad ``--seed`` is one line naming it before anything loads.
SEED_LIMIT = 2**32
SEED_EXPECTED = "an integer in [0, 2**32)"


def is_seed(value: object) -> bool:
    """An integer (not a bool) in ``[0, SEED_LIMIT)``."""
    return is_int(value) and 0 <= value < SEED_LIMIT


def derived_seed(seed: int, offset: int) -> int:
    """The seed ``offset`` steps after ``seed`` (a part's, a fold's, a head's), wrapped into
    ``[0, SEED_LIMIT)``: a valid ``seed`` never derives one that :func:`is_seed` rejects."""
    if not is_int(seed) or not is_int(offset):
        raise ValueError(f"derived_seed: expected integers, got seed={seed!r}, offset={offset!r}")
    return (seed + offset) % SEED_LIMIT


#: Every integer of a recipe lies in ``[-INT_LIMIT, INT_LIMIT)``: numpy's and TensorFlow's int64, where each count,
#: size and seed ends up. Python takes a larger one, and numpy or TensorFlow overflows on it once the data has loaded.
INT_LIMIT = 2**63
INT_EXPECTED = "an integer in [-2**63, 2**63)"


def _check_integers(options: object, prefix: str = "") -> None:
    """Every integer field of the options dataclass ``options`` (sections included, and the items of
    a list field) is within :data:`INT_LIMIT`; the error names the dotted field."""
    for f in fields(options):
        value = getattr(options, f.name)
        if is_dataclass(value):
            _check_integers(value, f"{prefix}{f.name}.")
            continue
        items = value if isinstance(value, tuple) else (value,)
        require(all(-INT_LIMIT <= v < INT_LIMIT for v in items if is_int(v)), prefix + f.name, INT_EXPECTED, value)


#: ``ModelOptions`` fields that act in training only: runs that differ in them have weights of the
#: same shapes and meaning (a soup of them is one model; ``edgesense average``).
TRAINING_ONLY_MODEL_FIELDS: tuple[str, ...] = ("dropout", "batchnorm_momentum")


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Architecture of the fusion model."""

    fusion: FusionStrategy = "attention"
    audio_channels: int = 80
    audio_blocks: int = 4
    image_channels: tuple[int, ...] = (16, 32, 64, 64, 128, 128, 128)
    image_strides: tuple[int, ...] = (2, 1, 2, 1, 2, 1, 2)
    #: Width of the scene head's fused embedding (each modality's projection, and the concat's dense
    #: layer). Late fusion fuses the two modalities' scene logits instead and has no such embedding.
    embedding_dim: int = 48
    dropout: float = 0.1
    #: Keras' default; lower it (e.g. 0.9) for short runs on small data, where the moving
    #: statistics would otherwise not settle and validation would stay at chance.
    batchnorm_momentum: float = 0.99
    command_vision_gate: bool = False
    #: 0: the audio encoder sees the log-mel window as it is. N > 0: beside it, as a second input
    #: channel, the window above each mel channel's floor (the minimum over the window of an
    #: N-frame moving average): what rises over the steady background, whatever its level
    #: (minimum statistics, Martin 2001).
    audio_floor_frames: int = 0

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.fusion in FUSION_STRATEGIES, "fusion", "one of " + ", ".join(FUSION_STRATEGIES), self.fusion)
        require(self.audio_channels >= 4, "audio_channels", ">= 4", self.audio_channels)
        require(self.audio_blocks >= 1, "audio_blocks", ">= 1", self.audio_blocks)
        require(len(self.image_channels) >= 2, "image_channels", "at least 2 layers", self.image_channels)
        require(all(c >= 4 for c in self.image_channels), "image_channels", "all >= 4", self.image_channels)
        require(len(self.image_strides) == len(self.image_channels), "image_strides",
              f"{len(self.image_channels)} entries (one per image_channels entry)", self.image_strides)
        require(all(s in (1, 2) for s in self.image_strides), "image_strides", "each 1 or 2", self.image_strides)
        require(isinstance(self.audio_floor_frames, int) and self.audio_floor_frames >= 0, "audio_floor_frames",
                "an integer >= 0", self.audio_floor_frames)
        require(self.embedding_dim >= 4, "embedding_dim", ">= 4", self.embedding_dim)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(0.0 < self.batchnorm_momentum < 1.0, "batchnorm_momentum", "in (0, 1)", self.batchnorm_momentum)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the data comes from. Relative paths are resolved against the YAML file's folder.

    ``noise`` (background recordings), ``speech_negatives`` (other people's speech) and ``rirs``
    (real room impulse responses), folders of WAV files searched recursively (a folder with none is
    an error) or files, are split by
    recording with :func:`edgesense.train.pools.split_recordings`; only the training pool is
    used. ``hard_negatives``: folders of 1 s windows where a model fired on talk (written by
    ``edgesense mine`` from the training pool of other speech); every window is an ``_unknown_``
    row drawn like the windows of ``speech_negatives`` (``train.other_speech_share``), no pool
    split. ``scene_ambient``: the sound of each scene class (``CLASS/*.wav``, class folders named like
    the scene classes), split by recording the same way; every training photo is paired with
    its class's sound (:mod:`edgesense.train.scene_audio`) in the audio rows, which are drawn from speech: it
    needs ``speech_commands`` (or ``synthetic_speech``) and ``scenes`` or ``av`` beside it. ``teacher_models``:
    EdgeSense model files (``edgesense quantize``) taught to the student as one ensemble: the mean of their command
    probabilities on every window a step draws is each audio row's soft target (at
    ``train.distill_weight`` and ``train.distill_temperature``; the per-step pipeline only). ``av``: a paired folder
    (``CLASS/NAME.jpg + CLASS/NAME.wav``, e.g. from ``edgesense record``): its photos join the scene
    photos (split by file name like them) and its sounds join their class's sound (a recipe without speech
    trains on its photos alone: a warning says so). ``cache_dir``: where
    features and teacher outputs are cached (default ``$EDGESENSE_CACHE`` or ``~/.cache/edgesense``).
    """

    speech_commands: tuple[Path, ...] = ()
    synthetic_speech: tuple[Path, ...] = ()
    scenes: Path | None = None
    av: Path | None = None
    scene_ambient: Path | None = None
    noise: tuple[Path, ...] = ()
    speech_negatives: tuple[Path, ...] = ()
    hard_negatives: tuple[Path, ...] = ()
    rirs: tuple[Path, ...] = ()
    teacher_models: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    words: tuple[str, ...] = DEFAULT_COMMAND_WORDS
    validation_percent: float = 10.0
    testing_percent: float = 10.0
    image_validation_percent: float = 10.0
    image_testing_percent: float = 10.0
    speaker_split_salt: str = ""
    max_items_per_class: int | None = None
    calibration_per_class: int = 30

    def __post_init__(self) -> None:
        for name in PATHS_FIELDS:  # stored as tuples of Paths whatever a caller gave (a list, strings)
            object.__setattr__(self, name, as_paths(name, getattr(self, name)))
        for name in ("scenes", "av", "scene_ambient", "cache_dir"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_path(name, getattr(self, name)))
        require_kinds(self)
        validated = bool(self.speech_commands) or self.scenes is not None or self.av is not None
        # Synthesized voices train only (never validated or tested on): alone they leave nothing to validate.
        require(validated or not self.synthetic_speech, "synthetic_speech",
                "speech_commands, scenes or av beside it (synthesized voices train only, never validate; to train "
                "and validate on a synth-commands folder, name it under data.speech_commands)",
                [str(p) for p in self.synthetic_speech])
        require(validated, "speech_commands", "at least one of speech_commands, scenes or av", "none")
        # Place sounds reach the scene head through the audio rows, which are drawn from speech: without speech
        # (or without scene classes to name) they would be loaded and never used.
        if self.scene_ambient is not None:
            require(self.scenes is not None or self.av is not None, "scene_ambient",
                    "scenes or av beside it (its class folders are the sounds of their scene classes)",
                    str(self.scene_ambient))
            require(bool(self.speech_commands or self.synthetic_speech), "scene_ambient",
                    "speech_commands beside it (place sounds train the scene head in the audio rows, which a recipe "
                    "without speech never draws; to teach places their sound without speech data, adapt a deployed "
                    "model: edgesense adapt --scene-ambient)", str(self.scene_ambient))
        check_words(self.words)  # as the Speech Commands loader will: refused here, before TensorFlow starts
        for name in ("validation_percent", "testing_percent", "image_validation_percent", "image_testing_percent"):
            value = getattr(self, name)
            require(0.0 <= value < 50.0, name, "a percentage in [0, 50)", value)
        require(self.max_items_per_class is None or self.max_items_per_class >= 1, "max_items_per_class",
               ">= 1 or null", self.max_items_per_class)
        require(self.calibration_per_class >= 1, "calibration_per_class", ">= 1", self.calibration_per_class)


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """The optimisation schedule and how batches are drawn.

    Command clips are drawn class-balanced; ``real_speech_share`` is the probability that a
    drawn clip is a recording rather than synthesized speech (``None``: uniformly over both).
    ``class_weighting`` weights scene classes by inverse frequency (photos are drawn uniformly).
    """

    epochs: int = 40
    batch_size: int = 64
    steps_per_epoch: int | None = None
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1  #: the scene head's
    #: The command head's: 0 lets a clear word score near 1 (what a streaming threshold needs).
    command_label_smoothing: float = 0.0
    patience: int = 8
    modality_dropout: float = 0.2
    class_weighting: bool = True
    real_speech_share: float | None = None
    #: Share of the drawn audio rows that are ``_unknown_`` (the other classes share the rest
    #: evenly); ``null``: every class as often (1 / 12 with the ten words). What the stream hears
    #: most is not a command: a larger share teaches more talk and other words per step.
    unknown_share: float | None = None
    #: Per-step pipeline (``bank.variants: 0``): share of the drawn ``_unknown_`` rows that are a
    #: window of other people's speech (``data.speech_negatives``, training pool) instead of a
    #: clip, augmented like the clips at every step (the bank has ``bank.other_speech_per_variant``).
    other_speech_share: float = 0.0
    #: Per-step pipeline: share of the drawn ``_unknown_`` rows that are not other speech that become
    #: a command word of the training clips played backwards (still ``_unknown_``): the voices and
    #: sounds of the words without their order, which a model that hears words as a bag of sounds
    #: takes for them.
    reversed_speech_share: float = 0.0
    strategy: Strategy = "default"
    #: Share of each command example's loss taken from the audio teacher's soft targets at
    #: ``distill_temperature`` (0: hard labels only; > 0 needs ``audio_teacher.enabled`` or
    #: ``data.teacher_models``).
    distill_weight: float = 0.0
    #: The same for each photo's scene loss and the vision teacher (> 0 needs ``vision_teacher.enabled``).
    scene_distill_weight: float = 0.0
    #: Augmented views of each training photo that the vision teacher scores (cached, like its other
    #: outputs): a drawn photo is shown as one of its views and learns the teacher's targets *for that
    #: view*, so what the student sees and what it is told agree (a crop that lost the mountain is not
    #: told "mountain" with the clean photo's confidence). 0: the teacher scores each photo as it is
    #: and the student sees a fresh augmentation of it. > 0 needs ``scene_distill_weight`` > 0.
    scene_distill_views: int = 0
    distill_temperature: float = 2.0  #: both teachers' soft targets
    #: Per-step pipeline: weight of the embedding hint, a loss (minus the cosine) that makes a linear
    #: map of the audio encoder's embedding (trained with it, in the training view only: never
    #: exported) point where Google's ``speech_embedding`` points for the row's clean clip or window
    #: of other speech (the mean and maximum of its embeddings, standardized), on every row that
    #: still holds one, as drawn and mixed. 0: off. Needs the ``[teacher]`` extra, not
    #: ``audio_teacher.enabled``. On the bundled recipe it lifted words said alone and sank the
    #: stream (models/README.md, h0-h4).
    embedding_hint_weight: float = 0.0
    #: Whether the rows that hold a window of other speech get the hint too (false: only the rows
    #: that hold a training clip).
    embedding_hint_talk: bool = True
    #: Threads that prepare batches ahead of the fit loop.
    workers: int = 2
    #: What picks the checkpoint and stops early, on validation: ``score`` (the mean of both heads'
    #: accuracies), one head's accuracy (e.g. ``scene`` for a run whose image encoder
    #: ``edgesense adapt --image-encoder`` takes), or ``command_loss``, the validation clips' mean
    #: cross-entropy (lowest wins): it moves with every clip's confidence, where the accuracy of a
    #: small validation split moves a step per clip and ties. ``last`` keeps the weights of the last
    #: epoch, where the cosine schedule ends, and never stops early: no validation figure chooses,
    #: so two runs compare without the luck of a best-of-N pick (validation is still logged).
    checkpoint_metric: CheckpointMetric = "score"
    #: Parts that keep the weights ``--init-from`` gave them while the rest trains (batch-norm
    #: statistics included), e.g. ``[image_encoder]``: fine-tune the commands and leave the
    #: camera path as it was. Needs ``--init-from``.
    frozen_parts: tuple[ModelPart, ...] = ()
    #: Keep an exponential moving average of the trained weights ("Polyak averaging": each step
    #: ``average = m * average + (1 - m) * weights``) and validate, checkpoint and keep *it* instead of
    #: the weights themselves; ``null`` keeps the weights. ``m`` = 0.998 averages over about 500
    #: steps, the way a soup of fine-tunes (``edgesense average``) averages whole runs.
    ema_momentum: float | None = None

    def __post_init__(self) -> None:
        require_kinds(self)
        require(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch", ">= 1 or null",
               self.steps_per_epoch)
        require(is_number(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a finite number > 0",
                self.learning_rate)
        require(is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0",
                self.weight_decay)
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", self.label_smoothing)
        require(0.0 <= self.command_label_smoothing < 1.0, "command_label_smoothing", "in [0, 1)",
                self.command_label_smoothing)
        require(self.patience >= 1, "patience", ">= 1", self.patience)
        require(self.real_speech_share is None or 0.0 <= self.real_speech_share <= 1.0, "real_speech_share",
                "in [0, 1] or null", self.real_speech_share)
        require(self.unknown_share is None or 0.0 < self.unknown_share < 1.0, "unknown_share", "in (0, 1) or null",
                self.unknown_share)
        require(0.0 <= self.other_speech_share <= 1.0, "other_speech_share", "in [0, 1]", self.other_speech_share)
        require(0.0 <= self.reversed_speech_share <= 1.0, "reversed_speech_share", "in [0, 1]",
                self.reversed_speech_share)
        require(0.0 <= self.modality_dropout < 0.5, "modality_dropout", "in [0, 0.5)", self.modality_dropout)
        require(0.0 <= self.distill_weight <= 1.0, "distill_weight", "in [0, 1]", self.distill_weight)
        require(0.0 <= self.scene_distill_weight <= 1.0, "scene_distill_weight", "in [0, 1]",
                self.scene_distill_weight)
        require(is_number(self.distill_temperature) and self.distill_temperature > 0, "distill_temperature",
                "a finite number > 0", self.distill_temperature)
        require(isinstance(self.scene_distill_views, int) and not isinstance(self.scene_distill_views, bool)
                and self.scene_distill_views >= 0, "scene_distill_views", "an integer >= 0", self.scene_distill_views)
        require(self.scene_distill_views == 0 or self.scene_distill_weight > 0, "scene_distill_views",
                "0 unless scene_distill_weight > 0 (the views carry the vision teacher's targets)",
                self.scene_distill_views)
        require(is_number(self.embedding_hint_weight) and self.embedding_hint_weight >= 0.0, "embedding_hint_weight",
                "a finite number >= 0", self.embedding_hint_weight)
        require(isinstance(self.workers, int) and self.workers >= 1, "workers", "an integer >= 1", self.workers)
        require(self.ema_momentum is None or 0.0 < self.ema_momentum < 1.0, "ema_momentum", "in (0, 1) or null",
                self.ema_momentum)
        require(isinstance(self.frozen_parts, tuple) and set(self.frozen_parts) <= set(MODEL_PARTS)
                and len(set(self.frozen_parts)) == len(self.frozen_parts) < len(MODEL_PARTS), "frozen_parts",
                f"some of {', '.join(MODEL_PARTS)}, each once, not all", self.frozen_parts)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    name: str = "edgesense"
    seed: int = 42
    data: DataConfig
    model: ModelOptions = ModelOptions()
    audio_frontend: AudioFrontendOptions = AudioFrontendOptions()
    image_frontend: ImageFrontendOptions = ImageFrontendOptions()
    audio_augment: AudioAugmentOptions = AudioAugmentOptions()
    image_augment: ImageAugmentOptions = ImageAugmentOptions()
    bank: BankOptions = BankOptions()
    audio_teacher: AudioTeacherOptions = AudioTeacherOptions()
    vision_teacher: VisionTeacherOptions = VisionTeacherOptions()
    scene_audio: SceneAudioOptions = SceneAudioOptions()
    train: TrainOptions = TrainOptions()

    def __post_init__(self) -> None:
        require_kinds(self)
        # The run's folder under runs/ (``edgesense train`` without --out): "." would make runs/ itself the run
        # (the next run then nests in it, and a --force of "." deletes them all), ".." the working folder.
        require(self.name.strip() not in ("", ".", "..") and "/" not in self.name, "name",
                "a folder name: not empty, '.' or '..', without '/'", self.name)
        require(is_seed(self.seed), "seed", SEED_EXPECTED, self.seed)
        _check_integers(self)  # before anything below computes with them
        require(self.vision_teacher.seed is None or is_seed(self.vision_teacher.seed), "vision_teacher.seed",
                f"{SEED_EXPECTED}, or null for the run's seed", self.vision_teacher.seed)
        rate = self.audio_frontend.sample_rate_hz  # the clips augmented are the frontend's
        require(self.audio_augment.sample_rate_hz == rate, "audio_augment.sample_rate_hz",
                f"the audio frontend's {rate} Hz (audio_frontend.sample_rate_hz)", self.audio_augment.sample_rate_hz)
        require(self.audio_augment.max_shift_ms <= self.audio_frontend.clip_duration_ms, "audio_augment.max_shift_ms",
                f"at most the clip's {self.audio_frontend.clip_duration_ms} ms (audio_frontend.clip_duration_ms)",
                self.audio_augment.max_shift_ms)
        frames = self.audio_frontend.frames_per_clip  # as the model's builder will: refused before any data loads
        require(self.model.audio_floor_frames <= frames, "model.audio_floor_frames",
                f"at most the audio window's {frames} frames (audio_frontend)", self.model.audio_floor_frames)
        teachers = self.data.teacher_models
        require(self.train.distill_weight == 0.0 or self.audio_teacher.enabled or bool(teachers),
                "train.distill_weight", "0 unless audio_teacher.enabled is true or data.teacher_models names models",
                self.train.distill_weight)
        require(not teachers or self.train.distill_weight > 0.0, "train.distill_weight",
                "> 0 with data.teacher_models (the share of each loss their soft targets take)",
                self.train.distill_weight)
        require(not teachers or not self.audio_teacher.enabled, "data.teacher_models",
                "none while audio_teacher.enabled is true (one audio teacher a run)", [str(p) for p in teachers])
        require(not teachers or self.bank.variants == 0, "data.teacher_models",
                "none with an example bank (bank.variants > 0): they score the windows each step draws",
                [str(p) for p in teachers])
        require(self.train.scene_distill_weight == 0.0 or self.vision_teacher.enabled, "train.scene_distill_weight",
                "0 unless vision_teacher.enabled is true", self.train.scene_distill_weight)
        require(self.train.other_speech_share == 0.0 or bool(self.data.speech_negatives or self.data.hard_negatives),
                "train.other_speech_share", "0 unless data.speech_negatives or data.hard_negatives names other speech",
                self.train.other_speech_share)
        require(self.train.reversed_speech_share == 0.0 or self.bank.variants == 0, "train.reversed_speech_share",
                "0 with an example bank (bank.variants > 0): the per-step pipeline draws it",
                self.train.reversed_speech_share)
        require(self.train.embedding_hint_weight == 0.0 or self.bank.variants == 0, "train.embedding_hint_weight",
                "0 with an example bank (bank.variants > 0): the per-step pipeline draws its rows",
                self.train.embedding_hint_weight)
        require(self.train.embedding_hint_weight == 0.0 or self.train.strategy == "default",
                "train.embedding_hint_weight", f"0 with a distribution strategy (train.strategy "
                f"{self.train.strategy!r}: the hint lives in the training view)", self.train.embedding_hint_weight)

    def to_dict(self) -> dict:
        return to_mapping(self)


#: ``DataConfig`` fields that list paths.
PATHS_FIELDS: tuple[str, ...] = ("speech_commands", "synthetic_speech", "noise", "speech_negatives", "hard_negatives",
                                 "rirs", "teacher_models")
#: ``DataConfig`` fields that name folders only (Speech Commands layouts, class folders).
FOLDER_FIELDS: tuple[str, ...] = ("speech_commands", "synthetic_speech", "scenes", "av", "scene_ambient")
#: ``DataConfig`` fields that name recordings (folders searched with :func:`edgesense.train.pools.wav_recordings`).
RECORDING_FIELDS: tuple[str, ...] = ("noise", "speech_negatives", "hard_negatives", "rirs")


def _resolve(path: Path | None, base: Path) -> Path | None:
    """``path`` against ``base``, the folders above it resolved and its own name kept as written: a folder that is
    a link keeps its name (the pools hash each recording's ``FOLDER/NAME``, :func:`edgesense.train.pools.
    split_recordings`, as the benchmark and mine name it from the path they are given), so a relative path splits
    as the same path written in full; ``..`` last is resolved."""
    if path is None:
        return None
    path = path.expanduser()
    if path.is_absolute():
        return path
    joined = base / path
    return joined.resolve() if joined.name in ("", "..") else joined.parent.resolve() / joined.name


def _merged(old: object, new: object) -> object:
    """``new`` set over ``old``: a mapping into a mapping field by field (every mapping of a recipe is a section),
    anything else replacing it."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{key: _merged(old.get(key), value) for key, value in new.items()}}
    return new


def apply_overrides(mapping: dict, overrides: Sequence[str]) -> dict:
    """``section.field=value`` strings (values in YAML) applied to a loaded config mapping. A mapping value
    (``train={epochs: 1}``) sets the fields it names; the section's other fields keep the file's values."""
    out = copy.deepcopy(mapping)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ValueError(f"--set: expected SECTION.FIELD=VALUE (e.g. train.epochs=40), got {item!r}")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item}: {part} is not a section")
        node[parts[-1]] = _merged(node.get(parts[-1]), parse_yaml_value(text, source=f"--set {item}"))
    return out


def _override_of(field: str, overrides: Sequence[str]) -> str | None:
    """The ``--set`` item that gave the dotted ``field`` (set it, a section holding it, or a field inside
    it, which made ``field`` a section: ``--set trian.epochs=1`` gave ``trian``; the last one wins, as in
    :func:`apply_overrides`); None when the file gave it."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if field == key or field.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{field}."):
            return item
    return None


def _named_where_set(exc: ValueError, source: str, overrides: Sequence[str]) -> ValueError:
    """``exc`` (``SOURCE[:LINE]: FIELD: ...``, from :func:`from_mapping`) naming ``--set ITEM``
    instead of the file when an override gave FIELD: what the user typed, not a file that lacks it."""
    text = str(exc)
    match = re.match(rf"{re.escape(source)}(?::\d+)?: (.+?): ", text)
    item = _override_of(match.group(1), overrides) if match else None
    return exc if item is None else ValueError(f"--set {item}: {text[match.start(1):]}")


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load and validate ``train.yaml`` (with ``--set`` style ``overrides``); relative data
    paths are resolved against its folder. An error about a field an override gave names that
    ``--set`` item, one about a field of the file names the file."""
    document = load_yaml_document(path)
    path = document.path
    mapping = apply_overrides(document.data, overrides)
    # A field set on the command line has no line in the file (None stops the look-up at its section).
    lines = {**document.lines, **{item.partition("=")[0].strip(): None for item in overrides}}
    try:
        config = from_mapping(TrainConfig, mapping, source=str(path), lines=lines)
    except ValueError as exc:
        raise _named_where_set(exc, str(path), overrides) from None

    def where(field: str) -> str:  # what gave a data field: a --set item, else the file
        item = _override_of(field, overrides)
        return str(path) if item is None else f"--set {item}"

    base = path.resolve().parent
    data = config.data
    data = replace(
        data,
        speech_commands=tuple(_resolve(p, base) for p in data.speech_commands),
        synthetic_speech=tuple(_resolve(p, base) for p in data.synthetic_speech),
        scenes=_resolve(data.scenes, base),
        av=_resolve(data.av, base),
        scene_ambient=_resolve(data.scene_ambient, base),
        noise=tuple(_resolve(p, base) for p in data.noise),
        speech_negatives=tuple(_resolve(p, base) for p in data.speech_negatives),
        hard_negatives=tuple(_resolve(p, base) for p in data.hard_negatives),
        rirs=tuple(_resolve(p, base) for p in data.rirs),
        teacher_models=tuple(_resolve(p, base) for p in data.teacher_models),
        cache_dir=_resolve(data.cache_dir, base),
    )
    for name, paths in (("speech_commands", data.speech_commands), ("synthetic_speech", data.synthetic_speech),
                        ("noise", data.noise), ("speech_negatives", data.speech_negatives),
                        ("hard_negatives", data.hard_negatives), ("rirs", data.rirs),
                        ("teacher_models", data.teacher_models),
                        ("scenes", (data.scenes,)), ("av", (data.av,)),
                        ("scene_ambient", (data.scene_ambient,))):
        for p in paths:
            if p is not None and not p.exists():
                raise ValueError(f"{where(f'data.{name}')}: data.{name}: no such file or folder: {p}")
    for name in FOLDER_FIELDS:
        value = getattr(data, name)
        for p in value if isinstance(value, tuple) else (value,):
            if p is not None and not p.is_dir():
                raise ValueError(f"{where(f'data.{name}')}: data.{name}: expected a folder, got {p}, which is a file")
    for name in RECORDING_FIELDS:
        for p in getattr(data, name):
            if p.is_dir() and not wav_recordings([p]):
                raise ValueError(f"{where(f'data.{name}')}: data.{name}: expected .wav recordings under {p}, "
                                 "found none")
    return replace(config, data=data)
