"""Reductions over trailing axes: Reduction (SUM, ASUM, SUMSQ, MEAN), MVN, and ArgMax.

Reduction removes every axis from `axis` on (Caffe's default axis is 0: the whole blob, batch
included, which Keras cannot express, so it is rejected with that reason). MVN subtracts the mean
and divides by (std + eps) per channel, or per sample with across_channels.
"""
from __future__ import annotations

import math

from ..caffe.schema import caffe_pb2
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
        """Caffe's MVN works on num/channels/height/width (missing axes count 1) and reshapes its top to
        those four (mvn_layer.cpp), so a 2-D or 3-D bottom gives a 4-D top."""
        bottom = one_bottom(bottoms)
        if not 2 <= len(bottom) <= 4:
            raise LayerError(f"needs 2 to 4 axes (Caffe's num, channels, height, width), got {bottom}")
        return Shapes([tuple(bottom) + (1,) * (4 - len(bottom))])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from ..keras_layers import CaffeReduce
        from .reshaping import in_parity_order

        p, x = self.param(layer), bottoms[0]
        tensor = x.tensor
        if x.rank < 4:  # (N, C[, H]) in Caffe's order -> (N, C, H, W) -> channels-last
            nchw = keras.layers.Reshape(self.shapes(layer, [x.caffe_shape]).tops[0][1:], name=ctx.name(layer, "as4d"))
            tensor = in_parity_order(layer, nchw(tensor), 4, ctx)
        axes = [1, 2, 3] if p.across_channels else [1, 2]
        mvn = CaffeReduce("mvn", axes, eps=p.eps, normalize_variance=p.normalize_variance, name=ctx.name(layer))
        return [mvn(tensor)]


@register("ArgMax")
class ArgMaxHandler(LayerHandler):
    """With `axis`: top_k indices (or values, out_max_val) along it. Without: over each sample
    flattened in Caffe's order, giving (N, 1, k) indices or (N, 2, k) indices-then-values, padded
    with 1s to the bottom's rank (argmax_layer.cpp)."""

    param_field = "argmax_param"
    supported = frozenset({"out_max_val", "top_k", "axis"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        if p.HasField("axis"):
            axis = canonical(p.axis, len(bottom), "axis")
            if axis == 0 or p.top_k > bottom[axis]:
                raise LayerError(f"argmax over axis {axis} of {bottom} with top_k {p.top_k} is not supported")
            return Shapes([bottom[:axis] + (p.top_k,) + bottom[axis + 1:]])
        if p.top_k > math.prod(bottom[1:]):
            raise LayerError(f"top_k {p.top_k} exceeds the {math.prod(bottom[1:])} values per sample")
        shape = [bottom[0], 2 if p.out_max_val else 1, p.top_k] + [1] * (max(len(bottom), 3) - 3)
        return Shapes([tuple(shape)])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from ..keras_layers import CaffeArgMax
        from .reshaping import in_caffe_order, in_parity_order

        p, x = self.param(layer), bottoms[0]
        top = self.shapes(layer, [x.caffe_shape]).tops[0]
        if p.HasField("axis"):
            axis = keras_axis(canonical(p.axis, x.rank, "axis"), x.rank)
            last = x.rank - 1
            moved = x.tensor if axis == last else keras.layers.Permute(
                _swap(x.rank, axis), name=ctx.name(layer, "to_last"))(x.tensor)
            y = CaffeArgMax(p.top_k, p.out_max_val, name=ctx.name(layer))(moved)
            return [y if axis == last else keras.layers.Permute(_swap(x.rank, axis), name=ctx.name(layer, "back"))(y)]
        flat = keras.layers.Reshape((1, math.prod(x.caffe_shape[1:])), name=ctx.name(layer, "flatten"))(
            in_caffe_order(layer, x.tensor, x.rank, ctx))
        index = CaffeArgMax(p.top_k, False, name=ctx.name(layer))(flat)
        parts = [index]
        if p.out_max_val:
            parts.append(CaffeArgMax(p.top_k, True, name=ctx.name(layer, "values"))(flat))
            y = keras.layers.Concatenate(axis=1, name=ctx.name(layer, "join"))(parts)
        else:
            y = index
        y = keras.layers.Reshape(top[1:], name=ctx.name(layer, "shape"))(y)
        return [in_parity_order(layer, y, len(top), ctx)]


def _swap(rank: int, axis: int) -> tuple[int, ...]:
    """Keras Permute dims (1-based, batch excluded) exchanging `axis` with the last axis."""
    dims = list(range(1, rank))
    dims[axis - 1], dims[-1] = dims[-1], dims[axis - 1]
    return tuple(dims)
