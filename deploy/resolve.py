"""Resolving the device dependencies for a target before anything is downloaded (pip --dry-run --report)."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgesense.deploy.targets import (
    INTERPRETER_PACKAGES,
    MIN_PYTHON,
    OPENCV_APT_PACKAGE,
    OPENCV_PIP_PACKAGES,
    TARGETS,
    TFLITE_RUNTIME_MAX_PYTHON,
    Target,
    _parse_python_version,
)
from edgesense.schema.validate import is_positive, require

__all__ = ["DependencyChoice", "ResolveOptions", "Resolution", "ResolvedPackage", "plan_dependencies", "project_root",
           "resolve"]

logger = logging.getLogger(__name__)


KNOWN_EXTRAS = ("mqtt",)
#: Constraints an interpreter brings along that its metadata does not declare:
#: tflite-runtime 2.14 is compiled against NumPy 1.x and refuses to load under NumPy 2.
INTERPRETER_CONSTRAINTS: Mapping[str, tuple[str, ...]] = {"tflite-runtime": ("numpy<2",)}
_NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Name or service not known|Max retries exceeded"
    r"|ConnectTimeout|Network is unreachable|Connection refused|ProxyError|SSLError",
)


# --------------------------------------------------------------------------- project

def project_root() -> Path | None:
    """The source checkout this ``edgesense`` package was installed from (has pyproject.toml), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _pyproject(root: Path) -> dict[str, Any] | None:
    """The checkout's pyproject.toml as a mapping (None on Python 3.10, which has no tomllib)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return None
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


def build_backend_installed(root: Path) -> bool:
    """Whether this Python already has every ``[build-system] requires`` of the checkout at ``root``
    at a version that satisfies it (then the own wheel builds without fetching a backend)."""
    from importlib import metadata

    project = _pyproject(root)
    if project is None:
        return False
    Requirement, _ = _packaging()
    for text in project.get("build-system", {}).get("requires", []):
        requirement = Requirement(text)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def _project_requirements(extras: Sequence[str]) -> list[str]:
    """EdgeSense's dependency strings (with markers) and those of ``extras``, from pyproject.toml or metadata."""
    root = project_root()
    pyproject = _pyproject(root) if root is not None else None
    if pyproject is not None:
        project = pyproject["project"]
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


#: The longest a pip run may take (``ResolveOptions.timeout_s``): a day, far above any resolution or download.
MAX_PIP_TIMEOUT_S = 86_400.0


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
        # NaN, inf and True passed: subprocess.run raised ValueError or OverflowError naming no option, or waited 1 s
        require(is_positive(self.timeout_s) and self.timeout_s <= MAX_PIP_TIMEOUT_S, "timeout_s",
                f"a number of seconds in (0, {MAX_PIP_TIMEOUT_S:g}] (a day)", self.timeout_s)
        if self.index_url is not None and not (isinstance(self.index_url, str)
                                               and re.match(r"^(https?|file)://\S+$", self.index_url)):
            raise ValueError(f"index_url: expected an http(s):// or file:// URL, got {self.index_url!r}")


def _python_ok(python_version: str) -> bool:
    return _parse_python_version(python_version, "python_version") >= MIN_PYTHON


def _interpreter_allowed(package: str, python_version: str) -> bool:
    return (package != "tflite-runtime"
            or _parse_python_version(python_version, "python_version") <= TFLITE_RUNTIME_MAX_PYTHON)


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
            applicable = [p for p in chain
                          if p in by_name and (by_name[p].marker is None or by_name[p].marker.evaluate(env))]
            first = applicable[0] if applicable else (chain[0] if chain else None)
            interpreter_done = True
            if first is None:
                default = target.interpreters[0]
                preferred.append(Dependency(default, plain(by_name.get(default, req)), "interpreter"))
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
            raise RuntimeError(f"pip took longer than {self.options.timeout_s:.0f} s "
                               f"({shlex.join(argv[:6])} ...)") from None
        if proc.returncode != 0 and _NETWORK_ERRORS.search(proc.stdout + proc.stderr):
            raise RuntimeError(
                "cannot reach the package index to resolve the dependencies (use --no-wheels to make a bundle "
                f"that installs from PyPI on the device): {_pip_error(proc)}"
            )
        return proc

    def dry_run(self, requirements: Sequence[str],
                constraints: Sequence[str]) -> tuple[list[ResolvedPackage] | None, str]:
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

    def download_any(self, requirement: str, dest: Path) -> None:
        """One pure-Python wheel (``py3-none-any``: the same for every target), without its dependencies."""
        args = ["download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest), "--retries", "2",
                "--timeout", "60", *(["--index-url", self.options.index_url] if self.options.index_url else []),
                requirement]
        proc = self._run(args)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download of {requirement} failed: {_pip_error(proc)}")

    def download(self, lock_file: Path, dest: Path) -> None:
        args = ["download", "--no-deps", "--require-hashes", "--quiet", "-d", str(dest), "--retries", "2",
                "--timeout", "60", *self.platform_args(), "-r", str(lock_file)]
        proc = self._run(args)
        if proc.returncode != 0:
            raise RuntimeError(f"pip download for {self.target.name} failed: {_pip_error(proc)}")


