"""Caffe's MAX and AVE pooling on channels-last data.

Keras' own pooling layers cannot express Caffe's rules (pooling_layer.cpp):
- output size rounds UP by default (`ceil_mode`), and a last window that would start inside the
  bottom/right padding is dropped;
- MAX ignores padding entirely (a padded zero never beats a negative input);
- AVE divides by the window clipped to [0, H + pad): padded cells inside H + pad count, the ceil
  overhang beyond it does not.
The layer pads explicitly (with -inf for MAX, zeros for AVE), pools 'valid', and rescales AVE by a
constant divisor map computed from the static shape.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..caffe.shapes import pooled_hw


def _ave_divisors(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Per output position: the AVE divisor along one axis (window clipped to [-pad, size + pad))."""
    starts = np.arange(out) * stride - pad
    ends = np.minimum(starts + kernel, size + pad)
    return (ends - starts).astype(np.float32)


@keras.saving.register_keras_serializable(package="parity")
class CaffePooling2D(keras.layers.Layer):
    """Caffe Pooling (MAX or AVE, optionally global) for NHWC tensors with a static spatial shape."""

    def __init__(self, method: str = "max", kernel=(2, 2), stride=(2, 2), pad=(0, 0),
                 ceil_mode: bool = True, global_pooling: bool = False, **kwargs):
        super().__init__(**kwargs)
        if method not in ("max", "ave"):
            raise ValueError(f"method must be 'max' or 'ave', got {method!r}")
        self.method = method
        self.kernel = tuple(int(k) for k in kernel)
        self.stride = tuple(int(s) for s in stride)
        self.pad = tuple(int(p) for p in pad)
        self.ceil_mode = bool(ceil_mode)
        self.global_pooling = bool(global_pooling)

    def _geometry(self, height: int, width: int):
        kernel = (height, width) if self.global_pooling else self.kernel
        out = pooled_hw((height, width), kernel, self.stride, self.pad, self.ceil_mode)
        return kernel, out

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        _, (oh, ow) = self._geometry(h, w)
        return (n, oh, ow, c)

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            raise ValueError("CaffePooling2D needs a static spatial shape")
        kernel, out = self._geometry(height, width)
        # Rows/columns the last window reaches past the input (may be < 0: never-covered tail).
        tail = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(out, self.stride, kernel, (height, width), self.pad)]
        x = x[:, : height + min(tail[0], 0), : width + min(tail[1], 0), :]
        fill = float("-inf") if self.method == "max" else 0.0
        paddings = [[0, 0], [self.pad[0], max(tail[0], 0)], [self.pad[1], max(tail[1], 0)], [0, 0]]
        if any(any(p) for p in paddings):
            x = ops.pad(x, paddings, constant_values=fill)
        if self.method == "max":
            return ops.max_pool(x, kernel, self.stride, padding="valid")
        mean = ops.average_pool(x, kernel, self.stride, padding="valid")
        rows = _ave_divisors(height, kernel[0], self.stride[0], self.pad[0], out[0])
        cols = _ave_divisors(width, kernel[1], self.stride[1], self.pad[1], out[1])
        factor = (kernel[0] * kernel[1]) / np.outer(rows, cols)
        if np.all(factor == 1.0):
            return mean
        return mean * ops.convert_to_tensor(factor.astype(np.float32)[None, :, :, None], dtype=mean.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(method=self.method, kernel=self.kernel, stride=self.stride, pad=self.pad,
                      ceil_mode=self.ceil_mode, global_pooling=self.global_pooling)
        return config


@keras.saving.register_keras_serializable(package="parity")
class CaffeMaxPoolMask(CaffePooling2D):
    """MAX pooling's optional second top: for each output, the flat index h * W + w (in its input
    plane, as a float) of the window's maximum. Caffe scans each window row by row and takes a value
    only when it is strictly greater than the best so far (starting from -FLT_MAX), so a tie goes to
    the first cell; cells in the padding never count (-inf here), and a window with nothing above
    -FLT_MAX keeps -1. The same scan is run here, one window offset at a time."""

    def __init__(self, kernel=(2, 2), stride=(2, 2), pad=(0, 0), ceil_mode: bool = True,
                 global_pooling: bool = False, **kwargs):
        kwargs.pop("method", None)  # saved by the parent's get_config; always "max" here
        super().__init__("max", kernel, stride, pad, ceil_mode, global_pooling, **kwargs)

    def call(self, x):
        height, width = int(x.shape[1]), int(x.shape[2])
        kernel, out = self._geometry(height, width)
        reach = [(o - 1) * s + k for o, s, k in zip(out, self.stride, kernel)]  # padded rows/cols the windows span
        x = ops.pad(x, [[0, 0], [self.pad[0], max(reach[0] - self.pad[0] - height, 0)],
                        [self.pad[1], max(reach[1] - self.pad[1] - width, 0)], [0, 0]], constant_values=float("-inf"))
        rows = np.arange(out[0])[:, None] * self.stride[0] - self.pad[0]
        cols = np.arange(out[1])[None, :] * self.stride[1] - self.pad[1]
        best = ops.full_like(x[:, :out[0], :out[1], :], float(np.finfo(np.float32).min))
        index = ops.full_like(best, -1.0)
        for dy in range(kernel[0]):
            for dx in range(kernel[1]):
                cell = x[:, dy: dy + reach[0] - kernel[0] + 1: self.stride[0],
                         dx: dx + reach[1] - kernel[1] + 1: self.stride[1], :]
                flat = ((rows + dy) * width + (cols + dx)).astype(np.float32)[None, :, :, None]
                wins = cell > best
                best = ops.where(wins, cell, best)
                index = ops.where(wins, ops.convert_to_tensor(flat, dtype=x.dtype), index)
        return index


@keras.saving.register_keras_serializable(package="parity")
class CaffeMaxUnpool(keras.layers.Layer):
    """MaxUnPool on NHWC data: [x, mask] -> zeros of `size` (height, width) per channel, with x[i]
    written at the flat position mask[i] of its plane (the float mask truncated to an int, as Caffe
    casts it). Where several inputs name one position the last in row-major order wins, as in
    Caffe's loop. A mask outside the plane writes nothing here; Caffe aborts on one past the end, and
    one below zero (a pooling window that found nothing above -FLT_MAX) writes before its plane."""

    def __init__(self, size=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)

    def call(self, inputs):
        x, mask = inputs
        height, width, channels = (int(d) for d in x.shape[1:])
        plane, area = self.size[0] * self.size[1], height * width
        values = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1,))
        where = ops.reshape(ops.cast(ops.transpose(mask, (0, 3, 1, 2)), "int32"), (-1, area))
        planes = ops.shape(where)[0]
        target = ops.arange(planes, dtype="int32")[:, None] * plane + where
        target = ops.where((where >= 0) & (where < plane), target, -1)  # negative ids are dropped
        source = ops.arange(planes * area, dtype="int32")
        last = ops.segment_max(source, ops.reshape(target, (-1,)), num_segments=planes * plane)
        written = ops.where(last >= 0, ops.take(values, ops.maximum(last, 0)), ops.zeros((), x.dtype))
        return ops.transpose(ops.reshape(written, (-1, channels, *self.size)), (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        return (x_shape[0], *self.size, x_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config
