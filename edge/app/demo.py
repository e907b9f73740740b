"""``edgesense demo``: a live camera+microphone window with an overlay.

The overlay (:func:`draw_overlay`, a pure function: frame in, new frame out) shows the
scene the events say (top left; the smoothed top scene under it while it differs), the
last command (a flashing banner for ``command_flash_ms``), the latest per-stage latencies
(bottom left) and the audio level in dBFS with its scale and the energy gate's threshold
(right edge).

Without a camera or a microphone the demo says so and plays the bundled sample media
(``samples/scene.mp4`` + ``samples/speech_commands.wav``, real speakers, shipped in the package)
instead.
Without a window (no ``DISPLAY``/``WAYLAND_DISPLAY``, or an OpenCV without GUI support
such as ``opencv-python-headless``) it says in one line what to install or set, plays the
samples as fast as it can and writes the overlaid frames to ``--out`` (default
``demo.mp4`` in the per-user cache folder, ``~/.cache/edgesense/``). Events are printed as
JSON Lines on stdout, as with ``edgesense run`` (nowhere when stdout is closed). q or Esc in the
window, closing it, or Ctrl-C ends the demo with its summary. With no camera frames (a speech-only
model, or a config whose camera is disabled) there is nothing to draw on: it says so, and listens only.

OpenCV, numpy and the overlay are imported where they are used, not with this module: ``edgesense demo --help`` does
not wait for them (seconds on a Raspberry Pi).
"""

from __future__ import annotations

import argparse
import errno
import functools
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesense.app.cli import file_argument, path_argument, say
from edgesense.schema.validate import is_positive, require
from edgesense.shipped import SAMPLES, config_argument, shipped_config, shipped_path

if TYPE_CHECKING:
    from edgesense.app.overlay import OverlayOptions

__all__ = ["display_available", "open_preview", "PreviewWindow", "VideoFileWriter", "default_out", "add_arguments",
           "run"]


SAMPLE_VIDEO = "scene.mp4"
SAMPLE_AUDIO = "speech_commands.wav"
DEFAULT_CONFIG = "desktop"
DEFAULT_OUT_NAME = "demo.mp4"
OUT_FOURCC = "mp4v"
OUT_SUFFIXES = (".mp4",)  #: what the mp4v writer can write
WINDOW_PROBE_TIMEOUT_S = 15.0
QUIT_KEYS = (ord("q"), 27)  # q, Esc
#: A frame larger than this (a webcam's 720p or 1080p) is shown scaled down to fit, the overlay drawn at that size:
#: it opens whole on a 1366x768 laptop screen (title bar and panels included), its text readable.
WINDOW_MAX_W_PX = 1280
WINDOW_MAX_H_PX = 640
#: A window the user can resize (the image scaled to it, its aspect kept), without Qt's toolbar and status bar
#: (``cv2.WINDOW_*``); ``cv2.imshow`` alone opens a WINDOW_AUTOSIZE one: the frame's own size, never resizable.
WINDOW_FLAG_NAMES = ("WINDOW_NORMAL", "WINDOW_KEEPRATIO", "WINDOW_GUI_NORMAL")
WAIT_KEY_MS = 1
HEADLESS_OPENCV = "opencv-python-headless"
GUI_OPENCV = "opencv-python"
#: Qt (the GUI of opencv-python) warns about fonts it does not ship; our overlay needs none.
QT_QUIET = {"QT_LOGGING_RULES": "default.warning=false"}
#: A child process opens (and closes) a window: a GUI OpenCV aborts the whole process when
#: the display cannot be reached, so the probe must not run in ours.
WINDOW_PROBE = ("import cv2, numpy; cv2.namedWindow('edgesense-probe', cv2.WINDOW_AUTOSIZE); "
                "cv2.imshow('edgesense-probe', numpy.zeros((8, 8, 3), numpy.uint8)); cv2.waitKey(1); "
                "cv2.destroyAllWindows()")


