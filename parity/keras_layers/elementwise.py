"""Caffe's one-input arithmetic layers (AbsVal, BNLL, Power, Exp, Log, Threshold, and the fork's
HardSigmoid and HardSwish) as one serializable Keras layer, each formula written as Caffe computes it
(neuron layers in Caffe's src)."""
from __future__ import annotations

import math

import keras
from keras import ops

OPS = ("abs", "bnll", "power", "exp", "log", "threshold", "hardsigmoid", "hardswish")


@keras.saving.register_keras_serializable(package="parity")
class CaffeUnary(keras.layers.Layer):
    def __init__(self, op: str = "abs", power: float = 1.0, scale: float = 1.0, shift: float = 0.0,
                 base: float = -1.0, threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {op!r}")
        self.op, self.power, self.scale, self.shift = op, float(power), float(scale), float(shift)
        self.base, self.threshold = float(base), float(threshold)

    def _affine(self, x):
        return x if (self.scale, self.shift) == (1.0, 0.0) else x * self.scale + self.shift

    def call(self, x):
        if self.op == "abs":
            return ops.abs(x)
        if self.op == "bnll":  # log(1 + e^x), computed the stable way Caffe does
            return ops.where(x > 0, x + ops.log(1.0 + ops.exp(-x)), ops.log(1.0 + ops.exp(x)))
        if self.op == "power":
            y = self._affine(x)
            return y if self.power == 1.0 else ops.power(y, self.power)
        if self.op == "threshold":
            return ops.cast(x > self.threshold, x.dtype)
        if self.op == "hardsigmoid":  # the fork's: clip(alpha x + beta, 0, 1), alpha/beta as scale/shift
            return ops.clip(x * self.scale + self.shift, 0.0, 1.0)
        if self.op == "hardswish":  # the fork's: x * clip(x / 6 + 1/2, 0, 1), a fixed slope and offset
            return x * ops.clip(x / 6.0 + 0.5, 0.0, 1.0)
        log_base = 1.0 if self.base == -1.0 else math.log(self.base)
        if self.op == "exp":  # base^(shift + scale x) = base^shift * e^(ln(base) scale x)
            outer = 1.0 if self.shift == 0.0 else math.exp(log_base * self.shift)
            y = ops.exp(x * (log_base * self.scale))
            return y if outer == 1.0 else y * outer
        y = ops.log(self._affine(x))  # log: log_base(shift + scale x)
        return y if log_base == 1.0 else y * (1.0 / log_base)

    def get_config(self):
        config = super().get_config()
        config.update(op=self.op, power=self.power, scale=self.scale, shift=self.shift, base=self.base,
                      threshold=self.threshold)
        return config
