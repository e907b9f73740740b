"""Fixtures shared by the quantize tests."""

import pytest


@pytest.fixture
def unsupported_op_run(run_dir_copy, tiny_builders):
    """A run folder whose image encoder needs a TF op outside the TFLite builtins (MatrixDeterminant)."""
    import keras
    import tensorflow as tf

    from edgesense.frontend.audio import AudioFrontendOptions
    from edgesense.frontend.image import ImageFrontendOptions

    @keras.saving.register_keras_serializable(package="edgesense_test")
    class Determinant(keras.layers.Layer):
        def call(self, x):
            det = tf.linalg.det(tf.reshape(x[:, :4, :4, :], (-1, 3, 4, 4)))
            return x + tf.reshape(det, (-1, 1, 1, 3))

    model = tiny_builders.build_tiny_model(AudioFrontendOptions(), ImageFrontendOptions(),
                                           len(tiny_builders.scene_labels), image_extra_layer=Determinant())
    model.save(run_dir_copy / "model.keras")
    return run_dir_copy
