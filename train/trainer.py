"""Training of the fusion model: data assembly, the batch generator, the fit loop and
the run folder (docs/CONTRACTS.md)."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np

from edgesense.schema.validate import one_line, require
from edgesense.train import augment
from edgesense.train import data as datasets
from edgesense.train.bank import (ExampleBank, augment_stream_rows, background_windows, build_bank, log_mel_features,
                                  prepare_rirs, speech_windows)
from edgesense.train.cache import ArrayCache, content_key
from edgesense.train.config import CHECKPOINT_MONITORS, FUSION_HEAD, TrainConfig, TrainOptions, derived_seed
from edgesense.train.distill import CosineDistance, DistillationLoss, pack_targets, soften, target_accuracy
from edgesense.train.model import (
    INPUT_AUDIO,
    INPUT_AUDIO_PRESENT,
    INPUT_AUDIO_ROW,
    INPUT_IMAGE,
    INPUT_IMAGE_PRESENT,
    INPUT_IMAGE_ROW,
    OUTPUT_AUDIO_HINT,
    OUTPUT_COMMAND,
    OUTPUT_SCENE,
    build_fusion_model,
    build_present_rows_view,
    describe,
)
from edgesense.train.pools import (
    place_sound_files,
    say_held_out,
    speech_negative_pools,
    split_recordings,
    wav_recordings,
)
from edgesense.train.runfolder import (
    MODEL_FILE, check_init_from, check_out_dir, check_out_outside_data, staged_run,
)
from edgesense.train.scene_audio import PlaceSounds, mix_under, place_rows
from edgesense.train.teachers.models import ModelEnsembleTeacher
from edgesense.types import SILENCE_LABEL, UNKNOWN_LABEL, is_command_word, label_twin

log = logging.getLogger(__name__)

RUN_FORMAT_VERSION = 1
#: The learning rate decays along a cosine to this share of its initial value over the run.
COSINE_DECAY_FLOOR = 0.02
#: A teacher model's probabilities are floored here before their log (an int8 output can be exactly 0).
_PROBABILITY_FLOOR = 1e-6
#: The embedding hint's targets are divided by at least this standard deviation per value.
_HINT_SCALE_FLOOR = 1e-3
#: A write that fails for one of these reasons (a full disk, a file size limit, a read-only disk) is said of the run.
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


# ----------------------------------------------------------------------------- data assembly


@dataclass(frozen=True)
class AudioSet:
    clips: np.ndarray  # float32 (N, clip_samples)
    labels: np.ndarray  # int32 (N,)
    synthetic: np.ndarray | None = None  # bool (N,): synthesized speech rather than a recording
    speakers: np.ndarray | None = None  # str (N,): each clip's speaker (the split's grouping key)


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, 3) RGB
    labels: np.ndarray  # int32 (N,)


@dataclass(frozen=True)
class Dataset:
    command_labels: tuple[str, ...]
    scene_labels: tuple[str, ...]
    audio_train: AudioSet
    audio_val: AudioSet
    audio_test: AudioSet
    image_train: ImageSet
    image_val: ImageSet
    image_test: ImageSet
    noise: tuple[np.ndarray, ...]
    summary: dict
    other_speech: np.ndarray | None = None  # float32 (K, clip_samples): windows of other speech (_unknown_)
    rirs: np.ndarray | None = None  # float32 (R, taps): real room responses (bank.prepare_rirs)
    #: Per scene class, recordings of its sound (scene_audio.PlaceSounds); None: photos get unrelated audio.
    place_sounds: tuple[tuple[np.ndarray, ...], ...] | None = None

    @property
    def is_word(self) -> np.ndarray:
        """Per command label: is it a command word (not ``_silence_`` or ``_unknown_``)."""
        return np.array([is_command_word(label) for label in self.command_labels], bool)

    @property
    def real_rooms(self) -> np.ndarray:
        """``rirs``, or an empty ``(0, 1)`` array when there are none."""
        return self.rirs if self.rirs is not None else np.zeros((0, 1), np.float32)


@dataclass(frozen=True)
class HintTargets:
    """The embedding hint's targets (``train.embedding_hint_weight``): the speech embedding's
    summary (:func:`~edgesense.train.teachers.speech_embedding.clip_summary`) of each training
    clip, and of each window of other speech (None without any)."""

    clips: np.ndarray  # float32 (N, D)
    talk: np.ndarray | None = None  # float32 (K, D)


def command_labels_for(words) -> tuple[str, ...]:
    return (SILENCE_LABEL, UNKNOWN_LABEL) + tuple(words)


def _audio_set(items, labels, config: TrainConfig, what: str, reports: dict, synthetic=frozenset()) -> AudioSet:
    index = {label: i for i, label in enumerate(labels)}
    clips, report = datasets.load_clips(items, config.audio_frontend, what=what)
    reports[what] = report.summary()
    y = np.array([index[items[i].label] for i in report.kept], dtype=np.int32)
    is_synthetic = np.array([items[i] in synthetic for i in report.kept], dtype=bool)
    speakers = np.array([items[i].speaker for i in report.kept], dtype=str)
    # load_clips' rows are float32 already: a copy here would hold the set twice at once (a large set's peak)
    return AudioSet(clips.astype(np.float32, copy=False), y, is_synthetic, speakers)


def _cap(items, max_per_class: int | None, rng: np.random.Generator):
    if max_per_class is None:
        return list(items)
    by_label: dict[str, list] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out = []
    for group in by_label.values():
        order = rng.permutation(len(group))[:max_per_class]
        out.extend(group[i] for i in sorted(order))
    return out


def load_dataset(config: TrainConfig) -> Dataset:
    """Read every source named in the config; the validation splits are speaker- and photo-disjoint."""
    cfg = config.data
    rng = np.random.default_rng(config.seed)
    command_labels = command_labels_for(cfg.words)
    reports: dict[str, str] = {}
    summary: dict = {"speech_commands": [str(p) for p in cfg.speech_commands],
                     "synthetic_speech": [str(p) for p in cfg.synthetic_speech],
                     "scenes": str(cfg.scenes) if cfg.scenes else None,
                     # How the held-out splits were made, so a benchmark can re-make them exactly.
                     "split": {"speaker_salt": cfg.speaker_split_salt,
                               "validation_percent": cfg.validation_percent,
                               "testing_percent": cfg.testing_percent,
                               "image_validation_percent": cfg.image_validation_percent,
                               "image_testing_percent": cfg.image_testing_percent}}

    train_items, val_items, test_items, noise_paths = [], [], [], wav_recordings(cfg.noise)
    for root in cfg.speech_commands:
        index = datasets.load_speech_commands(root, words=cfg.words)
        splits = index.split(validation_percent=cfg.validation_percent, testing_percent=cfg.testing_percent,
                             salt=cfg.speaker_split_salt)
        train_items += splits["training"]
        val_items += splits["validation"]
        test_items += splits["testing"]
        noise_paths += list(index.noise_paths)
    noise_pools = split_recordings(noise_paths)
    say_held_out("data.noise", cfg.noise, noise_pools)  # a file named alone keeps its folder's pool
    evaluation_noise = set(noise_pools["evaluation"])  # the benchmark's stream backgrounds never train
    train_items = [it for it in train_items if it.offset_ms is None or it.path not in evaluation_noise]
    # a _silence_ folder's clips are cut from background recordings too, named by a number: found by their content
    train_items = datasets.without_snippets_of(train_items, noise_pools["evaluation"],
                                               sample_rate_hz=config.audio_frontend.sample_rate_hz)
    synthetic_items: set = set()
    for root in cfg.synthetic_speech:  # synthesized voices are for training only
        synthesized = datasets.load_speech_commands(root, words=cfg.words).items
        synthetic_items.update(synthesized)
        train_items += synthesized
    train_items = _cap(train_items, cfg.max_items_per_class, rng)
    if cfg.speech_commands and not val_items:
        raise ValueError("data.validation_percent: the speaker-disjoint split left no validation clips")

    audio_train = _audio_set(train_items, command_labels, config, "audio_train", reports, synthetic_items)
    audio_val = _audio_set(val_items, command_labels, config, "audio_validation", reports)
    audio_test = _audio_set(test_items, command_labels, config, "audio_test", reports)
    noise: tuple[np.ndarray, ...] = ()
    rate = config.audio_frontend.sample_rate_hz
    noise_paths = noise_pools["training"]  # the evaluation pool never feeds training
    if noise_paths:
        pool, report = datasets.load_noise_pool(noise_paths, sample_rate_hz=rate)
        reports["noise"] = report.summary()
        noise = tuple(pool)
    negative_pools = speech_negative_pools(wav_recordings(cfg.speech_negatives))
    say_held_out("data.speech_negatives", cfg.speech_negatives, negative_pools)
    negative_paths = negative_pools["training"]
    other_speech = np.zeros((0, config.audio_frontend.clip_samples), np.float32)
    if negative_paths:
        recordings, report = datasets.load_noise_pool(negative_paths, sample_rate_hz=rate)
        reports["speech_negatives"] = report.summary()
        other_speech = speech_windows(recordings, config.audio_frontend.clip_samples,
                                      min_dbfs=config.bank.other_speech_min_dbfs)
    hard_paths = wav_recordings(cfg.hard_negatives)  # mined from the training pool: no pool split
    if hard_paths:
        recordings, report = datasets.load_noise_pool(hard_paths, sample_rate_hz=rate)
        reports["hard_negatives"] = report.summary()
        hard = speech_windows(recordings, config.audio_frontend.clip_samples,
                              min_dbfs=config.bank.other_speech_min_dbfs)
        summary["hard_negative_windows"] = int(hard.shape[0])
        other_speech = np.concatenate([other_speech, hard])
    rir_pools = split_recordings(wav_recordings(cfg.rirs))
    say_held_out("data.rirs", cfg.rirs, rir_pools)
    rir_paths = rir_pools["training"]
    rirs = np.zeros((0, 1), np.float32)
    if rir_paths:
        recordings, report = datasets.load_noise_pool(rir_paths, sample_rate_hz=rate)
        reports["rirs"] = report.summary()
        rirs = prepare_rirs(recordings, sample_rate_hz=rate)
    summary["training_pool"] = {"noise": [str(p) for p in noise_paths],
                                "speech_negatives": len(negative_paths), "rirs": [str(p) for p in rir_paths]}
    summary["other_speech_windows"] = int(other_speech.shape[0])
    summary["audio_train_clips"] = _counts(audio_train.labels, command_labels)
    summary["audio_validation_clips"] = _counts(audio_val.labels, command_labels)
    summary["audio_test_clips"] = _counts(audio_test.labels, command_labels)
    if cfg.speech_commands:
        datasets.say_missing_classes("data.speech_commands", "clips", cfg.words, {
            "training": summary["audio_train_clips"], "validation": summary["audio_validation_clips"],
            "testing": summary["audio_test_clips"]}, how="clips are split by speaker")
    summary["noise_files"] = len(noise_paths)

    scene_labels: tuple[str, ...] = ()
    empty_images = ImageSet(np.zeros((0, *config.image_frontend.input_shape), np.uint8), np.zeros(0, np.int32))
    image_train = image_val = image_test = empty_images
    photo_splits: dict[str, list] = {"training": [], "validation": [], "testing": []}
    av_index = datasets.load_av_folder(cfg.av) if cfg.av is not None else None
    classes: set[str] = set()
    for index in ([datasets.load_image_folder(cfg.scenes)] if cfg.scenes is not None else []) + (
            [av_index] if av_index is not None else []):
        _refuse_case_twins("data.av" if index is av_index else "data.scenes", index.classes, classes)
        classes |= set(index.classes)
        split = datasets.split_image_items(index.items, validation_percent=cfg.image_validation_percent,
                                           testing_percent=cfg.image_testing_percent)
        if index is av_index:  # a short recorded place is one block, held out whole
            split = datasets.train_every_class(split, index.classes, what="data.av")
        for name, items in split.items():
            photo_splits[name] += items
    place_sounds = None
    if classes:
        scene_labels = tuple(sorted(classes))
        image_train = _image_set(_cap(photo_splits["training"], cfg.max_items_per_class, rng), scene_labels, config,
                                 "image_train", reports)
        image_val = _image_set(photo_splits["validation"], scene_labels, config, "image_validation", reports)
        image_test = _image_set(photo_splits["testing"], scene_labels, config, "image_test", reports)
        summary["image_train"] = _counts(image_train.labels, scene_labels)
        summary["image_validation"] = _counts(image_val.labels, scene_labels)
        summary["image_test"] = _counts(image_test.labels, scene_labels)
        datasets.say_missing_classes("data.scenes" if cfg.scenes is not None else "data.av", "photos", scene_labels, {
            "training": summary["image_train"], "validation": summary["image_validation"],
            "testing": summary["image_test"]}, how="photos are split by a hash of their file name")
        if audio_train.labels.size:
            place_sounds = _place_sounds(cfg, scene_labels, photo_splits["training"], rate, reports, summary)
        elif cfg.av is not None or cfg.scene_ambient is not None:
            # The places' sounds ride in the audio rows, which are drawn from the speech clips.
            log.warning("%s: the sounds of the places are not used: the recipe has no speech clips to train, whose "
                        "audio rows carry them (add data.speech_commands, or adapt a deployed model with edgesense "
                        "adapt); the scene classes learn from the photos alone",
                        "data.av" if cfg.av is not None else "data.scene_ambient")
    summary["load_reports"] = reports
    return Dataset(command_labels, scene_labels, audio_train, audio_val, audio_test, image_train, image_val,
                   image_test, noise, summary, other_speech=other_speech, rirs=rirs, place_sounds=place_sounds)


def _refuse_case_twins(field: str, names, known: set[str]) -> None:
    """ValueError naming ``field`` where one of its class folders differs from another scene class only by case or
    Unicode form (:func:`edgesense.types.label_as_read`): ``Kitchen`` beside ``kitchen`` (a second ``edgesense
    record --label``) would be a second class of one place."""
    seen = set(known)
    for name in sorted(names):
        twin = label_twin(name, sorted(seen))
        if twin is not None:
            raise ValueError(f"{field}: expected class folders that differ from the other scene classes by more than "
                             f"case or Unicode form, got {name!r} beside {twin!r} (one place, one name: rename one "
                             "folder)")
        seen.add(name)


def _place_sounds(cfg, scene_labels: tuple[str, ...], training_photos, rate: int, reports: dict,
                  summary: dict) -> tuple[tuple[np.ndarray, ...], ...] | None:
    """Per scene class, the recordings of its sound that may train: the training pool of
    ``data.scene_ambient`` and the sounds of the paired training photos (``data.av``)."""
    paths, pools = place_sound_files(cfg.scene_ambient, scene_labels, training_photos)
    if pools:
        summary["scene_ambient"] = pools
    if not any(paths.values()):
        return None
    out = []
    for label in scene_labels:
        recordings, report = datasets.load_noise_pool(paths[label], sample_rate_hz=rate)
        reports[f"place_sounds/{label}"] = report.summary()
        out.append(tuple(r for r in recordings if r.size and np.any(r)))
    summary["place_sound_seconds"] = {label: round(sum(r.size for r in rs) / rate, 1)
                                      for label, rs in zip(scene_labels, out)}
    return tuple(out)


def _image_set(items, labels, config: TrainConfig, what: str, reports: dict) -> ImageSet:
    index = {label: i for i, label in enumerate(labels)}
    size = (config.image_frontend.height_px, config.image_frontend.width_px)
    images, report = datasets.load_images(items, size_px=size, what=what)
    reports[what] = report.summary()
    y = np.array([index[items[i].label] for i in report.kept], dtype=np.int32)
    return ImageSet(images, y)


def _counts(labels: np.ndarray, names) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- batches


def steps_per_epoch(ds: Dataset, config: TrainConfig) -> int:
    """Steps in one epoch: ``train.steps_per_epoch``, or the larger training set over the batch size."""
    anchor = max(ds.image_train.labels.size, ds.audio_train.labels.size)
    return config.train.steps_per_epoch or max(1, anchor // config.train.batch_size)


def features_of(clips: np.ndarray, config: TrainConfig) -> np.ndarray:
    """Clips (N, samples) -> features (N, frames, bins) with the device's own frontend."""
    return log_mel_features(clips, config.audio_frontend)


