"""Faster R-CNN's Proposal (the fork's RPN layer): region proposals (parity.keras_layers.proposal has the rules).

Its tops have as many rows as non-maximum suppression keeps, so the shapes Caffe gives them before
running, (N x post_nms_topn, 5) and (N x post_nms_topn,), are nominal; parity compares the rois as a set
of boxes (parity.check.detections.compare_proposals), not element by element.
"""
from __future__ import annotations

import numpy as np

from .handler import LayerError, LayerHandler, Shapes
from .registry import register


@register("Proposal")
class ProposalHandler(LayerHandler):
    param_field = "proposal_param"
    supported = frozenset({"feat_stride", "base_size", "min_size", "ratio", "scale", "pre_nms_topn",
                           "post_nms_topn", "nms_thresh"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if len(bottoms) != 3:
            raise LayerError(f"expects three bottoms (scores, box deltas, im_info), got {len(bottoms)}")
        if len(layer.tops) not in (1, 2):
            raise LayerError(f"has one top (rois) or two (rois, scores), got {len(layer.tops)}")
        if not p.ratio or not p.scale:
            raise LayerError("needs at least one proposal_param.ratio and one scale (Caffe would index an empty "
                             "list)")
        if p.pre_nms_topn < 1 or p.post_nms_topn < 1:
            raise LayerError("pre_nms_topn and post_nms_topn must be positive (with 0 Caffe keeps no box, or "
                             "writes past its index buffer)")
        if p.base_size < 1 or min(p.ratio) <= 0:
            raise LayerError("base_size and every ratio must be positive")
        scores, deltas, info = (tuple(b) for b in bottoms)
        count = len(p.ratio) * len(p.scale)
        if len(scores) != 4 or len(deltas) != 4:
            raise LayerError(f"expects 4-D scores and deltas, got {scores} and {deltas}")
        if scores[1] != 2 * count or deltas[1] != 4 * count:
            raise LayerError(f"{count} anchors need {2 * count} score channels (background, then foreground) and "
                             f"{4 * count} delta channels, got {scores[1]} and {deltas[1]}")
        if scores[0] != deltas[0] or scores[2:] != deltas[2:]:
            raise LayerError(f"the scores {scores} and the deltas {deltas} must share batch, height and width")
        if int(np.prod(info)) < 2:
            raise LayerError(f"im_info {info} must hold at least [height, width]")
        rows = scores[0] * p.post_nms_topn
        return Shapes([(rows, 5), (rows,)][:len(layer.tops)])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeProposal

        p = self.param(layer)
        head = CaffeProposal(anchors(p.base_size, list(p.ratio), list(p.scale)).tolist(), feat_stride=p.feat_stride,
                             min_size=p.min_size, pre_nms_topn=p.pre_nms_topn, post_nms_topn=p.post_nms_topn,
                             nms_thresh=p.nms_thresh, with_scores=len(layer.tops) == 2, name=ctx.name(layer))
        out = head([b.tensor for b in bottoms])
        return list(out) if len(layer.tops) == 2 else [out]


def anchors(base_size: int, ratios: list[float], scales: list[float]) -> np.ndarray:
    """The fork's anchors (A, 4) in float32, ratios outer, with its roundings: each side's half is
    0.5 x int(side x scale / base_size - 1 + 0.5), the int truncating towards zero as C's cast does."""
    f32 = np.float32
    area = f32(base_size * base_size)
    centre = f32(0.5) * (f32(base_size) - f32(1))
    out = []
    for ratio in ratios:
        side_w = f32(np.sqrt(np.float64(area / f32(ratio))))  # sqrt of the float quotient, back to float
        side_h = f32(side_w * f32(ratio))
        for scale in scales:
            half_w = f32(0.5) * f32(int(float(side_w * f32(scale)) / base_size - 1.0 + 0.5))
            half_h = f32(0.5) * f32(int(float(side_h * f32(scale)) / base_size - 1.0 + 0.5))
            out.append([centre - half_w, centre - half_h, centre + half_w, centre + half_h])
    return np.asarray(out, np.float32)
