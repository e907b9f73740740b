"""Scenes with their own sound, the camera clean and degraded: the benchmark's degraded-camera table.

Does the scene head use sound that belongs to the place when the camera is poor? Each test photo
is scored with the camera ``clean`` and degraded (:data:`edgesense.train.degrade.BENCH_DEGRADATIONS`:
dark, blurred, occluded, applied with a seeded generator to the model-size frame the image
frontend produces), three ways: ``fused`` (sound and photo), ``image_only`` (microphone absent)
and ``audio_only`` (camera absent; the same for every condition, so computed once).

The sound is either a 1 s snippet of a recording of the photo's own class
(``--scenes`` + ``--scene-ambient DIR``, ``DIR/CLASS/*.wav``; only the recordings of the
*evaluation* pool of :func:`edgesense.train.pools.split_recordings`, which never feed training,
at a random RMS level in ``ambience_dbfs_range``) or the pair's own wav (``--av``).

Beside the three paths, ``either_path``: the share of photos that image-only *or* audio-only names
right, the ceiling of a fusion that always knew which of its two paths to believe. Scored on the
same photos and sounds, it tells how much sound can add at best with this audio path: a fused
head above image-only by more than ``either_path`` − image-only would need pairs where both paths
are wrong.

Summary figures, in accuracy points: the mean over the degraded conditions of fused − image-only
(the issue's target: at least +20), of either-path − image-only (the ceiling of that gain), and
clean fused − clean image-only (target: at least 0).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from edgesense.bench.accuracy import _at_level, _cap, _cut, _read_bgr, classification_report
from edgesense.bench.options import _progress
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.frontend.image import preprocess_frame
from edgesense.frontend.wav import read_wav
from edgesense.runtime.model import EdgeModel
from edgesense.schema.validate import require
from edgesense.train import data
from edgesense.train.degrade import BENCH_DEGRADATIONS, degrade, to_uint8
from edgesense.train.pools import EVALUATION_PERCENT, is_recording, split_recordings

__all__ = ["CONDITIONS", "EITHER_PATH", "PATHS", "SceneAmbience", "ambience_clips", "check_av_folder",
           "degraded_camera_table", "degraded_image_only", "evaluate_av", "evaluate_scenes_av", "leave_out_trained",
           "load_scene_ambience", "trained_recordings"]

logger = logging.getLogger(__name__)

CONDITIONS: tuple[str, ...] = ("clean", *BENCH_DEGRADATIONS)
PATHS: tuple[str, ...] = ("fused", "image_only", "audio_only")
#: The table's ceiling column: right where image-only or audio-only is right.
EITHER_PATH = "either_path"
#: The issue's targets, in accuracy points: what sound adds with a degraded camera, and with a clean one.
TARGET_DEGRADED_GAIN_POINTS = 20.0
TARGET_CLEAN_GAIN_POINTS = 0.0
_POINTS = 100.0
#: Independent random streams under one --seed: the pairing of sounds, and each degradation.
_AMBIENCE_STREAM = 1
_DEGRADE_STREAM = 2


# --------------------------------------------------------------------------- the sounds of the places


@dataclass(frozen=True, kw_only=True)
class SceneAmbience:
    """The evaluation pool of a ``CLASS/*.wav`` folder: per class, its recordings (read, at the
    model's rate); ``training_files``: how many recordings of the folder were left out."""

    root: Path
    recordings: Mapping[str, Mapping[str, np.ndarray]]  #: class -> file name -> samples
    training_files: int

    def evaluation_files(self) -> dict[str, list[str]]:
        return {label: sorted(files) for label, files in self.recordings.items()}


def load_scene_ambience(root: Path, classes: Sequence[str], sample_rate_hz: int) -> SceneAmbience:
    """Split ``root``'s recordings into pools (by recording; the files the trainer and ``adapt``
    split, :func:`edgesense.train.pools.is_recording`: ``NAME.WAV`` counts, a hidden ``._NAME.wav``
    does not) and read the evaluation pool of each of ``classes``. ValueError naming the folders
    when a class has no evaluation recording."""
    root = Path(root)
    folders = {label: root / label for label in classes}
    wavs = {label: sorted(p for p in folder.iterdir() if p.is_file() and is_recording(p)) if folder.is_dir() else []
            for label, folder in folders.items()}
    pools = split_recordings([p for files in wavs.values() for p in files])
    evaluation = set(pools["evaluation"])
    problems = []
    for label, files in wavs.items():
        if not folders[label].is_dir():
            problems.append(f"{folders[label]} (no such folder)")
        elif not any(p in evaluation for p in files):
            problems.append(f"{folders[label]} ({len(files)} .wav file(s), none in the evaluation pool)")
    require(not problems, "scene_ambient",
            f"a folder of .wav recordings for each scene class with at least one in the evaluation pool "
            f"({EVALUATION_PERCENT:g} % of 2 or more recordings, by file name)", "; ".join(problems))
    recordings = {label: {p.name: read_wav(p, sample_rate_hz=sample_rate_hz) for p in files if p in evaluation}
                  for label, files in wavs.items()}
    return SceneAmbience(root=root, recordings=recordings, training_files=len(pools["training"]))


def trained_recordings(metadata: Mapping[str, Any]) -> frozenset[str]:
    """The ``CLASS/NAME`` place recordings a model records as having taught it: the training pool
    of ``data.scene_ambient`` (``edgesense train``) and of ``adapted.scene_ambient`` (``edgesense
    adapt``); none for a model that records neither."""
    names: set[str] = set()
    for section in ("data", "adapted"):
        pools = (metadata.get(section) or {}).get("scene_ambient") or {}
        names.update(str(name) for name in pools.get("training") or ())
    return frozenset(names)


def leave_out_trained(ambience: SceneAmbience, trained: Collection[str]) -> tuple[SceneAmbience, list[str]]:
    """``ambience`` without the recordings ``trained`` names (``CLASS/NAME``,
    :func:`trained_recordings`): the pool split depends on how many recordings a folder holds, so
    a folder that gained or lost recordings since the model trained can put one it trained on in the
    evaluation pool. Returns the rest and the names left out (logged); ValueError naming
    ``scene_ambient`` when a class has no recording left."""
    trained = set(trained)
    left_out = sorted(f"{label}/{name}" for label, files in ambience.recordings.items() for name in files
                      if f"{label}/{name}" in trained)
    if not left_out:
        return ambience, []
    logger.warning("--scene-ambient %s: %d recording(s) of its evaluation pool taught the model (its metadata names "
                   "them in a training pool; the folder changed since): left out: %s", ambience.root, len(left_out),
                   ", ".join(left_out))
    recordings = {label: {name: x for name, x in files.items() if f"{label}/{name}" not in trained}
                  for label, files in ambience.recordings.items()}
    empty = [f"{ambience.root / label} ({len(ambience.recordings[label])} in the evaluation pool, all taught the model)"
             for label, files in recordings.items() if not files]
    require(not empty, "scene_ambient", "an evaluation-pool recording the model did not train on for each scene "
            "class", "; ".join(empty))
    return SceneAmbience(root=ambience.root, recordings=recordings,
                         training_files=ambience.training_files + len(left_out)), left_out


def ambience_clips(ambience: SceneAmbience, labels: Sequence[str], clip_samples: int,
                   dbfs_range: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One clip per label: a random snippet of a random evaluation recording of that class at a
    random RMS level in ``dbfs_range``; and the file each came from."""
    clips, sources = np.empty((len(labels), clip_samples), np.float32), []
    for i, label in enumerate(labels):
        names = sorted(ambience.recordings[label])
        name = names[int(rng.integers(len(names)))]
        clips[i] = _at_level(_cut(ambience.recordings[label][name], clip_samples, rng), rng.uniform(*dbfs_range))
        sources.append(f"{label}/{name}")
    return clips, sources


# --------------------------------------------------------------------------- the table


def _embed_audio(model: EdgeModel, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Audio embeddings of one-clip sounds (each exactly ``clip_samples`` long)."""
    return [model.encode_audio(log_mel_spectrogram(c, model.audio_frontend))
            for c in _progress(clips, len(clips), "scene sounds")]


def degraded_camera_table(model: EdgeModel, frames: Sequence[np.ndarray], true: Sequence[int],
                          audio: Sequence[np.ndarray], seed: int, what: str) -> dict[str, Any]:
    """The table for these preprocessed frames (float32 RGB in [0, 255]), their classes (indices
    into the model's scene labels) and the audio embedding of each one's sound."""
    labels = model.scene_labels
    true = np.asarray(true, np.int64)
    heard = np.array([int(np.argmax(model.fuse(a, None)[1])) for a in audio], np.int64)
    audio_only = classification_report(true, heard, labels)
    table: dict[str, dict[str, float | None]] = {}
    for condition, images in _camera_conditions(model, frames, seed):
        fused, image_only = [], []
        for image, a in _progress(zip(images, audio), len(images), f"{what}: {condition} camera"):
            v = model.encode_image(image.astype(np.float32))
            fused.append(int(np.argmax(model.fuse(a, v)[1])))
            image_only.append(int(np.argmax(model.fuse(None, v)[1])))
        either = (np.array(image_only, np.int64) == true) | (heard == true)
        table[condition] = {"fused": classification_report(true, np.array(fused), labels)["accuracy"],
                            "image_only": classification_report(true, np.array(image_only), labels)["accuracy"],
                            "audio_only": audio_only["accuracy"],
                            EITHER_PATH: round(float(either.mean()), 4) if true.size else None}

    def gain(condition: str, path: str = "fused") -> float | None:
        row = table[condition]
        return None if row[path] is None else (row[path] - row["image_only"]) * _POINTS

    def mean_gain(path: str) -> float | None:
        gains = [gain(c, path) for c in BENCH_DEGRADATIONS]
        return None if None in gains else round(float(np.mean(gains)), 1)

    clean_gain = None if gain("clean") is None else round(gain("clean"), 1)
    return {"count": int(true.size), "conditions": list(CONDITIONS), "table": table, "audio_only": audio_only,
            "summary": {"degraded_fused_minus_image_only_points": mean_gain("fused"),
                        "degraded_target_points": TARGET_DEGRADED_GAIN_POINTS,
                        "degraded_either_path_minus_image_only_points": mean_gain(EITHER_PATH),
                        "clean_fused_minus_image_only_points": clean_gain,
                        "clean_target_points": TARGET_CLEAN_GAIN_POINTS}}


def _camera_conditions(model: EdgeModel, frames: Sequence[np.ndarray], seed: int):
    """``(condition, uint8 images)`` for each of :data:`CONDITIONS`: the frames as they are, then
    degraded each way, every degradation from a random stream of its own under ``seed``."""
    clean = to_uint8(np.stack(frames)) if len(frames) else np.zeros((0, *model.image_frontend.input_shape), np.uint8)
    for k, condition in enumerate(CONDITIONS):
        yield condition, clean if condition == "clean" else degrade(clean, condition,
                                                                     np.random.default_rng([seed, _DEGRADE_STREAM, k]))


def degraded_image_only(model: EdgeModel, frames: Sequence[np.ndarray], frame_labels: Sequence[str], seed: int,
                        what: str) -> dict[str, Any]:
    """The camera path alone on the scored photos (``predict_scenes``' frames and labels), clean
    and degraded as in :func:`degraded_camera_table` (the same conditions and random streams),
    without sound: what ``bench --tuning-only`` reports on the validation photos, so the trade
    between clean and poor cameras can be weighed without the test split. ``image_only``:
    condition -> accuracy."""
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    true = np.array([lookup[x] for x in frame_labels], np.int64)
    image_only = {}
    for condition, images in _camera_conditions(model, frames, seed):
        named = [int(np.argmax(model.fuse(None, model.encode_image(image.astype(np.float32)))[1]))
                 for image in _progress(images, len(images), f"{what}: {condition} camera")]
        image_only[condition] = classification_report(true, np.array(named, np.int64), model.scene_labels)["accuracy"]
    return {"count": int(true.size), "conditions": list(CONDITIONS), "image_only": image_only}


def evaluate_scenes_av(model: EdgeModel, frames: Sequence[np.ndarray], frame_labels: Sequence[str],
                       ambience: SceneAmbience, dbfs_range: tuple[float, float], seed: int) -> dict[str, Any]:
    """The table for the scored test photos (``predict_scenes``' frames), each with sound of its place."""
    ambience, left_out = leave_out_trained(ambience, trained_recordings(model.metadata))
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    rng = np.random.default_rng([seed, _AMBIENCE_STREAM])
    clips, sources = ambience_clips(ambience, frame_labels, model.audio_frontend.clip_samples, dbfs_range, rng)
    result = degraded_camera_table(model, frames, [lookup[x] for x in frame_labels], _embed_audio(model, clips),
                                   seed, "scenes with their sound")
    result["ambience"] = {"folder": str(ambience.root), "pool": "evaluation", "dbfs_range": list(dbfs_range),
                          "snippet_s": model.audio_frontend.clip_samples / model.audio_frontend.sample_rate_hz,
                          "evaluation_files": ambience.evaluation_files(),
                          "training_files_left_out": ambience.training_files,
                          "taught_the_model_left_out": left_out,
                          "snippets_per_file": dict(sorted(Counter(sources).items()))}
    return result


def check_av_folder(av_root: Path, scene_labels: Sequence[str]) -> None:
    """ValueError naming ``av`` when ``av_root`` is not a paired folder
    (:func:`edgesense.train.data.load_av_folder`) or a class folder of it is not one of ``scene_labels``
    (its pairs could not be scored)."""
    unknown = sorted(set(data.load_av_folder(av_root).classes) - set(scene_labels))
    require(not unknown, "av", f"class folders named like the model's scene labels {list(scene_labels)}", unknown)


def evaluate_av(model: EdgeModel, av_root: Path, cap: int | None, seed: int,
                split: data.SplitSpec | None = None) -> dict[str, Any]:
    """The table for a paired folder (``CLASS/NAME.jpg`` + ``CLASS/NAME.wav``), each photo with its own wav.
    ``split`` (``--split testing``: the model's recorded split): only the pairs training held out for
    testing (file-name hash, a class none of whose pairs trained training on all of them, as
    :func:`edgesense.train.data.train_every_class`); None: every pair. ``selection`` says which."""
    index = data.load_av_folder(av_root)
    unknown = sorted(set(index.classes) - set(model.scene_labels))
    if unknown:  # bench refuses them before the run (check_av_folder) unless the fusion study reads the folder too
        logger.warning("--av %s: class folders %s are not among the model's scene labels; their pairs are not "
                       "scored", av_root, unknown)
    if split is None:
        pool, how = index.items, "every pair of the folder"
    else:
        pool = data.train_every_class(split.split_photos(index), index.classes, what="--av")["testing"]
        how = (f"testing split: file-name hash, validation {split.image_validation_percent:g} %, testing "
               f"{split.image_testing_percent:g} %")
    items = _cap(pool, cap, seed)
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    frames, true, clips = [], [], []
    for item in _progress(items, len(items), "audio-visual pairs"):
        bgr = _read_bgr(item.image_path)
        if bgr is None or item.label not in lookup:
            continue
        frames.append(preprocess_frame(bgr, model.image_frontend))
        clips.append(fit_clip(read_wav(item.audio_path, sample_rate_hz=model.audio_frontend.sample_rate_hz),
                              model.audio_frontend))
        true.append(lookup[item.label])
    return {**degraded_camera_table(model, frames, true, _embed_audio(model, clips), seed, "audio-visual pairs"),
            "selection": how}
