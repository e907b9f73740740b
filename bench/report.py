"""Benchmark report: Markdown and PNG figures from the report dictionary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgesense.bench.latency import _PERCENTILES, COMMAND_HOPS_PER_S, SCENE_FRAMES_PER_S

# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: Mapping[str, Any], path: Path, title: str) -> Path:
    plt = _plt()
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
    ax.set_title(f"{title}\naccuracy {report['accuracy']:.3f} on {report['count']}" if report["count"] else title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(samples: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    plt = _plt()
    stages = [s for s, v in samples.items() if len(v)]
    cols = min(3, max(1, len(stages)))
    rows = max(1, math.ceil(len(stages) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, stage in zip(axes.ravel(), stages):
        x = np.asarray(samples[stage])
        ax.hist(x, bins=40, color="tab:blue", alpha=0.8)
        for p, style in zip(_PERCENTILES, ("-", "--", ":")):
            ax.axvline(np.percentile(x, p), color="k", linestyle=style, label=f"p{p} {np.percentile(x, p):.3f} ms")
        ax.set_title(stage)
        ax.set_xlabel("ms")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(stages):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def render_markdown(report: Mapping[str, Any]) -> str:
    m = report["model"]
    lines = [f"# EdgeSense benchmark: {m.get('name')} ({m.get('version')})", "",
             f"Model `{m['path']}`: {_fmt(m['bytes'])} bytes, {_fmt(m.get('params'))} params, "
             f"{_fmt(m.get('macs'))} MACs per full pass. Settings: {json.dumps(report['settings'])}.", ""]
    refs = report.get("references", {})
    lines += ["## Accuracy", "", "| task | model | accuracy | n | data |", "| --- | --- | --- | --- | --- |"]
    for key, title in (("command", "commands (camera absent)"), ("scene", "scenes (microphone absent)"),
                       ("scene_with_ambient_audio", "scenes (mic: ambient noise)")):
        if key in report:
            r = report[key]
            lines.append(f"| {title} | ours | {_fmt(r['accuracy'])} | {r['count']} | {r.get('selection', '')} |")
    for name, r in refs.items():
        lines.append(f"| {r['task']}s | {name} | {_fmt(r[r['task']]['accuracy'])} | {r[r['task']]['count']} | same |")
    if "av" in report:
        for key, r in report["av"].items():
            lines.append(f"| scenes, paired AV ({key}) | ours | {_fmt(r['accuracy'])} | {r['count']} | --av |")
    lines += ["", "## Latency (ms, wall clock per call)", "", "| stage | p50 | p95 | p99 | mean | n |",
              "| --- | --- | --- | --- | --- | --- |"]
    for stage, s in report.get("latency_ms", {}).items():
        lines.append(f"| {stage} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['p99'])} | {_fmt(s['mean'])} | {s['n']} |")
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
        lines += ["", f"Compute per second of stream ({COMMAND_HOPS_PER_S} command hops/s, {SCENE_FRAMES_PER_S} "
                  "scene frames/s; ours = encoder + fusion head per call, theirs = the reference model):", "",
                  "| part | ours MACs/s | theirs MACs/s | ratio | ours ms/s | theirs ms/s | ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for part in ("commands", "scenes", "total"):
            if part in comp:
                c = comp[part]
                lines.append(f"| {part} | {_fmt(c['ours_macs_per_s'])} | {_fmt(c['theirs_macs_per_s'])} | "
                             f"{_fmt(c['macs_ratio'])} | {_fmt(c['ours_ms_per_s'])} | {_fmt(c['theirs_ms_per_s'])} | "
                             f"{_fmt(c['ms_ratio'])} |")
        lines.append(f"\nFrontends (same code for both): {_fmt(comp.get('frontend_ms_per_s'))} ms/s.")
    st = report.get("streaming", {})
    if "at_recommended" in st:
        rec, at, dflt = st["recommended"], st["at_recommended"], st["at_firmware_default"]
        lines += ["", "## Streaming commands", "",
                  f"Evaluation stream: {json.dumps(st.get('evaluation_stream'))}; tuning stream: "
                  f"{json.dumps(st.get('tuning_stream'))}.", "",
                  f"**Recommended** (chosen on the {rec['chosen_on']} stream: highest hit rate with at most "
                  f"{st['max_false_accepts_per_hour']:g} false accepts/hour): `commands.threshold: {rec['threshold']:g}`, "
                  f"`commands.suppression_ms: {rec['suppression_ms']:g}`.", "",
                  "| setting | hit rate | FA/hour | FA (subst./unknown/background) | latency p50 / p90 ms |",
                  "| --- | --- | --- | --- | --- |"]
        for title, r in (("recommended", at), ("firmware default 0.7 / 750 ms", dflt)):
            lat = r["latency_ms"]
            lines.append(f"| {title} | {_fmt(r['hit_rate'])} | {_fmt(r['false_accepts_per_hour'], 2)} | "
                         f"{r['false_accepts']} ({r['substitutions']}/{r['false_accepts_on_unknown_words']}/"
                         f"{r['false_accepts_on_background']}) | {_fmt(lat['p50'], 0)} / {_fmt(lat['p90'], 0)} |")
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
