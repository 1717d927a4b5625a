"""Layers that read a float blob as indices, and Caffe's Parameter: Embed, BatchReindex, Parameter.

Caffe keeps indices in float blobs and turns each into an int with a C cast (`static_cast<int>`), which
truncates toward zero: 2.7 selects row 2 and -0.5 selects row 0. `as_index` does the same. An index
outside what Caffe accepts is made one TensorFlow's gather refuses (an error on the CPU; a GPU gives
zeros), never a row counted from the end.
"""
from __future__ import annotations

import keras
from keras import ops


def as_index(values):
    """Caffe's static_cast<int> of float indices: truncation toward zero (a cast does exactly that)."""
    return ops.cast(values, "int32")


def out_of_range_to(index, invalid, size):
    """`index` with the places where `invalid` holds set to `size`, an index TensorFlow's gather refuses
    on the CPU. Why: Keras' take counts a negative index from the end, which would turn an index Caffe
    has no row for into a plausible-looking row."""
    return ops.where(invalid, ops.cast(size, "int32"), index)


@keras.saving.register_keras_serializable(package="parity")
class CaffeEmbed(keras.layers.Layer):
    """Caffe's Embed: every element of the input (in Caffe's order) picks a row of the (input_dim,
    num_output) weight, plus the bias. The top is the input's shape with num_output appended."""

    def __init__(self, input_dim: int = 1, num_output: int = 1, bias_term: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.num_output, self.bias_term = int(input_dim), int(num_output), bool(bias_term)

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(self.input_dim, self.num_output), initializer="zeros")
        self.bias = (self.add_weight(name="bias", shape=(self.num_output,), initializer="zeros")
                     if self.bias_term else None)

    def call(self, x):
        index = as_index(x)
        rows = ops.take(self.weight, out_of_range_to(index, index < 0, self.input_dim), axis=0)
        return rows + self.bias if self.bias_term else rows

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.num_output,)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, num_output=self.num_output, bias_term=self.bias_term)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeBatchReindex(keras.layers.Layer):
    """Caffe's BatchReindex: top[i] = x[index[i]] along the first axis (any layout keeps it first)."""

    def call(self, inputs):
        x, index = inputs  # Caffe CHECKs the float index itself: -0.5 aborts though it truncates to 0
        return ops.take(x, out_of_range_to(as_index(index), index < 0, ops.shape(x)[0]), axis=0)

    def compute_output_shape(self, input_shapes):
        x, index = input_shapes
        return (index[0],) + tuple(x[1:])


@keras.saving.register_keras_serializable(package="parity")
class CaffeParameter(keras.layers.Layer):
    """Caffe's Parameter: its learned blob is its top, whole (its first axis is not a batch axis).

    Keras needs an input to place the layer in a functional graph; the input is not read."""

    def __init__(self, value_shape=(1,), **kwargs):
        super().__init__(**kwargs)
        self.value_shape = tuple(int(d) for d in value_shape)

    def build(self, input_shape):
        self.value = self.add_weight(name="value", shape=self.value_shape, initializer="zeros")

    def call(self, anchor):
        return ops.cast(self.value, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self.value_shape

    def get_config(self):
        config = super().get_config()
        config.update(value_shape=self.value_shape)
        return config
