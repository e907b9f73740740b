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

import csv
import datetime as _dt
import email.parser
import io
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from edgesense import __version__
from edgesense.deploy.resolve import (
    KNOWN_EXTRAS,
    Resolution,
    ResolveOptions,
    _interpreter_allowed,
    _Pip,
    _pip_error,
    build_backend_installed,
    project_root,
    resolve,
    static_resolution,
)
from edgesense.app.cli import file_in_the_way
from edgesense.deploy.targets import ARGUS_SOCKET, TARGETS, Target, _parse_python_version
from edgesense.loop.config import DeviceConfig, load_config
from edgesense.quantize.convert import portable_paths
from edgesense.loop.pipeline import check_commands_fit
from edgesense.runtime.flatbuffer import read_layout, read_metadata
from edgesense.runtime.model import METADATA_NAME, embedded_metadata, labels_and_frontends
from edgesense.runtime.second_opinion import HEADS_KIND, StreamHeads
from edgesense.runtime.speech_embedding import (
    DISTRIBUTION,
    DISTRIBUTION_VERSION,
    EMBEDDING_MODEL,
    MEL_MODEL,
    SAMPLE_RATE_HZ,
)
from edgesense.schema.validate import as_path, one_line, require
from edgesense.schema.yaml import update_yaml_file
from edgesense.shipped import shipped_config
from edgesense.train.cache import file_sha256
from edgesense.train.data import phase

__all__ = ["BUNDLE_CONFIG", "BUNDLE_MODEL", "DeployOptions", "build_bundle"]

logger = logging.getLogger(__name__)


INSTALL_PREFIX = "/opt/edgesense"
EVENTS_PATH = "/var/lib/edgesense/events.jsonl"
STATE_DIR = "/var/lib/edgesense"
SERVICE_USER = "edgesense"
SERVICE_GROUPS = ("audio", "video")
BUNDLE_MODEL = "models/edgesense.tflite"
#: A config's second opinion: its heads file goes here, and install.sh installs the wheel that
#: holds speech_embedding without its own dependencies (onnxruntime and tflite-runtime are not needed).
BUNDLE_HEADS = "models/stream_heads.tflite"
SECOND_OPINION_REQUIREMENT = f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}"
BUNDLE_METADATA = "models/edgesense.metadata.json"
BUNDLE_CONFIG = "config.yaml"
MANIFEST = "MANIFEST.json"
LOGROTATE = "edgesense.logrotate"
#: logrotate: rotate the events file past this size, keep this many older files (compressed).
ROTATE_SIZE = "10M"
ROTATE_COUNT = 5
#: The unit's watchdog (``WatchdogSec=``): ``edgesense run`` pings it from its loop at least every half of it. Far
#: above the loop's longest legitimate wait (a stalled microphone's ``audio.read_timeout_ms``, 1 s by default) and
#: above ``camera.stall_timeout_ms`` (10 s by default), with which the loop ends a run whose camera read hangs.
WATCHDOG_S = 30
#: ``TimeoutStartSec=``: from the start to READY=1 (imports, the model, the devices, an MQTT broker's answer).
START_TIMEOUT_S = 120
#: The module of EdgeSense's wheel that speaks systemd's notify protocol: a wheel without it never says READY=1.
NOTIFY_MODULE = "edgesense/app/notify.py"
#: The config field that holds the model path (see ``edge/loop/config.py``).
MODEL_PATH_FIELD = "model.path"
HEADS_PATH_FIELD = "second_opinion.heads_path"
#: EdgeSense's licence text (Apache-2.0) beside the bundle's files, and what the bundle ships from others.
BUNDLE_LICENSE = "LICENSE"
NOTICES = "THIRD_PARTY_NOTICES.md"
#: The second opinion's wheel holds openWakeWord's model files: Google's speech_embedding (Apache-2.0), which
#: the device runs, and others it never runs: six pretrained wake-word models under CC BY-NC-SA 4.0
#: (non-commercial; openWakeWord's README, "License"), silero_vad (MIT, without its licence text) and ONNX copies.
#: The bundle ships the wheel without them.
SECOND_OPINION_MODELS = "openwakeword/resources/models/"
SECOND_OPINION_KEEP = (MEL_MODEL, EMBEDDING_MODEL)


