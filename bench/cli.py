"""``edgesense bench``: offline accuracy and latency of a deployed model, side by side with references.

What it measures (``report.json``, ``report.md`` and PNG figures in ``--out``):

* **commands**: every clip of ``--speech-commands`` (or its held-out split, see below) through
  the device path: ``fit_clip`` -> log-mel -> ``encode_audio`` -> ``fuse(audio, None)``
  (camera absent). Accuracy, per-class accuracy, confusion matrix.
* **scenes**: every photo of ``--scenes`` (or its held-out split): ``preprocess_frame`` ->
  ``encode_image`` -> ``fuse(None, image)`` (microphone absent); and a second figure with
  both present, the audio being ambient noise (``--noise`` / ``_background_noise_`` /
  coloured noise), which should not change the answer.
* **degraded-camera table** (``--scene-ambient DIR``, and ``--av``; :mod:`edgesense.bench.scenes_av`):
  the scored photos with sound of their own place (evaluation pool only), camera clean, dark,
  blurred and occluded; fused, image-only and audio-only accuracy, and what sound adds.
* **latency** per stage (audio_frontend, audio_encoder, image_preprocess, image_encoder,
  fusion): p50/p95/p99/mean of wall-clock times, one histogram panel per stage.
* **references** (``--train-references`` builds them once into ``--references``): the MLPerf
  Tiny KWS DS-CNN and VWW MobileNetV1 (``bench/reference_models.py``), evaluated on the same data
  with the same interpreter and thread count; compute per second of stream at 10 command
  hops and 5 scene frames per second, ours vs theirs, in MACs/s and measured ms/s.
* **streaming commands** (:mod:`edgesense.bench.streaming`): per split, a stream of command
  words among other words (30 min; 2 with ``--quick``), 2 hours of command-free talk
  (``--talk-minutes``) and other words said one at a time, over real noise and music, through the
  device's ``CommandRecognizer``: hit rate, false accepts per hour of talk and per 100 other words,
  latency from word end, the streaming cost and a DET curve. The operating point is chosen on the
  *tuning* split (validation speakers with ``--split testing``, otherwise half the speakers by hash;
  the training pool of the recordings) and reported on the *evaluation* split (the test speakers,
  the evaluation pool of ``edgesense.train.pools``).
* **fusion study** (``--fusion-study``, :mod:`train.fusion_study`).

Splits: ``--split all`` evaluates the whole folder, except that a Speech Commands folder
with a ``testing_list.txt`` is restricted to the clips it names; ``--split testing``
selects the held-out split exactly as training made it (speakers hashed with ``--salt``,
validation 10 %, testing 20 %; photos by file-name hash, validation 10 %, testing 15 %,
the percentages of train/configs/shared_data.yaml).

Deployed models run on the LiteRT interpreter only; the data loaders with the training splits
come from :mod:`edgesense.train` (the ``[train]`` extra), the references and the fusion study
too, imported when they are asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgesense import extra_hint
from edgesense.app.cli import input_file, path_argument, refuse_file_in_the_way, user_names
from edgesense.bench.accuracy import (
    _cap,
    _noise_recordings,
    check_scene_classes,
    classification_report,
    item_correctness,
    predict_commands,
    predict_scenes,
    select_command_items,
    select_scene_items,
)
from edgesense.bench.firmware_config import check_firmware_config, update_firmware_config
from edgesense.bench.latency import STAGES, _Timer, device_rates
from edgesense.bench.options import DEFAULT_REFERENCES_DIR, MIN_STREAM_S, SPLITS, BenchOptions
from edgesense.bench.references import (
    _build_references,
    compute_comparison,
    find_references,
    reference_train_config,
    rows_it_learned,
    score_reference,
)
from edgesense.bench.report import (
    _fmt,
    av_summary,
    held_outputs,
    plot_confusion,
    plot_det,
    plot_latency,
    render_markdown,
    write_outputs,
)
from edgesense.bench.scenes_av import (
    check_av_folder,
    degraded_image_only,
    evaluate_av,
    evaluate_scenes_av,
    load_scene_ambience,
)
from edgesense.bench.scoring import LATENCY_RULES, SweepOptions
from edgesense.bench.streaming import FirmwareSetting, clip_utterances, recording_pools, run_streaming
from edgesense.bench.streams import MAX_STREAM_S, Utterance
from edgesense.bench.uncertainty import METHODS, operating_point_intervals, paired_on_common_items
from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.recognition.commands import CommandRecognizerOptions
from edgesense.runtime.interpreter import InterpreterOptions
from edgesense.runtime.model import EdgeModel
from edgesense.schema.validate import is_number, require
from edgesense.shipped import MODELS, model_argument, shipped_config, shipped_path
from edgesense.train.cache import file_sha256
from edgesense.train.data import SplitSpec, load_images
from edgesense.types import is_command_word

__all__ = ["BenchOptions", "run_bench", "add_arguments", "run"]

logger = logging.getLogger(__name__)

DEFAULT_FIRMWARE_CONFIG = "desktop"


# --------------------------------------------------------------------------- the run


def _check_bench_libraries() -> None:
    """The progress bars need tqdm and the figures matplotlib: say so before any work, not after it
    (a missing tqdm is said by the command line's missing-extra line)."""
    import tqdm  # noqa: F401

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"edgesense bench draws its figures with matplotlib, which is not installed here "
                           f"({exc}): {extra_hint('bench')} (matplotlib and tqdm only)") from None


#: The data flags that score a head, by the encoder that feeds it.
_DATA_OF = {"encode_audio": ("speech_commands",), "encode_image": ("scenes", "av", "scene_ambient")}


