"""edgesense.runtime.model.EdgeModel: loading checks, the three signatures, parity with Keras, `edgesense inspect`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.runtime.model import METADATA_NAME, EdgeModel

REPO = Path(__file__).resolve().parents[3]
BUNDLED = REPO / "models" / "edgesense.tflite"


@pytest.fixture(scope="module")
def model(tiny_model_path) -> EdgeModel:
    return EdgeModel.load(tiny_model_path)


@pytest.fixture(scope="module")
def validation(tiny_run_dir):
    with np.load(tiny_run_dir / "validation.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _rewrite(path: Path, out: Path, edit) -> Path:
    """Copy a model through TF's flatbuffer object API with ``edit(model_object)`` applied."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    edit(obj)
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return out


def _set_metadata(obj, meta: dict) -> None:
    for entry in obj.metadata:
        if entry.name.decode() == METADATA_NAME:
            obj.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8).copy()


def test_metadata_and_labels(model, tiny_run_dir):
    run = json.loads((tiny_run_dir / "run.json").read_text())
    meta = model.metadata
    assert meta["format_version"] == 1
    assert meta["name"] == "tiny"
    assert meta["labels"] == run["labels"]
    assert model.command_labels == tuple(run["labels"]["command"]) and len(model.command_labels) == 12
    assert model.scene_labels == tuple(run["labels"]["scene"])
    assert model.audio_frontend == AudioFrontendOptions.from_dict(run["audio_frontend"])
    assert model.image_frontend.input_shape == (96, 96, 3)
    assert meta["quantization"]["mode"] == "int8"
    assert meta["params"] == run["params"] and meta["macs"] == run["macs"]
    assert meta["metrics"] == run["metrics"] and meta["data"] == run["data"]
    assert meta["signatures"]["encode_audio"]["inputs"]["audio_features"] == {"shape": [1, 49, 40], "dtype": "int8"}
    assert len(meta["model_version"].split("-")[1]) == 12


def test_sizes(model, tiny_model_path):
    assert model.size_bytes == tiny_model_path.stat().st_size
    parts = model.part_bytes
    assert set(parts) == {"encode_audio", "encode_image", "fuse"}
    assert all(v > 0 for v in parts.values()) and sum(parts.values()) < model.size_bytes
    assert parts == model.metadata["part_bytes"]  # pure-Python reader == converter's TF-side count


def test_signatures_run_with_int8_io(model, validation):
    for sig in model.signatures.values():
        for info in list(sig.inputs.values()) + list(sig.outputs.values()):
            assert info.dtype == np.int8 and info.quant.is_quantized
    a = model.encode_audio(validation["audio_features"][0])
    v = model.encode_image(validation["image"][0].astype(np.float32))
    assert a.shape == (model.audio_embedding_dim,) and a.dtype == np.float32
    assert v.shape == (model.image_embedding_dim,) and v.dtype == np.float32
    for audio, image in ((a, v), (a, None), (None, v), (None, None)):
        command, scene = model.fuse(audio, image)
        assert command.shape == (12,) and scene.shape == (len(model.scene_labels),)
        assert command.dtype == np.float32 and scene.dtype == np.float32
        assert abs(command.sum() - 1) < 0.05 and abs(scene.sum() - 1) < 0.05
    assert set(model.last_timings_ms) == {"encode_audio", "encode_image", "fuse"}


def test_one_model_answers_each_of_two_threads_for_its_own_inputs(tiny_model_path, validation):
    """Two threads (two pipelines sharing a loaded model, one per camera) calling one model at once: each
    inference must be whole, not the other thread's inputs or outputs (the interpreter runs one at a time)."""
    model = EdgeModel.load(tiny_model_path)
    inputs = [validation["image"][i].astype(np.float32) for i in range(2)]
    alone = [model.encode_image(image) for image in inputs]
    wrong: list[int] = []

    def hammer(i: int) -> None:
        for _ in range(150):
            if not np.array_equal(model.encode_image(inputs[i]), alone[i]):
                wrong.append(i)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not np.array_equal(alone[0], alone[1]) and wrong == []


def test_presence_flags_change_the_outputs(model, validation):
    a = model.encode_audio(validation["audio_features"][0])
    v = model.encode_image(validation["image"][0].astype(np.float32))
    with_both = model.fuse(a, v)
    audio_only = model.fuse(a, None)
    assert not np.array_equal(with_both[1], audio_only[1])


