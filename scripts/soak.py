#!/usr/bin/env python3
"""Soak test: a simulated day of stream through the whole device loop, watching memory.

The bundled sample media (``samples/scene.mp4`` + ``samples/speech_commands.wav``, the demo's)
are replayed in a loop, as fast as possible, through :class:`edgesense.loop.pipeline.Pipeline`
(frontends, the int8 model, the config's second opinion, post-processing) into real sinks (JSON Lines to a file
and a callback), for ``--hours`` of *stream* time (default 24). Every
``--sample-minutes`` of stream time the resident set size is read from
``/proc/self/status`` (``VmRSS``; psutil is not needed). After ``--warmup-minutes``
the growth from the first post-warm-up sample to the end is reported (target
< 5 %), with the least-squares slope in KiB per simulated hour, and the real-time
factor (wall time / stream time).

Not a unit test: run it by hand, e.g. ``.venv/bin/python scripts/soak.py --hours 2``.
The open file descriptors (``/proc/self/fd``) and threads are sampled beside it.
Exit status 0 when growth is under ``--max-growth-percent`` and the process holds no more open
files and threads at the end than at the baseline, 1 otherwise.

Model: ``--model PATH``, else ``models/edgesense.tflite``, else the tests' tiny
synthetic model, built once in a separate process (so TensorFlow never enters
this one) under ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROG = Path(__file__).name
sys.path.insert(0, str(REPO))

from edgesense.app.cli import OneLineArgumentParser, run_main  # noqa: E402
from edgesense.loop.config import load_config  # noqa: E402
from edgesense.loop.pipeline import Pipeline, PipelineOptions, second_opinion_of  # noqa: E402
from edgesense.runtime.model import EdgeModel  # noqa: E402
from edgesense.sinks.base import CallbackSink  # noqa: E402
from edgesense.sinks.jsonl import JsonLinesSink  # noqa: E402
from edgesense.sources.replay import (  # noqa: E402
    VideoReplayOptions, VideoReplaySource, WavReplayOptions, WavReplaySource,
)

logger = logging.getLogger("soak")

MS_PER_MIN = 60_000.0
KIB_PER_MIB = 1024.0
DEFAULT_CONFIG = REPO / "firmware_configs" / "rpi4.yaml"
BUNDLED_MODEL = REPO / "models" / "edgesense.tflite"

_BUILD_TINY = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import write_tiny_run
from edgesense.quantize.convert import QuantizeOptions, convert_run
work = Path({work!r})
run = write_tiny_run(work / "tiny_run")
convert_run(run, work / "tiny_int8.tflite", QuantizeOptions(mode="int8", calibration_samples=64))
"""


def _proc_status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (not Linux?)")


def rss_kib() -> int:
    """Resident set size of this process in KiB (``VmRSS`` in /proc/self/status)."""
    return _proc_status("VmRSS")


def threads() -> int:
    """Threads of this process (``Threads`` in /proc/self/status)."""
    return _proc_status("Threads")


def open_fds() -> int:
    """Open file descriptors of this process (entries of /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


def resolve_model(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    if BUNDLED_MODEL.is_file():
        return BUNDLED_MODEL
    tiny = args.work_dir / "tiny_int8.tflite"
    if not tiny.is_file():
        logger.info("no models/edgesense.tflite: building the tests' tiny model in %s (a separate process)",
                    args.work_dir)
        args.work_dir.mkdir(parents=True, exist_ok=True)
        code = _BUILD_TINY.format(tests=str(REPO / "tests"), work=str(args.work_dir))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
    return tiny


@dataclass
class Sample:
    stream_min: float
    wall_s: float
    rss_kib: int
    events: int
    fds: int
    threads: int


def slope_kib_per_hour(samples: list[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    xs = [s.stream_min / 60.0 for s in samples]
    ys = [float(s.rss_kib) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before any stream runs (a ValueError: one line, exit code 2, as ``edgesense`` says it):
    a run that fails at its end, or passes without a measurement, costs hours."""
    for name, value in (("--hours", args.hours), ("--sample-minutes", args.sample_minutes),
                        ("--max-growth-percent", args.max_growth_percent)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive number, got {value}")
    if not (math.isfinite(args.warmup_minutes) and 0 <= args.warmup_minutes < args.hours * 60):
        raise ValueError(f"--warmup-minutes: expected a number >= 0 and less than --hours ({args.hours * 60:g} "
                         f"minutes), got {args.warmup_minutes}")
    baseline_min = math.ceil(args.warmup_minutes / args.sample_minutes) * args.sample_minutes
    if baseline_min >= args.hours * 60:  # the baseline would be the final sample: growth 0, a PASS without data
        raise ValueError(f"--sample-minutes: expected a sample after --warmup-minutes {args.warmup_minutes:g} and "
                         f"before the end ({args.hours * 60:g} minutes), got the first one after the warm-up at "
                         f"minute {baseline_min:g}; sample more often or run longer")
    if args.work_dir.exists() and not args.work_dir.is_dir():
        raise ValueError(f"--work-dir {args.work_dir}: expected a folder, got a file")
    if args.json is not None and (args.json.is_dir() or not args.json.resolve().parent.is_dir()):
        raise ValueError(f"--json {args.json}: expected a file in an existing folder, got "
                         + ("a folder" if args.json.is_dir() else "a path whose folder does not exist"))


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, lambda: soak(argv))


