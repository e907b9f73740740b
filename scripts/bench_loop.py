#!/usr/bin/env python3
"""Benchmark the device loop on replayed media (not a unit test).

Runs ``edgesense.loop.pipeline.Pipeline`` on the sample video (640x480) and 16 kHz audio with
``--fast`` and the interpreter on one thread, then prints:

* the real-time factor (wall time / media time) and the compute load (processing
  time / media time, i.e. without decoding the media);
* per-stage latency p50/p95 (audio frontend per 20 ms chunk, audio encoder, image
  preprocess, image encoder, fusion) and each stage's share of the compute time;
* for each word in the ground truth (``--truth``; by default the JSON beside the audio, e.g.
  ``samples/speech_commands.json``: the demo's real speakers, whom the bundled model never
  heard): whether a command event with that label fired, its *detection delay* (event
  stream time minus the end of the spoken word: the audio the recogniser needed after the
  word) and its *processing latency* (from the end of the last chunk of audio to the event).

Usage::

    .venv/bin/python scripts/bench_loop.py --model models/edgesense.tflite
    .venv/bin/python scripts/bench_loop.py --model /tmp/tiny.tflite --repeat 3 --json
    .venv/bin/python scripts/bench_loop.py --model-alone   # without the config's second_opinion
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesense.app.cli import OneLineArgumentParser, input_file, run_main  # noqa: E402
from edgesense.loop.config import load_config  # noqa: E402
from edgesense.loop.pipeline import Pipeline  # noqa: E402
from edgesense.loop.stats import (  # noqa: E402
    AUDIO_END_TO_EVENT, AUDIO_END_TO_RESULT, SECOND_OPINION_STAGES, STAGES, VIDEO_READ,
)
from edgesense.runtime.second_opinion import SecondOpinionOptions  # noqa: E402
from edgesense.types import CommandEvent  # noqa: E402

#: A word counts as detected by an event with its label up to this long after the word ends.
MATCH_WINDOW_MS = 1500.0
PERCENTILES = (50, 95)
PROG = Path(__file__).name


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def run_once(args: argparse.Namespace) -> tuple[list, object]:
    config = load_config(args.config)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_threads=args.threads))
    if args.model_alone:
        config = dataclasses.replace(config, second_opinion=SecondOpinionOptions())
    pipeline = Pipeline.from_config(config, model_path=args.model, video=args.video, audio=args.audio, fast=True,
                                    events=False, mqtt=False)
    with pipeline:
        events = list(pipeline.events())
        return events, pipeline.stats


def load_truth(flag: str, path: Path) -> dict:
    """The spoken words of a truth JSON (``{"words": [{"word", "start_ms", "end_ms"}, ...]}``, as
    ``samples/*.json``); a ValueError naming ``flag`` and the file when it is not that."""
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{flag} {path}: not JSON ({exc})") from None
    words = truth.get("words") if isinstance(truth, dict) else None
    if not isinstance(words, list) or not all(
            isinstance(w, dict) and isinstance(w.get("word"), str)
            and all(isinstance(w.get(key), (int, float)) for key in ("start_ms", "end_ms")) for w in words):
        raise ValueError(f"{flag} {path}: expected {{\"words\": [{{\"word\": ..., \"start_ms\": ..., "
                         f"\"end_ms\": ...}}, ...]}}, found no such list")
    return truth


def match_words(events: list, truth: dict) -> list[dict]:
    commands = [e for e in events if isinstance(e, CommandEvent)]
    rows, credited = [], set()  # an event is one word's: the same word said twice within the window needs two
    for word in truth["words"]:
        hit = next((i for i, e in enumerate(commands) if i not in credited and e.label == word["word"]
                    and word["start_ms"] <= e.t_ms <= word["end_ms"] + MATCH_WINDOW_MS), None)
        if hit is not None:
            credited.add(hit)
            hit = commands[hit]
        rows.append({"word": word["word"], "end_ms": word["end_ms"], "detected": hit is not None,
                     "event_t_ms": None if hit is None else hit.t_ms,
                     "detection_delay_ms": None if hit is None else hit.t_ms - word["end_ms"],
                     "processing_ms": None if hit is None else hit.latency_ms.get(AUDIO_END_TO_EVENT)})
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: bench(argv))


def bench(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "edgesense.tflite"))
    parser.add_argument("--config", default=str(ROOT / "firmware_configs" / "desktop.yaml"))
    parser.add_argument("--model-alone", action="store_true", help="leave the config's second_opinion out")
    parser.add_argument("--video", default=str(ROOT / "samples" / "scene.mp4"))
    parser.add_argument("--audio", default=str(ROOT / "samples" / "speech_commands.wav"))
    parser.add_argument("--truth", help="the spoken words of --audio (default: the .json beside it, when there is "
                        "one; without one, no words are scored)")
    parser.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--repeat", type=_positive_int, default=3,
                        help="runs; the figures are from the fastest (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = parser.parse_args(argv)
    for flag, value in (("--model", args.model), ("--config", args.config), ("--video", args.video),
                        ("--audio", args.audio)):
        input_file(flag, value)
    beside = Path(args.audio).with_suffix(".json")
    truth_path = Path(args.truth) if args.truth is not None else beside if beside.is_file() else None
    truth = {"words": []} if truth_path is None else load_truth("--truth", truth_path)

    runs = [run_once(args) for _ in range(args.repeat)]
    events, stats = min(runs, key=lambda run: run[1].wall_ms)
    rtfs = sorted(run[1].real_time_factor for run in runs)

    print(f"model {args.model} | {args.threads} interpreter thread(s) | media {Path(args.video).name} + "
          f"{Path(args.audio).name} ({stats.stream_ms / 1000:.1f} s), --fast, best of {len(runs)}")
    print(f"real-time factor (wall/media): {stats.real_time_factor:.4f}  ({1 / stats.real_time_factor:.0f}x faster "
          f"than real time; runs: {', '.join(f'{r:.4f}' for r in rtfs)})")
    print(f"compute load (processing/media): {stats.compute_load:.4f}; reading and decoding the media: "
          f"{(stats.wall_ms - stats.compute_ms) / stats.wall_ms:.0%} of the wall time")
    print(f"work: {stats.audio_chunks} audio chunks, {stats.audio_inferences} audio inferences, "
          f"{stats.video_frames} frames -> {stats.image_inferences} encoded ({stats.frames_dropped} dropped), "
          f"{stats.fusions} fusions; events: {stats.command_events} command, {stats.scene_events} scene")
    print(f"{'stage':<26}{'count':>7}{'p50 ms':>10}{'p95 ms':>10}{'share of compute':>19}")
    figures: dict = {"real_time_factor": stats.real_time_factor, "compute_load": stats.compute_load, "stages": {}}
    computed = (*STAGES, *SECOND_OPINION_STAGES)  # inside the compute time (the second opinion's: a config with one)
    for stage in (*computed, VIDEO_READ, AUDIO_END_TO_RESULT):
        values, count = stats.stage_ms.get(stage, ()), stats.stage_count.get(stage, 0)
        if stage in SECOND_OPINION_STAGES and not values:
            continue  # a config without a second opinion
        # Shares and rates from the run's totals: the percentiles' window holds only the newest timings.
        share = stats.stage_total_ms.get(stage, 0.0) / stats.compute_ms if stage in computed and stats.compute_ms \
            else math.nan
        p50, p95 = _pct(values, 50), _pct(values, 95)
        figures["stages"][stage] = {"count": count, "p50_ms": p50, "p95_ms": p95, "share": share}
        shown = "" if math.isnan(share) else f"{share:.0%}"
        print(f"{stage:<26}{count:>7}{p50:>10.3f}{p95:>10.3f}{shown:>19}")
    staged = sum(stats.stage_total_ms.get(stage, 0.0) for stage in computed)
    print(f"{'other (loop, post-processing)':<43}{'':>10}{1 - staged / stats.compute_ms:>19.0%}")
    per_second = {part: stats.stage_total_ms.get(f"{part}_encoder", 0.0) / stats.stream_ms * 1000
                  for part in ("audio", "image")}
    audio_p50, image_p50 = figures["stages"]["audio_encoder"]["p50_ms"], figures["stages"]["image_encoder"]["p50_ms"]
    print(f"ratios: image/audio encoder p50 {image_p50 / audio_p50:.2f}; encoder ms per second of media: audio "
          f"{per_second['audio']:.1f}, image {per_second['image']:.1f}")

    rows = match_words(events, truth)
    figures["words"] = rows
    detected = [r for r in rows if r["detected"]]
    if truth_path is None:
        print(f"spoken commands: not scored ({beside.name} is not beside the audio; pass --truth)")
    else:
        print(f"spoken commands detected: {len(detected)}/{len(rows)} (an event with the word's label within "
              f"{MATCH_WINDOW_MS:.0f} ms of its end)")
    for r in rows:
        if r["detected"]:
            print(f"  {r['word']:<6} ends {r['end_ms']:8.1f} ms -> event at {r['event_t_ms']:8.1f} ms: detection "
                  f"delay {r['detection_delay_ms']:6.1f} ms, processing {r['processing_ms']:.2f} ms")
        else:
            print(f"  {r['word']:<6} ends {r['end_ms']:8.1f} ms -> not detected")
    others = [e for e in events if isinstance(e, CommandEvent)
              and not any(r["event_t_ms"] == e.t_ms for r in rows)]
    if others:
        print(f"  {'other ' if rows else ''}command events: " + ", ".join(f"{e.label}@{e.t_ms:.0f}ms" for e in others))
    if detected:
        delays = [r["detection_delay_ms"] for r in detected]
        print(f"end of word -> event: detection delay p50 {_pct(delays, 50):.0f} ms (max {max(delays):.0f}) + "
              f"processing p50 {_pct([r['processing_ms'] for r in detected], 50):.2f} ms")
    values = stats.stage_ms.get(AUDIO_END_TO_RESULT, ())
    print(f"end of audio -> command result (every hop): p50 {_pct(values, 50):.2f} ms, p95 {_pct(values, 95):.2f} ms"
          f" (in a replay this includes decoding the due video frame; a live camera decodes on its own thread)")
    if args.json:
        print(json.dumps(figures, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
