"""edgesense.runtime.quant: the one place that quantizes and dequantizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.runtime.quant import QuantParams, dequantize, quantize, requantize

INT8 = QuantParams(scale=0.05, zero_point=-10, dtype=np.int8)


def test_from_detail_quantization_parameters_and_legacy_tuple():
    detail = {"name": "x", "dtype": np.int8, "quantization": (0.0, 0),
              "quantization_parameters": {"scales": np.array([0.25], np.float32),
                                          "zero_points": np.array([3], np.int32), "quantized_dimension": 0}}
    assert QuantParams.from_detail(detail) == QuantParams(scale=0.25, zero_point=3, dtype=np.int8)
    legacy = {"name": "x", "dtype": np.uint8, "quantization": (0.5, 128)}
    assert QuantParams.from_detail(legacy) == QuantParams(scale=0.5, zero_point=128, dtype=np.uint8)
    float_detail = {"name": "f", "dtype": np.float32, "quantization": (0.0, 0),
                    "quantization_parameters": {"scales": np.array([], np.float32),
                                                "zero_points": np.array([], np.int32), "quantized_dimension": 0}}
    params = QuantParams.from_detail(float_detail)
    assert not params.is_quantized and params.dtype == np.float32


def test_from_detail_rejects_per_channel():
    detail = {"name": "w", "dtype": np.int8,
              "quantization_parameters": {"scales": np.array([0.1, 0.2]), "zero_points": np.array([0, 0])}}
    with pytest.raises(ValueError, match="per-tensor"):
        QuantParams.from_detail(detail)


@pytest.mark.parametrize("kwargs, field", [
    ({"scale": -1.0, "zero_point": 0, "dtype": np.int8}, "scale"),
    ({"scale": float("nan"), "zero_point": 0, "dtype": np.int8}, "scale"),
    ({"scale": 0.1, "zero_point": 300, "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": -1, "dtype": np.uint8}, "zero_point"),
    ({"scale": 0.1, "zero_point": 0, "dtype": np.float32}, "dtype"),
    ({"scale": 0.0, "zero_point": 5, "dtype": np.float32}, "zero_point"),
    ({"scale": 0.1, "zero_point": 0, "dtype": "not-a-dtype"}, "dtype"),
    ({"scale": 0.1, "zero_point": 0, "dtype": None}, "dtype"),
    ({"scale": None, "zero_point": 0, "dtype": np.int8}, "scale"),
    ({"scale": "0.1", "zero_point": 0, "dtype": np.int8}, "scale"),
    ({"scale": True, "zero_point": 0, "dtype": np.int8}, "scale"),
    ({"scale": 0.1, "zero_point": None, "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": "3", "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": float("nan"), "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": float("inf"), "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": 1.5, "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": True, "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": np.bool_(False), "dtype": np.int8}, "zero_point"),
    ({"scale": 0.1, "zero_point": 10**400, "dtype": np.int8}, "zero_point"),  # too large for a float
    ({"scale": 0.0, "zero_point": -10**400, "dtype": np.float32}, "zero_point"),
    ({"scale": 0.1, "zero_point": 1e300, "dtype": np.int8}, "zero_point"),
])
def test_invalid_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        QuantParams(**kwargs)


def test_a_whole_float_zero_point_becomes_an_int():
    params = QuantParams(scale=0.1, zero_point=3.0, dtype=np.int8)
    assert params.zero_point == 3 and type(params.zero_point) is int


def test_numpy_scalars_are_numbers():
    params = QuantParams(scale=np.float32(0.5), zero_point=np.int64(-3), dtype=np.int8)
    assert (params.scale, params.zero_point) == (0.5, -3)
    assert type(params.scale) is float and type(params.zero_point) is int


def test_quantize_rounds_half_away_from_zero_and_adds_zero_point():
    p = QuantParams(scale=0.5, zero_point=3, dtype=np.int8)
    x = np.array([0.25, 0.75, -0.25, -0.75, 0.0, 1.0], np.float32)  # x / scale = .5, 1.5, -.5, -1.5, 0, 2
    assert quantize(x, p).tolist() == [4, 5, 2, 1, 3, 5]
    assert quantize(x, p).dtype == np.int8


def test_quantize_rounds_just_below_a_half_down_as_std_round_does():
    # 0.49999997f + 0.5f is 1.0f in float32: rounding by trunc(x + 0.5) gave a step of 1 where TFLite gives 0.
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    p = QuantParams(scale=1.0, zero_point=0, dtype=np.int8)
    assert quantize(np.array([below_half, -below_half, 0.5, -0.5], np.float32), p).tolist() == [0, 0, 1, -1]


def test_quantize_clips_to_the_dtype_range():
    assert quantize(np.array([1e9, -1e9, np.inf, -np.inf]), INT8).tolist() == [127, -128, 127, -128]
    p = QuantParams(scale=1.0, zero_point=128, dtype=np.uint8)
    out = quantize(np.array([-200.0, 0.0, 200.0]), p)
    assert out.dtype == np.uint8 and out.tolist() == [0, 128, 255]


def test_quantize_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), INT8)


def test_dequantize_upcasts_before_subtracting_the_zero_point():
    p = QuantParams(scale=1.0, zero_point=127, dtype=np.int8)
    # In int8 arithmetic -128 - 127 would wrap to 1.
    assert dequantize(np.array([-128, 127], np.int8), p).tolist() == [-255.0, 0.0]
    u = QuantParams(scale=2.0, zero_point=200, dtype=np.uint8)
    assert dequantize(np.array([0, 255], np.uint8), u).tolist() == [-400.0, 110.0]
    assert dequantize(np.array([0], np.int8), p).dtype == np.float32


def test_dequantize_rejects_float_input_for_a_quantized_tensor():
    with pytest.raises(ValueError, match="integer"):
        dequantize(np.array([0.5], np.float32), INT8)


def test_float_tensors_pass_through():
    p = QuantParams(scale=0.0, zero_point=0, dtype=np.float32)
    x = np.array([[0.123, -4.5]], np.float64)
    q = quantize(x, p)
    assert q.dtype == np.float32 and np.allclose(q, x)
    assert np.array_equal(dequantize(q, p), q)


def test_an_integer_tensor_without_quantization_saturates_and_rounds():
    p = QuantParams(scale=0.0, zero_point=0, dtype=np.int8)
    q = quantize(np.array([200.0, -300.0, 1.6, -1.4]), p)
    assert q.dtype == np.int8 and q.tolist() == [127, -128, 2, -1]  # no wrap-around
    with pytest.raises(ValueError, match="NaN"):
        quantize(np.array([np.nan]), p)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-4, 10.0), st.integers(-128, 127),
       st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=32))
def test_round_trip_error_is_at_most_half_a_step(scale, zero_point, unit_values):
    p = QuantParams(scale=scale, zero_point=zero_point, dtype=np.int8)
    lo, hi = (-128 - zero_point) * scale, (127 - zero_point) * scale
    x = (lo + (np.asarray(unit_values) + 1) / 2 * (hi - lo)).astype(np.float32)
    back = dequantize(quantize(x, p), p)
    assert np.all(np.abs(back - x) <= scale * 0.5 + 1e-5 * max(1.0, abs(lo), abs(hi)))


def test_requantize_maps_between_scales():
    a = QuantParams(scale=0.1, zero_point=0, dtype=np.int8)
    b = QuantParams(scale=0.2, zero_point=10, dtype=np.int8)
    q = np.array([-40, 0, 40], np.int8)  # -4.0, 0, 4.0
    assert requantize(q, a, b).tolist() == [-10, 10, 30]


@pytest.mark.slow
def test_quantized_encoder_tracks_the_float_model(tiny_run_dir, tiny_model_path):
    """Quantize real inputs, run the int8 encode_audio signature, dequantize: close to Keras float."""
    from edgesense.quantize.convert import float_embeddings, load_run
    from edgesense.runtime.interpreter import make_interpreter

    run = load_run(tiny_run_dir)
    features = np.load(tiny_run_dir / "validation.npz")["audio_features"][:16]
    want = float_embeddings(run.audio_encoder, features)
    runner = make_interpreter(tiny_model_path).get_signature_runner("encode_audio")
    p_in = QuantParams.from_detail(runner.get_input_details()["audio_features"])
    p_out = QuantParams.from_detail(runner.get_output_details()["audio_embedding"])
    assert p_in.is_quantized and p_in.dtype == np.int8 and p_out.dtype == np.int8
    got = np.stack([dequantize(runner(audio_features=quantize(f[None], p_in))["audio_embedding"], p_out)[0]
                    for f in features])
    spread = float(np.abs(want).mean())
    assert spread > 0.05  # the embeddings are not degenerate
    assert np.abs(got - want).mean() < 0.1 * spread
    # Without dequantizing (raw int8 codes) the values would be far off: the test is not vacuous.
    raw = np.stack([runner(audio_features=quantize(f[None], p_in))["audio_embedding"][0] for f in features])
    assert np.abs(raw.astype(np.float32) - want).mean() > 10 * np.abs(got - want).mean()


def test_quantize_divides_in_float32_as_tflites_kernel_does():
    # TFLite's Quantize computes round(x / scale) in float32: 3.45f / 0.1f is 34.5f, which rounds away from zero
    # to 35. In float64 the quotient is 34.49999996 and would round to 34, one step off the interpreter.
    p = QuantParams(scale=float(np.float32(0.1)), zero_point=0, dtype=np.int8)
    assert quantize(np.array([3.45, -3.45, 8.95], np.float32), p).tolist() == [35, -35, 90]


def test_dequantize_gives_float32_for_a_float16_tensor():
    p = QuantParams(scale=0.0, zero_point=0, dtype=np.float16)
    out = dequantize(np.array([0.5, -2.0], np.float16), p)
    assert out.dtype == np.float32 and out.tolist() == [0.5, -2.0]


def _quantize_by_the_fraction(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """The reference: half away from zero from the exact fraction (np.modf), clipped after rounding."""
    scaled = np.asarray(x).astype(np.float32) / np.float32(params.scale)
    fraction, whole = np.modf(scaled)
    rounded = np.where(np.abs(fraction) >= np.float32(0.5), whole + np.sign(scaled), whole)
    info = np.iinfo(params.dtype)
    limit = np.float32(max(abs(info.min), abs(info.max)) + abs(params.zero_point))
    q = np.clip(rounded, -limit, limit).astype(np.int32) + np.int32(params.zero_point)
    return np.clip(q, info.min, info.max).astype(params.dtype)


@pytest.mark.parametrize("params", [INT8, QuantParams(scale=1.0, zero_point=-128, dtype=np.int8),
                                    QuantParams(scale=0.1442384123802185, zero_point=-32, dtype=np.int8),
                                    QuantParams(scale=0.5, zero_point=255, dtype=np.uint8),
                                    QuantParams(scale=0.003, zero_point=-32768, dtype=np.int16),
                                    QuantParams(scale=3.0, zero_point=32767, dtype=np.int16)])
def test_quantize_gives_the_fractions_rounding_on_halves_their_neighbours_and_extremes(params):
    # quantize rounds with rint and mends the halves it took toward zero: every half and its float32 neighbours
    # in the range, from -0.5 to the largest, give what the fraction's rounding gives.
    halves = (np.arange(-140_000, 140_001, dtype=np.float64) / 2).astype(np.float32) * np.float32(params.scale)
    extremes = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3e38, -3e38, 2.0 ** 24 + 2], np.float32)
    rng = np.random.default_rng(0)
    values = np.concatenate([halves, np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, -np.inf),
                             extremes, rng.normal(0, 300, 100_000).astype(np.float32)])
    with np.errstate(over="ignore"):  # 3e38 / 0.003 overflows to inf in both
        assert np.array_equal(quantize(values, params), _quantize_by_the_fraction(values, params))
    assert quantize(np.float32(2.5), QuantParams(scale=1.0, zero_point=0, dtype=np.int8)) == 3  # a scalar too


def test_quantize_works_in_place_without_a_copy_of_the_tensor_per_step():
    # The image encoder's input (128 x 128 x 3): rounding through modf, sign and where held six float32 copies of
    # it at once, and took 0.6 ms of encode_image's 0.9 (the interpreter's run: 0.2). Now: the tensor scaled,
    # its rounding, the half-step test and the int8 answer.
    import tracemalloc

    image = np.random.default_rng(0).integers(0, 256, (1, 128, 128, 3)).astype(np.float32)
    params = QuantParams(scale=1.0, zero_point=-128, dtype=np.int8)
    tracemalloc.start()
    try:
        q = quantize(image, params)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(q, image.astype(np.int16) - 128)
    assert peak_bytes <= 4 * image.nbytes
