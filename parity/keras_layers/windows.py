"""Caffe's Im2col layer: the convolution's column buffer as a blob, on channels-last data.

Caffe (im2col_layer.cpp, util/im2col.cpp) makes C * kh * kw output channels, channel-major: column
(c * kh + i) * kw + j holds input channel c at kernel row i and column j, for every output position of
a convolution with the same kernel, stride, pad (zeros) and dilation. TensorFlow's extract_patches
orders the other way round (kernel position major, channel minor), so this layer gathers the kh * kw
shifted views itself and interleaves them in Caffe's order.
"""
from __future__ import annotations

import keras
from keras import ops

from ..caffe.shapes import conv_output_size


def caffe_columns(taps):
    """Kernel-position views (each (N, OH, OW, C), row-major over the kernel) as Caffe's columns:
    channel-major, (N, OH, OW, C * len(taps))."""
    stacked = ops.stack(taps, axis=-1)  # (N, OH, OW, C, kh * kw): c major, kernel position minor
    _, oh, ow, c, k = stacked.shape
    return ops.reshape(stacked, (-1, oh, ow, c * k))


@keras.saving.register_keras_serializable(package="parity")
class CaffeIm2col(keras.layers.Layer):
    """Caffe's Im2col for NHWC data: (N, H, W, C) -> (N, OH, OW, C * kh * kw) in Caffe's column order."""

    def __init__(self, kernel=(1, 1), stride=(1, 1), pad=(0, 0), dilation=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.kernel, self.stride = tuple(int(k) for k in kernel), tuple(int(s) for s in stride)
        self.pad, self.dilation = tuple(int(p) for p in pad), tuple(int(d) for d in dilation)

    def _out(self, height: int, width: int) -> tuple[int, int]:
        return tuple(conv_output_size(n, k, s, p, d)
                     for n, k, s, p, d in zip((height, width), self.kernel, self.stride, self.pad, self.dilation))

    def call(self, x):
        oh, ow = self._out(x.shape[1], x.shape[2])
        (ph, pw), (sh, sw), (dh, dw) = self.pad, self.stride, self.dilation
        if ph or pw:
            x = ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        taps = [x[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
                for i in range(self.kernel[0]) for j in range(self.kernel[1])]
        return caffe_columns(taps)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, *self._out(h, w), c * self.kernel[0] * self.kernel[1])

    def get_config(self):
        config = super().get_config()
        config.update(kernel=self.kernel, stride=self.stride, pad=self.pad, dilation=self.dilation)
        return config