#: pip's lines that only point elsewhere ("see above"): never the cause a user needs.
_PIP_GENERIC = re.compile(
    r"subprocess-exited-with-error|metadata-generation-failed|failed-wheel-build|See above for details"
    r"|Failed building wheel|Failed to build|originates from a subprocess|not a problem with pip|"
    r"Encountered error while|is an issue with the package|is ignored", re.IGNORECASE)
_PIP_ERROR_WORD = re.compile(r"\berror\b|Error:", re.IGNORECASE)


def _subprocess_output(lines: Sequence[str]) -> list[str]:
    """The lines a failed build backend printed (pip frames them: ``╰─> [N lines of output]`` ...
    ``[end of output]``)."""
    inner, inside = [], False
    for line in lines:
        if "lines of output]" in line:
            inside = True
        elif "[end of output]" in line:
            inside = False
        elif inside and line:
            inner.append(line)
    return inner


def _pip_error(proc: subprocess.CompletedProcess) -> str:
    """The underlying cause of a failed pip run, in one line: the build backend's own error
    (e.g. ``invalid command 'bdist_wheel'``) before pip's ``ERROR:`` lines; never just "see above"."""
    text = (proc.stderr or "") + (proc.stdout or "")
    lines = [line.strip() for line in text.splitlines()]
    logger.debug("pip's whole output:\n%s", text)
    causes = [line for line in _subprocess_output(lines) if _PIP_ERROR_WORD.search(line)]
    parts = causes[-1:]
    for line in lines:
        if line.startswith("ERROR:") and not _PIP_GENERIC.search(line):
            parts.append(line[len("ERROR:"):].strip())
    parts = list(dict.fromkeys(parts))[:2]
    if parts:
        return "; ".join(parts)
    tail = [line for line in lines if line and not _PIP_GENERIC.search(line)]
    errors = [line for line in tail if _PIP_ERROR_WORD.search(line)]
    if errors:
        return errors[-1]
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
                    choices.append(DependencyChoice(d.name, d.role, "wheel", d.name, _version_of(alone, d.name),
                                                    d.requirement))
                    chosen.append(d.requirement)
                    continue
                picked = None
                tried = [f"{d.name}: {why}"]
                for fb in fallbacks.get(d.name, []):
                    fb_constraints = INTERPRETER_CONSTRAINTS.get(fb.name, ())
                    got, why_fb = pip.dry_run([fb.requirement], target.constraints + fb_constraints)
                    if got is not None:
                        extra_constraints += [c for c in fb_constraints if c not in target.constraints]
                        picked = DependencyChoice(d.name, d.role, "fallback", fb.name, _version_of(got, fb.name),
                                                  fb.requirement,
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
                    # pip's "conflicting dependencies" does not say that the target's own constraint (Jetson's
                    # numpy<2, which has no wheel for Python 3.13) is what leaves nothing: said when it is so.
                    bound = ", ".join(target.constraints)
                    constrained = bool(bound) and pip.dry_run([d.requirement], ())[0] is not None
                    within = f" within the target's constraint {bound}" if constrained else ""
                    problems.append(f"no wheel for {d.name} on {target.name} ({target.arch}, Python {python_version})"
                                    f"{within}: " + "; ".join(tried))
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
