import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edgesense.train.model import (  # noqa: E402
    FUSION_STRATEGIES,
    AboveFloor,
    FusedBatchNormalization,
    ModelOptions,
    build_fusion_model,
    build_present_rows_view,
    count_macs,
    describe,
)

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


@pytest.mark.parametrize("fusion", ["weighted_sum", "attention"])  # attention: the gate's PresenceFlag layers
def test_save_and_load_round_trip(tmp_path, fusion):
    model = build_fusion_model(num_commands=12, num_scenes=3, options=ModelOptions(fusion=fusion))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs(2, np.random.default_rng(2))
    np.testing.assert_allclose(model(x)["scene"], loaded(x)["scene"], atol=1e-6)


def test_above_floor_is_the_window_over_each_bins_steady_background():
    rng = np.random.default_rng(4)
    frames, bins = 49, 40
    background = rng.uniform(-12.0, -4.0, bins)  # a steady noise, its own level in each bin
    window = np.tile(background, (frames, 1)) + rng.normal(0.0, 0.3, (frames, bins))
    window[20:30, 5:15] += 6.0  # a word, in some bins for a fifth of the window
    x = window[None, :, :, None].astype(np.float32)
    above = np.asarray(AboveFloor(3)(x))[0, :, :, 0]
    quiet = np.ones((frames, bins), bool)
    quiet[20:30, 5:15] = False
    assert np.abs(above[quiet]).mean() < 0.6 and above[~quiet].mean() > 5.0
    # Each bin's floor is the least 3-frame average of that bin: a louder background changes nothing.
    smooth = np.stack([window[i:i + 3].mean(axis=0) for i in range(frames - 2)])
    np.testing.assert_allclose(above, window - smooth.min(axis=0), atol=1e-4)
    louder = x + rng.uniform(0.0, 8.0, (1, 1, bins, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(AboveFloor(3)(louder)), np.asarray(AboveFloor(3)(x)), atol=1e-4)


def test_the_floor_channel_joins_the_audio_encoders_input_and_survives_saving(tmp_path):
    options = ModelOptions(audio_floor_frames=3)
    model = build_fusion_model(num_commands=12, num_scenes=3, options=options)
    stem = model.get_layer("audio_encoder").get_layer("audio_stem_conv")
    assert stem.kernel.shape[2] == 2  # the log-mel and the log-mel above its floor
    plain = build_fusion_model(num_commands=12, num_scenes=3).get_layer("audio_encoder").get_layer("audio_stem_conv")
    assert plain.kernel.shape[2] == 1
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = _inputs(2, np.random.default_rng(3))
    np.testing.assert_allclose(model(x)["command"], loaded(x)["command"], atol=1e-6)
    with pytest.raises(ValueError, match=r"model.audio_floor_frames: expected at most the window's 49 frames, got 50"):
        build_fusion_model(num_commands=12, num_scenes=3, options=ModelOptions(audio_floor_frames=50))


def test_the_present_rows_view_computes_the_model_and_trains_its_weights():
    from edgesense.train.distill import DistillationLoss, pack_targets
    from edgesense.train.trainer import present_rows

    model = build_fusion_model(num_commands=4, num_scenes=3, options=ModelOptions(
        audio_channels=8, audio_blocks=1, image_channels=(8, 8), image_strides=(2, 2), embedding_dim=8))
    view = build_present_rows_view(model)
    x = _inputs(6, np.random.default_rng(5))
    x["audio_present"][[1, 4]] = 0.0
    x["image_present"][[0, 4, 5]] = 0.0
    rows = present_rows(x)
    assert len(rows["audio_features"]) == 4 and len(rows["image"]) == 3
    for head, out in view(rows, training=False).items():
        np.testing.assert_allclose(out, model(x, training=False)[head], atol=1e-6)
    before = model.get_layer("fusion_head").get_weights()
    view.compile(optimizer="adam", loss={"command": DistillationLoss(4, 1.0), "scene": DistillationLoss(3, 1.0)})
    view.train_on_batch(rows, {"command": pack_targets(np.zeros(6, int), 4), "scene": pack_targets(np.ones(6, int), 3)})
    after = model.get_layer("fusion_head").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))  # the view trains the model's own weights


def test_the_views_embedding_hint_trains_the_audio_encoder_and_stays_out_of_the_model():
    from edgesense.train.distill import pack_targets
    from edgesense.train.trainer import present_rows

    model = build_fusion_model(num_commands=4, num_scenes=3, options=ModelOptions(
        audio_channels=8, audio_blocks=1, image_channels=(8, 8), image_strides=(2, 2), embedding_dim=8))
    view = build_present_rows_view(model, hint_dim=5)
    x = _inputs(6, np.random.default_rng(6))
    x["audio_present"][[2]] = 0.0
    rows = present_rows(x)
    out = view(rows, training=False)
    assert out["audio_hint"].shape == (6, 5)
    assert "audio_hint" not in [layer.name for layer in model.layers]
    np.testing.assert_allclose(out["command"], model(x, training=False)["command"], atol=1e-6)
    # With the heads' losses switched off, only the hint moves the audio encoder.
    view.compile(optimizer="adam",
                 loss={"command": "mse", "scene": "mse", "audio_hint": keras.losses.CosineSimilarity()},
                 loss_weights={"command": 0.0, "scene": 0.0, "audio_hint": 1.0})
    before = model.get_layer("audio_encoder").get_weights()
    targets = np.random.default_rng(7).normal(size=(6, 5)).astype(np.float32)
    view.train_on_batch(rows, {"command": pack_targets(np.zeros(6, int), 4)[:, :4],
                               "scene": pack_targets(np.ones(6, int), 3)[:, :3], "audio_hint": targets})
    after = model.get_layer("audio_encoder").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_fused_batch_norm_trains_like_keras_batch_norm():
    """The fused kernel gives Keras' outputs and gradients in training, Keras' moving statistics
    (up to Bessel's correction of the variance) and Keras' own inference path."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(3).normal(2.0, 3.0, size=(8, 5, 4, 6)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(4).normal(size=(8, 5, 4, 6)).astype(np.float32))
    fused, plain = FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 6).astype(np.float32))
        layer.beta.assign(np.linspace(-1.0, 1.0, 6).astype(np.float32))
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        results.append((y, *tape.gradient(loss, [x, layer.gamma, layer.beta])))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    n = 8 * 5 * 4
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance - 0.9, (plain.moving_variance - 0.9) * n / (n - 1), rtol=1e-4)
    plain.set_weights(fused.get_weights())
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-6)
    fused.trainable = False  # a frozen layer normalizes with its moving statistics, as Keras' does
    np.testing.assert_allclose(fused(x, training=True), fused(x, training=False), atol=1e-6)


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
    with pytest.raises(ValueError, match="audio_floor_frames: expected an integer >= 0, got -1"):
        ModelOptions(audio_floor_frames=-1)
    with pytest.raises(ValueError, match="num_commands"):
        build_fusion_model(num_commands=1, num_scenes=6)
