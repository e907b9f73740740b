"""Benchmark accuracy: the held-out split of commands and scenes through the device path."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from edgesense.bench.latency import _Timer
from edgesense.bench.options import BenchOptions, _progress
from edgesense.bench.uncertainty import accuracy_interval, per_class_intervals
from edgesense.frontend.audio import fit_clip, log_mel_spectrogram
from edgesense.frontend.image import preprocess_frame
from edgesense.frontend.wav import read_wav
from edgesense.runtime.model import EdgeModel
from edgesense.schema.validate import require
from edgesense.train import data
from edgesense.train.data import SplitSpec
from edgesense.train.pools import wav_recordings

logger = logging.getLogger(__name__)


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
            "per_class": per_class, "confusion": matrix.tolist(), "labels": list(labels),
            # how sure (edgesense.bench.uncertainty): beside the figures above, which stay as they were
            "accuracy_interval": accuracy_interval(int(np.trace(matrix)), int(true.size)),
            "per_class_interval": per_class_intervals(matrix, labels)}


def item_correctness(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each item named right or not, in the order scored: what a paired test of two models compares."""
    return np.asarray(true, np.int64) == np.asarray(pred, np.int64)


def _noise_recordings(paths: Sequence[Path], sample_rate_hz: int) -> list[np.ndarray]:
    """The recordings under ``paths`` as the streams find them (:func:`edgesense.train.pools.wav_recordings`:
    folders searched recursively, each file once, sorted), so the "ambient audio" figure does not hang on the
    order of the ``--noise`` flags (one named twice counted twice and the flags' order drew other snippets), and
    a folder of class subfolders (``scene_ambient/CLASS/*.wav``) is heard, not replaced by pink noise."""
    out = []
    for f in wav_recordings(paths):
        try:
            out.append(read_wav(f, sample_rate_hz=sample_rate_hz))
        except (ValueError, OSError) as exc:
            logger.warning("skipping noise recording %s: %s", f, exc)
    return out


AMBIENT_NOISE_DBFS_RANGE = (-45.0, -25.0)  #: level of the "ambient audio" figure's noise (RMS)