# --------------------------------------------------------------------------- bundle

@dataclass(frozen=True, kw_only=True)
class DeployOptions:
    """What ``edgesense deploy`` writes (see the module docstring).

    ``config_path`` defaults to the shipped ``firmware_configs/<target>.yaml`` (:mod:`edgesense.shipped`:
    the checkout's, or the installed wheel's); ``model_path`` to the model the config's ``model.path``
    names, as ``edgesense run --config`` loads it (the shipped configs': the shipped
    ``models/edgesense.tflite``). ``wheels=False`` skips
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
        require(isinstance(self.target, str) and self.target in TARGETS, "target", f"one of {', '.join(TARGETS)}",
                self.target)  # a list is unhashable: a TypeError from the lookup
        for name in ("out_dir", "model_path", "config_path", "edgesense_wheel"):
            value = getattr(self, name)
            if value is not None or name == "out_dir":  # "" is Path("."): the working folder, or no file
                object.__setattr__(self, name, as_path(name, value))
        if self.python_version is not None:
            _parse_python_version(self.python_version, "python_version")
        if not isinstance(self.extras, tuple) or any(e not in KNOWN_EXTRAS for e in self.extras):
            raise ValueError(f"extras: expected a tuple of {KNOWN_EXTRAS}, got {self.extras!r}")
        if not isinstance(self.wheels, bool) or not isinstance(self.force, bool):
            raise ValueError(f"wheels/force: expected booleans, got {self.wheels!r}/{self.force!r}")
        # None or a mapping failed only when the wheels were resolved (AttributeError)
        require(isinstance(self.resolve_options, ResolveOptions), "resolve_options", "ResolveOptions",
                self.resolve_options)


@dataclass(frozen=True)
class BundleResult:
    out_dir: Path
    manifest: dict[str, Any]
    resolution: Resolution


def _template(name: str) -> str:
    return resources.files("edgesense.deploy").joinpath("templates", name).read_text(encoding="utf-8")


def _render(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @@{key}@@ has no value")
        return values[key]

    out = re.sub(r"@@([A-Z_]+)@@", sub, text)
    return out


def _write_lf(path: Path, text: str) -> None:
    r"""``text`` into ``path`` as UTF-8 with ``\n`` line ends whatever machine builds the bundle: Windows' own
    ``\r\n`` made the Pi's bash read ``install.sh`` as ``bash\r`` (``set: pipefail: invalid option name``)."""
    path.write_text(text, encoding="utf-8", newline="\n")


def _config_model(config: DeviceConfig, config_path: Path) -> Path:
    """The model ``config``'s ``model.path`` names (resolved against the config's folder, as ``edgesense run``
    does): the one a bundle ships without ``--model``. ValueError naming the config and the field when it is
    not a file."""
    path = config.model_path
    if not path.is_file():
        found = "a folder" if path.is_dir() else "no such file"
        raise ValueError(f"{config_path}: {MODEL_PATH_FIELD}: expected a .tflite file, got {path} ({found}); "
                         f"pass --model to bundle another model")
    return path


def _read_model(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"model {path}: no such file (train and quantize one, or pass --model)") from None
    except IsADirectoryError:
        raise ValueError(f"model {path}: is a folder; expected a .tflite file") from None
    metadata = embedded_metadata(read_layout(data, f"model {path}"), f"model {path}")
    if metadata.get("kind") == HEADS_KIND:
        raise ValueError(f"model {path}: metadata labels: expected {{'command': [...], 'scene': [...]}} (an "
                         f"EdgeSense fused model), got a stream-heads file (metadata kind {HEADS_KIND!r}); it "
                         f"belongs in a config's {HEADS_PATH_FIELD}")
    labels_and_frontends(metadata, f"model {path}: metadata")  # the checks EdgeModel.load makes on the device
    return data, metadata


