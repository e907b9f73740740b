"""edgesense.runtime.interpreter: backend choice, delegate fallback, bad model files."""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import threading
import time
import types
from pathlib import Path

import pytest

import edgesense.runtime.interpreter as interp_mod
from edgesense.runtime.interpreter import (
    InterpreterBackend,
    InterpreterOptions,
    load_interpreter_backend,
    load_interpreter_class,
    make_interpreter,
    read_model_bytes,
)


@pytest.fixture(autouse=True)
def _fresh_backend_cache():
    load_interpreter_backend.cache_clear()
    yield
    load_interpreter_backend.cache_clear()


@pytest.mark.parametrize("kwargs, field", [
    ({"num_threads": 0}, "num_threads"),
    ({"num_threads": True}, "num_threads"),
    ({"num_threads": 1.5}, "num_threads"),
    ({"delegate": "tpu"}, "delegate"),
    ({"delegate_library": "libx.so"}, "delegate_library"),
    ({"delegate": "gpu", "delegate_library": ""}, "delegate_library"),
])
def test_invalid_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        InterpreterOptions(**kwargs)


def test_delegate_library_defaults():
    assert InterpreterOptions(delegate="edgetpu").library == "libedgetpu.so.1"
    assert InterpreterOptions(delegate="gpu").library == "libtensorflowlite_gpu_delegate.so"
    assert InterpreterOptions().library is None
    assert InterpreterOptions(delegate="xnnpack").library is None
    assert InterpreterOptions(delegate="gpu", delegate_library="/opt/x.so").library == "/opt/x.so"


def test_prefers_ai_edge_litert(caplog):
    import ai_edge_litert.interpreter

    with caplog.at_level(logging.INFO, logger="edgesense.runtime.interpreter"):
        assert load_interpreter_class() is ai_edge_litert.interpreter.Interpreter
    assert "ai_edge_litert" in caplog.text


def _fake_import(available: dict[str, object]):
    def import_module(name):
        if name in available:
            return available[name]
        raise ImportError(f"No module named {name!r}")
    return import_module


def test_falls_back_in_order(monkeypatch):
    tflite_rt = types.SimpleNamespace(Interpreter="tflite_runtime.Interpreter", load_delegate="tflite_rt.load")
    tf = types.SimpleNamespace(lite=types.SimpleNamespace(
        Interpreter="tf.lite.Interpreter", experimental=types.SimpleNamespace(load_delegate="tf.load")))
    monkeypatch.setattr(interp_mod.importlib, "import_module",
                        _fake_import({"tflite_runtime.interpreter": tflite_rt, "tensorflow": tf}))
    backend = load_interpreter_backend()
    assert (backend.module, backend.interpreter_class, backend.load_delegate) == (
        "tflite_runtime.interpreter", "tflite_runtime.Interpreter", "tflite_rt.load")
    load_interpreter_backend.cache_clear()
    monkeypatch.setattr(interp_mod.importlib, "import_module", _fake_import({"tensorflow": tf}))
    backend = load_interpreter_backend()
    assert (backend.module, backend.interpreter_class, backend.load_delegate) == (
        "tensorflow", "tf.lite.Interpreter", "tf.load")
    load_interpreter_backend.cache_clear()
    monkeypatch.setattr(interp_mod.importlib, "import_module",
                        _fake_import({"tensorflow": types.SimpleNamespace(lite=types.SimpleNamespace())}))
    with pytest.raises(RuntimeError, match=r"tensorflow \(it has no lite.Interpreter\).*ai-edge-litert"):
        load_interpreter_backend()
    load_interpreter_backend.cache_clear()
    monkeypatch.setattr(interp_mod.importlib, "import_module", _fake_import({}))
    with pytest.raises(RuntimeError, match="ai-edge-litert"):
        load_interpreter_backend()


def test_the_real_tensorflow_fallback_runs_a_model_as_litert_does(monkeypatch, tiny_model_path):
    """Without LiteRT and tflite_runtime, TensorFlow's tf.lite runs the model (``import tensorflow.lite``
    gave a package without Interpreter: AttributeError); its answers are LiteRT's up to one int8 step."""
    pytest.importorskip("tensorflow")
    import numpy as np

    from edgesense.runtime.model import EdgeModel

    def fuse_outputs() -> list[np.ndarray]:
        model = EdgeModel.load(tiny_model_path, InterpreterOptions(num_threads=2))
        rng = np.random.default_rng(0)
        audio = model.encode_audio(rng.normal(-6.0, 3.0, model.audio_frontend.feature_shape))
        image = model.encode_image(rng.uniform(0, 255, model.image_frontend.input_shape))
        return [audio, image, *model.fuse(audio, image)]

    litert = fuse_outputs()
    real_import = interp_mod.importlib.import_module

    def without_litert(name):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name)

    load_interpreter_backend.cache_clear()
    monkeypatch.setattr(interp_mod.importlib, "import_module", without_litert)
    import tensorflow as tf

    assert load_interpreter_class() is tf.lite.Interpreter
    model = EdgeModel.load(tiny_model_path)
    steps = [sig.outputs for sig in model.signatures.values()]
    scale = max(info.quant.scale for outputs in steps for info in outputs.values())
    for ours, theirs in zip(fuse_outputs(), litert):
        np.testing.assert_allclose(ours, theirs, atol=scale * 1.01)