def _refuse_untrained_heads(options: BenchOptions, model: EdgeModel) -> None:
    """ValueError naming the data option that would score the head of an encoder the model's training never
    fed (a speech-only or scenes-only recipe, :attr:`EdgeModel.untrained_encoders`): its figures would mean
    nothing, and a streaming recommendation from them would be written into a device's config."""
    for key in sorted(model.untrained_encoders):
        head = "command" if key == "encode_audio" else "scene"
        for name in _DATA_OF[key]:
            path = getattr(options, name)
            require(path is None or (name == "av" and options.fusion_study), name,
                    f"a model whose {head}s trained ({options.model_path}: {key} never did, a "
                    f"{'scenes' if head == 'command' else 'speech'}-only recipe; leave {FLAGS[name]} out)",
                    str(path))


def _check_second_opinion(options: BenchOptions, firmware: FirmwareSetting, model: EdgeModel) -> dict[str, Any]:
    """ValueError naming ``firmware_config`` (``--config``) when the second opinion it blends the model with is of
    other command labels than the model's (a model of the user's own words beside the shipped config's heads):
    said before the clips are scored, with the way out, not when the streams start. Returns the heads' metadata
    (``{}`` without a second opinion)."""
    from edgesense.runtime.second_opinion import StreamHeads

    heads_path = firmware.second_opinion.heads_path
    if heads_path is None:
        return {}
    try:
        heads = StreamHeads(heads_path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"firmware_config: second_opinion.heads_path: {exc}") from None
    config = options.firmware_config or f"the shipped {DEFAULT_FIRMWARE_CONFIG}.yaml"
    if heads.labels != tuple(model.command_labels):
        raise ValueError(f"firmware_config: expected a second opinion of the model's labels "
                         f"{list(model.command_labels)} to blend it with (or --model-alone to score the model "
                         f"without one), got {config}'s {Path(heads_path).name} of {list(heads.labels)}")
    return dict(heads.metadata)


def _refuse_heads_that_learned(heads_meta: dict[str, Any], options: BenchOptions, model: EdgeModel) -> None:
    """ValueError naming ``firmware_config``, before the run, when the second opinion blended with the model
    trained on clips the streams would say (the tuning and evaluation speakers' clips of ``--speech-commands``):
    the training part of the split its metadata records (``data``, written by ``train-stream-heads`` since it
    records one), on this same folder. The pair would be tuned and scored on words its heads learned. With
    ``--split all`` (the model, too, scored on every clip: warned already) a warning says it; heads that record no
    split are not compared."""
    if not isinstance(heads_meta.get("data"), dict):
        return
    words = [w for w in model.command_labels if is_command_word(w)]
    index, items, tune_items, _ = select_command_items(options, words,
                                                       SplitSpec.from_metadata(model.metadata, options.salt or None))
    rows = list({id(it): it for it in [*items, *tune_items]}.values())
    learned = rows_it_learned({"task": "command", "training": {"data": heads_meta["data"]}}, options.speech_commands,
                              index, rows)
    if not learned:
        return
    salt = (heads_meta["data"].get("split") or {}).get("speaker_salt")
    got = (f"heads beside the student {(heads_meta.get('student') or {}).get('path')} (split with salt {salt!r}) "
           f"that trained on {learned} of the {len(rows)} clips of {options.speech_commands} streamed here")
    if options.split != "testing":
        logger.warning("--split all: the second opinion's %s", got)
        return
    raise ValueError(f"firmware_config: expected a second opinion whose heads never trained on the clips the "
                     f"streams say (--salt of the split they trained on, or --model-alone), got {got}")


def _trained_on_folder(model: EdgeModel, folder: Path) -> bool:
    """Whether ``folder`` is one the model records training on (``data.speech_commands``): the same folder, or
    one whose path ends as a relative recorded path does (``data/speech_commands`` recorded on another machine)."""
    recorded = (model.metadata.get("data") or {}).get("speech_commands") or []
    here = Path(folder).resolve()
    for r in recorded if isinstance(recorded, list) else [recorded]:
        path = Path(str(r))
        parts = [part for part in path.parts if part not in ("..", ".")]
        if path.resolve() == here or (not path.is_absolute() and parts and list(here.parts[-len(parts):]) == parts):
            return True
    return False


def _check_tuning_speakers(options: BenchOptions, model: EdgeModel) -> None:
    """``--write-config`` writes the operating point chosen on the tuning speakers into a device's config: with
    ``--split all`` they are half of every speaker of the folder (and with ``--salt`` other than the model's, the
    validation speakers of another split), the model's test and training speakers among them on the folder it
    trained on. A model that records its split is refused there (ValueError naming ``write_config``) and warned
    elsewhere; a model that records none is not compared."""
    split = (model.metadata.get("data") or {}).get("split")
    if not options.write_config or options.speech_commands is None or not isinstance(split, dict):
        return
    recorded = split.get("speaker_salt")
    if options.split == "testing" and (not options.salt or options.salt == recorded):
        return
    got = f"--split {options.split}" if options.split != "testing" else f"--salt {options.salt!r}"
    expected = (f"--split testing with the salt the model records ({recorded!r}): the point is chosen on its "
                "validation speakers, never on its test speakers")
    if _trained_on_folder(model, options.speech_commands):
        raise ValueError(f"write_config: expected {expected}, got {got}, whose tuning speakers include the test "
                         f"speakers of {options.speech_commands}, the folder the model trained on")
    logger.warning("--write-config with %s: the operating point is chosen on speakers of %s that the split the "
                   "model records may hold out for testing, if it trained on this folder (it records %s); use %s",
                   got, options.speech_commands, (model.metadata.get("data") or {}).get("speech_commands"),
                   expected.split(":")[0])


