"""Keras layers for convert/reshaping.py: CaffeCrop (one window), CaffeSlice (one blob into several along
an axis) and CaffeTile.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="parity")
class CaffeCrop(keras.layers.Layer):
    """x[begin : begin + size] on every axis but the batch (begin/size in parity's layout, no batch)."""

    def __init__(self, begin=(), size=(), **kwargs):
        super().__init__(**kwargs)
        self.begin, self.size = tuple(int(b) for b in begin), tuple(int(s) for s in size)

    def call(self, x):
        return x[(slice(None),) + tuple(slice(b, b + s) for b, s in zip(self.begin, self.size))]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.size

    def get_config(self):
        config = super().get_config()
        config.update(begin=self.begin, size=self.size)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeSlice(keras.layers.Layer):
    """Cut axis `axis` (parity's layout) at `points`: len(points) + 1 outputs."""

    def __init__(self, axis: int = 1, points=(), **kwargs):
        super().__init__(**kwargs)
        self.axis, self.points = int(axis), tuple(int(p) for p in points)

    def call(self, x):
        bounds = (0,) + self.points + (x.shape[self.axis],)
        index = [slice(None)] * len(x.shape)
        outputs = []
        for start, stop in zip(bounds, bounds[1:]):
            index[self.axis] = slice(start, stop)
            outputs.append(x[tuple(index)])
        return outputs

    def compute_output_shape(self, input_shape):
        bounds = (0,) + self.points + (input_shape[self.axis],)
        return [tuple(stop - start if i == self.axis else d for i, d in enumerate(input_shape))
                for start, stop in zip(bounds, bounds[1:])]

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, points=self.points)
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
