"""SSD's DetectionOutput as a serializable Keras layer: decode, per-class NMS, keep_top_k, Caffe's rows.

Written from the SSD fork's detection_output_layer.cpp and bbox_util.cpp (as brocolli-caffe ships them):
- location predictions are read in Caffe's memory order, 4 per prior (per class unless share_location),
  confidences `num_classes` per prior, priors as corners then variances (PriorBox's two channels);
- boxes are decoded (CORNER, CENTER_SIZE or CORNER_SIZE, variance from the priors or already in the
  target) and never clipped; a decoded box's area is 0 when its corners are inverted;
- per class other than the background: candidates with score > confidence_threshold, sorted by score
  (stable: ties keep the prior order), cut to top_k, then greedy NMS: a box is kept when its overlap with
  every box kept so far is <= the threshold, and after each kept box the threshold shrinks by `eta` while
  it is above 0.5. Without nms_param every prior of every class is kept, with no threshold at all;
- keep_top_k: when an image has more detections, the highest scores across classes survive;
- rows [image, label, score, xmin, ymin, xmax, ymax], per image by label, then score (NMS order); with no
  detection at all, one row per image [image, -1, -1, -1, -1, -1, -1].

The number of rows depends on the data, so the output is (1, rows, 7, 1): Caffe's (1, 1, rows, 7) in
parity's channels-last layout. TensorFlow ops (this project's backend) make it graph-safe: no Lambda, no
Python callback, and it computes in float64 too (parity's noise twin).
"""
from __future__ import annotations

import keras

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")
NO_THRESHOLD = -3.4028234663852886e38  # -FLT_MAX, Caffe's threshold when none is given


@keras.saving.register_keras_serializable(package="parity")
class CaffeDetectionOutput(keras.layers.Layer):
    """Inputs: [loc (N, P*L*4), conf (N, P*C), priors (1, 2, P*4)], all in Caffe's memory order."""

    def __init__(self, num_classes: int, share_location: bool = True, background_label_id: int = 0,
                 code_type: str = "CORNER", variance_encoded_in_target: bool = False, keep_top_k: int = -1,
                 confidence_threshold: float = NO_THRESHOLD, nms: bool = True, nms_threshold: float = 0.3,
                 eta: float = 1.0, top_k: int = -1, **kwargs):
        super().__init__(**kwargs)
        if code_type not in CODE_TYPES:
            raise ValueError(f"code_type must be one of {CODE_TYPES}, got {code_type!r}")
        self.num_classes, self.share_location = int(num_classes), bool(share_location)
        self.background_label_id, self.code_type = int(background_label_id), code_type
        self.variance_encoded_in_target, self.keep_top_k = bool(variance_encoded_in_target), int(keep_top_k)
        self.confidence_threshold, self.nms = float(confidence_threshold), bool(nms)
        self.nms_threshold, self.eta, self.top_k = float(nms_threshold), float(eta), int(top_k)

    def compute_output_shape(self, input_shape):
        return (1, None, 7, 1)

    def call(self, inputs):
        import tensorflow as tf

        loc, conf, priors = (tf.convert_to_tensor(t) for t in inputs)
        dtype = loc.dtype
        conf, priors = tf.cast(conf, dtype), tf.cast(priors, dtype)
        count = tf.shape(priors)[2] // 4
        corners = tf.reshape(priors[0, 0], (-1, 4))
        variances = tf.reshape(priors[0, 1], (-1, 4))
        loc_classes = 1 if self.share_location else self.num_classes
        images = tf.shape(loc)[0]
        loc = tf.reshape(loc, (images, count, loc_classes, 4))
        conf = tf.reshape(conf, (images, count, self.num_classes))
        rows = tf.TensorArray(dtype, size=images, infer_shape=False, element_shape=tf.TensorShape([None, 7]))

        def per_image(i, rows):
            return i + 1, rows.write(i, self._image_rows(i, loc[i], conf[i], corners, variances))

        _, rows = tf.while_loop(lambda i, _: i < images, per_image, (tf.constant(0), rows))
        table = rows.concat()
        empty = tf.concat([tf.cast(tf.range(images), dtype)[:, None], -tf.ones((images, 6), dtype)], axis=1)
        table = tf.cond(tf.shape(table)[0] > 0, lambda: table, lambda: empty)
        return table[None, :, :, None]

    # -- one image ----------------------------------------------------------------------------------------
    def _image_rows(self, image, loc, conf, corners, variances):
        """Rows [image, label, score, box] of one image, by label then NMS order, cut to keep_top_k."""
        import tensorflow as tf

        dtype = loc.dtype
        parts = []
        for c in range(self.num_classes):
            if c == self.background_label_id:
                continue
            boxes = decode(corners, variances, loc[:, 0 if self.share_location else c], self.code_type,
                           self.variance_encoded_in_target)
            scores = conf[:, c]
            kept = self._class_indices(boxes, scores)
            count = tf.shape(kept)[0]
            parts.append(tf.concat([tf.fill((count, 1), tf.cast(image, dtype)), tf.fill((count, 1), tf.cast(c, dtype)),
                                    tf.gather(scores, kept)[:, None], tf.gather(boxes, kept)], axis=1))
        if not parts:
            return tf.zeros((0, 7), dtype)
        table = tf.concat(parts, axis=0)
        if self.keep_top_k <= -1:
            return table
        best = tf.argsort(table[:, 2], direction="DESCENDING", stable=True)[: self.keep_top_k]
        return tf.gather(table, tf.sort(best))  # the survivors, back in label-then-score order

    def _class_indices(self, boxes, scores):
        """The prior indices kept for one class, in Caffe's order (ApplyNMSFast, or all without nms_param)."""
        import tensorflow as tf

        if not self.nms:
            return tf.range(tf.shape(scores)[0])
        candidates = tf.where(scores > tf.cast(self.confidence_threshold, scores.dtype))[:, 0]
        order = tf.argsort(tf.gather(scores, candidates), direction="DESCENDING", stable=True)
        if self.top_k > -1:
            order = order[: self.top_k]
        visit = tf.cast(tf.gather(candidates, order), tf.int32)
        return tf.gather(visit, greedy_nms(tf.gather(boxes, visit), self.nms_threshold, self.eta))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, share_location=self.share_location,
                      background_label_id=self.background_label_id, code_type=self.code_type,
                      variance_encoded_in_target=self.variance_encoded_in_target, keep_top_k=self.keep_top_k,
                      confidence_threshold=self.confidence_threshold, nms=self.nms,
                      nms_threshold=self.nms_threshold, eta=self.eta, top_k=self.top_k)
        return config


