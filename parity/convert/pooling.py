"""Pooling: MAX and AVE (incl. global) with Caffe's rounding and divisor, via CaffePooling2D."""
from __future__ import annotations

from ..schema import caffe_pb2
from ..shapes import pool_geometry, pool_output_shape
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register

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
        return Shapes([pool_output_shape(bottom, p)])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffePooling2D

        p = self.param(layer)
        kernel, stride, pad = pool_geometry(p, *bottoms[0].caffe_shape[2:])
        pool = CaffePooling2D(METHODS[p.pool], kernel, stride, pad, ceil_mode=p.ceil_mode,
                              global_pooling=p.global_pooling, name=ctx.name(layer))
        return [pool(bottoms[0].tensor)]
