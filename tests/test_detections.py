"""DetectionOutput: converted from Caffe's rules, compared as a matching, and its classic bugs caught.

The end-to-end checks run against real Caffe's references (the `ssd` fixture's two heads, seeded weights
with 21 classes; `res10_face`, OpenCV's pretrained face detector, when its PyPI sdist is in the cache).
The comparator's own rules are tested on hand-made rows: reordering is no divergence, a lost box is one,
and a box that noise can decide (score at the threshold, overlap at nms_threshold) is tolerated.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.check.compare import NoiseRule
from parity.check.detections import Settings, compare_detections
from parity.check.pipeline import check_reference, prepare
from parity.targets import from_fixture

TOL = NoiseRule()
SETTINGS = Settings(confidence_threshold=0.05, nms_threshold=0.45, top_k=-1, keep_top_k=-1, loc_noise=1e-6,
                    conf_noise=1e-6, variance=0.2, k=12.0)


def table(*rows) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(1, 1, len(rows), 7)


FACE = [0, 1, 0.9, 0.30, 0.10, 0.50, 0.35]
CAT = [0, 2, 0.6, 0.10, 0.50, 0.40, 0.90]


def test_the_same_detections_in_another_order_agree():
    found = compare_detections(table(FACE, CAT), table(CAT, FACE), SETTINGS)
    assert not found.failed and len(found.pairs) == 2


def test_a_lost_confident_detection_is_a_divergence_named_by_label_and_score():
    found = compare_detections(table(FACE, CAT), table(FACE), SETTINGS)
    assert found.failed
    assert "1 missing" in found.summary() and "label 2 score 0.6" in found.summary()


def test_a_moved_box_is_a_divergence_even_when_it_still_overlaps():
    moved = [0, 2, 0.6, 0.12, 0.50, 0.42, 0.90]  # IoU 0.88: paired, but its corners are off by 0.02
    found = compare_detections(table(FACE, CAT), table(FACE, moved), SETTINGS)
    assert found.failed and found.off_pairs == 1 and found.box_error == pytest.approx(0.02, abs=1e-6)


def test_a_box_whose_score_sits_at_the_threshold_may_be_on_one_side_only():
    borderline = [0, 3, 0.05 + 2e-6, 0.6, 0.6, 0.7, 0.7]
    found = compare_detections(table(FACE, borderline), table(FACE), SETTINGS)
    assert not found.failed and found.missing[0][1] == "score within noise of confidence_threshold"


def test_a_box_whose_overlap_sits_at_nms_threshold_may_be_on_one_side_only():
    """Two boxes of one class overlapping by exactly 0.45: NMS keeps the second or not by a rounding."""
    first = [0, 1, 0.9, 0.0, 0.0, 1.0, 1.0]
    second = [0, 1, 0.8, 0.0, 0.0, 1.0, 0.45]  # IoU = 0.45 / 1.0
    found = compare_detections(table(first, second), table(first), SETTINGS)
    assert not found.failed and "nms_threshold" in found.missing[0][1]
    clear = [0, 1, 0.8, 0.0, 0.0, 1.0, 0.30]  # IoU 0.30: kept whatever the rounding
    assert compare_detections(table(first, clear), table(first), SETTINGS).failed


def test_no_detections_on_both_sides_agree_and_any_detection_against_none_does_not():
    none = table([0, -1, -1, -1, -1, -1, -1])
    assert not compare_detections(none, none, SETTINGS).failed
    assert compare_detections(none, table(FACE), SETTINGS).failed


def first_report(model: str):
    target = from_fixture(model)
    return check_reference(prepare(target), target.references[0], TOL)


def test_the_seeded_ssd_heads_match_caffe_box_for_box():
    report = first_report("ssd")
    heads = [r for r in report.layers if r.type == "DetectionOutput"]
    assert [r.layer for r in heads] == ["detection_out", "detection_eta"]
    for r in heads:
        assert r.status == "pass", r.problem
        assert r.detections["caffe"] == r.detections["keras"] == r.detections["paired"] > 50


@pytest.mark.parametrize("model, head", [("ssd", "detection_out"), ("res10_face", "detection_out"),
                                         ("wechat_qr", "detection_output")])
def test_variance_ignored_is_caught_at_the_head(monkeypatch, model, head):
    """On the seeded head and on both real detectors (the face and the QR code): boxes move, the head fails."""
    from parity.keras_layers import detection

    original = detection.decode
    monkeypatch.setattr(detection, "decode", lambda corners, variances, loc, code, in_target: original(
        corners, variances, loc, code, True))  # as if the variance were encoded in the target
    report = first_report(model)
    assert report.first_divergence == head
    head = next(r for r in report.layers if r.layer == head)
    assert head.status == "fail" and head.detections["off_pairs"] + len(head.detections["missing"]) > 0


def test_nms_across_classes_instead_of_per_class_is_caught(monkeypatch):
    """One NMS over every class's boxes together: a cat's box suppresses a dog's. Caffe runs it per class."""
    import tensorflow as tf

    from parity.keras_layers import detection

    def per_image(self, image, loc, conf, corners, variances):
        boxes = detection.decode(corners, variances, loc[:, 0], self.code_type, self.variance_encoded_in_target)
        labels = [c for c in range(self.num_classes) if c != self.background_label_id]
        scores = tf.gather(conf, labels, axis=1)
        best, label = tf.reduce_max(scores, axis=1), tf.gather(labels, tf.argmax(scores, axis=1))
        kept = self._class_indices(boxes, best)
        count = tf.shape(kept)[0]
        dtype = loc.dtype
        return tf.concat([tf.fill((count, 1), tf.cast(image, dtype)), tf.cast(tf.gather(label, kept), dtype)[:, None],
                          tf.gather(best, kept)[:, None], tf.gather(boxes, kept)], axis=1)

    monkeypatch.setattr(detection.CaffeDetectionOutput, "_image_rows", per_image)
    report = first_report("ssd")
    assert report.first_divergence == "detection_out"
    head = next(r for r in report.layers if r.layer == "detection_out")
    assert "missing" in head.problem