# --------------------------------------------------------------------------- display and file output


def _opencv_gui() -> str:
    """The GUI backend this OpenCV was built with (``NONE`` for the headless wheels)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _installed_version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def gui_install_hint() -> str:
    """The commands that replace the headless OpenCV of this environment with the GUI build."""
    pip = f"{sys.executable} -m pip"
    headless = _installed_version(HEADLESS_OPENCV)
    pin = f"=={headless}" if headless else ""
    remove = f"{pip} uninstall -y {HEADLESS_OPENCV} && " if headless else ""
    return (f"{remove}{pip} install '{GUI_OPENCV}{pin}' (in a checkout, GUI=1 scripts/setup.sh does it; "
            f"reinstalling EdgeSense brings the headless build back)")


@functools.lru_cache(maxsize=1)
def _probe_window() -> tuple[bool, str]:
    env = {**os.environ, **QT_QUIET}
    try:
        proc = subprocess.run([sys.executable, "-c", WINDOW_PROBE], capture_output=True, text=True, env=env,
                              timeout=WINDOW_PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False, f"opening a test window took more than {WINDOW_PROBE_TIMEOUT_S:g} s"
    if proc.returncode == 0:
        return True, ""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return False, lines[0] if lines else f"the test window's process exited with {proc.returncode}"


def display_available() -> tuple[bool, str]:
    """(True, "") when ``cv2.imshow`` can open a window here, else (False, why not and what to do)."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, ("no display (DISPLAY and WAYLAND_DISPLAY are not set): run it in a desktop session, "
                       "or set DISPLAY (e.g. DISPLAY=:0 on the machine's own screen, ssh -X from another)")
    gui = _opencv_gui()
    if gui.upper() == "NONE":
        name = HEADLESS_OPENCV if _installed_version(HEADLESS_OPENCV) else "this OpenCV"
        return False, f"{name} {cv2.__version__} has no GUI support; for the window: {gui_install_hint()}"
    shown, why = _probe_window()
    if not shown:
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        return False, (f"OpenCV ({gui}) cannot open a window on display {where!r} ({why}): check that the "
                       f"display is running and this user may use it (xhost), or set DISPLAY")
    return True, ""


def open_preview(title: str) -> "PreviewWindow":
    """A preview window (an ``on_frame`` hook), or RuntimeError saying why none can open here."""
    shown, why = display_available()
    if not shown:
        raise RuntimeError(f"preview window: {why}; or run with --headless")
    return PreviewWindow(title=title)


