"""Caffe's LRN (lrn_layer.cpp) on channels-last data, both regions.

ACROSS_CHANNELS: x * (k + alpha/n * sum of x^2 over n neighbouring channels, zero-padded)^-beta.
WITHIN_CHANNEL: x * (1 + alpha * AVE-pool(x^2, n x n, pad (n-1)/2))^-beta. Caffe builds it from
its own Pooling and Power layers, so `k` plays no part and the pooling divisor is Caffe's.
TensorFlow's local_response_normalization wants alpha/n and a radius, and has no within-channel
form, which is how converters get LRN wrong; this layer states Caffe's formula directly.
"""
from __future__ import annotations

import keras
from keras import ops

from .pooling import CaffePooling2D


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
