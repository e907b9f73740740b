"""Where should the recognizer's context rule look? Replays tuning streams, never the test split.

The context rule (``max_context_unknown`` in :mod:`edgesense.recognition.commands`) fires a word
only when the hops from ``context_offset_ms + context_window_ms`` to ``context_offset_ms`` before it
hold little ``_unknown_`` (other speech). ``edgesense bench`` sweeps how much; this study sweeps
*where*: for each context position it replays the bench's whole grid (``SweepOptions``, without a
latency budget, as when the firmware's position was chosen) on the **tuning streams** of each model
and prints the best hit rate within 0.5 / 1 / 2 / 5 false accepts per hour (the bench's
``tuning_budgets``) and their mean, per model and averaged over the models.
Several models make the choice steadier than one: a single model's figure is set by the few
highest false peaks of its talk.

Input: folders of ``edgesense bench --tuning-only`` runs (their ``report.json`` and ``cache/``, so
no model runs here), one per model::

    .venv/bin/python scripts/context_rule_study.py runs/tune-p1a runs/tune-p2 ... \\
        --position 800,1200 --position 3000,1500

``off`` is the rule switched off (the grid without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.bench.scoring import Replay, SweepOptions, evaluate
from edgesense.bench.streaming import TUNING_BUDGETS_PER_HOUR, cached_streams, tuning_budgets

OFF = "off"
#: The positions the bundled firmware's default was chosen among (context window, offset; ms).
DEFAULT_POSITIONS = ((800.0, 1200.0), (500.0, 1200.0), (1200.0, 1200.0), (800.0, 1000.0), (800.0, 1400.0),
                     (1000.0, 1500.0), (500.0, 1000.0), (1500.0, 1500.0), (1800.0, 1200.0), (2000.0, 1500.0),
                     (1300.0, 1200.0), (1000.0, 2000.0), (2500.0, 1500.0), (2800.0, 1200.0), (3000.0, 1500.0))


def _position(text: str) -> tuple[float, float]:
    try:
        window, offset = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW_MS,OFFSET_MS (e.g. 3000,1500), got {text!r}") from None
    if window <= 0 or offset < 0:
        raise argparse.ArgumentTypeError(f"expected a window > 0 and an offset >= 0, got {text!r}")
    return window, offset


def budgets(replays: dict[str, Replay], options: SweepOptions, position: tuple[float, float] | None) -> list[float]:
    """The best hit rate within each tuning budget and their mean, with the context at ``position``
    (None: the rule off)."""
    if position is None:
        grid = options.grid(context=False)
    else:
        window, offset = position
        grid = [dataclasses.replace(o, context_window_ms=window, context_offset_ms=offset) for o in options.grid()]
    points = [evaluate(replays, o, match_tolerance_ms=options.match_tolerance_ms) for o in grid]
    rows = tuning_budgets(points, options, chosen_on="tuning")
    return [r["hit_rate"] or 0.0 for r in rows["budgets"]] + [rows["mean_hit_rate"]]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_dirs", nargs="+", type=Path, help="folders of edgesense bench --tuning-only runs")
    parser.add_argument("--position", action="append", type=_position, metavar="WINDOW_MS,OFFSET_MS",
                        help="a context position to score (repeatable; default: the positions the firmware's was "
                             "chosen among)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    positions: list[tuple[float, float] | None] = [None, *(args.position or DEFAULT_POSITIONS)]
    options = SweepOptions(max_latency_p95_ms=None)
    try:
        models = {d.name: {kind: Replay(p) for kind, p in cached_streams(d).items()} for d in args.bench_dirs}
    except ValueError as exc:
        print(f"context_rule_study: {exc}", file=sys.stderr)
        return 2
    heads = " | ".join(f"≤ {b:g}" for b in TUNING_BUDGETS_PER_HOUR)
    print(f"| context (window, offset ms) | model | {heads} | mean |")
    print("| --- | --- |" + " ---: |" * (len(TUNING_BUDGETS_PER_HOUR) + 1))
    for position in positions:
        name = OFF if position is None else f"{position[0]:g}, {position[1]:g}"
        rows = []
        for model, replays in models.items():
            row = budgets(replays, options, position)
            rows.append(row)
            print(f"| {name} | {model} | " + " | ".join(f"{100 * x:.1f}" for x in row) + " |", flush=True)
        mean = np.mean(rows, axis=0)
        print(f"| {name} | **mean of {len(rows)}** | " + " | ".join(f"{100 * x:.1f}" for x in mean) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
