"""The fork's (brocolli-caffe's) spatial layers: Upsample, Resize, BilinearInterpolate, PixelShuffle, Pad.

Each follows its Forward_cpu, not its name; the facts that matter:
- Upsample (upsample_layer.cpp) is nearest-neighbour by an integer `scale` (output index / scale),
  on H and W (`dims_num: 4`) or on the last axis of a 3-D blob (`dims_num: 3`);
- Resize (resize_layer.cpp, util_img.cpp) is bilinear to a fixed `height` x `width` (or `int(scale *
  size)` with `is_pyramid_test`), sampling at i * src/dst and leaving out a neighbour past the edge;
- BilinearInterpolate has half-pixel centres by default and `align_corners: true` by default, sizes
  from `dst_h`/`dst_w` or `int(size * scale_factor)`, never both;
- PixelShuffle moves channel p * r^2 + i * r + j to (p, row * r + i, col * r + j) (PyTorch's order;
  TensorFlow's depth_to_space takes the channel blocks the other way round);
- Pad pads H and W by (pad_u, pad_d, pad_l, pad_r) with a constant, the edge (REPLICATE) or a mirror
  that does not repeat the edge (REFLECT); all four negative crop.
Where Caffe's C++ would read or write outside a blob, or leave a size unset, parity refuses.
"""
from __future__ import annotations

import numpy as np

from ..caffe.schema import caffe_pb2
from .handler import LayerError, LayerHandler, Shapes, one_bottom
from .registry import register

PAD_MODES = {caffe_pb2.PadParameter.CONSTANT: "constant", caffe_pb2.PadParameter.REPLICATE: "replicate",
             caffe_pb2.PadParameter.REFLECT: "reflect"}


def scaled(size: int, factor: float) -> int:
    """Caffe's int(size * factor) with a float factor: the product is rounded to float32 first."""
    return int(np.float32(size) * np.float32(factor))


def positive_size(top: tuple[int, ...]) -> tuple[int, ...]:
    if min(top) < 1:
        raise LayerError(f"makes an empty top {top}")
    return top


