"""Reductions over trailing axes: Reduction (SUM, ASUM, SUMSQ, MEAN) and MVN.

Reduction removes every axis from `axis` on (Caffe's default axis is 0: the whole blob, batch
included, which Keras cannot express, so it is rejected with that reason). MVN subtracts the mean
and divides by (std + eps) per channel, or per sample with across_channels.
"""
from __future__ import annotations

from ..schema import caffe_pb2
from .context import keras_axis
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register
from .reshaping import canonical

OPERATIONS = {caffe_pb2.ReductionParameter.SUM: "sum", caffe_pb2.ReductionParameter.ASUM: "asum",
              caffe_pb2.ReductionParameter.SUMSQ: "sumsq", caffe_pb2.ReductionParameter.MEAN: "mean"}


@register("Reduction")
class ReductionHandler(LayerHandler):
    param_field = "reduction_param"
    supported = frozenset({"operation", "axis", "coeff"})

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms)
        axis = canonical(self.param(layer).axis, len(bottom), "axis")
        if axis == 0:
            raise LayerError("reduction_param.axis 0 (Caffe's default) reduces the batch axis too; "
                             "not supported: set axis >= 1")
        return Shapes([bottom[:axis]])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeReduce

        p, x = self.param(layer), bottoms[0]
        axis = canonical(p.axis, x.rank, "axis")
        axes = sorted(keras_axis(a, x.rank) for a in range(axis, x.rank))
        y = CaffeReduce(OPERATIONS[p.operation], axes, p.coeff, name=ctx.name(layer))(x.tensor)
        if x.rank == 4 and axis == 3:  # (N, H, C) left in channels-last; Caffe's order is (N, C, H)
            import keras

            y = keras.layers.Permute((2, 1), name=ctx.name(layer, "nch"))(y)
        return [y]


@register("MVN")
class MVNHandler(LayerHandler):
    param_field = "mvn_param"
    supported = frozenset({"normalize_variance", "across_channels", "eps"})

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms)
        if len(bottom) < 2:
            raise LayerError(f"needs at least 2 axes, got {bottom}")
        return Shapes([bottom])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeReduce

        p, x = self.param(layer), bottoms[0]
        first = 1 if p.across_channels else 2
        axes = sorted(keras_axis(a, x.rank) for a in range(first, x.rank))
        if not axes:
            raise LayerError("nothing to normalize over: per-channel MVN of a 2-D blob")
        mvn = CaffeReduce("mvn", axes, eps=p.eps, normalize_variance=p.normalize_variance, name=ctx.name(layer))
        return [mvn(x.tensor)]
