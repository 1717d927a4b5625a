"""InnerProduct -> Dense, with the weight rows reordered when the bottom is spatial.

Caffe flattens a (C, H, W) bottom in C,H,W order; parity's channels-last tensor flattens in H,W,C
order. Feeding Caffe's weight matrix unchanged silently scrambles fc6 of every VGG (MMdnn#250), so
the rows are permuted here: W[o, c, h, w] -> kernel[(h, w, c), o].
"""
from __future__ import annotations

import math

import numpy as np

from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .registry import register


def dense_kernel(weight: np.ndarray, transpose: bool, bottom_shape: tuple[int, ...]) -> np.ndarray:
    """Caffe InnerProduct weight -> Keras Dense kernel (K, O) for a bottom of `bottom_shape` (Caffe layout)."""
    kernel = weight if transpose else weight.T  # (K, O)
    if len(bottom_shape) == 4:
        _, c, h, w = bottom_shape
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return np.ascontiguousarray(kernel)


@register("InnerProduct")
class InnerProductHandler(LayerHandler):
    param_field = "inner_product_param"
    supported = frozenset({"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        axis = p.axis + len(bottom) if p.axis < 0 else p.axis
        if axis != 1:
            raise LayerError(f"inner_product_param.axis {p.axis} is not supported yet")
        if len(bottom) not in (2, 4):
            raise LayerError(f"a {len(bottom)}-D bottom is not supported yet")
        k, out = math.prod(bottom[1:]), int(p.num_output)
        params = [Param((k, out) if p.transpose else (out, k), "weight")]
        if p.bias_term:
            params.append(Param((out,), "bias"))
        return Shapes([(bottom[0], out)], params)

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        p = self.param(layer)
        (x,) = bottoms
        tensor = x.tensor
        if x.rank == 4:
            tensor = keras.layers.Flatten(name=ctx.name(layer, "flatten"))(tensor)
        dense = keras.layers.Dense(int(p.num_output), use_bias=bool(p.bias_term), name=ctx.name(layer))
        y = dense(tensor)
        dense.set_weights([dense_kernel(blobs[0], p.transpose, x.caffe_shape)] + blobs[1:])
        return [y]
