"""Outputs that are decisions: where float noise may legitimately flip them, and where it cannot.

Most layers are continuous in their input: a MAX pooling window whose two largest values sit within
noise of each other may pick the other one, but then its output moves by less than that noise, and
PriorBox's clip to [0, 1] moves a value by no more than it was off; the noise rule covers both. Two
Caffe layers are not continuous. ArgMax's index jumps when two values swap order, and Threshold's
0/1 jumps when a value crosses the threshold. For them parity computes each output element's
*margin*: how far the bottom would have to move to change it. An element whose margin is within
k x the bottom's noise is undecided: Caffe and Keras may each land on either side, so it is not
compared, and a difference there is counted as a flip. Every other element must agree exactly.

Margins come from the bottom as Keras computed it (Caffe layout), so no Caffe is needed here.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Margins = Callable[[object, np.ndarray, tuple[int, ...]], np.ndarray]


def _sorted_gaps(values: np.ndarray, top_k: int) -> np.ndarray:
    """Along the last axis: for ranks 0..top_k-1 of the values sorted in descending order, the distance
    to the nearer neighbour in that order (an ArgMax index changes when a neighbour overtakes it)."""
    ordered = -np.sort(-values, axis=-1)
    gaps = ordered[..., :-1] - ordered[..., 1:]
    inf = np.full(values.shape[:-1] + (1,), np.inf)
    above = np.concatenate([inf, gaps], axis=-1)  # gap to the next larger value (none for rank 0)
    below = np.concatenate([gaps, inf], axis=-1)  # gap to the next smaller value (none for the last)
    return np.minimum(above, below)[..., :top_k]


def argmax_margins(layer, bottom: np.ndarray, top_shape: tuple[int, ...]) -> np.ndarray:
    """ArgMax's margins in its top's (Caffe) layout; values (out_max_val) are continuous: infinite margin."""
    p = layer.param.argmax_param
    top_k = p.top_k
    if p.HasField("axis"):
        axis = p.axis % bottom.ndim
        if p.out_max_val:
            return np.full(top_shape, np.inf)
        gaps = _sorted_gaps(np.moveaxis(bottom, axis, -1), top_k)
        return np.moveaxis(gaps, -1, axis).reshape(top_shape)
    gaps = _sorted_gaps(bottom.reshape(bottom.shape[0], -1), top_k)  # (N, top_k): every value of a sample
    margins = np.full((top_shape[0], 2 if p.out_max_val else 1, top_k), np.inf)
    margins[:, 0, :] = gaps
    return margins.reshape(top_shape)


def threshold_margins(layer, bottom: np.ndarray, top_shape: tuple[int, ...]) -> np.ndarray:
    """Threshold's output is bottom > threshold: its margin is the distance to the threshold."""
    return np.abs(bottom - layer.param.threshold_param.threshold).reshape(top_shape)


DECISIONS: dict[str, Margins] = {"ArgMax": argmax_margins, "Threshold": threshold_margins}


DETECTIONS = "DetectionOutput"  # a set of boxes, compared as a matching (parity.check.detections)
# Faster R-CNN's rois: a set of pixel boxes, matched the same way. The prototxt says Proposal; the fork's
# ProposalLayer::type() says ProposalLayer, which is what a dump's manifest records.
PROPOSALS = ("Proposal", "ProposalLayer")


def is_decision(layer_type: str) -> bool:
    return layer_type in DECISIONS or layer_type == DETECTIONS or layer_type in PROPOSALS


def settle(layer, bottom_nchw: np.ndarray, ref_nchw: np.ndarray, got_nchw: np.ndarray,
           limit: float) -> tuple[np.ndarray, int]:
    """`got` with every undecided element (margin <= `limit`) replaced by Caffe's value, and how many of
    those differed (flips). The rest is left to the comparison, which then demands agreement."""
    margins = DECISIONS[layer.type](layer, np.asarray(bottom_nchw, np.float64), tuple(ref_nchw.shape))
    undecided = ~(margins > limit)
    flips = int(np.count_nonzero(undecided & (ref_nchw != got_nchw)))
    return np.where(undecided, ref_nchw, got_nchw), flips


def decision_bottom(net, layer_name: str, index: int = 0) -> tuple[str, str] | None:
    """The (writer layer, blob) whose value a decision layer reads (its bottom `index`), for capturing it
    beside the outputs."""
    layer = net.layer(layer_name)
    if len(layer.bottoms) <= index:
        return None
    blob = layer.bottoms[index]
    writer = net.writer_before(layer_name, blob)
    return None if writer is None else (writer.name, blob)


def decision_bottoms(net, layer_name: str) -> list[tuple[str, str] | None]:
    """Every bottom a decision layer reads: ArgMax and Threshold read one; DetectionOutput reads its
    locations, confidences and priors, Proposal its scores, deltas and im_info (parity.check.detections judges
    their boxes with that noise)."""
    kind = net.layer(layer_name).type
    count = 3 if kind == DETECTIONS or kind in PROPOSALS else 1
    return [decision_bottom(net, layer_name, i) for i in range(count)]

