#!/usr/bin/env python3
"""Resolve EdgeSense's device dependencies for every deploy target, without installing anything.

For each target (``edgesense.deploy.targets.TARGETS``) pip resolves the dependency set for the
target's platform tags and Python version from PyPI's metadata (``pip install --dry-run
--report``), trying the fallbacks where a wheel is missing. Prints a table: target,
Python, and per dependency the version, the fallback or UNSUPPORTED.

    .venv/bin/python scripts/resolve_targets.py [--target NAME ...] [--python-version X.Y]
                                                [--extra mqtt] [--json FILE]

Exit status: 0 when every supported target resolves, 1 when one does not, 2 when
PyPI cannot be reached (or bad arguments).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgesense.app.cli import OneLineArgumentParser, run_main
from edgesense.deploy.resolve import KNOWN_EXTRAS, Resolution, resolve
from edgesense.deploy.targets import TARGETS, _parse_python_version  # noqa: E402

#: The first columns, in this order (pip's names for the project's device dependencies; the others follow).
COLUMNS = ("numpy", "opencv", "sounddevice", "ruamel-yaml", "interpreter")


def _cells(res: Resolution) -> dict[str, str]:
    cells: dict[str, str] = {}
    for c in res.choices:
        key = "interpreter" if c.role == "interpreter" else "opencv" if c.role == "opencv" else c.dependency
        if c.role == "interpreter" and c.status == "wheel":
            cells[key] = f"{c.package} {c.version}"
        else:
            cells[key] = c.display if c.status != "unsupported" else "UNSUPPORTED"
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="only these targets (repeatable)")
    parser.add_argument("--python-version", default=None, metavar="X.Y", help="override every target's Python")
    parser.add_argument("--extra", action="append", default=[], choices=list(KNOWN_EXTRAS))
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    # Before pip asks PyPI for every target (minutes): a --json that cannot be written failed only after that.
    if args.json is not None and (args.json.is_dir() or not args.json.resolve().parent.is_dir()):
        parser.error(f"--json {args.json}: expected a file in an existing folder, got "
                     + ("a folder" if args.json.is_dir() else "a path whose folder does not exist"))
    # Named as the flag, once: it was "resolve_targets: rpi5: python_version: ...", blamed on the first target.
    if args.python_version is not None:
        try:
            _parse_python_version(args.python_version, "--python-version")
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    names = args.target or list(TARGETS)
    results: list[Resolution] = []
    for name in names:
        try:
            results.append(resolve(name, python_version=args.python_version, extras=tuple(args.extra)))
        except (RuntimeError, ValueError) as exc:
            print(f"resolve_targets: {name}: {exc}", file=sys.stderr)
            return 2

    columns = list(COLUMNS) + sorted({k for r in results for k in _cells(r)} - set(COLUMNS))
    header = ["target", "python", *columns, "result"]
    rows = []
    for res in results:
        cells = _cells(res)
        verdict = "ok" if res.ok else ("unsupported target" if not res.target.supported else "FAILS")
        rows.append([res.target.name, res.python_version, *(cells.get(c, "-") for c in columns), verdict])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    for res in results:
        for p in res.problems:
            print(f"{res.target.name}: {p}")
        extra_apt = [p for p in res.apt_packages if p not in ("python3-venv",)]
        print(f"{res.target.name}: apt {' '.join(extra_apt)}; {len(res.packages)} wheels; "
              f"tags {res.target.platform_tags[0]} .. {res.target.platform_tags[-1]}")
    if args.json:
        args.json.write_text(json.dumps([
            {"target": r.target.name, "python_version": r.python_version, "ok": r.ok, "problems": list(r.problems),
             "choices": [c.to_dict() for c in r.choices], "apt_packages": list(r.apt_packages),
             "packages": [{"name": p.name, "version": p.version, "file": p.filename, "sha256": p.sha256}
                          for p in r.packages]}
            for r in results
        ], indent=2) + "\n", encoding="utf-8")
    failed = [r.target.name for r in results if r.target.supported and not r.ok]
    if failed:
        print(f"resolve_targets: supported targets that do not resolve: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(Path(__file__).name, main))
