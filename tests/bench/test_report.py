"""The report's figures: labels in a script the default font lacks."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgesense.bench.accuracy import classification_report
from edgesense.bench.report import plot_confusion, render_markdown

PLACES = ["北京", "日本", "上海", "sea"]


def _confusion(labels: list[str]) -> dict:
    k = len(labels)
    return classification_report(np.arange(2 * k) % k, (np.arange(2 * k) + np.arange(2 * k) // k) % k, labels)


def _box_font(path: Path, chars: str, family: str) -> Path:
    """A TrueType font of ``family`` whose glyphs for ``chars`` are filled squares."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef"] + [f"uni{ord(c):04X}" for c in chars]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): name for c, name in zip(chars, names[1:])})
    glyphs = {}
    for name in names:
        pen = TTGlyphPen(None)
        pen.moveTo((100, 0))
        pen.lineTo((100, 700))
        pen.lineTo((900, 700))
        pen.lineTo((900, 0))
        pen.closePath()
        glyphs[name] = pen.glyph()
    builder.setupGlyf(glyphs)
    builder.setupHorizontalMetrics({name: (1000, 100) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.save(str(path))
    return path


@pytest.fixture
def fonts(monkeypatch):
    """matplotlib's installed fonts, restored after the test (one may add its own)."""
    from matplotlib import font_manager

    monkeypatch.setattr(font_manager.fontManager, "ttflist", list(font_manager.fontManager.ttflist))
    return font_manager.fontManager


def _lacks(fonts, chars: str) -> bool:
    """Whether no installed font (but matplotlib's last resort, all boxes) has ``chars``."""
    from matplotlib import ft2font

    return not any(all(ord(c) in ft2font.FT2Font(f.fname).get_charmap() for c in chars) for f in fonts.ttflist
                   if not f.name.startswith("Last Resort"))


def test_labels_no_installed_font_has_are_one_line_naming_the_figure_not_a_warning_per_character(tmp_path, fonts,
                                                                                                 caplog):
    """A confusion matrix of CJK place names drew each as empty boxes and printed one 'Glyph … missing from font(s)
    DejaVu Sans' warning per character (dozens in a run of several figures); one line names the figure and them."""
    if not _lacks(fonts, "北京日本上海"):
        pytest.skip("a font with CJK glyphs is installed")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING,
                                                                         logger="edgesense.bench.report"):
        warnings.simplefilter("always")
        path = plot_confusion(_confusion(PLACES), tmp_path / "confusion.png", "places")
    assert path.is_file() and [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: no installed font has 6 of its labels' characters (上京北日本海); they are drawn as empty boxes "
        "(install one that has them, e.g. Noto Sans CJK for Chinese and Japanese: docs/BENCHMARK.md)"]


def test_labels_the_default_font_lacks_are_drawn_in_an_installed_font_that_has_them(tmp_path, fonts, caplog):
    """With a font that has 北京日本 installed, those labels are drawn in it (a fallback), not as empty boxes; only
    上海, which it lacks, is said."""
    if not _lacks(fonts, "北京日本上海"):
        pytest.skip("a font with CJK glyphs is installed")
    without = plot_confusion(_confusion(PLACES), tmp_path / "without.png", "places").read_bytes()
    fonts.addfont(str(_box_font(tmp_path / "boxes.ttf", "北京日本", "EdgeSense Test Boxes")))
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING,
                                                                         logger="edgesense.bench.report"):
        warnings.simplefilter("always")
        with_font = plot_confusion(_confusion(PLACES), tmp_path / "with.png", "places").read_bytes()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'with.png'}: no installed font has 2 of its labels' characters (上海); they are drawn as empty "
        "boxes (install one that has them, e.g. Noto Sans CJK for Chinese and Japanese: docs/BENCHMARK.md)"]
    assert with_font != without
    ascii_only = _confusion(["sea", "street"])  # drawn as before, in the default font alone
    first = plot_confusion(ascii_only, tmp_path / "a.png", "scenes").read_bytes()
    assert plot_confusion(ascii_only, tmp_path / "b.png", "scenes").read_bytes() == first


def _accuracy_rows(markdown: str) -> dict[str, list[str]]:
    """The accuracy table of ``report.md``, by its model column: the other cells."""
    table = markdown.split("## Accuracy")[1].split("\n\n## ")[0]
    rows = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {cells[1]: [cells[0], *cells[2:]] for cells in rows[1:]}


