"""``edgesense demo``: the overlay as a pure function, and the no-display fallback on the bundled samples."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from cli_run import edgesense, folder_files, only_line

import edgesense.app.demo as demo_mod
import edgesense.app.overlay as overlay_mod
from edgesense.app.cli import main
from edgesense.app.overlay import OverlayOptions, OverlayView, draw_overlay, overlay_regions
from edgesense.types import SceneEvent

ROOT = Path(__file__).resolve().parents[3]
NO_DISPLAY = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}


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
    for name in ("scene", "command", "latency", "meter", "meter_bar"):
        assert region(diff, regions[name]).mean() > 0.05, name  # every element drew something
    assert not outside(diff, regions.values()).any()  # and nothing else was touched


def test_level_meter_follows_the_audio_level(frame):
    meter = overlay_regions(frame.shape)["meter_bar"]
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


def bright_columns(image: np.ndarray) -> np.ndarray:
    """Columns holding white text (the panels darken the frame well below this)."""
    return np.nonzero(np.all(image > 170, axis=-1).any(axis=0))[0]


def test_level_meter_has_a_label_a_dbfs_scale_and_the_gate_marker(frame):
    regions = overlay_regions(frame.shape)
    x0, y0, _, y1 = regions["meter"]
    bx0, by0, bx1, by1 = regions["meter_bar"]
    scale_box = (x0, by0, bx0 - overlay_mod.TICK_LENGTH_PX - 1, by1)  # the labels, not the tick marks
    plain = draw_overlay(frame, OverlayView(level_dbfs=-30.0))
    # "dBFS" above the bar, and the labelled ticks of the scale (0, -20, ..., -80) left of it
    assert bright_columns(region(plain, (x0, y0, bx1, by0))).size > 0
    scale = region(plain, scale_box)
    text_rows = np.nonzero(np.all(scale > 170, axis=-1).any(axis=1))[0]
    bands = np.split(text_rows, np.nonzero(np.diff(text_rows) > 1)[0] + 1)
    assert len(bands) == 5  # one label per 20 dB from 0 to -80
    assert not np.any(np.all(region(plain, regions["meter"]) == overlay_mod.BGR_CYAN, axis=-1))  # no gate: no marker

    gated = draw_overlay(frame, OverlayView(level_dbfs=-30.0, gate_threshold_dbfs=-40.0))
    bar = region(gated, regions["meter_bar"])
    cyan_rows = np.nonzero(np.all(bar == overlay_mod.BGR_CYAN, axis=-1).any(axis=1))[0]
    assert cyan_rows.size and abs(cyan_rows.mean() - (by1 - by0) / 2) <= 2  # -40 dBFS: half way up

    closed = draw_overlay(frame, OverlayView(level_dbfs=-60.0, gate_threshold_dbfs=-40.0, gate_open=False))
    assert tuple(region(closed, regions["meter_bar"])[-3, (bx1 - bx0) // 2]) == overlay_mod.BGR_GREY  # gated: grey


def test_latency_values_are_right_aligned(frame):
    x0, y0, x1, y1 = overlay_regions(frame.shape)["latency"]
    stages = {"audio_frontend": 0.05, "audio_encoder": 1.25, "image_preprocess": 0.3, "image_encoder": 12.5,
              "fusion": 0.1}
    out = region(draw_overlay(np.zeros_like(frame), OverlayView(stage_ms=stages)), (x0, y0, x1, y1))
    lh = OverlayOptions().line_height_px
    right_edges = []
    for row in range(2, 2 + len(stages)):  # row 1 is the title
        band = out[(row - 1) * lh + 4:row * lh + 2, (x1 - x0) // 2:]
        right_edges.append(bright_columns(band).max())
    assert max(right_edges) - min(right_edges) <= 2  # one column, whatever the number of digits


def test_scene_panel_shows_the_events_label_and_the_smoothed_top_only_when_it_differs(frame):
    event = SceneEvent(label="sea", score=0.9, t_ms=1000.0, wall_time=0.0)
    state = SimpleNamespace(last_command=None, last_scene=event, scene_label="forest", scene_score=0.6,
                            command_age_ms=lambda: None, stage_ms={}, level_dbfs=None, gate_threshold_dbfs=None,
                            gate_open=True)
    view = OverlayView.from_state(state)
    assert (view.scene_label, view.smoothed_label) == ("sea", "forest")  # the event's label leads
    box = overlay_regions(frame.shape)["scene"]
    lh = OverlayOptions().line_height_px
    second_line = (box[0], box[1] + lh + 4, box[2], box[3])
    differ = region(draw_overlay(frame, view), second_line)
    agree = region(draw_overlay(frame, OverlayView(scene_label="sea", smoothed_label="sea")), second_line)
    assert np.any(np.all(differ == overlay_mod.BGR_GREY, axis=-1) | np.all(differ > 120, axis=-1))
    assert not np.any(np.all(agree > 120, axis=-1))  # the same label is not repeated


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


def test_long_labels_are_cut_to_their_panels_and_keep_their_scores(frame):
    """A place name of the user's (``edgesense record --label`` takes up to 230 bytes) used to run out of its
    panel over the video and the level meter."""
    view = OverlayView(scene_label="my_grandmothers_living_room", scene_score=0.91,
                       smoothed_label="the_kitchen_downstairs_on_the_left", smoothed_score=0.5,
                       command_label="switch_on_the_lights_please", command_score=0.88, command_age_ms=10.0)
    for shape in ((480, 640, 3), (240, 320, 3)):
        image = frame[:shape[0], :shape[1]]
        diff = changed(draw_overlay(image, view), image)
        assert not outside(diff, overlay_regions(shape).values()).any(), shape
    assert overlay_mod._fit("my_grandmothers_living_room", 150, 0.55, tail=" 0.91").endswith("... 0.91")
    assert overlay_mod._fit("sea", 150, 0.55, tail=" 0.91") == "sea 0.91"  # what fits is left as it is


def test_place_names_with_accents_are_drawn_without_them_not_as_one_mark_per_byte(frame):
    """OpenCV's Hershey fonts have ASCII only: ``küche`` (a label ``edgesense record`` takes) was drawn
    ``k??che``, one mark per UTF-8 byte; it is drawn ``kuche``, and a script without a Latin form one ``?``
    a character."""
    assert overlay_mod.drawable("küche") == "kuche" and overlay_mod.drawable("Café Ñandú") == "Cafe Nandu"
    assert overlay_mod.drawable("厨房") == "??" and overlay_mod.drawable("sea") == "sea"
    # letters Unicode does not decompose were one "?" each: stra?e, ?r?, ?odz
    assert [overlay_mod.drawable(name) for name in ("straße", "Ærø", "Łódź", "Þórshöfn")] == [
        "strasse", "AEro", "Lodz", "Thorshofn"]
    view = OverlayView(scene_label="küche", scene_score=0.9)
    assert np.array_equal(draw_overlay(frame, view), draw_overlay(frame, OverlayView(scene_label="kuche",
                                                                                   scene_score=0.9)))


@pytest.mark.parametrize("shape", [(36, 100, 3), (36, 36, 3), (120, 160, 3), (8, 8, 3), (1, 1, 3)])
def test_a_tiny_frame_gets_a_clipped_overlay_not_an_error(shape):
    """A 36-row frame (the meter's bar has no height) used to raise ZeroDivisionError; the latency panel of
    one shorter than it (its box starts above the frame) darkened the frame's bottom rows instead (a negative
    index wraps round)."""
    image = np.full(shape, 150, np.uint8)
    view = OverlayView(scene_label="sea", scene_score=0.9, level_dbfs=-20.0, gate_threshold_dbfs=-50.0,
                       stage_ms={"fusion": 0.1})
    out = draw_overlay(image, view)
    assert out.shape == image.shape
    x0, y0, x1, y1 = overlay_regions(shape)["latency"]
    if y0 < 0 < y1 and x1 > x0 + 2:  # the panel reaches the top row: the frame is dark there under it
        assert np.median(out[0, max(0, x0):x1]) < 100


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
    assert "no display" in err and "set DISPLAY" in err and "sample media" in err and str(out_path) in err
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
    x0, y0, x1, y1 = overlay_regions(first.shape)["meter_bar"]
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
    with pytest.raises(RuntimeError, match="preview window: no display .*set DISPLAY.*--headless"):
        demo_mod.open_preview("test")


# --------------------------------------------------------------------------- what a user sees (subprocess)


def test_demo_without_a_window_writes_to_the_user_cache_not_the_current_folder(tmp_path):
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    proc = edgesense("demo", "--duration-s", "2", cwd=cwd, env={**NO_DISPLAY, "XDG_CACHE_HOME": str(cache)})
    assert proc.returncode == 0, proc.stderr
    written = cache / "edgesense" / "demo.mp4"
    assert f"writing the overlaid frames to {written}" in proc.stderr and f"to {written}" in proc.stderr
    assert "set DISPLAY" in proc.stderr  # what to set for the window
    assert written.stat().st_size > 0 and folder_files(cwd) == []  # nothing in the current folder
    assert [json.loads(line)["type"] for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("variable", ["XDG_CACHE_HOME", "HOME"])
def test_a_cache_folder_the_demo_cannot_write_in_names_the_variable_and_the_way_out(tmp_path, variable):
    """A service user's or a read-only home (here a file where the folder goes, which root cannot write past
    either): the demo said only ``[Errno 20] Not a directory: '.../edgesense'``, naming neither the variable
    that chose the folder nor ``--out``."""
    in_the_way = tmp_path / "not a folder é"
    in_the_way.write_text("mine")
    env = {**NO_DISPLAY, variable: str(in_the_way)}
    if variable == "HOME":
        env["XDG_CACHE_HOME"] = None
    proc = edgesense("demo", "--duration-s", "1", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    said, line = proc.stderr.strip().splitlines()  # why there is no window, then the error
    assert said.startswith("edgesense demo: no window: ") and line.startswith("edgesense: error: "), proc.stderr
    assert f"{variable}: expected a folder the demo can write its video in" in line, line
    assert f"got {variable}={in_the_way}: cannot make or write in {in_the_way}" in line
    assert line.endswith(f"set {variable} to a writable folder, or pass --out FILE.mp4")
    assert in_the_way.read_text() == "mine"


def test_with_stderr_closed_the_demos_messages_never_join_the_events_on_stdout(tmp_path):
    """``edgesense demo 2>&-``: print(file=sys.stderr) writes to stdout when stderr is closed, so "no window",
    "playing ..." and the summary were printed among the JSON Lines events."""
    argv = [sys.executable, "-m", "edgesense.app.cli", "demo", "--duration-s", "2", "--out", str(tmp_path / "d.mp4")]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2), timeout=300,
                          env={**os.environ, **NO_DISPLAY}, check=False)
    assert proc.returncode == 0 and proc.stdout.strip()
    assert all(json.loads(line)["type"] in ("command", "scene") for line in proc.stdout.splitlines()), proc.stdout
    assert (tmp_path / "d.mp4").stat().st_size > 0


def test_with_stdout_closed_the_demo_still_writes_its_video(tmp_path):
    """``edgesense demo >&-`` (a launcher that closes stdout): it refused to start, saying "name a file instead",
    which the demo has no flag for; the events have nowhere to go, the video (or the window) is still made."""
    out = tmp_path / "d.mp4"
    argv = [sys.executable, "-m", "edgesense.app.cli", "demo", "--duration-s", "2", "--out", str(out)]
    proc = subprocess.run(argv, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1), timeout=300,
                          env={**os.environ, **NO_DISPLAY}, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"frames to {out}" in proc.stderr.splitlines()[-1] and cv2.VideoCapture(str(out)).read()[0]


def test_a_relative_xdg_cache_home_is_ignored_not_a_video_in_the_current_folder(tmp_path):
    # XDG_CACHE_HOME=.cache wrote ./.cache/edgesense/demo.mp4 wherever the demo was started.
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    proc = edgesense("demo", "--duration-s", "1", cwd=cwd, env={**NO_DISPLAY, "XDG_CACHE_HOME": ".cache",
                                                                  "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert "XDG_CACHE_HOME=.cache: expected an absolute path; ignored" in proc.stderr
    assert (home / ".cache" / "edgesense" / "demo.mp4").stat().st_size > 0 and folder_files(cwd) == []


def test_demo_out_must_be_an_mp4_before_anything_opens(tmp_path):
    proc = edgesense("demo", "--out", "x.txt", cwd=tmp_path, env=NO_DISPLAY)
    line = only_line(proc)  # no OpenCV assertion dump before it
    assert "--out x.txt: expected a .mp4 file" in line and "'.txt'" in line
    assert folder_files(tmp_path) == []


def test_an_out_name_that_is_not_utf8_is_one_line_before_anything_opens(tmp_path):
    """``--out d\\xe9mo.mp4`` (a Latin-1 name) played the samples, then OpenCV's writer crashed the demo with a
    segmentation fault (exit 139, no message); in a C locale without UTF-8 mode a UTF-8 ``démo ü.mp4`` did too."""
    proc = edgesense("demo", "--out", os.fsdecode(b"d\xe9mo.mp4"), "--duration-s", "1", cwd=tmp_path,
                     env=NO_DISPLAY)
    line = only_line(proc)
    assert "--out d" in line and "expected a .mp4 file whose name is UTF-8" in line and "(d\\xe9mo.mp4)" in line
    assert folder_files(tmp_path) == []
    proc = edgesense("demo", "--out", "démo ü.mp4", "--duration-s", "1", cwd=tmp_path,
                     env={**NO_DISPLAY, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": None})
    assert proc.returncode == 0, proc.stderr
    assert folder_files(tmp_path) == ["démo ü.mp4"]


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs a folder no user may write in (Linux's /sys)")
def test_out_in_a_folder_the_demo_cannot_write_in_is_one_line_before_anything_opens(tmp_path):
    """It used to load the model, say "writing the overlaid frames to /sys/x.mp4", then fail at the first frame with
    "OpenCV cannot write mp4v video here", naming neither --out nor why."""
    proc = edgesense("demo", "--out", "/sys/x.mp4", "--duration-s", "1", cwd=tmp_path, env=NO_DISPLAY)
    line = only_line(proc)
    assert line == ("edgesense: error: --out /sys/x.mp4: expected a folder the demo can write the video in, got /sys "
                    "(Permission denied)"), line
    assert folder_files(tmp_path) == []


def test_demo_never_replaces_a_users_file_unasked(tmp_path):
    mine = tmp_path / "holiday.mp4"
    mine.write_bytes(b"my own video")
    proc = edgesense("demo", "--out", "holiday.mp4", "--duration-s", "1", cwd=tmp_path, env=NO_DISPLAY)
    line = only_line(proc)
    assert "holiday.mp4: exists; pass --force to replace it" in line and mine.read_bytes() == b"my own video"
    proc = edgesense("demo", "--out", "holiday.mp4", "--duration-s", "1", "--force", cwd=tmp_path, env=NO_DISPLAY)
    assert proc.returncode == 0, proc.stderr
    assert mine.read_bytes() != b"my own video" and cv2.VideoCapture(str(mine)).read()[0]


def test_a_full_disk_is_an_error_naming_the_video_not_a_report_of_frames_written(tmp_path):
    """A full disk, as a real limit on the size of a file (RLIMIT_FSIZE: writes past it fail with EFBIG).
    OpenCV's video writer reports no failed write: the demo used to say "wrote 41 frames to full.mp4" and
    exit 0 over a truncated file no player opens, after a screenful of FFmpeg warnings."""
    resource = pytest.importorskip("resource")
    limit_bytes = 50_000  # a few frames of the sample video

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    out = tmp_path / "full.mp4"
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "demo", "--out", str(out), "--duration-s", "4"],
                          capture_output=True, text=True, preexec_fn=limit, env={**os.environ, **NO_DISPLAY},
                          timeout=300, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.startswith("edgesense: error: ") and f"{out}: the overlaid video is incomplete" in line, line
    assert "is the disk full?" in line and "wrote " not in proc.stderr
    assert "Failed to write frame" not in proc.stderr  # the one line says it, not FFmpeg per frame
    # the truncated video is gone (it was left, and the next run's --out needed --force), no hidden one either
    assert line.endswith("(the incomplete video is removed; the file is left as it was)") and not out.exists()
    assert list(tmp_path.iterdir()) == []
    # with --force over a video of the user's, that video stays whole (it was truncated at the first frame)
    out.write_bytes(b"my own video")
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "demo", "--out", str(out), "--duration-s", "4",
                           "--force"], capture_output=True, text=True, preexec_fn=limit,
                          env={**os.environ, **NO_DISPLAY}, timeout=300, check=False)
    assert proc.returncode == 2 and "the overlaid video is incomplete" in proc.stderr, proc.stderr
    assert out.read_bytes() == b"my own video" and [p.name for p in tmp_path.iterdir()] == ["full.mp4"]


@pytest.mark.skipif(demo_mod._opencv_gui().upper() != "NONE", reason="this OpenCV has GUI support")
def test_headless_opencv_says_exactly_what_to_install_for_the_window(tmp_path):
    proc = edgesense("demo", "--duration-s", "1", cwd=tmp_path,
                     env={"DISPLAY": ":0", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    why = next(line for line in proc.stderr.splitlines() if "no window" in line)
    assert "opencv-python-headless" in why and "has no GUI support" in why
    assert "pip uninstall -y opencv-python-headless" in why and "pip install 'opencv-python==" in why


def _gui_opencv() -> bool:
    return demo_mod._opencv_gui().upper() not in ("NONE", "UNKNOWN")


@pytest.mark.skipif(shutil.which("xvfb-run") is None or not _gui_opencv(),
                    reason="needs xvfb-run and a GUI OpenCV (opencv-python; GUI=1 scripts/setup.sh)")
def test_demo_opens_its_window_on_a_display(tmp_path):
    """Under a virtual X server, with the GUI OpenCV, the demo shows its window (the sample media,
    as this machine has no camera or microphone) and writes no video."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    import subprocess
    import sys

    proc = subprocess.run(["xvfb-run", "-a", sys.executable, "-m", "edgesense.app.cli", "demo", "--duration-s", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "no window" not in proc.stderr and "writing the overlaid frames" not in proc.stderr
    assert "press q" in proc.stderr or "playing the bundled sample media instead" in proc.stderr
    assert not (tmp_path / "cache" / "edgesense" / "demo.mp4").exists()


# --------------------------------------------------------------------------- the window (its display faked)


class FakeWindow:
    """cv2.imshow / waitKey / getWindowProperty of a display: the user presses ``key`` or closes the window
    (its title bar's button) after ``after`` frames; a closed window reports itself not visible until
    cv2.imshow opens a new one, as the GTK and Qt backends do."""

    def __init__(self, monkeypatch, *, after: int, key: int | None) -> None:
        self.after, self.key, self.shown, self.open = after, key, 0, False
        self.images: list[np.ndarray] = []
        self.created: list[tuple[str, int]] = []  # namedWindow's (title, flags)
        self.sizes: list[tuple[int, int]] = []  # resizeWindow's (width, height)
        monkeypatch.setattr(demo_mod, "display_available", lambda: (True, ""))
        monkeypatch.setattr(cv2, "namedWindow", lambda title, flags=cv2.WINDOW_AUTOSIZE: self.created.append(
            (title, flags)))
        monkeypatch.setattr(cv2, "resizeWindow", lambda title, w, h: self.sizes.append((w, h)))
        monkeypatch.setattr(cv2, "imshow", self.imshow)
        monkeypatch.setattr(cv2, "waitKey", self.wait_key)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: 1.0 if self.open else 0.0)
        monkeypatch.setattr(cv2, "destroyWindow", lambda title: None)

    def imshow(self, title, image):
        self.shown += 1
        if len(self.images) < 2:
            self.images.append(image.copy())
        self.open = True

    def wait_key(self, delay_ms):
        if self.shown == self.after:
            if self.key is None:
                self.open = False  # closed with the mouse: no key comes
            else:
                return self.key
        return -1


@pytest.mark.parametrize("key", [ord("q"), 27, None], ids=["q", "esc", "window-closed"])
def test_pressing_q_or_closing_the_window_ends_the_demo_cleanly(tmp_path, monkeypatch, capsys, key):
    """Without it, a closed window came back with the next frame and the demo ran on to the end of the media
    (for ever on a live camera)."""
    config = tmp_path / "absent.yaml"  # devices that exist nowhere: the sample media in the window
    config.write_text(f"device: {{name: t}}\nmodel: {{path: {ROOT / 'models' / 'edgesense.tflite'}}}\n"
                      "camera: {source: /dev/video-edgesense-absent}\naudio: {device: edgesense-absent-microphone}\n",
                      encoding="utf-8")
    window = FakeWindow(monkeypatch, after=5, key=key)
    assert main(["demo", "--config", str(config), "--duration-s", "8"]) == 0
    out, err = capsys.readouterr()
    assert window.shown == 5, "no frame after the user quit"
    assert "playing the bundled sample media instead" in err and "events:" in err  # the summary
    assert all(json.loads(line)["type"] in ("command", "scene") for line in out.splitlines())


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["720p", "1080p"])
def test_a_720p_or_1080p_webcam_frame_opens_a_window_that_fits_the_screen_and_can_be_resized(monkeypatch, size):
    """cv2.imshow alone opened a WINDOW_AUTOSIZE window: a laptop webcam's 1080p frame made a 1920x1080 window, larger
    than the laptop's screen (the level meter and the latency panel off it), that the user could not resize, the
    overlay's text a third of its size once shrunk."""
    from edgesense.loop.pipeline import PipelineState
    from edgesense.sources.base import VideoFrame

    window = FakeWindow(monkeypatch, after=99, key=None)
    width, height = size
    image = np.random.default_rng(3).integers(60, 200, (height, width, 3), dtype=np.uint8)
    state = PipelineState(t_ms=0.0, scene_label="sea", scene_score=0.9, last_command=None, level_dbfs=-20.0,
                          gate_open=True, stage_ms={"fusion": 0.2})
    preview = demo_mod.PreviewWindow(title="EdgeSense (t)")
    assert preview(VideoFrame(image=image, t_ms=0.0), state) and preview(VideoFrame(image=image, t_ms=40.0), state)
    assert len(window.created) == 1, "one window, made once"
    title, flags = window.created[0]
    # resizable, its aspect kept (WINDOW_NORMAL and WINDOW_KEEPRATIO are the flags' zero bits)
    assert title == "EdgeSense (t)" and not flags & cv2.WINDOW_AUTOSIZE and not flags & cv2.WINDOW_FREERATIO
    shown = window.images[0]
    h, w = shown.shape[:2]
    assert w <= demo_mod.WINDOW_MAX_W_PX and h <= demo_mod.WINDOW_MAX_H_PX and window.sizes == [(w, h)]
    assert abs(w / h - width / height) < 0.01  # its aspect kept
    expected = draw_overlay(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
                            OverlayView.from_state(state))  # the overlay drawn at the size shown, readable
    assert np.array_equal(shown, expected)
    small = np.zeros((480, 640, 3), np.uint8)  # a frame that fits is shown as it is
    assert preview(VideoFrame(image=small, t_ms=80.0), state) and window.shown == 3