@register("Upsample")
class UpsampleHandler(LayerHandler):
    param_field = "upsample_param"
    supported = frozenset({"scale", "dims_num"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        if p.dims_num not in (3, 4):
            raise LayerError(f"upsample_param.dims_num {p.dims_num}: Caffe supports 3 and 4 only")
        if len(bottom) != p.dims_num:
            raise LayerError(f"dims_num {p.dims_num} needs a {p.dims_num}-D bottom, got shape {bottom}")
        if p.scale < 1:
            raise LayerError(f"upsample_param.scale {p.scale} must be at least 1")
        scaled_axes = 2 if p.dims_num == 4 else 1
        return Shapes([bottom[:-scaled_axes] + tuple(d * p.scale for d in bottom[-scaled_axes:])])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        s, x = self.param(layer).scale, bottoms[0]
        if x.rank == 4:
            return [keras.layers.UpSampling2D((s, s), interpolation="nearest", name=ctx.name(layer))(x.tensor)]
        # a 3-D blob stays in Caffe's (N, C, W) order: repeat its last axis as UpSampling1D's steps
        steps = keras.layers.Permute((2, 1), name=ctx.name(layer, "steps"))(x.tensor)
        steps = keras.layers.UpSampling1D(s, name=ctx.name(layer, "repeat"))(steps)
        return [keras.layers.Permute((2, 1), name=ctx.name(layer))(steps)]


class BilinearHandler(LayerHandler):
    """A 4-D bottom resized to the size `out_size` gives, by CaffeResize2D in mode `mode`."""

    mode = "resize"

    def out_size(self, layer, bottom) -> tuple[int, int]:
        raise NotImplementedError

    def shapes(self, layer, bottoms):
        bottom = one_bottom(bottoms, rank=4)
        return Shapes([positive_size(bottom[:2] + self.out_size(layer, bottom))])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeResize2D

        size = self.out_size(layer, bottoms[0].caffe_shape)
        return [CaffeResize2D(size, self.mode_of(layer), name=ctx.name(layer))(bottoms[0].tensor)]

    def mode_of(self, layer) -> str:
        return self.mode


@register("Resize")
class ResizeHandler(BilinearHandler):
    param_field = "resize_param"
    supported = frozenset({"height", "width", "is_pyramid_test", "out_height_scale", "out_width_scale"})

    def out_size(self, layer, bottom):
        p = self.param(layer)
        if p.is_pyramid_test:  # Caffe reads the scales only then, and the sizes only otherwise
            if not (p.HasField("out_height_scale") and p.HasField("out_width_scale")):
                raise LayerError("resize_param.is_pyramid_test needs out_height_scale and out_width_scale")
            return scaled(bottom[2], p.out_height_scale), scaled(bottom[3], p.out_width_scale)
        if not (p.HasField("height") and p.HasField("width")):
            raise LayerError("resize_param.height and width are required (or is_pyramid_test with scales)")
        return int(p.height), int(p.width)


@register("BilinearInterpolate")
class BilinearInterpolateHandler(BilinearHandler):
    param_field = "bilinear_interpolate_param"
    supported = frozenset({"dst_h", "dst_w", "scale_factor", "align_corners"})

    def out_size(self, layer, bottom):
        p = self.param(layer)
        by_size = p.HasField("dst_h") or p.HasField("dst_w")
        if by_size == p.HasField("scale_factor"):
            raise LayerError("give bilinear_interpolate_param dst_h/dst_w or scale_factor, exactly one of the two: "
                             "otherwise Caffe leaves the output size unset")
        if by_size:
            size = (p.dst_h if p.HasField("dst_h") else bottom[2], p.dst_w if p.HasField("dst_w") else bottom[3])
        else:
            size = (scaled(bottom[2], p.scale_factor), scaled(bottom[3], p.scale_factor))
        if min(bottom[2:]) < 2:
            raise LayerError(f"needs H and W of 2 or more, got {bottom[2:]}: Caffe's second tap would read "
                             "past the map")
        if p.align_corners and min(size) == 1:
            raise LayerError(f"align_corners with an output size of 1 ({size}) divides by zero in Caffe "
                             "(NaN positions)")
        return size

    def mode_of(self, layer) -> str:
        return "align_corners" if self.param(layer).align_corners else "half_pixel"


@register("PixelShuffle")
class PixelShuffleHandler(LayerHandler):
    """Caffe checks only that C is a multiple of r; the top has C // r^2 channels, and channels past
    (C // r^2) * r^2 are never read (dropped here as well)."""

    param_field = "pixelshuffle_param"
    supported = frozenset({"upscale_factor"})

    def shapes(self, layer, bottoms):
        r = self.param(layer).upscale_factor
        n, c, h, w = one_bottom(bottoms, rank=4)
        if r < 1 or c % r:
            raise LayerError(f"pixelshuffle_param.upscale_factor {r} must be positive and divide the {c} channels")
        return Shapes([positive_size((n, c // (r * r), h * r, w * r))])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from ..keras_layers import CaffeCrop

        r, x = self.param(layer).upscale_factor, bottoms[0]
        _, c, h, w = x.caffe_shape
        out = c // (r * r)
        tensor = x.tensor
        if out * r * r != c:
            tensor = CaffeCrop((0, 0, 0), (h, w, out * r * r), name=ctx.name(layer, "used"))(tensor)
        tensor = keras.layers.Reshape((h, w, out, r, r), name=ctx.name(layer, "split"))(tensor)
        tensor = keras.layers.Permute((1, 4, 2, 5, 3), name=ctx.name(layer, "interleave"))(tensor)  # (h, i, w, j, p)
        return [keras.layers.Reshape((h * r, w * r, out), name=ctx.name(layer))(tensor)]


@register("Pad")
class PadHandler(LayerHandler):
    param_field = "pad_param"
    supported = frozenset({"pad_type", "pad_u", "pad_d", "pad_l", "pad_r", "pad_value"})

    def amounts(self, layer) -> tuple[int, int, int, int]:
        p = self.param(layer)
        return p.pad_u, p.pad_d, p.pad_l, p.pad_r

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        n, c, h, w = one_bottom(bottoms, rank=4)  # Caffe's forward reads a 3-D blob as (N, C, H, 1)
        if list(layer.tops) == list(layer.bottoms):
            raise LayerError("Caffe's Pad does not work in place (top == bottom)")
        up, down, left, right = pads = self.amounts(layer)
        if min(pads) < 0 <= max(pads):
            raise LayerError(f"pads {pads}: Caffe crops only when all four are negative (otherwise it writes "
                             "outside its top)")
        if p.pad_type == caffe_pb2.PadParameter.REFLECT and max(pads) >= 0 and (max(up, down) > h - 1
                                                                               or max(left, right) > w - 1):
            raise LayerError(f"REFLECT pads {pads} must be below the bottom's size ({h}, {w}) on their axis: "
                             "Caffe would mirror cells it has not written yet")
        return Shapes([positive_size((n, c, h + up + down, w + left + right))])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffePad

        p = self.param(layer)
        pad = CaffePad(self.amounts(layer), PAD_MODES[p.pad_type], float(p.pad_value), name=ctx.name(layer))
        return [pad(bottoms[0].tensor)]
