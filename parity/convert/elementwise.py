"""Layers that keep the blob's shape: ReLU, Dropout (identity at inference), Softmax (axis mapped)."""
from __future__ import annotations

import keras

from .context import Blob, keras_axis
from .registry import register


@register("ReLU")
def convert_relu(layer, bottoms, ctx):
    param = ctx.params(layer, "relu_param", {"negative_slope", "engine"})
    (x,) = bottoms
    relu = keras.layers.ReLU(negative_slope=float(param.negative_slope), name=ctx.name(layer))
    return [Blob(relu(x.tensor), x.caffe_shape)]


@register("Dropout")
def convert_dropout(layer, bottoms, ctx):
    """Caffe scales during training (inverted dropout), so at inference the layer is the identity."""
    ctx.params(layer, "dropout_param", {"dropout_ratio"})
    (x,) = bottoms
    return [Blob(keras.layers.Identity(name=ctx.name(layer))(x.tensor), x.caffe_shape)]


@register("Softmax")
def convert_softmax(layer, bottoms, ctx):
    param = ctx.params(layer, "softmax_param", {"axis", "engine"})
    (x,) = bottoms
    try:
        axis = keras_axis(param.axis, x.rank)
    except ValueError as exc:
        raise ctx.error(layer, str(exc)) from None
    softmax = keras.layers.Softmax(axis=axis, name=ctx.name(layer))
    return [Blob(softmax(x.tensor), x.caffe_shape)]
