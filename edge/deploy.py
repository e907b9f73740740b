"""``edgesense deploy``: a self-contained install bundle for a Raspberry Pi, a Jetson or a desktop.

The bundle holds the model (and its embedded metadata as JSON), the device config
(pointing at the bundled model), a wheelhouse of the device dependencies built for
the target's platform tags and Python version, EdgeSense's own wheel, ``install.sh``
(offline install into a virtual environment plus a systemd unit) and ``MANIFEST.json``.

Dependencies are *resolved* for the target before anything is downloaded, with
``pip install --dry-run --report`` (PyPI metadata only). Where the target has no wheel
for a dependency, a fallback is chosen (``tflite-runtime`` for the interpreter on
Python <= 3.11, the system ``python3-opencv`` for OpenCV) or the command fails with
a message naming the dependency, before writing a bundle that would fail on the device.

This module runs on the desktop; it never imports TensorFlow. pip runs as a
subprocess with argument lists only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from edge import __version__
from edge.model import embedded_metadata
from edge.tflite_metadata import read_layout

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLE_CONFIG",
    "BUNDLE_MODEL",
    "DeployOptions",
    "DependencyChoice",
    "MIN_PYTHON",
    "ResolveOptions",
    "Resolution",
    "ResolvedPackage",
    "TARGETS",
    "Target",
    "add_arguments",
    "build_bundle",
    "plan_dependencies",
    "project_root",
    "resolve",
    "run",
]

#: The oldest Python EdgeSense runs on: ``edge/`` uses ``dataclass(kw_only=True)`` (3.10+).
MIN_PYTHON = (3, 10)
#: tflite-runtime (the interpreter fallback) stopped at Python 3.11.
TFLITE_RUNTIME_MAX_PYTHON = (3, 11)
INSTALL_PREFIX = "/opt/edgesense"
EVENTS_PATH = "/var/lib/edgesense/events.jsonl"
STATE_DIR = "/var/lib/edgesense"
SERVICE_USER = "edgesense"
SERVICE_GROUPS = ("audio", "video")
BUNDLE_MODEL = "models/edgesense.tflite"
BUNDLE_METADATA = "models/edgesense.metadata.json"
BUNDLE_CONFIG = "config.yaml"
MANIFEST = "MANIFEST.json"
#: The config field that holds the model path (see ``edge/config.py``).
MODEL_PATH_FIELD = "model.path"
INTERPRETER_PACKAGES = ("ai-edge-litert", "tflite-runtime")
OPENCV_PIP_PACKAGES = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python")
OPENCV_APT_PACKAGE = "python3-opencv"
KNOWN_EXTRAS = ("mqtt",)
#: Constraints an interpreter brings along that its metadata does not declare:
#: tflite-runtime 2.14 is compiled against NumPy 1.x and refuses to load under NumPy 2.
INTERPRETER_CONSTRAINTS: Mapping[str, tuple[str, ...]] = {"tflite-runtime": ("numpy<2",)}

_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_PYTHON_VERSION = re.compile(r"^3\.(\d{1,2})$")
_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Name or service not known|Max retries exceeded"
    r"|ConnectTimeout|Network is unreachable|Connection refused|ProxyError|SSLError",
)


def _parse_python_version(value: str, field_name: str) -> tuple[int, int]:
    if not isinstance(value, str) or not _PYTHON_VERSION.match(value):
        raise ValueError(f"{field_name}: expected a Python version like '3.11', got {value!r}")
    return 3, int(value.split(".")[1])


@dataclass(frozen=True, kw_only=True)
class Target:
    """One kind of device: what its OS provides and how EdgeSense is installed there.

    ``glibc``: the OS's glibc (major, minor); wheels up to ``manylinux_<glibc>`` run there.
    ``opencv``: ``"pip"`` (the opencv-python-headless wheel) or ``"apt"`` (the system
    ``python3-opencv``, e.g. JetPack's, built with GStreamer; the venv then sees system
    site-packages). ``constraints``: extra pip constraints (e.g. ``numpy<2`` where the
    system OpenCV was built against NumPy 1.x). ``supported=False`` targets are listed
    (and resolved, for information) but ``deploy`` refuses them with ``note``.
    """

    name: str
    description: str
    arch: str
    glibc: tuple[int, int]
    python_version: str
    apt_packages: tuple[str, ...]
    config_name: str
    opencv: str = "pip"
    interpreters: tuple[str, ...] = INTERPRETER_PACKAGES
    constraints: tuple[str, ...] = ()
    system_site_packages: bool = False
    supported: bool = True
    note: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9-]*$", self.name or ""):
            raise ValueError(f"name: expected lowercase letters, digits and '-', got {self.name!r}")
        if self.arch not in ("aarch64", "x86_64"):
            raise ValueError(f"arch: expected 'aarch64' or 'x86_64', got {self.arch!r}")
        if (not isinstance(self.glibc, tuple) or len(self.glibc) != 2 or self.glibc[0] != 2
                or not 17 <= self.glibc[1] <= 99):
            raise ValueError(f"glibc: expected (2, minor) with minor >= 17, got {self.glibc!r}")
        _parse_python_version(self.python_version, "python_version")
        bad = [p for p in self.apt_packages if not _APT_NAME.match(p)]
        if bad:
            raise ValueError(f"apt_packages: expected Debian package names, got {bad[0]!r}")
        if self.opencv not in ("pip", "apt"):
            raise ValueError(f"opencv: expected 'pip' or 'apt', got {self.opencv!r}")
        if self.opencv == "apt" and (OPENCV_APT_PACKAGE not in self.apt_packages or not self.system_site_packages):
            raise ValueError(f"opencv: 'apt' needs {OPENCV_APT_PACKAGE} in apt_packages and system_site_packages=True")
        unknown = [i for i in self.interpreters if i not in INTERPRETER_PACKAGES]
        if not self.interpreters or unknown:
            raise ValueError(f"interpreters: expected a non-empty subset of {INTERPRETER_PACKAGES}, got {self.interpreters!r}")
        if not self.config_name.endswith(".yaml") or "/" in self.config_name:
            raise ValueError(f"config_name: expected a file name ending in .yaml, got {self.config_name!r}")
        if not self.supported and not self.note:
            raise ValueError("note: expected the reason a target is unsupported, got ''")

    @property
    def platform_tags(self) -> tuple[str, ...]:
        """pip ``--platform`` values, newest first: manylinux_2_<glibc> ... manylinux_2_17, manylinux2014.

        pip does not expand ``manylinux_2_X`` to older glibc versions itself, so every one is named
        (ai-edge-litert publishes manylinux_2_27 wheels, numpy manylinux_2_28, most others 2_17).
        """
        minors = range(self.glibc[1], 16, -1)
        return tuple(f"manylinux_2_{m}_{self.arch}" for m in minors) + (f"manylinux2014_{self.arch}",)


_DEBIAN_BASE = ("python3-venv", "libportaudio2")
_JETSON_NOTE_OPENCV = "OpenCV from JetPack's python3-opencv (GStreamer, CSI cameras), not the pip wheel"

#: The deploy targets, by name.
TARGETS: Mapping[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="rpi5", description="Raspberry Pi 5, Raspberry Pi OS Bookworm 64-bit", arch="aarch64",
            glibc=(2, 36), python_version="3.11", apt_packages=_DEBIAN_BASE, config_name="rpi5.yaml",
        ),
        Target(
            name="rpi4", description="Raspberry Pi 4, Raspberry Pi OS Bookworm 64-bit", arch="aarch64",
            glibc=(2, 36), python_version="3.11", apt_packages=_DEBIAN_BASE, config_name="rpi4.yaml",
        ),
        Target(
            name="jetson-orin", description="Jetson Orin, JetPack 6 (Ubuntu 22.04)", arch="aarch64",
            glibc=(2, 35), python_version="3.10", apt_packages=_DEBIAN_BASE + (OPENCV_APT_PACKAGE,),
            config_name="jetson-orin.yaml", opencv="apt", system_site_packages=True,
            constraints=("numpy<2",),
            note=_JETSON_NOTE_OPENCV + "; numpy<2 because that OpenCV is built against NumPy 1.x. "
                 "JetPack 5 (Python 3.8) is too old for EdgeSense (Python >= 3.10).",
        ),
        Target(
            name="jetson-nano", description="Jetson Nano, JetPack 4 (Ubuntu 18.04)", arch="aarch64",
            glibc=(2, 27), python_version="3.6", apt_packages=_DEBIAN_BASE + (OPENCV_APT_PACKAGE,),
            config_name="jetson-nano.yaml", opencv="apt", system_site_packages=True,
            constraints=("numpy<2",), supported=False,
            note="JetPack 4 is end-of-life and ships Python 3.6; EdgeSense needs Python >= 3.10 and "
                 "neither ai-edge-litert nor tflite-runtime >= 2.14 publish wheels for it",
        ),
        Target(
            name="desktop", description="x86_64 Linux desktop (glibc >= 2.35, e.g. Ubuntu 22.04+, Debian 12)",
            arch="x86_64", glibc=(2, 35), python_version="3.11", apt_packages=_DEBIAN_BASE,
            config_name="desktop.yaml",
        ),
    )
}


# --------------------------------------------------------------------------- project

def project_root() -> Path | None:
    """The source checkout this ``edge`` package lives in (has pyproject.toml), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _project_requirements(extras: Sequence[str]) -> list[str]:
    """EdgeSense's dependency strings (with markers) and those of ``extras``, from pyproject.toml or metadata."""
    root = project_root()
    if root is not None:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            tomllib = None  # type: ignore[assignment]
        if tomllib is not None:
            project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
            reqs = list(project.get("dependencies", []))
            for extra in extras:
                reqs += project.get("optional-dependencies", {}).get(extra, [])
            return reqs
    from importlib import metadata

    reqs = []
    for line in metadata.requires("edgesense") or []:
        marker = line.split(";", 1)[1] if ";" in line else ""
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if m is None:
            reqs.append(line)
        elif m.group(1) in extras:
            reqs.append(re.sub(r"(and\s+)?extra\s*==\s*['\"][^'\"]+['\"]", "", line).rstrip().rstrip(";").rstrip())
    return reqs


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ModuleNotFoundError as exc:  # pragma: no cover - pip/setuptools/pytest all bring it
        raise RuntimeError("edgesense deploy needs the 'packaging' library: pip install packaging") from exc
    return Requirement, canonicalize_name


