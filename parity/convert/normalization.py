"""BatchNorm and Scale (the pair every Caffe ResNet uses for batch normalization), Bias, LRN and Normalize.

BatchNorm (batch_norm_layer.cpp) stores mean, variance and a scale_factor; at inference it uses
mean / s and variance / s (s == 0 means 0), then (x - mean) / sqrt(variance + eps). Ignoring s is a
classic converter bug (caffe-tensorflow#40). Its gamma and beta live in the following Scale layer.
"""
from __future__ import annotations

import numpy as np

from ..data.layout import to_keras_layout
from .context import keras_axis
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .preset import call_with_weights
from .registry import not_convertible, register


@register("BatchNorm")
class BatchNormHandler(LayerHandler):
    param_field = "batch_norm_param"
    supported = frozenset({"use_global_stats", "moving_average_fraction", "eps"})
    affine = False  # BatchNormKyle's alpha and beta

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        if p.HasField("use_global_stats") and not p.use_global_stats:
            raise LayerError("batch_norm_param.use_global_stats false normalizes with the batch's own "
                             "statistics at inference; not supported")
        if len(bottom) < 2:
            raise LayerError(f"needs a channel axis, got shape {bottom}")
        c = bottom[1]
        params = [Param((c,), "mean"), Param((c,), "variance"), Param((1,), "scale_factor")]
        if self.affine and p.use_alpha_beta:
            params += [Param((c,), "gamma"), Param((c,), "beta")]
        return Shapes([bottom], params)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        mean, variance, factor = blobs[:3]
        s = np.float32(factor.reshape(-1)[0])
        inverse = np.float32(0) if s == 0 else np.float32(1) / s  # Caffe's own float arithmetic
        affine = [b.reshape(-1) for b in blobs[3:]]  # alpha (gamma), beta: Keras' order
        bn = keras.layers.BatchNormalization(axis=keras_axis(1, bottoms[0].rank), epsilon=float(self.param(layer).eps),
                                             center=bool(affine), scale=bool(affine), name=ctx.name(layer))
        return [call_with_weights(bn, bottoms[0].tensor, affine + [mean * inverse, variance * inverse])]


@register("BatchNormKyle")
class BatchNormKyleHandler(BatchNormHandler):
    """The fork's BatchNormKyle (batch_norm_kyle_layer.cpp): BatchNorm's blobs and scale_factor rule,
    y = (x - mean/s) / sqrt(variance/s + eps), then, with `use_alpha_beta`, alpha * y + beta from two more
    per-channel blobs (so no Scale layer is needed). It reads batch_norm_param; `use_global_stats` defaults
    to the phase (TEST: the stored statistics). The training-only fields are accepted and have no effect."""

    supported = frozenset({"use_global_stats", "moving_average_fraction", "eps", "use_alpha_beta", "do_all_reduce",
                           "weight_filler", "bias_filler"})
    affine = True


not_convertible("BN", "the reference Caffe (brocolli-caffe) compiles bn_layer.cpp but never registers the type "
                "(no REGISTER_LAYER_CLASS(BN)), so it cannot build a net with a BN layer and no reference can "
                "prove a conversion")


def broadcast_shape(bottom: tuple[int, ...], axis: int, count: int) -> tuple[int, ...]:
    """Caffe-layout shape that places a blob of bottom[axis:axis+count] for broadcasting over `bottom`."""
    return tuple(d if axis <= i < axis + count else 1 for i, d in enumerate(bottom))


def to_keras_broadcast(array: np.ndarray, caffe_shape: tuple[int, ...]) -> np.ndarray:
    return to_keras_layout(array.reshape(caffe_shape))


