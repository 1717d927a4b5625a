"""SSD's DetectionOutput: the detector's boxes (parity.keras_layers.detection has Caffe's rules).

Its top has as many rows as the image has detections, so the shape Caffe gives it before running,
(1, 1, 1, 7), is nominal; parity compares it as detections (parity.check.detections), not element by element.
Fields that only write files or draw (save_output_param, visualize) change nothing in the top and are
refused rather than ignored, so a net that relies on them says so.
"""
from __future__ import annotations

from .handler import LayerError, LayerHandler, Shapes
from .registry import register

CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}


@register("DetectionOutput")
class DetectionOutputHandler(LayerHandler):
    param_field = "detection_output_param"
    supported = frozenset({"num_classes", "share_location", "background_label_id", "nms_param", "code_type",
                           "keep_top_k", "variance_encoded_in_target", "confidence_threshold"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        if len(bottoms) != 3:
            raise LayerError(f"expects three bottoms (locations, confidences, priors), got {len(bottoms)}")
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise LayerError("needs detection_output_param.num_classes")
        if p.code_type not in CODE_TYPES:
            raise LayerError(f"unknown code_type {p.code_type}")
        loc, conf, priors = (tuple(b) for b in bottoms)
        if len(priors) != 3 or priors[1] != 2 or priors[2] % 4:
            raise LayerError(f"expects the priors as (1, 2, 4 x priors), got {priors}")
        count = priors[2] // 4
        loc_classes = 1 if p.share_location else p.num_classes
        if _per_image(loc) != count * loc_classes * 4:
            raise LayerError(f"{_per_image(loc)} location values per image for {count} priors: expected "
                             f"{count * loc_classes * 4}")
        if _per_image(conf) != count * p.num_classes:
            raise LayerError(f"{_per_image(conf)} confidences per image for {count} priors and {p.num_classes} "
                             f"classes: expected {count * p.num_classes}")
        if p.HasField("nms_param") and not (p.nms_param.nms_threshold >= 0 and 0 < p.nms_param.eta <= 1):
            raise LayerError("nms_param needs nms_threshold >= 0 and 0 < eta <= 1")
        return Shapes([(1, 1, 1, 7)])

    def build(self, layer, bottoms, blobs, ctx):
        import keras

        from ..keras_layers import CaffeDetectionOutput
        from .reshaping import in_caffe_order

        p = self.param(layer)
        flat = []
        for i, b in enumerate(bottoms[:2]):  # locations and confidences in Caffe's memory order
            tensor = in_caffe_order(layer, b.tensor, b.rank, ctx, f"nchw{i}")
            flat.append(keras.layers.Flatten(name=ctx.name(layer, f"flat{i}"))(tensor) if b.rank > 2 else tensor)
        nms = p.nms_param if p.HasField("nms_param") else None
        head = CaffeDetectionOutput(
            num_classes=p.num_classes, share_location=p.share_location, background_label_id=p.background_label_id,
            code_type=CODE_TYPES[p.code_type], variance_encoded_in_target=p.variance_encoded_in_target,
            keep_top_k=p.keep_top_k, nms=nms is not None,
            confidence_threshold=(p.confidence_threshold if p.HasField("confidence_threshold")
                                  else -3.4028234663852886e38),
            nms_threshold=nms.nms_threshold if nms is not None else 0.3, eta=nms.eta if nms is not None else 1.0,
            top_k=nms.top_k if nms is not None and nms.HasField("top_k") else -1, name=ctx.name(layer))
        return [head([flat[0], flat[1], bottoms[2].tensor])]


def _per_image(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape[1:]:
        count *= d
    return count