def _unlike_the_model(info: dict[str, Any], model: EdgeModel) -> str:
    """Why a command reference or teacher (its sidecar ``info``) cannot be scored beside ``model`` ("" when it
    can): words other than the model's (a clip of a word only one of them knows is ``_unknown_`` to the
    other, so one of them is scored wrong on it), or an audio frontend of another sample rate."""
    if set(info.get("labels", ())) != set(model.command_labels):
        return (f"trained on the labels {list(info.get('labels', ()))}, the model on {list(model.command_labels)} "
                "(train references of the model's words with --train-references)")
    rate = _audio_frontend_of(info, model).sample_rate_hz
    if rate != model.audio_frontend.sample_rate_hz:
        return f"its audio frontend is at {rate} Hz, the model's clips at {model.audio_frontend.sample_rate_hz} Hz"
    return ""


def _audio_frontend_of(info: dict[str, Any], model: EdgeModel) -> AudioFrontendOptions:
    """The audio frontend a command reference was trained on (its sidecar's ``frontend``; the model's when the
    sidecar has none): the features it is scored on are its own, not the model's."""
    frontend = info.get("frontend")
    if info.get("task") != "command" or not isinstance(frontend, dict):
        return model.audio_frontend
    try:
        return AudioFrontendOptions.from_dict(frontend)
    except (ValueError, TypeError):
        return model.audio_frontend