def test_the_accuracy_table_shows_each_interval_and_the_paired_test_against_ours():
    from edgesense.bench.uncertainty import paired_comparison

    ours_right = np.array([True] * 90 + [False] * 10)
    kws_right = np.array([True] * 70 + [False] * 20 + [True] * 2 + [False] * 8)  # ours alone 20, it alone 2
    ours = classification_report(np.zeros(100, np.int64), np.where(ours_right, 0, 1), ["yes", "no"])
    kws = classification_report(np.zeros(100, np.int64), np.where(kws_right, 0, 1), ["yes", "no"])
    report = {"model": {"path": "model.tflite", "bytes": 1000}, "settings": {}, "latency_ms": {},
              "command": {**ours, "selection": "testing split"},
              "references": {"kws": {"task": "command", "command": kws, "vs_model": paired_comparison(
                  ours_right, kws_right), "latency_ms": {}, "architecture_note": "a reference",
                  "model": {"bytes": 10, "params": 1, "macs": 1}}},
              # a teacher row of a report written before the intervals: its figure alone, no test
              "teachers": {"t": {"task": "command", "command": {"accuracy": 0.5, "count": 100},
                                 "architecture_note": "a teacher", "model": {"bytes": 10, "head_params": 1},
                                 "ms_per_item_batched": 1.0, "validation_accuracy_float": 0.5}}}
    rows = _accuracy_rows(render_markdown(report))
    assert rows["ours"] == ["commands (camera absent)", "0.900 (0.826–0.945)", "100", "–", "testing split"]
    assert rows["kws"] == ["commands", "0.720 (0.625–0.799)", "100", "p < 0.001 (22 discordant: ours 20, it 2)",
                           "same"]
    assert rows["t (teacher, float, desktop)"] == ["commands", "0.500", "100", "–", "same"]


# --------------------------------------------------------------------------- the figures, as a reader sees them


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept (drawn) for their Axes to be read."""
    import edgesense.bench.report as report_mod

    figures = []
    save = report_mod._save_figure

    def keep(plt, fig, path):
        fig.canvas.draw()
        fig.kept_renderer = fig.canvas.get_renderer()  # closing the figure gives it a canvas that has none
        figures.append(fig)
        return save(plt, fig, path)

    monkeypatch.setattr(report_mod, "_save_figure", keep)
    return figures


def _whole(fig) -> None:
    """Nothing drawn past the figure's edges."""
    renderer = fig.kept_renderer
    tight, frame = fig.get_tightbbox(renderer), fig.bbox_inches
    assert tight.x0 >= frame.x0 - 0.01 and tight.y0 >= frame.y0 - 0.01, (tight, frame)
    assert tight.x1 <= frame.x1 + 0.01 and tight.y1 <= frame.y1 + 0.01, (tight, frame)


def _apart(boxes) -> bool:
    return all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _streaming(talk_s: float = 240.0) -> dict:
    curve = [{"threshold": t, "miss_rate": m, "false_accepts_per_hour": fa, "false_accepts_per_100_words": 0.0}
             for t, m, fa in ((0.3, 0.2, 450.0), (0.5, 0.23, 30.0), (0.7, 0.23, 0.0), (0.9, 0.6, 0.0))]
    point = {"miss_rate": 0.23, "hit_rate": 0.77, "false_accepts_per_hour": 0.0}
    return {"det": {"evaluation": curve, "tuning": curve[1:]},
            "evaluation_streams": {"talk": {"duration_s": talk_s}}, "tuning_streams": {"talk": {"duration_s": talk_s}},
            "sweep_options": {"max_false_accepts_per_hour": 1.0},
            "evaluation": {"recommended": point, "one_threshold": point,
                           "firmware_config": {**point, "miss_rate": 0.2, "false_accepts_per_hour": 15.0}}}


