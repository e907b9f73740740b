"""``edgesense demo``: a live camera+microphone window with an overlay.

The overlay (:func:`draw_overlay`, a pure function: frame in, new frame out) shows
the smoothed scene label and its confidence (top left), the last command (a
flashing banner for ``command_flash_ms``), the latest per-stage latencies (bottom
left) and an audio level meter (right edge).

Without a camera or a microphone the demo says so and plays the bundled sample
media (``samples/scene.mp4`` + ``samples/commands.wav``) instead. Without a display
(no ``DISPLAY``/``WAYLAND_DISPLAY``, or an OpenCV without GUI support such as
``opencv-python-headless``, whose ``cv2.imshow`` raises) it plays the samples as
fast as it can and writes the overlaid frames to ``--out`` (default ``demo.mp4``).
Events are printed as JSON Lines on stdout, as with ``edgesense run``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import cv2

from edgesense.app.overlay import OverlayOptions, OverlayView, _positive, draw_overlay
from edgesense.schema.validate import require

__all__ = ["display_available", "open_preview", "PreviewWindow", "VideoFileWriter", "SAMPLES_DIR", "add_arguments", "run"]


SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
SAMPLE_VIDEO = "scene.mp4"
SAMPLE_AUDIO = "commands.wav"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "firmware_configs" / "desktop.yaml"
DEFAULT_OUT = "demo.mp4"
OUT_FOURCC = "mp4v"
WINDOW_PROBE = "edgesense-probe"
QUIT_KEYS = (ord("q"), 27)  # q, Esc
WAIT_KEY_MS = 1


# --------------------------------------------------------------------------- display and file output


def display_available() -> tuple[bool, str]:
    """(True, "") when ``cv2.imshow`` can open a window here, else (False, why not)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY and WAYLAND_DISPLAY are not set)"
    try:
        cv2.namedWindow(WINDOW_PROBE, cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow(WINDOW_PROBE)
    except cv2.error:
        return False, "this OpenCV has no GUI support (e.g. opencv-python-headless): cv2.imshow is unavailable"
    return True, ""


def open_preview(title: str) -> "PreviewWindow":
    """A preview window (an ``on_frame`` hook), or RuntimeError saying why none can open here."""
    shown, why = display_available()
    if not shown:
        raise RuntimeError(f"preview window: {why}; run with --headless")
    return PreviewWindow(title=title)


class PreviewWindow:
    """An ``on_frame`` hook: shows each frame with the overlay; q or Esc stops the pipeline."""

    def __init__(self, *, title: str = "EdgeSense", options: OverlayOptions = OverlayOptions()) -> None:
        self.title = title
        self.options = options
        self.frames = 0

    def __call__(self, frame: Any, state: Any) -> bool:
        cv2.imshow(self.title, draw_overlay(frame.image, OverlayView.from_state(state), self.options))
        self.frames += 1
        return (cv2.waitKey(WAIT_KEY_MS) & 0xFF) not in QUIT_KEYS

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class VideoFileWriter:
    """An ``on_frame`` hook: writes each frame with the overlay to a video file (mp4v)."""

    def __init__(self, path: str | os.PathLike[str], *, fps: float,
                 options: OverlayOptions = OverlayOptions()) -> None:
        require(_positive(fps), "fps", "a positive number", fps)
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"{self.path}: the folder for the output video does not exist")
        self.fps = float(fps)
        self.options = options
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None

    def __call__(self, frame: Any, state: Any) -> None:
        image = draw_overlay(frame.image, OverlayView.from_state(state), self.options)
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*OUT_FOURCC), self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"{self.path}: OpenCV cannot write {OUT_FOURCC} video here")
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="YAML",
                        help="device config (default: firmware_configs/desktop.yaml)")
    parser.add_argument("--model", metavar="PATH", help="a .tflite (default: model.path in the config)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FILE",
                        help=f"without a display: write the overlaid sample video here (default: {DEFAULT_OUT})")
    parser.add_argument("--duration-s", type=float, metavar="N", help="stop after N seconds of media")


def _sample_paths() -> tuple[Path, Path]:
    video, audio = SAMPLES_DIR / SAMPLE_VIDEO, SAMPLES_DIR / SAMPLE_AUDIO
    for path in (video, audio):
        if not path.is_file():
            raise ValueError(f"{path}: sample media not found (run scripts/make_samples.py)")
    return video, audio


def _video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{path}: the video has no usable frame rate")
    return fps


def _say(message: str) -> None:
    print(f"edgesense demo: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from edgesense.loop.config import load_config
    from edgesense.loop.pipeline import Pipeline

    if args.duration_s is not None and not _positive(args.duration_s):
        raise ValueError(f"--duration-s: expected a positive number of seconds, got {args.duration_s!r}")
    config = load_config(args.config)
    has_display, why = display_available()
    pipeline = None
    if has_display:
        try:
            pipeline = Pipeline.from_config(config, model_path=args.model, events="-", mqtt=False,
                                            on_frame=PreviewWindow(title=f"EdgeSense ({config.device.name})"))
            _say("live camera and microphone; press q or Esc in the window to quit")
        except RuntimeError as exc:  # no camera or no microphone
            _say(f"{exc}; playing the bundled sample media instead")
    else:
        _say(f"{why}; playing the bundled sample media and writing the overlaid frames to {args.out}")
    writer = None
    if pipeline is None:
        video, audio = _sample_paths()
        if has_display:
            hook: Any = PreviewWindow(title="EdgeSense (sample media)")
        else:
            hook = writer = VideoFileWriter(args.out, fps=_video_fps(video))
        pipeline = Pipeline.from_config(config, model_path=args.model, video=video, audio=audio,
                                        fast=not has_display, events="-", mqtt=False, on_frame=hook)
    with pipeline:
        stats = pipeline.run(duration_s=args.duration_s)
    if writer is not None:
        _say(f"wrote {writer.frames} frames to {writer.path}")
    _say(stats.summary())
    return 0
