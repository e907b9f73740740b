"""Every options dataclass built in Python (not from YAML, whose loader converts types first) with a hostile value in
each field in turn: NaN, infinities, a negative number, zero, a bool or a string for a number, None, a float for a
count, a huge int, a list or a string for a tuple, None or a mapping for a section.

Each is either refused with one ``ValueError`` of one line that names the field, or accepted because the field says
so here: a ``X | None`` field takes None (its type says None is meant: off, never, the default), and
:data:`ACCEPTED` lists per class and field the other hostile kinds a field takes on purpose (a zero or a negative
level that is a real setting, a huge timeout that means never). Anything else accepted, and any other exception
(``TypeError``, ``AttributeError``, ``OverflowError``), fails. A list given for a tuple field may be taken only as a
tuple. Gaps in files this module does not fix are ``xfail(strict=True)`` naming the file: fixed, they pass and fail.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HUGE = 10**30
#: Past a float's range: every sum or product with a float overflows.
BEYOND_FLOAT = 10**400


class Odd:
    """An object of no kind any field takes."""


def _float_values() -> dict[str, Any]:
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "negative": -1.0, "zero": 0.0, "true": True,
            "false": False, "str": "1", "none": None, "huge": HUGE, "beyond_float": BEYOND_FLOAT}


def _int_values() -> dict[str, Any]:
    return {"nan": math.nan, "negative": -1, "zero": 0, "true": True, "false": False, "str": "1", "none": None,
            "float": 1.5, "whole_float": 2.0, "huge": HUGE}


def hostile(tp: Any) -> dict[str, Any]:
    """Hostile values for a field of type ``tp``, by id (a ``X | None`` field's omit None: it is meant)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        out: dict[str, Any] = {}
        for option in (a for a in args if a is not type(None)):
            out.update(hostile(option))
        if type(None) in args:
            out.pop("none", None)
        else:
            out["none"] = None
        return out
    if tp is float:
        return _float_values()
    if tp is int:
        return _int_values()
    if tp is bool:
        return {"int1": 1, "int0": 0, "str": "false", "none": None}
    if tp is str:
        return {"none": None, "int": 1, "true": True, "bytes": b"x", "list": ["x"]}
    if tp is Path:
        return {"none": None, "int": 1, "empty": ""}
    if origin is tuple:
        if len(args) == 2 and args[1] is not Ellipsis:  # a (low, high) pair
            return {"none": None, "str": "ab", "nan": (math.nan, 1.0), "inf": (0.0, math.inf), "reversed": (2.0, 1.0),
                    "bools": (True, True), "str_item": (1, "x"), "list": [0.0, 1.0], "short": (1.0,),
                    "huge": (-HUGE, HUGE)}
        item = args[0]
        return {"none": None, "str": "ab", "none_item": (None,), "odd_item": (Odd(),),
                "wrong_item": (1,) if item in (str, Path) or typing.get_origin(item) is Literal else ("x",),
                "odd": Odd()}
    if origin is Literal:
        return {"bogus": "bogus", "none": None, "int": 1, "list": []}
    if origin in (dict, collections.abc.Mapping):
        return {"none": None, "list": [], "nan_value": {"a": math.nan}, "int_key": {1: 0.5}}
    if dataclasses.is_dataclass(tp):
        return {"none": None, "mapping": {}}
    if tp is Any:
        return {"odd": Odd()}
    return {"none": None, "odd": Odd()}


class Case(NamedTuple):
    """An options class, the keyword arguments of a valid instance, and what it takes on purpose."""

    cls: type
    base: Callable[[], dict[str, Any]] = dict


def _hints(cls: type) -> dict[str, Any]:
    import edgesense.frontend.audio  # noqa: F401 - names edge/app/record.py's annotations use
    import edgesense.loop.scheduler  # noqa: F401

    scope: dict[str, Any] = {}
    for module in [m for name, m in __import__("sys").modules.items() if name.startswith("edgesense")]:
        scope.update({k: v for k, v in vars(module).items() if isinstance(v, type)})
    return typing.get_type_hints(cls, globalns={**scope, **vars(__import__("sys").modules[cls.__module__])})


def _cases() -> dict[str, Case]:
    from edgesense.app.overlay import OverlayOptions
    from edgesense.app.record import RecordOptions
    from edgesense.bench.mining import MineOptions
    from edgesense.bench.options import BenchOptions
    from edgesense.bench.reference_models import ReferenceOptions
    from edgesense.bench.scoring import SweepOptions
    from edgesense.bench.streams import StreamOptions
    from edgesense.deploy.bundle import DeployOptions
    from edgesense.deploy.resolve import ResolveOptions
    from edgesense.deploy.targets import Target
    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.frontend.image import ImageFrontendOptions
    from edgesense.frontend.resample import ResampleOptions
    from edgesense.loop.config import DeviceConfig, DeviceInfo
    from edgesense.loop.pipeline import PipelineOptions
    from edgesense.loop.scheduler import LatestFrameReaderOptions, SchedulerOptions
    from edgesense.quantize.adapt import AdaptOptions
    from edgesense.quantize.convert import QuantizeOptions
    from edgesense.quantize.qat import QatOptions
    from edgesense.quantize.report import ReportOptions
    from edgesense.recognition.commands import CommandRecognizerOptions
    from edgesense.recognition.gate import EnergyGateOptions
    from edgesense.recognition.scenes import SceneSmootherOptions
    from edgesense.runtime.interpreter import InterpreterOptions
    from edgesense.runtime.model import ModelOptions as EdgeModelOptions
    from edgesense.runtime.quant import QuantParams
    from edgesense.runtime.second_opinion import SecondOpinionOptions
    from edgesense.runtime.speech_embedding import SpeechEmbeddingStreamOptions
    from edgesense.sinks.mqtt import MqttOptions
    from edgesense.sinks.outputs import OutputsOptions
    from edgesense.sinks.spool import DeliveryOptions, SpoolOptions
    from edgesense.sources.base import BackoffOptions
    from edgesense.sources.camera import CameraOptions
    from edgesense.sources.microphone import MicrophoneOptions
    from edgesense.sources.replay import VideoReplayOptions, WavReplayOptions
    from edgesense.sources.ringbuffer import RingBufferOptions
    from edgesense.train.augment import AudioAugmentOptions, ImageAugmentOptions, PhotoViews
    from edgesense.train.bank import BankOptions
    from edgesense.train.config import DataConfig, TrainConfig, TrainOptions
    from edgesense.train.config import ModelOptions as TrainModelOptions
    from edgesense.train.data import SpeechCommandsOptions
    from edgesense.train.degrade import DegradeOptions
    from edgesense.train.fusion_study import FusionStudyOptions
    from edgesense.train.scene_audio import SceneAudioOptions
    from edgesense.train.stream_heads import StreamHeadsOptions
    from edgesense.train.synth import SynthOptions
    from edgesense.train.synth_talk import TalkOptions
    from edgesense.train.teachers.audio import AudioTeacherOptions
    from edgesense.train.teachers.speech_embedding import SpeechEmbeddingOptions
    from edgesense.train.teachers.vision import VisionTeacherOptions

    folder = REPO / "samples"

    def data() -> dict[str, Any]:
        return {"speech_commands": (folder,)}

    cases = [
        Case(BackoffOptions), Case(CameraOptions), Case(MicrophoneOptions), Case(WavReplayOptions),
        Case(VideoReplayOptions), Case(RingBufferOptions, lambda: {"capacity_samples": 16}),
        Case(BenchOptions, lambda: {"model_path": Path("m.tflite"), "scenes": folder}),
        Case(ResolveOptions), Case(DeployOptions, lambda: {"target": "rpi5", "out_dir": Path("bundle")}),
        Case(Target, lambda: {"name": "x", "description": "d", "arch": "x86_64", "glibc": (2, 31),
                              "python_version": "3.11", "apt_packages": ("libc6",), "config_name": "x.yaml"}),
        Case(InterpreterOptions), Case(EdgeModelOptions), Case(SecondOpinionOptions),
        Case(SpeechEmbeddingStreamOptions),
        Case(QuantParams, lambda: {"scale": 0.5, "zero_point": 0, "dtype": np.int8}),
        Case(OutputsOptions), Case(SpoolOptions), Case(DeliveryOptions), Case(MqttOptions, lambda: {"host": "h"}),
        Case(RecordOptions, lambda: {"label": "home", "seconds": 1.0}), Case(OverlayOptions),
        Case(ImageFrontendOptions), Case(AudioFrontendOptions), Case(ResampleOptions),
        Case(DeviceInfo, lambda: {"name": "dev"}), Case(DeviceConfig, lambda: {"device": DeviceInfo(name="dev")}),
        Case(SchedulerOptions), Case(LatestFrameReaderOptions), Case(PipelineOptions),
        Case(CommandRecognizerOptions), Case(EnergyGateOptions), Case(SceneSmootherOptions),
        Case(ReferenceOptions), Case(StreamOptions), Case(SweepOptions), Case(MineOptions),
        Case(BankOptions), Case(TrainModelOptions), Case(DataConfig, data), Case(TrainOptions),
        Case(TrainConfig, lambda: {"data": DataConfig(**data())}), Case(TalkOptions), Case(SceneAudioOptions),
        Case(SpeechCommandsOptions), Case(FusionStudyOptions), Case(SynthOptions), Case(AudioTeacherOptions),
        Case(VisionTeacherOptions), Case(SpeechEmbeddingOptions), Case(AudioAugmentOptions),
        Case(ImageAugmentOptions), Case(PhotoViews, lambda: {"count": 2, "seed": 0}), Case(StreamHeadsOptions),
        Case(DegradeOptions), Case(ReportOptions), Case(AdaptOptions), Case(QuantizeOptions), Case(QatOptions),
    ]
    return {f"{c.cls.__module__.removeprefix('edgesense.')}.{c.cls.__name__}": c for c in cases}


CASES = _cases()

#: "module.Class" -> field -> the hostile value ids it takes on purpose (see hostile()).
ACCEPTED: dict[str, dict[str, set[str]]] = {
    # A multiplier of 1e30 reaches max_ms at the second failure; a huge frame rate is the device's to lower (a replay
    # stamps its frames 1e-27 ms apart); a huge failure count or stall timeout is never reached: never.
    "sources.base.BackoffOptions": {"multiplier": {"huge"}},
    "sources.camera.CameraOptions": {"source": {"zero", "int", "str"}, "fps": {"huge"},
                                     "reopen_after_failures": {"huge"}, "stall_timeout_ms": {"huge"}},
    "sources.microphone.MicrophoneOptions": {"device": {"zero", "int", "str"}, "stall_timeout_ms": {"huge"},
                                         "gain_db": {"zero", "negative"}},  # 0 dB: none; -1 dB: quieter
    "sources.replay.VideoReplayOptions": {"fps": {"huge"}},
    # 0 is "no budget" (documented), seed 0 a seed
    "bench.options.BenchOptions": {"max_false_accepts_per_hour": {"zero"}, "max_false_accepts_per_100_words": {"zero"},
                                   "max_latency_p95_ms": {"zero"}, "seed": {"zero"}},
    # The classes below, in files this module does not fix, as they were found: a zero, a negative or a huge value
    # each takes runs (checked for no crash where it is a timeout or a buffer, not for being a good setting).
    "runtime.second_opinion.SecondOpinionOptions": {"student_weight": {"zero"}},
    "runtime.speech_embedding.SpeechEmbeddingStreamOptions": {"max_embeddings": {"huge"}},
    # A scale of 1e30 is a float32 (what a model's file stores), however odd; past float32 it is refused.
    "runtime.quant.QuantParams": {"scale": {"huge", "zero"}, "zero_point": {"negative", "whole_float", "zero"}},
    "sinks.spool.SpoolOptions": {"max_events": {"huge"}, "max_bytes": {"huge"}},
    "sinks.spool.DeliveryOptions": {"window_events": {"huge"}},
    "sinks.mqtt.MqttOptions": {"qos": {"zero"}, "keepalive_s": {"huge"}, "reconnect_max_delay_s": {"huge"}},
    "app.record.RecordOptions": {"seconds": {"huge"}, "jpeg_quality": {"zero"}, "first_frame_timeout_s": {"huge"}},
    "app.overlay.OverlayOptions": {"command_flash_ms": {"huge"}, "blink_period_ms": {"huge"},
        "level_floor_dbfs": {"negative"}, "level_tick_db": {"huge"}, "meter_width_px": {"huge"},
        "meter_scale_width_px": {"huge"}, "margin_px": {"huge"}, "panel_alpha": {"zero"}, "font_scale": {"huge"},
        "line_height_px": {"huge"}, "banner_height_px": {"huge"}},
    "frontend.audio.AudioFrontendOptions": {"num_mel_bins": {"huge"}, "lower_edge_hz": {"zero"},
        "log_floor": {"huge"}},
    "frontend.resample.ResampleOptions": {"kaiser_beta": {"huge", "zero"}},
    "loop.scheduler.SchedulerOptions": {"embedding_max_age_ms": {"huge"}},
    "recognition.commands.CommandRecognizerOptions": {"release_threshold": {"zero"},
        "suppression_ms": {"huge", "zero"}, "minimum_count": {"huge"}, "max_context_unknown": {"zero"},
        "context_offset_ms": {"zero"}},
    "recognition.gate.EnergyGateOptions": {"threshold_dbfs": {"negative", "zero"}, "hangover_ms": {"huge", "zero"}},
    "recognition.scenes.SceneSmootherOptions": {"hysteresis_margin": {"zero"}, "min_hold_ms": {"huge", "zero"},
        "heartbeat_ms": {"huge"}},
    "bench.reference_models.ReferenceOptions": {"calibration_per_class": {"huge"}},
    "bench.streams.StreamOptions": {"sample_rate_hz": {"huge"}, "close_fraction": {"zero"},
        "repeat_fraction": {"zero"}, "other_fraction": {"zero"}, "long_pause_fraction": {"zero"}, "passes": {"huge"},
        "lead_in_s": {"huge", "zero"}, "seed": {"huge", "negative", "zero"}},
    "bench.scoring.SweepOptions": {"max_false_accepts_per_hour": {"huge", "zero"},
        "max_false_accepts_per_100_words": {"huge", "zero"}, "max_latency_p95_ms": {"huge"},
        "match_tolerance_ms": {"huge", "zero"}},
    "bench.mining.MineOptions": {"talk_minutes": {"huge", "zero"}, "word_passes": {"zero"},
        "min_gap_ms": {"huge", "zero"}, "hop_ms": {"huge"}, "seed": {"zero"}},
    "train.bank.BankOptions": {"variants": {"huge", "zero"}, "placement_probability": {"zero"},
        "partial_word_probability": {"zero"}, "word_floor_db": {"huge"}, "silence_per_variant": {"huge", "zero"},
        "other_speech_per_variant": {"huge", "zero"}, "other_speech_min_dbfs": {"negative", "zero"},
        "real_rir_probability": {"zero"}, "background_silence_probability": {"zero"}},
    "train.config.ModelOptions": {"audio_channels": {"huge"}, "audio_blocks": {"huge"}, "embedding_dim": {"huge"},
        "dropout": {"zero"}, "audio_floor_frames": {"huge", "zero"}},
    "train.config.DataConfig": {"validation_percent": {"zero"}, "testing_percent": {"zero"},
        "image_validation_percent": {"zero"}, "image_testing_percent": {"zero"}, "max_items_per_class": {"huge"},
        "calibration_per_class": {"huge"}},
    "train.config.TrainOptions": {"epochs": {"huge"}, "batch_size": {"huge"}, "steps_per_epoch": {"huge"},
        "learning_rate": {"huge"}, "weight_decay": {"huge", "zero"}, "label_smoothing": {"zero"},
        "command_label_smoothing": {"zero"}, "patience": {"huge"}, "modality_dropout": {"zero"},
        "real_speech_share": {"zero"}, "other_speech_share": {"zero"}, "reversed_speech_share": {"zero"},
        "distill_weight": {"zero"}, "scene_distill_weight": {"zero"}, "scene_distill_views": {"zero"},
        "distill_temperature": {"huge"}, "embedding_hint_weight": {"huge", "zero"}, "workers": {"huge"}},
    "train.config.TrainConfig": {"seed": {"zero"}},
    "train.synth_talk.TalkOptions": {"seed": {"zero"}, "max_clauses": {"huge"}},
    "train.scene_audio.SceneAudioOptions": {"only_probability": {"zero"}, "snr_db_range": {"huge"}},
    "train.data.SpeechCommandsOptions": {"silence_per_noise_file": {"huge", "zero"}, "clip_duration_ms": {"huge"}},
    "train.fusion_study.FusionStudyOptions": {"per_class": {"huge"}, "epochs": {"huge"}, "batch_size": {"huge"},
        "match_probability": {"zero"}, "modality_dropout": {"zero"}, "sound_level_dbfs": {"huge"},
        "snr_db": {"huge"}, "seed": {"huge", "negative", "zero"}},
    "train.synth.SynthOptions": {"unknown_clips": {"zero"}, "seed": {"zero"}, "sample_rate_hz": {"huge"},
        "clip_duration_ms": {"huge"}, "peak_dbfs": {"negative", "zero"}, "trim_threshold_db": {"negative"}},
    "train.teachers.audio.AudioTeacherOptions": {"pad_ms": {"huge", "zero"}, "conv_channels": {"huge"},
        "kernel_frames": {"huge"}, "dense_units": {"huge"}, "dropout": {"zero"}, "epochs": {"huge"},
        "batch_size": {"huge"}, "learning_rate": {"huge"}, "cross_fit_folds": {"huge"}},
    "train.teachers.vision.VisionTeacherOptions": {"input_size_px": {"huge"}, "batch_images": {"huge"},
        "num_threads": {"huge"}, "fine_tune_epochs": {"huge", "zero"}, "fine_tune_learning_rate": {"huge"},
        "fine_tune_label_smoothing": {"zero"}, "fine_tune_weight_decay": {"huge", "zero"},
        "fine_tune_batch_norm_photos": {"huge", "zero"}, "hidden_units": {"huge", "zero"},
        "seed": {"huge", "negative", "zero"}, "dropout": {"zero"}, "l2": {"huge", "zero"}, "epochs": {"huge"},
        "batch_size": {"huge"}, "learning_rate": {"huge"}},
    "train.teachers.speech_embedding.SpeechEmbeddingOptions": {"pad_ms": {"huge", "zero"}, "batch_clips": {"huge"},
        "num_threads": {"huge"}},
    "train.augment.AudioAugmentOptions": {"sample_rate_hz": {"huge"}, "speed_probability": {"zero"},
        "reverb_probability": {"zero"}, "noise_probability": {"zero"}, "snr_db_range": {"huge"},
        "silent_reference_dbfs": {"negative", "zero"}, "shift_probability": {"zero"},
        "max_shift_ms": {"huge", "zero"}, "gain_probability": {"zero"}, "gain_db_range": {"huge"},
        "time_masks": {"huge", "zero"}, "max_time_mask_frames": {"huge", "zero"}, "freq_masks": {"huge", "zero"},
        "max_freq_mask_bins": {"huge", "zero"}, "mask_value": {"huge", "negative", "zero"},
        "warp_probability": {"zero"}},
    "train.augment.ImageAugmentOptions": {"crop_probability": {"zero"}, "flip_probability": {"zero"},
        "brightness_delta": {"zero"}, "contrast_delta": {"zero"}, "saturation_delta": {"zero"},
        "degrade_probability": {"zero"}},
    "train.augment.PhotoViews": {"count": {"huge"}, "seed": {"huge", "negative", "zero"}},
    "train.stream_heads.StreamHeadsOptions": {"talk_per_variant": {"zero"}, "silence_per_variant": {"zero"},
        "unknown_weight": {"huge"}, "partial_share": {"zero"}, "partial_end_share": {"zero"},
        "speed_share": {"zero"}, "talk_ends_share": {"zero"}, "talk_words_share": {"zero"},
        "unknown_voices_share": {"zero"}, "snr_db": {"huge"}, "seed": {"zero"}},
    "train.degrade.DegradeOptions": {"dark_gamma": {"huge"}},
    "quantize.report.ReportOptions": {"max_accuracy_drop_points": {"zero"}, "max_model_bytes": {"huge"}},
    "quantize.adapt.AdaptOptions": {"learning_rate": {"huge"}, "degrade_probability": {"zero"},
        "audio_only_share": {"zero"}, "image_only_share": {"zero"}, "sound_mismatch": {"zero"}, "seed": {"zero"}},
    "quantize.qat.QatOptions": {"epochs": {"huge"}, "steps_per_epoch": {"huge"}},
}

#: "module.Class" -> field -> why it still fails: the file to fix and what it does (xfail, strict: fixed, it passes and
#: the test says so). "accepts or fails": taken (or the exception in brackets) instead of a ValueError naming it.
KNOWN_GAPS: dict[str, dict[str, str]] = {}


def _check(name: str, field: str) -> list[str]:
    """The failures of field ``field`` of class ``name`` over its hostile values (none: it holds)."""
    case = CASES[name]
    tp = _hints(case.cls)[field]
    accepted = ACCEPTED.get(name, {}).get(field, set())
    failures = []
    for value_id, value in hostile(tp).items():
        try:
            built = case.cls(**{**case.base(), field: value})
        except ValueError as exc:
            text = str(exc)
            if field not in text or "\n" in text:
                failures.append(f"{value_id}={value!r}: a ValueError not naming the field in one line: {text}")
            continue
        except Exception as exc:  # noqa: BLE001 - what this test is about
            failures.append(f"{value_id}={value!r}: {type(exc).__name__}: {exc}")
            continue
        stored = getattr(built, field)
        if value_id not in accepted:
            failures.append(f"{value_id}={value!r}: accepted (as {stored!r}), and not listed in ACCEPTED")
        elif isinstance(stored, list):
            failures.append(f"{value_id}={value!r}: kept as a mutable list in a frozen dataclass")
    return failures


def _params() -> list[Any]:
    params = []
    for name, case in CASES.items():
        for f in dataclasses.fields(case.cls):
            if not f.init:
                continue
            gap = KNOWN_GAPS.get(name, {}).get(f.name)
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(name, f.name, id=f"{name}.{f.name}", marks=marks))
    return params


@pytest.mark.parametrize(("name", "field"), _params())
def test_a_hostile_value_is_refused_naming_the_field_or_taken_on_purpose(name, field):
    failures = _check(name, field)
    assert not failures, f"{name}.{field}:\n" + "\n".join(failures)


def test_every_frozen_options_class_is_covered():
    """A new options class (an ``*Options`` or ``*Config``, frozen and keyword-only) is added to the cases."""
    import subprocess

    found = subprocess.run(["grep", "-rhoE", "--include=*.py", r"^class \w+(Options|Config)\b", "edge", "bench",
                            "train", "quantize", "deploy"], cwd=REPO, capture_output=True, text=True, check=True)
    names = {line.split()[1] for line in found.stdout.split("\n") if line}
    covered = {case.cls.__name__ for case in CASES.values()}
    assert names <= covered, sorted(names - covered)