def test_keep_top_k_ignored_is_caught(monkeypatch):
    from parity.keras_layers import detection

    original = detection.CaffeDetectionOutput.__init__
    monkeypatch.setattr(detection.CaffeDetectionOutput, "__init__",
                        lambda self, *a, keep_top_k=-1, **kw: original(self, *a, keep_top_k=-1, **kw))
    report = first_report("ssd")
    assert report.first_divergence == "detection_out"
    assert "extra" in next(r for r in report.layers if r.layer == "detection_out").problem


def test_the_exported_model_holds_the_head_without_lambda_or_custom_objects(tmp_path):
    import keras

    from parity.convert import convert_net

    target = from_fixture("ssd")
    converted = convert_net(target.net(), target.read_weights())
    path = tmp_path / "ssd.keras"
    converted.model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: `import parity` registered the layers
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in loaded.layers)
    assert any(type(layer).__name__ == "CaffeDetectionOutput" for layer in loaded.layers)
    x = np.random.default_rng(0).uniform(-50, 50, (1, 64, 64, 3)).astype(np.float32)
    for mine, theirs in zip(converted.model(x), loaded(x)):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_reports_show_the_comparison_and_the_page_draws_the_boxes(monkeypatch):
    """A planted bug (variance ignored): the terminal names the boxes one side lacks, JSON carries both sets,
    the HTML page draws Caffe's and Keras' boxes over the input image."""
    from parity.diagnose.html import render_html
    from parity.diagnose.report import render
    from parity.keras_layers import detection

    original = detection.decode
    monkeypatch.setattr(detection, "decode", lambda corners, variances, loc, code, in_target: original(
        corners, variances, loc, code, True))
    report = first_report("ssd")
    text = render(report)
    assert "detections at detection_out: Caffe 60, Keras 60" in text
    assert "missing in Keras: image 0 label" in text or "pair(s) off" in text
    head = next(r for r in report.layers if r.layer == "detection_out").to_dict()["detections"]
    assert len(head["caffe_boxes"]) == 60 and len(head["keras_boxes"]) == 60
    page = render_html(report)
    assert page.count('data-kind="detections"') == 2 and "Thick red: Caffe's boxes Keras lacks" in page
