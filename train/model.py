"""The fusion model: a DS-CNN audio encoder, a depthwise-separable vision encoder,
a fusion module (four strategies) and two heads.

Layout (see docs/CONTRACTS.md): the full model nests three sub-models,
``audio_encoder``, ``image_encoder`` and ``fusion_head``, so each can be exported
and run on its own at its own rate on the device.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from edgesense.frontend.audio import AudioFrontendOptions
from edgesense.frontend.image import ImageFrontendOptions
from edgesense.train.config import (
    FUSION_STRATEGIES,  # noqa: F401  (validated there, without Keras)
    MODEL_PARTS,
    ModelOptions,
)

log = logging.getLogger(__name__)

PIXEL_SCALE = 1.0 / 127.5  # [0, 255] -> [-1, 1]

INPUT_AUDIO = "audio_features"
INPUT_IMAGE = "image"
INPUT_AUDIO_PRESENT = "audio_present"
INPUT_IMAGE_PRESENT = "image_present"
# Inputs of the training view only (:func:`build_present_rows_view`).
INPUT_AUDIO_ROW = "audio_row"
INPUT_IMAGE_ROW = "image_row"
OUTPUT_COMMAND = "command"
OUTPUT_SCENE = "scene"
#: Output of the training view only, with an embedding hint (:func:`build_present_rows_view`).
OUTPUT_AUDIO_HINT = "audio_hint"


# ----------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package="edgesense")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' batch normalization, trained with TensorFlow's fused kernel.

    Keras 3 computes a training step's batch statistics and their gradients as a chain of
    element-wise ops; on a CPU that was over half of a training step's time. Here a trainable
    layer in training mode runs ``FusedBatchNormV3`` and its gradient kernel instead (one pass
    each); the moving statistics are updated as Keras does. Inference, a frozen layer and
    anything the kernel does not cover (a mask, renormalization, another layout or dtype) take
    Keras' own path, so an exported graph is the same as with ``keras.layers.BatchNormalization``.
    The only numerical difference: the kernel's batch variance for the moving average carries
    Bessel's correction, n / (n - 1) with n the rows times positions (over a thousand in these models).
    """

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and mask is None and not self.renorm and not self.synchronized
                 and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                 and self.axis in (-1, 3) and inputs.dtype == tf.float32 and self.scale and self.center)
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


@keras.saving.register_keras_serializable(package="edgesense")
class PresenceMask(layers.Layer):
    """``x * present``: zeroes an embedding whose modality is absent."""

    def call(self, x, present):
        return x * present


@keras.saving.register_keras_serializable(package="edgesense")
class PresenceFlag(layers.Layer):
    """A presence flag (0 or 1) as ``present * present``: the same value in a tensor of its own.

    A concatenation shares one int8 scale among all its inputs, so a flag input fed straight into
    one takes the concatenation's scale, on which 1.0 is not exact (1.02 in a bundled model), and
    that scale depends on the whole scene head's calibration: re-quantizing the fusion head moved
    the command path, which reads the audio embedding times this flag. Through this product the
    flag inputs keep a scale of their own, calibrated on [0, 1], where 0 and 1 are exact."""

    def call(self, present):
        return present * present


#: Keeps the weighted mean finite when both modalities are absent.
_WEIGHT_EPSILON = 1e-6


def _presence_weighted_mean(logits, audio, image, audio_present, image_present):
    """The softmax of the two ``logits`` as weights, each zeroed with its modality's presence flag
    (an absent modality's weight goes to the other)."""
    w = ops.exp(logits - ops.max(logits))
    wa = w[0] * audio_present
    wv = w[1] * image_present
    return (wa * audio + wv * image) / (wa + wv + _WEIGHT_EPSILON)


@keras.saving.register_keras_serializable(package="edgesense")
class WeightedSum(layers.Layer):
    """Learned weighted sum of two embeddings; an absent modality's weight goes to the other."""

    def build(self, input_shape):
        self.logits = self.add_weight(name="logits", shape=(2,), initializer="zeros")

    def call(self, audio, image, audio_present, image_present):
        return _presence_weighted_mean(self.logits, audio, image, audio_present, image_present)


