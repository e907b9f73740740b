import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edgesense.train.model import FUSION_STRATEGIES, ModelOptions, build_fusion_model, count_macs, describe  # noqa: E402

SIZE_BUDGET_PARAMS = 200_000  # int8: about one byte per parameter, 200 KB for the whole model


def _inputs(n, rng, audio_present=1.0, image_present=1.0):
    return {
        "audio_features": rng.normal(size=(n, 49, 40)).astype(np.float32),
        "image": rng.uniform(0, 255, size=(n, 96, 96, 3)).astype(np.float32),
        "audio_present": np.full((n, 1), audio_present, np.float32),
        "image_present": np.full((n, 1), image_present, np.float32),
    }


@pytest.mark.parametrize("fusion", FUSION_STRATEGIES)
def test_each_strategy_builds_with_named_parts_and_heads(fusion):
    model = build_fusion_model(num_commands=12, num_scenes=6, options=ModelOptions(fusion=fusion))
    for part in ("audio_encoder", "image_encoder", "fusion_head"):
        assert isinstance(model.get_layer(part), keras.Model)
    out = model(_inputs(2, np.random.default_rng(0)), training=False)
    assert out["command"].shape == (2, 12) and out["scene"].shape == (2, 6)
    np.testing.assert_allclose(np.sum(out["scene"], axis=-1), 1.0, rtol=1e-5)
    sizes = describe(model)
    assert sizes["params"]["total"] < SIZE_BUDGET_PARAMS
    assert sizes["macs"]["total"] > sizes["macs"]["audio_encoder"] > 0


@pytest.mark.parametrize("fusion", FUSION_STRATEGIES)
def test_an_absent_modality_has_no_influence(fusion):
    model = build_fusion_model(num_commands=12, num_scenes=6, options=ModelOptions(fusion=fusion))
    rng = np.random.default_rng(1)
    x = _inputs(3, rng, image_present=0.0)
    y = dict(x, image=rng.uniform(0, 255, size=x["image"].shape).astype(np.float32))
    a, b = model(x, training=False), model(y, training=False)
    np.testing.assert_allclose(a["scene"], b["scene"], atol=1e-6)
    np.testing.assert_allclose(a["command"], b["command"], atol=1e-6)
    x = _inputs(3, rng, audio_present=0.0)
    y = dict(x, audio_features=rng.normal(size=x["audio_features"].shape).astype(np.float32))
    np.testing.assert_allclose(model(x, training=False)["scene"], model(y, training=False)["scene"], atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = build_fusion_model(num_commands=12, num_scenes=3, options=ModelOptions(fusion="weighted_sum"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs(2, np.random.default_rng(2))
    np.testing.assert_allclose(model(x)["scene"], loaded(x)["scene"], atol=1e-6)


def test_mac_count_of_a_known_layer_stack():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs * 3*3*3
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 * 3*3
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)  # 4*5
    assert count_macs(keras.Model(inputs, x)) == 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 20


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="fusion"):
        ModelOptions(fusion="sum")
    with pytest.raises(ValueError, match="image_strides"):
        ModelOptions(image_channels=(8, 16), image_strides=(2,))
    with pytest.raises(ValueError, match="num_commands"):
        build_fusion_model(num_commands=1, num_scenes=6)