def test_fuse_quantizes_only_the_embeddings_it_is_given(model, validation, monkeypatch):
    # The presence flags and an absent modality's zeros are the same on every call: quantized once, at load (each
    # fuse quantized all four inputs afresh, a third of the fusion stage's time). The answers are those of the four
    # inputs quantized on the call.
    import edgesense.runtime.model as model_module
    from edgesense.runtime.quant import quantize

    a = model.encode_audio(validation["audio_features"][0])
    v = model.encode_image(validation["image"][0].astype(np.float32))
    inputs = model.signatures["fuse"].inputs
    runner = model._runners["fuse"]

    def quantized_on_the_call(audio, image):
        values = {"audio_embedding": a if audio else np.zeros_like(a),
                  "image_embedding": v if image else np.zeros_like(v),
                  "audio_present": np.float32([audio]), "image_present": np.float32([image])}
        raw = runner(**{name: quantize(values[name].reshape(info.shape), info.quant) for name, info in inputs.items()})
        return [model_module.dequantize(raw[name], model.signatures["fuse"].outputs[name].quant).reshape(-1)
                for name in ("command", "scene")]

    calls = []
    monkeypatch.setattr(model_module, "quantize", lambda x, params: calls.append(x.size) or quantize(x, params))
    for audio, image in ((True, True), (True, False), (False, True), (False, False)):
        calls.clear()
        got = model.fuse(a if audio else None, v if image else None)
        assert sorted(calls) == sorted(size for size, given in ((a.size, audio), (v.size, image)) if given)
        for got_probs, want_probs in zip(got, quantized_on_the_call(audio, image)):
            assert np.array_equal(got_probs, want_probs)


def test_int8_model_tracks_the_float_model(model, tiny_run_dir, validation):
    from edgesense.quantize.convert import float_embeddings, load_run

    run = load_run(tiny_run_dir)
    feats = validation["audio_features"]
    emb = float_embeddings(run.audio_encoder, feats)
    n = len(feats)
    want = np.asarray(run.fusion_head([emb, np.zeros((n, run.image_embedding_dim), np.float32),
                                       np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)])["command"])
    got = np.stack([model.fuse(model.encode_audio(f), None)[0] for f in feats])
    assert np.abs(got - want).mean() < 0.02
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8
    accuracy = (got.argmax(1) == validation["command_label"]).mean()
    assert accuracy > 3 / 12  # well above chance: the fixture model is not degenerate


def test_input_shape_checks(model):
    with pytest.raises(ValueError, match=r"audio_features: expected shape \(49, 40\)"):
        model.encode_audio(np.zeros((40, 49), np.float32))
    with pytest.raises(ValueError, match="image: expected shape"):
        model.encode_image(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="audio_embedding: expected shape"):
        model.fuse(np.zeros(3, np.float32), None)
    assert model.encode_audio(np.zeros((1, 49, 40), np.float32)).shape == (model.audio_embedding_dim,)


@pytest.fixture(scope="module")
def float_model(tiny_run_dir, tmp_path_factory) -> EdgeModel:
    """The tiny run as a dynamic-range model: float32 inputs and outputs."""
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    out = tmp_path_factory.mktemp("float_model") / "tiny_dynamic.tflite"
    convert_run(tiny_run_dir, out, QuantizeOptions(mode="dynamic"))
    return EdgeModel.load(out)


