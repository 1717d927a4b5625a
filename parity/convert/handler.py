"""The shape of a converter: what a Caffe layer type accepts, what shapes it makes, what Keras builds.

A LayerHandler splits a Caffe layer type into three parts:
- `supported`: the fields of its `*_param` message it honours (anything else set is an error);
- `shapes()`: pure Python, Caffe's layout. Top shapes and learned blobs (with their roles) from the
  bottom shapes. Weight recipes use it inside the pycaffe environment, where there is no Keras;
- `build()`: the Keras layers, given bottoms as Keras tensors and the blobs already checked.
The base class does the checking once, so a handler states only what is particular to its layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .context import Blob, Context, located

Shape = tuple[int, ...]


class LayerError(ValueError):
    """A layer the handler cannot convert as written; shown with the layer's prototxt line."""


@dataclass(frozen=True)
class Param:
    """One learned blob: its Caffe shape and role (weight, bias, mean, variance, scale_factor, ...)."""

    shape: Shape
    role: str


@dataclass(frozen=True)
class Shapes:
    tops: list[Shape]
    params: list[Param] = field(default_factory=list)


class LayerHandler:
    param_field: str | None = None  # e.g. "convolution_param"
    supported: frozenset[str] = frozenset()

    def shapes(self, layer, bottoms: Sequence[Shape]) -> Shapes:
        raise NotImplementedError

    def build(self, layer, bottoms: list[Blob], blobs: list[np.ndarray], ctx: Context) -> list:
        raise NotImplementedError

    def param(self, layer):
        return getattr(layer.param, self.param_field)

    def __call__(self, layer, bottoms: list[Blob], ctx: Context) -> list[Blob]:
        if self.param_field:
            ctx.params(layer, self.param_field, self.supported)
        shapes = located(ctx, layer, checked_shapes, self, layer, [b.caffe_shape for b in bottoms])
        blobs = ctx.blobs(layer, [p.shape for p in shapes.params]) if shapes.params else []
        try:
            tensors = self.build(layer, bottoms, blobs, ctx)
        except LayerError as exc:  # ours: a located error; Keras' own ValueErrors mean a divergence
            raise ctx.error(layer, str(exc)) from None
        return [Blob(t, s) for t, s in zip(tensors, shapes.tops)]


def checked_shapes(handler, layer, bottoms: Sequence[Shape]) -> "Shapes":
    """`handler.shapes`, with a top for every top the layer declares (converters and weight recipes
    alike: a declared top that the converter does not make is refused here)."""
    shapes = handler.shapes(layer, bottoms)
    if len(shapes.tops) != len(layer.tops):
        raise LayerError(f"has {len(layer.tops)} tops, but parity's {layer.type} converter makes "
                         f"{len(shapes.tops)}: the extra tops are not supported")
    return shapes


def one_bottom(bottoms: Sequence[Shape], rank: int | None = None) -> Shape:
    """The single bottom shape a layer takes, optionally of a given rank."""
    if len(bottoms) != 1:
        raise LayerError(f"expects one bottom, got {len(bottoms)}")
    if rank is not None and len(bottoms[0]) != rank:
        raise LayerError(f"expects a {rank}-D bottom, got shape {tuple(bottoms[0])}")
    return tuple(bottoms[0])