@keras.saving.register_keras_serializable(package="edgesense")
class GatedSum(layers.Layer):
    """``g * audio + (1 - g) * image`` with a per-channel gate ``g`` in [0, 1] computed from both
    embeddings and the presence flags (attention over the two modalities)."""

    def call(self, gate, audio, image, audio_present, image_present):
        # Both present: the learned gate. Only one present: all weight on it.
        g = audio_present * (image_present * gate + (1.0 - image_present))
        return g * audio + (1.0 - g) * image


@keras.saving.register_keras_serializable(package="edgesense")
class LateFusion(layers.Layer):
    """Decision-level fusion: a learned, presence-masked weighted mean of two heads' logits."""

    def build(self, input_shape):
        self.logits = self.add_weight(name="logits", shape=(2,), initializer="zeros")

    def call(self, audio_logits, image_logits, audio_present, image_present):
        return _presence_weighted_mean(self.logits, audio_logits, image_logits, audio_present, image_present)


@keras.saving.register_keras_serializable(package="edgesense")
class AboveFloor(layers.Layer):
    """Log-mel ``(batch, frames, bins, 1)`` minus each bin's floor over the window: the minimum
    over the frames of a ``smoothing_frames``-frame moving average (the average tames the single
    frames' spread, so the floor follows the steady background rather than its deepest dip)."""

    def __init__(self, smoothing_frames: int, **kwargs):
        super().__init__(**kwargs)
        self.smoothing_frames = int(smoothing_frames)

    def call(self, x):
        smooth = ops.average_pool(x, pool_size=(self.smoothing_frames, 1), strides=(1, 1), padding="valid")
        return x - ops.min(smooth, axis=1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "smoothing_frames": self.smoothing_frames}


# ----------------------------------------------------------------------------- encoders


def _conv_bn_relu(x, filters, kernel, strides, name, momentum):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)