def test_out_with_a_window_is_said_not_to_be_written_not_silently_ignored(tmp_path, monkeypatch, capsys):
    """--out is for runs without a display; with one the demo wrote nothing there and said nothing of it."""
    config = tmp_path / "absent.yaml"
    config.write_text(f"device: {{name: t}}\nmodel: {{path: {ROOT / 'models' / 'edgesense.tflite'}}}\n"
                      "camera: {source: /dev/video-edgesense-absent}\naudio: {device: edgesense-absent-microphone}\n",
                      encoding="utf-8")
    FakeWindow(monkeypatch, after=3, key=ord("q"))
    out = tmp_path / "overlaid.mp4"
    assert main(["demo", "--config", str(config), "--out", str(out), "--duration-s", "2"]) == 0
    err = capsys.readouterr().err
    assert f"--out {out}: not written: the overlay is shown in the window" in err and not out.exists()


# --------------------------------------------------------------------------- a speech-only model


@pytest.fixture(scope="module")
def speech_only_config(tmp_path_factory) -> Path:
    """A config with devices that exist nowhere and the bundled model as a speech-only recipe's file (its
    image encoder marked as calibrated on stand-ins: ``EdgeModel.untrained_encoders``)."""
    pytest.importorskip("tensorflow")
    from edgesense.quantize.convert import split_tflite_parts, write_merged
    from edgesense.runtime.model import EdgeModel

    folder = tmp_path_factory.mktemp("speech_only")
    bundled = ROOT / "models" / "edgesense.tflite"
    metadata = EdgeModel.load(bundled).metadata
    metadata["quantization"]["stand_in_samples"] = {"encode_image": 32}
    write_merged(split_tflite_parts(bundled.read_bytes()), metadata, folder / "speech.tflite")
    assert EdgeModel.load(folder / "speech.tflite").untrained_encoders == {"encode_image"}
    config = folder / "speech.yaml"
    config.write_text("device: {name: t}\nmodel: {path: speech.tflite}\ncamera: {source: /dev/video-edgesense-absent}"
                      "\naudio: {device: edgesense-absent-microphone}\n", encoding="utf-8")
    return config


