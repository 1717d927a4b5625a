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


# Elements of the last axis copied per block in `copy_blocked`. Why: moving a weight matrix to Keras'
# layout transposes it, and a whole-array transposed copy strides through memory (fc6 of VGG, 411 MB:
# 0.7 s here); blocks of 16 along the last axis keep reads and writes in cache (0.25 s).
COPY_BLOCK = 16
ALIGNMENT = 64  # bytes: TensorFlow's CPU kernels refuse (abort on) a tensor buffer aligned less


class Owned(np.ndarray):
    """An array in a buffer parity allocated (`ALIGNMENT`-aligned) and nothing else refers to.

    TensorFlow may take such a buffer over instead of copying it (parity.convert.preset).
    """


def aligned_empty(shape: tuple[int, ...], dtype) -> Owned:
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape).view(Owned)


def copy_blocked(view: np.ndarray, shape: tuple[int, ...] | None = None) -> Owned:
    """A new aligned C-ordered array holding `view` (often a transposed view), reshaped to `shape`."""
    out = aligned_empty(view.shape if shape is None else shape, view.dtype)
    target = out.reshape(view.shape)
    if view.ndim < 2 or view.strides[-1] == view.itemsize:
        np.copyto(target, view)
    else:
        for start in range(0, view.shape[-1], COPY_BLOCK):
            target[..., start:start + COPY_BLOCK] = view[..., start:start + COPY_BLOCK]
    return out
