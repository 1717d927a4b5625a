"""Layers defined by Caffe's memory order: Flatten, Reshape, Permute, and the blob splitters Slice,
Split, Crop, Silence.

Flatten, Reshape and Permute act on Caffe's C,H,W order, so a 4-D blob is moved to NCHW first, the
operation is done there as Caffe does it, and a 4-D result is moved back to channels-last (applying
them to H,W,C data is the converter bug pitfalls.md lists). Slice and Crop only pick ranges, so they
map their axes instead. The batch axis must stay where it is: Keras keeps it.
"""
from __future__ import annotations

import math

from .context import keras_axis
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register


def canonical(axis: int, rank: int, what: str) -> int:
    index = axis + rank if axis < 0 else axis
    if not 0 <= index < rank:
        raise LayerError(f"{what} {axis} out of range for a {rank}-D blob")
    return index


def in_caffe_order(layer, tensor, rank: int, ctx, suffix: str = "nchw"):
    """A channels-last 4-D tensor as NCHW (other ranks are already in Caffe's order)."""
    import keras

    return keras.layers.Permute((3, 1, 2), name=ctx.name(layer, suffix))(tensor) if rank == 4 else tensor


def in_parity_order(layer, tensor, rank: int, ctx, suffix: str = "nhwc"):
    import keras

    return keras.layers.Permute((2, 3, 1), name=ctx.name(layer, suffix))(tensor) if rank == 4 else tensor


class ReorderingHandler(LayerHandler):
    """Computes in Caffe's order: NCHW in, the Keras layer from `keras_layer`, back to parity's order."""

    def keras_layer(self, layer, bottom, top, ctx):
        raise NotImplementedError

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms)
        top = self.top_shape(layer, bottom)
        if top[0] != bottom[0]:
            raise LayerError(f"changing the batch axis ({bottom[0]} -> {top[0]}) is not supported")
        return Shapes([top])

    def build(self, layer, bottoms, blobs, ctx):
        (x,) = bottoms
        top = self.shapes(layer, [x.caffe_shape]).tops[0]
        y = self.keras_layer(layer, x.caffe_shape, top, ctx)(in_caffe_order(layer, x.tensor, x.rank, ctx))
        return [in_parity_order(layer, y, len(top), ctx)]


@register("Flatten")
class FlattenHandler(ReorderingHandler):
    param_field = "flatten_param"
    supported = frozenset({"axis", "end_axis"})

    def top_shape(self, layer, bottom):
        p = self.param(layer)
        start, end = canonical(p.axis, len(bottom), "axis"), canonical(p.end_axis, len(bottom), "end_axis")
        if end < start:
            raise LayerError(f"end_axis {p.end_axis} comes before axis {p.axis}")
        return bottom[:start] + (math.prod(bottom[start:end + 1]),) + bottom[end + 1:]

    def keras_layer(self, layer, bottom, top, ctx):
        import keras

        return keras.layers.Reshape(top[1:], name=ctx.name(layer))


@register("Reshape")
class ReshapeHandler(FlattenHandler):
    """dims: 0 copies the bottom's dimension at that place, -1 is inferred (reshape_layer.cpp)."""

    param_field = "reshape_param"
    supported = frozenset({"shape", "axis", "num_axes"})

    def top_shape(self, layer, bottom):
        p = self.param(layer)
        start = p.axis if p.axis >= 0 else len(bottom) + p.axis + 1
        end = len(bottom) if p.num_axes == -1 else start + p.num_axes
        if not 0 <= start <= end <= len(bottom):
            raise LayerError(f"reshape_param axis {p.axis}, num_axes {p.num_axes} do not fit a {len(bottom)}-D blob")
        dims = [bottom[start + i] if d == 0 else int(d) for i, d in enumerate(p.shape.dim)]
        if dims.count(-1) > 1:
            raise LayerError("at most one -1 in reshape_param.shape")
        known = math.prod(bottom[:start]) * math.prod(bottom[end:]) * math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if known == 0 or math.prod(bottom) % known:
                raise LayerError(f"cannot infer -1 reshaping {bottom}")
            dims[dims.index(-1)] = math.prod(bottom) // known
        top = bottom[:start] + tuple(dims) + bottom[end:]
        if math.prod(top) != math.prod(bottom):
            raise LayerError(f"reshape of {bottom} to {top} changes the element count")
        return top


@register("Permute")
class PermuteHandler(ReorderingHandler):
    """SSD's Permute: `order` lists Caffe axes; the ones left out follow in their order."""

    param_field = "permute_param"
    supported = frozenset({"order"})

    def order(self, layer, rank: int) -> list[int]:
        order = [int(o) for o in self.param(layer).order]
        if len(set(order)) != len(order) or any(o >= rank for o in order):
            raise LayerError(f"permute_param.order {order} is not a permutation of {rank} axes")
        return order + [a for a in range(rank) if a not in order]

    def top_shape(self, layer, bottom):
        order = self.order(layer, len(bottom))
        if order[0] != 0:
            raise LayerError("moving the batch axis is not supported")
        return tuple(bottom[a] for a in order)

    def keras_layer(self, layer, bottom, top, ctx):
        import keras

        return keras.layers.Permute(tuple(self.order(layer, len(bottom))[1:]), name=ctx.name(layer))


