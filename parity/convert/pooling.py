"""Pooling: MAX and AVE (incl. global) with Caffe's rounding and divisor, via CaffePooling2D."""
from __future__ import annotations

from ..keras_layers import CaffePooling2D
from ..schema import caffe_pb2
from ..shapes import pool_geometry, pool_output_shape
from .context import Blob, located
from .registry import register

SUPPORTED = {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h",
             "stride_w", "engine", "global_pooling", "ceil_mode"}
METHODS = {caffe_pb2.PoolingParameter.MAX: "max", caffe_pb2.PoolingParameter.AVE: "ave"}


@register("Pooling")
def convert_pooling(layer, bottoms, ctx):
    param = ctx.params(layer, "pooling_param", SUPPORTED)
    x = ctx.spatial_bottom(layer, bottoms)
    if param.pool not in METHODS:
        name = caffe_pb2.PoolingParameter.PoolMethod.Name(param.pool)
        raise ctx.unsupported(layer, "pooling_param.pool", name)
    kernel, stride, pad = located(ctx, layer, pool_geometry, param, *x.caffe_shape[2:])
    out_shape = pool_output_shape(x.caffe_shape, param)
    pool = CaffePooling2D(METHODS[param.pool], kernel, stride, pad, ceil_mode=param.ceil_mode,
                          global_pooling=param.global_pooling, name=ctx.name(layer))
    return [Blob(pool(x.tensor), out_shape)]
