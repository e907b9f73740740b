"""Benchmark report: Markdown and PNG figures from the report dictionary."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import json
import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edgesense.bench.latency import _PERCENTILES, COMMAND_HOPS_PER_S, SCENE_FRAMES_PER_S, latency_summary
from edgesense.train.cache import replace_files

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- writing


#: The files :func:`write_outputs` keeps in memory while :func:`held_outputs` is open: path -> (bytes, what).
_HELD: contextvars.ContextVar[dict[Path, tuple[bytes, str]] | None] = contextvars.ContextVar("held_outputs",
                                                                                           default=None)


@contextlib.contextmanager
def held_outputs() -> Iterator[None]:
    """Within the block, :func:`write_outputs` keeps the files it is given in memory (a run's figures) until a
    call with ``release`` writes them together with its own (the report, which vouches for them): a run that fails
    or is interrupted (Ctrl-C) leaves ``--out`` as it was, never an earlier run's report beside this run's figures.
    What is still held when the block ends is dropped."""
    token = _HELD.set({})
    try:
        yield
    finally:
        _HELD.reset(token)


def write_outputs(contents: Mapping[Path, bytes], *, what: str, release: bool = False) -> None:
    """Each file of ``contents`` (path -> bytes) whole or not at all (:func:`edgesense.train.cache.replace_files`:
    all written beside their paths first, then renamed over them in order, the last path, the file that vouches
    for the others, last): a full disk leaves the earlier run's files as they were, never one cut short that the
    next run or a reader of report.json trusts, and no partial file. OSError naming ``what`` and the file.
    Inside :func:`held_outputs` the files are kept, not written, until a call with ``release`` writes those held
    first and ``contents`` last, all at once."""
    held = _HELD.get()
    if held is not None and not release:
        for path, data in contents.items():
            held.pop(path, None)  # written again: in the order of the last write
            held[path] = (data, what)
        return
    files = {**(held or {})}
    for path, data in contents.items():
        files.pop(path, None)
        files[path] = (data, what)
    if held:
        held.clear()
    writing: list[Path] = []

    def writer(path: Path, data: bytes):
        def write(partial: Path) -> None:
            writing.append(path)
            partial.write_bytes(data)
        return write

    try:
        replace_files({path: writer(path, data) for path, (data, _) in files.items()})
    except OSError as exc:
        path = writing[-1] if writing else next(iter(files))
        raise OSError(f"cannot write {files[path][1]} {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Fonts never taken as a fallback: matplotlib's last resort draws every character it lacks as a box.
_NOT_FALLBACKS = ("Last Resort",)


def _charmap(path: str) -> frozenset[int]:
    from matplotlib import ft2font

    return frozenset(ft2font.FT2Font(path).get_charmap())


@functools.lru_cache(maxsize=32)
def _fallback_fonts(chars: frozenset[str], default: str, fonts: tuple[tuple[str, str], ...]
                    ) -> tuple[tuple[str, ...], str]:
    """(families of ``fonts`` ((family, file), installed) that have the characters of ``chars`` the ``default``
    font file lacks, the characters none of them has): a label in another script (a place name like 北京) is drawn
    in a font that has it."""
    missing = {c for c in chars if ord(c) not in _charmap(default)}
    families: list[str] = []
    for name, path in fonts:
        if not missing:
            break
        if name.startswith(_NOT_FALLBACKS):
            continue
        try:
            has = {c for c in missing if ord(c) in _charmap(path)}
        except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read
            continue
        if has:
            missing -= has
            families.append(name)
    return tuple(dict.fromkeys(families)), "".join(sorted(missing))


@contextlib.contextmanager
def _fonts_for(plt, texts: Iterable[Any], path: Path) -> Iterator[None]:
    """Draw a figure whose ``texts`` (its labels, title) may hold characters the default font lacks (CJK place
    names): in an installed font that has them, as a fallback; those no installed font has are drawn as empty boxes,
    said in one line naming the figure, not one matplotlib warning per character."""
    chars = frozenset(c for text in texts for c in str(text) if c.isprintable() and not c.isspace())
    families: tuple[str, ...] = ()
    lacking = ""
    if any(ord(c) > 0x7F for c in chars):  # the default font (DejaVu Sans, matplotlib's own) has ASCII
        from matplotlib import font_manager

        installed = tuple(sorted({(f.name, f.fname) for f in font_manager.fontManager.ttflist}))
        families, lacking = _fallback_fonts(chars, font_manager.findfont(font_manager.FontProperties()), installed)
    rc = {"font.family": [*plt.rcParams["font.family"], *families]} if families else {}
    with warnings.catch_warnings(), plt.rc_context(rc):
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield
    if lacking:
        logger.warning("%s: no installed font has %d of its labels' characters (%s); they are drawn as empty boxes "
                       "(install one that has them, e.g. Noto Sans CJK for Chinese and Japanese: docs/BENCHMARK.md)",
                       path, len(lacking), lacking)


def _save_figure(plt, fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, whole or not at all (:func:`write_outputs`); the figure is closed either way."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_outputs({path: buffer.getvalue()}, what="the figure")
    return path


def plot_confusion(report: Mapping[str, Any], path: Path, title: str) -> Path:
    plt = _plt()
    with _fonts_for(plt, [*report["labels"], title], path):
        return _plot_confusion(plt, report, path, title)


def _plot_confusion(plt, report: Mapping[str, Any], path: Path, title: str) -> Path:
    matrix = np.asarray(report["confusion"], np.float64)
    labels = report["labels"]
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 3 + 0.45 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {report['accuracy']:.3f} on {report['count']}; cells: counts" if report["count"]
                 else title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="colour: fraction of the true class (each row sums to 1)")
    fig.tight_layout()
    return _save_figure(plt, fig, path)


def plot_latency(samples: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    plt = _plt()
    with _fonts_for(plt, [*samples, title], path):
        return _plot_latency(plt, samples, path, title)


def _plot_latency(plt, samples: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    stages = [s for s, v in samples.items() if len(v)]
    cols = min(3, max(1, len(stages)))
    rows = max(1, math.ceil(len(stages) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, stage in zip(axes.ravel(), stages):
        x = np.asarray(samples[stage])
        ax.hist(x, bins=40, color="tab:blue", alpha=0.8)
        summary = latency_summary(x)  # the legend's figures as report.md's table gives them (rounded alike)
        for p, style in zip(_PERCENTILES, ("-", "--", ":")):
            ax.axvline(np.percentile(x, p), color="k", linestyle=style, label=f"p{p} {_fmt(summary[f'p{p}'])} ms")
        ax.set_title(stage)
        ax.set_xlabel("ms")
        ax.set_ylabel("calls")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(stages):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(plt, fig, path)


#: The issue's hit-rate target (docs/BENCHMARK.md), drawn on the DET curve as the miss rate it allows.
TARGET_HIT_RATE = 0.9


def plot_det(streaming: Mapping[str, Any], path: Path) -> Path:
    """The DET curve: miss rate against false accepts per hour of talk (log axis), one line per
    split over the thresholds, the operating points marked, the false-accept budget the point is chosen
    within (``sweep_options``) and the hit-rate target drawn. A point with no false accept is drawn at half
    the smallest non-zero rate the stream can show (one per stream length), or at half the budget where
    that is lower (a point without a false accept within the budget, never right of it), ticked "0"."""
    plt = _plt()
    with _fonts_for(plt, streaming["det"], path):
        return _plot_det(plt, streaming, path)


def _talk_minutes(streaming: Mapping[str, Any]) -> dict[str, float]:
    return {split: streaming.get(f"{split}_streams", {}).get("talk", {}).get("duration_s", 0.0) / 60.0
            for split in ("evaluation", "tuning")}


def _plot_det(plt, streaming: Mapping[str, Any], path: Path) -> Path:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(9, 5.2))
    minutes = _talk_minutes(streaming)
    hours = max(minutes.values(), default=0.0) / 60.0
    budget = streaming.get("sweep_options", {}).get("max_false_accepts_per_hour")
    floor = 0.5 / hours if hours > 0 else 0.1
    if budget:  # 0 is within any budget: drawn left of its line, not at 7.5 per hour right of 1 (4 minutes of talk)
        floor = min(floor, budget / 2)
    xs: list[float] = [floor]
    for (name, curve), style, colour in zip(streaming["det"].items(), ("-", "--", ":"),
                                            ("tab:blue", "tab:orange", "tab:gray")):
        if not curve:
            continue
        x = [max(p["false_accepts_per_hour"], floor) for p in curve]
        xs += x
        ax.plot(x, [p["miss_rate"] for p in curve], style, color=colour, marker="o", markersize=3,
                label=f"{name} streams")
    # larger hollow markers under smaller ones: points that coincide (the recommended one is often the
    # single-threshold one) all stay visible
    markers = {"one_threshold": ("s", "tab:blue", 15, True), "class_thresholds": ("^", "tab:green", 13, True),
               "previous_firmware": ("x", "tab:red", 11, False), "firmware_config": ("D", "m", 9, True),
               "recommended": ("*", "k", 10, False)}
    points = streaming.get("evaluation", {})
    for key, (shape, colour, size, hollow) in markers.items():  # the recommended point last, on top
        point = points.get(key)
        if point is None:
            continue
        xs.append(max(point["false_accepts_per_hour"], floor))
        ax.plot([xs[-1]], [point["miss_rate"]], shape, color=colour, markersize=size, markeredgewidth=1.5,
                markerfacecolor="none" if hollow else colour, linestyle="none",
                label=f"{key.replace('_', ' ')} (evaluation)")
    if budget:
        xs.append(budget)
        ax.axvline(budget, color="0.3", linestyle="-.", linewidth=1,
                   label=f"budget: {budget:g} false accept{'s' if budget != 1 else ''}/hour")
    ax.axhline(1 - TARGET_HIT_RATE, color="0.3", linestyle=(0, (1, 1.5)), linewidth=1.2,
               label=f"target: {TARGET_HIT_RATE:.0%} hit rate (miss rate {1 - TARGET_HIT_RATE:.1f})")
    ax.set_xscale("log")
    lo, hi = min(xs) / 1.6, max(xs) * 1.6
    ax.set_xlim(lo, hi)
    if budget:
        ax.fill_between([lo, budget], 0, 1 - TARGET_HIT_RATE, color="tab:green", alpha=0.12, linewidth=0,
                        label="both met")
    # plain numbers on the decades (1, 10, 100, not 10^0), "0" where a point without a false accept is drawn
    decades = [10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
               if lo <= 10.0 ** k <= hi and abs(math.log10(10.0 ** k / floor)) > 0.3]
    ax.xaxis.set_major_locator(FixedLocator(sorted([floor, *decades])))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if math.isclose(v, floor) else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("false accepts per hour of command-free talk (log scale; a point with none drawn at 0)")
    ax.set_ylabel("miss rate (command words not detected)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    talk = ", ".join(f"{split} {m:.0f} min" if m >= 1 else f"{split} {m * 60:.0f} s"
                     for split, m in minutes.items() if m > 0)
    ax.set_title("Streaming commands: DET curve (threshold swept)" + (f"\ncommand-free talk: {talk}" if talk else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside, over no data
    fig.tight_layout()
    return _save_figure(plt, fig, path)


# --------------------------------------------------------------------------- markdown


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):  # not measured (e.g. no validation items)
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def _with_interval(x: Any, interval: Sequence[float] | None, digits: int = 3) -> str:
    """``0.905 (0.874–0.929)``: a figure with its 95 % interval (the figure alone where the report has none)."""
    if interval is None or x is None:
        return _fmt(x, digits)
    return f"{_fmt(x, digits)} ({_fmt(float(interval[0]), digits)}–{_fmt(float(interval[1]), digits)})"


#: p-values below this are written as "p < 0.001" (the exact value says nothing more to a reader).
_SMALLEST_P_SHOWN = 0.001


def _p_value(p: float) -> str:
    if p < _SMALLEST_P_SHOWN:
        return f"p < {_SMALLEST_P_SHOWN:g}"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _paired(comparison: Mapping[str, Any] | None) -> str:
    """The exact McNemar test against ours as a table cell: ``p = 0.24 (18 discordant: ours 12, it 6)``."""
    if not comparison:
        return "–"
    return (f"{_p_value(comparison['p_value'])} ({comparison['discordant']} discordant: ours "
            f"{comparison['model_right_other_wrong']}, it {comparison['other_right_model_wrong']})")


def _point_figures(point: Mapping[str, Any]) -> tuple[str, str, str]:
    """A streaming operating point's hit rate, false accepts per hour and per 100 other words, each with its
    interval where the report has one."""
    return (_with_interval(point["hit_rate"], point.get("hit_rate_interval")),
            _with_interval(point["false_accepts_per_hour"], point.get("false_accepts_per_hour_interval"), 2),
            _with_interval(point["false_accepts_per_100_words"], point.get("false_accepts_per_100_words_interval"), 2))


def _per_word_line(point: Mapping[str, Any]) -> list[str]:
    """``Hit rate per word (95 % intervals): yes 0.76 (0.63–0.86), …``: each word's hit rate with its 95 % interval
    (Wilson, of the times it was said) where the report has one (one written before them: the rates alone)."""
    intervals = point.get("per_word_hit_rate_interval") or {}
    rates = point.get("commands_stream", {}).get("per_word_hit_rate", {})
    return [("Hit rate per word" + (" (95 % intervals)" if intervals else "") + ": "
             + ", ".join(f"{k} {_with_interval(v, intervals.get(k), 2)}" for k, v in rates.items()))]


def _second_opinion_line(second: Mapping[str, Any], model_alone: bool) -> list[str]:
    if model_alone:
        return ["The model alone (`--model-alone`): the second opinion `--config` may name is left out.", ""]
    if not second.get("heads_path"):
        return []
    return [f"Each hop's posteriors are the blend `--config` runs: {second['student_weight']:g} x the model's + "
            f"{1 - second['student_weight']:g} x the second opinion's (`{Path(second['heads_path']).name}` on "
            "speech_embedding); the clip accuracy, the breakdown of the streaming cost and the level envelopes "
            "score that blend too.", ""]


def _streaming_markdown(st: Mapping[str, Any]) -> list[str]:
    if "recommended" not in st:
        return []
    rec = st["recommended"]
    lines = ["", "## Streaming commands", "", f"Every stream is scored every {st['hop_ms']:g} ms of audio (the command "
             "hop of `--config`; write the recommendation only into configs of that hop).", "",
             *_second_opinion_line(st.get("second_opinion") or {}, bool(st.get("model_alone"))),
             "| split | pool of noise / of other speech | stream | minutes | command words | other utterances | "
             "unique recordings |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for split, pools in st["pools"].items():
        shares = pools.get("talk_shares") or {}
        for kind, s in st.get(f"{split}_streams", {}).items():
            pool = f"{pools['pool']} / {pools['other_speech_pool']}"
            if kind == "talk" and len(shares) > 1:  # the talk stream's time, pool by pool
                pool += " (" + ", ".join(f"{100 * share:.0f} % {name}" for name, share in shares.items()) + ")"
            lines.append(f"| {split} | {pool} | {kind} | "
                         f"{s['duration_s'] / 60:.1f} | "
                         f"{s['command_words']} | {s['other_utterances']} | {s['unique_sources']} |")
    settings = ", ".join(f"`{k}: {v}`" for k, v in rec["settings"].items())
    sw = st["sweep_options"]
    latency = sw.get("max_latency_p95_ms")
    in_time = latency is not None and sw.get("latency_rule") == "in-time"
    missed = ""
    if not rec["within_budget_on_tuning"]:
        missed = ("; none within the false-accept budget was within the latency budget, so the best of them"
                  if rec.get("budget_missed") == "latency" else "; none was within that budget, so the quietest")
    ranks_by = f"the most words detected within {latency:g} ms of their end" if in_time else "the highest hit rate"
    cap = "" if latency is None or in_time else f", latency p95 at most {latency:g} ms"
    words = (f" and {sw['max_false_accepts_per_100_words']:g} per 100 other words"
             if rec["tuning"].get("false_accepts_per_100_words") is not None else
             " (none per 100 other words: those streams held no other words said alone, so that budget was not "
             "measured)")
    lines += ["", f"**Recommended** (chosen on the {rec['chosen_on']} streams among {st['sweep_points']} settings: "
              f"{ranks_by} with at most {sw['max_false_accepts_per_hour']:g} false accepts per hour of "
              f"talk{words}{cap}{missed}): {settings}."]
    if "evaluation" not in st:  # --tuning-only
        r = rec["tuning"]
        hits, per_hour, per_100_words = _point_figures(r)
        lines += ["", "Tuning streams only (`--tuning-only`: validation speakers; nothing of the test split or the "
                      "evaluation pools was read). At the recommended setting: "
                      f"hit rate {hits}, {per_hour} false accepts per hour of talk, {per_100_words} per 100 other "
                      f"words (95 % intervals), latency p50 / p95 "
                      f"{_fmt(r['latency_ms']['p50'], 0)} / {_fmt(r['latency_ms']['p95'], 0)} ms."]
        return lines + _tuning_budgets_markdown(st) + _envelope_markdown(st, "level_envelope_tuning",
                                                                         "the tuning streams' words")
    lines += ["", "Evaluation streams (test speakers, evaluation pool); in brackets the 95 % intervals (hit rate: "
              "Wilson, of the words hit; false accepts: exact Poisson, of their count):", "",
              "| setting | hit rate | FA/hour of talk | FA/100 other words | latency p50 / p95 ms | "
              "FA/hour on the commands stream (subst. / other speech / background) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for key, r in st["evaluation"].items():
        if r is None:
            continue
        c = r.get("commands_stream", {}).get("false_accepts_per_hour", {})
        title = st.get("firmware_config", {}).get("title", key) if key == "firmware_config" else key.replace("_", " ")
        lines.append(f"| {title} | " + " | ".join(_point_figures(r)) + f" | {_fmt(r['latency_ms']['p50'], 0)} / "
                     f"{_fmt(r['latency_ms']['p95'], 0)} | {c.get('substitutions')} / {c.get('other_speech')} / "
                     f"{c.get('background')} |")
    r = st["evaluation"]["recommended"]
    talk = r.get("talk_stream", {}).get("false_accepts_per_hour", {})
    lines += ["", f"Talk false accepts per hour: {talk.get('other_speech')} during speech, {talk.get('background')} "
              f"in the pauses{_recordings_fired_on(st, r)}. Clip accuracy on the same command words: "
              f"{_fmt(st['clip_accuracy_commands'])}; "
              f"**streaming cost** {_fmt(st['streaming_cost_points'], 1)} points.", "",
              *_per_word_line(r),
              "", "False accepts on the talk and other words, by the word fired: "
              + (", ".join(f"{k} {v}" for k, v in _summed(r, "false_accepts_by_word").items()) or "none")
              + "; fired on most: "
              + (", ".join(f"`{k}` {v}" for k, v in list(_summed(r, "false_accepts_top_sources").items())[:5])
                 or "none")
              + "."]
    return (lines + _tuning_budgets_markdown(st) + _breakdown_markdown(st)
            + _envelope_markdown(st, "level_envelope", "the same words")
            + _envelope_markdown(st, "level_envelope_tuning", "the tuning streams' words (validation speakers)"))


def _breakdown_markdown(st: Mapping[str, Any]) -> list[str]:
    """Where the streaming cost goes: the evaluation streams' command words, one window each."""
    rows = st.get("cost_breakdown") or []
    if not rows:
        return []
    lines = ["", "Where the streaming cost goes: the evaluation streams' command words, each in one 1-s window at "
                 "the streams' levels and SNR over their noise (*confident*: its own word scores above the "
                 "recommended threshold, what the detector can fire on):", "",
             "| the command words | named right | confident |", "| --- | ---: | ---: |",
             f"| clean clips, as recorded | {_fmt(st.get('clip_accuracy_commands'))} | – |"]
    for row in rows:
        where = "centred" if row["offset_ms"] == 0 else f"{row['offset_ms']:g} ms off centre"
        lines.append(f"| in the streams' noise, {where} | {_fmt(row['accuracy'])} | {_fmt(row['confident'])} |")
    hit_rate = st["evaluation"]["recommended"]["hit_rate"]
    return lines + [f"| on the streams, detected (recommended setting) | {_fmt(hit_rate)} | – |"]


def _recordings_fired_on(st: Mapping[str, Any], point: Mapping[str, Any]) -> str:
    """``; from N of the talk's M recordings (each heard about K times)``: how many independent
    events the evaluation talk's false accepts are ("" for a report without the counts)."""
    fired_on = point.get("talk_stream", {}).get("recordings_fired_on")
    stream = st.get("evaluation_streams", {}).get("talk", {})
    recordings, utterances = stream.get("unique_sources"), stream.get("other_utterances")
    if fired_on is None or not recordings or not utterances:
        return ""
    return (f"; from {fired_on} of the talk's {recordings} recordings (each heard about "
            f"{utterances / recordings:.0f} times)")


def _tuning_budgets_markdown(st: Mapping[str, Any]) -> list[str]:
    """The tuning streams' best hit rate within each false-accept budget, and their mean."""
    section = st.get("tuning_budgets")
    if not section:
        return []
    rows = section["budgets"]
    cap = section.get("max_latency_p95_ms")
    capped = "" if cap is None else (f", latency p95 at most {cap:g} ms; the last four rows without that budget, "
                                     f"the last two counting a word detected later than {cap:g} ms as missed")
    steadiest = ("the mean of these hit rates is the steadier figure to compare models by" if cap is None else
                 f"the mean of the words detected within {cap:g} ms is the steadiest figure to compare models by (a "
                 "late word costs its own share, where the capped row drops a whole setting)")
    measured = st.get("recommended", {}).get("tuning", {}).get("false_accepts_per_100_words") is not None
    words = (f"{section['max_false_accepts_per_100_words']:g} per 100 other words" if measured else
             "none per 100 other words measured: no other words said alone")
    return ["", f"The {section['streams']} streams' best setting within each budget of false accepts per hour "
                f"(and {words}{capped}); {steadiest}:", "",
            "| false accepts per hour | " + " | ".join(f"≤ {r['max_false_accepts_per_hour']:g}" for r in rows)
            + " | mean |", "| --- |" + " ---: |" * (len(rows) + 1),
            *_budget_rows(section, "hit rate", "latency p95 (ms)"),
            *(_budget_rows(section["uncapped"], "without the latency budget", "its latency p95 (ms)")
              if section.get("uncapped") else ()),
            *(_budget_rows(section["timely"], f"detected within {cap:g} ms", "its latency p95 (ms)")
              if section.get("timely") else ())]


def _budget_rows(section: Mapping[str, Any], hits: str, latency: str) -> list[str]:
    rows = section["budgets"]
    return [f"| {hits} | " + " | ".join(_fmt(r["hit_rate"]) for r in rows) + f" | {_fmt(section['mean_hit_rate'])} |",
            f"| {latency} | " + " | ".join(_fmt(r.get("latency_p95_ms"), 0) for r in rows) + " | |"]


def _envelope_markdown(st: Mapping[str, Any], key: str, words: str) -> list[str]:
    """A level envelope (``key``, of ``words``): named right / confident by speech level (rows) and SNR (columns)."""
    rows = st.get(key) or []
    if not rows:
        return []
    snrs = list(dict.fromkeys(row["snr_db"] for row in rows))
    lines = ["", f"Level envelope: {words}, centred, with the spoken part at each level over the streams' noise "
                 "at each SNR (named right / confident; 100 dB: no audible noise). Speech far outside the levels "
                 "where the model works is a microphone-gain problem, not a threshold one:", "",
             "| speech level | " + " | ".join(f"{snr:g} dB SNR" for snr in snrs) + " |",
             "| --- |" + " ---: |" * len(snrs)]
    for level in dict.fromkeys(row["level_dbfs"] for row in rows):
        cells = {row["snr_db"]: row for row in rows if row["level_dbfs"] == level}
        lines.append(f"| {level:g} dBFS | " + " | ".join(
            f"{_fmt(cells[snr]['accuracy'])} / {_fmt(cells[snr]['confident'])}" if snr in cells else "–"
            for snr in snrs) + " |")
    return lines


def _summed(point: dict, key: str) -> dict[str, int]:
    """``key``'s counts of the talk and words streams of one operating point, added, most first."""
    total: Counter[str] = Counter()
    for stream in ("talk_stream", "words_stream"):
        total.update(point.get(stream, {}).get(key, {}))
    return dict(total.most_common())


def _points(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def av_summary(section: Mapping[str, Any]) -> str:
    """One line: the two summary figures of a degraded-camera table against their targets."""
    s = section["summary"]
    return (f"fused - image only: degraded camera {_points(s['degraded_fused_minus_image_only_points'])} points "
            f"(target >= {s['degraded_target_points']:+g}; ceiling "
            f"{_points(s['degraded_either_path_minus_image_only_points'])}), "
            f"clean {_points(s['clean_fused_minus_image_only_points'])} "
            f"(target >= {s['clean_target_points']:+g}); audio only {_fmt(section['audio_only']['accuracy'])} "
            f"(n={section['count']})")


def _av_markdown(section: Mapping[str, Any], title: str, sound: str) -> list[str]:
    """The degraded-camera table (edgesense.bench.scenes_av) of one section."""
    lines = ["", f"## {title}", "", sound, "", "| photo | fused | image only | audio only | either path (ceiling) |",
             "| --- | --- | --- | --- | --- |"]
    for condition in section["conditions"]:
        row = section["table"][condition]
        lines.append(f"| {condition} | {_fmt(row['fused'])} | {_fmt(row['image_only'])} | {_fmt(row['audio_only'])} "
                     f"| {_fmt(row['either_path'])} |")
    s = section["summary"]
    per_class = section["audio_only"]["per_class"]
    intervals = section["audio_only"].get("per_class_interval") or {}
    lines += ["", f"Fused − image only, mean over the degraded conditions: "
              f"**{_points(s['degraded_fused_minus_image_only_points'])} points** (target ≥ "
              f"{s['degraded_target_points']:+g}); with a clean camera: "
              f"**{_points(s['clean_fused_minus_image_only_points'])} points** "
              f"(target ≥ {s['clean_target_points']:+g}). The ceiling of the first with this audio path "
              f"(right where image only or audio only is right): "
              f"{_points(s['degraded_either_path_minus_image_only_points'])} points.",
              "", "Audio only, per class: " + ", ".join(
                  f"{label} {_with_interval(c['accuracy'], intervals.get(label))} (n={c['count']})"
                  for label, c in per_class.items() if c["count"]) + (" (95 % intervals in brackets)." if intervals
                                                                      else "")]
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    m = report["model"]
    lines = [f"# EdgeSense benchmark: {m.get('name')} ({m.get('version')})", "",
             f"Model `{m['path']}`: {_fmt(m['bytes'])} bytes, {_fmt(m.get('params'))} params, "
             f"{_fmt(m.get('macs'))} MACs per full pass. Settings: {json.dumps(report['settings'])}.", ""]
    refs = report.get("references", {})
    lines += ["## Accuracy", "", "Accuracy with its 95 % interval (Wilson); *vs ours*: the exact McNemar test against "
              "ours on the same items (the ambient-noise row: against ours with the microphone absent), its p-value "
              "and the items only one of the two named right. p < 0.05: more than the luck of the items drawn.", "",
              "| task | model | accuracy (95 % interval) | n | vs ours | data |",
              "| --- | --- | --- | --- | --- | --- |"]
    for key, title in (("command", "commands (camera absent)"), ("scene", "scenes (microphone absent)"),
                       ("scene_with_ambient_audio", "scenes (mic: ambient noise)")):
        if key in report:
            r = report[key]
            lines.append(f"| {title} | ours | {_with_interval(r['accuracy'], r.get('accuracy_interval'))} | "
                         f"{r['count']} | {_paired(r.get('vs_microphone_absent'))} | {r.get('selection', '')} |")
    for name, r in refs.items():
        row = r[r["task"]]
        lines.append(f"| {r['task']}s | {name} | {_with_interval(row['accuracy'], row.get('accuracy_interval'))} | "
                     f"{row['count']} | {_paired(r.get('vs_model'))} | same |")
    teachers = report.get("teachers", {})
    for name, r in teachers.items():
        row = r[r["task"]]
        lines.append(f"| {r['task']}s | {name} (teacher, float, desktop) | "
                     f"{_with_interval(row['accuracy'], row.get('accuracy_interval'))} | {row['count']} | "
                     f"{_paired(r.get('vs_model'))} | same |")
    if "scene_av" in report:
        a = report["scene_av"]["ambience"]
        lines += _av_markdown(report["scene_av"], "Scenes with the sound of their place, camera clean and degraded",
                              f"The scored photos ({report['scene_av'].get('selection', '')}), each with a "
                              f"{a['snippet_s']:g} s snippet of a recording of its own class from `{a['folder']}` "
                              f"(evaluation pool only: {sum(map(len, a['evaluation_files'].values()))} recordings, "
                              f"{a['training_files_left_out']} training-pool recordings left out) at "
                              f"{a['dbfs_range'][0]:g}…{a['dbfs_range'][1]:g} dBFS RMS.")
    if "scene_degraded" in report:
        d = report["scene_degraded"]
        lines += ["", "## Scenes, camera clean and degraded (image only)", "",
                  f"The scored photos ({d.get('selection', '')}, n={d['count']}), microphone absent, degraded as in "
                  "the degraded-camera table:", "", "| " + " | ".join(d["conditions"]) + " |",
                  "| " + " | ".join("---" for _ in d["conditions"]) + " |",
                  "| " + " | ".join(_fmt(d["image_only"][c]) for c in d["conditions"]) + " |"]
    if "av" in report:
        lines += _av_markdown(report["av"], "Paired audio-visual folder (--av), camera clean and degraded",
                              "Each photo with its own recording.")
    lines += ["", "## Latency (ms, wall clock per call)", "", "| stage | p50 | p95 | p99 | mean | n |",
              "| --- | --- | --- | --- | --- | --- |"]
    for stage, s in report.get("latency_ms", {}).items():
        if not s["n"]:
            continue  # not measured in this run (e.g. the image stages without --scenes)
        lines.append(f"| {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | {_fmt(s['mean'])} | "
                     f"{s['n']} |")
    for name, r in refs.items():
        for stage, s in r["latency_ms"].items():
            lines.append(f"| {name}: {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | "
                         f"{_fmt(s['mean'])} | {s['n']} |")
    if refs:
        lines += ["", "## References", ""]
        for name, r in refs.items():
            lines.append(f"* **{name}**: {r['architecture_note']}; {_fmt(r['model']['bytes'])} bytes, "
                         f"{_fmt(r['model']['params'])} params, {_fmt(r['model']['macs'])} MACs.")
        comp = report.get("comparison_per_second", {})
        rates = comp.get("rates_per_s", {})
        hops, frames = rates.get("command_hops", COMMAND_HOPS_PER_S), rates.get("scene_frames", SCENE_FRAMES_PER_S)
        lines += ["", f"Compute per second of stream ({hops:g} command hops/s, {frames:g} scene frames/s, the rates "
                  "of `--config`; "
                  "ours = encoder + fusion head per call, theirs = the reference model):", "",
                  "| part | ours MACs/s | theirs MACs/s | ratio | ours ms/s | theirs ms/s | ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for part in ("commands", "scenes", "total"):
            if part in comp:
                c = comp[part]
                lines.append(f"| {part} | {_fmt(c['ours_macs_per_s'])} | {_fmt(c['theirs_macs_per_s'])} | "
                             f"{_fmt(c['macs_ratio'])} | {_fmt(c['ours_ms_per_s'])} | {_fmt(c['theirs_ms_per_s'])} | "
                             f"{_fmt(c['ms_ratio'])} |")
        lines.append(f"\nFrontends (same code for both): {_fmt(comp.get('frontend_ms_per_s'))} ms/s.")
    if teachers:
        lines += ["", "## Teachers", "", "What the student learns from (trained on the references' data; not "
                  "deployable: float, desktop only):", ""]
        for name, r in teachers.items():
            lines.append(f"* **{name}**: {r['architecture_note']}; {_fmt(r['model']['bytes'])} bytes on disk "
                         f"(feature model + head of {_fmt(r['model']['head_params'])} params), "
                         f"{_fmt(r['ms_per_item_batched'])} ms per item batched on this machine, validation "
                         f"{_fmt(r['validation_accuracy_float'])}.")
    lines += _streaming_markdown(report.get("streaming", {}))
    fs = report.get("fusion_study")
    if fs:
        lines += ["", "## Fusion study", "", f"> {fs['note']}", "",
                  f"Scene accuracy on {fs['sizes'].get(fs['evaluated_on'])} {fs['evaluated_on']} pairs "
                  f"(trained on {fs['sizes']['training']}):", "",
                  "| variant | " + " | ".join(fs["conditions"]) + " |", "| --- |" + " --- |" * len(fs["conditions"])]
        for name, r in fs["accuracy"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(r[c]) for c in fs["conditions"]) + " |")
        lines += ["", "Gain of each fusion strategy over image-only (accuracy points):", "",
                  "| variant | " + " | ".join(fs["conditions"]) + " |", "| --- |" + " --- |" * len(fs["conditions"])]
        for name, r in fs["gain_over_image_only"].items():
            lines.append(f"| {name} | " + " | ".join(f"{r[c]:+.3f}" for c in fs["conditions"]) + " |")
    lines += ["", "## Figures", ""] + [f"* {k}: ![{k}]({v})" for k, v in report.get("figures", {}).items()]
    return "\n".join(lines) + "\n"
