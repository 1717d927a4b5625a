"""What every layer converter shares: blobs as Keras tensors, weights, Keras names, strict params."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..caffe.graph import Layer, Net
from ..caffe.reading.caffemodel import CaffeWeights
from ..data.layout import keras_shape  # noqa: F401  (re-exported for converters)
from ..errors import ParityError

# Caffe axis -> channels-last axis for 4-D blobs (N, C, H, W) held as (N, H, W, C).
NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}

GIB = 1 << 30
# What one forward pass may hold: every top of the net in float32, summed. The check keeps every
# compared output and runs a float64 twin besides; the zoo's largest (dilation8) is far below this.
ACTIVATION_LIMIT = 8 * GIB
# Zero weights a shape-only conversion (the shape-conflict diagnosis) may allocate; real zoo nets need
# at most a few hundred MB, and a huge Input must not turn a one-line error into a 46 GiB allocation.
ZERO_WEIGHTS_LIMIT = 2 * GIB


@dataclass
class Blob:
    """A Caffe blob during conversion: its Keras tensor and its shape in Caffe's own layout."""

    tensor: object
    caffe_shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.caffe_shape)


def keras_axis(caffe_axis: int, rank: int) -> int:
    """Where Caffe's `caffe_axis` of a rank-`rank` blob lives in parity's Keras layout."""
    axis = caffe_axis + rank if caffe_axis < 0 else caffe_axis
    if not 0 <= axis < rank:
        raise ValueError(f"axis {caffe_axis} out of range for a {rank}-D blob")
    return NCHW_TO_NHWC_AXIS[axis] if rank == 4 else axis


def keras_name_for(caffe_name: str) -> str:
    """Keras forbids '/' in layer names (Caffe's GoogLeNet is full of them); other names stay as they are."""
    return re.sub(r"[/\s]", "_", caffe_name)


@dataclass
class Context:
    net: Net
    weights: CaffeWeights | None
    keras_names: dict[str, str] = field(default_factory=dict)
    input_tensors: list = field(default_factory=list)  # the Keras Inputs made so far, in the net's order
    _used_names: set[str] = field(default_factory=set)
    _zero_bytes: int = 0  # zero weights handed out so far (shape-only conversion)

    # -- naming ---------------------------------------------------------------------------
    def name(self, layer: Layer, suffix: str = "") -> str:
        """A unique Keras layer name for `layer` (plus `.suffix` for helper layers such as padding)."""
        base = keras_name_for(layer.name)
        wanted = f"{base}.{suffix}" if suffix else base
        candidate, n = wanted, 1
        while candidate in self._used_names:
            n += 1
            candidate = f"{wanted}_{n}"
        self._used_names.add(candidate)
        if not suffix:
            self.keras_names[layer.name] = candidate
        return candidate

    def anchor(self, layer: Layer):
        """A Keras tensor for a layer without bottoms (Parameter) to hang from: Keras builds a functional
        graph only from tensors that lead back to the model's inputs, so such a layer takes the net's
        first Input as its (unread) input."""
        if not self.input_tensors:
            raise self.error(layer, f"a {layer.type} layer needs an Input layer before it in the net")
        return self.input_tensors[0]

    # -- parameters -----------------------------------------------------------------------
    def params(self, layer: Layer, field_name: str, supported: Iterable[str]):
        """The layer's `field_name` message; any explicitly set field outside `supported` is an error."""
        message = getattr(layer.param, field_name)
        allowed = set(supported)
        for fd, _ in message.ListFields():
            if fd.name not in allowed:
                raise self.unsupported(layer, f"{field_name}.{fd.name}")
        return message

    def unsupported(self, layer: Layer, what: str, why: str = "") -> ParityError:
        detail = f" ({why})" if why else ""
        return self.net.error(layer.name, f"{layer.type} parameter {what} is not supported{detail}")

    def error(self, layer: Layer, message: str) -> ParityError:
        return self.net.error(layer.name, message)

    # -- weights --------------------------------------------------------------------------
    def blobs(self, layer: Layer, expected: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """The layer's learned blobs, checked against the shapes the prototxt implies.

        Without weights (shape-only conversion, used to diagnose shape conflicts) they are zeros, up to
        ZERO_WEIGHTS_LIMIT in all. With a caffemodel, the file is checked unchanged first: its arrays
        are views of a memory map, and reading a page a truncation took away is a SIGBUS.
        """
        if self.weights is None:
            return self._zeros(layer, expected)
        check_unchanged = getattr(self.weights, "check_unchanged", None)
        if check_unchanged is not None:
            check_unchanged()
        where = self.weights.path
        found = self.weights.get(layer.name)
        if not found:
            raise ParityError(f"no weights for layer {layer.name!r} ({layer.type}); "
                              f"it needs {len(expected)} blob(s)", where)
        if len(found) != len(expected):
            raise ParityError(f"layer {layer.name!r} has {len(found)} weight blobs, the prototxt implies "
                              f"{len(expected)}", where)
        out = []
        for i, (array, shape) in enumerate(zip(found, expected)):
            if _strip_ones(array.shape) != _strip_ones(shape):
                raise ParityError(f"layer {layer.name!r} weight blob {i} has shape {tuple(array.shape)}, "
                                  f"the prototxt implies {tuple(shape)}", where)
            out.append(array.reshape(shape))
        return out

    def _zeros(self, layer: Layer, expected: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        """Zero blobs for a shape-only conversion, refused past ZERO_WEIGHTS_LIMIT before allocating."""
        self._zero_bytes += sum(math.prod(int(d) for d in shape) for shape in expected) * 4
        if self._zero_bytes > ZERO_WEIGHTS_LIMIT:
            raise self.error(layer, f"a shape-only conversion would allocate {self._zero_bytes / GIB:.1f} GiB of "
                                    f"zero weights by this layer, more than {ZERO_WEIGHTS_LIMIT // GIB} GiB")
        return [np.zeros(shape, np.float32) for shape in expected]


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    """Legacy blobs are padded to 4-D with leading 1s ((1, 1, O, K) for an InnerProduct weight)."""
    s = tuple(int(d) for d in shape)
    while len(s) > 1 and s[0] == 1:
        s = s[1:]
    return s


def located(ctx: "Context", layer: Layer, fn, *args):
    """Call a `shapes` helper; its ValueError becomes a ParityError at the layer's prototxt line."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise ctx.error(layer, str(exc)) from None
