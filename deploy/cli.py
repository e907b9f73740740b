"""``edgesense deploy``: the command line of the bundle builder."""

from __future__ import annotations

import argparse

from edgesense.app.cli import input_file, path_argument, user_names
from edgesense.deploy.bundle import DeployOptions, build_bundle
from edgesense.deploy.resolve import KNOWN_EXTRAS
from edgesense.deploy.targets import TARGETS

__all__ = ["add_arguments", "run"]


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=list(TARGETS), help="the device kind")
    parser.add_argument("--out", required=True, type=path_argument, help="bundle folder to write (new or empty)")
    parser.add_argument("--model", type=path_argument, default=None,
                        help="model to bundle (default: the one the config's model.path names)")
    parser.add_argument("--config", type=path_argument, default=None,
                        help="device config to bundle (default firmware_configs/<target>.yaml)")
    parser.add_argument("--no-wheels", action="store_true",
                        help="no resolution or downloads: the device installs the packages from PyPI")
    parser.add_argument("--python-version", default=None, metavar="X.Y",
                        help="the device's Python (default: the target's, e.g. 3.11 on Raspberry Pi OS Bookworm)")
    parser.add_argument("--extra", action="append", default=[], choices=list(KNOWN_EXTRAS),
                        help="also bundle an optional dependency group (mqtt)")
    parser.add_argument("--edgesense-wheel", type=path_argument, default=None,
                        help="use this EdgeSense wheel instead of building one")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle in --out")


#: DeployOptions fields as the flags a user types (messages name the flag, not the field).
FLAGS = {"target": "--target", "out_dir": "--out", "model_path": "--model", "config_path": "--config",
         "python_version": "--python-version", "extras": "--extra", "edgesense_wheel": "--edgesense-wheel"}


def run(args: argparse.Namespace) -> int:
    for flag in ("--model", "--config", "--edgesense-wheel"):
        input_file(flag, getattr(args, flag[2:].replace("-", "_")))
    with user_names(FLAGS):
        options = DeployOptions(
            target=args.target, out_dir=args.out, model_path=args.model, config_path=args.config,
            wheels=not args.no_wheels, python_version=args.python_version, extras=tuple(dict.fromkeys(args.extra)),
            edgesense_wheel=args.edgesense_wheel, force=args.force,
        )
    result = build_bundle(options)
    m = result.manifest
    wheels = f"{len(m['packages'])} pinned wheels" if m["wheels"] else "no wheels (the device installs from PyPI)"
    print(f"edgesense deploy: wrote {result.out_dir} for {m['target']['name']} "
          f"({m['target']['arch']}, Python {m['target']['python_version']}): {len(m['files'])} files, "
          f"interpreter {m['interpreter']['package']}, {wheels}")
    for c in result.resolution.choices:
        print(f"  {c.dependency:24s} {c.display}")
    print(f"  apt: {' '.join(m['target']['apt_packages'])}")
    print(f"next: copy {result.out_dir} to the device and run sudo ./install.sh there")
    return 0
