"""Layers that keep the blob's shape: ReLU, Dropout (identity at inference), Softmax (axis mapped),
Sigmoid, TanH, ELU, PReLU (per-channel or shared slopes), AbsVal, BNLL, Power, Exp, Log, Threshold."""
from __future__ import annotations

import numpy as np

from .context import keras_axis, keras_shape
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .preset import call_with_weights
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


@register("Sigmoid")
class SigmoidHandler(SameShape):
    param_field = "sigmoid_param"
    supported = frozenset({"engine"})
    activation = "sigmoid"

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        return [keras.layers.Activation(self.activation, name=ctx.name(layer))(bottoms[0].tensor)]


@register("TanH")
class TanHHandler(SigmoidHandler):
    param_field = "tanh_param"
    activation = "tanh"


@register("ELU")
class ELUHandler(SameShape):
    param_field = "elu_param"
    supported = frozenset({"alpha"})

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        return [keras.layers.ELU(alpha=float(self.param(layer).alpha), name=ctx.name(layer))(bottoms[0].tensor)]


@register("PReLU")
class PReLUHandler(SameShape):
    """One learned slope per channel (axis 1), or one for all with channel_shared."""

    param_field = "prelu_param"
    supported = frozenset({"filler", "channel_shared"})

    def shapes(self, layer, bottoms):
        shapes = super().shapes(layer, bottoms)
        bottom = shapes.tops[0]
        if len(bottom) < 2:
            raise LayerError(f"needs a channel axis, got shape {bottom}")
        slopes = () if self.param(layer).channel_shared else (bottom[1],)  # Caffe: a 0-D blob when shared
        return Shapes(shapes.tops, [Param(slopes, "slope")])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        rank = bottoms[0].rank
        channel = keras_axis(1, rank)
        shared = [a for a in range(1, rank) if self.param(layer).channel_shared or a != channel]
        prelu = keras.layers.PReLU(shared_axes=shared or None, name=ctx.name(layer))
        alpha_shape = tuple(1 if axis in shared else d
                            for axis, d in enumerate(keras_shape(bottoms[0].caffe_shape)[1:], start=1))
        slopes = blobs[0].reshape([d if axis == channel else 1 for axis, d in enumerate(alpha_shape, start=1)]
                                  if blobs[0].size > 1 else [1] * len(alpha_shape))  # channels where Keras keeps them
        return [call_with_weights(prelu, bottoms[0].tensor, [np.broadcast_to(slopes, alpha_shape).astype(np.float32)])]


class UnaryHandler(SameShape):
    """AbsVal, BNLL, Power, Exp, Log, Threshold: one CaffeUnary layer with the parameters copied."""

    op = ""
    fields: tuple[str, ...] = ()

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeUnary

        values = {f: float(getattr(self.param(layer), f)) for f in self.fields} if self.param_field else {}
        return [CaffeUnary(self.op, **values, name=ctx.name(layer))(bottoms[0].tensor)]


@register("AbsVal")
class AbsValHandler(UnaryHandler):
    op = "abs"


@register("BNLL")
class BNLLHandler(UnaryHandler):
    op = "bnll"


@register("Power")
class PowerHandler(UnaryHandler):
    op, param_field, fields = "power", "power_param", ("power", "scale", "shift")
    supported = frozenset(fields)


@register("Exp")
class ExpHandler(UnaryHandler):
    op, param_field, fields = "exp", "exp_param", ("base", "scale", "shift")
    supported = frozenset(fields)

    def shapes(self, layer, bottoms):
        base = self.param(layer).base
        if base != -1 and base <= 0:
            raise LayerError(f"exp_param.base {base} must be positive (or -1 for e)")
        return super().shapes(layer, bottoms)


@register("Log")
class LogHandler(ExpHandler):
    op, param_field = "log", "log_param"


@register("Threshold")
class ThresholdHandler(UnaryHandler):
    op, param_field, fields = "threshold", "threshold_param", ("threshold",)
    supported = frozenset(fields)


@register("ReLU6")
class ReLU6Handler(SameShape):
    """The fork's ReLU6 (relu6_layer.cpp): min(max(x, 0) + negative_slope * min(x, 0), threshold), with
    threshold 6 by default. Keras' ReLU(max_value, negative_slope) is the same function while the slope
    and the cap are not negative (a negative slope's output would reach the cap from below zero)."""

    param_field = "relu6_param"
    supported = frozenset({"negative_slope", "threshold"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if p.negative_slope < 0 or p.threshold < 0:
            raise LayerError(f"relu6_param negative_slope {p.negative_slope:g} and threshold {p.threshold:g} must "
                             "not be negative: not supported")
        return super().shapes(layer, bottoms)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        p = self.param(layer)
        relu = keras.layers.ReLU(max_value=float(p.threshold), negative_slope=float(p.negative_slope),
                                 name=ctx.name(layer))
        return [relu(bottoms[0].tensor)]


@register("HardSigmoid")
class HardSigmoidHandler(UnaryHandler):
    """The fork's HardSigmoid: clip(alpha x + beta, 0, 1) with alpha 0.2, beta 0.5 by default (Keras 2's
    old slope, not PyTorch's 1/6)."""

    op, param_field = "hardsigmoid", "hardsigmoid_param"
    supported = frozenset({"alpha", "beta"})

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeUnary

        p = self.param(layer)
        return [CaffeUnary(self.op, scale=float(p.alpha), shift=float(p.beta), name=ctx.name(layer))(bottoms[0].tensor)]


@register("HardSwish")
class HardSwishHandler(UnaryHandler):
    """The fork's HardSwish: x * clip(x / 6 + 0.5, 0, 1); it has no parameters (unlike HardSigmoid)."""

    op = "hardswish"
