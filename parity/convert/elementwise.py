"""Layers that keep the blob's shape: ReLU, Dropout (identity at inference), Softmax (axis mapped)."""
from __future__ import annotations

from .context import keras_axis
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register


class SameShape(LayerHandler):
    def shapes(self, layer, bottoms):
        return Shapes([one_bottom(bottoms)])


@register("ReLU")
class ReLUHandler(SameShape):
    param_field = "relu_param"
    supported = frozenset({"negative_slope", "engine"})

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        relu = keras.layers.ReLU(negative_slope=float(self.param(layer).negative_slope), name=ctx.name(layer))
        return [relu(bottoms[0].tensor)]


@register("Dropout")
class DropoutHandler(SameShape):
    """Caffe scales during training (inverted dropout), so at inference the layer is the identity."""

    param_field = "dropout_param"
    supported = frozenset({"dropout_ratio"})

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        return [keras.layers.Identity(name=ctx.name(layer))(bottoms[0].tensor)]


@register("Softmax")
class SoftmaxHandler(SameShape):
    param_field = "softmax_param"
    supported = frozenset({"axis", "engine"})

    def shapes(self, layer, bottoms):
        shapes = super().shapes(layer, bottoms)
        rank = len(shapes.tops[0])
        if not -rank <= self.param(layer).axis < rank:
            raise LayerError(f"softmax_param.axis {self.param(layer).axis} out of range for a {rank}-D blob")
        return shapes

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        axis = keras_axis(self.param(layer).axis, bottoms[0].rank)
        return [keras.layers.Softmax(axis=axis, name=ctx.name(layer))(bottoms[0].tensor)]
