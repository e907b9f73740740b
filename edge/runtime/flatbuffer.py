"""A tiny read-only ``.tflite`` flatbuffer reader (pure Python, no TensorFlow).

The device needs a few facts that the LiteRT interpreter does not expose:
``Model.metadata[name]`` (EdgeSense embeds its metadata JSON there), which subgraph
each SignatureDef runs, and how many weight bytes each subgraph holds. This module
reads exactly those fields from the flatbuffer, with bounds checks, so it works with
``ai_edge_litert``, ``tflite_runtime`` or no interpreter at all.

It also refuses the quantization parameters that make the interpreter abort the process (no exception, no
message) instead of failing: an int8 or int16 tensor without scales, or an int8 ``ADD`` whose input scale is
2^19 times its output's (a kernel's ``TFLITE_CHECK``), or a convolution or fully-connected layer whose
requantization scale reaches the 256 that XNNPACK, the CPU delegate, takes (its failed set-up frees memory
twice). One flipped bit in a model file does any of them. So do an operator input of -1 ("absent") where the
operator needs that input (XNNPACK reads tensor -1: SIGSEGV), and a constant tensor whose shape disagrees with
its data's size (a weight dimension of 0 or a shorter axis list loads and answers other numbers).

Field numbers follow ``tensorflow/compiler/mlir/lite/schema/schema.fbs``::

    table Model     { version:uint; operator_codes; subgraphs:[SubGraph]; description:string;
                      buffers:[Buffer]; metadata_buffer:[int]; metadata:[Metadata];
                      signature_defs:[SignatureDef]; }
    table SubGraph  { tensors:[Tensor]; inputs; outputs; operators; name:string; }
    table OperatorCode { deprecated_builtin_code:byte; custom_code; version; builtin_code:int; }
    table Operator  { opcode_index:uint; inputs:[int]; outputs:[int]; ... }
    table Tensor    { shape:[int]; type:byte; buffer:uint; name:string; quantization:QuantizationParameters;
                      is_variable:bool; sparsity:SparsityParameters; ... }
    table QuantizationParameters { min; max; scale:[float]; zero_point:[long]; ... }
    table Buffer    { data:[ubyte]; offset:ulong; size:ulong; }
    table Metadata  { name:string; buffer:uint; }
    table SignatureDef { inputs; outputs; signature_key:string; deprecated_tag; subgraph_index:uint; }
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Mapping

__all__ = ["MAX_ADD_SCALE_RATIO", "MAX_REQUANTIZATION_SCALE", "TFLITE_FILE_IDENTIFIER", "ModelLayout",
           "check_tflite_bytes", "read_layout", "read_metadata", "metadata_names"]


#: Bytes 4..8 of every TFLite flatbuffer.
TFLITE_FILE_IDENTIFIER = b"TFL3"
_IDENTIFIER_END = 8

# Field indices (0-based order of declaration in schema.fbs).
_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_MODEL_SIGNATURE_DEFS = 7
_SUBGRAPH_TENSORS = 0
_SUBGRAPH_OPERATORS = 3
_SUBGRAPH_NAME = 4
_TENSOR_TYPE = 1
_TENSOR_BUFFER = 2
_TENSOR_NAME = 3
_TENSOR_QUANTIZATION = 4
_TENSOR_SPARSITY = 6
_TENSOR_SHAPE = 0
_QUANTIZATION_SCALE = 2
_OPERATOR_OPCODE_INDEX = 0
_OPERATOR_INPUTS = 1
_OPERATOR_OUTPUTS = 2
_OPCODE_DEPRECATED_BUILTIN = 0
_OPCODE_BUILTIN = 3
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_SIGNATURE_KEY = 2
_SIGNATURE_SUBGRAPH_INDEX = 4

_U16, _U32, _I32, _U64, _I8, _F32 = "<H", "<I", "<i", "<Q", "<b", "<f"
#: TensorType values whose tensors every kernel reads as quantized (real = scale * (q - zero_point)).
_QUANTIZED_TYPES = {9: "int8", 7: "int16"}
_INT8, _UINT8 = 9, 3
#: BuiltinOperator -> (name, input index, weights index) of the layers XNNPACK requantizes per output channel.
_REQUANTIZED_OPS = {3: ("CONV_2D", 0, 1), 4: ("DEPTHWISE_CONV_2D", 0, 1), 9: ("FULLY_CONNECTED", 0, 1),
                    67: ("TRANSPOSE_CONV", 2, 1)}
#: XNNPACK refuses a requantization scale (input scale x weight scale / output scale) at or above this.
MAX_REQUANTIZATION_SCALE = 256.0
_ADD = 0
#: An int8 ADD's input scale / output scale at or above this aborts the interpreter's kernel (it shifts the
#: inputs left by 20 bits, and its output multiplier must stay below 1).
MAX_ADD_SCALE_RATIO = float(2 ** 19)
#: BuiltinOperator -> (name, how many leading inputs it needs; None: all it lists) for the operators the CPU
#: kernels (XNNPACK) take, which read an absent (-1) input without checking (RESHAPE's kernel too: a listed
#: shape input of -1 is SIGSEGV). The optional inputs after these (the bias of a convolution, FULLY_CONNECTED
#: or TRANSPOSE_CONV) may be -1.
_REQUIRED_INPUTS: dict[int, tuple[str, int | None]] = {
    0: ("ADD", 2), 1: ("AVERAGE_POOL_2D", 1), 2: ("CONCATENATION", None), 3: ("CONV_2D", 2),
    4: ("DEPTHWISE_CONV_2D", 2), 5: ("DEPTH_TO_SPACE", 1), 6: ("DEQUANTIZE", 1), 8: ("FLOOR", 1),
    9: ("FULLY_CONNECTED", 2), 11: ("L2_NORMALIZATION", 1), 14: ("LOGISTIC", 1), 17: ("MAX_POOL_2D", 1),
    18: ("MUL", 2), 19: ("RELU", 1), 20: ("RELU_N1_TO_1", 1), 21: ("RELU6", 1), 22: ("RESHAPE", None),
    23: ("RESIZE_BILINEAR", 2), 25: ("SOFTMAX", 1), 26: ("SPACE_TO_DEPTH", 1), 28: ("TANH", 1), 34: ("PAD", 2),
    36: ("GATHER", 2), 39: ("TRANSPOSE", 2), 40: ("MEAN", 2), 41: ("SUB", 2), 42: ("DIV", 2), 43: ("SQUEEZE", 1),
    45: ("STRIDED_SLICE", 4), 47: ("EXP", 1), 49: ("SPLIT", 2), 50: ("LOG_SOFTMAX", 1), 54: ("PRELU", 2),
    55: ("MAXIMUM", 2), 57: ("MINIMUM", 2), 59: ("NEG", 1), 60: ("PADV2", 2), 65: ("SLICE", 3), 66: ("SIN", 1),
    67: ("TRANSPOSE_CONV", 3), 70: ("EXPAND_DIMS", 2), 73: ("LOG", 1), 74: ("SUM", 2), 75: ("SQRT", 1),
    76: ("RSQRT", 1), 82: ("REDUCE_MAX", 2), 83: ("PACK", None), 89: ("REDUCE_MIN", 2), 92: ("SQUARE", 1),
    97: ("RESIZE_NEAREST_NEIGHBOR", 2), 98: ("LEAKY_RELU", 1), 99: ("SQUARED_DIFFERENCE", 2), 101: ("ABS", 1),
    102: ("SPLIT_V", 3), 104: ("CEIL", 1), 106: ("ADD_N", None), 108: ("COS", 1), 111: ("ELU", 1),
    114: ("QUANTIZE", 1), 116: ("ROUND", 1), 117: ("HARD_SWISH", 1), 118: ("IF", None), 119: ("WHILE", None),
    126: ("BATCH_MATMUL", 2), 150: ("GELU", 1), 152: ("RELU_0_TO_1", 1), 158: ("SIGN", 1),
}
#: TensorType -> bytes per element, for the types whose constant data is shape x this many bytes (not string,
#: resource, variant or the packed int4/int2/uint4).
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
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

    def table(self, index: int) -> "_Table | None":
        """The sub-table in field ``index``; None when the field is absent."""
        pos = self._indirect(index)
        return None if pos is None else _Table(self.r, pos)

    def scalars(self, index: int, fmt: str) -> tuple:
        """The elements of a vector of scalars (``fmt``: one little-endian struct code); () when absent."""
        start, length = self.vector(index)
        size = struct.calcsize(fmt)
        if start + size * length > len(self.r.data):
            self.r.fail(f"vector of {length} {size}-byte values at {start} runs past the end; truncated?")
        return struct.unpack_from(f"<{length}{fmt[1:]}", self.r.data, start)

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


def _scales(tensor: _Table) -> tuple[float, ...]:
    quantization = tensor.table(_TENSOR_QUANTIZATION)
    return () if quantization is None else quantization.scalars(_QUANTIZATION_SCALE, _F32)


def _check_quantization(where: str, tensors: list[_Table], operators: list[_Table], opcodes: list[int]) -> None:
    """ValueError naming the tensor for quantization parameters that abort the interpreter (see the module's
    docstring): ``where`` names the file and the subgraph."""
    types = [t.scalar(_TENSOR_TYPE, _I8) for t in tensors]
    scales = [_scales(t) for t in tensors]
    for tensor, kind, values in zip(tensors, types, scales):
        bad = next((c for c, v in enumerate(values) if not (math.isfinite(v) and v > 0)), None)
        if kind in _QUANTIZED_TYPES and (not values or bad is not None):
            got = "none" if not values or bad is None else f"{values[bad]!r} in channel {bad}"
            raise ValueError(f"{where} tensor {tensor.string(_TENSOR_NAME)!r}: expected {_QUANTIZED_TYPES[kind]} "
                             f"quantization scales (finite, > 0), got {got}; the model is damaged")
    quantized = (_INT8, _UINT8)
    for op in operators:
        index = op.scalar(_OPERATOR_OPCODE_INDEX, _U32)
        code = opcodes[index] if index < len(opcodes) else None
        inputs, outputs = op.scalars(_OPERATOR_INPUTS, _I32), op.scalars(_OPERATOR_OUTPUTS, _I32)
        if code == _ADD and len(inputs) == 2 and outputs and all(0 <= t < len(tensors) and types[t] == _INT8
                                                                 for t in (*inputs, outputs[0])):
            ratio = max(scales[inputs[0]][0], scales[inputs[1]][0]) / scales[outputs[0]][0]
            if ratio >= MAX_ADD_SCALE_RATIO:
                raise ValueError(f"{where} ADD output {tensors[outputs[0]].string(_TENSOR_NAME)!r}: expected an input "
                                 f"scale / output scale below {MAX_ADD_SCALE_RATIO:g} (2^19), which the interpreter "
                                 f"takes, got {ratio:.4g}; the model is damaged")
        known = _REQUANTIZED_OPS.get(code) if code is not None else None
        if known is None or not outputs or max(known[1:]) >= len(inputs):
            continue
        name, ins = known[0], (inputs[known[1]], inputs[known[2]], outputs[0])
        if not all(0 <= t < len(tensors) and types[t] in quantized and scales[t] for t in ins):
            continue  # a float or hybrid layer (float activations, int8 weights): not requantized
        (in_scale, *_), weight_scales, (out_scale, *_) = (scales[t] for t in ins)
        if not (math.isfinite(out_scale) and out_scale > 0):
            continue  # a uint8 output without a scale: the interpreter refuses it, with a message
        for channel, weight_scale in enumerate(weight_scales):
            if in_scale * weight_scale / out_scale >= MAX_REQUANTIZATION_SCALE:
                raise ValueError(
                    f"{where} {name} output {tensors[ins[2]].string(_TENSOR_NAME)!r}: expected requantization scales "
                    f"(input x weight / output scale) below {MAX_REQUANTIZATION_SCALE:g}, which the CPU kernels "
                    f"(XNNPACK) take, got {in_scale * weight_scale / out_scale:.4g} in channel {channel}; "
                    f"the model is damaged")


def _check_structure(where: str, tensors: list[_Table], operators: list[_Table], opcodes: list[int],
                     spans: list[tuple[int, int]]) -> None:
    """ValueError naming the operator or tensor for what makes the interpreter crash or answer other numbers (see
    the module's docstring); ``where`` names the file and the subgraph. Indices out of range, the interpreter
    refuses itself, with a message."""
    for number, op in enumerate(operators):
        index = op.scalar(_OPERATOR_OPCODE_INDEX, _U32)
        known = _REQUIRED_INPUTS.get(opcodes[index]) if index < len(opcodes) else None
        if known is None:
            continue
        name, needed = known
        inputs = op.scalars(_OPERATOR_INPUTS, _I32)
        absent = next((k for k, t in enumerate(inputs[:needed]) if t == -1), None)
        if absent is not None:
            raise ValueError(f"{where} operator {number} ({name}): expected a tensor for input {absent}, which "
                             f"{name} needs, got -1 (absent); the model is damaged")
    for tensor in tensors:
        size = _ELEMENT_BYTES.get(tensor.scalar(_TENSOR_TYPE, _I8))
        buffer = tensor.scalar(_TENSOR_BUFFER, _U32)
        if size is None or not 0 < buffer < len(spans) or not spans[buffer][1] or tensor.table(_TENSOR_SPARSITY):
            continue  # not constant, or its data is not shape x size bytes (a sparse tensor's is compressed)
        shape = tensor.scalars(_TENSOR_SHAPE, _I32)
        if any(d < 0 for d in shape) or math.prod(shape) * size != spans[buffer][1]:
            raise ValueError(f"{where} tensor {tensor.string(_TENSOR_NAME)!r}: expected a shape of "
                             f"{spans[buffer][1] // size} elements, as its constant data holds, got {list(shape)}; "
                             f"the model is damaged")


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
    opcodes = [max(code.scalar(_OPCODE_DEPRECATED_BUILTIN, _I8), code.scalar(_OPCODE_BUILTIN, _I32))
               for code in model.tables(_MODEL_OPERATOR_CODES)]
    names, weights = [], []
    for i, subgraph in enumerate(subgraphs):
        names.append(subgraph.string(_SUBGRAPH_NAME) or f"subgraph_{i}")
        tensors = subgraph.tables(_SUBGRAPH_TENSORS)
        used = {t.scalar(_TENSOR_BUFFER, _U32) for t in tensors}
        weights.append(sum(spans[b][1] for b in used if 0 < b < len(spans)))
        operators = subgraph.tables(_SUBGRAPH_OPERATORS)
        _check_structure(f"{what}: subgraph {names[-1]!r}", tensors, operators, opcodes, spans)
        _check_quantization(f"{what}: subgraph {names[-1]!r}", tensors, operators, opcodes)

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