def _marker_environment(target: Target, python_version: str) -> dict[str, str]:
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "platform_machine": target.arch,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_version": "",
        "implementation_version": f"{python_version}.0",
        "extra": "",
    }


# --------------------------------------------------------------------------- plan and resolution

@dataclass(frozen=True)
class Dependency:
    """One device dependency as pip is asked for it (marker evaluated and removed)."""

    name: str          # canonical project name, e.g. "ai-edge-litert"
    requirement: str   # e.g. "ai-edge-litert>=1.2"
    role: str          # "required" | "interpreter" | "opencv"


@dataclass(frozen=True)
class DependencyChoice:
    """What the target gets for one dependency of EdgeSense.

    ``status``: ``"wheel"`` (the dependency itself), ``"fallback"`` (``package`` instead),
    ``"system"`` (the Debian package ``package``), ``"unresolved"`` (not checked: --no-wheels),
    ``"unsupported"`` (nothing works; ``detail`` says why).
    """

    dependency: str
    role: str
    status: str
    package: str | None = None
    version: str | None = None
    requirement: str | None = None
    detail: str = ""

    @property
    def display(self) -> str:
        if self.status == "wheel":
            return self.version or "?"
        if self.status == "fallback":
            return f"fallback {self.package} {self.version or ''}".rstrip()
        if self.status == "system":
            return f"system {self.package} (apt)"
        if self.status == "unresolved":
            return f"{self.requirement} (not resolved)"
        return f"UNSUPPORTED ({self.detail})" if self.detail else "UNSUPPORTED"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dependency": self.dependency, "role": self.role, "status": self.status, "package": self.package,
            "version": self.version, "requirement": self.requirement, "detail": self.detail,
        }


