"""quantize.convert: per-part int8 conversion, the merged multi-signature model, bad run folders."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgesense.quantize.convert import (
    QuantizeOptions,
    _spread,
    check_builtin_ops,
    convert_parts,
    convert_run,
    load_run,
    merge_tflite_parts,
)
from edgesense.runtime.interpreter import make_interpreter
from edgesense.runtime.model import SIGNATURE_INPUTS, SIGNATURE_OUTPUTS, EdgeModel
from edgesense.runtime.quant import QuantParams, quantize

pytestmark = pytest.mark.slow

# schema.fbs TensorType values
TFLITE_FLOAT32, TFLITE_FLOAT16, TFLITE_INT32, TFLITE_INT8 = 0, 1, 2, 9


def _model_object(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


@pytest.mark.parametrize("kwargs, field", [
    ({"mode": "int4"}, "mode"),
    ({"calibration_samples": 0}, "calibration_samples"),
    ({"calibration_samples": True}, "calibration_samples"),
    ({"fusion_calibration_samples": -3}, "fusion_calibration_samples"),
    ({"name": "  "}, "name"),
])
def test_options_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        QuantizeOptions(**kwargs)


def test_calibration_takes_every_sample_unless_capped():
    assert QuantizeOptions().calibration_samples is None  # the default: every sample calibration.npz holds
    assert _spread(360, None).tolist() == list(range(360))
    capped = _spread(360, 300)
    assert len(capped) == 300 and capped[0] == 0 and capped[-1] == 359  # evenly spread, both ends kept
    assert _spread(20, 300).tolist() == list(range(20))


def test_merged_model_structure(tiny_model_path):
    data = tiny_model_path.read_bytes()
    obj = _model_object(data)
    assert len(obj.subgraphs) == 3
    sigs = {s.signatureKey.decode(): s for s in obj.signatureDefs}
    assert {k: s.subgraphIndex for k, s in sigs.items()} == {"encode_audio": 0, "encode_image": 1, "fuse": 2}
    for key, sig in sigs.items():
        assert [m.name.decode() for m in sig.inputs] == list(SIGNATURE_INPUTS[key])
        assert [m.name.decode() for m in sig.outputs] == list(SIGNATURE_OUTPUTS[key])
    assert obj.buffers[0].data is None or len(obj.buffers[0].data) == 0  # the empty sentinel
    names = {m.name.decode() for m in obj.metadata}
    assert names == {"min_runtime_version", "edgesense"}
    for graph in obj.subgraphs:
        assert all(0 <= op.opcodeIndex < len(obj.operatorCodes) for op in graph.operators)
        assert all(0 <= t.buffer < len(obj.buffers) for t in graph.tensors)
        # Intermediate tensors get short names; the converter's keep the inputs and outputs.
        key = graph.name.decode()
        boundary = set(graph.inputs) | set(graph.outputs)
        for i, tensor in enumerate(graph.tensors):
            if i in boundary:
                assert tensor.name.decode().startswith("serving_default_") or "StatefulPartitionedCall" in \
                    tensor.name.decode(), tensor.name
            else:
                assert tensor.name.decode() == f"{key}/{i}"


def test_int8_model_is_full_integer_with_builtin_ops(tiny_model_path):
    data = tiny_model_path.read_bytes()
    ops = check_builtin_ops(data)
    assert "FULLY_CONNECTED" in ops and "CUSTOM" not in ops
    obj = _model_object(data)
    for graph in obj.subgraphs:
        for index in list(graph.inputs) + list(graph.outputs):
            assert graph.tensors[index].type == TFLITE_INT8
        float_tensors = [t.name.decode() for t in graph.tensors if t.type in (TFLITE_FLOAT32, TFLITE_FLOAT16)]
        assert float_tensors == [], f"{graph.name}: float tensors {float_tensors}"
        assert {t.type for t in graph.tensors} <= {TFLITE_INT8, TFLITE_INT32}


def test_metadata_content(tiny_model_path, tiny_run_dir):
    run = json.loads((tiny_run_dir / "run.json").read_text())
    meta = EdgeModel.load(tiny_model_path).metadata
    for key in ("labels", "audio_frontend", "image_frontend", "params", "macs", "data", "metrics", "fusion_strategy"):
        assert meta[key] == run[key], key
    assert meta["quantization"]["mode"] == "int8"
    assert meta["quantization"]["calibration_samples"] == {"encode_audio": 36, "encode_image": 24, "fuse": 36}
    assert meta["embedding_dims"] == {"audio": 8, "image": 8}
    assert set(meta["part_bytes"]) == set(SIGNATURE_INPUTS)
    date, digest = meta["model_version"].split("-")
    assert len(date) == 8 and date.isdigit() and int(digest, 16) >= 0


def test_metadata_carries_no_build_machine_paths(run_dir_copy, tmp_path):
    info = json.loads((run_dir_copy / "run.json").read_text())
    info["data"] = {"speech_commands": ["/home/builder/shared/data/speech_commands"],
                    "scenes": "/home/builder/shared/data/intel_scenes/train", "noise_files": 3,
                    "load_reports": {"noise": "noise recordings: loaded 3 of 3"}}
    (run_dir_copy / "run.json").write_text(json.dumps(info))
    result = convert_run(run_dir_copy, tmp_path / "m.tflite", QuantizeOptions(calibration_samples=8))
    assert EdgeModel.load(result.path).metadata["data"] == {
        "speech_commands": ["data/speech_commands"], "scenes": "intel_scenes/train", "noise_files": 3,
        "load_reports": {"noise": "noise recordings: loaded 3 of 3"}}
    assert b"/home/builder" not in result.path.read_bytes()


def test_merged_signatures_match_the_separate_parts_bit_exactly(tiny_run_dir):
    run = load_run(tiny_run_dir)
    parts, _ = convert_parts(run, QuantizeOptions(calibration_samples=24))
    merged = merge_tflite_parts(parts, {"edgesense": b"{}"})
    merged_interp = make_interpreter(merged)
    with np.load(tiny_run_dir / "validation.npz") as npz:
        audio, image = npz["audio_features"][:5], npz["image"][:5].astype(np.float32)
    rng = np.random.default_rng(3)
    for key, data in parts.items():
        part_runner = make_interpreter(data).get_signature_runner()
        merged_runner = merged_interp.get_signature_runner(key)
        details = merged_runner.get_input_details()
        for i in range(5):
            real = {"audio_features": audio[i][None], "image": image[i][None]}
            feeds = {name: quantize(real.get(name, rng.normal(0, 1, d["shape"])), QuantParams.from_detail(d))
                     for name, d in details.items()}
            want, got = part_runner(**feeds), merged_runner(**feeds)
            assert set(got) == set(SIGNATURE_OUTPUTS[key])
            for name in SIGNATURE_OUTPUTS[key]:
                assert got[name].dtype == np.int8
                np.testing.assert_array_equal(got[name], want[name])
            if key != "fuse":
                assert len(np.unique(got[SIGNATURE_OUTPUTS[key][0]])) > 1  # a real, non-constant output


def test_merge_rejects_unknown_signature_and_multi_signature_parts(tiny_model_path):
    with pytest.raises(ValueError, match="unknown signature 'encode_video'"):
        merge_tflite_parts({"encode_video": tiny_model_path.read_bytes()}, {})
    with pytest.raises(ValueError, match="expected 1 subgraph, got 3"):
        merge_tflite_parts({"encode_audio": tiny_model_path.read_bytes()}, {})


@pytest.mark.parametrize("mode", ["float16", "dynamic"])
def test_float_io_variants(tiny_run_dir, tmp_path, mode):
    result = convert_run(tiny_run_dir, tmp_path / f"{mode}.tflite", QuantizeOptions(mode=mode))
    model = EdgeModel.load(result.path)
    assert model.metadata["quantization"]["mode"] == mode
    for sig in model.signatures.values():
        for info in list(sig.inputs.values()) + list(sig.outputs.values()):
            assert info.dtype == np.float32 and not info.quant.is_quantized
    run = load_run(tiny_run_dir)
    with np.load(tiny_run_dir / "validation.npz") as npz:
        features = npz["audio_features"][:4]
    want = np.asarray(run.audio_encoder(features))
    got = np.stack([model.encode_audio(f) for f in features])
    assert np.abs(got - want).max() < 0.05 * max(1.0, float(np.abs(want).max()))
    check_builtin_ops(result.path.read_bytes())


def test_run_folder_without_model(run_dir_copy, tmp_path):
    (run_dir_copy / "model.keras").unlink()
    with pytest.raises(ValueError, match="has no model.keras"):
        convert_run(run_dir_copy, tmp_path / "m.tflite")


def test_missing_run_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        convert_run(tmp_path / "nope", tmp_path / "m.tflite")


def test_empty_representative_set(run_dir_copy, tmp_path):
    np.savez(run_dir_copy / "calibration.npz", audio_features=np.zeros((0, 49, 40), np.float32),
             image=np.zeros((0, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError,
                       match="'audio_features' has no samples; full-integer int8 needs a representative set"):
        convert_run(run_dir_copy, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_calibration_with_wrong_shape(run_dir_copy, tmp_path):
    np.savez(run_dir_copy / "calibration.npz", audio_features=np.zeros((4, 40, 49), np.float32),
             image=np.zeros((4, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match=r"audio_features: expected float32 \(N, 49, 40\)"):
        convert_run(run_dir_copy, tmp_path / "m.tflite")


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:len(data) // 2], r"cannot read it as a NumPy \.npz archive \(File is not a zip file\)"),
    (lambda data: b"", r"expected a NumPy \.npz archive \(numpy\.savez\), found an empty file \(0 bytes\)"),
    (lambda data: b"audio_features,image\n", r"expected a NumPy \.npz archive \(numpy\.savez\), found a file "
                                             r"that starts with b'audi'"),
], ids=["truncated", "empty", "text"])
def test_a_damaged_calibration_file_is_named_in_one_line(run_dir_copy, tmp_path, damage, message):
    # A truncated archive raised zipfile.BadZipFile, an empty one EOFError; text was taken for a pickle.
    path = run_dir_copy / "calibration.npz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}"):
        convert_run(run_dir_copy, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_unwritable_output(tiny_run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write the output model"):
        convert_run(tiny_run_dir, blocker / "m.tflite")
    with pytest.raises(OSError, match="is a folder"):
        convert_run(tiny_run_dir, tmp_path)


def test_an_existing_model_is_replaced_only_with_force(tiny_run_dir, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"the user's model")
    with pytest.raises(ValueError, match=rf"^out_path {re.escape(str(out))}: exists; pass force=True to replace it$"):
        convert_run(tiny_run_dir, out, QuantizeOptions(calibration_samples=8))
    assert out.read_bytes() == b"the user's model"
    result = convert_run(tiny_run_dir, out, QuantizeOptions(calibration_samples=8), force=True)
    assert result.path == out and EdgeModel.load(out).metadata["quantization"]["mode"] == "int8"


def test_model_that_needs_unsupported_ops(unsupported_op_run, tmp_path):
    with pytest.raises(ValueError, match=r"part 'image_encoder' .*builtin ops only: TF Select ops: MatrixDeterminant"):
        convert_run(unsupported_op_run, tmp_path / "m.tflite")


def test_labels_that_disagree_with_the_model(run_dir_copy, tmp_path):
    info = json.loads((run_dir_copy / "run.json").read_text())
    info["labels"]["scene"] = ["a", "b"]
    (run_dir_copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"scene output width: expected 2 \(run.json labels.scene\), got \(3,\)"):
        convert_run(run_dir_copy, tmp_path / "m.tflite")
