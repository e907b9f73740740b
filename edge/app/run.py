"""``edgesense run``: the device loop on a camera and microphone, or on replayed media.

Events go to stdout as JSON Lines (or to ``--events FILE``, or MQTT); logs and the
final one-line summary (events, real-time factor, p50/p95 per stage) go to stderr.

``--video`` / ``--audio`` replace the camera / microphone with a file, played in
real time unless ``--fast``. When either is given **no live device is opened**: a
modality without a file is absent (the model fuses ``None`` for it). So ``--audio
x.wav`` alone is keyword spotting only, and ``--video x.mp4`` alone scene only.

SIGINT and SIGTERM stop the sources, flush the outputs and exit 0. Any error a
user can fix prints one line and exits 2 (see :mod:`edgesense.app.cli`); so does a device fault that ends the
run (a microphone whose stream stopped, or from which no audio came for ``audio.stall_timeout_ms``, a camera read
that hung for ``camera.stall_timeout_ms``), after the events so far are written, for a service manager to restart
the process.

Under systemd (``Type=notify``, :mod:`edgesense.app.notify`) it says ``READY=1`` once the model is loaded and the
sources are open, ``WATCHDOG=1`` from the loop's thread as it goes round, and ``STOPPING=1`` when the run ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


EXIT_OK = 0
EXIT_EVENTS_LOST = 1  #: the run ended with events neither written, delivered nor spooled


def file_argument(value: str) -> str:
    """An argparse ``type`` for the file flags: an empty value (``--video "$VIDEO"`` with the variable unset) is
    refused as such, instead of becoming the current folder (``--video .: is a folder``)."""
    if not value:
        raise argparse.ArgumentTypeError("expected a file, got an empty string")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="YAML", type=file_argument,
                        help="device config, e.g. firmware_configs/rpi4.yaml (or a shipped one by name: rpi4)")
    parser.add_argument("--model", metavar="PATH", type=file_argument,
                        help="a .tflite from 'edgesense quantize' (default: model.path in the config)")
    parser.add_argument("--video", metavar="FILE", type=file_argument,
                        help="replay this video instead of the camera (no live device is opened when --video or "
                        "--audio is given)")
    parser.add_argument("--audio", metavar="FILE", type=file_argument,
                        help="replay this WAV instead of the microphone")
    parser.add_argument("--headless", action="store_true",
                        help="never open a preview window (without it a window is shown when a display is there)")
    parser.add_argument("--events", metavar="FILE|-", help="JSON Lines destination: a file (appended) or - for "
                        "stdout (default: outputs.events in the config)")
    parser.add_argument("--mqtt", metavar="URL", help="publish events to mqtt[s]://[user[:pass]@]host[:port][/prefix]"
                        " (default: outputs.mqtt in the config)")
    parser.add_argument("--fast", action="store_true", help="replay media as fast as possible (not in real time; "
                        "acts only with --video or --audio)")
    parser.add_argument("--duration-s", type=float, metavar="N", help="stop after N seconds of media")
    parser.add_argument("--stats", action="store_true", help="also print the full statistics as JSON on stderr")


def _stats_json(stats: Any) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps(clean(stats.to_dict()), sort_keys=True)


def file_flags(args: argparse.Namespace) -> dict[str, str]:
    """The file flags given (``--config``, ``--model``, ``--video``, ``--audio``), checked to be
    files: {path as messages name it: "--flag path"}, for :func:`edgesense.app.cli.user_names`.
    One path given to several flags names them all: "--video/--audio path"."""
    from edgesense.app.cli import input_file

    flags: dict[str, list[str]] = {}
    for flag in ("--config", "--model", "--video", "--audio"):
        path = input_file(flag, getattr(args, flag[2:].replace("-", "_"), None))
        if path is not None:
            flags.setdefault(str(path), []).append(flag)
    return {path: f"{'/'.join(names)} {path}" for path, names in flags.items()}


def output_names(args: argparse.Namespace, config: Any) -> dict[str, str]:
    """{what output errors start with: how the user named it}: ``--events PATH`` / ``--mqtt``, or
    ``outputs.events PATH`` / ``outputs.mqtt`` of the config file when the flag was not given."""
    from edgesense.sinks.base import STDOUT

    if args.events == "":
        raise ValueError(f"--events: expected a JSON Lines file or {STDOUT}, got an empty path")
    names = {}
    if args.events is not None:
        names[str(Path(args.events))] = f"--events {Path(args.events)}"
    elif config.outputs.events not in (None, STDOUT):
        names[str(Path(config.outputs.events))] = f"{args.config}: outputs.events {Path(config.outputs.events)}"
    if args.mqtt is not None:
        names["mqtt"] = "--mqtt"
    elif config.outputs.mqtt is not None:
        names["mqtt"] = f"{args.config}: outputs.mqtt"
    return names


def refuse_events_onto_inputs(args: argparse.Namespace, config: Any, outputs: dict[str, str]) -> None:
    """A ValueError when the events file (``--events`` or ``outputs.events``) is one of the run's own input
    files (config, model, video, WAV, second-opinion heads): events are appended, which would spoil it.
    ``outputs``: :func:`output_names`, how the user named the events file."""
    from edgesense.sinks.base import STDOUT

    target = args.events if args.events is not None else config.outputs.events
    if target in (None, STDOUT) or not Path(target).is_file():
        return
    inputs = {"the --config file": args.config, "the --video file": args.video, "the --audio file": args.audio,
              "the --model file" if args.model is not None else "the config's model.path":
                  args.model if args.model is not None else config.model.path,
              "the config's second_opinion.heads_path": config.second_opinion.heads_path}
    for what, path in inputs.items():
        if path is not None and Path(path).is_file() and os.path.samefile(target, path):
            raise ValueError(f"{outputs[str(Path(target))]}: expected a JSON Lines file of its own, got {what} "
                             f"{path} (events are appended to the file)")


def live_device_help(exc: Any, config: str, paths: Sequence[tuple[str, str | None]] = ()) -> RuntimeError:
    """A :class:`edgesense.loop.pipeline.LiveDeviceError` reworded with the flags and the config file (a copy of
    it where it is part of the installation; ``paths``: its path fields as loaded, ``(field, absolute path)``, which
    the copy must name in full: relative, they would not resolve beside the copy)."""
    from edgesense.shipped import part_of_an_installation

    where = config
    if part_of_an_installation(config):  # edited there, the next upgrade would undo it
        name = Path(config).name
        named = ", ".join(f"{field}: {path}" for field, path in paths if path is not None)
        where = (f"a copy of {config} (the installed one is replaced by every upgrade: cp {config} {name}, set "
                 + (f"{named} in it, " if named else "") + f"then --config {name})")
    return RuntimeError(" | ".join(exc.failures) + f" | set camera.enabled: false / audio.enabled: false in {where} "
                        "to run without it, or replay files with --video FILE / --audio FILE")


def _events_so_far(pipeline: Any) -> str:
    """The status line of a watchdog ping (the loop's thread): two counters, not a copy of the statistics."""
    commands, scenes = pipeline.events_so_far
    return f"{commands} command and {scenes} scene events so far"


def warn_of_waits_past_the_watchdog(pipeline: Any, watchdog_s: float | None, config: str) -> None:
    """One warning when the loop may legitimately wait (a stalled microphone's ``audio.read_timeout_ms``) half the
    watchdog period or longer: the loop's pings, at most every half period, would then come too late."""
    from edgesense.sources.base import MS_PER_S

    if watchdog_s is None or not pipeline.live_audio:
        return
    wait_s = pipeline.audio.options.read_timeout_ms / MS_PER_S
    if wait_s >= watchdog_s / 2:
        logger.warning("%s: audio.read_timeout_ms %g is half the service's watchdog period (%g s, WatchdogSec=) or "
                       "more: a stalled microphone would have the service restarted; expected less than %g",
                       config, wait_s * MS_PER_S, watchdog_s, watchdog_s / 2 * MS_PER_S)


def run(args: argparse.Namespace) -> int:
    from edgesense.app.cli import say, stop_on_signals, user_names
    from edgesense.app.notify import ServiceNotifier

    if args.duration_s is not None and not (math.isfinite(args.duration_s) and args.duration_s > 0):
        raise ValueError(f"--duration-s: expected a positive number of seconds, got {args.duration_s!r}")
    if args.fast and args.video is None and args.audio is None:  # live devices run in real time: never ignored
        raise ValueError("--fast: acts only with --video or --audio (a replay), which are not given")
    # A stop from the start, while the loop's libraries load too (seconds on a Pi): exit 0, as any stop of the run
    # (systemctl stop at boot), not 130 from a KeyboardInterrupt raised inside an import.
    with stop_on_signals() as stop:
        from edgesense.loop.config import load_config
        from edgesense.loop.pipeline import LiveDeviceError, Pipeline
        from edgesense.shipped import config_argument

        args.config = config_argument(args.config)
        names = file_flags(args)
        with user_names(names):
            config = load_config(args.config)
        outputs = output_names(args, config)
        refuse_events_onto_inputs(args, config, outputs)
        preview = None
        if not args.headless:
            from edgesense.app.demo import display_available, open_preview

            if display_available()[0]:
                preview = open_preview(f"EdgeSense ({config.device.name})")
        notifier = ServiceNotifier.from_environment()  # does nothing outside a systemd unit of Type=notify

        def alive() -> None:  # the loop's own thread, every round: a loop that hangs stops the watchdog's pings
            notifier.alive(lambda: _events_so_far(pipeline))

        try:
            with user_names({**outputs, **names}):
                pipeline = Pipeline.from_config(config, model_path=args.model, video=args.video, audio=args.audio,
                                                fast=args.fast, events=args.events, mqtt=args.mqtt, on_frame=preview,
                                                on_progress=alive)
        except LiveDeviceError as exc:
            raise live_device_help(exc, args.config, [("model.path", config.model.path),
                                                      ("second_opinion.heads_path",
                                                       config.second_opinion.heads_path)]) from None
        stop.attach(pipeline)
        try:
            with pipeline:
                if not stop.requested:
                    warn_of_waits_past_the_watchdog(pipeline, notifier.watchdog_s, args.config)
                    notifier.ready(f"running {config.device.name}")
                    try:
                        pipeline.run(duration_s=args.duration_s)
                    finally:
                        notifier.stopping(f"stopping: {_events_so_far(pipeline)}")
        finally:
            notifier.close()
        stats = pipeline.stats
        if stop.requested:
            logger.info("stopped by a signal")
        say(f"edgesense run: {stats.summary()}")
        if args.stats:
            say(_stats_json(stats))
        if stats.events_lost:
            say(f"edgesense run: {stats.events_lost} events were lost: not written to the events file, or "
                "neither delivered to the MQTT broker nor spooled (see the warnings above; "
                "outputs.mqtt_spool_dir: null keeps MQTT events in memory only)")
            return EXIT_EVENTS_LOST
        return EXIT_OK
