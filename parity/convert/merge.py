"""Layers that join blobs: Eltwise (SUM with coefficients, PROD, MAX) and Concat (axis mapped)."""
from __future__ import annotations

from ..caffe.schema import caffe_pb2
from .context import keras_axis
from .handler import LayerError, LayerHandler, Shapes
from .registry import register

OPERATIONS = {caffe_pb2.EltwiseParameter.SUM: "sum", caffe_pb2.EltwiseParameter.PROD: "prod",
              caffe_pb2.EltwiseParameter.MAX: "max"}


def same_shapes(bottoms) -> tuple[int, ...]:
    if len(bottoms) < 2:
        raise LayerError(f"needs at least two bottoms, got {len(bottoms)}")
    if any(tuple(b) != tuple(bottoms[0]) for b in bottoms):
        raise LayerError(f"bottoms differ in shape: {', '.join(str(tuple(b)) for b in bottoms)}")
    return tuple(bottoms[0])


@register("Eltwise")
class EltwiseHandler(LayerHandler):
    param_field = "eltwise_param"
    supported = frozenset({"operation", "coeff", "stable_prod_grad"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        shape = same_shapes(bottoms)
        if p.coeff and p.operation != caffe_pb2.EltwiseParameter.SUM:
            raise LayerError("eltwise_param.coeff is only meaningful for SUM")
        if p.coeff and len(p.coeff) != len(bottoms):
            raise LayerError(f"{len(p.coeff)} coefficients for {len(bottoms)} bottoms")
        return Shapes([shape])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeEltwise

        p = self.param(layer)
        eltwise = CaffeEltwise(OPERATIONS[p.operation], list(p.coeff) or None, name=ctx.name(layer))
        return [eltwise([b.tensor for b in bottoms])]


@register("Concat")
class ConcatHandler(LayerHandler):
    param_field = "concat_param"
    supported = frozenset({"axis", "concat_dim"})

    def axis(self, layer, rank: int) -> int:
        p = self.param(layer)
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise LayerError("give either concat_param.axis or the legacy concat_dim, not both")
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            raise LayerError(f"concat axis {axis} out of range for {rank}-D bottoms")
        return axis

    def shapes(self, layer, bottoms):
        if not bottoms:
            raise LayerError("needs at least one bottom")
        rank = len(bottoms[0])
        axis = self.axis(layer, rank)
        for b in bottoms:
            if len(b) != rank or any(d != e for i, (d, e) in enumerate(zip(b, bottoms[0])) if i != axis):
                raise LayerError(f"bottoms must agree except on axis {axis}: "
                                 f"{', '.join(str(tuple(x)) for x in bottoms)}")
        top = list(bottoms[0])
        top[axis] = sum(b[axis] for b in bottoms)
        return Shapes([tuple(top)])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        if len(bottoms) == 1:
            return [keras.layers.Identity(name=ctx.name(layer))(bottoms[0].tensor)]
        axis = keras_axis(self.axis(layer, bottoms[0].rank), bottoms[0].rank)
        return [keras.layers.Concatenate(axis=axis, name=ctx.name(layer))([b.tensor for b in bottoms])]