def _labels_it_lacks(ref: Any, clip_labels: Sequence[str] | None, frame_labels: Sequence[str] | None) -> list[str]:
    """The labels of the data ``ref`` would be scored on (its task's) that it does not know: a reference
    of other words or places is skipped, not scored (it cannot name them)."""
    data = {"command": clip_labels, "scene": frame_labels}.get(ref.task)
    return sorted(set(data or ()) - set(ref.info["labels"]))


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark and write report.json, report.md and the figures; returns the report. The figures are
    kept in memory and written with the report, at the end (:func:`held_outputs`): a run that fails or is
    interrupted (Ctrl-C) leaves ``--out`` as it was (an earlier run's report with its own figures), not this run's
    figures beside the earlier report, nor figures without their report."""
    with held_outputs():
        return _run_bench(options)


def _run_bench(options: BenchOptions) -> dict[str, Any]:
    _check_bench_libraries()
    firmware = FirmwareSetting.load(options.firmware_config or shipped_config(DEFAULT_FIRMWARE_CONFIG),
                                    model_alone=options.model_alone)
    for path in options.write_config:  # refused now, not after the run
        check_firmware_config(path, command_hop_ms=firmware.command_hop_ms, second_opinion=firmware.second_opinion)
    out = Path(options.out_dir)  # made once the model is checked (an existing folder is kept, and written into)
    refuse_file_in_the_way("out_dir", out)
    started = time.perf_counter()
    interpreter_options = InterpreterOptions(num_threads=options.threads)
    model = EdgeModel.load(options.model_path, options=interpreter_options)
    _refuse_untrained_heads(options, model)
    _check_tuning_speakers(options, model)
    heads_meta: dict[str, Any] = {}
    if options.speech_commands is not None and options.streaming:
        heads_meta = _check_second_opinion(options, firmware, model)
        _refuse_heads_that_learned(heads_meta, options, model)
    scene_classes = None
    if options.scenes is not None:  # refused now, not after the commands (and their figure) or the references
        from edgesense.train import data as image_data
        scene_classes = image_data.load_image_folder(options.scenes).classes
        check_scene_classes(scene_classes, model.scene_labels)
    earlier = _earlier_outputs(out)  # an earlier run's, before this one writes over any of them
    out.mkdir(parents=True, exist_ok=True)
    meta = model.metadata
    model_sha = file_sha256(options.model_path)
    report: dict[str, Any] = {
        "model": {"path": str(options.model_path), "name": meta.get("name"), "version": meta.get("model_version"),
                  "bytes": model.size_bytes, "part_bytes": model.part_bytes,
                  "params": (meta.get("params") or {}).get("total"), "macs": (meta.get("macs") or {}).get("total"),
                  "params_by_part": meta.get("params", {}), "macs_by_part": meta.get("macs", {}),
                  "sha256": model_sha},
        "settings": {"threads": options.threads, "split": options.split, "salt": options.salt, "quick": options.quick,
                     "per_class_cap": options.per_class_cap, "interpreter": "LiteRT (edgesense.runtime.interpreter)"},
        "figures": {},
    }
    split = SplitSpec.from_metadata(meta, options.salt or None)
    report["settings"]["split_spec"] = dataclasses.asdict(split)
    report["uncertainty"] = dict(METHODS)  # how the intervals and the paired tests beside the figures are made
    ambience = None
    if options.scene_ambient is not None:  # refused now, not after the commands (it needs --scenes)
        ambience = load_scene_ambience(options.scene_ambient, scene_classes, model.audio_frontend.sample_rate_hz)
    if options.av is not None and not options.fusion_study:  # refused now too (the study trains on its own labels)
        check_av_folder(Path(options.av), model.scene_labels)
    if options.train_references:  # a folder too small to train them is said before our figures, not after them
        try:
            _build_references(options, model)
        except ValueError as exc:
            data = options.reference_config or " and ".join(
                flag for flag, path in (("--speech-commands", options.speech_commands), ("--scenes", options.scenes))
                if path is not None)
            raise ValueError(f"train_references: the references' data ({data}): {exc}") from None
    timer = _Timer(STAGES)
    noise_paths = list(options.noise)
    clips = clip_labels = None
    data = None
    scored_rows: dict[str, tuple[Path, Any, list[Any]]] = {}  # each task's (folder, index, rows scored)
    # each task's items as ours scored them (a key each: the clip's place, the photo's path) and which it named right
    model_right: dict[str, tuple[list[Any], np.ndarray]] = {}
    if options.speech_commands is not None:
        from edgesense.train import data
        words = [w for w in model.command_labels if is_command_word(w)]
        index, items, tune_items, how = select_command_items(options, words, split)
        noise_paths += list(index.noise_paths)
        items = _cap(items, options.per_class_cap, options.seed)
        require(len(items) > 0, "speech_commands", "clips to evaluate", 0)
        clips, load_report = data.load_clips(items, model.audio_frontend, what="benchmark clips")
        clip_labels = [items[i].label for i in load_report.kept]
        lookup = {label: i for i, label in enumerate(model.command_labels)}
        unknown = sorted(set(clip_labels) - set(lookup))
        require(not unknown, "speech_commands", f"labels among the model's {list(model.command_labels)}", unknown)
        truth = np.array([lookup[x] for x in clip_labels])
        named = predict_commands(model, clips, timer)
        report["command"] = classification_report(truth, named, model.command_labels)
        model_right["command"] = (list(range(len(clips))), item_correctness(truth, named))
        report["command"]["selection"] = how
        report["command"]["speakers"] = len({items[i].speaker for i in load_report.kept})
        report["figures"]["command_confusion"] = plot_confusion(
            report["command"], out / "confusion_command.png", "Commands (camera absent)").name
        # --split all: the evaluation streams hear the other speakers only, whether or not the cap below took
        # a tuning speaker's clip (the whole tuning half is left out, not the capped tuning clips)
        tune_set = {id(it) for it in tune_items}
        tune_items = _cap(tune_items, options.per_class_cap, options.seed)
        kept = [items[i] for i in load_report.kept]
        scored_rows["command"] = (options.speech_commands, index, kept)
        keep = [k for k, it in enumerate(kept) if id(it) not in tune_set]
        sr = model.audio_frontend.sample_rate_hz
        stream_utterances = clip_utterances(clips[keep], [kept[k] for k in keep], sr)
        # the streaming cost compares the evaluation streams' hit rate with the clip accuracy of their own words
        stream_clips, stream_clip_labels = clips[keep], [clip_labels[k] for k in keep]
        tune_utterances: list[Utterance] = []
        if options.tuning_only:  # the clips just scored are the tuning speakers' own
            tune_utterances = clip_utterances(clips, kept, sr)
        elif tune_items:
            tune_clips, tune_report = data.load_clips(tune_items, model.audio_frontend, what="tuning clips")
            tune_utterances = clip_utterances(tune_clips, [tune_items[i] for i in tune_report.kept], sr)
    # the ambient figure's noise: with --tuning-only the training pool alone (the evaluation pool is never read)
    ambient_paths = recording_pools(noise_paths)["training"] if options.tuning_only else noise_paths
    noise = _noise_recordings(ambient_paths, model.audio_frontend.sample_rate_hz)
    report["settings"]["noise"] = [str(p) for p in noise_paths] or "synthetic pink noise"

    frames = frame_labels = None
    if options.scenes is not None:
        index, items, how = select_scene_items(options, split)
        items = _cap(items, options.per_class_cap, options.seed)
        require(len(items) > 0, "scenes", "photos to evaluate", 0)
        scene_items = items
        scored_rows["scene"] = (options.scenes, index, items)
        photos = predict_scenes(model, items, index.classes, timer, noise, options.seed)
        scene = classification_report(photos.true, photos.microphone_absent, model.scene_labels)
        scene_ambient = classification_report(photos.true, photos.ambient_audio, model.scene_labels)
        # does the ambient sound change which photos are named right? (the same model, photos, with and without it)
        scene_ambient["vs_microphone_absent"] = paired_on_common_items(
            photos.paths, item_correctness(photos.true, photos.microphone_absent),
            photos.paths, item_correctness(photos.true, photos.ambient_audio))
        frames, frame_labels = photos.frames, photos.labels
        model_right["scene"] = (photos.paths, item_correctness(photos.true, photos.microphone_absent))
        report["scene"] = {**scene, "selection": how}
        report["scene_with_ambient_audio"] = scene_ambient
        report["figures"]["scene_confusion"] = plot_confusion(scene, out / "confusion_scene.png",
                                                              "Scenes (microphone absent)").name
        report["figures"]["scene_ambient_confusion"] = plot_confusion(
            scene_ambient, out / "confusion_scene_ambient_audio.png", "Scenes (microphone: ambient noise)").name
        if options.tuning_only:  # the validation photos, camera clean and poor: what adapt's trade is weighed on
            report["scene_degraded"] = {**degraded_image_only(model, frames, frame_labels, options.seed,
                                                              "validation photos"), "selection": how}
        if ambience is not None:
            report["scene_av"] = evaluate_scenes_av(model, frames, frame_labels, ambience,
                                                    options.ambience_dbfs_range, options.seed)
            report["scene_av"]["selection"] = how
            report["figures"]["scene_av_audio_only_confusion"] = plot_confusion(
                report["scene_av"]["audio_only"], out / "confusion_scene_audio_only.png",
                "Scenes: their own sound only (camera absent)").name

    if options.av is not None:
        report["av"] = evaluate_av(model, Path(options.av), options.per_class_cap, options.seed,
                                   split if options.split == "testing" else None)
        report["figures"]["av_audio_only_confusion"] = plot_confusion(
            report["av"]["audio_only"], out / "confusion_av_audio_only.png",
            "Paired AV: audio only (camera absent)").name

    report["latency_ms"] = timer.summary()
    report["figures"]["latency"] = plot_latency(timer.samples, out / "latency.png",
                                                f"Latency per stage ({options.threads} thread(s))").name

    # References: built on request (before anything of ours is scored), evaluated whenever present.
    references: dict[str, Any] = {}
    for ref in find_references(options.references_dir, interpreter_options):
        if _labels_it_lacks(ref, clip_labels if clips is not None else None,
                            frame_labels if frames is not None else None):
            logger.warning("reference %s: %s labels differ from the data's; skipped", ref.name, ref.task)
            continue
        if ref.task == "command" and clips is not None:
            why = _unlike_the_model(ref.info, model)
            if why:
                logger.warning("reference %s: %s; skipped", ref.name, why)
                continue
        if ref.task in scored_rows:
            root, rows_index, rows = scored_rows[ref.task]
            learned = rows_it_learned(ref.info, root, rows_index, rows)
            if learned:
                logger.warning("reference %s: it trained on %d of the %d %s scored here (the training part of the "
                               "split its sidecar records); skipped: --split testing with the split it was trained "
                               "on, or --train-references for this model's", ref.name, learned, len(rows),
                               "clips" if ref.task == "command" else "photos")
                continue
        ref_frames, ref_labels = frames, frame_labels
        ref_keys = model_right["scene"][0] if ref.task == "scene" and frames is not None else None
        if ref.task == "scene" and frames is not None and ref.input_shape[1:3] != model.image_frontend.input_shape[:2]:
            # a reference of another input size sees the photos as the device would give them to it
            resized, loaded = load_images(scene_items, tuple(ref.input_shape[1:3]), what=f"{ref.name} photos")
            ref_frames, ref_labels = list(resized), [scene_items[i].label for i in loaded.kept]
            ref_keys = [scene_items[i].path for i in loaded.kept]
        scored = score_reference(ref, clips=clips, clip_labels=clip_labels, frames=ref_frames,
                                 frame_labels=ref_labels, audio_frontend=_audio_frontend_of(ref.info, model))
        if scored is not None:
            result, ref_right = scored
            ours_keys, ours_right = model_right[ref.task]
            # the paired test on the items both scored (ours in the order scored; a command reference gets our clips)
            result["vs_model"] = paired_on_common_items(ours_keys, ours_right,
                                                        ours_keys if ref_keys is None else ref_keys, ref_right)
            references[ref.name] = result
    if references:
        report["references"] = references
        hops_per_s, frames_per_s = device_rates(firmware.scheduler)
        report["comparison_per_second"] = compute_comparison(meta.get("macs", {}), report["latency_ms"], references,
                                                             command_hops_per_s=hops_per_s,
                                                             scene_frames_per_s=frames_per_s)
    if options.teachers:
        report["teachers"] = _score_teachers(options, model, clips, clip_labels, frames, frame_labels, model_right)
    for name, result in {**references, **report.get("teachers", {})}.items():
        task = result["task"]
        fig = plot_confusion(result[task], out / f"confusion_{name}.png", f"{name} ({task}s)")
        report["figures"][f"{name}_confusion"] = fig.name

    if options.speech_commands is not None and options.streaming:
        st = report["streaming"] = run_streaming(
            model, model_sha, options, evaluation=stream_utterances, tuning=tune_utterances, noise_paths=noise_paths,
            negative_paths=list(options.negatives), clips=stream_clips, clip_labels=stream_clip_labels,
            firmware=firmware)
        _add_stream_intervals(st)
        if "det" in st:
            report["figures"]["streaming_det"] = plot_det(st, out / "streaming_det.png").name
        if "recommended" in st:
            chosen = CommandRecognizerOptions(**st["recommended"]["settings"])
            st["written_to"] = [str(update_firmware_config(path, chosen, command_hop_ms=firmware.command_hop_ms,
                                                               second_opinion=firmware.second_opinion))
                                for path in options.write_config]

    if options.fusion_study:
        from edgesense.train import fusion_study as study
        study_options = study.FusionStudyOptions.quick() if options.quick else study.FusionStudyOptions()
        ambient = None if options.av is not None else fusion_study_sounds(options.noise,
                                                                          set(study.SCENE_SOUNDS.values()))
        # its files held with the figures (held_outputs) until the report is written: Ctrl-C leaves --out as it was
        report["fusion_study"] = study.run_fusion_study(
            options.scenes, out, ambient_dir=ambient, av_root=options.av, options=study_options,
            write=lambda files: write_outputs(files, what="the fusion study"))
        report["figures"]["fusion_study"] = "fusion_study.png"

    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    # both whole or neither, report.json (what the next run and a reader trust) last: a full disk leaves the
    # earlier run's pair as it was, not one cut short, nor this run's report.json beside the earlier report.md
    # ... and the figures held until now (held_outputs) written with them, all whole, report.json last
    write_outputs({out / "report.md": render_markdown(report).encode("utf-8"),
                   out / "report.json": (json.dumps(report, indent=2, default=str) + "\n").encode("utf-8")},
                  what="the report", release=True)
    _remove_stale_outputs(out, earlier - _outputs_of(report))
    logger.info("wrote %s", out / "report.json")
    return report


def _add_stream_intervals(streaming: dict[str, Any]) -> None:
    """Beside each streaming operating point the report shows (the recommendation on the tuning streams, each
    setting on the evaluation streams), the intervals of its hit rate, each word's and its false-accept rates
    (:func:`edgesense.bench.uncertainty.operating_point_intervals`); its own figures stay as they are."""
    points = [(streaming.get("recommended") or {}).get("tuning"), *(streaming.get("evaluation") or {}).values()]
    for point in points:
        if isinstance(point, dict):
            point.update(operating_point_intervals(point))


#: What ``--out`` holds of a run beside its figures (``report["figures"]``), by the report key that writes it.
_OUTPUT_FILES = {"fusion_study": "fusion_study.json"}


def _outputs_of(report: dict[str, Any]) -> set[str]:
    """The file names a run's report says it wrote into ``--out`` besides report.json and report.md: its figures
    and the fusion study's JSON (a name with a folder in it is none of ours)."""
    figures = report.get("figures")
    names = {str(name) for name in (figures.values() if isinstance(figures, dict) else ())}
    names |= {name for key, name in _OUTPUT_FILES.items() if key in report}
    return {name for name in names if name and Path(name).name == name and name not in (".", "..")}


def _earlier_outputs(out: Path) -> set[str]:
    """What the run whose report.json ``out`` holds wrote there (:func:`_outputs_of`); none without a readable one."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return set()
    return _outputs_of(report) if isinstance(report, dict) else set()


def _remove_stale_outputs(out: Path, names: set[str]) -> None:
    """Remove the files of an earlier run into ``out`` that this run did not write again (``names``): its confusion
    figure of the commands beside a report of scenes only, or its DET curve beside a report without streams, would
    read as this run's. Only files the earlier report lists are touched; the cache and anything else stay."""
    for name in sorted(names):
        path = out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            logger.info("removed %s: an earlier run's, this run drew none", path)


def fusion_study_sounds(noise: Sequence[Path], place_sounds: set[str]) -> Path | None:
    """The ``--noise`` folder the fusion study pairs its photos with sound from: the first that holds a recording
    of a place it names (``place_sounds``, e.g. ``cafe.wav`` of ``train.fusion_study.SCENE_SOUNDS``), else the
    first folder (``None``: no folder). The order of the ``--noise`` flags does not decide it: the shared data's
    ``noise/`` before ``ambient/`` paired the glaciers with a cat's miaowing instead of the fridge's hum."""
    folders = [Path(p) for p in noise if Path(p).is_dir()]
    chosen = next((f for f in folders if any(w.stem in place_sounds for w in f.glob("*.wav"))),
                  folders[0] if folders else None)
    logger.info("fusion study: place sounds from %s", chosen or "synthetic noise only")
    return chosen


def _score_teachers(options: BenchOptions, model: EdgeModel, clips, clip_labels, frames, frame_labels,
                    model_right: Mapping[str, tuple[list[Any], np.ndarray]]) -> dict[str, Any]:
    """The teachers (trained once on the references' data, next to them) on this run's test data, each with the
    paired test against the model on the same clips or photos (``model_right``: the model's keys and right/wrong
    per task)."""
    from edgesense.bench import teachers

    # Only the heads trained on this config: a head left there from other data is not scored.
    paths = teachers.build_teachers(reference_train_config(options, model), options.references_dir)
    scored = {}
    for name, path in sorted(paths.items()):
        info = teachers.teacher_sidecar(path) or {}
        why = _unlike_the_model(info, model) if info.get("task") == "command" and clips is not None else ""
        if not why and info.get("task") == "scene" and frames is not None:
            lacks = sorted(set(frame_labels) - set(info.get("labels", ())))
            why = f"it cannot name {lacks}" if lacks else ""
        if why:
            logger.warning("teacher %s: %s; skipped", name, why)
            continue
        got = teachers.score_teacher(path, clips=clips, clip_labels=clip_labels, frames=frames,
                                     frame_labels=frame_labels)
        if got is not None:
            result, right = got
            if result["task"] in model_right:  # a teacher gets the model's clips and photos, in its order
                keys, ours = model_right[result["task"]]
                result["vs_model"] = paired_on_common_items(keys, ours, keys, right)
            scored[name] = result
    return scored


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=path_argument, default=Path("models/edgesense.tflite"),
                        help="the deployed .tflite (default %(default)s)")
    parser.add_argument("--speech-commands", type=path_argument, help="a Speech Commands layout folder")
    parser.add_argument("--scenes", type=path_argument, help="an image-folder layout (CLASS/NAME.jpg)")
    parser.add_argument("--av", type=path_argument, help="paired audio-visual folder (CLASS/NAME.jpg + CLASS/NAME.wav)")
    parser.add_argument("--scene-ambient", type=path_argument, metavar="DIR",
                        help="sounds of the scene classes (CLASS/*.wav, e.g. ../shared/data/scene_ambient): the "
                             "--scenes test photos with sound of their place, camera clean and degraded")
    parser.add_argument("--noise", type=path_argument, action="append", default=[],
                        help="background noise .wav file or folder (repeatable) for streams and the ambient figure")
    parser.add_argument("--tuning-noise", type=path_argument, action="append", default=[],
                        help="noise and music for the tuning streams only, all of it (repeatable; default: the "
                             "training pool of --noise): recordings no training used, e.g. "
                             "../shared/data/scene_ambient")
    parser.add_argument("--tuning-negatives", type=path_argument, action="append", default=[],
                        help="other speech for the tuning streams only, all of it, beside the tuning pool of "
                             "--negatives (repeatable): talk like the device's, e.g. edgesense synth-talk sentences; "
                             "it fills half the tuning talk stream's time, the pool's own talk the other half")
    parser.add_argument("--threads", type=int, default=1,
                        help="interpreter threads, ours and the references' (default %(default)s)")
    parser.add_argument("--out", type=path_argument, default=BenchOptions.out_dir,
                        help="output folder (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="small subsets, 2-min stream, tiny references (CI)")
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="'testing': only the held-out split, as training made it (the split --model records; "
                             "default all: the whole folder, or the clips its testing_list.txt names)")
    parser.add_argument("--salt", default="",
                        help="speaker-split salt used in training, e.g. edgesense (default: with --split testing, the "
                             "one --model records; with --split all, '': it picks the speakers of the tuning half)")
    parser.add_argument("--train-references", action="store_true",
                        help="train + quantize the MLPerf Tiny references into --references (cached)")
    parser.add_argument("--references", type=path_argument, default=None,
                        help=f"reference models folder (default: {DEFAULT_REFERENCES_DIR} here; else, to score "
                             "them, the checkout's; --quick builds its tiny ones into --out's references/)")
    parser.add_argument("--reference-config", type=path_argument,
                        help="train YAML for the references' data (default: --speech-commands/--scenes/--salt)")
    parser.add_argument("--teachers", action="store_true",
                        help="train (once, into --references, on the references' data) and score the pretrained "
                             "teachers as rows (needs the [teacher] and [vision-teacher] extras)")
    parser.add_argument("--fusion-study", action="store_true", help="run the fusion study (trains small models)")
    parser.add_argument("--negatives", type=path_argument, action="append", default=[],
                        help="other speech (.wav file or folder, repeatable; e.g. ../shared/data/speech_negatives) "
                             "for the talk and other-words streams")
    parser.add_argument("--no-streaming", action="store_true", help="skip the streaming evaluation")
    parser.add_argument("--stream-minutes", type=float,
                        help="evaluation commands stream length (default 30; 2 with --quick)")
    parser.add_argument("--talk-minutes", type=float,
                        help="command-free talk per split for false accepts/hour (default 120; 4 with --quick)")
    parser.add_argument("--class-thresholds", action="store_true",
                        help="recommend per-word thresholds calibrated on the tuning streams (else one threshold)")
    parser.add_argument("--max-false-accepts-per-hour", type=float, default=None, metavar="N",
                        help="choose the operating point within N false accepts per hour of the tuning talk "
                             f"(default {SweepOptions.max_false_accepts_per_hour:g}: the target)")
    parser.add_argument("--max-false-accepts-per-100-words", type=float, default=None, metavar="N",
                        help="... and N per 100 other words said alone "
                             f"(default {SweepOptions.max_false_accepts_per_100_words:g})")
    parser.add_argument("--max-latency-p95-ms", type=float, default=None, metavar="MS",
                        help="... and a latency from word end of MS on the tuning streams, as --latency-rule says "
                             f"(default {_latency_default()}; 0: no latency budget)")
    parser.add_argument("--latency-rule", choices=LATENCY_RULES, default=None,
                        help="how the latency budget chooses among the settings within the false-accept budget: "
                             "in-time ranks them by the words detected within MS of their end (a later detection "
                             "a miss); p95 keeps only those whose 95th percentile is within MS "
                             f"(default {SweepOptions.latency_rule})")
    parser.add_argument("--write-config", type=path_argument, action="append", default=[],
                        help="write the recommended recognizer settings into this firmware YAML's commands: "
                             "(in place; repeatable)")
    parser.add_argument("--config", type=path_argument, default=None, metavar="YAML",
                        help="device config whose scheduler.command_hop_ms the streams are scored at and whose "
                             "commands: settings the streaming section scores next to the recommendation "
                             f"(default: the shipped firmware_configs/{DEFAULT_FIRMWARE_CONFIG}.yaml); "
                             "--write-config takes configs of the same hop")
    parser.add_argument("--model-alone", action="store_true",
                        help="score --model alone, without the second opinion --config blends it with (its hop and "
                             "commands: are kept; --write-config then takes configs without a second opinion)")
    parser.add_argument("--tuning-only", action="store_true",
                        help="score only what a model may be chosen by (needs --split testing): the validation "
                             "speakers' clips and photos and the tuning streams; nothing of the test split or the "
                             "evaluation pools is read")
    parser.add_argument("--max-per-class", type=int, help="evaluate at most this many items per class")
    parser.add_argument("--seed", type=int, default=BenchOptions.seed,
                        help="random seed of the streams, the capped items and the degraded photos "
                             "(default %(default)s)")