def test_the_det_curve_shows_the_budget_and_the_target_and_no_false_accept_inside_the_budget(tmp_path, drawn):
    """With 4 minutes of talk a point without a false accept was drawn at 7.5 per hour, right of where the 1-per-hour
    budget would be, which was not drawn (nor the 90 % hit rate); the log axis said 10^1."""
    from edgesense.bench.report import plot_det

    plot_det(_streaming(), tmp_path / "det.png")
    (fig,) = drawn
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    recommended = lines["recommended (evaluation)"].get_xdata()[0]
    assert recommended < 1.0  # no false accept: within the budget
    assert list(lines["budget: 1 false accept/hour"].get_xdata()) == [1.0, 1.0]
    target = next(line for label, line in lines.items() if label.startswith("target"))
    assert list(target.get_ydata()) == pytest.approx([0.1, 0.1])  # the 90 % hit rate
    ticks = {t.get_text(): t.get_position()[0] for t in ax.get_xticklabels() if t.get_text()}
    assert ticks.get("0") == pytest.approx(recommended) and "1" in ticks and "10" in ticks
    assert not any("^" in t for t in ticks)  # plain numbers, not 10^1
    assert "4 min" in ax.get_title()  # on what: the minutes of talk the rates are per hour of
    renderer = fig.kept_renderer
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))  # over no data
    _whole(fig)


def test_with_hours_of_talk_a_point_without_false_accepts_is_drawn_at_half_the_smallest_rate(tmp_path, drawn):
    from edgesense.bench.report import plot_det

    plot_det(_streaming(talk_s=4 * 3600.0), tmp_path / "det.png")  # one false accept in 4 hours: 0.25 per hour
    lines = {line.get_label(): line for line in drawn[0].axes[0].get_lines()}
    assert lines["recommended (evaluation)"].get_xdata()[0] == pytest.approx(0.125)


def test_a_confusion_of_twelve_commands_is_whole_its_labels_apart_and_its_colour_said(tmp_path, drawn):
    labels = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    truth = np.repeat(np.arange(12), 12)
    report = classification_report(truth, np.roll(truth, 5), labels)
    plot_confusion(report, tmp_path / "confusion.png", "Commands (camera absent)")
    (fig,) = drawn
    ax, bar = fig.axes
    renderer = fig.kept_renderer
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert [t.get_text() for t in ticks] == labels
        assert _apart([t.get_window_extent(renderer) for t in ticks])
    assert "row" in bar.get_ylabel() and "count" in ax.get_title()  # normalised by row, the numbers counts
    _whole(fig)


def test_the_latency_histograms_say_what_both_axes_count(tmp_path, drawn):
    from edgesense.bench.report import plot_latency

    rng = np.random.default_rng(0)
    plot_latency({s: rng.gamma(2.0, 0.1, 200) for s in ("audio_frontend", "audio_encoder", "image_preprocess",
                                                       "image_encoder", "fusion")},
                 tmp_path / "latency.png", "Latency per stage (1 thread(s))")
    (fig,) = drawn
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(shown) == 5
    assert all(ax.get_xlabel() == "ms" and ax.get_ylabel() == "calls" for ax in shown)
    _whole(fig)


def test_the_latency_legend_gives_the_percentiles_as_the_report_does(tmp_path, drawn):
    """The legend said p95 3.980 ms where report.md's table said 3.979 (the report rounds to 4 digits first)."""
    from edgesense.bench.latency import latency_summary
    from edgesense.bench.report import plot_latency

    samples = {"audio_encoder": [3.97954] * 3}
    plot_latency(samples, tmp_path / "latency.png", "Latency per stage (1 thread(s))")
    in_table = f"{latency_summary(samples['audio_encoder'])['p50']:.3f}"  # report.md's latency table (_fmt)
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert in_table == "3.979" and legend[0] == f"p50 {in_table} ms"


def test_each_words_hit_rate_is_written_with_its_interval():
    from edgesense.bench.report import _per_word_line

    point = {"commands_stream": {"per_word_hit_rate": {"yes": 0.76, "no": 0.0, "go": 1.0}},
             "per_word_hit_rate_interval": {"yes": [0.6259, 0.857], "no": [0.0, 0.5615], "go": [0.3424, 1.0]}}
    assert _per_word_line(point) == ["Hit rate per word (95 % intervals): yes 0.76 (0.63–0.86), no 0.00 (0.00–0.56), "
                                     "go 1.00 (0.34–1.00)"]
    # a report written before the intervals: the rates alone, as it always read
    del point["per_word_hit_rate_interval"]
    assert _per_word_line(point) == ["Hit rate per word: yes 0.76, no 0.00, go 1.00"]
