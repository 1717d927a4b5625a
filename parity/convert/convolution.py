"""Convolution and Deconvolution: Caffe's symmetric padding; kernels moved to Keras' layout.

Convolution: kernel (O, I/g, kh, kw) -> Keras (kh, kw, I/g, O); `group` maps to Keras' groups, whose
channel blocks are ordered as Caffe's. Deconvolution: blob (I, O/g, kh, kw) -> (kh, kw, O/g, I); Keras'
Conv2DTranspose has no groups, so a grouped one is parity's CaffeDeconvolution.

Output size is floor((H + 2p - d(k-1) - 1) / s) + 1, which a 'valid' Keras convolution over the
explicitly padded input reproduces. Where the padding is exactly what Keras' 'same' gives (stride 1,
2p == d(k-1)) the pad layer is skipped: same numbers, one copy of the activations fewer.
"""
from __future__ import annotations

from ..caffe.shapes import conv_geometry, conv_output_shape
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .preset import call_with_weights
from .registry import register


def check_groups(p, bottom) -> None:
    """Caffe splits input and output channels into `group` equal blocks (group == channels: depthwise)."""
    if p.group < 1 or bottom[1] % p.group or p.num_output % p.group:
        raise LayerError(f"group {p.group} must divide the {bottom[1]} input and {p.num_output} output channels")


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
        check_groups(p, bottom)
        top = conv_output_shape(bottom, p)
        if min(top[2:]) <= 0:
            raise LayerError(f"output would be empty for input {bottom}")
        kernel = conv_geometry(p)[0]
        params = [Param((top[1], bottom[1] // p.group, *kernel), "weight")]
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
        # Keras (and TF) refuse dilation together with stride > 1. A stride-s convolution is the stride-1
        # one sampled every s rows and columns, starting at 0: floor((H + 2p - d(k-1) - 1) / s) + 1 samples.
        subsample = max(dilation) > 1 and max(stride) > 1
        conv = keras.layers.Conv2D(int(p.num_output), kernel, strides=(1, 1) if subsample else stride,
                                   padding="same" if same else "valid", dilation_rate=dilation, groups=int(p.group),
                                   use_bias=bool(p.bias_term), name=ctx.name(layer))
        y = call_with_weights(conv, tensor, [blobs[0].transpose(2, 3, 1, 0)] + blobs[1:])
        if subsample:  # a 1x1 max pool with stride s takes exactly every s-th value
            y = keras.layers.MaxPooling2D((1, 1), strides=stride, name=ctx.name(layer, "stride"))(y)
        return [y]


@register("Deconvolution")
class DeconvolutionHandler(LayerHandler):
    """Caffe's Deconvolution is the transpose of its Convolution (no kernel flip): blob (I, O/g, kh, kw),
    output s(i - 1) + d(k - 1) + 1 - 2p. Keras' Conv2DTranspose ('valid') gives s(i - 1) + d(k - 1) + 1
    when the dilated kernel is at least the stride, else s * i: then its last s - d(k - 1) - 1 rows and
    columns are ones no kernel tap reaches (bias only), and Caffe has no such rows. So p rows and
    columns are cropped from each side, plus that tail from the bottom and right. With group g, input
    block i makes output block i from weight rows [i*I/g, (i+1)*I/g) (base_conv_layer.cpp's loop over
    groups)."""

    param_field = "convolution_param"
    supported = ConvolutionHandler.supported

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        n, c, h, w = one_bottom(bottoms, rank=4)
        if p.axis != 1:
            raise LayerError(f"convolution_param.axis {p.axis} is not supported")
        check_groups(p, (n, c, h, w))
        kernel, stride, pad, dilation = conv_geometry(p)
        if max(dilation) > 1 and max(stride) > 1:
            raise LayerError("dilation together with stride > 1 is not supported for Deconvolution")
        oh, ow = (s * (i - 1) + d * (k - 1) + 1 - 2 * q for i, k, s, q, d in zip((h, w), kernel, stride, pad, dilation))
        if oh <= 0 or ow <= 0:
            raise LayerError(f"output would be empty for input {(n, c, h, w)}")
        params = [Param((c, int(p.num_output) // p.group, *kernel), "weight")]
        if p.bias_term:
            params.append(Param((int(p.num_output),), "bias"))
        return Shapes([(n, int(p.num_output), oh, ow)], params)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        p = self.param(layer)
        kernel, stride, pad, dilation = conv_geometry(p)
        deconv = transposed_convolution(int(p.num_output), kernel, stride, dilation, int(p.group), bool(p.bias_term),
                                        ctx.name(layer))
        y = call_with_weights(deconv, bottoms[0].tensor, [blobs[0].transpose(2, 3, 1, 0)] + blobs[1:])
        tail = uncovered_tail(kernel, stride, dilation)
        if any(pad) or any(tail):
            crop = tuple((q, q + t) for q, t in zip(pad, tail))
            y = keras.layers.Cropping2D(cropping=crop, name=ctx.name(layer, "crop"))(y)
        return [y]


def uncovered_tail(kernel, stride, dilation) -> list[int]:
    """Rows (columns) at the end of a 'valid' transposed convolution that no tap reaches: s - d(k-1) - 1
    where the dilated kernel is shorter than the stride (Keras gives s*i there, Caffe s(i-1) + d(k-1) + 1)."""
    return [max(0, s - (d * (k - 1) + 1)) for k, s, d in zip(kernel, stride, dilation)]


def transposed_convolution(filters: int, kernel, stride, dilation, group: int, use_bias: bool, name: str):
    """Keras' own Conv2DTranspose where it suffices (group 1, no dilation: plain nets keep plain Keras layers),
    parity's CaffeDeconvolution for groups and for dilation (TF's CPU kernels without oneDNN refuse a dilated
    transposed convolution). Both take the kernel as (kh, kw, O/g, I) and pad 'valid'."""
    import keras

    if group == 1 and tuple(dilation) == (1, 1):
        return keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding="valid", dilation_rate=dilation,
                                            use_bias=use_bias, name=name)
    from ..keras_layers import CaffeDeconvolution

    return CaffeDeconvolution(filters, kernel, stride, dilation, group, use_bias, name=name)