class FusionBatches(keras.utils.PyDataset):
    """Training batches: each pairs a photo with an unrelated speech clip (they come
    unpaired), with modality dropout, augmentation and per-head sample weights. With
    ``packed_targets`` both heads' targets are packed for :class:`DistillationLoss`; with
    ``scene_soft_targets`` (the vision teacher's, one row per training photo) a seen photo's row learns
    from them too (with ``photo_views``, one row per photo and view: the photo is shown as a drawn view
    of it, with that view's targets), and with
    ``clip_soft_targets`` (the audio teacher's, one row per training clip) so does a command row
    that still holds its clip's word (not talk, background or a cut-off part of a word). With a
    ``window_teacher`` (:class:`~edgesense.train.teachers.models.ModelEnsembleTeacher`) every audio
    row learns from its scores on the row's own window, as drawn and mixed, before SpecAugment.
    With ``hint`` (:class:`HintTargets`) each batch also has ``audio_hint`` targets: the teacher's
    summary of the clip or window of other speech a row still holds (weight 0 on the other rows)."""

    def __init__(self, dataset: Dataset, config: TrainConfig, *, steps: int, epoch_seed: int, workers: int = 1,
                 packed_targets: bool = False, scene_soft_targets: np.ndarray | None = None,
                 photo_views: augment.PhotoViews | None = None,
                 clip_soft_targets: np.ndarray | None = None, window_teacher: ModelEnsembleTeacher | None = None,
                 present_rows_only: bool = False, hint: HintTargets | None = None):
        super().__init__(workers=workers, use_multiprocessing=False)
        photos_shape = (dataset.image_train.labels.size, *(() if photo_views is None else (photo_views.count,)))
        require(scene_soft_targets is None or scene_soft_targets.shape[:-1] == photos_shape, "scene_soft_targets",
                f"one row per training photo{'' if photo_views is None else ' and view'} {photos_shape}",
                None if scene_soft_targets is None else scene_soft_targets.shape[:-1])
        require(photo_views is None or scene_soft_targets is not None, "photo_views",
                "None without scene_soft_targets (the views carry the teacher's targets)", photo_views)
        self.photo_views = photo_views
        self.packed_targets = packed_targets  # targets for DistillationLoss rather than one-hot
        self.present_rows_only = present_rows_only  # inputs for build_present_rows_view (see present_rows)
        for name, teacher in (("clip_soft_targets", clip_soft_targets), ("window_teacher", window_teacher)):
            require(teacher is None or packed_targets, name, "packed_targets=True", packed_targets)
        require(clip_soft_targets is None or window_teacher is None, "window_teacher",
                "None with clip_soft_targets (one audio teacher)", window_teacher)
        self.scene_soft, self.clip_soft, self.window_teacher = scene_soft_targets, clip_soft_targets, window_teacher
        require(hint is None or len(hint.clips) == dataset.audio_train.labels.size, "hint",
                f"one target per training clip ({dataset.audio_train.labels.size})",
                None if hint is None else len(hint.clips))
        self.hint = hint
        self.ds, self.config, self.steps = dataset, config, steps
        self.base_seed = epoch_seed
        self.epoch = 0
        n_cmd = len(dataset.command_labels)
        n_scene = max(len(dataset.scene_labels), 2)
        # Commands need no class weights: their clips are drawn class-balanced (below).
        self.command_weights = np.ones(n_cmd, np.float32)
        self.scene_weights = _class_weights(dataset.image_train.labels, n_scene, config.train.class_weighting)
        self.n_cmd, self.n_scene = n_cmd, n_scene
        self.noise_pool = (augment.prepare_noise_pool(dataset.noise, config.audio_frontend.clip_samples)
                           if dataset.noise else None)
        # Audio is drawn class-balanced: every class as often, whatever its count; within a class,
        # recordings rather than synthesized clips with probability ``real_speech_share``.
        labels, synthetic = dataset.audio_train.labels, dataset.audio_train.synthetic
        if synthetic is None:
            synthetic = np.zeros(labels.shape, bool)
        self.unknown_id = dataset.command_labels.index(UNKNOWN_LABEL)
        self.by_class, self.class_ids = class_pools(labels, synthetic, n_cmd)
        self.unknown_pool = self.pool_of_unknown()
        self.real_share = config.train.real_speech_share
        self.place_sounds = (PlaceSounds(dataset.place_sounds, config.audio_frontend.clip_samples)
                             if dataset.place_sounds else None)
        self.silence_id = dataset.command_labels.index(SILENCE_LABEL)
        self.is_word = dataset.is_word
        self.word_clips = np.flatnonzero(self.is_word[labels])  # the command words, for reversed speech

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __getitem__(self, step: int):
        rng = np.random.default_rng([self.base_seed, self.epoch, step])
        cfg = self.config
        b = cfg.train.batch_size
        has_audio = self.ds.audio_train.labels.size > 0
        has_image = self.ds.image_train.labels.size > 0

        photos = views = None
        if has_image:
            photos = rng.integers(0, self.ds.image_train.labels.size, size=b)
            if self.photo_views is not None:
                views = rng.integers(0, self.photo_views.count, size=b)
                images = self.photo_views.render(self.ds.image_train.images, photos, views)
            else:
                images = augment.augment_images(self.ds.image_train.images[photos], rng, cfg.image_augment)
            y_scene = self.ds.image_train.labels[photos]
        else:
            images = np.zeros((b, *cfg.image_frontend.input_shape), np.uint8)
            y_scene = np.zeros(b, np.int32)
        if has_audio:
            feats, y_cmd, cmd_target, cmd_weight, related, hint = self.audio_batch(
                rng, b, y_scene if has_image else None)
        else:
            feats = np.zeros((b, *cfg.audio_frontend.feature_shape), np.float32)
            y_cmd = np.zeros(b, np.int32)
            cmd_target = self.command_target(y_cmd, None)
            cmd_weight, related, hint = np.ones(b, np.float32), np.zeros(b, bool), None

        audio_present = np.full(b, float(has_audio), np.float32)
        image_present = np.full(b, float(has_image), np.float32)
        if has_audio and has_image:
            drop = rng.random(b)
            p = cfg.train.modality_dropout
            audio_present[drop < p] = 0.0
            image_present[(drop >= p) & (drop < 2 * p)] = 0.0
        # The scene loss counts where the photo is seen or where the audio is its place's sound.
        scene_seen = np.maximum(image_present, audio_present * related * float(has_image))
        x = {
            INPUT_AUDIO: feats,
            INPUT_IMAGE: images,  # uint8 until the present rows are picked: only they are converted (below)
            INPUT_AUDIO_PRESENT: audio_present[:, None],
            INPUT_IMAGE_PRESENT: image_present[:, None],
        }
        y = {
            OUTPUT_COMMAND: cmd_target,
            OUTPUT_SCENE: self.scene_target(y_scene, photos, image_present, views),
        }
        w = {
            OUTPUT_COMMAND: audio_present * self.command_weights[y_cmd] * cmd_weight,
            OUTPUT_SCENE: scene_seen * self.scene_weights[y_scene],
        }
        if self.hint is not None:
            hint_target, hint_weight = hint if hint is not None else (
                np.zeros((b, self.hint.clips.shape[1]), np.float32), np.zeros(b, np.float32))
            y[OUTPUT_AUDIO_HINT], w[OUTPUT_AUDIO_HINT] = hint_target, audio_present * hint_weight
        if self.present_rows_only:
            x = present_rows(x)
        x[INPUT_IMAGE] = x[INPUT_IMAGE].astype(np.float32)
        return x, y, w

    def scene_target(self, labels: np.ndarray, photos: np.ndarray | None, image_present: np.ndarray,
                     views: np.ndarray | None = None) -> np.ndarray:
        """Packed scene targets; the teacher's soft targets (of the drawn view, with views) count
        only where the photo is seen (a row that only hears its place learns the hard label)."""
        if not self.packed_targets:
            return keras.utils.to_categorical(labels, self.n_scene).astype(np.float32)
        if self.scene_soft is None or photos is None:
            return pack_targets(labels, self.n_scene)
        weight = np.where(image_present > 0, self.config.train.scene_distill_weight, 0.0)
        soft = self.scene_soft[photos] if views is None else self.scene_soft[photos, views]
        return pack_targets(labels, self.n_scene, soft, weight)

    def place_rows(self, rng: np.random.Generator, labels: np.ndarray, scenes: np.ndarray | None):
        """:func:`edgesense.train.scene_audio.place_rows` for this batch, or None without place sounds."""
        if self.place_sounds is None or scenes is None:
            return None
        return place_rows(scenes, labels, self.place_sounds, rng, self.config.scene_audio, silence_id=self.silence_id)

    def audio_batch(self, rng: np.random.Generator, count: int, scenes: np.ndarray | None = None):
        """``(features, labels, command targets, command weights, related, hint)`` of ``count`` drawn
        clips, augmented now; with place sounds, each row also carries the sound of the place in
        ``scenes`` (``related``: the audio belongs to the row's photo). ``hint``: ``(targets, weights)``
        of the embedding hint (:meth:`hint_rows`), or None without one."""
        idx = self.draw_audio_indices(rng, count)
        labels = self.ds.audio_train.labels[idx]
        clips, talk_index = self.with_other_speech(rng, self.ds.audio_train.clips[idx], labels)
        talk = talk_index >= 0
        clips, backwards = self.with_reversed_speech(rng, clips, labels, talk)
        clips, background = self.with_background_silence(rng, clips, labels)
        from_clip = ~talk & ~background
        clips, partial = augment_stream_rows(
            clips, rng, options=self.config.bank, augment_options=self.config.audio_augment,
            sample_rate_hz=self.config.audio_frontend.sample_rate_hz,
            placeable=from_clip & (labels != self.silence_id), partial_ok=from_clip & self.is_word[labels],
            noise_pool=self.noise_pool, rirs=self.ds.real_rooms)
        labels = np.where(partial, self.unknown_id, labels).astype(labels.dtype)
        holds_clip = from_clip & ~backwards & ~partial
        weight, related = np.ones(count, np.float32), np.zeros(count, bool)
        rows = self.place_rows(rng, labels, scenes)
        if rows is not None:
            clips = mix_under(clips, rows, rng, self.config.scene_audio)
            labels, weight, related = rows["labels"], rows["command_weight"], rows["only"] | rows["under"]
            only = rows["only"]  # rows that are the place's sound alone hold no clip or talk
            holds_clip, talk = holds_clip & ~only, talk & ~only
        holds_clip &= labels == self.ds.audio_train.labels[idx]
        feats = features_of(clips, self.config)
        if self.window_teacher is not None:
            target = self.window_target(labels, feats)
        else:
            target = self.command_target(labels, idx, holds_clip)
        feats = augment.augment_features(feats, rng, self.config.audio_augment)
        return feats, labels, target, weight, related, self.hint_rows(idx, holds_clip, talk_index, talk)

    def hint_rows(self, clips: np.ndarray, holds_clip: np.ndarray, talk_index: np.ndarray, holds_talk: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """The embedding hint's ``(targets, weights)`` for rows drawn from training clips ``clips``:
        the clip's summary where the row ``holds_clip``, the window's where it ``holds_talk``
        (``talk_index``: which window of other speech), zeros at weight 0 elsewhere."""
        if self.hint is None:
            return None
        target = np.zeros((clips.size, self.hint.clips.shape[1]), np.float32)
        target[holds_clip] = self.hint.clips[clips[holds_clip]]
        if self.hint.talk is not None:
            target[holds_talk] = self.hint.talk[talk_index[holds_talk]]
        else:
            holds_talk = np.zeros_like(holds_talk)
        return target, (holds_clip | holds_talk).astype(np.float32)

    def window_target(self, labels: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Packed targets: the hard ``labels`` and the window teacher's scores of ``features`` at
        ``train.distill_temperature``, at ``train.distill_weight`` on every row."""
        options = self.config.train
        probabilities = self.window_teacher.probabilities(features)
        soft = soften(np.log(np.maximum(probabilities, _PROBABILITY_FLOOR)), options.distill_temperature)
        return pack_targets(labels, self.n_cmd, soft, options.distill_weight)

    def with_other_speech(self, rng: np.random.Generator, clips: np.ndarray, labels: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``clips`` with ``train.other_speech_share`` of the ``_unknown_`` rows replaced by
        windows of other speech (still ``_unknown_``); returns ``(clips, window)``: per row, the
        window of ``Dataset.other_speech`` it now holds, or -1."""
        talk = self.ds.other_speech
        share = self.config.train.other_speech_share
        window = np.full(labels.shape, -1, np.int64)
        if share <= 0 or talk is None or not len(talk):
            return clips, window
        replaced = (labels == self.unknown_id) & (rng.random(labels.size) < share)
        window[replaced] = rng.integers(0, len(talk), size=int(replaced.sum()))
        clips = clips.copy()
        clips[replaced] = talk[window[replaced]]
        return clips, window

    def with_reversed_speech(self, rng: np.random.Generator, clips: np.ndarray, labels: np.ndarray,
                             taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``clips`` with ``train.reversed_speech_share`` of the ``_unknown_`` rows not ``taken``
        replaced by a training command word played backwards (still ``_unknown_``); returns
        ``(clips, replaced)``."""
        share = self.config.train.reversed_speech_share
        replaced = np.zeros(labels.shape, bool)
        if share <= 0 or not self.word_clips.size:
            return clips, replaced
        replaced = (labels == self.unknown_id) & ~taken & (rng.random(labels.size) < share)
        if replaced.any():
            clips = clips.copy()
            clips[replaced] = self.ds.audio_train.clips[rng.choice(self.word_clips, size=int(replaced.sum())), ::-1]
        return clips, replaced

    def with_background_silence(self, rng: np.random.Generator, clips: np.ndarray, labels: np.ndarray
                                ) -> tuple[np.ndarray, np.ndarray]:
        """``clips`` with ``bank.background_silence_probability`` of the ``_silence_`` rows replaced
        by a window of the noise pool at ``bank.silence_dbfs_range``; returns ``(clips, replaced)``."""
        options = self.config.bank
        replaced = np.zeros(labels.shape, bool)
        if self.noise_pool is None or options.background_silence_probability <= 0:
            return clips, replaced
        replaced = (labels == self.silence_id) & (rng.random(labels.size) < options.background_silence_probability)
        if replaced.any():
            clips = clips.copy()
            clips[replaced] = background_windows(self.noise_pool, int(replaced.sum()), rng,
                                                 dbfs_range=options.silence_dbfs_range)
        return clips, replaced

    def command_target(self, labels: np.ndarray, clips: np.ndarray | None,
                       holds_clip: np.ndarray | None = None) -> np.ndarray:
        """One-hot targets, or packed ones; the teacher's soft targets of training clips ``clips``
        count (at ``train.distill_weight``) on the rows ``holds_clip``."""
        if not self.packed_targets:
            return keras.utils.to_categorical(labels, self.n_cmd).astype(np.float32)
        if self.clip_soft is None or clips is None:
            return pack_targets(labels, self.n_cmd)
        weight = np.where(holds_clip, self.config.train.distill_weight, 0.0)
        return pack_targets(labels, self.n_cmd, self.clip_soft[clips], weight)

    def pool_of_unknown(self) -> int | None:
        """Where ``_unknown_`` stands in :attr:`by_class` when ``train.unknown_share`` asks for it
        (None otherwise); a ValueError when there is no ``_unknown_`` clip to draw."""
        if self.config.train.unknown_share is None:
            return None
        where = np.flatnonzero(self.class_ids == self.unknown_id)
        if not where.size:
            raise ValueError(f"train.unknown_share: expected {UNKNOWN_LABEL} clips among the training clips, "
                             "found none")
        return int(where[0])

    def draw_classes(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Positions in :attr:`by_class` of ``count`` draws: uniform, or ``_unknown_`` with
        probability ``train.unknown_share`` and the other classes uniformly."""
        if self.unknown_pool is None:
            return rng.integers(0, len(self.by_class), size=count)
        others = np.delete(np.arange(len(self.by_class)), self.unknown_pool)
        unknown = rng.random(count) < self.config.train.unknown_share
        return np.where(unknown, self.unknown_pool, others[rng.integers(0, others.size, size=count)])

    def draw_audio_indices(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Indices of ``count`` training clips: a drawn class (:meth:`draw_classes`), then a clip of it."""
        classes = self.draw_classes(rng, count)
        if self.real_share is None:
            # ``rng.choice(pool)`` is ``pool[rng.integers(0, pool.size)]``, and integers with an array of bounds
            # draws as those calls one by one: every row's clip in one call, the same draws (test_trainer holds it).
            pools = [pool for pool, _, _ in self.by_class]
            starts = np.cumsum([0] + [pool.size for pool in pools[:-1]])
            sizes = np.array([pool.size for pool in pools], np.int64)
            return np.concatenate(pools)[starts[classes] + rng.integers(0, sizes[classes])].astype(np.int64, copy=False)
        out = np.empty(count, np.int64)
        for i, c in enumerate(classes):
            pool, real, synthesized = self.by_class[c]
            if self.real_share is not None and real.size and synthesized.size:
                pool = real if rng.random() < self.real_share else synthesized
            out[i] = rng.choice(pool)
        return out


def class_pools(labels: np.ndarray, synthetic: np.ndarray, n_classes: int
                ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
    """Per class that has rows, ``(all, recorded, synthesized)`` row indices, and the class ids
    in that order."""
    pools = [(np.flatnonzero(labels == c), np.flatnonzero((labels == c) & ~synthetic),
              np.flatnonzero((labels == c) & synthetic)) for c in range(n_classes)]
    kept = [c for c in range(n_classes) if pools[c][0].size]
    return [pools[c] for c in kept], np.asarray(kept, np.int64)


def present_rows(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch of the whole model's inputs as :func:`edgesense.train.model.build_present_rows_view`
    takes it: each modality's rows only where its flag is set, and for every row the index of its
    own among them (0 where absent: masked). A modality absent from every row keeps one row, so
    no encoder ever sees an empty batch."""
    out = dict(x)
    for feature, flag, index in ((INPUT_AUDIO, INPUT_AUDIO_PRESENT, INPUT_AUDIO_ROW),
                                 (INPUT_IMAGE, INPUT_IMAGE_PRESENT, INPUT_IMAGE_ROW)):
        present = np.asarray(x[flag]).reshape(-1) > 0
        kept = np.flatnonzero(present) if present.any() else np.zeros(1, np.int64)
        out[feature] = x[feature][kept]
        out[index] = np.where(present, np.cumsum(present) - 1, 0).astype(np.int32)
    return out


class BankBatches(FusionBatches):
    """Batches whose audio rows come from the cached :class:`ExampleBank` (augmented once):
    per step only row drawing and SpecAugment. Command targets are packed for
    :class:`DistillationLoss` (hard label, the teacher's soft targets, the row's weight)."""

    def __init__(self, dataset: Dataset, config: TrainConfig, bank: ExampleBank, *, steps: int, epoch_seed: int,
                 soft_targets: np.ndarray | None = None, workers: int = 1,
                 scene_soft_targets: np.ndarray | None = None, photo_views: augment.PhotoViews | None = None,
                 present_rows_only: bool = False):
        super().__init__(dataset, config, steps=steps, epoch_seed=epoch_seed, workers=workers, packed_targets=True,
                         scene_soft_targets=scene_soft_targets, photo_views=photo_views,
                         present_rows_only=present_rows_only)
        self.bank, self.soft = bank, soft_targets
        self.weight = np.where(bank.known_negative, 0.0, config.train.distill_weight).astype(np.float32)
        self.by_class, self.class_ids = class_pools(bank.labels, bank.synthetic, self.n_cmd)
        self.unknown_pool = self.pool_of_unknown()

    def audio_batch(self, rng: np.random.Generator, count: int, scenes: np.ndarray | None = None):
        """As :meth:`FusionBatches.audio_batch`, from the bank; its rows hold features, not
        clips, so a place's sound only enters as the whole audio of a row (``only`` rows)."""
        rows = self.draw_audio_indices(rng, count)
        feats = self.bank.features[rows].astype(np.float32)
        labels = self.bank.labels[rows]
        weight, related = np.ones(count, np.float32), np.zeros(count, bool)
        place = self.place_rows(rng, labels, scenes)
        if place is not None and place["only"].any():
            only = place["only"]
            feats[only] = features_of(place["sound"][only], self.config)
            labels, related = place["labels"], only
            weight = np.where(only, place["command_weight"], 1.0).astype(np.float32)
        feats = augment.augment_features(feats, rng, self.config.audio_augment)
        return feats, labels, self.command_target(labels, rows), weight, related, None

    def command_target(self, labels: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        if rows is None or self.soft is None:
            return pack_targets(labels, self.n_cmd)
        return pack_targets(labels, self.n_cmd, self.soft[rows], self.weight[rows])


def _class_weights(labels: np.ndarray, num_classes: int, enabled: bool) -> np.ndarray:
    weights = np.ones(num_classes, np.float32)
    if enabled and labels.size:
        counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
        present = counts > 0
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


# ----------------------------------------------------------------------------- evaluation


def predict_heads(model: keras.Model, *, audio_features: np.ndarray | None = None, images: np.ndarray | None = None,
                  batch_size: int = 256) -> dict[str, np.ndarray]:
    """Run the model with one modality present and the other absent."""
    n = len(audio_features) if audio_features is not None else len(images)
    audio_shape = model.input[INPUT_AUDIO].shape[1:]
    image_shape = model.input[INPUT_IMAGE].shape[1:]
    x = {
        INPUT_AUDIO: audio_features if audio_features is not None else np.zeros((n, *audio_shape), np.float32),
        INPUT_IMAGE: images.astype(np.float32) if images is not None else np.zeros((n, *image_shape), np.float32),
        INPUT_AUDIO_PRESENT: np.full((n, 1), float(audio_features is not None), np.float32),
        INPUT_IMAGE_PRESENT: np.full((n, 1), float(images is not None), np.float32),
    }
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


class HeadValidation(keras.callbacks.Callback):
    """Per-head validation accuracy each epoch: commands on held-out speakers (camera
    absent), scenes on held-out photos (microphone absent). ``val_score`` is their mean;
    ``val_command_loss`` the clips' mean cross-entropy (natural log, probabilities floored at
    :data:`_PROBABILITY_FLOOR`)."""

    def __init__(self, audio_val_features: np.ndarray, audio_val_labels: np.ndarray,
                 image_val: np.ndarray, image_val_labels: np.ndarray):
        super().__init__()
        self.audio, self.audio_labels = audio_val_features, audio_val_labels
        self.images, self.image_labels = image_val, image_val_labels

    def evaluate(self) -> dict[str, float]:
        accuracies, losses = {}, {}
        if self.audio_labels.size:
            probabilities = predict_heads(self.model, audio_features=self.audio)[OUTPUT_COMMAND]
            accuracies["val_command_accuracy"] = float(np.mean(probabilities.argmax(-1) == self.audio_labels))
            true = probabilities[np.arange(self.audio_labels.size), self.audio_labels]
            losses["val_command_loss"] = float(np.mean(-np.log(np.maximum(true, _PROBABILITY_FLOOR))))
        if self.image_labels.size:
            out = predict_heads(self.model, images=self.images)
            accuracies["val_scene_accuracy"] = float(np.mean(out[OUTPUT_SCENE].argmax(-1) == self.image_labels))
        score = float(np.mean(list(accuracies.values()))) if accuracies else 0.0
        return {**accuracies, "val_score": score, **losses}

    def on_epoch_end(self, epoch, logs=None):
        scores = self.evaluate()
        if logs is not None:
            logs.update(scores)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))


def _OnModel(callback_class: type) -> type:
    """``callback_class`` acting on the model given as ``on=`` whatever model ``fit()`` hands it:
    a run fits the present-rows view (:func:`build_present_rows_view`), which shares the model's
    weights, while validation, checkpoints and early stopping must see the model itself (and the
    stop that early stopping asks of it is passed on to the fitted view, whose ``fit()`` it ends)."""

    class OnModel(callback_class):
        def __init__(self, *args, on: keras.Model, **kwargs):
            super().__init__(*args, **kwargs)
            self._on = on

        def set_model(self, model):
            self._fitted = model
            super().set_model(self._on)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if getattr(self._on, "stop_training", False):  # early stopping: fit() loops on the view
                self._fitted.stop_training = True

    OnModel.__name__ = OnModel.__qualname__ = f"{callback_class.__name__}OnModel"
    return OnModel


# ----------------------------------------------------------------------------- the run


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


#: The fusion head's layers that hold each output's classes: they start afresh when a run goes on
#: from another run whose classes (by name or order) differ.
_CLASS_LAYERS = {OUTPUT_COMMAND: (OUTPUT_COMMAND,), OUTPUT_SCENE: ("scene_logits", "scene_audio_logits",
                                                                  "scene_image_logits")}
_CLASS_NAMES = {OUTPUT_COMMAND: "command labels", OUTPUT_SCENE: "scene classes"}


def _earlier_labels(run_dir: Path) -> dict[str, tuple[str, ...]]:
    """The labels of each output run ``run_dir`` recorded in its run.json (none where it recorded none)."""
    try:
        labels = json.loads((run_dir / "run.json").read_text())["labels"]
        return {key: tuple(labels[key]) for key in _CLASS_LAYERS if isinstance(labels.get(key), list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _copy_weights(model: keras.Model, earlier: keras.Model, path: Path, skip: frozenset[str]) -> None:
    """``earlier``'s weights into ``model``, layer by layer by name, but for the layers ``skip``
    names (nested models included); ValueError naming the first layer whose weights do not fit."""
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            source = earlier.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"init_from: {path} does not match this config's model (it has no layer "
                             f"{layer.name!r})") from None
        if isinstance(layer, keras.Model) and isinstance(source, keras.Model):
            _copy_weights(layer, source, path, skip)
            continue
        want, found = ([tuple(w.shape) for w in x.weights] for x in (layer, source))
        if want != found:
            raise ValueError(f"init_from: {path} does not match this config's model (layer {layer.name!r}: "
                             f"expected weights of shapes {want}, found {found})")
        layer.set_weights(source.get_weights())


#: How much of Keras' own message a mismatch of ``--init-from`` shows when no layer could be named.
_SHOWN_CHARS = 240


def _mismatch(model: keras.Model, path: Path, exc: ValueError) -> ValueError:
    """Why the weights in ``path`` do not fit ``model``, in one short line: the first layer whose
    weights differ in shape (Keras' own message holds every value of those weights, kilobytes of them)."""
    try:
        earlier = keras.saving.load_model(path, compile=False)
    except Exception:  # noqa: BLE001 (only a shorter message was sought: Keras' then, cut short)
        earlier = None
    if earlier is not None:
        try:
            _copy_weights(model, earlier, path, frozenset())
        except ValueError as named:
            return named
    return ValueError(f"init_from: {path} does not match this config's model ({one_line(exc)[:_SHOWN_CHARS]})")


def _load_initial_weights(model: keras.Model, run_dir: str | Path, labels: Mapping[str, Sequence[str]],
                          frozen_parts: tuple[str, ...] = ()) -> None:
    """The weights of run ``run_dir``. Where the labels of an output (``labels``: command and/or
    scene) differ from those the run recorded, by name or order (other command words; a user's own
    places, ``data.av``), the layers that hold that output's classes start afresh: the fusion head,
    which holds them, cannot be among ``frozen_parts`` then."""
    run_dir = Path(run_dir)
    path = run_dir / MODEL_FILE
    earlier = _earlier_labels(run_dir)
    changed = {key: (earlier[key], tuple(now)) for key, now in labels.items()
               if key in earlier and earlier[key] != tuple(now)}
    if changed and FUSION_HEAD in frozen_parts:
        changes = " and ".join(f"its {_CLASS_NAMES[key]} change ({', '.join(old)} -> {', '.join(new)})"
                               for key, (old, new) in changed.items())
        raise ValueError(f"train.frozen_parts: {FUSION_HEAD} cannot stay as {run_dir} left it: {changes}, so its "
                         f"{' and '.join(changed)} output{'s start' if len(changed) > 1 else ' starts'} afresh")
    for key, (old, new) in changed.items():
        log.info("init_from %s: %s %s -> %s; the %s output layer starts afresh", run_dir, _CLASS_NAMES[key],
                 list(old), list(new), key)
    try:
        # Keras 3.15 follows a load that fails with a warning per container of the failed layers, that the
        # file is of an older Keras and those layers keep fresh weights: untrue, beside the line the run stops
        # with. What Keras says is held back until the load has worked, then shown as it would have been.
        with warnings.catch_warnings(record=True) as said:
            earlier_model = keras.saving.load_model(path, compile=False) if changed else None
            if earlier_model is None:
                model.load_weights(path)
    except ValueError as exc:
        raise _mismatch(model, path, exc) from None
    except (zipfile.BadZipFile, KeyError, TypeError) as exc:  # not a .keras archive, or one without weights
        raise ValueError(f"init_from: {path}: expected a saved Keras model, could not read it ({exc})") from None
    for w in said:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    if earlier_model is not None:  # every other layer as the run left it, by name and shape
        _copy_weights(model, earlier_model, path, frozenset(name for key in changed for name in _CLASS_LAYERS[key]))


def make_bank(ds: Dataset, config: TrainConfig, cache: ArrayCache, embedder=None) -> ExampleBank:
    """The cached example bank of ``ds``' training clips (:mod:`edgesense.train.bank`)."""
    labels = ds.command_labels
    word_ids = np.flatnonzero(ds.is_word)
    synthetic = ds.audio_train.synthetic if ds.audio_train.synthetic is not None else np.zeros(
        ds.audio_train.labels.shape, bool)
    empty = np.zeros((0, config.audio_frontend.clip_samples), np.float32)
    return build_bank(ds.audio_train.clips, ds.audio_train.labels, synthetic, seed=config.seed, options=config.bank,
                      augment_options=config.audio_augment, frontend=config.audio_frontend, word_ids=word_ids,
                      silence_id=labels.index(SILENCE_LABEL), unknown_id=labels.index(UNKNOWN_LABEL),
                      noise=ds.noise, rirs=ds.real_rooms,
                      other_speech=ds.other_speech if ds.other_speech is not None else empty, cache=cache,
                      embed=embedder, embed_key=embedder.cache_key if embedder is not None else None)


class AudioTeacher:
    """The speech-embedding teacher of one run: embeddings (cached), its head, its logits."""

    def __init__(self, config: TrainConfig, cache: ArrayCache):
        from edgesense.train.teachers.speech_embedding import SpeechEmbedding, SpeechEmbeddingOptions

        self.config, self.cache = config, cache
        self.embedder = SpeechEmbedding(SpeechEmbeddingOptions(pad_ms=config.audio_teacher.pad_ms))
        self.head = None

    def embed(self, clips: np.ndarray) -> np.ndarray:
        key = content_key(clips, self.embedder.cache_key)

        def compute() -> dict[str, np.ndarray]:
            with datasets.phase(log, "audio teacher: embedding %d clips (cached once done)", len(clips)):
                return {"x": self.embedder(clips).astype(np.float16)}

        return self.cache.get_or_compute("embeddings", key, compute)["x"].astype(np.float32)

    def fit(self, ds: Dataset, bank: ExampleBank | None = None) -> dict[str, float]:
        """Train the head on the clean training clips plus, with a ``bank``, its rows (every
        variant, negatives included); returns its validation accuracy."""
        from edgesense.train.teachers.audio import fit_audio_head

        x, y = self.embed(ds.audio_train.clips), ds.audio_train.labels
        if bank is not None:
            x = np.concatenate([bank.embeddings.astype(np.float32), x])
            y = np.concatenate([bank.labels, y])
        val = (self.embed(ds.audio_val.clips), ds.audio_val.labels)
        started = time.perf_counter()
        log.info("audio teacher: training its head on %d examples (%d epochs at most) ...", len(y),
                 self.config.audio_teacher.epochs)
        self.head = fit_audio_head(x, y, len(ds.command_labels), self.config.audio_teacher, seed=self.config.seed,
                                   validation=val)
        accuracy = self.accuracy(ds.audio_val.clips, ds.audio_val.labels)
        log.info("audio teacher: %d examples, %.0f s, validation accuracy %.4f", len(y),
                 time.perf_counter() - started, accuracy)
        return {"teacher_command_accuracy": accuracy, "teacher_train_examples": int(len(y))}

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        from edgesense.train.teachers import teacher_logits

        return teacher_logits(self.head, embeddings)

    def hint_targets(self, ds: Dataset) -> HintTargets:
        """The embedding hint's targets for ``ds``' training clips and windows of other speech
        (those only with ``train.embedding_hint_talk``; embeddings cached like every embedding;
        no head is needed), standardized per value over all of them: the summaries share so large
        a common part that a constant is within cosine 0.94 of them, and the cosine must compare
        what tells them apart."""
        from edgesense.train.teachers.speech_embedding import clip_summary

        talk = (ds.other_speech if ds.other_speech is not None and len(ds.other_speech)
                and self.config.train.embedding_hint_talk else None)
        clips = clip_summary(self.embed(ds.audio_train.clips))
        windows = clip_summary(self.embed(talk)) if talk is not None else np.zeros((0, clips.shape[1]), np.float32)
        both = np.concatenate([clips, windows])
        mean, scale = both.mean(axis=0), np.maximum(both.std(axis=0), _HINT_SCALE_FLOOR)
        return HintTargets((clips - mean) / scale, (windows - mean) / scale if talk is not None else None)

    def clip_logits(self, ds: Dataset) -> np.ndarray:
        """The teacher's logits for each training clip, the per-step pipeline's soft targets.

        With ``audio_teacher.cross_fit_folds`` k > 1 the training speakers fall into k folds and
        each clip's logits come from a head trained on the other folds: a head scores the clips
        it trained on near one-hot, which would teach the student little beyond the label."""
        from edgesense.train.teachers import teacher_logits
        from edgesense.train.teachers.audio import fit_audio_head

        folds = self.config.audio_teacher.cross_fit_folds
        x, y = self.embed(ds.audio_train.clips), ds.audio_train.labels
        if folds == 1:
            return self.logits(x)
        speakers = ds.audio_train.speakers
        names = np.unique(speakers)
        if names.size < folds:
            raise ValueError(f"audio_teacher.cross_fit_folds: expected at most the {names.size} training speakers, "
                             f"got {folds}")
        order = np.random.default_rng(self.config.seed).permutation(names.size)
        fold_of = dict(zip(names[order], np.arange(names.size) % folds))
        fold = np.array([fold_of[s] for s in speakers])
        out = np.zeros((y.size, len(ds.command_labels)), np.float32)
        val = (self.embed(ds.audio_val.clips), ds.audio_val.labels)
        for k in range(folds):
            held = fold == k
            head = fit_audio_head(x[~held], y[~held], len(ds.command_labels), self.config.audio_teacher,
                                  seed=derived_seed(self.config.seed, k), validation=val)
            out[held] = teacher_logits(head, x[held])
        log.info("audio teacher, %d speaker folds: out-of-fold accuracy on the training clips %.4f", folds,
                 float(np.mean(out.argmax(-1) == y)))
        return out

    def accuracy(self, clips: np.ndarray, labels: np.ndarray) -> float:
        if not labels.size:
            return float("nan")
        return float(np.mean(self.logits(self.embed(clips)).argmax(-1) == labels))


class VisionTeacher:
    """The ImageNet teacher of one run: the network fine-tuned on the training photos (cached, as
    are its features) and its last layer as the head, or, with ``fine_tune_epochs: 0``, the frozen
    backbone's features (cached) and a head trained on them; then its logits."""

    def __init__(self, config: TrainConfig, cache: ArrayCache):
        self.config, self.cache = config, cache
        self.features = None
        self.weights: dict[str, np.ndarray] | None = None  # the fine-tuned network's, once fitted
        self.head = None

    def embed(self, images: np.ndarray) -> np.ndarray:
        require(self.features is not None, "VisionTeacher", "fit() before its features", "not fitted")
        key = content_key(images, self.features.key)  # the backbone and its input size, not the head

        def compute() -> dict[str, np.ndarray]:
            with datasets.phase(log, "vision teacher: features of %d photos (cached once done)", len(images)):
                return {"x": self.features(images).astype(np.float16)}

        return self.cache.get_or_compute("imagenet_features", key, compute)["x"].astype(np.float32)

    def fit(self, ds: Dataset) -> dict[str, float]:
        """Fine-tune the network (or train the frozen backbone's head) on the training photos;
        returns the teacher's validation accuracy."""
        from edgesense.train.teachers import vision

        started = time.perf_counter()
        options = self.config.vision_teacher
        num_classes = max(len(ds.scene_labels), 2)
        photos = (ds.image_val.images, ds.image_val.labels) if ds.image_val.labels.size else None
        seed = options.seed if options.seed is not None else self.config.seed
        if options.fine_tune_epochs:
            unread = ("enabled", "seed", "num_threads", *vision.HEAD_FIELDS)  # what the fine-tuning never reads
            settings = {k: v for k, v in asdict(options).items() if k not in unread}
            key = content_key(ds.image_train.images, ds.image_train.labels, *(photos or ()), settings, num_classes,
                              seed)
            self.weights = self.cache.get_or_compute("imagenet_fine_tuned", key, lambda: vision.fine_tune(
                ds.image_train.images, ds.image_train.labels, num_classes, options, seed=seed, validation=photos))
            self.features = vision.ImageNetFeatures(options, weights=self.weights)
            self.head = vision.linear_head(self.weights)
        else:
            self.features = vision.ImageNetFeatures(options)
            validation = (self.embed(photos[0]), photos[1]) if photos is not None else None
            self.head = vision.fit_vision_head(self.embed(ds.image_train.images), ds.image_train.labels, num_classes,
                                               options, seed=seed, validation=validation)
        accuracy = self.accuracy(ds.image_val.images, ds.image_val.labels)
        log.info("vision teacher: %d photos, %.0f s, validation accuracy %.4f", ds.image_train.labels.size,
                 time.perf_counter() - started, accuracy)
        return {"teacher_scene_accuracy": accuracy}

    def logits(self, images: np.ndarray) -> np.ndarray:
        from edgesense.train.teachers import teacher_logits

        return teacher_logits(self.head, self.embed(images))

    def view_logits(self, images: np.ndarray, views: augment.PhotoViews) -> np.ndarray:
        """The logits of every view of every photo, (N, views.count, classes); each view's
        features are cached by their content, like the photos'."""
        return np.stack([self.logits(views.all_photos(images, v)) for v in range(views.count)], axis=1)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        if not labels.size:
            return float("nan")
        return float(np.mean(self.logits(images).argmax(-1) == labels))


def _checkpointing(options: TrainOptions, ds: Dataset, path: Path, model) -> list:
    """The callbacks that keep the checkpoint ``options.checkpoint_metric`` names (and stop early by
    its figure; :func:`_check_validation_data` has checked that the data hold the validation items it needs)."""
    if options.checkpoint_metric == "last":
        return [_OnModel(keras.callbacks.ModelCheckpoint)(str(path), save_best_only=False, on=model)]
    monitor, mode, _ = CHECKPOINT_MONITORS[options.checkpoint_metric]
    return [_OnModel(keras.callbacks.ModelCheckpoint)(str(path), monitor=monitor, mode=mode, save_best_only=True,
                                                      on=model),
            _OnModel(keras.callbacks.EarlyStopping)(monitor=monitor, mode=mode, patience=options.patience,
                                                    restore_best_weights=True, on=model)]


def _check_validation_data(options: TrainOptions, ds: Dataset) -> None:
    """ValueError when the data hold none of the validation items ``options.checkpoint_metric`` follows (``score``:
    clips or photos): its figure would never move, and the run would keep its first epoch and stop early."""
    if options.checkpoint_metric == "last":
        return
    needs = CHECKPOINT_MONITORS[options.checkpoint_metric][2]
    held_out = {"clips": ds.audio_val.labels.size, "photos": ds.image_val.labels.size}
    if (held_out[needs] if needs is not None else sum(held_out.values())):
        return
    what = needs or "clips or photos"
    raise ValueError(f"train.checkpoint_metric: {options.checkpoint_metric!r} needs validation {what}, and this data "
                     "has none (a validation percent of 0, or too few to split); expected train.checkpoint_metric: "
                     "last to keep the last epoch without validation")


def _kept_epoch(metric: str, history: Mapping[str, Sequence[float]]) -> int | None:
    """The 1-based epoch whose weights the run kept (None when nothing was validated)."""
    if metric == "last":
        return len(history.get("loss", [])) or None
    monitor, mode, _ = CHECKPOINT_MONITORS[metric]
    if not history.get(monitor):
        return None
    return int((np.argmax if mode == "max" else np.argmin)(history[monitor])) + 1


def _stop_reason(options: TrainOptions, epochs_run: int, stop: StopSwitch) -> str | None:
    """Why a run ran fewer epochs than ``options.epochs`` (None when it ran them all)."""
    if stop.requested:
        return f"interrupted in epoch {epochs_run} of {options.epochs}"
    if epochs_run >= options.epochs or options.checkpoint_metric not in CHECKPOINT_MONITORS:
        return None
    monitor = CHECKPOINT_MONITORS[options.checkpoint_metric][0]
    return f"no better {monitor} for {options.patience} epoch{'s' if options.patience != 1 else ''}"


def _optimizer(options: TrainOptions, schedule):
    """AdamW at ``schedule``, keeping the weights' moving average when ``options.ema_momentum`` is set."""
    averaged = options.ema_momentum is not None
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=options.weight_decay, use_ema=averaged,
                                  **({"ema_momentum": options.ema_momentum} if averaged else {}))


class StopSwitch:
    """What Ctrl-C (SIGINT) and SIGTERM do to a run (``edgesense train`` attaches it to both with
    :func:`edgesense.app.cli.stop_on_signals`; :meth:`stop` is called from the signal handler). Once
    an epoch has been checkpointed, the first one ends training after the current step, and the run
    is written whole from the best checkpoint so far (``metrics.stopped_early`` says so). Before
    that (the data loading, the first epoch), during the final evaluation and writing, and a second
    time, it interrupts at once (KeyboardInterrupt): the run then leaves nothing in ``out_dir``."""

    def __init__(self) -> None:
        self.requested = False
        self.graceful = False
        #: Asked to interrupt at once: raised again at every check, should a handler have swallowed it.
        self.aborted = False

    def stop(self) -> None:
        if self.requested or not self.graceful:
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """KeyboardInterrupt when asked to interrupt at once."""
        if self.aborted:
            raise KeyboardInterrupt


class _StopOnSwitch(keras.callbacks.Callback):
    """Ends ``fit()`` after the step in which :class:`StopSwitch` was asked to stop; arms the switch
    once ``checkpoint`` exists (the last callback of an epoch, after the checkpoint's)."""

    def __init__(self, switch: StopSwitch, checkpoint: Path):
        super().__init__()
        self.switch, self.checkpoint = switch, checkpoint

    def on_train_batch_end(self, batch, logs=None):
        self.switch.check()
        if self.switch.requested:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.switch.check()
        if self.switch.requested:
            self.model.stop_training = True
        self.switch.graceful = self.checkpoint.is_file()

    def on_train_end(self, logs=None):
        self.switch.graceful = False


def train(config: TrainConfig, out_dir: str | Path, *, verbose: int = 1, init_from: str | Path | None = None,
          replace: bool = False, stop: StopSwitch | None = None) -> dict:
    """Train per ``config`` and write the run folder; returns the metrics. ``init_from`` (a run
    folder of the same architecture) starts from that run's weights: a fine-tune with a fresh
    schedule. An ``out_dir`` holding files is refused unless ``replace`` (and it is a run folder).
    The run is written into a hidden folder beside ``out_dir`` and moved there once it is complete
    (:func:`edgesense.train.runfolder.commit_run`): a failed or interrupted run leaves nothing, and
    an earlier run that ``replace`` gives up is kept until then. ``stop``: see :class:`StopSwitch`."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, replace, flag="out_dir", force_flag="replace=True")
    check_out_outside_data(out_dir, config.data, flag="out_dir")
    if init_from is not None:
        check_init_from(Path(init_from), out_dir, flag="init_from", out_flag="out_dir")
        datasets.check_init_split(Path(init_from), config.data)
    elif config.train.frozen_parts:
        raise ValueError(f"train.frozen_parts: {', '.join(config.train.frozen_parts)} would keep random weights; "
                         f"expected --init-from a run to freeze them at")
    if config.audio_teacher.enabled or config.train.embedding_hint_weight:
        # A missing [teacher] extra is one line, before minutes of loading.
        from edgesense.train.teachers.speech_embedding import model_files

        model_files()
    if config.vision_teacher.enabled:
        from edgesense.train.teachers.vision import weights_file

        weights_file(config.vision_teacher.backbone)
    keras.utils.set_random_seed(config.seed)
    stop = stop or StopSwitch()
    try:
        with staged_run(out_dir, replace, flag="out_dir", force_flag="replace=True") as staging:
            started = time.perf_counter()
            ds = load_dataset(config)
            if ds.audio_train.labels.size == 0 and ds.image_train.labels.size == 0:
                raise ValueError("data: no training clips or photos could be loaded (see the load summary above)")
            _check_validation_data(config.train, ds)  # before the example bank and the teachers
            load_s = time.perf_counter() - started
            stop.check()
            metrics = _fit_and_write(config, staging, ds, load_s, verbose=verbose, init_from=init_from, stop=stop)
            stop.check()
    except BaseException as exc:
        if stop.aborted and not isinstance(exc, KeyboardInterrupt):
            # The signal's KeyboardInterrupt, raised while TensorFlow's C code ran a step, can surface as another
            # error (SystemError: bad argument to internal function): it is the interrupt all the same.
            raise KeyboardInterrupt from exc
        if isinstance(exc, OSError) and exc.errno in _FULL_OR_READ_ONLY:
            raise OSError(exc.errno, f"{out_dir}: could not write the run ({exc.strerror or exc}); it left nothing "
                                     "there") from exc
        raise
    if metrics["stopped_early"]:
        (log.warning if stop.requested else log.info)(
            "training stopped early (%s): %s keeps epoch %s of the %d it ran", metrics["stopped_early"], out_dir,
            metrics["best_epoch"], metrics["epochs_run"])
    return metrics


def _fit_and_write(config: TrainConfig, out_dir: Path, ds: Dataset, load_s: float, *, verbose: int,
                   init_from: str | Path | None, stop: StopSwitch) -> dict:
    prepare_started = time.perf_counter()
    cache = ArrayCache(config.data.cache_dir)
    teacher = AudioTeacher(config, cache) if config.audio_teacher.enabled and ds.audio_train.labels.size else None
    bank = (make_bank(ds, config, cache, teacher.embedder if teacher else None)
            if ds.audio_train.labels.size and config.bank.variants else None)
    teacher_metrics: dict = {}
    hint = None
    if config.train.embedding_hint_weight and ds.audio_train.labels.size:
        hint = (teacher or AudioTeacher(config, cache)).hint_targets(ds)
    soft_targets = None
    if teacher is not None:
        teacher_metrics = teacher.fit(ds, bank)
        logits = (teacher.logits(bank.embeddings.astype(np.float32)) if bank is not None
                  else teacher.clip_logits(ds))  # per step: each drawn clip's targets
        soft_targets = soften(logits, config.train.distill_temperature)
    window_teacher = (ModelEnsembleTeacher(config.data.teacher_models, command_labels=ds.command_labels,
                                           audio_frontend=config.audio_frontend)
                      if config.data.teacher_models and ds.audio_train.labels.size else None)
    audio_val_features = features_of(ds.audio_val.clips, config)
    if window_teacher is not None:
        teacher_metrics["teacher_command_accuracy"] = window_teacher.accuracy(audio_val_features, ds.audio_val.labels)
        log.info("teacher models %s: validation accuracy of their mean %.4f", ", ".join(window_teacher.paths),
                 teacher_metrics["teacher_command_accuracy"])
    vision_teacher = (VisionTeacher(config, cache) if config.vision_teacher.enabled and ds.image_train.labels.size
                      else None)
    scene_soft = photo_views = None
    if vision_teacher is not None:
        teacher_metrics.update(vision_teacher.fit(ds))
        if config.train.scene_distill_views:
            photo_views = augment.PhotoViews(count=config.train.scene_distill_views, seed=config.seed,
                                             augment=config.image_augment)
            logits = vision_teacher.view_logits(ds.image_train.images, photo_views)
        else:
            logits = vision_teacher.logits(ds.image_train.images)
        scene_soft = soften(logits, config.train.distill_temperature)
    prepare_s = time.perf_counter() - prepare_started
    log.info("data %.0f s, example bank and teacher %.0f s (cache: %d hits, %d misses)", load_s, prepare_s,
             cache.hits, cache.misses)

    num_scenes = max(len(ds.scene_labels), 2)
    scene_labels = ds.scene_labels or ("none", "other")

    strategy = _strategy(config.train.strategy)
    with strategy.scope():
        model = build_fusion_model(num_commands=len(ds.command_labels), num_scenes=num_scenes,
                                   options=config.model, audio_frontend=config.audio_frontend,
                                   image_frontend=config.image_frontend)
        if init_from is not None:
            _load_initial_weights(model, init_from, {OUTPUT_COMMAND: ds.command_labels, OUTPUT_SCENE: scene_labels},
                                  config.train.frozen_parts)
        for part in config.train.frozen_parts:
            model.get_layer(part).trainable = False  # its batch norms then run on their stored statistics
        steps = steps_per_epoch(ds, config)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.train.learning_rate, decay_steps=steps * config.train.epochs,
            alpha=COSINE_DECAY_FLOOR)
        n_cmd = len(ds.command_labels)
        temperature = config.train.distill_temperature
        # Trained through a view whose encoders skip the rows without their modality (a fifth of
        # each, by modality dropout): the same rows and losses, a sixth less compute a step. Not
        # when a strategy splits each batch across replicas: its inputs have rows of their own.
        present_rows_only = config.train.strategy == "default"
        view = (build_present_rows_view(model, hint_dim=hint.clips.shape[1] if hint is not None else None)
                if present_rows_only else model)
        losses = {OUTPUT_COMMAND: DistillationLoss(n_cmd, temperature,
                                                   label_smoothing=config.train.command_label_smoothing),
                  OUTPUT_SCENE: DistillationLoss(num_scenes, temperature, label_smoothing=config.train.label_smoothing,
                                                 name="scene_distillation")}
        if hint is not None:
            losses[OUTPUT_AUDIO_HINT] = CosineDistance(name="embedding_hint")
        view.compile(
            optimizer=_optimizer(config.train, schedule),
            loss=losses,
            loss_weights={name: config.train.embedding_hint_weight if name == OUTPUT_AUDIO_HINT else 1.0
                          for name in losses},
            weighted_metrics={OUTPUT_COMMAND: [target_accuracy(n_cmd)],
                              OUTPUT_SCENE: [target_accuracy(num_scenes)]},
        )
    if bank is not None:
        batches = BankBatches(ds, config, bank, steps=steps, epoch_seed=config.seed, soft_targets=soft_targets,
                              workers=config.train.workers, scene_soft_targets=scene_soft, photo_views=photo_views,
                              present_rows_only=present_rows_only)
    else:
        batches = FusionBatches(ds, config, steps=steps, epoch_seed=config.seed, workers=config.train.workers,
                                packed_targets=True, scene_soft_targets=scene_soft, photo_views=photo_views,
                                clip_soft_targets=soft_targets,
                                window_teacher=window_teacher, present_rows_only=present_rows_only, hint=hint)
    validation_split = (audio_val_features, ds.audio_val.labels, ds.image_val.images, ds.image_val.labels)
    validation = _OnModel(HeadValidation)(*validation_split, on=model)
    # Validation, the checkpoint and early stopping act on the model (which the view trains), not the view.
    # With a weight average, it stands in for the weights at each epoch's end, before they act.
    callbacks = [
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.train.ema_momentum is not None else []),
        validation,
        *_checkpointing(config.train, ds, out_dir / MODEL_FILE, model),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
        _StopOnSwitch(stop, out_dir / MODEL_FILE),
    ]
    fit_started = time.perf_counter()
    history = view.fit(batches, epochs=config.train.epochs, callbacks=callbacks, verbose=verbose)
    train_s = time.perf_counter() - fit_started
    epochs_run = len(history.history.get("loss", []))

    # The best checkpoint, saved again without any training configuration (with --strategy the model
    # itself was compiled with the distillation loss): other tools load it without the trainer.
    model = keras.models.load_model(out_dir / MODEL_FILE, compile=False)
    model.save(out_dir / MODEL_FILE)
    validation = HeadValidation(*validation_split)
    validation.set_model(model)
    final = validation.evaluate()
    # The test split is scored once, at the end: it never picks a checkpoint.
    audio_test_features = features_of(ds.audio_test.clips, config)
    test = HeadValidation(audio_test_features, ds.audio_test.labels,
                          ds.image_test.images, ds.image_test.labels)
    test.set_model(model)
    tested = test.evaluate() if ds.audio_test.labels.size or ds.image_test.labels.size else {}
    sizes = describe(model)
    metrics = {
        "command_accuracy": final.get("val_command_accuracy"),
        "scene_accuracy": final.get("val_scene_accuracy"),
        "test_command_accuracy": tested.get("val_command_accuracy"),
        "test_scene_accuracy": tested.get("val_scene_accuracy"),
        "epochs_run": epochs_run,
        "best_epoch": _kept_epoch(config.train.checkpoint_metric, history.history),
        "stopped_early": _stop_reason(config.train, epochs_run, stop),
        "init_from": str(init_from) if init_from is not None else None,
        "load_seconds": round(load_s, 1),
        "prepare_seconds": round(prepare_s, 1),
        "train_seconds": round(train_s, 1),
        "seconds_per_epoch": round(train_s / max(1, epochs_run), 1),
        "example_bank_rows": len(bank) if bank is not None else 0,
        **teacher_metrics,
        "test_teacher_command_accuracy": (
            teacher.accuracy(ds.audio_test.clips, ds.audio_test.labels) if teacher is not None
            else window_teacher.accuracy(audio_test_features, ds.audio_test.labels)
            if window_teacher is not None else None),
        "test_teacher_scene_accuracy": (vision_teacher.accuracy(ds.image_test.images, ds.image_test.labels)
                                        if vision_teacher is not None else None),
        "validation_clips": int(ds.audio_val.labels.size),
        "validation_photos": int(ds.image_val.labels.size),
        "test_clips": int(ds.audio_test.labels.size),
        "test_photos": int(ds.image_test.labels.size),
    }
    _write_run_folder(out_dir, model, config, ds, scene_labels, sizes, metrics, history.history,
                      audio_val_features)
    return metrics


def _write_run_folder(out_dir: Path, model, config: TrainConfig, ds: Dataset, scene_labels, sizes, metrics,
                      history, audio_val_features) -> None:
    rng = np.random.default_rng(config.seed)
    per_class = config.data.calibration_per_class
    # Calibration: real training samples, balanced over classes, without augmentation.
    calib_audio = features_of(ds.audio_train.clips[datasets.balanced_indices(ds.audio_train.labels, per_class, rng)],
                              config)
    if ds.image_train.labels.size:
        calib_images = ds.image_train.images[datasets.balanced_indices(ds.image_train.labels, per_class, rng)]
    else:
        calib_images = np.zeros((0, *config.image_frontend.input_shape), np.uint8)
    np.savez_compressed(out_dir / "calibration.npz", audio_features=calib_audio, image=calib_images)
    np.savez_compressed(out_dir / "validation.npz", audio_features=audio_val_features,
                        command_label=ds.audio_val.labels, image=ds.image_val.images,
                        scene_label=ds.image_val.labels)
    run = {
        "format_version": RUN_FORMAT_VERSION,
        "name": config.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": {"command": list(ds.command_labels), "scene": list(scene_labels)},
        "audio_frontend": config.audio_frontend.to_dict(),
        "image_frontend": config.image_frontend.to_dict(),
        "fusion_strategy": config.model.fusion,
        **sizes,
        "metrics": metrics,
        "data": ds.summary,
        "config": config.to_dict(),
    }
    (out_dir / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_model_summary(model, out_dir / "model_summary.txt")
    plot_curves(history, out_dir / "curves.png")


def write_model_summary(model, path: Path) -> None:
    """Keras' summary of ``model``, its sub-models expanded, as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), expand_nested=True)
    path.write_text("\n".join(lines) + "\n")


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history.get("loss", []), label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, label in (("val_command_accuracy", "commands (held-out speakers)"),
                       ("val_scene_accuracy", "scenes (held-out photos)")):
        if key in history:
            ax_acc.plot(epochs, history[key], label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
