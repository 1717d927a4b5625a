"""Layers made of sliding windows: SPP (a pyramid of poolings) and Im2col (the convolution's columns).

SPP (spp_layer.cpp): level l of pyramid_height levels pools the (N, C, H, W) bottom into about 2^l bins
per axis with Caffe's own Pooling layer, configured per axis as kernel = ceil(H / 2^l), stride = kernel,
pad = (kernel * 2^l - H + 1) // 2, so Caffe's usual output size rules apply (ceil rounding, a last window
starting in the padding dropped): the bins are not always exactly 2^l. Each level is flattened in C,H,W
order and the levels are concatenated, level 0 first, into (N, sum of C * bins). With pyramid_height 1 the
top is the one pooling's 4-D output, not flattened.

Im2col (im2col_layer.cpp): the bottom lowered to columns as a convolution with the same kernel, stride,
pad and dilation does; see keras_layers/windows.py for the column order.
"""
from __future__ import annotations

import math

from ..caffe.schema import caffe_pb2
from ..caffe.shapes import conv_geometry, conv_output_size, pooled_hw
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register
from .reshaping import in_caffe_order

SPP_METHODS = {caffe_pb2.SPPParameter.MAX: "max", caffe_pb2.SPPParameter.AVE: "ave"}
Pair = tuple[int, int]


def spp_level(level: int, height: int, width: int) -> tuple[Pair, Pair, Pair]:
    """(kernel, stride, pad) of pyramid level `level`, per axis as Caffe's SPP computes them."""
    bins = 2 ** level
    kernel = tuple(math.ceil(size / bins) for size in (height, width))
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width)))
    if any(p >= k for p, k in zip(pad, kernel)):  # Caffe's Pooling CHECKs pad < kernel and aborts
        raise LayerError(f"pyramid level {level} ({bins} bins) needs pad {pad} for kernel {kernel} on a "
                         f"{height}x{width} bottom; Caffe's Pooling refuses a pad not below the kernel")
    return kernel, kernel, pad


@register("SPP")
class SPPHandler(LayerHandler):
    param_field = "spp_param"
    # engine: Caffe's SPP builds its Pooling layers itself, always Caffe's own; the field has no effect.
    supported = frozenset({"pyramid_height", "pool", "engine"})

    def levels(self, layer, bottom) -> list[tuple[Pair, Pair, Pair, Pair]]:
        """(kernel, stride, pad, pooled (h, w)) for every level."""
        p = self.param(layer)
        if p.pool not in SPP_METHODS:
            raise LayerError(f"spp_param.pool {caffe_pb2.SPPParameter.PoolMethod.Name(p.pool)} is not supported: "
                             "Caffe's STOCHASTIC pooling has no CPU forward, so no CPU-built reference can prove it")
        if p.pyramid_height < 1:
            raise LayerError("spp_param.pyramid_height must be 1 or more")
        _, _, h, w = bottom
        levels = []
        for level in range(p.pyramid_height):
            kernel, stride, pad = spp_level(level, h, w)
            levels.append((kernel, stride, pad, pooled_hw((h, w), kernel, stride, pad, True)))
        return levels

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms, rank=4)
        n, c = bottom[:2]
        levels = self.levels(layer, bottom)
        if len(levels) == 1:
            return Shapes([(n, c) + levels[0][3]])
        return Shapes([(n, sum(c * math.prod(out) for *_, out in levels))])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from ..keras_layers import CaffePooling2D

        (x,) = bottoms
        method = SPP_METHODS[self.param(layer).pool]
        levels = self.levels(layer, x.caffe_shape)
        if len(levels) == 1:
            kernel, stride, pad, _ = levels[0]
            return [CaffePooling2D(method, kernel, stride, pad, name=ctx.name(layer))(x.tensor)]
        flat = []
        for i, (kernel, stride, pad, out) in enumerate(levels):
            pooled = CaffePooling2D(method, kernel, stride, pad, name=ctx.name(layer, f"level{i}"))(x.tensor)
            nchw = in_caffe_order(layer, pooled, 4, ctx, f"level{i}_nchw")
            size = x.caffe_shape[1] * math.prod(out)
            flat.append(keras.layers.Reshape((size,), name=ctx.name(layer, f"level{i}_flat"))(nchw))
        return [keras.layers.Concatenate(axis=1, name=ctx.name(layer))(flat)]


@register("Im2col")
class Im2colHandler(LayerHandler):
    param_field = "convolution_param"
    # What Im2colLayer reads of its convolution_param; num_output, group, bias_term and the fillers it
    # ignores, so parity refuses them as meaningless here.
    supported = frozenset({"kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h",
                           "pad_w", "dilation", "axis", "force_nd_im2col"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        n, c, h, w = one_bottom(bottoms, rank=4)
        if p.axis not in (1, -3):
            raise LayerError(f"convolution_param.axis {p.axis} is not supported (only channels on axis 1)")
        kernel, stride, pad, dilation = conv_geometry(p)
        out = tuple(conv_output_size(*args) for args in zip((h, w), kernel, stride, pad, dilation))
        if min(out) < 1:
            raise LayerError(f"output would be empty for input {(n, c, h, w)}")
        return Shapes([(n, c * kernel[0] * kernel[1]) + out])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeIm2col

        kernel, stride, pad, dilation = conv_geometry(self.param(layer))
        return [CaffeIm2col(kernel, stride, pad, dilation, name=ctx.name(layer))(bottoms[0].tensor)]
