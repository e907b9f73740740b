"""Benchmark streaming: the long command stream, the operating-point sweep and its recommendation."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from edgesense.bench.options import FULL_STREAM_S, FULL_TUNE_STREAM_S, QUICK_STREAM_S, QUICK_TUNE_STREAM_S, BenchOptions
from edgesense.bench.streams import (
    PosteriorCache,
    StreamOptions,
    SweepOptions,
    build_stream,
    evaluate_stream,
    plot_sweep,
    recommend,
    stream_posteriors,
    sweep,
    update_firmware_config,
)
from edgesense.runtime.model import EdgeModel
from edgesense.types import SILENCE_LABEL, UNKNOWN_LABEL

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- streaming


def run_streaming(model: EdgeModel, eval_clips: np.ndarray, eval_labels: Sequence[str], tune_clips: np.ndarray,
                  tune_labels: Sequence[str], noise: Sequence[np.ndarray], options: BenchOptions,
                  model_sha256: str) -> dict[str, Any]:
    eval_s = options.stream_s or (QUICK_STREAM_S if options.quick else FULL_STREAM_S)
    tune_s = max(20.0, eval_s / 2) if options.stream_s else (QUICK_TUNE_STREAM_S if options.quick else FULL_TUNE_STREAM_S)
    sweep_options = SweepOptions(thresholds=(0.5, 0.7, 0.8, 0.9), suppressions_ms=(500.0, 1000.0)) \
        if options.quick else SweepOptions()
    cache = PosteriorCache(options.out_dir / "cache")
    out: dict[str, Any] = {"hop_ms": 100.0, "average_window_ms": sweep_options.average_window_ms,
                           "minimum_count": sweep_options.minimum_count,
                           "max_false_accepts_per_hour": sweep_options.max_false_accepts_per_hour}
    curves, results = {}, {}
    for name, clips, labels, seconds, seed in (("tuning", tune_clips, tune_labels, tune_s, options.seed + 101),
                                               ("evaluation", eval_clips, eval_labels, eval_s, options.seed + 202)):
        if not any(lab not in (SILENCE_LABEL, UNKNOWN_LABEL) for lab in labels):
            logger.warning("streaming: no command-word clips for the %s stream; skipped", name)
            continue
        stream = build_stream(clips, list(labels), StreamOptions(duration_s=seconds, seed=seed), noise=noise)
        key = cache.key(model_sha256, stream, 100.0)
        posteriors = cache.load(key)
        if posteriors is None:
            posteriors = stream_posteriors(model, stream.samples, hop_ms=100.0)
            cache.save(key, posteriors)
        else:
            logger.info("streaming: %s posteriors from the cache", name)
        points = sweep(posteriors, stream.words, stream.duration_ms, sweep_options)
        curves[name], results[name] = points, (stream, posteriors)
        out[f"{name}_stream"] = stream.summary()
    if "evaluation" not in results:
        return out
    tuned_on = "tuning" if "tuning" in curves else "evaluation"
    best = recommend(curves[tuned_on], sweep_options.max_false_accepts_per_hour)
    stream, posteriors = results["evaluation"]
    at_best = evaluate_stream(posteriors.times_ms, posteriors.posteriors, posteriors.labels, stream.words,
                              sweep_options.recognizer_options(best.threshold, best.suppression_ms),
                              duration_ms=stream.duration_ms, match_tolerance_ms=sweep_options.match_tolerance_ms)
    device_default = evaluate_stream(posteriors.times_ms, posteriors.posteriors, posteriors.labels, stream.words,
                                     sweep_options.recognizer_options(0.7, 750.0), duration_ms=stream.duration_ms,
                                     match_tolerance_ms=sweep_options.match_tolerance_ms)
    out.update({
        "recommended": {"threshold": best.threshold, "suppression_ms": best.suppression_ms, "chosen_on": tuned_on,
                        "tuning_metrics": best.to_dict()},
        "at_recommended": at_best.to_dict(),
        "at_firmware_default": device_default.to_dict(),
        "sweep": {name: [p.to_dict() for p in pts] for name, pts in curves.items()},
    })
    if tuned_on == "evaluation":
        logger.warning("streaming: no tuning stream; the recommendation was chosen on the evaluation stream")
    plot_sweep({"evaluation stream": curves["evaluation"], **({"tuning stream": curves["tuning"]}
                                                               if "tuning" in curves else {})},
               at_best, options.out_dir / "streaming_sweep.png",
               title=f"Streaming commands ({stream.duration_ms / 60000:.0f} min evaluation stream)")
    out["figure"] = "streaming_sweep.png"
    if options.write_config is not None:
        update_firmware_config(options.write_config, threshold=best.threshold, suppression_ms=best.suppression_ms)
        out["written_to"] = str(options.write_config)
    return out
