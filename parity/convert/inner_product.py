"""InnerProduct -> Dense, with the weight rows reordered when the bottom is spatial.

Caffe flattens a (C, H, W) bottom in C,H,W order; parity's channels-last tensor flattens in H,W,C
order. Feeding Caffe's weight matrix unchanged silently scrambles fc6 of every VGG (MMdnn#250), so
the rows are permuted here: W[o, c, h, w] -> kernel[(h, w, c), o].
"""
from __future__ import annotations

import math

import numpy as np

from ..data.layout import copy_blocked
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .preset import call_with_weights
from .registry import register


def dense_kernel(weight: np.ndarray, transpose: bool, bottom_shape: tuple[int, ...]) -> np.ndarray:
    """Caffe InnerProduct weight -> Keras Dense kernel (K, O) for a bottom of `bottom_shape` (Caffe layout)."""
    kernel = weight if transpose else weight.T  # (K, O), a view
    if len(bottom_shape) == 4:
        _, c, h, w = bottom_shape
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3)  # rows to (h, w, c) order, still a view
    return copy_blocked(kernel, (math.prod(kernel.shape[:-1]), kernel.shape[-1]))


@register("InnerProduct")
class InnerProductHandler(LayerHandler):
    param_field = "inner_product_param"
    supported = frozenset({"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        axis = p.axis + len(bottom) if p.axis < 0 else p.axis
        if not 1 <= axis < len(bottom):
            raise LayerError(f"inner_product_param.axis {p.axis} must leave the batch axis alone")
        k, out = math.prod(bottom[axis:]), int(p.num_output)
        params = [Param((k, out) if p.transpose else (out, k), "weight")]
        if p.bias_term:
            params.append(Param((out,), "bias"))
        return Shapes([bottom[:axis] + (out,)], params)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from .reshaping import in_caffe_order, in_parity_order

        p = self.param(layer)
        (x,) = bottoms
        axis = p.axis + x.rank if p.axis < 0 else p.axis
        top = self.shapes(layer, [x.caffe_shape]).tops[0]
        dense = keras.layers.Dense(int(p.num_output), use_bias=bool(p.bias_term), name=ctx.name(layer))
        if axis == 1:  # the common case: flatten channels-last and reorder the kernel rows instead
            tensor = keras.layers.Flatten(name=ctx.name(layer, "flatten"))(x.tensor) if x.rank > 2 else x.tensor
            return [call_with_weights(dense, tensor, [dense_kernel(blobs[0], p.transpose, x.caffe_shape)] + blobs[1:])]
        # axis > 1: leading axes stay; flatten the rest in Caffe's order, then Dense on the last axis
        flat = keras.layers.Reshape(x.caffe_shape[1:axis] + (math.prod(x.caffe_shape[axis:]),),
                                    name=ctx.name(layer, "flatten"))(in_caffe_order(layer, x.tensor, x.rank, ctx))
        y = call_with_weights(dense, flat, [dense_kernel(blobs[0], p.transpose, ())] + blobs[1:])
        return [in_parity_order(layer, y, len(top), ctx)]