@pytest.mark.parametrize("kind", ["int8", "float"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_inputs_are_refused_naming_the_input(model, float_model, kind, bad):
    """A float model would answer NaN probabilities (and an int8 one saturate) without a word."""
    m = model if kind == "int8" else float_model
    features = np.zeros((49, 40), np.float64)
    features[3, 5] = bad
    with pytest.raises(ValueError, match=r"encode_audio: audio_features: expected finite float32 values, got 1 "):
        m.encode_audio(features)
    image = np.zeros(m.image_frontend.input_shape, np.float64)
    image[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"encode_image: image: expected finite"):
        m.encode_image(image)
    embedding = m.encode_audio(np.zeros((49, 40), np.float32)).astype(np.float64)
    embedding[0] = bad
    with pytest.raises(ValueError, match=r"fuse: audio_embedding: expected finite"):
        m.fuse(embedding, None)
    command, scene = m.fuse(m.encode_audio(np.zeros((49, 40), np.float32)), None)
    assert np.isfinite(command).all() and np.isfinite(scene).all()


def test_expected_audio_frontend_mismatch_names_the_fields(tiny_model_path):
    expected = AudioFrontendOptions(window_ms=25.0, num_mel_bins=32)
    with pytest.raises(ValueError) as info:
        EdgeModel.load(tiny_model_path, expected_audio_frontend=expected)
    message = str(info.value)
    assert "window_ms: model has 30.0, expected 25.0" in message
    assert "num_mel_bins: model has 40, expected 32" in message
    assert "hop_ms" not in message and str(tiny_model_path) in message
    loaded = EdgeModel.load(tiny_model_path, expected_audio_frontend=AudioFrontendOptions())
    assert loaded.audio_frontend == AudioFrontendOptions()


def test_options_of_the_wrong_type_are_one_line_naming_options():
    """``EdgeModel.load(path, options={"num_threads": 1})`` said ``'dict' object has no attribute 'library'``."""
    for bad in ({"num_threads": 1}, None, 2):
        with pytest.raises(ValueError, match=r"^options: expected InterpreterOptions \(or ModelOptions\), got"):
            EdgeModel.load(BUNDLED, options=bad)


def test_missing_metadata(tiny_model_path, tmp_path):
    path = _rewrite(tiny_model_path, tmp_path / "no_meta.tflite",
                    lambda obj: setattr(obj, "metadata", [m for m in obj.metadata if m.name != b"edgesense"]))
    with pytest.raises(ValueError, match=r"no_meta.tflite: no 'edgesense' metadata"):
        EdgeModel.load(path)


def test_missing_signature(tiny_model_path, tmp_path):
    path = _rewrite(tiny_model_path, tmp_path / "two_sigs.tflite",
                    lambda obj: setattr(obj, "signatureDefs", obj.signatureDefs[:2]))
    with pytest.raises(ValueError, match=r"two_sigs.tflite: missing signature 'fuse'"):
        EdgeModel.load(path)


def test_input_shape_that_disagrees_with_the_metadata(tiny_model_path, model, tmp_path):
    meta = dict(model.metadata)
    meta["audio_frontend"] = dict(meta["audio_frontend"], clip_duration_ms=500)
    path = _rewrite(tiny_model_path, tmp_path / "short_clip.tflite", lambda obj: _set_metadata(obj, meta))
    with pytest.raises(ValueError,
                       match=r"short_clip.tflite: .*'audio_features': expected shape \(1, 24, 40\), got \(1, 49, 40\)"):
        EdgeModel.load(path)


def test_label_count_that_disagrees_with_the_outputs(tiny_model_path, model, tmp_path):
    meta = dict(model.metadata, labels={"command": ["a", "b"], "scene": list(model.scene_labels)})
    path = _rewrite(tiny_model_path, tmp_path / "labels.tflite", lambda obj: _set_metadata(obj, meta))
    with pytest.raises(ValueError, match=r"labels.tflite: .*'command': expected shape \(1, 2\)"):
        EdgeModel.load(path)


def test_labels_that_are_not_names_are_one_line(tiny_model_path, model, tmp_path):
    meta = dict(model.metadata, labels={"command": [7, *model.command_labels[1:]], "scene": list(model.scene_labels)})
    path = _rewrite(tiny_model_path, tmp_path / "numbers.tflite", lambda obj: _set_metadata(obj, meta))
    with pytest.raises(ValueError, match=r"numbers.tflite: metadata labels: expected \{'command'"):
        EdgeModel.load(path)


def test_a_true_is_no_format_version(tiny_model_path, model, tmp_path):
    meta = dict(model.metadata, format_version=True)
    path = _rewrite(tiny_model_path, tmp_path / "true.tflite", lambda obj: _set_metadata(obj, meta))
    with pytest.raises(ValueError, match=r"true.tflite: metadata format_version: expected 1, got True"):
        EdgeModel.load(path)


def _bias_zero_point(obj, value: int) -> None:
    """Give the first per-channel int32 tensor (a bias) a zero point no kernel accepts."""
    from tensorflow.lite.python import schema_py_generated as schema

    for graph in obj.subgraphs:
        for tensor in graph.tensors:
            q = tensor.quantization
            if tensor.type == schema.TensorType.INT32 and q is not None and q.zeroPoint is not None \
                    and len(q.zeroPoint) > 1:
                q.zeroPoint = np.full(len(q.zeroPoint), value, np.int64)
                return
    raise AssertionError("no per-channel int32 tensor")


def test_a_model_the_interpreter_cannot_prepare_fails_at_load_naming_the_file(tiny_model_path, tmp_path):
    path = _rewrite(tiny_model_path, tmp_path / "damaged.tflite", lambda obj: _bias_zero_point(obj, 128))
    with pytest.raises(ValueError, match=r"damaged.tflite: signature '\w+' cannot run \(") as raised:
        EdgeModel.load(path)
    assert "\n" not in str(raised.value)


def test_not_a_model(tmp_path):
    path = tmp_path / "photo.tflite"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(ValueError, match="photo.tflite"):
        EdgeModel.load(path)


def test_device_path_never_imports_tensorflow(tiny_model_path):
    code = (
        "import sys, numpy as np\n"
        "from edgesense.runtime.model import EdgeModel\n"
        f"m = EdgeModel.load({str(tiny_model_path)!r})\n"
        "a = m.encode_audio(np.zeros((49, 40), np.float32))\n"
        "c, s = m.fuse(a, m.encode_image(np.zeros((96, 96, 3), np.float32)))\n"
        "assert c.shape == (12,)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('TF_MODULES', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TF_MODULES []" in out.stdout


def test_inspect_command(tiny_model_path):
    out = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "inspect", str(tiny_model_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for text in ("encode_audio (subgraph 0", "encode_image (subgraph 1", "fuse (subgraph 2", "audio_features",
                 "[1, 49, 40]", "int8", "scale=", "zero_point=", "command labels (12)", "bytes"):
        assert text in out.stdout
    js = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "inspect", "--json", str(tiny_model_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert js.returncode == 0 and json.loads(js.stdout)["name"] == "tiny"


def test_inspect_bad_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    out = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "inspect", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("edgesense: error:") and "empty.tflite" in out.stderr



def _strip_quantization(obj, key: str, tensor: str) -> None:
    """Drop the quantization parameters of signature ``key``'s input or output ``tensor``."""
    sig = next(s for s in obj.signatureDefs if s.signatureKey.decode() == key)
    entry = next(t for t in (*sig.inputs, *sig.outputs) if t.name.decode() == tensor)
    obj.subgraphs[sig.subgraphIndex].tensors[entry.tensorIndex].quantization = None


@pytest.mark.parametrize("key, tensor", [("encode_audio", "audio_features"), ("encode_audio", "audio_embedding")])
def test_an_int8_tensor_without_quantization_parameters_is_refused(tmp_path, key, tensor):
    # The interpreter runs such a file; read with scale 0 its int8 values would pass as plain integers.
    pytest.importorskip("tensorflow")
    path = _rewrite(BUNDLED, tmp_path / "stripped.tflite", lambda obj: _strip_quantization(obj, key, tensor))
    # (the file's own check finds it first, by the subgraph's tensor: edgesense.runtime.flatbuffer)
    with pytest.raises(ValueError, match=rf"stripped.tflite: subgraph '{key}' tensor '[^']+': expected "
                                         r"int8 quantization scales \(finite, > 0\), got none"):
        EdgeModel.load(path)


@pytest.mark.parametrize("mode", ["int8", "dynamic"])
def test_a_head_that_ends_in_logits_is_refused_naming_the_file(run_dir_copy, tmp_path, mode):
    """The recognizers read fuse's outputs as probabilities: a head without its softmax loaded, and its
    logits (up to 6 here) went out as command scores."""
    keras = pytest.importorskip("keras")
    from edgesense.quantize.convert import QuantizeOptions, convert_run

    keras_model = keras.models.load_model(run_dir_copy / "model.keras")
    for name in ("command", "scene"):
        keras_model.get_layer("fusion_head").get_layer(name).activation = keras.activations.linear
    keras_model.save(run_dir_copy / "model.keras")
    out = tmp_path / "logits.tflite"
    convert_run(run_dir_copy, out, QuantizeOptions(mode=mode))
    with pytest.raises(ValueError, match=r"^\S*logits.tflite: signature 'fuse' output 'command': expected "
                                         r"probabilities \(each in \[0, 1\], summing to 1: a softmax\), got values"):
        EdgeModel.load(out)

