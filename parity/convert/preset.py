"""Create a Keras layer's variables already holding Caffe's weights.

Why not `layer(x)` then `layer.set_weights(w)`: Keras fills every new variable from its initializer
first, so the usual route draws one random number per weight and throws it away. For VGG-19 that
is 143 M draws, more than half of a whole check. Here the arrays are handed to the variables as
they are made; the layer's own initializers (and so its get_config and saved file) stay untouched.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.layout import ALIGNMENT, Owned, copy_blocked


class _Given:
    """An initializer that returns one fixed array, refusing a shape it was not made for."""

    def __init__(self, layer_name: str, index: int, value: np.ndarray):
        self.layer_name, self.index, self.value = layer_name, index, value

    def __call__(self, shape, dtype=None):
        if tuple(shape) != tuple(self.value.shape):
            raise ValueError(f"layer {self.layer_name!r} weight {self.index} has shape {tuple(shape)}, "
                             f"the Caffe weight given for it is {tuple(self.value.shape)}")
        return handed_over(self.value, dtype or self.value.dtype)


def handed_over(value: np.ndarray, dtype) -> object:
    """`value` as a TensorFlow tensor in a buffer of its own, copied once at most.

    Why: TensorFlow copies every NumPy array it is given, then copies it again into its own buffer;
    through DLPack a tensor takes a buffer over instead (0.25 s less per 400 MB of weights). Only an
    aligned array parity allocated for this (layout.Owned, e.g. a transposed weight matrix) is taken
    over as it is; anything else (a view into the caffemodel's read-only map) is copied first.
    """
    import tensorflow as tf

    array = value.astype(dtype, copy=False)
    if not (isinstance(array, Owned) and array.ctypes.data % ALIGNMENT == 0 and array.flags.c_contiguous):
        array = copy_blocked(array)
    try:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    except Exception:  # noqa: BLE001  (a dtype or buffer DLPack refuses: Keras copies the array itself)
        return np.asarray(array)


def call_with_weights(layer, inputs, weights: Sequence[np.ndarray]):
    """`layer(inputs)`, its variables created holding `weights` (in `layer.weights` order).

    The layer must be unbuilt, and must create exactly as many variables as there are arrays: a
    variable left to its initializer would be a silent random weight, so that is a ValueError.
    """
    pending = [_Given(layer.name, i, np.asanyarray(w)) for i, w in enumerate(weights)]  # keeps layout.Owned
    create = layer.add_weight
    made = []

    def add_weight(*args, **kwargs):
        if pending:
            if len(args) > 1:  # add_weight(shape, initializer, ...)
                args = (args[0], pending.pop(0), *args[2:])
            else:
                kwargs["initializer"] = pending.pop(0)
        variable = create(*args, **kwargs)
        made.append(variable)
        return variable

    if layer.built:
        raise ValueError(f"layer {layer.name!r} is already built; its weights can no longer be given at creation")
    layer.__dict__["add_weight"] = add_weight  # an instance attribute, bypassing Keras' attribute tracking
    try:
        outputs = layer(inputs)
    finally:
        del layer.__dict__["add_weight"]
    if pending or len(made) != len(weights):
        raise ValueError(f"layer {layer.name!r} made {len(made)} variable(s) for {len(weights)} Caffe weight(s)")
    return outputs
