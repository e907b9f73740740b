"""``edgesense demo``: the overlay as a pure function, and the no-display fallback on the bundled samples."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgesense.app.demo as demo_mod
import edgesense.app.overlay as overlay_mod
from edgesense.app.cli import main
from edgesense.app.overlay import OverlayOptions, OverlayView, draw_overlay, overlay_regions

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def frame() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(60, 200, (480, 640, 3), dtype=np.uint8)


def region(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1)


def outside(mask: np.ndarray, boxes) -> np.ndarray:
    keep = np.ones(mask.shape, bool)
    for x0, y0, x1, y1 in boxes:
        keep[y0:y1, x0:x1] = False
    return mask & keep


def test_overlay_is_pure_and_draws_only_in_its_regions(frame):
    original = frame.copy()
    view = OverlayView(scene_label="forest", scene_score=0.91, command_label="stop", command_score=0.88,
                       command_age_ms=100.0, stage_ms={"audio_encoder": 1.25, "fusion": 0.1}, level_dbfs=-20.0)
    out = draw_overlay(frame, view)
    assert np.array_equal(frame, original)  # the input is not modified
    assert out.shape == frame.shape and out.dtype == np.uint8 and out is not frame
    regions = overlay_regions(frame.shape)
    diff = changed(out, frame)
    for name in ("scene", "command", "latency", "meter"):
        assert region(diff, regions[name]).mean() > 0.05, name  # every element drew something
    assert not outside(diff, regions.values()).any()  # and nothing else was touched


def test_level_meter_follows_the_audio_level(frame):
    meter = overlay_regions(frame.shape)["meter"]
    heights = []
    for level in (-80.0, -40.0, -6.0):
        out = region(draw_overlay(frame, OverlayView(level_dbfs=level)), meter)
        inner = out[1:-1, 2:-2]
        lit = np.any(inner != 0, axis=-1).any(axis=1)  # rows of the bar (the meter background is black)
        heights.append(int(lit.sum()))
    assert heights[0] == 0 and 0 < heights[1] < heights[2]
    assert heights[1] == pytest.approx(0.5 * (meter[3] - meter[1]), abs=4)  # -40 dBFS is half of -80..0
    loud = region(draw_overlay(frame, OverlayView(level_dbfs=-1.0)), meter)[-5, meter[2] - meter[0] - 5 - 2]
    assert tuple(loud) == overlay_mod.BGR_RED
    no_audio = region(draw_overlay(frame, OverlayView(level_dbfs=None)), meter)[1:-1, 2:-2]
    assert not no_audio.any()


def test_command_banner_flashes_then_disappears(frame):
    box = overlay_regions(frame.shape)["command"]
    options = OverlayOptions(command_flash_ms=1000.0, blink_period_ms=250.0)

    def banner(age_ms, label="yes"):
        view = OverlayView(command_label=label, command_score=0.9, command_age_ms=age_ms)
        return region(draw_overlay(frame, view, options), box)

    untouched = region(frame, box)
    assert np.array_equal(banner(None, None), untouched)  # no command yet
    on, off = banner(10.0), banner(300.0)
    assert not np.array_equal(on, untouched) and not np.array_equal(on, off)  # blinking
    assert tuple(on[2, 2]) == overlay_mod.BGR_FLASH_A and tuple(off[2, 2]) == overlay_mod.BGR_FLASH_B
    assert np.array_equal(banner(10.0), on)  # a pure function of its inputs
    assert np.array_equal(banner(1000.0), untouched)  # gone after command_flash_ms


def test_overlay_rejects_bad_input_and_options():
    with pytest.raises(ValueError, match="image"):
        draw_overlay(np.zeros((10, 10), np.uint8), OverlayView())
    with pytest.raises(ValueError, match="^command_flash_ms: expected"):
        OverlayOptions(command_flash_ms=0)
    with pytest.raises(ValueError, match="^meter_width_px: expected"):
        OverlayOptions(meter_width_px=1.5)


def test_display_detection_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, why = demo_mod.display_available()
    assert not ok and "DISPLAY" in why


def test_demo_without_display_writes_the_overlaid_sample_video(tiny_model_path, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out_path = tmp_path / "demo_mod.mp4"
    rc = main(["demo", "--model", str(tiny_model_path), "--out", str(out_path), "--duration-s", "3"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "no display" in err and "sample media" in err and str(out_path) in err
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all(e["type"] in ("command", "scene") for e in events)

    cap = cv2.VideoCapture(str(out_path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 31  # frames at 0, 100, ..., 3000 ms: all due by the end of 3 s of audio
    source = cv2.VideoCapture(str(ROOT / "samples" / "scene.mp4"))
    ok, first = source.read()
    source.release()
    x0, y0, x1, y1 = overlay_regions(first.shape)["meter"]
    meter_column = frames[0][y0 + 2:y1 - 2, (x0 + x1) // 2].astype(int)
    scene_column = first[y0 + 2:y1 - 2, (x0 + x1) // 2].astype(int)
    assert np.abs(meter_column - scene_column).mean() > 40  # the meter is drawn over the sky


def test_samples_are_small_and_described():
    sizes = {p.name: p.stat().st_size for p in (ROOT / "samples").iterdir() if p.is_file()}
    assert {"scene.mp4", "commands.wav", "commands.json", "scenes.json", "speech_commands.wav",
            "speech_commands.json", "README.md"} <= set(sizes)
    assert sum(sizes.values()) <= 2 * 1024 * 1024
    truth = json.loads((ROOT / "samples" / "commands.json").read_text())
    assert truth["sample_rate_hz"] == 16000 and len(truth["words"]) >= 4
    assert all(0 <= w["start_ms"] < w["end_ms"] <= truth["duration_ms"] for w in truth["words"])
    readme = (ROOT / "samples" / "README.md").read_text()
    assert "CC0" in readme and "CC BY 4.0" in readme
    real = json.loads((ROOT / "samples" / "speech_commands.json").read_text())
    assert all(f"`{w['speaker']}`" in readme for w in real["words"])  # every speaker attributed


def test_preview_without_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="preview window: no display .*--headless"):
        demo_mod.open_preview("test")