def soak(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours of stream (default 24)")
    parser.add_argument("--sample-minutes", type=float, default=10.0, help="RSS every N simulated minutes")
    parser.add_argument("--warmup-minutes", type=float, default=40.0,
                        help="simulated minutes before the baseline (the interpreters', the video decoder's and the "
                        "allocator's first allocations; the loop's latency windows are allocated whole at start)")
    parser.add_argument("--max-growth-percent", type=float, default=5.0)
    parser.add_argument("--model", type=Path, help="a .tflite (default: models/edgesense.tflite or the tiny model)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="device YAML for scheduling options")
    parser.add_argument("--video", type=Path, default=REPO / "samples" / "scene.mp4")
    parser.add_argument("--audio", type=Path, default=REPO / "samples" / "speech_commands.wav")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/edgesense-soak"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_args(args)

    model_path = resolve_model(args)
    config = load_config(args.config)
    model = EdgeModel.load(model_path, options=config.model.interpreter_options())
    args.work_dir.mkdir(parents=True, exist_ok=True)
    events_path = args.work_dir / "soak-events.jsonl"
    events_path.unlink(missing_ok=True)
    counted = {"command": 0, "scene": 0}
    audio = WavReplaySource(args.audio, WavReplayOptions(sample_rate_hz=model.audio_frontend.sample_rate_hz,
                                                         chunk_ms=float(config.audio.chunk_ms), loop=True))
    video = VideoReplaySource(args.video, VideoReplayOptions(loop=True))
    samples: list[Sample] = []
    last: list[Sample] = []  # the newest reading, taken at every frame: the run's end is read in the loop
    next_sample_ms = [0.0]
    start = time.monotonic()

    def on_frame(frame, state) -> None:
        last[:] = [Sample(state.t_ms / MS_PER_MIN, time.monotonic() - start, rss_kib(),
                          counted["command"] + counted["scene"], open_fds(), threads())]
        if state.t_ms >= next_sample_ms[0]:
            samples.append(last[0])
            s = samples[-1]
            logger.info("stream %7.1f min  wall %7.1f s  RSS %7.1f MiB  events %d  fds %d  threads %d", s.stream_min,
                        s.wall_s, s.rss_kib / KIB_PER_MIB, s.events, s.fds, s.threads)
            next_sample_ms[0] += args.sample_minutes * MS_PER_MIN

    def count(event) -> None:
        counted[event.type] += 1

    sinks = [JsonLinesSink(events_path), CallbackSink(count)]
    with Pipeline(model, PipelineOptions.from_config(config), audio=audio, video=video, sinks=sinks,
                  on_frame=on_frame, second_opinion=second_opinion_of(config, model)) as pipeline:
        stats = pipeline.run(duration_s=args.hours * 3600.0)
        # The final sample is the last frame's, in the loop: not after run(), whose statistics (the latency
        # windows copied out, a few MB) are the report's memory, nor after close(), with fewer files open.
        if last and last[0] is not samples[-1]:
            samples.append(last[0])

    after = [s for s in samples if s.stream_min >= args.warmup_minutes]
    baseline, final = after[0], after[-1]
    growth = 100.0 * (final.rss_kib - baseline.rss_kib) / baseline.rss_kib
    peak = max(s.rss_kib for s in after)
    result = {
        "model": str(model_path),
        "stream_hours": stats.stream_ms / 3_600_000.0,
        "wall_s": stats.wall_ms / 1000.0,
        "real_time_factor": stats.real_time_factor,
        "compute_load": stats.compute_load,
        "rss_start_mib": samples[0].rss_kib / KIB_PER_MIB,
        "rss_baseline_mib": baseline.rss_kib / KIB_PER_MIB,
        "rss_final_mib": final.rss_kib / KIB_PER_MIB,
        "rss_peak_after_warmup_mib": peak / KIB_PER_MIB,
        "growth_percent": growth,
        "slope_kib_per_hour": slope_kib_per_hour(after),
        "samples": len(samples),
        "fds_baseline": baseline.fds,
        "fds_final": final.fds,
        "threads_baseline": baseline.threads,
        "threads_final": final.threads,
        "events": counted,
        "events_file_bytes": events_path.stat().st_size,
        "audio_chunks": stats.audio_chunks,
        "audio_inferences": stats.audio_inferences,
        "image_inferences": stats.image_inferences,
        "p95_ms": {stage: round(stats.percentile(stage, 95), 3) for stage in stats.stage_ms},
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({**result, "rss_samples": [s.__dict__ for s in samples]}, indent=2))
    # No more open files or threads at the end than at the baseline (a leaked descriptor or thread is a defect).
    ok = growth < args.max_growth_percent and final.fds <= baseline.fds and final.threads <= baseline.threads
    print(f"soak: {result['stream_hours']:.2f} h of stream in {result['wall_s']:.0f} s (RTF "
          f"{result['real_time_factor']:.4f}); RSS {result['rss_baseline_mib']:.1f} -> {result['rss_final_mib']:.1f}"
          f" MiB after warm-up ({growth:+.2f} %, target < {args.max_growth_percent:g} %), open files "
          f"{baseline.fds} -> {final.fds}, threads {baseline.threads} -> {final.threads}: "
          f"{'PASS' if ok else 'FAIL'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