def _cut(recording: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples from a random place of ``recording`` (tiled when it is shorter), float64."""
    if recording.size < n:
        recording = np.tile(recording, n // max(recording.size, 1) + 1)
    start = int(rng.integers(0, recording.size - n + 1))
    return recording[start:start + n].astype(np.float64)


def _at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """``x`` without its mean, scaled to an RMS of ``level_dbfs`` (silence stays silent), float32."""
    x = x - x.mean()
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12) * 10 ** (level_dbfs / 20)).astype(np.float32)


def _ambient_snippet(noise: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    if noise:
        x = _cut(noise[int(rng.integers(len(noise)))], n, rng)
    else:  # pink noise
        spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        x = np.fft.irfft(spectrum / np.sqrt(f), n=n)
    return _at_level(x, rng.uniform(*AMBIENT_NOISE_DBFS_RANGE))


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
    index = (data.load_speech_commands(options.speech_commands) if words is None
             else data.load_speech_commands(options.speech_commands, words=tuple(words)))
    if options.split == "testing":
        splits = split.split_clips(index)
        part = "validation" if options.tuning_only else "testing"
        how = (f"{part} split (list files)" if index.has_list_files else
               f"{part} split: speakers hashed with salt {split.speaker_salt!r}, validation "
               f"{split.validation_percent:g} %, testing {split.testing_percent:g} %")
        return index, splits[part], splits["validation"], how
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
    index = data.load_image_folder(options.scenes)
    if options.split == "testing":
        part = "validation" if options.tuning_only else "testing"
        items = split.split_photos(index)[part]
        return index, items, (f"{part} split: file-name hash, validation {split.image_validation_percent:g} %, "
                              f"testing {split.image_testing_percent:g} %")
    return index, list(index.items), "every photo of the folder"


# --------------------------------------------------------------------------- our model


def predict_commands(model: EdgeModel, clips: np.ndarray, timer: _Timer) -> np.ndarray:
    """The command each clip is named through the device path, camera absent (its index among the labels)."""
    preds = np.empty(len(clips), np.int64)
    for i in _progress(range(len(clips)), len(clips), "commands (camera absent)"):
        features = timer.time("audio_frontend", log_mel_spectrogram, fit_clip(clips[i], model.audio_frontend),
                              model.audio_frontend)
        embedding = timer.time("audio_encoder", model.encode_audio, features)
        command, _ = timer.time("fusion", model.fuse, embedding, None)
        preds[i] = int(np.argmax(command))
    return preds


def evaluate_commands(model: EdgeModel, clips: np.ndarray, labels: np.ndarray, timer: _Timer) -> dict[str, Any]:
    return classification_report(labels, predict_commands(model, clips, timer), model.command_labels)


def _read_bgr(path: Path) -> np.ndarray | None:
    """The photo at ``path`` (None, with a warning, when it cannot be read). Read by Python and decoded by OpenCV:
    ``cv2.imread`` crashes the process on a name that is not UTF-8 (a Latin-1 ``Straße.jpg`` from an old archive);
    ``imdecode`` turns phone photos upright by their EXIF orientation, as ``imread`` does
    (:func:`edgesense.train.data.decode_image`, which refuses a header of gigabytes of pixels before decoding).
    A JPEG cut short is skipped, as training skips it (:func:`edgesense.train.data.load_images`): OpenCV decodes
    it without an error, its missing part grey, and it was scored as a grey-filled photo."""
    try:
        encoded = path.read_bytes()
        if not encoded:
            raise ValueError("empty file (0 bytes)")
        if data._jpeg_cut_short(encoded):
            raise ValueError("a JPEG cut short (no end-of-image marker): the decoder would fill its missing part "
                             "with grey")
        return data.decode_image(path, encoded)
    except (OSError, ValueError, cv2.error) as exc:
        logger.warning("skipping unreadable image %s: %s", path, str(exc).removeprefix(f"{path}: "))
        return None


def check_scene_classes(classes: Sequence[str], scene_labels: Sequence[str]) -> None:
    """ValueError naming ``scenes`` when a class folder of ``--scenes`` is not one of the model's
    ``scene_labels`` (its photos could not be scored): said before the run, not after the commands."""
    missing = sorted(set(classes) - set(scene_labels))
    require(not missing, "scenes", f"class folders named like the model's scene labels {list(scene_labels)}",
            missing)


@dataclass(frozen=True)
class ScenePredictions:
    """The scene each scored photo is named, in the order scored (photos that cannot be read are left out)."""

    true: np.ndarray  #: the photo's class, its index among the model's scene labels
    microphone_absent: np.ndarray  #: named by ``fuse(None, image)``
    ambient_audio: np.ndarray  #: named by ``fuse(audio, image)``, the audio ambient noise
    frames: list[np.ndarray]  #: the preprocessed frames, for the references
    labels: list[str]  #: their class names
    paths: list[Path]  #: their files: which photos a reference scored beside them


def predict_scenes(model: EdgeModel, items: Sequence[Any], classes: Sequence[str], timer: _Timer,
                   noise: Sequence[np.ndarray], seed: int) -> ScenePredictions:
    """Each readable photo of ``items`` through the device path, microphone absent and with ambient audio."""
    lookup = {label: i for i, label in enumerate(model.scene_labels)}
    check_scene_classes(classes, model.scene_labels)
    rng = np.random.default_rng(seed)
    true, pred, pred_ambient, frames, frame_labels, paths = [], [], [], [], [], []
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
        paths.append(item.path)
    return ScenePredictions(true=np.array(true, np.int64), microphone_absent=np.array(pred, np.int64),
                            ambient_audio=np.array(pred_ambient, np.int64), frames=frames, labels=frame_labels,
                            paths=paths)
