"""Input: one Keras Input per top, shaped from input_param (legacy inputs arrive here upgraded)."""
from __future__ import annotations

import keras

from .context import Blob, keras_name_for, keras_shape
from .registry import register


@register("Input")
def convert_input(layer, bottoms, ctx):
    param = ctx.params(layer, "input_param", {"shape"})
    shapes = [tuple(int(d) for d in s.dim) for s in param.shape]
    if len(shapes) == 1 and len(layer.tops) > 1:
        shapes *= len(layer.tops)  # Caffe: one shape serves every top
    if len(shapes) != len(layer.tops):
        raise ctx.error(layer, f"{len(layer.tops)} tops but {len(shapes)} input shapes")
    blobs = []
    for top, shape in zip(layer.tops, shapes):
        if not shape:
            raise ctx.error(layer, f"input {top!r} has an empty shape")
        name = ctx.name(layer) if len(layer.tops) == 1 else keras_name_for(top)
        tensor = keras.Input(shape=keras_shape(shape)[1:], name=name)
        blobs.append(Blob(tensor, shape))
    return blobs
