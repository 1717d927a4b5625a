"""Comparing DetectionOutput's boxes (and Proposal's rois): a matching, not an element-by-element difference.

A detector's output is a set of rows [image, label, score, xmin, ymin, xmax, ymax] whose length depends on
the data, so the same boxes can come in another order and one float of noise can add or drop a box. parity
pairs Caffe's and Keras' detections by image and label: boxes whose corners agree within noise first,
then by overlap (IoU >= MATCH_IOU, best first); then it judges:

- a pair: its score error against k x the confidences' noise, its corner error against what k x the
  location predictions' noise moves a decoded corner by (variance x (1 + the box's size));
- a detection on one side only (missing from Keras, or extra in it): tolerated only where float noise can
  decide it: its score within noise of confidence_threshold, of the keep_top_k cut or of its class's
  top_k cut; or an overlap with a box of its class within noise of nms_threshold (NMS may then keep
  either); or a large overlap with a box whose own presence is so explained (its suppressor changed).
  Every other one is a divergence, named with its label, score and box.

Proposal's rois (rows [image, x1, y1, x2, y2] in pixels, proposal_rows) go through the same matching as
label 0, with a pixel tolerance (proposal_settings), the +1 overlap of its NMS, and their rank for a score:
the rois carry none, so only the boxes are judged, post_nms_topn is the cut and nms_thresh the hinge.

Nothing here needs Caffe or TensorFlow: both sides are arrays in Caffe's layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MATCH_IOU = 0.5  # a Keras box pairs with a Caffe box of the same image and label from this overlap up
EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Settings:
    """What DetectionOutput decided with, and the noise of what it read (absolute, per bottom)."""

    confidence_threshold: float | None
    nms_threshold: float | None
    top_k: int
    keep_top_k: int
    loc_noise: float
    conf_noise: float
    variance: float  # the largest variance a location offset is multiplied by
    k: float
    box_scale: float | None = None  # Proposal: pixels a corner moves per unit of delta (anchor x (1 + e^d / 2))
    plus_one: float = 0.0  # Proposal: its overlaps count sides pixel-inclusive (x2 - x1 + 1)
    ranked: bool = False  # Proposal's rois carry no score: `score` is minus the rank, never judged


@dataclass
class Detection:
    row: int
    image: int
    label: int
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {"row": self.row, "image": self.image, "label": self.label, "score": self.score, "box": list(self.box)}


@dataclass
class DetectionComparison:
    caffe: list[Detection]
    keras: list[Detection]
    pairs: list[tuple[Detection, Detection]] = field(default_factory=list)
    missing: list[tuple[Detection, str | None]] = field(default_factory=list)  # (Caffe's, why noise explains it)
    extra: list[tuple[Detection, str | None]] = field(default_factory=list)
    score_error: float = 0.0
    box_error: float = 0.0
    score_tol: float = 0.0
    ratio: float = 0.0  # the worst pair's error in units of its allowance, times k: above k fails
    off_pairs: int = 0  # pairs whose score or box error is outside the allowance

    @property
    def unexplained(self) -> list[tuple[str, Detection]]:
        return ([("missing", d) for d, why in self.missing if why is None] +
                [("extra", d) for d, why in self.extra if why is None])

    @property
    def failed(self) -> bool:
        return bool(self.unexplained) or self.off_pairs > 0

    def summary(self) -> str:
        """One line: what differs, or that the sets agree."""
        parts = [f"{len(self.caffe)} Caffe detections, {len(self.keras)} Keras, {len(self.pairs)} paired"]
        missing = sum(why is None for _, why in self.missing)
        extra = sum(why is None for _, why in self.extra)
        if missing or extra:
            parts.append(f"{missing} missing and {extra} extra beyond float noise")
        if self.off_pairs:
            parts.append(f"{self.off_pairs} paired with score or box off by more than noise")
        tolerated = len(self.missing) + len(self.extra) - missing - extra
        if tolerated:
            parts.append(f"{tolerated} on one side only where noise decides")
        if self.unexplained:
            side, d = self.unexplained[0]
            parts.append(f"first {side}: {describe(d)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "caffe": len(self.caffe), "keras": len(self.keras), "paired": len(self.pairs),
            "score_error": self.score_error, "box_error": self.box_error, "score_tolerance": self.score_tol,
            "off_pairs": self.off_pairs,
            "missing": [{**d.to_dict(), "tolerated": why} for d, why in self.missing],
            "extra": [{**d.to_dict(), "tolerated": why} for d, why in self.extra],
            "caffe_boxes": [d.to_dict() for d in self.caffe], "keras_boxes": [d.to_dict() for d in self.keras],
        }


def settings_for(layer, loc_noise: float, conf_noise: float, priors: np.ndarray | None, k: float) -> Settings:
    """The Settings of one DetectionOutput layer (its parsed prototxt entry) for this comparison."""
    p = layer.param.detection_output_param
    nms = p.nms_param if p.HasField("nms_param") else None
    variance = 1.0 if p.variance_encoded_in_target or priors is None else float(np.max(np.abs(priors[:, 1])))
    return Settings(p.confidence_threshold if p.HasField("confidence_threshold") else None,
                    nms.nms_threshold if nms is not None else None,
                    nms.top_k if nms is not None and nms.HasField("top_k") else -1, p.keep_top_k,
                    loc_noise, conf_noise, variance, k)


def proposal_settings(layer, deltas_noise: float, scores_noise: float, deltas: np.ndarray | None,
                      k: float) -> Settings:
    """Settings for a Proposal's rois (pixel boxes, label 0, ranked): a corner moves by dx x the anchor's
    width and by dlog w x half the decoded width, so its noise is the deltas' noise times the largest
    anchor side x (1 + e^max|delta| / 2); post_nms_topn is the cut (keep_top_k), nms_thresh the hinge."""
    from ..convert.proposal import anchors

    p = layer.param.proposal_param
    boxes = anchors(p.base_size, list(p.ratio), list(p.scale)).astype(np.float64)
    side = float(np.max(boxes[:, 2:] - boxes[:, :2] + 1.0))
    grow = float(np.exp(np.max(np.abs(deltas)))) if deltas is not None and deltas.size else np.e
    return Settings(None, p.nms_thresh, -1, p.post_nms_topn, deltas_noise, scores_noise, 1.0, k,
                    box_scale=side * (1.0 + grow / 2), plus_one=1.0, ranked=True)


def proposal_rows(array: np.ndarray) -> list[Detection]:
    """A Proposal's rois [image, x1, y1, x2, y2] as detections of label 0, scored by minus their rank in
    their image (NMS keeps them by descending score)."""
    table = np.asarray(array, np.float64).reshape(-1, 5)
    rank: dict[int, int] = {}
    found = []
    for i, r in enumerate(table):
        image = int(r[0])
        rank[image] = rank.get(image, -1) + 1
        found.append(Detection(i, image, 0, -float(rank[image]), tuple(float(v) for v in r[1:])))
    return found


def describe(d: Detection) -> str:
    x0, y0, x1, y1 = d.box
    return f"label {d.label} score {d.score:.4g} box ({x0:.3f}, {y0:.3f}, {x1:.3f}, {y1:.3f})"


def rows(array: np.ndarray) -> list[Detection]:
    """Detections of a DetectionOutput top in Caffe's layout (1, 1, N, 7); the 'none' rows (label -1) dropped."""
    table = np.asarray(array, np.float64).reshape(-1, 7)
    return [Detection(i, int(r[0]), int(r[1]), float(r[2]), tuple(float(v) for v in r[3:]))
            for i, r in enumerate(table) if r[1] != -1]