def _ds_block(x, filters, strides, name, momentum):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = FusedBatchNormalization(momentum=momentum, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(x, filters, 1, 1, f"{name}_pw", momentum)


def build_audio_encoder(frontend: AudioFrontendOptions, options: ModelOptions) -> keras.Model:
    """DS-CNN (Zhang et al., 'Hello Edge'): a strided conv, then depthwise-separable blocks."""
    frames, bins = frontend.feature_shape
    if options.audio_floor_frames > frames:
        raise ValueError(f"model.audio_floor_frames: expected at most the window's {frames} frames, "
                         f"got {options.audio_floor_frames}")
    inputs = keras.Input((frames, bins), name=INPUT_AUDIO)
    x = layers.Reshape((frames, bins, 1), name="audio_reshape")(inputs)
    if options.audio_floor_frames:
        above = AboveFloor(options.audio_floor_frames, name="audio_above_floor")(x)
        x = layers.Concatenate(axis=-1, name="audio_with_floor")([x, above])
    x = _conv_bn_relu(x, options.audio_channels, (10, 4), (2, 2), "audio_stem", options.batchnorm_momentum)
    x = layers.Dropout(options.dropout, name="audio_stem_dropout")(x)
    for i in range(options.audio_blocks):
        x = _ds_block(x, options.audio_channels, 1, f"audio_ds{i}", options.batchnorm_momentum)
    x = layers.GlobalAveragePooling2D(name="audio_pool")(x)
    x = layers.Dropout(options.dropout, name="audio_dropout")(x)
    return keras.Model(inputs, x, name="audio_encoder")


def build_image_encoder(frontend: ImageFrontendOptions, options: ModelOptions) -> keras.Model:
    """MobileNetV1-style: a strided 3x3 conv, then depthwise-separable blocks."""
    inputs = keras.Input(frontend.input_shape, name=INPUT_IMAGE)
    x = layers.Rescaling(PIXEL_SCALE, offset=-1.0, name="image_rescale")(inputs)
    x = _conv_bn_relu(x, options.image_channels[0], 3, options.image_strides[0], "image_stem",
                      options.batchnorm_momentum)
    for i, (filters, strides) in enumerate(zip(options.image_channels[1:], options.image_strides[1:])):
        x = _ds_block(x, filters, strides, f"image_ds{i}", options.batchnorm_momentum)
    x = layers.GlobalAveragePooling2D(name="image_pool")(x)
    x = layers.Dropout(options.dropout, name="image_dropout")(x)
    return keras.Model(inputs, x, name="image_encoder")


# ----------------------------------------------------------------------------- fusion


def build_fusion_head(audio_dim: int, image_dim: int, num_commands: int, num_scenes: int,
                      options: ModelOptions) -> keras.Model:
    a_in = keras.Input((audio_dim,), name="audio_embedding")
    v_in = keras.Input((image_dim,), name="image_embedding")
    pa = keras.Input((1,), name=INPUT_AUDIO_PRESENT)
    pv = keras.Input((1,), name=INPUT_IMAGE_PRESENT)
    dim = options.embedding_dim

    a = PresenceMask(name="audio_mask")(a_in, pa)
    v = PresenceMask(name="image_mask")(v_in, pv)

    # Command head: from the audio embedding, optionally gated by vision.
    c = a
    if options.command_vision_gate:
        gate = layers.Dense(audio_dim, activation="sigmoid", name="command_vision_gate")(v)
        c = layers.Multiply(name="command_gated")([c, gate])
    command = layers.Dense(num_commands, activation="softmax", name=OUTPUT_COMMAND)(c)

    # Scene head: from both modalities, fused.
    if options.fusion == "late":
        audio_logits = layers.Dense(num_scenes, name="scene_audio_logits")(a)
        image_logits = layers.Dense(num_scenes, name="scene_image_logits")(v)
        logits = LateFusion(name="scene_late_fusion")(audio_logits, image_logits, pa, pv)
    else:
        pa_proj = layers.Dense(dim, activation="relu", name="fuse_audio_proj")(a)
        pv_proj = layers.Dense(dim, activation="relu", name="fuse_image_proj")(v)
        if options.fusion == "concat":
            z = layers.Concatenate(name="fuse_concat")([pa_proj, pv_proj])
            z = layers.Dense(dim, activation="relu", name="fuse_dense")(z)
        elif options.fusion == "weighted_sum":
            z = WeightedSum(name="fuse_weighted_sum")(pa_proj, pv_proj, pa, pv)
        else:  # attention / gated fusion
            flags = [PresenceFlag(name=f"fuse_gate_{m}_flag")(p) for m, p in (("audio", pa), ("image", pv))]
            both = layers.Concatenate(name="fuse_gate_in")([pa_proj, pv_proj, *flags])
            gate = layers.Dense(dim, activation="sigmoid", name="fuse_gate")(both)
            z = GatedSum(name="fuse_gated_sum")(gate, pa_proj, pv_proj, pa, pv)
        z = layers.Dropout(options.dropout, name="fuse_dropout")(z)
        logits = layers.Dense(num_scenes, name="scene_logits")(z)
    scene = layers.Softmax(name=OUTPUT_SCENE)(logits)
    return keras.Model([a_in, v_in, pa, pv], {OUTPUT_COMMAND: command, OUTPUT_SCENE: scene}, name="fusion_head")


def build_fusion_model(*, num_commands: int, num_scenes: int, options: ModelOptions = ModelOptions(),
                       audio_frontend: AudioFrontendOptions = AudioFrontendOptions(),
                       image_frontend: ImageFrontendOptions = ImageFrontendOptions()) -> keras.Model:
    """The whole model: inputs and outputs named as in docs/CONTRACTS.md."""
    if num_commands < 2 or num_scenes < 2:
        raise ValueError(f"num_commands/num_scenes: expected >= 2 classes each, got {num_commands}/{num_scenes}")
    audio_encoder = build_audio_encoder(audio_frontend, options)
    image_encoder = build_image_encoder(image_frontend, options)
    head = build_fusion_head(audio_encoder.output_shape[-1], image_encoder.output_shape[-1],
                             num_commands, num_scenes, options)
    audio = keras.Input(audio_frontend.feature_shape, name=INPUT_AUDIO)
    image = keras.Input(image_frontend.input_shape, name=INPUT_IMAGE)
    pa = keras.Input((1,), name=INPUT_AUDIO_PRESENT)
    pv = keras.Input((1,), name=INPUT_IMAGE_PRESENT)
    outputs = head([audio_encoder(audio), image_encoder(image), pa, pv])
    return keras.Model({INPUT_AUDIO: audio, INPUT_IMAGE: image, INPUT_AUDIO_PRESENT: pa, INPUT_IMAGE_PRESENT: pv},
                       outputs, name="edgesense_fusion")


def build_present_rows_view(model: keras.Model, *, hint_dim: int | None = None) -> keras.Model:
    """A training view of the fusion model in which each encoder runs only on the rows whose
    modality is present.

    With modality dropout a fifth of a batch's rows lack the audio and a fifth the photo; the
    whole model still runs both encoders on every row and masks the absent one afterwards. The
    view takes each modality's present rows only (``audio_features``: ``(Na, ...)``, ``image``:
    ``(Nv, ...)``) and, for each of the batch's rows, the index of its own among them
    (``audio_row``, ``image_row``; an absent row may point anywhere, its embedding is masked);
    the fusion head then sees every row as the whole model would. It shares the model's layers,
    so training it trains the model; the model alone is saved and exported. Batch statistics are
    those of the present rows only.

    With ``hint_dim`` the view has a third output, ``audio_hint``: a linear map of each row's audio
    embedding to ``hint_dim`` values, for a teacher's embedding to pull on (``train.embedding_hint_weight``).
    The map is the view's own layer, so it is trained and then left behind.
    """
    audio_encoder, image_encoder = model.get_layer("audio_encoder"), model.get_layer("image_encoder")
    audio = keras.Input(audio_encoder.input_shape[1:], name=INPUT_AUDIO)
    image = keras.Input(image_encoder.input_shape[1:], name=INPUT_IMAGE)
    audio_row = keras.Input((), dtype="int32", name=INPUT_AUDIO_ROW)
    image_row = keras.Input((), dtype="int32", name=INPUT_IMAGE_ROW)
    pa = keras.Input((1,), name=INPUT_AUDIO_PRESENT)
    pv = keras.Input((1,), name=INPUT_IMAGE_PRESENT)
    audio_embedding = ops.take(audio_encoder(audio), audio_row, axis=0)
    image_embedding = ops.take(image_encoder(image), image_row, axis=0)
    outputs = dict(model.get_layer("fusion_head")([audio_embedding, image_embedding, pa, pv]))
    if hint_dim is not None:
        outputs[OUTPUT_AUDIO_HINT] = layers.Dense(hint_dim, name=OUTPUT_AUDIO_HINT)(audio_embedding)
    inputs = {INPUT_AUDIO: audio, INPUT_IMAGE: image, INPUT_AUDIO_ROW: audio_row, INPUT_IMAGE_ROW: image_row,
              INPUT_AUDIO_PRESENT: pa, INPUT_IMAGE_PRESENT: pv}
    return keras.Model(inputs, outputs, name=f"{model.name}_present_rows")


# ----------------------------------------------------------------------------- size and cost


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights if w.trainable or "moving" not in w.path))


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference (batch 1), counted layer by layer.

    Convolutions, depthwise convolutions and dense layers dominate; element-wise ops
    are left out, as is usual for MAC counts.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        out_shape = getattr(layer, "output", None)
        if out_shape is None:
            continue
        out = layer.output.shape
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += int(np.prod(out[1:])) * kh * kw
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += int(np.prod(out[1:])) * kh * kw * cin
        elif isinstance(layer, layers.Dense):
            total += int(layer.input.shape[-1]) * int(out[-1])
    return total


def describe(model: keras.Model) -> dict[str, dict[str, int]]:
    """Params and MACs per part and in total."""
    parts = {name: model.get_layer(name) for name in MODEL_PARTS}
    params = {name: count_params(part) for name, part in parts.items()}
    macs = {name: count_macs(part) for name, part in parts.items()}
    params["total"] = sum(params.values())
    macs["total"] = sum(macs.values())
    return {"params": params, "macs": macs}