def fit_to_window(image: Any) -> Any:
    """``image`` scaled down (area-averaged, its aspect kept) to at most ``WINDOW_MAX_W_PX`` x ``WINDOW_MAX_H_PX``;
    ``image`` itself when it fits."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, WINDOW_MAX_W_PX / w, WINDOW_MAX_H_PX / h)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class PreviewWindow:
    """An ``on_frame`` hook: shows each frame with the overlay in a window the user can resize (a frame larger than
    ``WINDOW_MAX_W_PX`` x ``WINDOW_MAX_H_PX`` scaled down to fit); q or Esc, or closing the window, stops the
    pipeline."""

    def __init__(self, *, title: str = "EdgeSense", options: OverlayOptions | None = None) -> None:
        from edgesense.app.overlay import OverlayOptions

        self.title = title
        self.options = OverlayOptions() if options is None else options
        self.frames = 0
        self._seen_open = False  # the window was reported visible once (some backends never report it)
        self._opened = False  # namedWindow was called
        for key, value in QT_QUIET.items():
            os.environ.setdefault(key, value)

    def __call__(self, frame: Any, state: Any) -> bool:
        from edgesense.app.overlay import OverlayView, draw_overlay

        return self.show(draw_overlay(fit_to_window(frame.image), OverlayView.from_state(state), self.options))

    def show(self, image: Any) -> bool:
        """Show a BGR image (scaled down to fit, :func:`fit_to_window`); False once q or Esc was pressed or the
        window was closed."""
        import cv2

        image = fit_to_window(image)
        if not self._opened:
            flags = 0
            for name in WINDOW_FLAG_NAMES:
                flags |= getattr(cv2, name)
            cv2.namedWindow(self.title, flags)
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])  # WINDOW_NORMAL: not the image's size
            self._opened = True
        cv2.imshow(self.title, image)
        self.frames += 1
        pressed = cv2.waitKey(WAIT_KEY_MS) & 0xFF
        return pressed not in QUIT_KEYS and not self.closed_by_user()

    def closed_by_user(self) -> bool:
        """Whether the user closed the window (its title bar's button): ``cv2.imshow`` would quietly open a
        new one for the next frame, and the window could never be quit that way."""
        import cv2

        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:  # no such window any more (some backends)
            visible = -1.0
        if visible >= 1:
            self._seen_open = True
            return False
        return self._seen_open

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class VideoFileWriter:
    """An ``on_frame`` hook: writes each frame with the overlay to a video file (mp4v); an existing
    file only when ``replace``. The frames go to a hidden file beside it, which :meth:`check` puts in its place
    once it reads back whole: an interrupted or failed demo, or two at once, never leave a video cut short
    there, nor truncate the one that was."""

    def __init__(self, path: str | os.PathLike[str], *, fps: float, replace: bool = False,
                 options: OverlayOptions | None = None) -> None:
        from edgesense.app.overlay import OverlayOptions

        require(is_positive(fps), "fps", "a positive number", fps)
        self.path = check_out_path(path, replace=replace)
        self.fps = float(fps)
        self.options = OverlayOptions() if options is None else options
        self.frames = 0
        self._writer: Any = None  # a cv2.VideoWriter once the first frame came
        # the same suffix: FFmpeg picks its container by the file's extension
        self._partial = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")

    def __call__(self, frame: Any, state: Any) -> None:
        import cv2

        from edgesense.app.overlay import OverlayView, draw_overlay
        from edgesense.sources.base import opencv_path, quiet_opencv

        image = draw_overlay(frame.image, OverlayView.from_state(state), self.options)
        if self._writer is None:
            h, w = image.shape[:2]
            with quiet_opencv():
                # VideoWriter_fourcc: every OpenCV since 3 has it (OpenCV's stubs name only VideoWriter.fourcc)
                fourcc = cv2.VideoWriter_fourcc(*OUT_FOURCC)  # type: ignore[attr-defined]
                self._writer = cv2.VideoWriter(opencv_path(self._partial, "a video"), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"{self.path}: OpenCV cannot write {OUT_FOURCC} video here")
        with quiet_opencv():  # a failed write (a full disk) is said once, by check(), not per frame
            self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        from edgesense.sources.base import quiet_opencv

        if self._writer is not None:
            with quiet_opencv():
                self._writer.release()
            self._writer = None

    def check(self) -> None:
        """Put the video in its place if it reads back with every frame written; else RuntimeError naming the
        file (OpenCV's writer reports no failed write: on a full disk it leaves a truncated file no player opens),
        the truncated one removed and the file that was there left as it was."""
        import cv2

        from edgesense.sources.base import opencv_path, quiet_opencv

        if not self.frames:
            self.discard()
            return
        with quiet_opencv():
            cap = cv2.VideoCapture(opencv_path(self._partial, "a video"))
            try:
                readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            finally:
                cap.release()
        if readable < self.frames:
            self.discard()
            raise RuntimeError(f"{self.path}: the overlaid video is incomplete ({max(readable, 0)} of {self.frames} "
                               "frames can be read back): OpenCV could not write it; is the disk full? (the "
                               "incomplete video is removed; the file is left as it was)")
        os.replace(self._partial, self.path)

    def discard(self) -> None:
        """Remove what :meth:`check` did not put in place (a demo that failed or was stopped before it)."""
        self.close()
        self._partial.unlink(missing_ok=True)


def check_out_path(path: str | os.PathLike[str], *, replace: bool = False) -> Path:
    """``path`` for the overlaid video: ValueError naming it unless it ends in .mp4, its folder exists and takes a
    new file, and it does not exist yet (or ``replace``), and OpenCV can take its name (:func:`opencv_path`)."""
    from edgesense.sources.base import opencv_path

    out = Path(path)
    opencv_path(out, f"a {' or '.join(OUT_SUFFIXES)} file")
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"{out}: expected a {' or '.join(OUT_SUFFIXES)} file (the demo writes {OUT_FOURCC} video), "
                         f"got {out.suffix or 'no extension'!r}")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; expected a {' or '.join(OUT_SUFFIXES)} file")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: the folder for the output video does not exist")
    if out.exists() and not replace:
        raise ValueError(f"{out}: exists; pass --force to replace it")
    try:  # the video goes to a hidden file beside it first: its folder must take a new file
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.stem}.", suffix=".probe"):
            pass
    except OSError as exc:  # a read-only folder, one of another user's, a read-only file system
        raise ValueError(f"{out}: expected a folder the demo can write the video in, got {out.parent} "
                         f"({exc.strerror or exc})") from None
    return out


def default_out() -> Path:
    """``demo.mp4`` in the per-user cache folder (``$XDG_CACHE_HOME/edgesense``, else ``~/.cache/edgesense``),
    created when missing: the demo never writes into the current folder unasked (a relative ``XDG_CACHE_HOME`` is
    ignored, as the XDG Base Directory rules say). ValueError naming the variable that chose the folder
    (``XDG_CACHE_HOME`` or ``HOME``) and ``--out`` when it cannot be made (a read-only home, a file in the way)."""
    where, shown = "XDG_CACHE_HOME", "$XDG_CACHE_HOME/edgesense"
    folder: Path | None = None
    try:
        cache = os.environ.get(where)
        if cache and not os.path.isabs(cache):  # the XDG Base Directory rules: a relative path is ignored
            _say(f"{where}={cache}: expected an absolute path; ignored, as the XDG Base Directory rules say")
            cache = None
        if not cache:
            where, shown = "HOME", "~/.cache/edgesense"
            cache = str(Path.home() / ".cache")
        folder = Path(cache) / "edgesense"
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):  # it was there already, on a read-only file system or not ours
            raise PermissionError(errno.EACCES, "not writable")
    except (OSError, RuntimeError) as exc:  # RuntimeError: no HOME and no home in the user database
        got = f"{where}={os.environ[where]}" if cache and os.environ.get(where) else f"{where} not set"
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        failed = f"cannot make or write in {folder}" if folder is not None else "no home folder"
        raise ValueError(f"{where}: expected a folder the demo can write its video in (without a window it writes "
                         f"{DEFAULT_OUT_NAME} in {shown}/), got {got}: {failed} ({why}); set {where} to a "
                         "writable folder, or pass --out FILE.mp4") from None
    return folder / DEFAULT_OUT_NAME


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", type=file_argument,
                        help="device config (default: the shipped firmware_configs/desktop.yaml)")
    parser.add_argument("--model", metavar="PATH", type=file_argument,
                        help="a .tflite (default: model.path in the config)")
    parser.add_argument("--out", type=path_argument, metavar="FILE.mp4",
                        help=f"without a window: write the overlaid sample video here (default: {DEFAULT_OUT_NAME} "
                             "in $XDG_CACHE_HOME/edgesense/ when set, else in ~/.cache/edgesense/)")
    parser.add_argument("--force", action="store_true", help="replace --out when it exists")
    parser.add_argument("--duration-s", type=float, metavar="N", help="stop after N seconds of media")


def _sample_paths() -> tuple[Path, Path]:
    return shipped_path(SAMPLES, SAMPLE_VIDEO), shipped_path(SAMPLES, SAMPLE_AUDIO)


def _video_fps(path: Path) -> float:
    import cv2

    from edgesense.sources.base import opencv_path, quiet_opencv

    with quiet_opencv():
        cap = cv2.VideoCapture(opencv_path(path, "a video file"))
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
        finally:
            cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{path}: the video has no usable frame rate")
    return fps


def _say(message: str) -> None:
    say(f"edgesense demo: {message}")


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import input_file, stop_on_signals, user_names
    from edgesense.loop.config import load_config
    from edgesense.loop.pipeline import LiveDeviceError, Pipeline

    if args.duration_s is not None and not is_positive(args.duration_s):
        raise ValueError(f"--duration-s: expected a positive number of seconds, got {args.duration_s!r}")
    if args.force and args.out is None:  # the default file is the demo's own, replaced on every run
        raise ValueError("--force: acts only with --out, which is not given")
    with user_names({str(args.out): f"--out {args.out}"} if args.out else {}):
        out = check_out_path(args.out, replace=args.force) if args.out else None  # before anything is opened
    config_path = input_file("--config", config_argument(args.config)) or shipped_config(DEFAULT_CONFIG)
    model = input_file("--model", args.model)
    with user_names({str(config_path): f"--config {config_path}"} if args.config else {}):
        config = load_config(config_path)
    # Events go to stdout; with it closed (started by a launcher with >&-), the window or the video is still shown,
    # where JSON Lines refused to start and said to name a file, which the demo has no flag for.
    events: Any = "-" if sys.stdout is not None else False
    has_display, why = display_available()
    if has_display and out is not None:  # said, not silently ignored: the window shows what the file would hold
        _say(f"--out {out}: not written: the overlay is shown in the window (--out is for runs without a display)")
    pipeline = None
    live = False
    if has_display:
        try:
            pipeline = Pipeline.from_config(config, model_path=model, events=events, mqtt=False,
                                            on_frame=PreviewWindow(title=f"EdgeSense ({config.device.name})"))
            live = True
        except LiveDeviceError as exc:  # no camera or no microphone
            _say(f"{' | '.join(exc.failures)}; playing the bundled sample media instead")
    writer = None
    if pipeline is None:
        video, audio = _sample_paths()
        if has_display:
            hook: Any = PreviewWindow(title="EdgeSense (sample media)")
        else:
            _say(f"no window: {why}")
            # The default file is the demo's own, replaced on every run; --out was checked above.
            out = out or default_out()
            hook = writer = VideoFileWriter(out, fps=_video_fps(video), replace=True)
        pipeline = Pipeline.from_config(config, model_path=model, video=video, audio=audio,
                                        fast=not has_display, events=events, mqtt=False, on_frame=hook)
    media = "live camera and microphone" if live else "the bundled sample media"
    if pipeline.video is None:  # a speech-only model or a config without its camera: no frame to draw on
        heard = "the live microphone" if live else "the bundled sample media's sound"
        why_not = ("the config disables the camera, or the model was trained without photos" if live
                   else "the model was trained without photos")
        not_shown = "no window opens; Ctrl-C stops" if has_display else f"no video is written to {out}"
        _say(f"listening to {heard} only, with no camera frames to draw on ({why_not}): {not_shown}; "
             "events go to stdout")
        writer = None
    elif writer is not None:
        _say(f"playing {media} and writing the overlaid frames to {writer.path}")
    elif live:
        _say(f"{media}; press q or Esc in the window (or close it) to quit")
    try:
        with stop_on_signals() as stop, pipeline:  # Ctrl-C ends the run as q does: events flushed, the summary
            stop.attach(pipeline)
            stats = pipeline.run(duration_s=args.duration_s)
        _say(stats.summary())
        if writer is not None:
            writer.check()  # closed with the pipeline
            _say(f"wrote {writer.frames} frames to {writer.path}")
    finally:
        if writer is not None:
            writer.discard()
    return 0
