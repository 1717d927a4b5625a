"""Keras layers for convert/merge.py: CaffeEltwise keeps Caffe's per-input SUM coefficients and its
left-to-right order of operations.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="parity")
class CaffeEltwise(keras.layers.Layer):
    """Caffe's Eltwise: 'sum' (with one coefficient per input), 'prod' or 'max', left to right."""

    def __init__(self, operation: str = "sum", coeffs=None, **kwargs):
        super().__init__(**kwargs)
        if operation not in ("sum", "prod", "max"):
            raise ValueError(f"operation must be sum, prod or max, got {operation!r}")
        self.operation = operation
        self.coeffs = None if coeffs is None else [float(c) for c in coeffs]

    def call(self, inputs):
        if self.operation == "sum":
            coeffs = self.coeffs or [1.0] * len(inputs)
            y = inputs[0] if coeffs[0] == 1.0 else inputs[0] * coeffs[0]
            for x, c in zip(inputs[1:], coeffs[1:]):
                y = y + (x if c == 1.0 else x * c)
            return y
        combine = ops.multiply if self.operation == "prod" else ops.maximum
        y = inputs[0]
        for x in inputs[1:]:
            y = combine(y, x)
        return y

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        config = super().get_config()
        config.update(operation=self.operation, coeffs=self.coeffs)
        return config
