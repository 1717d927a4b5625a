"""Input: one Keras Input per top, shaped from input_param (legacy inputs arrive here upgraded)."""
from __future__ import annotations

from .context import keras_name_for, keras_shape
from .handler import LayerError, LayerHandler, Shapes
from .registry import register


@register("Input")
class InputHandler(LayerHandler):
    param_field = "input_param"
    supported = frozenset({"shape"})

    def shapes(self, layer, bottoms):
        shapes = [tuple(int(d) for d in s.dim) for s in self.param(layer).shape]
        if len(shapes) == 1 and len(layer.tops) > 1:
            shapes *= len(layer.tops)  # Caffe: one shape serves every top
        if len(shapes) != len(layer.tops):
            raise LayerError(f"{len(layer.tops)} tops but {len(shapes)} input shapes")
        if any(not s for s in shapes):
            raise LayerError("an input has an empty shape")
        if any(d <= 0 for s in shapes for d in s):  # Caffe's Blob refuses negative sizes; 0 leaves nothing to check
            raise LayerError(f"input shape {next(s for s in shapes if min(s) <= 0)} has a dimension below 1")
        return Shapes(shapes)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        shapes = self.shapes(layer, []).tops
        names = [ctx.name(layer)] if len(layer.tops) == 1 else [keras_name_for(t) for t in layer.tops]
        tensors = [keras.Input(shape=keras_shape(s)[1:], name=n) for s, n in zip(shapes, names)]
        ctx.input_tensors.extend(tensors)
        return tensors