def iou(a: tuple, b: tuple, plus: float = 0.0) -> float:
    """Overlap; `plus` 1 counts sides pixel-inclusive, as Proposal's NMS does."""
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]) + plus, min(a[3], b[3]) - max(a[1], b[1]) + plus
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = _area(a, plus) + _area(b, plus) - inter
    return inter / union if union > 0 else 0.0


def _area(box: tuple, plus: float = 0.0) -> float:
    w, h = box[2] - box[0] + plus, box[3] - box[1] + plus
    return w * h if w >= 0 and h >= 0 else 0.0


def box_tolerance(d: Detection, s: Settings) -> float:
    """How far noise may move this box's corners: an offset's noise times its variance, scaled by the prior
    (about the box's size) and, for CENTER_SIZE's exp, by the box's size again; plus a float32 step."""
    size = max(abs(d.box[2] - d.box[0]), abs(d.box[3] - d.box[1]))
    peak = max(1.0, *(abs(v) for v in d.box))
    if s.box_scale is not None:  # Proposal: pixels, moved by the deltas' noise times the anchor's scale
        return s.k * (s.loc_noise * s.box_scale + EPS32 * peak)
    return s.k * (s.loc_noise * s.variance * (1.0 + size) + EPS32 * peak)


def compare_detections(ref_nchw: np.ndarray, got_nchw: np.ndarray, s: Settings,
                       class_scores: np.ndarray | None = None) -> DetectionComparison:
    """Caffe's detections (`ref_nchw`) against Keras' (`got_nchw`). `class_scores` (images, priors,
    classes), the confidences as Keras computed them, places each class's top_k cut."""
    read = proposal_rows if s.ranked else rows
    result = DetectionComparison(read(ref_nchw), read(got_nchw))
    result.score_tol = s.k * (s.conf_noise + EPS32)
    unpaired_ref, unpaired_got = _pair(result, s)
    _judge_pairs(result, s)
    cuts = _top_k_cuts(class_scores, s)
    explained = _explain(unpaired_ref, unpaired_got, result, s, cuts)
    result.missing = [(d, explained.get(("caffe", d.row))) for d in unpaired_ref]
    result.extra = [(d, explained.get(("keras", d.row))) for d in unpaired_got]
    return result