def test_runs_from_path_and_bytes(tiny_model_path):
    for source in (tiny_model_path, str(tiny_model_path), tiny_model_path.read_bytes()):
        interpreter = make_interpreter(source, InterpreterOptions(num_threads=2))
        assert set(interpreter.get_signature_list()) == {"encode_audio", "encode_image", "fuse"}


@pytest.mark.parametrize("content", [b"", b"garbage that is not a model at all", "truncate"])
def test_bad_model_file_is_a_value_error_naming_the_file(tmp_path, tiny_model_path, content):
    if content == "truncate":
        content = tiny_model_path.read_bytes()[:-200]
    path = tmp_path / "broken_model.tflite"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken_model.tflite"):
        make_interpreter(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        make_interpreter(tmp_path / "nowhere.tflite")


def test_a_folder_is_said_to_be_one(tmp_path):
    folder = tmp_path / "models.tflite"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"models.tflite is a folder; expected a .tflite file"):
        make_interpreter(folder)


@pytest.mark.parametrize("options", [
    InterpreterOptions(delegate="edgetpu"),
    InterpreterOptions(delegate="gpu", delegate_library="/nonexistent/libgpu_delegate.so"),
])
def test_missing_delegate_falls_back_to_cpu_with_one_warning(tiny_model_path, caplog, options):
    with caplog.at_level(logging.WARNING):
        interpreter = make_interpreter(tiny_model_path, options)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert options.delegate in warnings[0].getMessage() and "CPU" in warnings[0].getMessage()
    assert "fuse" in interpreter.get_signature_list()


def test_a_library_that_is_no_delegate_falls_back_to_cpu_with_one_warning(tiny_model_path, caplog):
    """delegate_library naming a shared library that exists but is not a TFLite delegate (libm here)."""
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to stand in for the wrong shared library")
    options = InterpreterOptions(delegate="gpu", delegate_library=libm)
    with caplog.at_level(logging.WARNING):
        interpreter = make_interpreter(tiny_model_path, options)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not a TFLite delegate" in warnings[0] and "CPU" in warnings[0], caplog.text
    assert "fuse" in interpreter.get_signature_list()


def test_delegate_that_fails_to_apply_falls_back(monkeypatch, caplog):
    calls = []

    class FakeInterpreter:
        def __init__(self, model_content, num_threads, experimental_delegates):
            calls.append(experimental_delegates)
            if experimental_delegates:
                raise RuntimeError("Failed to apply delegate")

    monkeypatch.setattr(interp_mod, "load_interpreter_backend",
                        lambda: InterpreterBackend("fake", FakeInterpreter, lambda lib: f"delegate:{lib}"))
    monkeypatch.setattr(interp_mod.ctypes, "CDLL",
                        lambda lib: types.SimpleNamespace(**dict.fromkeys(interp_mod.DELEGATE_ENTRY_POINTS)))
    model = b"\x10\x00\x00\x00TFL3" + b"\x00" * 16
    with caplog.at_level(logging.WARNING):
        result = make_interpreter(model, InterpreterOptions(delegate="gpu"))
    assert isinstance(result, FakeInterpreter)
    assert calls == [["delegate:libtensorflowlite_gpu_delegate.so"], None]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_large_file_that_is_no_model_is_refused_without_reading_it_whole(tmp_path):
    # e.g. a recording given as --model: on a device with 1-2 GB of memory, reading it whole could exhaust it
    import tracemalloc

    path = tmp_path / "clip.mp4"
    with path.open("wb") as file:
        file.write(b"\x00\x00\x00\x20ftypisom")
        file.truncate(64 << 20)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"clip.mp4: not a TFLite model \(file identifier b'ftyp'"):
            read_model_bytes(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _write_once_into(fifo, data: bytes) -> threading.Thread:
    """A thread that writes ``data`` into the named pipe ``fifo`` once a reader opens it (30 s at most), as a
    shell's ``<(cat model.tflite)`` does."""
    def write() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:  # without a reader, a non-blocking open fails at once (ENXIO) instead of waiting forever
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.01)
                continue
            os.set_blocking(fd, True)
            with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as file:
                file.write(data)
            return

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_model_from_a_pipe_is_read_once_to_its_end(tmp_path):
    # edgesense run --model <(ssh host cat model.tflite): the shell passes /dev/fd/63, a pipe, not a regular
    # file; it was refused as "model file /dev/fd/63 does not exist".
    data = (Path(__file__).resolve().parents[3] / "models" / "edgesense.tflite").read_bytes()
    fifo = tmp_path / "model.pipe"
    os.mkfifo(fifo)
    writer = _write_once_into(fifo, data)
    assert read_model_bytes(fifo) == (data, str(fifo))
    writer.join(timeout=30)
    empty = tmp_path / "empty.pipe"
    os.mkfifo(empty)
    writer = _write_once_into(empty, b"")
    with pytest.raises(ValueError, match=r"empty.pipe: the model is empty \(0 bytes\)"):
        read_model_bytes(empty)
    writer.join(timeout=30)
