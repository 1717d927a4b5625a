"""Convolution: Caffe's symmetric explicit padding, kernel (O, I, kh, kw) -> Keras (kh, kw, I, O).

Output size is floor((H + 2p - d(k-1) - 1) / s) + 1, which a 'valid' Keras convolution over the
explicitly padded input reproduces. Where the padding is exactly what Keras' 'same' gives (stride 1,
2p == d(k-1)) the pad layer is skipped: same numbers, one copy of the activations fewer.
"""
from __future__ import annotations

import keras

from ..shapes import conv_geometry, conv_output_shape
from .context import Blob, located
from .registry import register

SUPPORTED = {"num_output", "bias_term", "pad", "kernel_size", "stride", "pad_h", "pad_w", "kernel_h",
             "kernel_w", "stride_h", "stride_w", "dilation", "group", "weight_filler", "bias_filler",
             "engine", "axis", "force_nd_im2col"}


@register("Convolution")
def convert_convolution(layer, bottoms, ctx):
    param = ctx.params(layer, "convolution_param", SUPPORTED)
    x = ctx.spatial_bottom(layer, bottoms)
    if param.axis != 1:
        raise ctx.unsupported(layer, "convolution_param.axis", f"axis {param.axis}")
    if param.group != 1:
        raise ctx.unsupported(layer, "convolution_param.group", f"group {param.group}")
    kernel, stride, pad, dilation = located(ctx, layer, conv_geometry, param)
    out_shape = located(ctx, layer, conv_output_shape, x.caffe_shape, param)
    if min(out_shape[2:]) <= 0:
        raise ctx.error(layer, f"output would be empty for input {x.caffe_shape}")
    out_c, in_c = out_shape[1], x.caffe_shape[1]
    blobs = ctx.blobs(layer, [(out_c, in_c, *kernel)] + ([(out_c,)] if param.bias_term else []))
    same = all(s == 1 and 2 * p == d * (k - 1) for s, p, d, k in zip(stride, pad, dilation, kernel))
    tensor = x.tensor
    if not same and any(pad):
        tensor = keras.layers.ZeroPadding2D(padding=pad, name=ctx.name(layer, "pad"))(tensor)
    conv = keras.layers.Conv2D(out_c, kernel, strides=stride, padding="same" if same else "valid",
                               dilation_rate=dilation, use_bias=bool(param.bias_term), name=ctx.name(layer))
    y = conv(tensor)
    conv.set_weights([blobs[0].transpose(2, 3, 1, 0)] + blobs[1:])
    return [Blob(y, out_shape)]