def _pair(result: DetectionComparison, s: Settings) -> tuple[list[Detection], list[Detection]]:
    """Greedy matching per (image, label), each detection used once: first the pairs whose corners agree
    within noise (closest first; this pairs degenerate boxes too, whose overlap is 0), then the rest by
    overlap, best first, down to MATCH_IOU."""
    candidates = []
    for i, a in enumerate(result.caffe):
        for j, b in enumerate(result.keras):
            if (a.image, a.label) != (b.image, b.label):
                continue
            corner = max(abs(x - y) for x, y in zip(a.box, b.box))
            if corner <= box_tolerance(a, s) + box_tolerance(b, s):
                candidates.append((2.0, -corner, i, j))
            elif (overlap := iou(a.box, b.box)) >= MATCH_IOU:
                candidates.append((overlap, -abs(a.score - b.score), i, j))
    used_ref, used_got = set(), set()
    for *_, i, j in sorted(candidates, reverse=True):
        if i in used_ref or j in used_got:
            continue
        used_ref.add(i)
        used_got.add(j)
        result.pairs.append((result.caffe[i], result.keras[j]))
    return ([d for i, d in enumerate(result.caffe) if i not in used_ref],
            [d for j, d in enumerate(result.keras) if j not in used_got])


def _judge_pairs(result: DetectionComparison, s: Settings) -> None:
    for a, b in result.pairs:
        score = 0.0 if s.ranked else abs(a.score - b.score)
        corner = max(abs(x - y) for x, y in zip(a.box, b.box))
        result.score_error = max(result.score_error, score)
        result.box_error = max(result.box_error, corner)
        ratio = max(score / result.score_tol, corner / box_tolerance(a, s)) * s.k
        result.ratio = max(result.ratio, ratio)
        result.off_pairs += ratio > s.k