@register("Slice")
class SliceHandler(LayerHandler):
    param_field = "slice_param"
    supported = frozenset({"axis", "slice_point", "slice_dim"})

    def cut(self, layer, bottom) -> tuple[int, list[int]]:
        p = self.param(layer)
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise LayerError("give either slice_param.axis or the legacy slice_dim, not both")
        axis = canonical(p.slice_dim if p.HasField("slice_dim") else p.axis, len(bottom), "axis")
        size, count = bottom[axis], len(layer.tops)
        points = [int(q) for q in p.slice_point]
        if not points:
            if size % count:
                raise LayerError(f"cannot split {size} evenly into {count} tops")
            points = [size // count * i for i in range(1, count)]
        if len(points) != count - 1 or points != sorted(set(points)) or not 0 < points[0] or points[-1] >= size:
            raise LayerError(f"slice points {points} do not cut {size} into {count} parts")
        return axis, points

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms)
        axis, points = self.cut(layer, bottom)
        if axis == 0:
            raise LayerError("slicing the batch axis is not supported")
        bounds = [0] + points + [bottom[axis]]
        return Shapes([bottom[:axis] + (b - a,) + bottom[axis + 1:] for a, b in zip(bounds, bounds[1:])])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeSlice

        (x,) = bottoms
        axis, points = self.cut(layer, x.caffe_shape)
        return list(CaffeSlice(keras_axis(axis, x.rank), points, name=ctx.name(layer))(x.tensor))


@register("Split")
class SplitHandler(LayerHandler):
    """Every top is the bottom (Caffe copies it): the same Keras tensor serves them all."""

    def shapes(self, layer, bottoms):
        return Shapes([one_bottom(bottoms)] * len(layer.tops))

    def build(self, layer, bottoms, blobs, ctx):
        return [bottoms[0].tensor] * len(layer.tops)


@register("Silence")
class SilenceHandler(LayerHandler):
    """Consumes its bottoms, produces nothing."""

    def shapes(self, layer, bottoms):
        return Shapes([])

    def build(self, layer, bottoms, blobs, ctx):
        return []


@register("Crop")
class CropHandler(LayerHandler):
    """bottom[0] cropped to bottom[1]'s size on every axis from `axis` on, starting at `offset`
    (one value for all those axes, or one each; FCN-8s uses 19, 9 and 31)."""

    param_field = "crop_param"
    supported = frozenset({"axis", "offset"})

    def window(self, layer, bottoms) -> tuple[list[int], tuple[int, ...]]:
        if len(bottoms) != 2:
            raise LayerError(f"expects two bottoms (the blob and the reference), got {len(bottoms)}")
        x, ref = tuple(bottoms[0]), tuple(bottoms[1])
        if len(x) != len(ref):
            raise LayerError(f"bottoms {x} and {ref} differ in rank")
        p = self.param(layer)
        start = canonical(p.axis, len(x), "axis")
        offsets = [int(o) for o in p.offset]
        if len(offsets) not in (0, 1, len(x) - start):
            raise LayerError(f"{len(offsets)} offsets for {len(x) - start} cropped axes")
        begin, top = [], []
        for i, (size, want) in enumerate(zip(x, ref)):
            off = 0 if i < start or not offsets else offsets[0 if len(offsets) == 1 else i - start]
            keep = size if i < start else want
            if off + keep > size:
                raise LayerError(f"crop of axis {i} (size {size}) to {keep} at offset {off} is out of bounds")
            begin.append(off)
            top.append(keep)
        return begin, tuple(top)

    def shapes(self, layer, bottoms):
        begin, top = self.window(layer, bottoms)
        if begin[0] or top[0] != bottoms[0][0]:
            raise LayerError("cropping the batch axis is not supported")
        return Shapes([top])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeCrop

        begin, top = self.window(layer, [b.caffe_shape for b in bottoms])
        order = (0, 2, 3, 1) if len(top) == 4 else tuple(range(len(top)))
        crop = CaffeCrop([begin[a] for a in order[1:]], [top[a] for a in order[1:]], name=ctx.name(layer))
        return [crop(bottoms[0].tensor)]


@register("Tile")
class TileHandler(LayerHandler):
    param_field = "tile_param"
    supported = frozenset({"axis", "tiles"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        axis = canonical(p.axis, len(bottom), "axis")
        if p.tiles < 1:
            raise LayerError(f"tile_param.tiles must be positive, got {p.tiles}")
        if axis == 0:
            raise LayerError("tiling the batch axis is not supported")
        return Shapes([bottom[:axis] + (bottom[axis] * p.tiles,) + bottom[axis + 1:]])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeTile

        p, x = self.param(layer), bottoms[0]
        axis = keras_axis(canonical(p.axis, x.rank, "axis"), x.rank)
        return [CaffeTile(axis, p.tiles, name=ctx.name(layer))(x.tensor)]


@register("Unsqueeze")
class UnsqueezeHandler(ReorderingHandler):
    """The fork's Unsqueeze (unsqueeze.cpp): a 1 inserted before axis `dim` (required; negative counts
    from the end, -1 appending one), the data copied unchanged in Caffe's order. Done as a reshape in
    Caffe's order, so a 4-D result (from a 3-D bottom) is moved to channels-last like any other."""

    param_field = "unsqueeze_param"
    supported = frozenset({"dim"})

    def top_shape(self, layer, bottom):
        p = self.param(layer)
        if not p.HasField("dim"):
            raise LayerError("unsqueeze_param.dim is required")
        rank = len(bottom)
        index = p.dim + rank + 1 if p.dim < 0 else p.dim
        if not 0 <= index <= rank:
            raise LayerError(f"unsqueeze_param.dim {p.dim} out of range for a {rank}-D blob")
        if index == 0:
            raise LayerError("unsqueeze_param.dim 0 puts the new axis before the batch axis: not supported")
        return bottom[:index] + (1,) + bottom[index:]

    def keras_layer(self, layer, bottom, top, ctx):
        import keras

        return keras.layers.Reshape(top[1:], name=ctx.name(layer))
