"""The ``edgesense`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``edgesense run`` on a device never imports TensorFlow. Errors a user can fix
(``ValueError``, ``RuntimeError``, ``OSError``) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from edgesense import __version__

#: name -> (module, one-line help). Desktop commands live in edgesense.train, .quantize, .bench and .deploy.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edgesense.app.run", "run the device loop on a camera+mic or replayed media"),
    "demo": ("edgesense.app.demo", "live camera+mic window with an overlay (falls back to the sample media)"),
    "inspect": ("edgesense.app.inspect", "print a model's metadata, parts and sizes"),
    "bench": ("edgesense.bench.cli", "offline accuracy and latency benchmark"),
    "train": ("edgesense.train.cli", "train the fusion model from a YAML config"),
    "synth-commands": ("edgesense.train.synth", "speak command words with espeak-ng into the Speech Commands layout"),
    "quantize": ("edgesense.quantize.cli", "convert a training run to int8 TFLite (and fp16 / dynamic range)"),
    "deploy": ("edgesense.deploy.cli", "write a self-contained bundle for a Raspberry Pi or Jetson"),
}

EXIT_USAGE = 2


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("tensorflow", "keras", "tqdm", "matplotlib"):
            raise RuntimeError(
                f"this command needs the desktop extra ({exc.name} is not installed): pip install 'edgesense[train]'"
            ) from exc
        raise


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgesense", description="EdgeSense: audio+vision sensing on the edge.")
    parser.add_argument("--version", action="version", version=f"edgesense {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported (for --help, each one is listed by name).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module_name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING - 10 * min(args.verbose + 1, 2),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return int(_load(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"edgesense: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
