"""Faster R-CNN's Proposal (the fork's RPN layer) as a serializable Keras layer.

Written from brocolli-caffe's proposal_layer.cpp and util/nms.cpp:
- anchors: one per (ratio, scale), ratios outer, around the centre (base_size - 1) / 2 of a base box;
  a ratio gives a width sqrt(base_size^2 / ratio) and height width x ratio (not rounded), and each half
  side is 0.5 x int(side x scale / base_size - 1 + 0.5) (C's truncation, computed by the converter);
- proposals enumerated by row, column, then anchor; anchor k at column w, row h is shifted by
  (w, h) x feat_stride; its deltas are channels 4k..4k+3 (dx, dy, dlog w, dlog h) and its score is
  channel A + k of the score bottom (the second half: the foreground);
- decoding uses the +1 pixel convention for the width (x2 - x1 + 1) but not for the new corners
  (centre +- half the new width); corners are clipped to [0, width - 1] x [0, height - 1] of im_info's
  first two values [height, width] (read from image 0 for every image; the scale im_info[2] is not
  used: this fork compares against min_size itself);
- a box narrower or lower than min_size (+1 convention) is not removed: its score becomes 0 x score;
- sorted by score, descending; the first pre_nms_topn go to greedy NMS (a box is dropped when its
  overlap, with the +1 convention, with a kept box is above nms_thresh), which stops at post_nms_topn.
  Caffe sorts with its own quicksort, which is not stable: the order of equal scores is Caffe's
  implementation detail; here equal scores keep the enumeration order;
- rows [image, x1, y1, x2, y2] (image by image) and, as a second output, their scores.

Both outputs have as many rows as NMS keeps (Caffe reshapes its tops in the forward), so their first
axis is None. TensorFlow ops (this project's backend) keep it graph-safe, in float32 and float64.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="parity")
class CaffeProposal(keras.layers.Layer):
    """Inputs: [scores (N, H, W, 2A), deltas (N, H, W, 4A), im_info (1, >= 2)]; outputs: rois (R, 5),
    and with `with_scores` also scores (R,). `anchors`: A boxes [x1, y1, x2, y2] around the origin."""

    def __init__(self, anchors, feat_stride: int, min_size: float, pre_nms_topn: int, post_nms_topn: int,
                 nms_thresh: float, with_scores: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.anchors = [[float(v) for v in a] for a in anchors]
        self.feat_stride, self.min_size = int(feat_stride), float(min_size)
        self.pre_nms_topn, self.post_nms_topn = int(pre_nms_topn), int(post_nms_topn)
        self.nms_thresh, self.with_scores = float(nms_thresh), bool(with_scores)

    def compute_output_shape(self, input_shape):
        return [(None, 5), (None,)] if self.with_scores else (None, 5)

    def call(self, inputs):
        import tensorflow as tf

        scores, deltas, info = (tf.convert_to_tensor(t) for t in inputs)
        dtype = deltas.dtype
        scores, info = tf.cast(scores, dtype), tf.cast(tf.reshape(info, (-1,)), dtype)
        count = len(self.anchors)
        height, width = tf.shape(deltas)[1], tf.shape(deltas)[2]
        images = tf.shape(deltas)[0]
        ys, xs = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
        shifts = tf.cast(tf.stack([xs, ys, xs, ys], axis=-1) * self.feat_stride, dtype)  # (H, W, 4)
        boxes = tf.reshape(shifts[:, :, None, :] + tf.constant(self.anchors, dtype), (-1, 4))
        rows = tf.TensorArray(dtype, size=images, infer_shape=False, element_shape=tf.TensorShape([None, 6]))

        def per_image(i, rows):
            fg = tf.reshape(scores[i, :, :, count:2 * count], (-1,))
            d = tf.reshape(deltas[i], (-1, 4))
            return i + 1, rows.write(i, self._image_rows(i, boxes, d, fg, info[0], info[1]))

        _, rows = tf.while_loop(lambda i, _: i < images, per_image, (tf.constant(0), rows))
        table = rows.concat()
        return [table[:, :5], table[:, 5]] if self.with_scores else table[:, :5]

    def _image_rows(self, image, anchors, deltas, fg, img_h, img_w):
        """Rows [image, x1, y1, x2, y2, score] of one image, in NMS order."""
        import tensorflow as tf

        dtype = deltas.dtype
        one, half = tf.constant(1, dtype), tf.constant(0.5, dtype)
        w = anchors[:, 2] - anchors[:, 0] + one
        h = anchors[:, 3] - anchors[:, 1] + one
        cx, cy = anchors[:, 0] + half * w, anchors[:, 1] + half * h
        px, py = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
        pw, ph = tf.exp(deltas[:, 2]) * w, tf.exp(deltas[:, 3]) * h
        zero = tf.constant(0, dtype)
        x1 = tf.maximum(zero, tf.minimum(px - half * pw, img_w - one))
        y1 = tf.maximum(zero, tf.minimum(py - half * ph, img_h - one))
        x2 = tf.maximum(zero, tf.minimum(px + half * pw, img_w - one))
        y2 = tf.maximum(zero, tf.minimum(py + half * ph, img_h - one))
        size = tf.constant(self.min_size, dtype)
        valid = (x2 - x1 + one >= size) & (y2 - y1 + one >= size)
        score = tf.cast(valid, dtype) * fg
        order = tf.argsort(score, direction="DESCENDING", stable=True)[: self.pre_nms_topn]
        boxes = tf.gather(tf.stack([x1, y1, x2, y2], axis=1), order)
        kept = plus_one_nms(boxes, self.nms_thresh)[: self.post_nms_topn]
        count = tf.shape(kept)[0]
        return tf.concat([tf.fill((count, 1), tf.cast(image, dtype)), tf.gather(boxes, kept),
                          tf.gather(tf.gather(score, order), kept)[:, None]], axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(anchors=self.anchors, feat_stride=self.feat_stride, min_size=self.min_size,
                      pre_nms_topn=self.pre_nms_topn, post_nms_topn=self.post_nms_topn,
                      nms_thresh=self.nms_thresh, with_scores=self.with_scores)
        return config


def plus_one_overlaps(box, boxes):
    """nms.cpp's overlap of one box with many, pixel-inclusive (+1) sides; 0 for boxes apart."""
    import tensorflow as tf

    one, zero = tf.constant(1, boxes.dtype), tf.constant(0, boxes.dtype)
    apart = ((box[0] > boxes[:, 2]) | (box[1] > boxes[:, 3]) | (box[2] < boxes[:, 0]) | (box[3] < boxes[:, 1]))
    iw = tf.maximum(zero, tf.minimum(box[2], boxes[:, 2]) - tf.maximum(box[0], boxes[:, 0]) + one)
    ih = tf.maximum(zero, tf.minimum(box[3], boxes[:, 3]) - tf.maximum(box[1], boxes[:, 1]) + one)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    return tf.where(apart, tf.zeros_like(inter), inter / (area + areas - inter))


def plus_one_nms(boxes, threshold: float):
    """Positions nms_cpu keeps, in order: a box survives unless a kept earlier one overlaps it above
    `threshold` (the post_nms_topn stop is the caller's cut of this list)."""
    import tensorflow as tf

    n = tf.shape(boxes)[0]
    limit = tf.constant(threshold, boxes.dtype)

    def step(i, keep):
        suppressed = tf.reduce_any(keep & (plus_one_overlaps(boxes[i], boxes) > limit))
        return i + 1, tf.tensor_scatter_nd_update(keep, [[i]], [tf.logical_not(suppressed)])

    _, keep = tf.while_loop(lambda i, _: i < n, step, (tf.constant(0), tf.zeros((n,), tf.bool)))
    return tf.where(keep)[:, 0]