#: BenchOptions fields as the flags a user types (messages name the flag, not the field).
FLAGS = {"model_path": "--model", "out_dir": "--out", "speech_commands": "--speech-commands", "scenes": "--scenes",
         "av": "--av", "scene_ambient": "--scene-ambient", "noise": "--noise", "tuning_noise": "--tuning-noise",
         "tuning_negatives": "--tuning-negatives",
         "negatives": "--negatives",
         "threads": "--threads", "split": "--split",
         "max_per_class": "--max-per-class", "stream_s": "--stream-minutes (in seconds)",
         "talk_s": "--talk-minutes (in seconds)", "write_config": "--write-config", "firmware_config": "--config",
         "model_alone": "--model-alone",
         "max_false_accepts_per_hour": "--max-false-accepts-per-hour",
         "max_false_accepts_per_100_words": "--max-false-accepts-per-100-words",
         "max_latency_p95_ms": "--max-latency-p95-ms", "latency_rule": "--latency-rule",
         "tuning_only": "--tuning-only", "seed": "--seed", "references_dir": "--references",
         "reference_config": "--reference-config", "class_thresholds": "--class-thresholds",
         "train_references": "--train-references", "fusion_study": "--fusion-study"}


def _latency_default() -> str:
    budget = SweepOptions.max_latency_p95_ms
    return "none" if budget is None else f"{budget:g} ms: the target"


