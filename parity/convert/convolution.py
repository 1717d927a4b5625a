"""Convolution: Caffe's symmetric explicit padding, kernel (O, I, kh, kw) -> Keras (kh, kw, I, O).

Output size is floor((H + 2p - d(k-1) - 1) / s) + 1, which a 'valid' Keras convolution over the
explicitly padded input reproduces. Where the padding is exactly what Keras' 'same' gives (stride 1,
2p == d(k-1)) the pad layer is skipped: same numbers, one copy of the activations fewer.
"""
from __future__ import annotations

from ..shapes import conv_geometry, conv_output_shape
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .registry import register


@register("Convolution")
class ConvolutionHandler(LayerHandler):
    param_field = "convolution_param"
    supported = frozenset({"num_output", "bias_term", "pad", "kernel_size", "stride", "pad_h", "pad_w",
                           "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation", "group",
                           "weight_filler", "bias_filler", "engine", "axis", "force_nd_im2col"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms, rank=4)
        if p.axis != 1:
            raise LayerError(f"convolution_param.axis {p.axis} is not supported")
        if p.group != 1:
            raise LayerError(f"convolution_param.group {p.group} is not supported yet")
        top = conv_output_shape(bottom, p)
        if min(top[2:]) <= 0:
            raise LayerError(f"output would be empty for input {bottom}")
        kernel = conv_geometry(p)[0]
        params = [Param((top[1], bottom[1], *kernel), "weight")]
        if p.bias_term:
            params.append(Param((top[1],), "bias"))
        return Shapes([top], params)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        p = self.param(layer)
        kernel, stride, pad, dilation = conv_geometry(p)
        same = all(s == 1 and 2 * q == d * (k - 1) for s, q, d, k in zip(stride, pad, dilation, kernel))
        tensor = bottoms[0].tensor
        if not same and any(pad):
            tensor = keras.layers.ZeroPadding2D(padding=pad, name=ctx.name(layer, "pad"))(tensor)
        conv = keras.layers.Conv2D(int(p.num_output), kernel, strides=stride, padding="same" if same else "valid",
                                   dilation_rate=dilation, use_bias=bool(p.bias_term), name=ctx.name(layer))
        y = conv(tensor)
        conv.set_weights([blobs[0].transpose(2, 3, 1, 0)] + blobs[1:])
        return [y]
