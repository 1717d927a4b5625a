"""InnerProduct -> Dense, with the weight rows reordered when the bottom is spatial.

Caffe flattens a (C, H, W) bottom in C,H,W order; parity's channels-last tensor flattens in H,W,C
order. Feeding Caffe's weight matrix unchanged silently scrambles fc6 of every VGG (MMdnn#250), so
the rows are permuted here: W[o, c, h, w] -> kernel[(h, w, c), o].
"""
from __future__ import annotations

import keras
import numpy as np

from .context import Blob
from .registry import register

SUPPORTED = {"num_output", "bias_term", "weight_filler", "bias_filler", "axis", "transpose"}


def dense_kernel(weight: np.ndarray, transpose: bool, bottom_shape: tuple[int, ...]) -> np.ndarray:
    """Caffe InnerProduct weight -> Keras Dense kernel (K, O) for a bottom of `bottom_shape` (Caffe layout)."""
    kernel = weight if transpose else weight.T  # (K, O)
    if len(bottom_shape) == 4:
        _, c, h, w = bottom_shape
        kernel = kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return np.ascontiguousarray(kernel)


@register("InnerProduct")
def convert_inner_product(layer, bottoms, ctx):
    param = ctx.params(layer, "inner_product_param", SUPPORTED)
    (x,) = bottoms
    axis = param.axis + x.rank if param.axis < 0 else param.axis
    if axis != 1:
        raise ctx.unsupported(layer, "inner_product_param.axis", f"axis {param.axis}")
    if x.rank not in (2, 4):
        raise ctx.unsupported(layer, "bottom rank", f"{x.rank}-D bottom")
    n, k = x.caffe_shape[0], int(np.prod(x.caffe_shape[1:]))
    out = int(param.num_output)
    weight_shape = (k, out) if param.transpose else (out, k)
    blobs = ctx.blobs(layer, [weight_shape] + ([(out,)] if param.bias_term else []))
    tensor = x.tensor
    if x.rank == 4:
        tensor = keras.layers.Flatten(name=ctx.name(layer, "flatten"))(tensor)
    dense = keras.layers.Dense(out, use_bias=bool(param.bias_term), name=ctx.name(layer))
    y = dense(tensor)
    dense.set_weights([dense_kernel(blobs[0], param.transpose, x.caffe_shape)] + blobs[1:])
    return [Blob(y, (n, out))]
