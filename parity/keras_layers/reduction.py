"""Keras layers for convert/reduction.py: CaffeReduce (Reduction's SUM/ASUM/SUMSQ/MEAN from an axis on) and
CaffeArgMax (top_k indices, ties to the higher index as in Caffe, or the values).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="parity")
class CaffeReduce(keras.layers.Layer):
    """Reductions over axes: Reduction (SUM, ASUM, SUMSQ, MEAN, times coeff) and MVN
    ((x - mean) / (std + eps), eps after the square root as in mvn_layer.cpp)."""

    def __init__(self, operation: str = "sum", axes=(), coeff: float = 1.0, eps: float = 1e-9,
                 normalize_variance: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.operation, self.axes, self.coeff = operation, tuple(int(a) for a in axes), float(coeff)
        self.eps, self.normalize_variance = float(eps), bool(normalize_variance)

    def call(self, x):
        if self.operation == "mvn":
            centred = x - ops.mean(x, axis=self.axes, keepdims=True)
            if not self.normalize_variance:
                return centred
            std = ops.sqrt(ops.mean(centred * centred, axis=self.axes, keepdims=True))
            return centred / (std + self.eps)
        values = {"sum": x, "mean": x, "asum": ops.abs(x), "sumsq": x * x}[self.operation]
        y = ops.mean(values, axis=self.axes) if self.operation == "mean" else ops.sum(values, axis=self.axes)
        return y if self.coeff == 1.0 else y * self.coeff

    def get_config(self):
        config = super().get_config()
        config.update(operation=self.operation, axes=self.axes, coeff=self.coeff, eps=self.eps,
                      normalize_variance=self.normalize_variance)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeArgMax(keras.layers.Layer):
    """Top-k along the last axis, as float indices or values. Caffe sorts (value, index) pairs in
    descending order, so among equal values the higher index comes first: done here by searching
    the reversed axis."""

    def __init__(self, top_k: int = 1, values: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.top_k, self.values = int(top_k), bool(values)

    def call(self, x):
        size = x.shape[-1]
        found, index = ops.top_k(ops.flip(x, axis=-1), self.top_k, sorted=True)
        return found if self.values else ops.cast(size - 1 - index, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.top_k,)

    def get_config(self):
        config = super().get_config()
        config.update(top_k=self.top_k, values=self.values)
        return config
