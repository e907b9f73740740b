"""A tiny read-only ``.tflite`` flatbuffer reader (pure Python, no TensorFlow).

The device needs a few facts that the LiteRT interpreter does not expose:
``Model.metadata[name]`` (EdgeSense embeds its metadata JSON there), which subgraph
each SignatureDef runs, and how many weight bytes each subgraph holds. This module
reads exactly those fields from the flatbuffer, with bounds checks, so it works with
``ai_edge_litert``, ``tflite_runtime`` or no interpreter at all.

Field numbers follow ``tensorflow/compiler/mlir/lite/schema/schema.fbs``::

    table Model     { version:uint; operator_codes; subgraphs:[SubGraph]; description:string;
                      buffers:[Buffer]; metadata_buffer:[int]; metadata:[Metadata];
                      signature_defs:[SignatureDef]; }
    table SubGraph  { tensors:[Tensor]; inputs; outputs; operators; name:string; }
    table Tensor    { shape; type; buffer:uint; name; ... }
    table Buffer    { data:[ubyte]; offset:ulong; size:ulong; }
    table Metadata  { name:string; buffer:uint; }
    table SignatureDef { inputs; outputs; signature_key:string; deprecated_tag; subgraph_index:uint; }
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Mapping

__all__ = ["TFLITE_FILE_IDENTIFIER", "ModelLayout", "check_tflite_bytes", "read_layout", "read_metadata",
           "metadata_names"]


#: Bytes 4..8 of every TFLite flatbuffer.
TFLITE_FILE_IDENTIFIER = b"TFL3"
_IDENTIFIER_END = 8

# Field indices (0-based order of declaration in schema.fbs).
_MODEL_SUBGRAPHS = 2
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_MODEL_SIGNATURE_DEFS = 7
_SUBGRAPH_TENSORS = 0
_SUBGRAPH_NAME = 4
_TENSOR_BUFFER = 2
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_SIGNATURE_KEY = 2
_SIGNATURE_SUBGRAPH_INDEX = 4

_U16, _U32, _I32, _U64 = "<H", "<I", "<i", "<Q"
_VTABLE_HEADER_BYTES = 4  # vtable size (u16) + table size (u16)
_FIELD_SLOT_BYTES = 2


class _Reader:
    """Bounds-checked little-endian access to one flatbuffer."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.what = what

    def fail(self, message: str) -> None:
        raise ValueError(f"{self.what}: malformed TFLite flatbuffer ({message})")

    def unpack(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            self.fail(f"read of {size} bytes at offset {pos} is outside the {len(self.data)}-byte model; truncated?")
        return struct.unpack_from(fmt, self.data, pos)[0]


class _Table:
    def __init__(self, reader: _Reader, pos: int) -> None:
        self.r = reader
        self.pos = pos
        vtable = pos - reader.unpack(_I32, pos)
        self.vtable = vtable
        self.vtable_bytes = reader.unpack(_U16, vtable)
        if self.vtable_bytes < _VTABLE_HEADER_BYTES:
            reader.fail(f"vtable at {vtable} is {self.vtable_bytes} bytes")

    def _field(self, index: int) -> int | None:
        slot = _VTABLE_HEADER_BYTES + _FIELD_SLOT_BYTES * index
        if slot + _FIELD_SLOT_BYTES > self.vtable_bytes:
            return None
        offset = self.r.unpack(_U16, self.vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        pos = self._field(index)
        return default if pos is None else self.r.unpack(fmt, pos)

    def _indirect(self, index: int) -> int | None:
        pos = self._field(index)
        return None if pos is None else pos + self.r.unpack(_U32, pos)

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when the field is absent."""
        start = self._indirect(index)
        if start is None:
            return 0, 0
        length = self.r.unpack(_U32, start)
        return start + 4, length

    def tables(self, index: int) -> list["_Table"]:
        start, length = self.vector(index)
        if start + 4 * length > len(self.r.data):
            self.r.fail(f"vector of {length} tables at {start} runs past the end; truncated?")
        out = []
        for i in range(length):
            element = start + 4 * i
            out.append(_Table(self.r, element + self.r.unpack(_U32, element)))
        return out

    def byte_span(self, index: int) -> tuple[int, int]:
        start, length = self.vector(index)
        if start + length > len(self.r.data):
            self.r.fail(f"byte vector of {length} at {start} runs past the end; truncated?")
        return start, length

    def string(self, index: int) -> str | None:
        if self._field(index) is None:
            return None
        start, length = self.byte_span(index)
        try:
            return bytes(self.r.data[start:start + length]).decode("utf-8")
        except UnicodeDecodeError:
            self.r.fail(f"string at {start} is not UTF-8")
            raise  # unreachable: fail() raises


@dataclass(frozen=True)
class ModelLayout:
    """What the device needs to know about a model's flatbuffer structure.

    ``metadata``: name -> buffer bytes; ``signatures``: signature key -> subgraph index;
    ``subgraph_names``; ``subgraph_weight_bytes``: per subgraph, the bytes of the distinct
    constant buffers its tensors reference (weights, biases, constant tables).
    """

    metadata: Mapping[str, bytes]
    signatures: Mapping[str, int]
    subgraph_names: tuple[str, ...]
    subgraph_weight_bytes: tuple[int, ...]
    size_bytes: int


def check_tflite_bytes(data: bytes, what: str = "model") -> None:
    """Raise ValueError unless ``data`` starts like a TFLite flatbuffer (identifier, root offset)."""
    if len(data) == 0:
        raise ValueError(f"{what}: the model is empty (0 bytes)")
    if len(data) < _IDENTIFIER_END:
        raise ValueError(f"{what}: {len(data)} bytes is too short to be a TFLite model; truncated?")
    if bytes(data[4:_IDENTIFIER_END]) != TFLITE_FILE_IDENTIFIER:
        raise ValueError(
            f"{what}: not a TFLite model (file identifier {bytes(data[4:_IDENTIFIER_END])!r}, "
            f"expected {TFLITE_FILE_IDENTIFIER!r})"
        )
    root = struct.unpack_from(_U32, data, 0)[0]
    if root + 4 > len(data):
        raise ValueError(f"{what}: root table offset {root} is past the end of the {len(data)}-byte model; truncated?")


def _buffer_span(buffer: _Table, total: int, r: _Reader) -> tuple[int, int]:
    """(start, length) of a Buffer's bytes, inline ``data`` or ``offset``/``size`` (large models)."""
    offset = buffer.scalar(_BUFFER_OFFSET, _U64)
    if offset > 1:  # the converter writes offset 1 / size 0 as a "no data" placeholder
        size = buffer.scalar(_BUFFER_SIZE, _U64)
        if offset + size > total:
            r.fail(f"buffer data [{offset}, {offset + size}) is past the end; truncated?")
        return offset, size
    return buffer.byte_span(_BUFFER_DATA)


def read_layout(data: bytes, what: str = "model") -> ModelLayout:
    """Parse the parts of a ``.tflite`` flatbuffer that EdgeSense needs (see :class:`ModelLayout`)."""
    check_tflite_bytes(data, what)
    r = _Reader(data, what)
    model = _Table(r, r.unpack(_U32, 0))
    buffers = model.tables(_MODEL_BUFFERS)
    spans = [_buffer_span(b, len(data), r) for b in buffers]

    metadata: dict[str, bytes] = {}
    for entry in model.tables(_MODEL_METADATA):
        name = entry.string(_METADATA_NAME) or ""
        index = entry.scalar(_METADATA_BUFFER, _U32)
        if index >= len(spans):
            r.fail(f"metadata {name!r} points at buffer {index} of {len(spans)}")
        start, length = spans[index]
        metadata[name] = bytes(r.data[start:start + length])

    subgraphs = model.tables(_MODEL_SUBGRAPHS)
    names, weights = [], []
    for i, subgraph in enumerate(subgraphs):
        names.append(subgraph.string(_SUBGRAPH_NAME) or f"subgraph_{i}")
        used = {t.scalar(_TENSOR_BUFFER, _U32) for t in subgraph.tables(_SUBGRAPH_TENSORS)}
        weights.append(sum(spans[b][1] for b in used if 0 < b < len(spans)))

    signatures: dict[str, int] = {}
    for sig in model.tables(_MODEL_SIGNATURE_DEFS):
        key = sig.string(_SIGNATURE_KEY) or ""
        index = sig.scalar(_SIGNATURE_SUBGRAPH_INDEX, _U32)
        if index >= len(subgraphs):
            r.fail(f"signature {key!r} points at subgraph {index} of {len(subgraphs)}")
        signatures[key] = index
    return ModelLayout(
        metadata=metadata,
        signatures=signatures,
        subgraph_names=tuple(names),
        subgraph_weight_bytes=tuple(weights),
        size_bytes=len(data),
    )


def metadata_names(data: bytes, what: str = "model") -> tuple[str, ...]:
    """Names of the entries in ``Model.metadata``."""
    return tuple(read_layout(data, what).metadata)


def read_metadata(data: bytes, name: str, what: str = "model") -> bytes | None:
    """The bytes of ``Model.metadata[name]``'s buffer, or None when there is no such entry."""
    return read_layout(data, what).metadata.get(name)
