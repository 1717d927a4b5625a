"""Keras layers for convert/priorbox.py: CaffeConstant, a value computed once from shapes (PriorBox's boxes)
held as a weight and given the batch's leading axis.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="parity")
class CaffeConstant(keras.layers.Layer):
    """A value that depends only on shapes (SSD's PriorBox), kept as a non-trainable weight and
    repeated over the batch of its input."""

    def __init__(self, value_shape=(1,), **kwargs):
        super().__init__(**kwargs)
        self.value_shape = tuple(int(d) for d in value_shape)

    def build(self, input_shape):
        self.value = self.add_weight(name="value", shape=self.value_shape, initializer="zeros", trainable=False)

    def call(self, x):
        batch = ops.shape(x)[0]
        return ops.broadcast_to(self.value[None], (batch,) + self.value_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.value_shape

    def get_config(self):
        config = super().get_config()
        config.update(value_shape=self.value_shape)
        return config
