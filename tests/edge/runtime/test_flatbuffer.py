"""edgesense.runtime.flatbuffer: the pure-Python flatbuffer reader, cross-checked against TF's schema."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesense.runtime.flatbuffer import check_tflite_bytes, metadata_names, read_layout, read_metadata
from edgesense.runtime.model import METADATA_NAME


def _synthetic_model(entries: dict[str, bytes], n_subgraphs: int = 0) -> bytes:
    """A minimal TFLite flatbuffer written with TF's schema object API."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.metadata = []
    model.subgraphs = []
    for i in range(n_subgraphs):
        graph = schema.SubGraphT()
        graph.name = f"g{i}".encode()
        weight = schema.BufferT()
        weight.data = np.arange(10 * (i + 1), dtype=np.uint8)
        model.buffers.append(weight)
        tensor = schema.TensorT()
        tensor.shape = [10 * (i + 1)]
        tensor.type = schema.TensorType.UINT8  # its data: 10 * (i + 1) bytes
        tensor.buffer = len(model.buffers) - 1
        tensor.name = b"w"
        graph.tensors = [tensor]
        model.subgraphs.append(graph)
    for name, payload in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8).copy()
        entry = schema.MetadataT()
        entry.name = name.encode()
        entry.buffer = len(model.buffers)
        model.buffers.append(buffer)
        model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_reads_metadata_entries_exactly():
    payload = json.dumps({"héllo": [1, 2, 3]}).encode("utf-8")
    data = _synthetic_model({"first": b"\x00\x01\x02", METADATA_NAME: payload})
    assert metadata_names(data) == ("first", METADATA_NAME)
    assert read_metadata(data, METADATA_NAME) == payload
    assert read_metadata(data, "first") == b"\x00\x01\x02"
    assert read_metadata(data, "absent") is None


def test_subgraph_weight_bytes_of_synthetic_model():
    layout = read_layout(_synthetic_model({}, n_subgraphs=2))
    assert layout.subgraph_names == ("g0", "g1")
    assert layout.subgraph_weight_bytes == (10, 20)
    assert layout.signatures == {}


def test_layout_of_tiny_model_matches_tf_schema(tiny_model_path):
    from tensorflow.lite.tools import flatbuffer_utils

    data = tiny_model_path.read_bytes()
    layout = read_layout(data)
    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    assert layout.signatures == {s.signatureKey.decode(): s.subgraphIndex for s in obj.signatureDefs}
    assert layout.signatures == {"encode_audio": 0, "encode_image": 1, "fuse": 2}
    assert layout.subgraph_names == ("encode_audio", "encode_image", "fuse")
    expected_meta = {m.name.decode(): bytes(np.asarray(obj.buffers[m.buffer].data, np.uint8)) for m in obj.metadata}
    assert dict(layout.metadata) == expected_meta
    for i, graph in enumerate(obj.subgraphs):
        used = {t.buffer for t in graph.tensors if t.buffer > 0}
        want = sum(len(obj.buffers[b].data) for b in used if obj.buffers[b].data is not None)
        assert layout.subgraph_weight_bytes[i] == want > 0
    meta = json.loads(layout.metadata[METADATA_NAME].decode("utf-8"))
    assert meta["format_version"] == 1 and meta["quantization"]["mode"] == "int8"
    assert layout.size_bytes == len(data)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"TFL3", "too short"),
    (b"\x00" * 4 + b"NOPE" + b"\x00" * 16, "not a TFLite model"),
    (b"\xff\xff\x00\x00TFL3" + b"\x00" * 8, "truncated"),
])
def test_rejects_non_tflite_bytes(data, message):
    with pytest.raises(ValueError, match=message):
        check_tflite_bytes(data, "x.tflite")
    with pytest.raises(ValueError, match="x.tflite"):
        read_layout(data, "x.tflite")


def test_truncated_model_is_a_value_error_or_reads_the_same(tiny_model_path):
    """The reader checks only what it reads: a cut through those fields is a ValueError;
    a cut elsewhere (e.g. operator codes, which the interpreter's verifier catches) never
    yields different data."""
    data = tiny_model_path.read_bytes()
    full = read_layout(data)
    for cut in (64, len(data) // 4, len(data) // 2):
        with pytest.raises(ValueError, match="tiny_int8"):
            read_layout(data[:cut], str(tiny_model_path))
    for cut in range(8, len(data), 37):
        try:
            layout = read_layout(data[:cut])
        except ValueError:
            continue
        assert layout.metadata == full.metadata and layout.subgraph_weight_bytes == full.subgraph_weight_bytes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_bytes_only_ever_raise_value_error(tiny_model_path, data):
    model = bytearray(tiny_model_path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(model) - 1))
        model[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(model)))
    try:
        layout = read_layout(bytes(model[:cut]))
    except ValueError:
        return
    assert all(isinstance(v, bytes) and len(v) <= cut for v in layout.metadata.values())
    assert all(0 <= n <= cut for n in layout.subgraph_weight_bytes)


