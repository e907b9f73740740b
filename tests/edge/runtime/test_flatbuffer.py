"""edgesense.runtime.flatbuffer: the pure-Python flatbuffer reader, cross-checked against TF's schema."""

from __future__ import annotations

import json

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
