"""Caffe's NCHW versus parity's channels-last layout, decided by rank alone (4-D: NHWC; else as is)."""
from __future__ import annotations

import numpy as np


def to_keras_layout(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def to_caffe_layout(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


def keras_shape(caffe_shape) -> tuple[int, ...]:
    """Caffe blob shape -> the Keras tensor shape parity uses (4-D becomes channels-last)."""
    s = tuple(caffe_shape)
    return (s[0], s[2], s[3], s[1]) if len(s) == 4 else s


def caffe_shape(keras_shape_) -> tuple[int, ...]:
    """Keras tensor shape -> the Caffe blob shape it holds."""
    s = tuple(keras_shape_)
    return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s


def caffe_index(keras_index: tuple[int, ...]) -> tuple[int, ...]:
    """An element's position in Caffe's coordinates: (n, h, w, c) -> (n, c, h, w)."""
    if len(keras_index) == 4:
        n, h, w, c = keras_index
        return (n, c, h, w)
    return tuple(keras_index)