def references_argument(value: Path | None, *, writes: bool, quick_out: Path | None = None) -> Path | None:
    """``--references`` as bench reads it: the folder given; by default ``models/references`` here, else, when
    bench only reads it (``writes``: not ``--train-references``/``--teachers``, which build into the folder here),
    the checkout's beside the shipped model, from any folder (the wheel ships none); None when no default folder
    is there (references are optional: the command says that it scores none). ``quick_out``: ``--out`` of a
    ``--quick`` run, whose tiny references and teachers are built into its ``references/`` (they replaced the real
    ones in ``models/references`` here)."""
    if value is None and writes and quick_out is not None:
        return quick_out / "references"
    if value is not None or writes or DEFAULT_REFERENCES_DIR.is_dir():
        return value or DEFAULT_REFERENCES_DIR
    try:  # an editable install links the shipped model to the checkout's file
        checkout = shipped_path(MODELS, "edgesense.tflite").resolve().parent / DEFAULT_REFERENCES_DIR.name
    except ValueError:
        return None
    return checkout if checkout.is_dir() else None


def run(args: argparse.Namespace) -> int:
    _check_bench_libraries()
    args.model = model_argument(args.model)  # the default, models/edgesense.tflite, from any folder
    input_file("--model", args.model)
    input_file("--config", args.config)
    if args.speech_commands is None and args.scenes is None and args.av is None and not args.fusion_study:
        raise ValueError("--speech-commands/--scenes/--av: expected at least one, the data to score (or "
                         "--fusion-study), got none")
    for flag, minutes in (("--stream-minutes", args.stream_minutes), ("--talk-minutes", args.talk_minutes)):
        # said in minutes, the flag's own unit (BenchOptions checks the seconds: stream_s, talk_s)
        if minutes is not None and not (is_number(minutes) and minutes * 60.0 >= MIN_STREAM_S):
            raise ValueError(f"{flag}: expected a number of minutes >= {Fraction(MIN_STREAM_S, 60)} "
                             f"({MIN_STREAM_S} s), got {minutes:g}")
        if minutes is not None and minutes * 60.0 > MAX_STREAM_S:  # the longest stream (StreamOptions)
            raise ValueError(f"{flag}: expected a number of minutes in [{Fraction(MIN_STREAM_S, 60)}, "
                             f"{MAX_STREAM_S / 60:g}] ({MIN_STREAM_S} s to a week), got {minutes:g}")
    references = references_argument(args.references, writes=args.train_references or args.teachers,
                                     quick_out=args.out if args.quick else None)
    with user_names(FLAGS):
        options = BenchOptions(
            model_path=args.model, out_dir=args.out, speech_commands=args.speech_commands, scenes=args.scenes,
            av=args.av, scene_ambient=args.scene_ambient, noise=tuple(args.noise),
            tuning_noise=tuple(args.tuning_noise), negatives=tuple(args.negatives),
            tuning_negatives=tuple(args.tuning_negatives),
            threads=args.threads,
            quick=args.quick, split=args.split,
            salt=args.salt, train_references=args.train_references, references_dir=references or DEFAULT_REFERENCES_DIR,
            reference_config=args.reference_config, teachers=args.teachers,
            fusion_study=args.fusion_study, streaming=not args.no_streaming,
            stream_s=None if args.stream_minutes is None else args.stream_minutes * 60.0,
            talk_s=None if args.talk_minutes is None else args.talk_minutes * 60.0,
            class_thresholds=args.class_thresholds, max_false_accepts_per_hour=args.max_false_accepts_per_hour,
            max_false_accepts_per_100_words=args.max_false_accepts_per_100_words,
            max_latency_p95_ms=args.max_latency_p95_ms, latency_rule=args.latency_rule,
            write_config=tuple(args.write_config), firmware_config=args.config,
            model_alone=args.model_alone, max_per_class=args.max_per_class,
            seed=args.seed, tuning_only=args.tuning_only)
    if references is None and (args.speech_commands is not None or args.scenes is not None):
        logger.warning("--references: no %s here or in this installation, so no reference rows are scored "
                       "(--train-references trains them into it, or name a folder of them)", DEFAULT_REFERENCES_DIR)
    with user_names(FLAGS):
        report = run_bench(options)
    print(f"benchmark of {report['model']['path']} -> {options.out_dir}/report.md")
    for key in ("command", "scene", "scene_with_ambient_audio"):
        if key in report:
            print(f"  {key:<26} accuracy {_fmt(report[key]['accuracy'])}  (n={report[key]['count']})")
    for key in ("scene_av", "av"):
        if key in report:
            print(f"  {key:<26} {av_summary(report[key])}")
    for name, r in {**report.get("references", {}), **report.get("teachers", {})}.items():
        print(f"  {name:<26} accuracy {_fmt(r[r['task']]['accuracy'])}  ({r['task']}s)")
    for stage, s in report.get("latency_ms", {}).items():
        if s.get("n"):  # stages this run never measured (e.g. the image ones without --scenes) are left out
            print(f"  latency {stage:<18} p50 {_fmt(s['p50'])} ms  p95 {_fmt(s['p95'])} ms  p99 {_fmt(s['p99'])} ms")
    st = report.get("streaming", {})
    if "recommended" in st:
        split = "evaluation" if "evaluation" in st else "tuning"
        r = st["evaluation"]["recommended"] if split == "evaluation" else st["recommended"]["tuning"]
        settings = ", ".join(f"{k} {v}" for k, v in st["recommended"]["settings"].items())
        print(f"  streaming, {_detector_scored(st)} ({settings}), {split} streams: hit rate {r['hit_rate']:.3f}, "
              f"{r['false_accepts_per_hour']:.2f} FA/hour of talk, {_fmt(r['false_accepts_per_100_words'], 2)} FA/100 "
              f"other words, latency p50 {_fmt(r['latency_ms']['p50'], 0)} ms p95 {_fmt(r['latency_ms']['p95'], 0)} ms")
        budgets = st.get("tuning_budgets")
        if budgets:
            print("  tuning streams, best hit rate within " + ", ".join(
                f"{b['max_false_accepts_per_hour']:g}" for b in budgets["budgets"]) + " FA/hour: "
                + _budget_figures(budgets))
            if budgets.get("uncapped"):
                print("  ... without the latency budget: " + _budget_figures(budgets["uncapped"]))
            if budgets.get("timely"):
                print(f"  ... words detected within {budgets['max_latency_p95_ms']:g} ms (a later detection a miss): "
                      + _budget_figures(budgets["timely"]))
    return 0


def _detector_scored(streaming: dict[str, Any]) -> str:
    """What the streaming figures are of, as report.md says it: the model alone, or its blend with ``--config``'s
    second opinion (two models compared side by side, one of them paired, must not read as two models alone)."""
    second = streaming.get("second_opinion") or {}
    if streaming.get("model_alone") or not second.get("heads_path"):
        return "the model alone"
    return (f"the model blended with the second opinion {Path(second['heads_path']).name} "
            f"({second['student_weight']:g} x the model's)")


def _budget_figures(budgets: dict[str, Any]) -> str:
    """``hit / hit / ... (mean M; p95 latency ms / ms / ... ms)`` of a tuning-budgets section."""
    rows = budgets["budgets"]
    return (" / ".join(_fmt(b["hit_rate"]) for b in rows) + f" (mean {_fmt(budgets['mean_hit_rate'])}; p95 latency "
            + " / ".join(_fmt(b.get("latency_p95_ms"), 0) for b in rows) + " ms)")