@dataclass(frozen=True)
class ResolvedPackage:
    """One wheel of the resolved set (from pip's installation report)."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str | None
    requested: bool

    def lock_line(self) -> str:
        line = f"{self.name}=={self.version}"
        return f"{line} --hash=sha256:{self.sha256}" if self.sha256 else line


@dataclass(frozen=True)
class Resolution:
    """The dependency set of one target (see :func:`resolve` and :func:`plan_dependencies`)."""

    target: Target
    python_version: str
    choices: tuple[DependencyChoice, ...]
    packages: tuple[ResolvedPackage, ...]
    requirements: tuple[str, ...]
    constraints: tuple[str, ...]
    apt_packages: tuple[str, ...]
    system_site_packages: bool
    resolved: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def interpreter(self) -> str | None:
        for c in self.choices:
            if c.role == "interpreter" and c.status in ("wheel", "fallback", "unresolved"):
                return c.package
        return None

    def lock_text(self) -> str:
        lines = [p.lock_line() for p in sorted(self.packages, key=lambda p: p.name.lower())]
        return "\n".join(lines) + "\n"

    def requirements_text(self) -> str:
        return "\n".join(list(self.requirements) + list(self.constraints)) + "\n"


@dataclass(frozen=True, kw_only=True)
class ResolveOptions:
    """How :func:`resolve` asks pip. ``pip_command``: the argv prefix that runs pip."""

    pip_command: tuple[str, ...] = (sys.executable, "-m", "pip")
    timeout_s: float = 300.0
    index_url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pip_command, tuple) or not self.pip_command or not all(
                isinstance(a, str) and a for a in self.pip_command):
            raise ValueError(f"pip_command: expected a non-empty tuple of strings, got {self.pip_command!r}")
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise ValueError(f"timeout_s: expected a positive number of seconds, got {self.timeout_s!r}")
        if self.index_url is not None and not re.match(r"^(https?|file)://\S+$", str(self.index_url)):
            raise ValueError(f"index_url: expected an http(s):// or file:// URL, got {self.index_url!r}")


def _python_ok(python_version: str) -> bool:
    return _parse_python_version(python_version, "python_version") >= MIN_PYTHON


def _interpreter_allowed(package: str, python_version: str) -> bool:
    return package != "tflite-runtime" or _parse_python_version(python_version, "python_version") <= TFLITE_RUNTIME_MAX_PYTHON


def plan_dependencies(target: Target, *, python_version: str | None = None,
                      extras: Sequence[str] = ()) -> tuple[list[Dependency], dict[str, list[Dependency]]]:
    """The dependencies pip is asked for on ``target`` (no network): (preferred, fallbacks by name).

    Markers of pyproject's requirements are evaluated for the target. The interpreter is
    the first of ``target.interpreters`` whose marker applies; the others (Python limits
    permitting) are its fallbacks. On ``opencv="apt"`` targets OpenCV is not a pip dependency.
    """
    Requirement, canonicalize_name = _packaging()
    python_version = python_version or target.python_version
    env = _marker_environment(target, python_version)
    bad_extras = [e for e in extras if e not in KNOWN_EXTRAS]
    if bad_extras:
        raise ValueError(f"extras: expected some of {KNOWN_EXTRAS}, got {bad_extras[0]!r}")
    all_reqs = [Requirement(r) for r in _project_requirements(extras)]

    def plain(req) -> str:
        return f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"

    by_name = {canonicalize_name(r.name): r for r in all_reqs}
    preferred: list[Dependency] = []
    fallbacks: dict[str, list[Dependency]] = {}
    interpreter_done = False
    for req in all_reqs:
        name = canonicalize_name(req.name)
        applies = req.marker is None or req.marker.evaluate(env)
        if name in INTERPRETER_PACKAGES:
            if interpreter_done:
                continue
            chain = [p for p in target.interpreters if _interpreter_allowed(p, python_version)]
            applicable = [p for p in chain if p in by_name and (by_name[p].marker is None or by_name[p].marker.evaluate(env))]
            first = applicable[0] if applicable else (chain[0] if chain else None)
            interpreter_done = True
            if first is None:
                preferred.append(Dependency(target.interpreters[0], plain(by_name.get(target.interpreters[0], req)), "interpreter"))
                continue
            preferred.append(Dependency(first, plain(by_name[first]) if first in by_name else first, "interpreter"))
            fallbacks[first] = [Dependency(p, plain(by_name[p]) if p in by_name else p, "interpreter")
                                for p in chain if p != first]
            continue
        if not applies:
            continue
        role = "opencv" if name in OPENCV_PIP_PACKAGES else "required"
        preferred.append(Dependency(name, plain(req), role))
    return preferred, fallbacks


def _static_choices(target: Target, deps: Sequence[Dependency]) -> list[DependencyChoice]:
    out = []
    for d in deps:
        if d.role == "opencv" and target.opencv == "apt":
            out.append(DependencyChoice(d.name, d.role, "system", OPENCV_APT_PACKAGE,
                                        detail="JetPack's OpenCV (GStreamer) instead of the pip wheel"))
        else:
            out.append(DependencyChoice(d.name, d.role, "unresolved", d.name, requirement=d.requirement))
    return out


class _Pip:
    def __init__(self, target: Target, python_version: str, options: ResolveOptions, workdir: Path) -> None:
        self.target, self.python_version, self.options, self.workdir = target, python_version, options, workdir
        self.calls = 0

    def platform_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp"]
        for tag in self.target.platform_tags:
            args += ["--platform", tag]
        if self.options.index_url:
            args += ["--index-url", self.options.index_url]
        return args

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        argv = [*self.options.pip_command, *args]
        logger.debug("running %s", shlex.join(argv))
        self.calls += 1
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.options.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pip took longer than {self.options.timeout_s:.0f} s ({shlex.join(argv[:6])} ...)") from None
        if proc.returncode != 0 and _NETWORK_ERRORS.search(proc.stdout + proc.stderr):
            raise RuntimeError(
                "cannot reach the package index to resolve the dependencies (use --no-wheels to make a bundle "
                f"that installs from PyPI on the device): {_pip_error(proc)}"
            )
        return proc

    def dry_run(self, requirements: Sequence[str], constraints: Sequence[str]) -> tuple[list[ResolvedPackage] | None, str]:
        """Resolve ``requirements`` for the target: (packages, "") or (None, pip's error)."""
        report = self.workdir / f"report-{self.calls}.json"
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                "--target", str(self.workdir / "target"), "--retries", "2", "--timeout", "20",
                *self.platform_args()]
        if constraints:
            cfile = self.workdir / "constraints.txt"
            cfile.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            args += ["--constraint", str(cfile)]
        proc = self._run([*args, *requirements])
        if proc.returncode != 0:
            return None, _pip_error(proc)
        data = json.loads(report.read_text(encoding="utf-8"))
        packages = []
        for item in data.get("install", []):
            info = item.get("download_info", {})
            url = info.get("url", "")
            hashes = info.get("archive_info", {}).get("hashes", {})
            sha = hashes.get("sha256") or (info.get("archive_info", {}).get("hash", "").partition("sha256=")[2] or None)
            packages.append(ResolvedPackage(
                name=item["metadata"]["name"], version=item["metadata"]["version"],
                filename=url.rsplit("/", 1)[-1].split("#", 1)[0], url=url, sha256=sha,
                requested=bool(item.get("requested")),
            ))
        return packages, ""

    def download(self, lock_file: Path, dest: Path) -> None:
        args = ["download", "--no-deps", "--require-hashes", "--quiet", "-d", str(dest), "--retries", "2",
                "--timeout", "60", *self.platform_args(), "-r", str(lock_file)]
        proc = self._run(args)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download for {self.target.name} failed: {_pip_error(proc)}")


