"""The one place where EdgeSense quantizes and dequantizes tensors.

A quantized tensor holds integers ``q`` with ``real = (q - zero_point) * scale``.
:func:`quantize` rounds half away from zero (like TFLite's ``Quantize`` kernel) and
clips to the integer type's range; :func:`dequantize` upcasts to int32 *before*
subtracting the zero point, so int8/uint8 arithmetic never wraps. Float tensors
(scale 0, float dtype) pass through unchanged apart from the dtype.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgesense.schema.validate import found, is_number

__all__ = ["QuantParams", "quantize", "dequantize", "requantize"]


#: Integer types a model's inputs/outputs may be quantized to.
QUANTIZED_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))
_HALF = 0.5
#: The largest scale: float32's largest value, the type TFLite files store scales in.
MAX_SCALE = float(np.finfo(np.float32).max)


def _is_real(value: Any) -> bool:
    """A real number (Python or numpy), not a bool nor a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True, kw_only=True)
class QuantParams:
    """Per-tensor affine quantization of one input/output tensor.

    ``scale == 0`` means "not quantized" (a float tensor, or an integer tensor that
    carries plain integers); then ``zero_point`` must be 0.
    """

    scale: float
    zero_point: int
    dtype: Any

    def __post_init__(self) -> None:
        try:
            dtype = np.dtype(self.dtype) if self.dtype is not None else None
        except TypeError:
            dtype = None
        if dtype is None:
            raise ValueError(f"dtype: expected a numpy dtype, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        # A Python int is compared, never converted (np.isfinite raised TypeError on one past int64, and float() on
        # one past a float's range); a scale a float32 cannot hold is none a model's file stores.
        scale = self.scale
        finite = is_number(scale) if isinstance(scale, int) else _is_real(scale) and bool(np.isfinite(scale))
        if not (finite and 0 <= scale <= MAX_SCALE):
            raise ValueError(f"scale: expected a finite value in [0, {MAX_SCALE:g}] (float32), got {found(scale)}")
        scale = float(scale)
        object.__setattr__(self, "scale", scale)
        # An int is whole as it is (np.isfinite raises TypeError on ints too large for a float).
        if not _is_real(self.zero_point) or (not isinstance(self.zero_point, numbers.Integral) and (
                not np.isfinite(self.zero_point) or int(self.zero_point) != self.zero_point)):
            raise ValueError(f"zero_point: expected an integer, got {self.zero_point!r}")
        object.__setattr__(self, "zero_point", int(self.zero_point))
        if scale > 0:
            if dtype not in QUANTIZED_DTYPES:
                raise ValueError(
                    f"dtype: expected one of {', '.join(map(str, QUANTIZED_DTYPES))} for a quantized tensor "
                    f"(scale {scale:g}), got {dtype}"
                )
            info = np.iinfo(dtype)
            if not info.min <= self.zero_point <= info.max:
                raise ValueError(f"zero_point: expected in [{info.min}, {info.max}] for {dtype}, got {self.zero_point}")
        elif self.zero_point != 0:
            raise ValueError(f"zero_point: expected 0 for an unquantized tensor (scale 0), got {self.zero_point}")

    @property
    def is_quantized(self) -> bool:
        return self.scale > 0

    @classmethod
    def from_detail(cls, detail: Mapping[str, Any]) -> "QuantParams":
        """From an interpreter tensor detail dict (``get_input_details()`` and friends).

        Uses ``quantization_parameters`` (``scales``/``zero_points`` arrays) when present,
        else the legacy ``quantization`` tuple. Per-channel parameters are rejected:
        model inputs and outputs are quantized per tensor.
        """
        name = detail.get("name", "?")
        if "dtype" not in detail:
            raise ValueError(f"tensor {name!r}: detail has no 'dtype'")
        params = detail.get("quantization_parameters")
        if params is not None:
            scales = np.asarray(params.get("scales", ()), dtype=np.float64).ravel()
            zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64).ravel()
            if scales.size > 1:
                raise ValueError(f"tensor {name!r}: expected per-tensor quantization, got {scales.size} scales")
            if scales.size == 1:
                return cls(scale=float(scales[0]), zero_point=int(zero_points[0]) if zero_points.size else 0,
                           dtype=detail["dtype"])
            return cls(scale=0.0, zero_point=0, dtype=detail["dtype"])
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(scale=float(scale), zero_point=int(zero_point) if scale else 0, dtype=detail["dtype"])


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """Real values -> ``params.dtype``: ``clip(round(x / scale) + zero_point)``.

    Float tensors pass through (cast to their dtype); an integer tensor without quantization takes
    the values rounded and saturated to its range. NaN is rejected.
    """
    x = np.asarray(x)
    if not params.is_quantized:
        if not np.issubdtype(params.dtype, np.integer):
            return x.astype(params.dtype, copy=False)
        if np.isnan(x).any():
            raise ValueError("quantize: input contains NaN")
        info = np.iinfo(params.dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(params.dtype)
    scaled = x.astype(np.float32)  # a copy of its own: the steps below work in place (no temporaries)
    np.divide(scaled, np.float32(params.scale), out=scaled)
    if np.isnan(scaled).any():
        raise ValueError("quantize: input contains NaN")
    info = np.iinfo(params.dtype)
    # Clipped first, to the reals the integer range holds (inf and huge values too): rounding is monotone and the
    # bounds are whole, so clipping before rounding is clipping after it; no inf reaches the rounding below.
    # (maximum and minimum: np.clip's dispatch costs more than the work on a tensor of a few values; no NaN is left)
    np.maximum(scaled, np.float32(info.min - params.zero_point), out=scaled)
    np.minimum(scaled, np.float32(info.max - params.zero_point), out=scaled)
    # Half away from zero, as std::round. rint (SIMD) rounds halves to even; the remainder scaled - rint(scaled) is
    # exact, and a half it rounded toward zero (a remainder of +-0.5 with the sign of the rounded value) goes one
    # step further. (trunc(scaled + 0.5) is not exact: 0.49999997f + 0.5f rounds to 1.0f, and 0.49999997 became 1.)
    rounded = np.rint(scaled, out=np.empty_like(scaled))  # an array even for a scalar (indexed below)
    remainder = np.subtract(scaled, rounded, out=scaled)
    toward_zero = remainder == np.copysign(np.float32(_HALF), rounded)  # rint keeps the sign: rint(-0.5) is -0.0
    if toward_zero.any():
        rounded[toward_zero] += 2 * remainder[toward_zero]
    # Whole values within the range less the zero point: adding it in float32 is exact.
    q = np.add(rounded, np.float32(params.zero_point), out=rounded).astype(params.dtype)
    return q[()] if q.ndim == 0 else q  # a scalar for a scalar, as numpy's arithmetic gives


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """``params.dtype`` values -> float32 reals: ``(int32(q) - zero_point) * scale``."""
    q = np.asarray(q)
    if not params.is_quantized:
        return q.astype(np.float32, copy=False)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"dequantize: expected integer values ({params.dtype}), got dtype {q.dtype}")
    centred = q.astype(np.int32) - np.int32(params.zero_point)
    return centred.astype(np.float32) * np.float32(params.scale)


def requantize(q: np.ndarray, source: QuantParams, target: QuantParams) -> np.ndarray:
    """Values quantized with ``source`` -> the same reals quantized with ``target``."""
    return quantize(dequantize(q, source), target)
