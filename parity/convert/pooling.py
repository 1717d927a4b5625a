"""Pooling: MAX and AVE (incl. global) with Caffe's rounding and divisor, via CaffePooling2D; MAX's
optional argmax mask top (CaffeMaxPoolMask); and the fork's MaxUnPool, which reads that mask."""
from __future__ import annotations

from ..caffe.schema import caffe_pb2
from ..caffe.shapes import pool_geometry, pool_output_shape
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import not_convertible, register

METHODS = {caffe_pb2.PoolingParameter.MAX: "max", caffe_pb2.PoolingParameter.AVE: "ave"}


@register("Pooling")
class PoolingHandler(LayerHandler):
    param_field = "pooling_param"
    supported = frozenset({"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride",
                           "stride_h", "stride_w", "engine", "global_pooling", "ceil_mode"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms, rank=4)
        if p.pool not in METHODS:
            raise LayerError(f"pooling_param.pool {caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)} is not "
                             "supported: Caffe implements it only in CUDA (its CPU forward is NOT_IMPLEMENTED), "
                             "so no CPU-built Caffe reference can prove a conversion of it")
        top = pool_output_shape(bottom, p)
        if len(layer.tops) == 2 and p.pool != caffe_pb2.PoolingParameter.MAX:
            raise LayerError("has 2 tops, but only MAX pooling has a second (mask) top in Caffe: not supported")
        return Shapes([top] * (2 if len(layer.tops) == 2 else 1))

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeMaxPoolMask, CaffePooling2D

        p = self.param(layer)
        kernel, stride, pad = pool_geometry(p, *bottoms[0].caffe_shape[2:])
        pool = CaffePooling2D(METHODS[p.pool], kernel, stride, pad, ceil_mode=p.ceil_mode,
                              global_pooling=p.global_pooling, name=ctx.name(layer))
        tops = [pool(bottoms[0].tensor)]
        if len(layer.tops) == 2:  # MAX's argmax mask, which MaxUnPool reads
            mask = CaffeMaxPoolMask(kernel, stride, pad, ceil_mode=p.ceil_mode, global_pooling=p.global_pooling,
                                    name=ctx.name(layer, "mask"))
            tops.append(mask(bottoms[0].tensor))
        return tops


@register("MaxUnPool")
class MaxUnPoolHandler(LayerHandler):
    """The fork's MaxUnPool (maxunpool_layer.cpp): bottoms (data, mask), top (N, C, dst_h, dst_w) of
    zeros with data[i] placed at its plane's flat index mask[i]. Caffe requires both sizes (no default,
    nothing inferred from the mask) and a 4-D data bottom; it reads the mask plane by plane with the
    data's H x W, so parity asks for a mask of the data's shape (a Pooling layer's second top)."""

    param_field = "max_unpool_param"
    supported = frozenset({"dst_h", "dst_w"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if len(bottoms) != 2:
            raise LayerError(f"expects two bottoms (data and its pooling mask), got {len(bottoms)}")
        data, mask = (tuple(b) for b in bottoms)
        if len(data) != 4:
            raise LayerError(f"expects a 4-D data bottom, got shape {data}")
        if mask != data:
            raise LayerError(f"the mask bottom {mask} must have the data bottom's shape {data}")
        if not (p.HasField("dst_h") and p.HasField("dst_w")) or min(p.dst_h, p.dst_w) < 1:
            raise LayerError("max_unpool_param.dst_h and dst_w are required and must be positive (Caffe CHECKs both)")
        return Shapes([data[:2] + (p.dst_h, p.dst_w)])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeMaxUnpool

        p = self.param(layer)
        unpool = CaffeMaxUnpool((p.dst_h, p.dst_w), name=ctx.name(layer))
        return [unpool([bottoms[0].tensor, bottoms[1].tensor])]


# R-FCN's region layer, left unconverted on purpose (see README; Proposal is in proposal.py):
not_convertible("PSROIPooling", "the reference Caffe's PSROIPoolingLayer::Forward_cpu is NOT_IMPLEMENTED (only "
                "its CUDA kernel computes), so a CPU-built Caffe cannot produce a reference to prove a conversion")