def _pip_error(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or "") + (proc.stdout or "")
    errors = [line.strip()[len("ERROR:"):].strip() for line in text.splitlines() if line.strip().startswith("ERROR:")]
    if errors:
        return "; ".join(errors[:2])
    tail = [line.strip() for line in text.splitlines() if line.strip() and "is ignored" not in line]
    return tail[-1] if tail else f"pip exited with {proc.returncode}"


def _version_of(packages: Iterable[ResolvedPackage], name: str) -> str | None:
    _, canonicalize_name = _packaging()
    for p in packages:
        if canonicalize_name(p.name) == name:
            return p.version
    return None


def resolve(target: Target | str, *, python_version: str | None = None, extras: Sequence[str] = (),
            options: ResolveOptions | None = None) -> Resolution:
    """Resolve EdgeSense's device dependencies for ``target`` with pip's metadata (nothing is installed).

    First the preferred set is resolved at once; if that fails each dependency is resolved
    alone, fallbacks are tried for the ones without a wheel, and the chosen set is resolved
    again so that it is consistent. ``Resolution.problems`` lists what cannot be satisfied
    (also an unsupported Python version). RuntimeError when PyPI cannot be reached.
    """
    target = TARGETS[target] if isinstance(target, str) else target
    options = options or ResolveOptions()
    python_version = python_version or target.python_version
    _parse_python_version(python_version, "python_version")
    preferred, fallbacks = plan_dependencies(target, python_version=python_version, extras=extras)
    apt = list(target.apt_packages)
    system_site = target.system_site_packages
    problems: list[str] = []
    if not _python_ok(python_version):
        problems.append(f"EdgeSense needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}, the target has {python_version}")
    if not target.supported:
        problems.append(f"{target.name} is not supported: {target.note}")

    static = _static_choices(target, preferred)
    pip_deps = [d for d, c in zip(preferred, static) if c.status != "system"]
    with tempfile.TemporaryDirectory(prefix="edgesense-resolve-") as tmp:
        pip = _Pip(target, python_version, options, Path(tmp))
        first_interpreter = next((d.name for d in preferred if d.role == "interpreter"), "")
        constraints = target.constraints + tuple(
            c for c in INTERPRETER_CONSTRAINTS.get(first_interpreter, ()) if c not in target.constraints)
        packages, error = pip.dry_run([d.requirement for d in pip_deps], constraints)
        choices: list[DependencyChoice] = []
        if packages is not None:
            for d, c in zip(preferred, static):
                if c.status == "system":
                    choices.append(c)
                else:
                    choices.append(DependencyChoice(d.name, d.role, "wheel", d.name, _version_of(packages, d.name),
                                                    d.requirement))
        else:
            logger.info("%s: the preferred set does not resolve (%s); checking each dependency", target.name, error)
            chosen: list[str] = []
            extra_constraints: list[str] = []
            for d, c in zip(preferred, static):
                if c.status == "system":
                    choices.append(c)
                    continue
                alone, why = pip.dry_run([d.requirement], target.constraints)
                if alone is not None:
                    choices.append(DependencyChoice(d.name, d.role, "wheel", d.name, _version_of(alone, d.name), d.requirement))
                    chosen.append(d.requirement)
                    continue
                picked = None
                tried = [f"{d.name}: {why}"]
                for fb in fallbacks.get(d.name, []):
                    fb_constraints = INTERPRETER_CONSTRAINTS.get(fb.name, ())
                    got, why_fb = pip.dry_run([fb.requirement], target.constraints + fb_constraints)
                    if got is not None:
                        extra_constraints += [c for c in fb_constraints if c not in target.constraints]
                        picked = DependencyChoice(d.name, d.role, "fallback", fb.name, _version_of(got, fb.name), fb.requirement,
                                                  detail=f"no {d.name} wheel for {target.arch} Python {python_version}")
                        chosen.append(fb.requirement)
                        break
                    tried.append(f"{fb.name}: {why_fb}")
                if picked is None and d.role == "opencv":
                    picked = DependencyChoice(d.name, d.role, "system", OPENCV_APT_PACKAGE,
                                              detail=f"no {d.name} wheel; the system OpenCV instead")
                    if OPENCV_APT_PACKAGE not in apt:
                        apt.append(OPENCV_APT_PACKAGE)
                    system_site = True
                if picked is None:
                    if d.role == "interpreter" and not fallbacks.get(d.name):
                        tried.append("tflite-runtime: no wheels for Python > 3.11")
                    picked = DependencyChoice(d.name, d.role, "unsupported", None, None, d.requirement,
                                              detail="; ".join(tried))
                    problems.append(f"no wheel for {d.name} on {target.name} ({target.arch}, Python {python_version}): "
                                    + "; ".join(tried))
                choices.append(picked)
            packages = []
            constraints = target.constraints + tuple(extra_constraints)
            if not any(c.status == "unsupported" for c in choices):
                packages, error = pip.dry_run(chosen, target.constraints + tuple(extra_constraints))
                if packages is None:
                    problems.append(f"the dependencies resolve one by one but not together on {target.name}: {error}")
                    packages = []
                else:
                    choices = [
                        DependencyChoice(c.dependency, c.role, c.status, c.package,
                                         _version_of(packages, c.package) or c.version, c.requirement, c.detail)
                        if c.status in ("wheel", "fallback") else c
                        for c in choices
                    ]
    packages = packages or []
    missing_hash = [p.name for p in packages if not p.sha256]
    if missing_hash:
        problems.append(f"pip's report has no sha256 for {', '.join(missing_hash)}")
    if not any(c.role == "interpreter" for c in choices):
        problems.append("no LiteRT interpreter among the dependencies")
    requirements = tuple(c.requirement for c in choices if c.status in ("wheel", "fallback") and c.requirement)
    return Resolution(
        target=target, python_version=python_version, choices=tuple(choices), packages=tuple(packages),
        requirements=requirements, constraints=constraints, apt_packages=tuple(apt),
        system_site_packages=system_site, resolved=True, problems=tuple(problems),
    )