REPO = Path(__file__).resolve().parents[3]
BUNDLED = REPO / "models" / "edgesense.tflite"


def _damaged(tmp_path: Path, name: str, edit) -> Path:
    """The bundled model through TF's flatbuffer object API with ``edit(model_object)`` applied."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(BUNDLED.read_bytes()))
    edit(obj)
    out = tmp_path / name
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(obj)))
    return out


def _operator(obj, subgraph: str, op_name: str):
    """(number, operator) of the first ``op_name`` in ``subgraph``."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = next(g for g in obj.subgraphs if g.name.decode() == subgraph)
    code = getattr(schema.BuiltinOperator, op_name)
    return next((i, op) for i, op in enumerate(graph.operators)
                if max(obj.operatorCodes[op.opcodeIndex].builtinCode,
                       obj.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == code)


@pytest.mark.parametrize("subgraph, op_name, position", [
    ("fuse", "MUL", 0), ("encode_audio", "CONV_2D", 1), ("fuse", "FULLY_CONNECTED", 1),
    ("fuse", "CONCATENATION", 3), ("encode_audio", "RESHAPE", 1)])
def test_an_absent_input_that_the_operator_needs_is_refused(tmp_path, subgraph, op_name, position):
    """An input index of -1 where the operator needs the tensor made LiteRT die with SIGSEGV at load."""
    pytest.importorskip("tensorflow")
    number = []

    def edit(obj):
        i, op = _operator(obj, subgraph, op_name)
        op.inputs[position] = -1
        number.append(i)

    path = _damaged(tmp_path, "absent.tflite", edit)
    with pytest.raises(ValueError, match=rf"absent.tflite: subgraph '{subgraph}' operator {number[0]} \({op_name}\): "
                                         rf"expected a tensor for input {position}, .* got -1 \(absent\)"):
        read_layout(path.read_bytes(), str(path))


def test_an_absent_bias_is_no_damage(tmp_path):
    pytest.importorskip("tensorflow")
    path = _damaged(tmp_path, "no_bias.tflite",
                    lambda obj: _operator(obj, "fuse", "FULLY_CONNECTED")[1].inputs.__setitem__(2, -1))
    assert read_layout(path.read_bytes()).subgraph_names == ("encode_audio", "encode_image", "fuse")


@pytest.mark.parametrize("shape", [[12, 0], [6, 80], [-12, -80]])
def test_a_constant_whose_shape_disagrees_with_its_data_is_refused(tmp_path, shape):
    """A weight dimension of 0 (or an axis list cut short) loaded and answered other numbers."""
    pytest.importorskip("tensorflow")

    def edit(obj):
        weights = obj.subgraphs[2].tensors[_operator(obj, "fuse", "FULLY_CONNECTED")[1].inputs[1]]
        assert list(weights.shape) == [12, 80]
        weights.shape = np.array(shape, np.int32)

    path = _damaged(tmp_path, "reshaped.tflite", edit)
    with pytest.raises(ValueError, match=rf"reshaped.tflite: subgraph 'fuse' tensor '[^']+': expected a shape of 960 "
                                         rf"elements, as its constant data holds, got \[{shape[0]}, {shape[1]}\]"):
        read_layout(path.read_bytes(), str(path))


def test_inspect_of_a_model_with_an_absent_input_is_one_line_exit_2(tmp_path):
    """`edgesense inspect` died with SIGSEGV (return code -11), no message."""
    pytest.importorskip("tensorflow")
    path = _damaged(tmp_path, "absent.tflite", lambda obj: _operator(obj, "fuse", "MUL")[1].inputs.__setitem__(0, -1))
    out = subprocess.run([sys.executable, "-m", "edgesense.app.cli", "inspect", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, (out.returncode, out.stderr[-500:])
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("edgesense: error:") and "operator 0 (MUL)" in out.stderr


def _openwakeword_models() -> list[Path]:
    spec = importlib.util.find_spec("openwakeword")
    folder = Path(spec.origin).parent / "resources" / "models" if spec and spec.origin else None
    return sorted(folder.glob("*.tflite")) if folder else []


@pytest.mark.parametrize("path", [*sorted((REPO / "models").glob("*.tflite")),
                                  *sorted((REPO / "models" / "references").glob("*.tflite")), *_openwakeword_models()],
                         ids=lambda p: p.name)
def test_real_models_pass_the_structure_checks(path):
    """Optional inputs (hey_jarvis's FULLY_CONNECTED without a bias) and empty tensors are no damage."""
    read_layout(path.read_bytes(), str(path))


def test_the_required_inputs_name_the_schemas_operators():
    schema = pytest.importorskip("tensorflow.lite.python.schema_py_generated")
    from edgesense.runtime.flatbuffer import _REQUIRED_INPUTS

    for code, (name, _) in _REQUIRED_INPUTS.items():
        assert getattr(schema.BuiltinOperator, name) == code, name
