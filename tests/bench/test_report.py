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
