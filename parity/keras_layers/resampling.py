"""Resampling layers of the Caffe fork (brocolli-caffe): two-tap bilinear resizes, Pad and MaxUnPool.

The fork has two bilinear layers that disagree with each other and with Keras' `Resizing`:
- Resize (util_img.cpp, BiLinearResizeMat_cpu): source = dst * (src / dst) (no half-pixel shift), and
  a neighbour past the last row or column is left out of the sum instead of clamped, so the bottom
  and right edges of an upscaled map fade towards zero;
- BilinearInterpolate: half-pixel centres, or `align_corners`, clamped to the map like PyTorch.
Both are separable, so the layer looks up two source rows (and columns) per output with one weight
each. The tables are computed in NumPy with Caffe's own float32 (and, where the C++ mixes in a
double literal, float64) arithmetic, so every floor lands where Caffe's does.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

RESIZE_MODES = ("resize", "half_pixel", "align_corners")
PAD_MODES = ("constant", "replicate", "reflect")

Table = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # first index, second index, their weights


def two_tap_table(mode: str, src: int, dst: int) -> Table:
    """For each of `dst` outputs along one axis: the two source indices and their weights."""
    if mode == "resize":
        return _resize_table(src, dst)
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    return _interpolate_table(mode, src, dst)


def _resize_table(src: int, dst: int) -> Table:
    """Resize: pos = i * (src / dst) in float32; the second tap is dropped (weight 0) past the end."""
    pos = np.arange(dst, dtype=np.float32) * (np.float32(src) / np.float32(dst))
    first = np.floor(pos).astype(np.int64)
    frac = pos - first.astype(np.float32)
    inside = first + 1 < src
    second = np.where(inside, first + 1, first)
    w_second = np.where(inside, np.abs(frac), np.float32(0)).astype(np.float32)
    return first, second, np.abs(np.float32(1) - frac).astype(np.float32), w_second


def _interpolate_table(mode: str, src: int, dst: int) -> Table:
    """BilinearInterpolate: the position clamped to [0, src - 1], taps clamped to [0, src - 2] + (0, 1)."""
    index = np.arange(dst)
    if mode == "half_pixel":  # float ratio times a double (i + 0.5) minus 0.5, stored as float
        ratio = np.float32(src) / np.float32(dst)
        pos = (np.float64(ratio) * (index + 0.5) - 0.5).astype(np.float32)
    else:
        pos = index.astype(np.float32) * (np.float32(src - 1) / np.float32(dst - 1))
    pos = np.clip(pos, np.float32(0), np.float32(src - 1))
    first = np.clip(np.floor(pos).astype(np.int64), 0, src - 2)
    second = first + 1
    return first, second, second.astype(np.float32) - pos, pos - first.astype(np.float32)


@keras.saving.register_keras_serializable(package="parity")
class CaffeResize2D(keras.layers.Layer):
    """Bilinear resize of NHWC data to `size` (height, width) by `mode` (see the module docstring):
    along the width first, then the height, the order BilinearInterpolate computes in."""

    def __init__(self, size=(1, 1), mode: str = "resize", **kwargs):
        super().__init__(**kwargs)
        if mode not in RESIZE_MODES:
            raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
        self.size, self.mode = tuple(int(s) for s in size), mode

    def call(self, x):
        for axis, dst in ((2, self.size[1]), (1, self.size[0])):
            x = _two_taps(x, axis, two_tap_table(self.mode, int(x.shape[axis]), dst))
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, mode=self.mode)
        return config


def _two_taps(x, axis: int, table: Table):
    """w0 * x[i0] + w1 * x[i1] along `axis`, the weights broadcast over the other axes."""
    first, second, w_first, w_second = table
    shape = [1] * len(x.shape)
    shape[axis] = -1
    w_first = ops.reshape(ops.convert_to_tensor(w_first, dtype=x.dtype), shape)
    w_second = ops.reshape(ops.convert_to_tensor(w_second, dtype=x.dtype), shape)
    return (ops.take(x, first.astype(np.int32), axis=axis) * w_first
            + ops.take(x, second.astype(np.int32), axis=axis) * w_second)


@keras.saving.register_keras_serializable(package="parity")
class CaffePad(keras.layers.Layer):
    """The fork's Pad on NHWC data: `pads` (up, down, left, right) on H and W. CONSTANT fills with
    `value`, REPLICATE repeats the edge, REFLECT mirrors without repeating it; all four negative
    crops instead (the only way Caffe's Pad takes negative amounts)."""

    def __init__(self, pads=(0, 0, 0, 0), mode: str = "constant", value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
        self.pads, self.mode, self.value = tuple(int(p) for p in pads), mode, float(value)

    def call(self, x):
        up, down, left, right = self.pads
        height, width = int(x.shape[1]), int(x.shape[2])
        if max(self.pads) < 0:
            return x[:, -up: height + down, -left: width + right, :]
        widths = [[0, 0], [up, down], [left, right], [0, 0]]
        if self.mode == "constant":
            return ops.pad(x, widths, constant_values=self.value)
        if self.mode == "reflect":
            return ops.pad(x, widths, mode="reflect")
        rows = np.clip(np.arange(-up, height + down), 0, height - 1).astype(np.int32)
        cols = np.clip(np.arange(-left, width + right), 0, width - 1).astype(np.int32)
        return ops.take(ops.take(x, rows, axis=1), cols, axis=2)

    def compute_output_shape(self, input_shape):
        up, down, left, right = self.pads
        return (input_shape[0], input_shape[1] + up + down, input_shape[2] + left + right, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pads=self.pads, mode=self.mode, value=self.value)
        return config
