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

from ..shapes import pooled_hw


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
