"""edgesense.deploy.resolve: what a failed resolution says (pip stood in for by a script, as in test_bundle.py)."""

from __future__ import annotations

import json
import sys

from edgesense.deploy import resolve as resolve_mod

#: pip's dry run: refuses numpy under a constraints file that says numpy<2 (no NumPy 1.x wheel for Python 3.13, as
#: on PyPI), in pip's words; anything else resolves.
STUB_PIP = r'''
import json, sys
from pathlib import Path
args = sys.argv[2:]  # after "install"
valued = {"--report", "--target", "--retries", "--timeout", "--python-version", "--implementation", "--platform",
          "--constraint", "--index-url"}
opts, reqs, i = {}, [], 0
while i < len(args):
    if args[i] in valued:
        opts[args[i]] = args[i + 1]
        i += 2
        continue
    if not args[i].startswith("-"):
        reqs.append(args[i])
    i += 1
report = opts["--report"]
constraints = Path(opts["--constraint"]).read_text() if "--constraint" in opts else ""
if "numpy<2" in constraints and any(r.startswith("numpy") for r in reqs):
    print("ERROR: Cannot install numpy>=1.21 because these package versions have conflicting dependencies.",
          file=sys.stderr)
    sys.exit(1)
install = [{"metadata": {"name": r.split(">")[0].split("=")[0], "version": "2.0"}, "requested": True,
            "download_info": {"url": "https://files.example/x/" + r.split(">")[0] + "-2.0-py3-none-any.whl",
                              "archive_info": {"hashes": {"sha256": "ab" * 32}}}} for r in reqs]
Path(report).write_text(json.dumps({"version": "1", "install": install}))
'''


def test_a_dependency_only_the_targets_constraint_rules_out_names_that_constraint(tmp_path):
    # `edgesense deploy --target jetson-orin --python-version 3.13` said "no wheel for numpy ...: Cannot install
    # numpy>=1.21 because these package versions have conflicting dependencies": numpy has wheels for 3.13, but
    # not below 2, which the target's constraint asks (JetPack's OpenCV is built against NumPy 1.x).
    script = tmp_path / "stub_pip.py"
    script.write_text(STUB_PIP)
    options = resolve_mod.ResolveOptions(pip_command=(sys.executable, str(script)), timeout_s=60)
    res = resolve_mod.resolve("jetson-orin", python_version="3.13", options=options)
    assert not res.ok
    numpy_problems = [p for p in res.problems if p.startswith("no wheel for numpy")]
    assert numpy_problems == [
        "no wheel for numpy on jetson-orin (aarch64, Python 3.13) within the target's constraint numpy<2: numpy: "
        "Cannot install numpy>=1.21 because these package versions have conflicting dependencies."
    ], json.dumps(res.problems)
    # a dependency that fails for a reason of its own is not blamed on the constraint
    assert all("within" not in p for p in res.problems if not p.startswith("no wheel for numpy"))
