"""Keras layers for convert/normalization.py: CaffeScale and CaffeBroadcast (Scale and Bias with Caffe's
axis/num_axes placement, kept already shaped for broadcasting in parity's layout), CaffeNormalize (SSD's L2
Normalize) and CaffeLRN.

Caffe's LRN (lrn_layer.cpp) on channels-last data, both regions. ACROSS_CHANNELS: x * (k + alpha/n * sum of
x^2 over n neighbouring channels, zero-padded)^-beta. WITHIN_CHANNEL: x * (1 + alpha * AVE-pool(x^2, n x n,
pad (n-1)/2))^-beta: Caffe builds it from its own Pooling and Power layers, so `k` plays no part and the
pooling divisor is Caffe's. TensorFlow's local_response_normalization wants alpha/n and a radius, and has no
within-channel form, which is how converters get LRN wrong; this layer states Caffe's formula directly.
"""
from __future__ import annotations

import keras
from keras import ops

from .pooling import CaffePooling2D


@keras.saving.register_keras_serializable(package="parity")
class CaffeScale(keras.layers.Layer):
    """y = x * scale + bias (Caffe's Scale, or Bias alone with use_scale=False), both of a fixed
    broadcastable shape in parity's layout."""

    def __init__(self, weight_shape=(1,), use_bias: bool = False, use_scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self.use_bias, self.use_scale = bool(use_bias), bool(use_scale)

    def build(self, input_shape):
        self.scale = (self.add_weight(name="scale", shape=self.weight_shape, initializer="ones")
                      if self.use_scale else None)
        self.bias = (self.add_weight(name="bias", shape=self.weight_shape, initializer="zeros")
                     if self.use_bias else None)

    def call(self, x):
        y = x * self.scale if self.use_scale else x
        return y + self.bias if self.use_bias else y

    def get_config(self):
        config = super().get_config()
        config.update(weight_shape=self.weight_shape, use_bias=self.use_bias, use_scale=self.use_scale)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeBroadcast(keras.layers.Layer):
    """x * s or x + s, where s (a second bottom) spans Caffe axes [axis, axis + s's rank) of x.

    s arrives in parity's layout; it is brought to Caffe's order, placed for broadcasting there, and
    moved to x's layout, all with static shapes."""

    def __init__(self, operation: str = "mul", caffe_shape=(), placed=(), **kwargs):
        super().__init__(**kwargs)
        self.operation = operation
        self.caffe_shape = tuple(int(d) for d in caffe_shape)  # s in Caffe's layout
        self.placed = tuple(int(d) for d in placed)  # x's rank, 1 off the spanned axes

    def call(self, inputs):
        x, s = inputs
        if len(self.caffe_shape) == 4:
            s = ops.transpose(s, (0, 3, 1, 2))
        s = ops.reshape(s, self.placed)
        if len(self.placed) == 4:
            s = ops.transpose(s, (0, 2, 3, 1))
        return x * s if self.operation == "mul" else x + s

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        config = super().get_config()
        config.update(operation=self.operation, caffe_shape=self.caffe_shape, placed=self.placed)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeNormalize(keras.layers.Layer):
    """SSD's Normalize: x / sqrt(sum x^2 + eps) over the whole sample (across_spatial) or over
    channels at each location, times a learned scale (one shared value, or one per channel)."""

    def __init__(self, across_spatial: bool = True, eps: float = 1e-10, scale_shape=(1,), **kwargs):
        super().__init__(**kwargs)
        self.across_spatial, self.eps = bool(across_spatial), float(eps)
        self.scale_shape = tuple(int(d) for d in scale_shape)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=self.scale_shape, initializer="ones")

    def call(self, x):
        axes = tuple(range(1, len(x.shape))) if self.across_spatial else (len(x.shape) - 1,)
        norm = ops.sqrt(ops.sum(x * x, axis=axes, keepdims=True) + self.eps)
        return x / norm * self.scale

    def get_config(self):
        config = super().get_config()
        config.update(across_spatial=self.across_spatial, eps=self.eps, scale_shape=self.scale_shape)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeLRN(keras.layers.Layer):
    def __init__(self, size: int = 5, alpha: float = 1.0, beta: float = 0.75, k: float = 1.0,
                 region: str = "across", **kwargs):
        super().__init__(**kwargs)
        if region not in ("across", "within"):
            raise ValueError(f"region must be 'across' or 'within', got {region!r}")
        self.size, self.alpha, self.beta, self.k, self.region = int(size), float(alpha), float(beta), float(k), region
        pad = (self.size - 1) // 2
        self._pool = CaffePooling2D("ave", (self.size, self.size), (1, 1), (pad, pad)) if region == "within" else None

    def build(self, input_shape):
        """Builds the WITHIN_CHANNEL pooling too. Why: without a build of its own, loading a saved model
        called Keras' default one, which warned that the layer "has unbuilt state" (the pooling)."""
        if self._pool is not None:
            self._pool.build(input_shape)

    def call(self, x):
        square = x * x
        if self.region == "within":
            scale = 1.0 + self.alpha * self._pool(square)
        else:
            pre = (self.size - 1) // 2
            padded = ops.pad(square, [[0, 0], [0, 0], [0, 0], [pre, self.size - 1 - pre]])
            channels = x.shape[-1]
            window = padded[..., 0:channels]
            for offset in range(1, self.size):
                window = window + padded[..., offset:offset + channels]
            scale = self.k + (self.alpha / self.size) * window
        return x * ops.power(scale, -self.beta)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k, region=self.region)
        return config