def _top_k_cuts(class_scores: np.ndarray | None, s: Settings) -> dict[tuple[int, int], float]:
    """(image, label) -> the score of the top_k-th candidate, where top_k cut candidates away."""
    if class_scores is None or s.top_k < 0:
        return {}
    cuts = {}
    for image, scores in enumerate(class_scores):
        for label in range(scores.shape[1]):
            column = scores[:, label]
            if s.confidence_threshold is not None:
                column = column[column > s.confidence_threshold]
            if column.size > s.top_k > 0:
                cuts[(image, label)] = float(np.sort(column)[::-1][s.top_k - 1])
    return cuts


def _explain(ref: list[Detection], got: list[Detection], result: DetectionComparison, s: Settings,
             cuts: dict) -> dict[tuple[str, int], str]:
    """Why float noise can have decided each one-sided detection, by ('caffe'|'keras', row); absent: no reason."""
    why: dict[tuple[str, int], str] = {}
    tol = result.score_tol
    lowest = {side: _lowest_when_full(dets, s.keep_top_k) for side, dets in (("caffe", result.caffe),
                                                                             ("keras", result.keras))}
    one_sided = [("caffe", d) for d in ref] + [("keras", d) for d in got]
    everyone = [("caffe", d) for d in result.caffe] + [("keras", d) for d in result.keras]
    for side, d in one_sided:
        other = "keras" if side == "caffe" else "caffe"
        if s.confidence_threshold is not None and abs(d.score - s.confidence_threshold) <= tol:
            why[(side, d.row)] = "score within noise of confidence_threshold"
        elif d.image in lowest[other] and abs(d.score - lowest[other][d.image]) <= 2 * tol:
            why[(side, d.row)] = "at the keep_top_k cut"
        elif (d.image, d.label) in cuts and abs(d.score - cuts[(d.image, d.label)]) <= 2 * tol:
            why[(side, d.row)] = "at its class's top_k cut"
        elif any(_nms_hinge(d, v, s) for _, v in everyone if v is not d and (v.image, v.label) == (d.image, d.label)):
            why[(side, d.row)] = "overlaps a box of its class within noise of nms_threshold"
    changed = True
    while changed:  # a box whose suppressor's own fate was noise
        changed = False
        for side, d in one_sided:
            if (side, d.row) in why or s.nms_threshold is None:
                continue
            if any((vs, v.row) in why and (v.image, v.label) == (d.image, d.label) and v.score >= d.score - tol
                   and iou(d.box, v.box, s.plus_one) > s.nms_threshold - _iou_tolerance(d, v, s)
                   for vs, v in one_sided):
                why[(side, d.row)] = "suppressed by, or freed from, a box that noise decided"
                changed = True
    return why


def _lowest_when_full(dets: list[Detection], keep_top_k: int) -> dict[int, float]:
    """image -> its lowest kept score, for the images keep_top_k cut (as many detections as it allows)."""
    if keep_top_k < 0:
        return {}
    by_image: dict[int, list[float]] = {}
    for d in dets:
        by_image.setdefault(d.image, []).append(d.score)
    return {image: min(scores) for image, scores in by_image.items() if len(scores) >= keep_top_k}


def _nms_hinge(d: Detection, v: Detection, s: Settings) -> bool:
    return (s.nms_threshold is not None
            and abs(iou(d.box, v.box, s.plus_one) - s.nms_threshold) <= _iou_tolerance(d, v, s))


def _iou_tolerance(a: Detection, b: Detection, s: Settings) -> float:
    """How far the boxes' corner noise can move their overlap: each corner moved by its tolerance changes
    the intersection and the union by at most tolerance x perimeter."""
    ta, tb = box_tolerance(a, s), box_tolerance(b, s)
    perimeter = sum(abs(x[2] - x[0]) + abs(x[3] - x[1]) + 2 * s.plus_one for x in (a.box, b.box))
    inter_union = _area(a.box, s.plus_one) + _area(b.box, s.plus_one)
    return 4.0 * (ta + tb) * perimeter / inter_union if inter_union > 0 else 0.0  # no area: the overlap is 0