def decode(corners, variances, loc, code_type: str, in_target: bool):
    """Caffe's DecodeBBox for every prior at once, in the same float operations and order."""
    import tensorflow as tf

    v = tf.ones_like(variances) if in_target else variances
    if code_type == "CORNER":
        return corners + v * loc
    width, height = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    if code_type == "CORNER_SIZE":
        size = tf.stack([width, height, width, height], axis=1)
        return corners + v * loc * size
    cx, cy = (corners[:, 0] + corners[:, 2]) / 2, (corners[:, 1] + corners[:, 3]) / 2
    center_x, center_y = v[:, 0] * loc[:, 0] * width + cx, v[:, 1] * loc[:, 1] * height + cy
    w, h = tf.exp(v[:, 2] * loc[:, 2]) * width, tf.exp(v[:, 3] * loc[:, 3]) * height
    return tf.stack([center_x - w / 2, center_y - h / 2, center_x + w / 2, center_y + h / 2], axis=1)


def box_areas(boxes):
    """Caffe's BBoxSize: width x height, 0 for a box whose corners are inverted."""
    import tensorflow as tf

    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return tf.where((w < 0) | (h < 0), tf.zeros_like(w), w * h)


def overlaps(box, area, boxes, areas):
    """Caffe's JaccardOverlap of one box with many: 0 unless the intersection has positive width and height."""
    import tensorflow as tf

    iw = tf.minimum(box[2], boxes[:, 2]) - tf.maximum(box[0], boxes[:, 0])
    ih = tf.minimum(box[3], boxes[:, 3]) - tf.maximum(box[1], boxes[:, 1])
    inter = iw * ih
    return tf.where((iw > 0) & (ih > 0), inter / (area + areas - inter), tf.zeros_like(iw))


def greedy_nms(boxes, threshold: float, eta: float):
    """Positions kept by ApplyNMSFast's loop over `boxes` (already in visiting order)."""
    import tensorflow as tf

    areas = box_areas(boxes)
    n = tf.shape(boxes)[0]

    def step(i, keep, limit):
        suppressed = tf.reduce_any(keep & (overlaps(boxes[i], areas[i], boxes, areas) > limit))
        kept = tf.logical_not(suppressed)
        keep = tf.tensor_scatter_nd_update(keep, [[i]], [kept])
        if eta >= 1.0:
            return i + 1, keep, limit
        return i + 1, keep, tf.where(kept & (limit > 0.5), limit * eta, limit)

    start = (tf.constant(0), tf.zeros((n,), tf.bool), tf.constant(threshold, boxes.dtype))
    _, keep, _ = tf.while_loop(lambda i, *_: i < n, step, start)
    return tf.where(keep)[:, 0]
