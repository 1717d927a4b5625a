"""Caffe's Scale and Eltwise as serializable Keras layers (no Lambda, so .keras files load anywhere).

CaffeScale holds its scale (and bias) already shaped for broadcasting in parity's layout, which is
how Caffe's `axis`/`num_axes` placement survives the move to channels-last. CaffeEltwise keeps
Caffe's per-input SUM coefficients and its left-to-right order of operations.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="parity")
class CaffeScale(keras.layers.Layer):
    """y = x * scale + bias (Caffe's Scale, or Bias alone with use_scale=False), both of a fixed
    broadcastable shape in parity's layout."""

    def __init__(self, weight_shape=(1,), use_bias: bool = False, use_scale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self.use_bias, self.use_scale = bool(use_bias), bool(use_scale)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=self.weight_shape, initializer="ones") if self.use_scale else None
        self.bias = self.add_weight(name="bias", shape=self.weight_shape, initializer="zeros") if self.use_bias else None

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
class CaffeTile(keras.layers.Layer):
    """Caffe's Tile: the whole blob repeated `tiles` times along one axis (parity's layout)."""

    def __init__(self, axis: int = 1, tiles: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.tiles = int(axis), int(tiles)

    def call(self, x):
        reps = [1] * len(x.shape)
        reps[self.axis] = self.tiles
        return ops.tile(x, reps)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[self.axis] = None if shape[self.axis] is None else shape[self.axis] * self.tiles
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, tiles=self.tiles)
        return config


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
