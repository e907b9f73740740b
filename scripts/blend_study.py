"""How should the second opinion be blended with the model? Replays tuning streams, never the test split.

The device loop blends each command hop as a weighted mean of the two detectors' posteriors
(``student_weight * model + (1 - student_weight) * heads``, :mod:`edgesense.runtime.second_opinion`).
This study compares that with a weighted geometric mean (a product of experts, renormalised over the
labels), which damps a peak that one of the two detectors all but rules out. It needs two
``edgesense bench --tuning-only`` runs on the same streams: one of the model alone (``--model-alone``;
until 2026-12-06 ``--config firmware_configs/rpi5.yaml``, the desktop's hop) and one of the heads alone (a copy of
``desktop.yaml`` with ``second_opinion.student_weight: 0``); it blends their cached posteriors hop by
hop (the hops where the heads have a result), replays the bench's whole grid (``SweepOptions``) on
each blend and prints the best hit rate within 0.5 / 1 / 2 / 5 false accepts per hour (the bench's
``tuning_budgets``) and their mean: capped at the latency budget's p95, without it, and the words
detected within it (a later detection a miss; the row to compare by)::

    .venv/bin/python scripts/blend_study.py runs/tune-sWw-rpi5 runs/tune-heads-alone \\
        --blend arithmetic:0.3 --blend geometric:0.3 --blend geometric:0.5

``arithmetic:0.3`` computed here gives the figures of a bench run of ``desktop.yaml`` itself, a
check on the replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.bench.scoring import Replay, SweepOptions, sweep
from edgesense.bench.streaming import TUNING_BUDGETS_PER_HOUR, cached_streams, tuning_budgets
from edgesense.bench.streams import StreamPosteriors

BLENDS = ("arithmetic", "geometric")
#: Floor under a probability before its logarithm (an int8 model's posteriors reach 0 exactly).
_FLOOR = 1e-6


def _blend_arg(text: str) -> tuple[str, float]:
    kind, _, weight = text.partition(":")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if kind not in BLENDS or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected KIND:STUDENT_WEIGHT with KIND one of {', '.join(BLENDS)} and a "
                                         f"weight in [0, 1] (e.g. geometric:0.3), got {text!r}")
    return kind, value


def _budget_ms(text: str) -> float:
    """A latency budget: the study's rows compare blends within one, so it must be a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a latency budget in ms > 0 (the rows compare blends within "
                                         f"it), got {text!r}")
    return value


def blend(student: np.ndarray, heads: np.ndarray, kind: str, student_weight: float) -> np.ndarray:
    """(H, C) posteriors of the two detectors blended: their weighted mean, or their weighted
    geometric mean renormalised to sum to 1 on every hop."""
    if kind == "arithmetic":
        return student_weight * student + (1.0 - student_weight) * heads
    logs = student_weight * np.log(np.maximum(student, _FLOOR)) + (1.0 - student_weight) * np.log(
        np.maximum(heads, _FLOOR))
    logs -= logs.max(axis=1, keepdims=True)
    product = np.exp(logs)
    return product / product.sum(axis=1, keepdims=True)


def aligned(student: StreamPosteriors, heads: StreamPosteriors) -> tuple[np.ndarray, np.ndarray]:
    """The student's posteriors at the heads' hops (the heads start later: they wait for their context)."""
    if student.labels != heads.labels or student.duration_ms != heads.duration_ms:
        raise ValueError(f"expected the same streams in both runs, got labels {student.labels} / {heads.labels} "
                         f"and {student.duration_ms:g} / {heads.duration_ms:g} ms")
    index = np.searchsorted(student.times_ms, heads.times_ms)
    index = np.minimum(index, student.times_ms.size - 1)
    if not np.allclose(student.times_ms[index], heads.times_ms):
        raise ValueError("expected the heads' hops to be hops of the model's stream; are both runs at one hop?")
    return np.asarray(student.posteriors[index], np.float64), np.asarray(heads.posteriors, np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student_run", type=Path, help="a bench --tuning-only run of the model alone")
    parser.add_argument("heads_run", type=Path, help="a bench --tuning-only run of the heads alone (student_weight 0)")
    parser.add_argument("--blend", action="append", type=_blend_arg, metavar="KIND:STUDENT_WEIGHT",
                        help="a blend to score (repeatable; default arithmetic:0.3, geometric:0.3, geometric:0.5)")
    parser.add_argument("--max-latency-p95-ms", type=_budget_ms, default=SweepOptions.max_latency_p95_ms,
                        help=f"the latency budget (default {SweepOptions.max_latency_p95_ms:g}: the bench's)")
    parser.add_argument("--max-false-accepts-per-100-words", type=float,
                        default=SweepOptions.max_false_accepts_per_100_words)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        students, heads = cached_streams(args.student_run), cached_streams(args.heads_run)
        pairs = {kind: aligned(students[kind], heads[kind]) for kind in heads}
    except (ValueError, KeyError) as exc:
        print(f"blend_study: {exc}", file=sys.stderr)
        return 2
    options = SweepOptions(max_latency_p95_ms=args.max_latency_p95_ms,
                           max_false_accepts_per_100_words=args.max_false_accepts_per_100_words)
    columns = " | ".join(f"≤ {b:g}" for b in TUNING_BUDGETS_PER_HOUR)
    print(f"| blend | student weight | latency | {columns} | mean |")
    print("| --- | ---: | --- |" + " ---: |" * (len(TUNING_BUDGETS_PER_HOUR) + 1))
    for kind, weight in args.blend or [("arithmetic", 0.3), ("geometric", 0.3), ("geometric", 0.5)]:
        replays = {name: Replay(dataclasses.replace(heads[name], posteriors=blend(s, h, kind, weight)))
                   for name, (s, h) in pairs.items()}
        rows = tuning_budgets(sweep(replays, options), options, chosen_on="tuning")
        for cap, table in ((f"p95 {args.max_latency_p95_ms:g} ms", rows), ("none", rows["uncapped"]),
                           (f"in time ({args.max_latency_p95_ms:g} ms)", rows["timely"])):
            cells = " | ".join(f"{100 * (r['hit_rate'] or 0.0):.1f}" for r in table["budgets"])
            print(f"| {kind} | {weight:g} | {cap} | {cells} | {100 * table['mean_hit_rate']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