def _check_wheel(path: Path) -> None:
    """``--edgesense-wheel``: an existing zip archive named as EdgeSense's wheel; ValueError otherwise."""
    if not path.is_file():
        raise ValueError(f"--edgesense-wheel {path}: no such file")
    if path.suffix != ".whl":
        raise ValueError(f"--edgesense-wheel {path}: expected a wheel file (a name ending in .whl), "
                         f"got {path.name!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"--edgesense-wheel {path}: expected a wheel (a zip archive), got a file that is not a zip")
    # install.sh installs wheelhouse/edgesense-*.whl with pip, which reads the project and version from the name.
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        name, _, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename:
        name, tags = None, frozenset()
    # Pure Python: py3-none-any (a copy renamed "...-any (1).whl" is a wheel pip refuses on every platform).
    if name != "edgesense" or not any(t.abi == "none" and t.platform == "any" for t in tags):
        raise ValueError(f"--edgesense-wheel {path}: expected EdgeSense's wheel, named like "
                         f"edgesense-{__version__}-py3-none-any.whl, got {path.name!r}")


def _service_readiness(wheel: Path) -> str:
    """The unit's ``Type=`` lines for the EdgeSense ``wheel`` the device installs: ``Type=notify`` with a watchdog
    when its ``edgesense run`` says READY=1 (:data:`NOTIFY_MODULE`), else ``Type=simple``: a unit waiting for a
    READY=1 that never comes would fail its start and be restarted for ever."""
    with zipfile.ZipFile(wheel) as archive:
        notifies = NOTIFY_MODULE in archive.namelist()
    if not notifies:
        logger.warning("%s has no %s (an older EdgeSense): its unit is Type=simple, without systemd's watchdog",
                       wheel.name, NOTIFY_MODULE)
        return (f"# {wheel.name} says nothing to systemd (no {NOTIFY_MODULE}): no READY=1 to wait for, no watchdog\n"
                "Type=simple")
    return ("# edgesense run says READY=1 once its model is loaded and its devices are open, then WATCHDOG=1 from\n"
            f"# its loop: a loop that hangs for {WATCHDOG_S} s is killed, and restarted as a failure; a camera read\n"
            "# that hangs or a microphone deaf for long ends the run itself (camera.stall_timeout_ms,\n"
            "# audio.stall_timeout_ms), exit code 2, restarted too\n"
            f"Type=notify\nNotifyAccess=main\nWatchdogSec={WATCHDOG_S}\nTimeoutStartSec={START_TIMEOUT_S}")


def _portable_model(data: bytes, metadata: dict[str, Any], what: str) -> tuple[bytes, dict[str, Any]]:
    """The model with its embedded metadata's absolute paths (the build machine's data folders, in
    models converted before ``edgesense quantize`` cut them) shortened by :func:`portable_paths`.

    The metadata buffer is rewritten in place, padded with spaces to its old length (JSON allows
    trailing whitespace), so the flatbuffer's layout does not change."""
    portable = portable_paths(metadata)
    if portable == metadata:
        return data, metadata
    raw = read_metadata(data, METADATA_NAME, what)
    start = data.find(raw) if raw else -1
    text = json.dumps(portable, sort_keys=True).encode("utf-8")
    if start < 0 or data.find(raw, start + 1) >= 0 or len(text) > len(raw):
        logger.warning("%s: could not shorten the paths in its metadata; bundled as it is", what)
        return data, metadata
    out = data[:start] + text.ljust(len(raw), b" ") + data[start + len(raw):]
    if embedded_metadata(read_layout(out, what), what) != portable:  # pragma: no cover - a safety net
        raise RuntimeError(f"{what}: rewriting its metadata failed")
    return out, portable


def _read_heads(heads_path: str | None, config_path: Path, metadata: Mapping[str, Any]) -> bytes | None:
    """The config's stream-heads file (``None`` without a second opinion), checked to be one whose
    labels are the model's (ValueError naming the config field and the two ways out otherwise), with the
    absolute paths in its metadata shortened as the model's are (:func:`_portable_model`)."""
    if heads_path is None:
        return None
    where = f"{config_path}: {HEADS_PATH_FIELD}"
    try:
        data = Path(heads_path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}: expected a stream-heads file, got {heads_path} ({exc.strerror or exc})") from None
    try:
        heads = StreamHeads(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {heads_path}: {exc}") from None
    labels = list((metadata.get("labels") or {}).get("command") or [])
    if list(heads.labels) != labels:
        raise ValueError(f"{where}: expected heads with the model's labels {labels}, got {list(heads.labels)}: "
                         "heads of the model's words come from edgesense train-stream-heads --model MODEL (or "
                         "pass --config a copy of this config without its second_opinion: section to run the "
                         "model alone)")
    rate_hz = labels_and_frontends(metadata, "model metadata")[1].sample_rate_hz
    if rate_hz != SAMPLE_RATE_HZ:  # the heads listen through speech_embedding, at its rate only
        raise ValueError(f"{where}: expected a model of {SAMPLE_RATE_HZ} Hz audio (speech_embedding's rate) "
                         f"beside stream heads, got a model of {rate_hz} Hz: pass --config a copy of this config "
                         "without its second_opinion: section to run the model alone")
    # Its metadata names the student model and the data folders as train-stream-heads was given them.
    return _portable_model(data, dict(heads.metadata), f"stream heads {heads_path}")[0]


def _check_commands(config: DeviceConfig, config_path: Path, metadata: Mapping[str, Any], model_path: Path) -> None:
    """The checks the device's loop makes of the config's ``commands`` against the model's command labels
    (``class_thresholds`` naming words it has, ``max_context_unknown`` below 1 needing ``_unknown_``): a
    config the bundled model does not fit is one line here, not a service that fails at every start."""
    check_commands_fit(config, metadata["labels"]["command"], model_path, where=config_path)


def _write_bundled_config(source: Path, dest: Path, header: str, *, heads: bool = False) -> dict[str, Any]:
    """Copy the device config with ``model.path`` pointing at the bundled model (and, with
    ``heads``, ``second_opinion.heads_path`` at the bundled heads), every other field and comment
    kept; check it loads and points there; return its interpreter settings.

    A relative ``model.path`` resolves against the YAML file's folder, so ``models/edgesense.tflite``
    in a ``config.yaml`` at the bundle's top works wherever the bundle is unpacked.
    """
    fields = {MODEL_PATH_FIELD: BUNDLE_MODEL, **({HEADS_PATH_FIELD: BUNDLE_HEADS} if heads else {})}
    update_yaml_file(source, fields, out=dest, header=header)  # after a byte order mark, in the file's line endings
    # A config kept from other users (its MQTT password) stays so: readable by no one the source's mode excludes.
    dest.chmod(stat.S_IMODE(dest.stat().st_mode) & (stat.S_IMODE(source.stat().st_mode) | 0o600))
    config = load_config(dest)
    checks = ((MODEL_PATH_FIELD, config.model_path, BUNDLE_MODEL),
              (HEADS_PATH_FIELD, config.second_opinion.heads_path, BUNDLE_HEADS if heads else None))
    for field_name, got, bundled in checks:
        if bundled is not None and Path(got).resolve() != (dest.parent / bundled).resolve():  # type: ignore[arg-type]
            raise RuntimeError(f"the bundled config's {field_name} resolves to {got}, not {dest.parent / bundled}")
    return {"delegate": config.model.delegate, "delegate_library": config.model.delegate_library,
            "num_threads": config.model.num_threads}


#: setuptools' staging folder for wheels in the checkout (emptied before each build of EdgeSense's own wheel).
BUILD_CACHE = Path("build") / "lib"


def _build_own_wheel(dest: Path, options: ResolveOptions) -> Path:
    root = project_root()
    if root is None:
        raise RuntimeError("EdgeSense is not running from a source checkout; pass --edgesense-wheel")
    # setuptools builds through build/lib and keeps what it holds: a module removed from the checkout since an
    # earlier build would ship to the device. It is a build cache only (the strict editable install is elsewhere).
    shutil.rmtree(root / BUILD_CACHE, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="edgesense-wheel-") as tmp:
        # With the build backend pyproject.toml asks for already here, build in place (no download);
        # otherwise (e.g. the `make demo` environment, whose setuptools is too old) let pip fetch it.
        in_place = build_backend_installed(root)
        isolation = ["--no-build-isolation"] if in_place else []
        argv = [*options.pip_command, "wheel", "--no-deps", *isolation, "--quiet", "-w", tmp, str(root)]
        logger.info("building EdgeSense's wheel: %s", shlex.join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=options.timeout_s, check=False)
        wheels = sorted(Path(tmp).glob("edgesense-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            how = "with this Python's build backend" if in_place else "fetching the build backend from the index"
            raise RuntimeError(f"pip wheel of {root} ({how}) failed: {_pip_error(proc)}")
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """ValueError naming ``--out`` unless it is a new folder, an empty one, or (with ``force``) an earlier
    bundle. Nothing is deleted here: :func:`_place_bundle` replaces an earlier bundle once the new one is
    written, so a failure on the way (a pip download, say) leaves it as it was."""
    in_the_way = file_in_the_way(out_dir)
    if in_the_way == out_dir:
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    if in_the_way is not None:
        raise ValueError(f"--out {out_dir}: expected a new or empty folder, got a path inside {in_the_way}, "
                         f"which is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ValueError(f"--out {out_dir}: folder is not empty (--force replaces an earlier bundle)")
        if not (out_dir / MANIFEST).is_file():
            raise ValueError(f"--out {out_dir}: not empty and not a bundle (no {MANIFEST}); refusing to delete it")
        try:  # another program's MANIFEST.json (or a damaged one) vouches for nothing of ours
            manifest = json.loads((out_dir / MANIFEST).read_bytes())
            ours = isinstance(manifest, dict) and "edgesense_version" in manifest and isinstance(manifest.get("files"),
                                                                                                    dict)
            found = "a JSON object without edgesense_version and files" if isinstance(manifest, dict) else (
                f"JSON {type(manifest).__name__}")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            ours, found = False, f"no JSON ({one_line(exc)})"
        if not ours:
            raise ValueError(f"--out {out_dir}: expected an earlier bundle's {MANIFEST} (edgesense_version, files), "
                             f"got {found}; not a bundle, refusing to delete it")


def _staging_dir(out: Path) -> Path:
    """An empty folder on ``out``'s file system for the bundle being written: inside ``out`` when it
    exists (``--out .``, a mount point, an earlier bundle), beside it otherwise."""
    holder = out.resolve() if out.is_dir() else out.resolve().parent
    try:
        holder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.partial-", dir=holder))
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    staging.chmod(0o755)  # mkdtemp makes it 0700
    return staging


def _place_bundle(staging: Path, out: Path) -> None:
    """Put the bundle written in ``staging`` at ``out``: a new ``out`` is ``staging`` renamed; an existing
    one keeps its folder, its old entries (an earlier bundle) are removed and the new ones moved in."""
    if staging.parent != out.resolve():
        staging.rename(out)
        return
    old = [p for p in out.iterdir() if p.name != staging.name]
    if old:
        trash = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.old-", dir=out))
        for entry in old:
            entry.rename(trash / entry.name)
    else:
        trash = None
    for entry in staging.iterdir():
        entry.rename(out / entry.name)
    staging.rmdir()
    if trash is not None:
        shutil.rmtree(trash)


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
    config_path = options.config_path or shipped_config(target.config_name)

    # Everything that can fail without side effects happens first: no half-written bundle.
    static = static_resolution(target, python_version=python_version, extras=options.extras)
    _check_deployable(static)
    config = load_config(config_path)  # the same checks, and the same one-line errors, as edgesense run
    # Without --model, the model the config names (a user's own config points at their own model).
    model_path = options.model_path or _config_model(config, config_path)
    model_bytes, metadata = _portable_model(*_read_model(model_path), f"model {model_path}")
    heads_bytes = _read_heads(config.second_opinion.heads_path, config_path, metadata)
    _check_commands(config, config_path, metadata, model_path)
    if options.edgesense_wheel is not None:
        _check_wheel(options.edgesense_wheel)
    resolution = static
    if options.wheels:
        with phase(logger, "resolving the device's dependencies for %s (Python %s) with pip", target.name,
                   python_version or target.python_version):
            resolution = resolve(target, python_version=python_version, extras=options.extras,
                                 options=options.resolve_options)
        _check_deployable(resolution)
    _check_out_dir(options.out_dir, options.force)

    out = options.out_dir
    staging = _staging_dir(out)
    try:
        _write_bundle(staging, options, target, resolution, model_bytes, metadata, config_path, model_path,
                      heads_bytes)
        _place_bundle(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return BundleResult(out_dir=out, manifest=manifest, resolution=resolution)


def _prune_second_opinion_wheel(path: Path) -> list[str]:
    """Rewrite the second opinion's wheel at ``path`` without the model files the device never runs (see
    :data:`SECOND_OPINION_KEEP`), and without their lines in its ``RECORD``; every file kept is the wheel's,
    byte for byte (the device checks speech_embedding's against ``RECORD``). The names removed, sorted."""
    if not zipfile.is_zipfile(path):
        raise RuntimeError(f"{path.name}: expected a wheel (a zip archive), got a file that is not a zip")
    with zipfile.ZipFile(path) as src:
        infos = src.infolist()
        names = [i.filename for i in infos]
        drop = sorted(n for n in names if n.startswith(SECOND_OPINION_MODELS) and not n.endswith("/")
                      and n not in SECOND_OPINION_KEEP)
        if not drop:
            return []
        missing = [n for n in SECOND_OPINION_KEEP if n not in names]
        if missing:
            raise RuntimeError(f"{path.name}: expected speech_embedding's {', '.join(missing)} inside it")
        partial = path.with_name(path.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in infos:
                if info.filename in drop:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    kept = [row for row in csv.reader(io.StringIO(data.decode("utf-8"))) if row and row[0] not in drop]
                    text = io.StringIO()
                    csv.writer(text, lineterminator="\n").writerows(kept)
                    data = text.getvalue().encode("utf-8")
                dst.writestr(info, data)
    os.replace(partial, path)
    logger.info("%s: left out %d model files EdgeSense does not run (%s)", path.name, len(drop), NOTICES)
    return drop


_LICENCE_FILE = re.compile(r"(?:^|/)(?:LICEN[CS]E|COPYING|NOTICE)[^/]*$", re.IGNORECASE)


def _wheel_licence(path: Path) -> tuple[str, str, list[str]]:
    """``(project, licence, licence files inside)`` of a wheel, as its METADATA states them (``License-Expression``,
    else ``License``, else its licence classifiers)."""
    project = path.name.split("-")[0]
    if not zipfile.is_zipfile(path):
        return project, "not stated (not a zip archive)", []
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        headers = email.parser.HeaderParser().parsestr(
            archive.read(metadata[0]).decode("utf-8", "replace")) if metadata else None
    files = sorted(n for n in names if _LICENCE_FILE.search(n) and not n.endswith("/"))
    if headers is None:
        return project, "not stated (no METADATA)", files
    project = str(headers.get("Name") or project)
    licence = str(headers.get("License-Expression") or "").strip()
    if not licence:
        text = str(headers.get("License") or "").strip()
        licence = text if text and "\n" not in text and len(text) <= 80 else ""
    if not licence:
        classifiers = [str(c).split("::")[-1].strip() for c in headers.get_all("Classifier") or []
                       if str(c).startswith("License ::")]
        licence = " / ".join(classifiers) or "not stated"
    return project, licence, files


def _own_licence_text(own: Path) -> str | None:
    """EdgeSense's licence text: from the EdgeSense wheel the bundle ships, else from the checkout."""
    with zipfile.ZipFile(own) as archive:
        for name in archive.namelist():
            if re.fullmatch(r"edgesense-[^/]+\.dist-info/(?:licenses/)?LICENSE", name):
                return archive.read(name).decode("utf-8")
    root = project_root()
    if root is not None and (root / "LICENSE").is_file():
        return (root / "LICENSE").read_text(encoding="utf-8")
    return None


def _write_notices(out: Path, wheelhouse: Path, own: Path, pruned: Mapping[str, list[str]]) -> None:
    """:data:`BUNDLE_LICENSE` (the Apache License 2.0) and :data:`NOTICES`: each wheel with its licence and where
    its licence text is (inside it; for an Apache-2.0 wheel without one, :data:`BUNDLE_LICENSE`), the sample
    media's attribution and what was left out of the second opinion's wheel."""
    text = _own_licence_text(own)
    if text is not None:
        _write_lf(out / BUNDLE_LICENSE, text)
    else:
        logger.warning("%s holds no LICENSE and this is no checkout: the bundle has no %s", own.name, BUNDLE_LICENSE)
    apache = (f"none inside; `{BUNDLE_LICENSE}` beside this file is the Apache License 2.0" if text is not None else
              "none inside; the Apache License 2.0: https://www.apache.org/licenses/LICENSE-2.0")
    rows = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        project, licence, files = _wheel_licence(wheel)
        if files:
            where = "inside: " + ", ".join(f"`{f}`" for f in files[:3]) + (
                f" and {len(files) - 3} more" if len(files) > 3 else "")
        elif "apache" in licence.lower() or wheel.name == own.name:  # EdgeSense's own wheel is Apache-2.0
            where = apache
        else:
            where = "none inside the wheel"
            logger.warning("%s: its licence (%s) has no text inside it", wheel.name, licence)
        rows.append(f"| `{wheel.name}` | {project} | {licence} | {where} |")
    lines = [
        "# Licences of what this bundle ships",
        "",
        f"EdgeSense (its wheel, the scripts and the config) is Apache-2.0: `{BUNDLE_LICENSE}` is the licence text.",
        "EdgeSense's default model and stream heads (`models/` holds them unless `--model` or a config of your "
        "own named others) were trained on Speech Commands v0.02 (Pete Warden, Google, CC BY 4.0) among other "
        "data; `edgesense/models/README.md` inside EdgeSense's wheel is their model card. The wheel's sample "
        "media hold real speech from Speech Commands v0.02 (CC BY 4.0, "
        "https://creativecommons.org/licenses/by/4.0/) and CC0 recordings: `edgesense/samples/README.md` inside "
        "the wheel attributes them.",
        "",
        "## Wheels",
        "",
        "Each wheel in `wheelhouse/` with the licence its METADATA states and where the licence text is.",
        "",
        "| wheel | project | licence | licence text |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    for name, removed in sorted(pruned.items()):
        if not removed:
            continue
        lines += [
            "",
            f"## `{name}`: left out of it",
            "",
            f"The second opinion runs Google's `speech_embedding` (`{MEL_MODEL}`, `{EMBEDDING_MODEL}`; Apache-2.0) "
            f"from {DISTRIBUTION} (openWakeWord by David Scripka, pruned by Siran Shen; code Apache-2.0). The "
            "wheel also holds model files the device never runs: openWakeWord's pretrained wake-word models, "
            "licensed CC BY-NC-SA 4.0 (non-commercial), silero_vad (MIT) and ONNX copies. `edgesense deploy` "
            "left them out of this copy of the wheel, with their lines in its `RECORD`; every file kept is the "
            "wheel's, byte for byte. Left out:",
            "",
            *(f"- `{n}`" for n in removed),
        ]
    _write_lf(out / NOTICES, "\n".join(lines) + "\n")


def _write_bundle(out: Path, options: DeployOptions, target: Target, resolution: Resolution, model_bytes: bytes,
                  metadata: dict[str, Any], config_path: Path, model_path: Path, heads_bytes: bytes | None) -> None:
    (out / "models").mkdir(parents=True)
    (out / BUNDLE_MODEL).write_bytes(model_bytes)
    if heads_bytes is not None:
        (out / BUNDLE_HEADS).write_bytes(heads_bytes)
    _write_lf(out / BUNDLE_METADATA, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    header = (f"# EdgeSense device config for {target.name}, from {config_path.name} by edgesense deploy;\n"
              f"# {MODEL_PATH_FIELD} points at the bundled model (relative to this file's folder).\n")
    model_settings = _write_bundled_config(config_path, out / BUNDLE_CONFIG, header, heads=heads_bytes is not None)

    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir()
    pruned: dict[str, list[str]] = {}
    if options.edgesense_wheel is not None:
        own = Path(shutil.copy2(options.edgesense_wheel, wheelhouse / options.edgesense_wheel.name))
    else:
        own = _build_own_wheel(wheelhouse, options.resolve_options)
    if options.wheels:
        lock = out / "requirements.lock"
        _write_lf(lock, resolution.lock_text())
        with (tempfile.TemporaryDirectory(prefix="edgesense-dl-") as tmp,
              phase(logger, "downloading %d wheels for %s with pip", len(resolution.packages), target.name)):
            _Pip(target, resolution.python_version, options.resolve_options, Path(tmp)).download(lock, wheelhouse)
        expected = {p.filename for p in resolution.packages}
        got = {p.name for p in wheelhouse.glob("*.whl")} - {own.name}
        if expected - got:
            raise RuntimeError(f"pip download did not bring {', '.join(sorted(expected - got))}")
        if heads_bytes is not None:
            with tempfile.TemporaryDirectory(prefix="edgesense-dl-") as tmp:
                pip = _Pip(target, resolution.python_version, options.resolve_options, Path(tmp))
                pip.download_any(SECOND_OPINION_REQUIREMENT, wheelhouse)
            pruned = {w.name: _prune_second_opinion_wheel(w)
                      for w in wheelhouse.glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl")}
    _write_lf(out / "requirements.txt", resolution.requirements_text())
    _write_notices(out, wheelhouse, own, pruned)

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
        "SECOND_OPINION": "1" if heads_bytes is not None else "0",
        "SECOND_OPINION_REQUIREMENT_Q": q(SECOND_OPINION_REQUIREMENT),
        "SYSTEM_SITE_PACKAGES": "1" if resolution.system_site_packages else "0",
        "USER": SERVICE_USER, "USER_Q": q(SERVICE_USER),
        "GROUPS": " ".join(SERVICE_GROUPS), "GROUPS_Q": q(" ".join(SERVICE_GROUPS)),
        "STATE_DIR_Q": q(STATE_DIR), "STATE_DIR_NAME": Path(STATE_DIR).name,
        "SERVICE_READINESS": _service_readiness(own),
        "PRIVATE_TMP": ("PrivateTmp=true" if target.private_tmp else
                        f"# no PrivateTmp: the CSI camera (nvarguscamerasrc) talks to nvargus-daemon through "
                        f"{ARGUS_SOCKET}\nPrivateTmp=false"),
        # The folder as --out named it (the README's ``cd``; ``out`` here is the staging folder).
        "BUNDLE_DIR_Q": q(options.out_dir.resolve().name),
        "CONFIG": BUNDLE_CONFIG, "CONFIG_Q": q(BUNDLE_CONFIG), "CONFIG_SOURCE": (
            f"firmware_configs/{config_path.name}" if options.config_path is None else config_path.name),
        "HEADS_ROW": "" if heads_bytes is None else (
            f"\n| `{BUNDLE_HEADS}` | the second opinion's stream heads (`{HEADS_PATH_FIELD}`); the "
            f"`speech_embedding` they run on comes with `{SECOND_OPINION_REQUIREMENT}`, which install.sh installs |"),
        "EVENTS": EVENTS_PATH, "EVENTS_Q": q(EVENTS_PATH),
        "ROTATE_SIZE": ROTATE_SIZE, "ROTATE_COUNT": str(ROTATE_COUNT),
        "INTERPRETER": resolution.interpreter or "none",
        "WHEELS_LINE": ("Python packages install offline from `wheelhouse/` (hashes pinned in `requirements.lock`)."
                        if options.wheels else
                        "Made with `--no-wheels`: the device installs the Python packages from PyPI (needs network)."),
        "WHEELHOUSE_TAIL": (" and the pinned dependency wheels for this target" if options.wheels
                            else " only (--no-wheels)"),
    }
    install = out / "install.sh"
    _write_lf(install, _render(_template("install.sh.in"), values))
    install.chmod(0o755)
    _write_lf(out / "edgesense.service", _render(_template("edgesense.service.in"), values))
    _write_lf(out / "README.md", _render(_template("README.md.in"), values))
    _write_lf(out / LOGROTATE, _render(_template(f"{LOGROTATE}.in"), values))

    files = {
        p.relative_to(out).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
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
            "path": BUNDLE_MODEL, "metadata": BUNDLE_METADATA, "source": model_path.name,
            "sha256": files[BUNDLE_MODEL]["sha256"], "bytes": len(model_bytes),
        },
        "config": {"path": BUNDLE_CONFIG, "source": config_path.name, "model_field": MODEL_PATH_FIELD},
        "second_opinion": None if heads_bytes is None else {
            "heads": BUNDLE_HEADS, "sha256": files[BUNDLE_HEADS]["sha256"], "bytes": len(heads_bytes),
            "requirement": SECOND_OPINION_REQUIREMENT, "config_field": HEADS_PATH_FIELD},
        "install": {"prefix": INSTALL_PREFIX, "service": "edgesense.service", "user": SERVICE_USER,
                    "groups": list(SERVICE_GROUPS), "events": EVENTS_PATH,
                    "logrotate": {"file": LOGROTATE, "size": ROTATE_SIZE, "rotate": ROTATE_COUNT}},
        "files": files,
    }
    _write_lf(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
