"""Sizes known before anything is built: every layer's shapes from the converters' pure-Python `shapes()`,
so a net whose activations (or a shape-only conversion's zero weights) no machine would hold is refused by
its Input before Keras builds a layer (symbolic tensors cost nothing; the capture run would)."""
from __future__ import annotations

import math
from typing import Iterator

from ..caffe.graph import Layer, Net
from ..errors import ParityError
from .context import ACTIVATION_LIMIT, GIB
from .handler import checked_shapes
from .registry import shapes_for


def pure_shapes(net: Net) -> Iterator[tuple[Layer, object]]:
    """(layer, its Shapes) for every layer the registered converters size in pure Python, in order.

    A layer without such shapes, or whose shapes fail in any way, is left out with whatever reads its
    tops: this is an estimate ahead of the conversion, which reports such a layer properly, in order."""
    known: dict[str, tuple[int, ...]] = {}
    for layer in net.layers:
        handler = shapes_for(layer.type)
        if handler is None or any(b not in known for b in layer.bottoms):
            continue
        try:
            shapes = checked_shapes(handler, layer, [known[b] for b in layer.bottoms])
        except Exception:  # the conversion raises it again, after its parameter checks
            continue
        known.update((top, tuple(int(d) for d in shape)) for top, shape in zip(layer.tops, shapes.tops))
        yield layer, shapes


def check_activations(net: Net, limit: int = ACTIVATION_LIMIT) -> None:
    """Refuse, naming the Input layer and its shape, a net whose float32 tops sum past `limit`."""
    total, inputs = 0, []
    for layer, shapes in pure_shapes(net):
        total += sum(math.prod(shape) for shape in shapes.tops) * 4
        if layer.type == "Input":
            inputs += [(math.prod(shape), layer, tuple(shape)) for shape in shapes.tops]
        if total > limit:
            raise _too_large(net, inputs, total, limit)


def zero_weights_bytes(net: Net) -> int:
    """The float32 bytes of the learned blobs a shape-only conversion of `net` makes (those it can size)."""
    return sum(math.prod(param.shape) for _, shapes in pure_shapes(net) for param in shapes.params) * 4


def _too_large(net: Net, inputs: list, total: int, limit: int) -> ParityError:
    """The error for check_activations, at the largest Input's prototxt line."""
    message = (f"makes activations of {total / GIB:.1f} GiB or more (float32), past parity's limit of "
               f"{limit // GIB} GiB for one forward pass")
    if not inputs:
        return ParityError(f"the net {message}", net.path)
    _, layer, shape = max(inputs, key=lambda item: item[0])
    return net.error(layer.name, f"input shape {shape} {message}: give the Input a smaller shape")
