"""``edgesense average RUN RUN ... --out RUN``: one run whose weights are the mean of several.

Runs fine-tuned from one starting point (``--init-from`` the same run) sit in one basin of the
loss, and the mean of their weights (a "model soup", Wortsman et al. 2022; checkpoint averaging)
often generalises better than any of them, at no cost on the device: the averaged run has the
same architecture, and ``edgesense quantize`` takes it like any run. ``--greedy`` adds the runs
best first and keeps each only if the validation figure does not fall, so a run that pulls the
mean out of the basin is left out.

The runs must share labels, frontends, architecture and held-out split (checked before any
weight is read); the averaged folder takes the first run's calibration and validation sets and records its
ingredients and their validation figures in ``run.json``. Batch-norm moving means and variances are averaged
like every other weight (not re-estimated on training data); ``--greedy`` judges each mean with them as they are.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from edgesense.app.cli import path_argument, refuse_file_in_the_way
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.train.config import CHECKPOINT_MONITORS, TRAINING_ONLY_MODEL_FIELDS, VALIDATION_METRICS
from edgesense.train.runfolder import MODEL_FILE, check_init_from, check_out_dir, staged_run

__all__ = ["RUN_MATCH_FIELDS", "average_runs"]

log = logging.getLogger(__name__)

#: ``run.json`` fields that must agree for the runs' weights to be averaged.
RUN_MATCH_FIELDS = ("labels", "audio_frontend", "image_frontend", "fusion_strategy", "params")
#: Files the averaged run takes from the first run as they are (docs/CONTRACTS.md, run folder).
_COPIED_FILES = ("calibration.npz", "validation.npz")


def _read_run(path: Path) -> dict:
    check_init_from(path, flag="runs")
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"runs {path}: expected a readable run.json, got {exc}") from None
    if not isinstance(info, dict):  # it raised AttributeError (a traceback) when the runs were compared
        raise ValueError(f"runs {path}: expected run.json to hold a JSON object, got {type(info).__name__}")
    return info


def _signature(info: dict) -> dict:
    """What must agree between averaged runs: ``RUN_MATCH_FIELDS``, the model's config but for the
    fields that act in training only (``TRAINING_ONLY_MODEL_FIELDS``: the soup takes the first
    run's) and the held-out split (the runs are judged on the first one's validation set)."""
    config, data = info.get("config"), info.get("data")
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict):
        model = {k: v for k, v in model.items() if k not in TRAINING_ONLY_MODEL_FIELDS}
    return {**{field: info.get(field) for field in RUN_MATCH_FIELDS},
            "config.model": model,
            "data.split": data.get("split") if isinstance(data, dict) else None}


def _mean(weights: list[list[np.ndarray]], members: list[int]) -> list[np.ndarray]:
    """The element-wise mean of the weight lists ``weights[i]`` for ``i`` in ``members``."""
    return [np.mean([weights[i][w] for i in members], axis=0).astype(weights[members[0]][w].dtype)
            for w in range(len(weights[members[0]]))]


def _check_same(runs: list[Path], infos: list[dict]) -> None:
    first = _signature(infos[0])
    for path, info in zip(runs[1:], infos[1:]):
        for field, value in _signature(info).items():
            if value != first[field]:
                raise ValueError(f"runs {path}: does not match {runs[0]} in {field} ({value} vs {first[field]}); "
                                 f"only runs of one architecture and labels can be averaged")


#: The arrays of a run's ``validation.npz``, in :class:`edgesense.train.trainer.HeadValidation`'s order.
_VALIDATION_ARRAYS = ("audio_features", "command_label", "image", "scene_label")


def _validation_arrays(path: Path, info: dict) -> tuple[np.ndarray, ...]:
    """The held-out set of the run ``path`` of ``run.json`` ``info``, checked against its labels and frontends
    (numpy only: read before TensorFlow starts)."""
    where = path / "validation.npz"
    try:
        data = np.load(where, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            arrays = {name: data[name] for name in _VALIDATION_ARRAYS if name in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"runs {path}: expected validation.npz to be a NumPy .npz archive (numpy.savez), "
                         f"got one that cannot be read ({exc or type(exc).__name__})") from None
    missing = [name for name in _VALIDATION_ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"runs {path}: expected validation.npz with {', '.join(_VALIDATION_ARRAYS)}, missing "
                         f"{', '.join(missing)}")
    try:
        shapes = {"audio_features": AudioFrontendOptions.from_dict(info.get("audio_frontend") or {}).feature_shape,
                  "image": ImageFrontendOptions.from_dict(info.get("image_frontend") or {}).input_shape}
    except ValueError as exc:
        raise ValueError(f"runs {path}: run.json: {exc}") from None
    labels = info.get("labels") if isinstance(info.get("labels"), dict) else {}
    for data_key, label_key, head in (("audio_features", "command_label", "command"),
                                      ("image", "scene_label", "scene")):
        data, given = arrays[data_key], arrays[label_key]
        if data.shape[1:] != tuple(shapes[data_key]):
            raise ValueError(f"runs {path}: validation.npz {data_key}: expected (N, "
                             f"{', '.join(map(str, shapes[data_key]))}) as run.json's frontend, got {data.shape}")
        if given.ndim != 1 or given.dtype.kind not in "iu" or len(given) != len(data):
            raise ValueError(f"runs {path}: validation.npz {label_key}: expected {len(data)} integer labels (one per "
                             f"{data_key}), got {given.dtype} {given.shape}")
        count = len(labels.get(head) or ())
        bad = given[(given < 0) | (given >= count)]
        if bad.size:
            raise ValueError(f"runs {path}: validation.npz {label_key}: expected values in [0, {count}) "
                             f"(run.json labels.{head}), got {int(bad[0])}")
    return tuple(arrays[name] for name in _VALIDATION_ARRAYS)


def _figure(figures: dict[str, float], key: str) -> str:
    """``figures[key]`` to four places, or ``n/a`` (no validation data behind it)."""
    return f"{figures[key]:.4f}" if key in figures else "n/a"


def average_runs(runs: list[str | Path], out_dir: str | Path, *, greedy: bool = False, monitor: str = "score",
                 replace: bool = False, out_flag: str = "out_dir", force_flag: str = "replace=True") -> dict:
    """Average the weights of ``runs`` into the run folder ``out_dir``; returns its ``run.json``
    metrics. ``greedy``: runs in order of their validation ``monitor`` (``score``: the mean of both
    heads, ``command`` or ``scene``: a head's accuracy, ``command_loss``: the clips' cross-entropy),
    each kept only if the mean so far does not get worse by it. Messages
    name ``out_dir`` and ``replace`` as ``out_flag`` and ``force_flag`` (the CLI's flags)."""
    runs, out_dir = [Path(r) for r in runs], Path(out_dir)
    if len(runs) < 2:
        raise ValueError(f"runs: expected at least two run folders to average, got {len(runs)}")
    if monitor not in VALIDATION_METRICS:
        raise ValueError(f"monitor: expected one of {', '.join(VALIDATION_METRICS)}, got {monitor!r}")
    refuse_file_in_the_way(out_flag, out_dir)  # not once the soup is made, as "Not a directory"
    check_out_dir(out_dir, replace, flag=out_flag, force_flag=force_flag)
    infos = [_read_run(r) for r in runs]
    seen: dict[Path, Path] = {}
    for r in runs:
        if out_dir.exists() and r.resolve() == out_dir.resolve():
            raise ValueError(f"runs {r}: the same folder as {out_flag}, which the average replaces")
        if r.resolve() in seen:
            raise ValueError(f"runs {r}: the same run as {seen[r.resolve()]}; expected distinct run folders")
        seen[r.resolve()] = r
    for name in _COPIED_FILES:  # before out_dir is touched: a run half-written is refused, not half-copied
        if not (runs[0] / name).is_file():
            raise ValueError(f"runs {runs[0]}: expected a complete run folder with {name} (the average takes it "
                             f"from the first run), found none")
    _check_same(runs, infos)
    held_out = _validation_arrays(runs[0], infos[0])
    key, mode, needs = CHECKPOINT_MONITORS[monitor]  # the validation figure training checkpoints by
    if greedy:  # it ranks and keeps by that figure: without the data behind it, it would keep every run unjudged
        sizes = {"clips": held_out[1].size, "photos": held_out[3].size}
        if not (sizes[needs] if needs else any(sizes.values())):
            raise ValueError(f"greedy: expected validation {needs or 'clips or photos'} to rank the runs by "
                             f"({monitor!r}) in {runs[0] / 'validation.npz'}, found none")

    import keras

    import edgesense.train.model  # noqa: F401  (registers the custom layers)
    from edgesense.train.trainer import HeadValidation, write_model_summary

    validation = HeadValidation(*held_out)
    better = 1.0 if mode == "max" else -1.0  # a figure times this: the higher, the better
    models = [keras.saving.load_model(r / MODEL_FILE, compile=False) for r in runs]
    weights = [m.get_weights() for m in models]
    scores = []
    for model in models:
        validation.set_model(model)
        scores.append(validation.evaluate())
    order = sorted(range(len(runs)), key=lambda i: -better * scores[i][key]) if greedy else list(range(len(runs)))
    soup = models[0]  # holds each candidate mean in turn (same architecture)
    kept: list[int] = []
    best: dict[str, float] = {}
    for i in order:
        candidate = kept + [i]
        soup.set_weights(_mean(weights, candidate))
        validation.set_model(soup)
        figures = validation.evaluate()
        if not greedy or not kept or better * figures[key] >= better * best[key]:
            kept, best = candidate, figures
        log.info("%s %s: %s = %s (mean of %d so far: %s)", "kept" if kept == candidate else "left out",
                 runs[i], key, _figure(scores[i], key), len(candidate), _figure(figures, key))
    soup.set_weights(_mean(weights, kept))
    metrics = {
        "command_accuracy": best.get("val_command_accuracy"),
        "scene_accuracy": best.get("val_scene_accuracy"),
        "averaged_from": [str(runs[i]) for i in kept],
        "left_out": [str(runs[i]) for i in order if i not in kept],
        "ingredients": {str(r): {k: round(v, 4) for k, v in s.items()} for r, s in zip(runs, scores)},
        "greedy": greedy,
        "monitor": monitor,
    }
    info = {**infos[0], "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": metrics}
    # Written whole or not at all, as a trained run: into a hidden folder beside out_dir, moved there once complete
    # (an earlier run that replace gives up is kept until then; Ctrl-C or a full disk leaves it as it was).
    with staged_run(out_dir, replace, flag=out_flag, force_flag=force_flag) as staging:
        soup.save(staging / MODEL_FILE)
        for name in _COPIED_FILES:
            shutil.copy(runs[0] / name, staging / name)
        (staging / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_model_summary(soup, staging / "model_summary.txt")
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=path_argument, metavar="RUN",
                        help="run folders of one architecture and labels, e.g. fine-tunes of one run")
    parser.add_argument("--out", required=True, type=path_argument, help="the averaged run folder")
    parser.add_argument("--force", action="store_true", help="replace the run already in --out")
    parser.add_argument("--greedy", action="store_true",
                        help="add the runs best first, keeping each only if the validation figure does not fall")
    parser.add_argument("--monitor", choices=VALIDATION_METRICS, default=None,
                        help="the validation figure --greedy ranks and keeps by (default score: the mean of both "
                             "heads' accuracies; command_loss: the clips' cross-entropy, lowest best)")


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import user_names

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.monitor is not None and not args.greedy:
        raise ValueError("--monitor: acts only with --greedy, which is not given")
    with user_names({"greedy": "--greedy", "monitor": "--monitor"}):
        metrics = average_runs(args.runs, args.out, greedy=args.greedy, monitor=args.monitor or "score",
                               replace=args.force, out_flag="--out", force_flag="--force")
    print(json.dumps({"run": str(args.out), **metrics}, indent=2))
    return 0
