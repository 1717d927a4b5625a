"""Caffe's grouped Deconvolution (deconv_layer.cpp, base_conv_layer.cpp) on channels-last data.

Keras' Conv2DTranspose has no `groups`, and a converter that ignores the group mixes every input
channel into every output channel. Caffe splits the input channels into `groups` equal blocks and
block g makes output block g, from weight rows [g*C_in/g, (g+1)*C_in/g) (its backward_cpu_gemm loop
over g). This layer runs that loop, so it costs what Caffe costs rather than the g-fold work of one
transposed convolution with a block-diagonal kernel.

The kernel is Keras' transposed layout (kh, kw, C_out/g, C_in): Caffe's (C_in, C_out/g, kh, kw)
transposed (2, 3, 1, 0), as for Conv2DTranspose, so group 1 would be the same numbers. Padding is
'valid' (output s(i-1) + d(k-1) + 1, or s*i where the dilated kernel is shorter than the stride); the
converter crops Caffe's pad, and that uncovered tail, afterwards. Dilation is
applied by spreading the kernel (dilated_kernel).
"""
from __future__ import annotations

import keras
from keras import ops


def dilated_kernel(kernel, dilation: tuple[int, int]):
    """The kernel with d-1 zeros between its taps: a dilated transposed convolution as an undilated one.

    Same arithmetic as dilation_rate (the zeros add exact zeros), but it runs on every TF CPU kernel:
    without oneDNN, TF refuses conv_transpose with dilation > 1.
    """
    for axis, d in enumerate(dilation):
        if d > 1:
            taps = kernel.shape[axis]
            stacked = ops.stack([kernel] + [ops.zeros_like(kernel)] * (d - 1), axis=axis + 1)
            shape = list(kernel.shape)
            shape[axis] = taps * d
            kernel = ops.reshape(stacked, shape)
            kernel = kernel[:(taps - 1) * d + 1] if axis == 0 else kernel[:, :(taps - 1) * d + 1]
    return kernel


@keras.saving.register_keras_serializable(package="parity")
class CaffeDeconvolution(keras.layers.Layer):
    def __init__(self, filters: int = 1, kernel_size=(1, 1), strides=(1, 1), dilation_rate=(1, 1), groups: int = 1,
                 use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.groups, self.use_bias = int(filters), int(groups), bool(use_bias)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.dilation_rate = tuple(int(d) for d in dilation_rate)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"groups {self.groups} must divide the {self.filters} filters")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"groups {self.groups} must divide the {channels} input channels")
        self.kernel = self.add_weight(name="kernel", shape=(*self.kernel_size, self.filters // self.groups, channels),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, x):
        block = x.shape[-1] // self.groups
        kernel = dilated_kernel(self.kernel, self.dilation_rate)
        outputs = [ops.conv_transpose(x[..., g * block:(g + 1) * block], kernel[..., g * block:(g + 1) * block],
                                      strides=self.strides, padding="valid")
                   for g in range(self.groups)]
        y = ops.concatenate(outputs, axis=-1) if self.groups > 1 else outputs[0]
        return y + self.bias if self.use_bias else y

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      dilation_rate=self.dilation_rate, groups=self.groups, use_bias=self.use_bias)
        return config