def test_a_speech_only_model_without_a_window_writes_no_video_and_says_so(speech_only_config, tmp_path,
                                                                          monkeypatch, capsys):
    """The video is not read (the model never learned photos): the demo used to announce the overlaid
    video, then report "wrote 0 frames to" a file it never wrote (an earlier run's, when there was one)."""
    monkeypatch.setattr(demo_mod, "display_available", lambda: (False, "no display (test)"))
    out = tmp_path / "overlaid.mp4"
    assert main(["demo", "--config", str(speech_only_config), "--out", str(out), "--duration-s", "4"]) == 0
    stdout, err = capsys.readouterr()
    assert "writing the overlaid frames" not in err and "wrote 0 frames" not in err
    assert f"no camera frames to draw on (the model was trained without photos): no video is written to {out}" in err
    assert not out.exists() and "events:" in err
    assert [json.loads(line)["type"] for line in stdout.splitlines()]  # the commands it heard


def test_a_speech_only_model_with_a_display_says_there_is_no_window_and_ctrl_c_ends_it_cleanly(
        speech_only_config, monkeypatch, capsys):
    """No frame ever comes, so no window opens to press q in: the demo says so, and Ctrl-C (SIGINT) stops it
    as q would, with the summary and exit 0 (it used to run silently without a window, and Ctrl-C ended it
    with exit 130 and no summary)."""
    import signal
    import threading
    import time

    window = FakeWindow(monkeypatch, after=5, key=ord("q"))
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    ctrl_c.start()
    try:
        rc = main(["demo", "--config", str(speech_only_config), "--duration-s", "30"])  # sample media, real time
    finally:
        ctrl_c.cancel()
    _, err = capsys.readouterr()
    assert rc == 0 and window.shown == 0
    assert "listening to the bundled sample media's sound only" in err and "no window opens; Ctrl-C stops" in err
    assert "events:" in err and time.monotonic() - start < 15