def static_resolution(target: Target, *, python_version: str | None = None, extras: Sequence[str] = ()) -> Resolution:
    """The dependency plan without asking PyPI (for ``--no-wheels``): nothing is pinned."""
    python_version = python_version or target.python_version
    preferred, _ = plan_dependencies(target, python_version=python_version, extras=extras)
    choices = _static_choices(target, preferred)
    problems = []
    if not target.supported:
        problems.append(f"{target.name} is not supported: {target.note}")
    if not _python_ok(python_version):
        problems.append(f"EdgeSense needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}, the target has {python_version}")
    interp = [c for c in choices if c.role == "interpreter"]
    if interp and not _interpreter_allowed(interp[0].package or "", python_version):
        problems.append(f"no interpreter for Python {python_version}")
    return Resolution(
        target=target, python_version=python_version, choices=tuple(choices), packages=(),
        requirements=tuple(c.requirement for c in choices if c.status == "unresolved" and c.requirement),
        constraints=target.constraints, apt_packages=target.apt_packages,
        system_site_packages=target.system_site_packages, resolved=False, problems=tuple(problems),
    )


# --------------------------------------------------------------------------- bundle

@dataclass(frozen=True, kw_only=True)
class DeployOptions:
    """What ``edgesense deploy`` writes (see the module docstring).

    ``model_path``/``config_path`` default to ``models/edgesense.tflite`` and
    ``firmware_configs/<target>.yaml`` of the source checkout. ``wheels=False`` skips
    resolution and downloads (the device installs from PyPI). ``edgesense_wheel``: a
    prebuilt EdgeSense wheel instead of ``pip wheel`` of the checkout. ``force``
    replaces an existing bundle in ``out_dir`` (only a folder with a MANIFEST.json).
    """

    target: str
    out_dir: Path
    model_path: Path | None = None
    config_path: Path | None = None
    wheels: bool = True
    python_version: str | None = None
    extras: tuple[str, ...] = ()
    edgesense_wheel: Path | None = None
    force: bool = False
    resolve_options: ResolveOptions = field(default_factory=ResolveOptions)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {self.target!r}")
        for name in ("out_dir", "model_path", "config_path", "edgesense_wheel"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"{name}: expected a path, got {type(value).__name__}")
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.out_dir is None:
            raise ValueError("out_dir: expected a path, got None")
        if self.python_version is not None:
            _parse_python_version(self.python_version, "python_version")
        if not isinstance(self.extras, tuple) or any(e not in KNOWN_EXTRAS for e in self.extras):
            raise ValueError(f"extras: expected a tuple of {KNOWN_EXTRAS}, got {self.extras!r}")
        if not isinstance(self.wheels, bool) or not isinstance(self.force, bool):
            raise ValueError(f"wheels/force: expected booleans, got {self.wheels!r}/{self.force!r}")


