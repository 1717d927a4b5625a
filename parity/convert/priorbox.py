"""SSD's PriorBox (prior_box_layer.cpp of the SSD fork, as brocolli-caffe ships it).

Boxes depend only on the feature map's and image's sizes, so they are computed here with Caffe's
loop order and arithmetic and kept as a constant. Facts of this fork: `clip` defaults to true;
min_size and max_size are truncated to integers; per cell and min_size the boxes come in the order
aspect ratio 1, then sqrt(min*max), then the other ratios (each followed by its flip).
Output (1, 2, H*W*priors*4): box corners normalised by the image size, then the variances.
"""
from __future__ import annotations

import math

import numpy as np

from .handler import LayerError, LayerHandler, Shapes
from .preset import call_with_weights
from .registry import register


def aspect_ratios(p) -> list[float]:
    ratios = [1.0]
    for ar in p.aspect_ratio:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if p.flip:
                ratios.append(1.0 / ar)
    return ratios


def prior_boxes(p, layer_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    layer_h, layer_w = layer_hw
    img_h, img_w = (p.img_h, p.img_w) if (p.img_h and p.img_w) else (p.img_size,) * 2 if p.img_size else image_hw
    step_h, step_w = (p.step_h, p.step_w) if (p.step_h and p.step_w) else (p.step,) * 2 if p.step else (
        np.float32(img_h) / layer_h, np.float32(img_w) / layer_w)
    ratios = aspect_ratios(p)
    boxes = []
    for h in range(layer_h):
        for w in range(layer_w):
            cx, cy = np.float32((w + p.offset) * np.float32(step_w)), np.float32((h + p.offset) * np.float32(step_h))
            for s, min_size in enumerate(p.min_size):
                min_size = int(min_size)  # the fork stores it in an int
                sizes = [(min_size, min_size)] if abs(ratios[0] - 1.0) < 1e-6 else []
                if p.max_size:
                    side = math.sqrt(min_size * int(p.max_size[s]))
                    sizes.append((side, side))
                sizes += [(min_size * math.sqrt(ar), min_size / math.sqrt(ar))
                          for ar in ratios if abs(ar - 1.0) >= 1e-6]
                for bw, bh in sizes:
                    bw, bh = np.float32(bw), np.float32(bh)
                    boxes.append([(cx - bw / 2.0) / img_w, (cy - bh / 2.0) / img_h,
                                  (cx + bw / 2.0) / img_w, (cy + bh / 2.0) / img_h])
    corners = np.asarray(boxes, np.float64).astype(np.float32).reshape(-1)
    if p.clip:
        corners = np.clip(corners, 0.0, 1.0)
    variance = list(p.variance) or [0.1]
    variances = np.tile(np.asarray(variance if len(variance) > 1 else variance * 4, np.float32), corners.size // 4)
    return np.stack([corners, variances])[None]


@register("PriorBox")
class PriorBoxHandler(LayerHandler):
    param_field = "prior_box_param"
    supported = frozenset({"min_size", "max_size", "aspect_ratio", "flip", "clip", "variance", "img_size", "img_h",
                           "img_w", "step", "step_h", "step_w", "offset"})

    def priors_per_cell(self, p) -> int:
        return len(aspect_ratios(p)) * len(p.min_size) + len(p.max_size)

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if len(bottoms) != 2 or len(bottoms[0]) != 4 or len(bottoms[1]) != 4:
            raise LayerError("expects two 4-D bottoms: the feature map and the image")
        if not p.min_size or (p.max_size and len(p.max_size) != len(p.min_size)):
            raise LayerError("needs min_size, and as many max_size values if any")
        if len(p.variance) not in (0, 1, 4):
            raise LayerError(f"{len(p.variance)} variances: give 1 or 4")
        _, _, h, w = bottoms[0]
        return Shapes([(1, 2, h * w * self.priors_per_cell(p) * 4)])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeConstant

        feature, image = (b.caffe_shape for b in bottoms)
        value = prior_boxes(self.param(layer), feature[2:], image[2:])
        constant = CaffeConstant(value.shape[1:], name=ctx.name(layer))
        return [call_with_weights(constant, bottoms[0].tensor, [value[0]])]