class AffineHandler(LayerHandler):
    """Scale (y = x * s [+ b]) and Bias (y = x + b): the operand spans bottom axes [axis, axis + n),
    n = num_axes for a learned blob (-1: to the end, 0: a scalar), or a second bottom's rank."""

    operation, operand_role = "mul", "gamma"

    def placement(self, layer, bottom, operand_rank: int | None = None) -> tuple[int, int]:
        p = self.param(layer)
        rank = len(bottom)
        count = (operand_rank if operand_rank is not None
                 else (rank - (p.axis % rank) if p.num_axes == -1 else p.num_axes))
        axis = 0 if count == 0 else (p.axis + rank if p.axis < 0 else p.axis)
        if not (0 <= axis and count >= 0 and axis + count <= rank):
            raise LayerError(f"axis {p.axis} with {count} operand axes does not fit a {rank}-D bottom")
        return axis, count

    def shapes(self, layer, bottoms):
        if len(bottoms) not in (1, 2):
            raise LayerError(f"expects one or two bottoms, got {len(bottoms)}")
        x = tuple(bottoms[0])
        if len(bottoms) == 2:
            operand = tuple(bottoms[1])
            axis, count = self.placement(layer, x, len(operand))
            if x[axis:axis + count] != operand:
                raise LayerError(f"second bottom {operand} does not match {x} from axis {axis}")
            params = []
        else:
            axis, count = self.placement(layer, x)
            operand = x[axis:axis + count]
            params = [Param(operand, self.operand_role)]
        if self.has_bias(layer):
            params.append(Param(operand, "beta"))
        return Shapes([x], params)

    def has_bias(self, layer) -> bool:
        return False

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeBroadcast, CaffeScale

        x = bottoms[0]
        operand_rank = bottoms[1].rank if len(bottoms) == 2 else None
        placed = broadcast_shape(x.caffe_shape, *self.placement(layer, x.caffe_shape, operand_rank))
        weights = [to_keras_broadcast(b, placed) for b in blobs]
        tensor = x.tensor
        if len(bottoms) == 2:
            last = not weights
            tensor = CaffeBroadcast(self.operation, bottoms[1].caffe_shape, placed,
                                    name=ctx.name(layer) if last else ctx.name(layer, "by_bottom"))(
                [tensor, bottoms[1].tensor])
            if last:
                return [tensor]
            weights = [weights[-1]]  # only the bias is left, after the product
            use_scale = False
        else:
            use_scale = self.operation == "mul"
        affine = CaffeScale(weights[0].shape, use_bias=self.operation == "add" or self.has_bias(layer),
                            use_scale=use_scale, name=ctx.name(layer))
        return [call_with_weights(affine, tensor, weights)]


@register("Scale")
class ScaleHandler(AffineHandler):
    param_field = "scale_param"
    supported = frozenset({"axis", "num_axes", "filler", "bias_term", "bias_filler"})

    def has_bias(self, layer) -> bool:
        return bool(self.param(layer).bias_term)


@register("Bias")
class BiasHandler(AffineHandler):
    param_field = "bias_param"
    supported = frozenset({"axis", "num_axes", "filler"})
    operation, operand_role = "add", "beta"


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
        from ..caffe.schema import caffe_pb2
        from ..keras_layers import CaffeLRN

        p = self.param(layer)
        region = "within" if p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL else "across"
        lrn = CaffeLRN(p.local_size, p.alpha, p.beta, p.k, region, name=ctx.name(layer))
        return [lrn(bottoms[0].tensor)]


@register("Normalize")
class NormalizeHandler(LayerHandler):
    """SSD's L2 normalization (normalize_layer.cpp in the SSD fork): blob is a 0-D scale when
    channel_shared, else one per channel."""

    param_field = "norm_param"
    supported = frozenset({"across_spatial", "scale_filler", "channel_shared", "eps"})

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms, rank=4)
        scale = () if self.param(layer).channel_shared else (bottom[1],)
        return Shapes([bottom], [Param(scale, "gamma")])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeNormalize

        p = self.param(layer)
        scale = blobs[0].reshape(-1).astype(np.float32)
        norm = CaffeNormalize(p.across_spatial, p.eps, scale.shape, name=ctx.name(layer))
        return [call_with_weights(norm, bottoms[0].tensor, [scale])]