@dataclass(frozen=True)
class BundleResult:
    out_dir: Path
    manifest: dict[str, Any]
    resolution: Resolution


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _template(name: str) -> str:
    return resources.files("edge").joinpath("deploy_templates", name).read_text(encoding="utf-8")


def _render(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @@{key}@@ has no value")
        return values[key]

    out = re.sub(r"@@([A-Z_]+)@@", sub, text)
    return out


def _read_model(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"model {path}: no such file (train and quantize one, or pass --model)") from None
    metadata = embedded_metadata(read_layout(data, f"model {path}"), f"model {path}")
    return data, metadata


def _rewrite_model_path(config: dict[str, Any], new_path: str, source: Path) -> str:
    """Set the config's ``model.path`` to ``new_path`` (creating the section); returns ``"model.path"``.

    ``edge.config`` resolves a relative ``model.path`` against the YAML file's folder, so
    ``models/edgesense.tflite`` in a ``config.yaml`` at the bundle's top works wherever the
    bundle is unpacked.
    """
    model = config.setdefault("model", {})
    if model is None:
        model = config["model"] = {}
    if not isinstance(model, dict):
        raise ValueError(f"config {source}: model: expected a mapping, got {type(model).__name__}")
    model["path"] = new_path
    return MODEL_PATH_FIELD


def _check_bundled_config(config_file: Path, model_file: Path) -> dict[str, Any]:
    """Load the written config with ``edge.config.load_config`` (when present); its model must be ``model_file``."""
    try:
        from edge.config import load_config
    except ImportError as exc:  # the device-config module is optional for deploy
        logger.debug("edge.config is not importable (%s); the bundled config is not validated", exc)
        return {}
    config = load_config(config_file)
    if Path(config.model_path).resolve() != model_file.resolve():
        raise RuntimeError(f"the bundled config's model path resolves to {config.model_path}, not {model_file}")
    return {"delegate": getattr(config.model, "delegate", None),
            "delegate_library": getattr(config.model, "delegate_library", None),
            "num_threads": getattr(config.model, "num_threads", None)}


def _build_own_wheel(dest: Path, options: ResolveOptions) -> Path:
    root = project_root()
    if root is None:
        raise RuntimeError("EdgeSense is not running from a source checkout; pass --edgesense-wheel")
    with tempfile.TemporaryDirectory(prefix="edgesense-wheel-") as tmp:
        argv = [*options.pip_command, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp, str(root)]
        logger.info("building EdgeSense's wheel: %s", shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=options.timeout_s, check=False)
        wheels = sorted(Path(tmp).glob("edgesense-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise RuntimeError(f"pip wheel of {root} failed: {_pip_error(proc)}")
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"--out {out_dir}: exists and is not a folder")
        if any(out_dir.iterdir()):
            if not force:
                raise ValueError(f"--out {out_dir}: folder is not empty (--force replaces an earlier bundle)")
            if not (out_dir / MANIFEST).is_file():
                raise ValueError(f"--out {out_dir}: not empty and not a bundle (no {MANIFEST}); refusing to delete it")
            shutil.rmtree(out_dir)


def _check_deployable(resolution: Resolution) -> None:
    if resolution.ok:
        return
    t = resolution.target
    raise RuntimeError(
        f"cannot deploy to {t.name} ({t.description}, Python {resolution.python_version}): "
        + " | ".join(resolution.problems)
        + ". No bundle was written."
    )


def build_bundle(options: DeployOptions) -> BundleResult:
    """Write the bundle for ``options.target`` into ``options.out_dir`` (see :class:`DeployOptions`)."""
    target = TARGETS[options.target]
    python_version = options.python_version or target.python_version
    root = project_root()
    model_path = options.model_path or (root or Path.cwd()) / BUNDLE_MODEL
    config_path = options.config_path or (root or Path.cwd()) / "firmware_configs" / target.config_name

    # Everything that can fail without side effects happens first: no half-written bundle.
    static = static_resolution(target, python_version=python_version, extras=options.extras)
    _check_deployable(static)
    model_bytes, metadata = _read_model(model_path)
    from edge.schema import load_yaml_mapping

    config = load_yaml_mapping(config_path)
    model_field = _rewrite_model_path(config, BUNDLE_MODEL, config_path)
    if options.edgesense_wheel is not None and not options.edgesense_wheel.is_file():
        raise ValueError(f"--edgesense-wheel {options.edgesense_wheel}: no such file")
    resolution = static
    if options.wheels:
        resolution = resolve(target, python_version=python_version, extras=options.extras, options=options.resolve_options)
        _check_deployable(resolution)
    _prepare_out_dir(options.out_dir, options.force)

    out = options.out_dir
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700
    try:
        _write_bundle(staging, options, target, resolution, model_bytes, metadata, config, model_field, config_path)
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return BundleResult(out_dir=out, manifest=manifest, resolution=resolution)


def _write_bundle(out: Path, options: DeployOptions, target: Target, resolution: Resolution, model_bytes: bytes,
                  metadata: dict[str, Any], config: dict[str, Any], model_field: str, config_path: Path) -> None:
    (out / "models").mkdir(parents=True)
    (out / BUNDLE_MODEL).write_bytes(model_bytes)
    (out / BUNDLE_METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    header = (f"# EdgeSense device config for {target.name}, from {config_path.name} by edgesense deploy;\n"
              f"# {model_field} points at the bundled model (relative to this file's folder).\n")
    (out / BUNDLE_CONFIG).write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    model_settings = _check_bundled_config(out / BUNDLE_CONFIG, out / BUNDLE_MODEL)

    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir()
    if options.edgesense_wheel is not None:
        own = Path(shutil.copy2(options.edgesense_wheel, wheelhouse / options.edgesense_wheel.name))
    else:
        own = _build_own_wheel(wheelhouse, options.resolve_options)
    if options.wheels:
        lock = out / "requirements.lock"
        lock.write_text(resolution.lock_text(), encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="edgesense-dl-") as tmp:
            _Pip(target, resolution.python_version, options.resolve_options, Path(tmp)).download(lock, wheelhouse)
        expected = {p.filename for p in resolution.packages}
        got = {p.name for p in wheelhouse.glob("*.whl")} - {own.name}
        if expected - got:
            raise RuntimeError(f"pip download did not bring {', '.join(sorted(expected - got))}")
    (out / "requirements.txt").write_text(resolution.requirements_text(), encoding="utf-8")

    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    q = shlex.quote
    values = {
        "TARGET": target.name, "TARGET_Q": q(target.name), "TARGET_DESCRIPTION": target.description,
        "ARCH": target.arch, "ARCH_Q": q(target.arch),
        "PYTHON_VERSION": resolution.python_version, "PYTHON_VERSION_Q": q(resolution.python_version),
        "EDGESENSE_VERSION": __version__, "CREATED": created,
        "PREFIX": INSTALL_PREFIX, "PREFIX_Q": q(INSTALL_PREFIX),
        "APT_PACKAGES": " ".join(q(p) for p in resolution.apt_packages),
        "APT_LIST": ", ".join(f"`{p}`" for p in resolution.apt_packages),
        "OFFLINE": "1" if options.wheels else "0",
        "SYSTEM_SITE_PACKAGES": "1" if resolution.system_site_packages else "0",
        "USER": SERVICE_USER, "USER_Q": q(SERVICE_USER),
        "GROUPS": " ".join(SERVICE_GROUPS), "GROUPS_Q": q(" ".join(SERVICE_GROUPS)),
        "STATE_DIR_Q": q(STATE_DIR), "STATE_DIR_NAME": Path(STATE_DIR).name,
        "CONFIG": BUNDLE_CONFIG, "CONFIG_Q": q(BUNDLE_CONFIG), "CONFIG_SOURCE": f"firmware_configs/{config_path.name}",
        "EVENTS": EVENTS_PATH, "EVENTS_Q": q(EVENTS_PATH),
        "INTERPRETER": resolution.interpreter or "none",
        "WHEELS_LINE": ("Python packages install offline from `wheelhouse/` (hashes pinned in `requirements.lock`)."
                        if options.wheels else
                        "Made with `--no-wheels`: the device installs the Python packages from PyPI (needs network)."),
        "WHEELHOUSE_TAIL": (" and the pinned dependency wheels for this target" if options.wheels else " only (--no-wheels)"),
    }
    install = out / "install.sh"
    install.write_text(_render(_template("install.sh.in"), values), encoding="utf-8")
    install.chmod(0o755)
    (out / "edgesense.service").write_text(_render(_template("edgesense.service.in"), values), encoding="utf-8")
    (out / "README.md").write_text(_render(_template("README.md.in"), values), encoding="utf-8")

    files = {
        p.relative_to(out).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in sorted(out.rglob("*")) if p.is_file()
    }
    manifest = {
        "format_version": 1,
        "created": created,
        "edgesense_version": __version__,
        "target": {
            "name": target.name, "description": target.description, "arch": target.arch,
            "glibc": ".".join(map(str, target.glibc)), "python_version": resolution.python_version,
            "platform_tags": list(target.platform_tags), "apt_packages": list(resolution.apt_packages),
            "opencv": "apt" if resolution.system_site_packages and any(
                c.role == "opencv" and c.status == "system" for c in resolution.choices) else "pip",
            "system_site_packages": resolution.system_site_packages,
        },
        "interpreter": {
            "package": resolution.interpreter,
            "fallback_order": [p for p in target.interpreters if _interpreter_allowed(p, resolution.python_version)],
            "runtime_order": ["ai_edge_litert", "tflite_runtime", "tensorflow.lite"],
            **model_settings,
        },
        "wheels": options.wheels,
        "resolved": resolution.resolved,
        "dependencies": [c.to_dict() for c in resolution.choices],
        "packages": [
            {"name": p.name, "version": p.version, "file": f"wheelhouse/{p.filename}", "sha256": p.sha256}
            for p in resolution.packages
        ],
        "edgesense_wheel": f"wheelhouse/{own.name}",
        "model": {
            "path": BUNDLE_MODEL, "metadata": BUNDLE_METADATA, "source": str(options.model_path or BUNDLE_MODEL),
            "sha256": files[BUNDLE_MODEL]["sha256"], "bytes": len(model_bytes),
        },
        "config": {"path": BUNDLE_CONFIG, "source": config_path.name, "model_field": model_field},
        "install": {"prefix": INSTALL_PREFIX, "service": "edgesense.service", "user": SERVICE_USER,
                    "groups": list(SERVICE_GROUPS), "events": EVENTS_PATH},
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, choices=list(TARGETS), help="the device kind")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write (new or empty)")
    parser.add_argument("--model", type=Path, default=None, help="model to bundle (default models/edgesense.tflite)")
    parser.add_argument("--config", type=Path, default=None,
                        help="device config to bundle (default firmware_configs/<target>.yaml)")
    parser.add_argument("--no-wheels", action="store_true",
                        help="no resolution or downloads: the device installs the packages from PyPI")
    parser.add_argument("--python-version", default=None, metavar="X.Y",
                        help="the device's Python (default: the target's, e.g. 3.11 on Raspberry Pi OS Bookworm)")
    parser.add_argument("--extra", action="append", default=[], choices=list(KNOWN_EXTRAS),
                        help="also bundle an optional dependency group (mqtt)")
    parser.add_argument("--edgesense-wheel", type=Path, default=None, help="use this EdgeSense wheel instead of building one")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle in --out")


def run(args: argparse.Namespace) -> int:
    options = DeployOptions(
        target=args.target, out_dir=args.out, model_path=args.model, config_path=args.config,
        wheels=not args.no_wheels, python_version=args.python_version, extras=tuple(args.extra),
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
