"""BatchNorm and Scale (the pair every Caffe ResNet uses for batch normalization), and LRN.

BatchNorm (batch_norm_layer.cpp) stores mean, variance and a scale_factor; at inference it uses
mean / s and variance / s (s == 0 means 0), then (x - mean) / sqrt(variance + eps). Ignoring s is a
classic converter bug (caffe-tensorflow#40). Its gamma and beta live in the following Scale layer.
"""
from __future__ import annotations

import numpy as np

from .context import keras_axis
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .registry import register


@register("BatchNorm")
class BatchNormHandler(LayerHandler):
    param_field = "batch_norm_param"
    supported = frozenset({"use_global_stats", "moving_average_fraction", "eps"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        if p.HasField("use_global_stats") and not p.use_global_stats:
            raise LayerError("batch_norm_param.use_global_stats false normalizes with the batch's own "
                             "statistics at inference; not supported")
        if len(bottom) < 2:
            raise LayerError(f"needs a channel axis, got shape {bottom}")
        c = bottom[1]
        return Shapes([bottom], [Param((c,), "mean"), Param((c,), "variance"), Param((1,), "scale_factor")])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        mean, variance, factor = blobs
        s = np.float32(factor.reshape(-1)[0])
        inverse = np.float32(0) if s == 0 else np.float32(1) / s  # Caffe's own float arithmetic
        bn = keras.layers.BatchNormalization(axis=keras_axis(1, bottoms[0].rank), epsilon=float(self.param(layer).eps),
                                             center=False, scale=False, name=ctx.name(layer))
        y = bn(bottoms[0].tensor)
        bn.set_weights([mean * inverse, variance * inverse])
        return [y]


def broadcast_shape(bottom: tuple[int, ...], axis: int, count: int) -> tuple[int, ...]:
    """Caffe-layout shape that places a blob of bottom[axis:axis+count] for broadcasting over `bottom`."""
    return tuple(d if axis <= i < axis + count else 1 for i, d in enumerate(bottom))


def to_keras_broadcast(array: np.ndarray, caffe_shape: tuple[int, ...]) -> np.ndarray:
    placed = array.reshape(caffe_shape)
    return placed.transpose(0, 2, 3, 1) if placed.ndim == 4 else placed


@register("Scale")
class ScaleHandler(LayerHandler):
    """y = x * scale (+ bias), scale spanning bottom axes [axis, axis + num_axes)."""

    param_field = "scale_param"
    supported = frozenset({"axis", "num_axes", "filler", "bias_term", "bias_filler"})

    def placement(self, layer, bottom) -> tuple[int, int]:
        p = self.param(layer)
        axis = p.axis + len(bottom) if p.axis < 0 else p.axis
        count = len(bottom) - axis if p.num_axes == -1 else p.num_axes
        if not (0 <= axis and count >= 0 and axis + count <= len(bottom)):
            raise LayerError(f"scale_param axis {p.axis}, num_axes {p.num_axes} do not fit a {len(bottom)}-D bottom")
        return axis, count

    def shapes(self, layer, bottoms):
        if len(bottoms) != 1:
            raise LayerError("a second bottom as the scale is not supported yet")
        bottom = tuple(bottoms[0])
        axis, count = self.placement(layer, bottom)
        scale = bottom[axis:axis + count]
        params = [Param(scale, "gamma")] + ([Param(scale, "beta")] if self.param(layer).bias_term else [])
        return Shapes([bottom], params)

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeScale

        bottom = bottoms[0].caffe_shape
        placed = broadcast_shape(bottom, *self.placement(layer, bottom))
        weights = [to_keras_broadcast(b, placed) for b in blobs]
        scale = CaffeScale(weights[0].shape, use_bias=len(blobs) == 2, name=ctx.name(layer))
        y = scale(bottoms[0].tensor)
        scale.set_weights(weights)
        return [y]



@register("LRN")
class LRNHandler(LayerHandler):
    """Local response normalization, ACROSS_CHANNELS (AlexNet, GoogLeNet) or WITHIN_CHANNEL."""

    param_field = "lrn_param"
    supported = frozenset({"local_size", "alpha", "beta", "norm_region", "k", "engine"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if p.local_size % 2 != 1:
            raise LayerError(f"lrn_param.local_size {p.local_size}: Caffe supports odd sizes only")
        return Shapes([one_bottom(bottoms, rank=4)])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeLRN
        from ..schema import caffe_pb2

        p = self.param(layer)
        region = "within" if p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL else "across"
        lrn = CaffeLRN(p.local_size, p.alpha, p.beta, p.k, region, name=ctx.name(layer))
        return [lrn(bottoms[0].tensor)]
