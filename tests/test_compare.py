"""Metrics and attribution on arrays whose answers are known by construction."""
from __future__ import annotations

import numpy as np
import pytest

from parity.caffe.graph import Net
from parity.caffe.reading.prototxt import parse_prototxt
from parity.check.compare import DOWNSTREAM, FAIL, PASS, LayerResult, Tolerance, measure
from parity.check.divergence import locate_first_divergence
from parity.data.layout import to_keras_layout

TOL = Tolerance(atol=1e-3, rtol=1e-4)


def result(layer="x", order=0, shape=(1, 3, 4, 5)):
    return LayerResult(layer, "T", layer, order, shape)


def test_identical_arrays_pass_with_zero_error():
    ref = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    r = measure(result(), ref, to_keras_layout(ref), TOL)
    assert r.status == PASS and r.max_abs == 0 and r.rel_l2 == 0 and r.cosine == pytest.approx(1) and r.outside == 0


def test_uniform_scaling_gives_known_metrics():
    ref = np.full((1, 3, 4, 5), 2.0, np.float32)
    r = measure(result(), ref, to_keras_layout(ref) * np.float32(1.01), TOL)
    assert r.max_abs == pytest.approx(0.02, rel=1e-5)
    assert r.rel_l2 == pytest.approx(0.01, rel=1e-5)
    assert r.cosine == pytest.approx(1.0)  # a pure scale keeps the direction
    assert r.outside == 1.0 and r.status == FAIL


def test_worst_element_is_reported_in_caffe_coordinates():
    ref = np.zeros((1, 3, 4, 5), np.float32)
    got = ref.copy()
    got[0, 2, 3, 1] = 5.0  # planted in Caffe's (n, c, h, w)
    r = measure(result(), ref, to_keras_layout(got), TOL)
    assert r.worst == (0, 2, 3, 1) and r.worst_got == 5.0 and r.worst_ref == 0.0
    assert r.outside == pytest.approx(1 / ref.size)


def test_tolerance_rule_is_atol_plus_rtol_times_ref():
    ref = np.full((1, 10), 100.0, np.float32)
    inside = ref + np.float32(0.9 * (1e-3 + 1e-4 * 100))
    outside = ref + np.float32(1.1 * (1e-3 + 1e-4 * 100))
    assert measure(result(shape=(1, 10)), ref, inside, TOL).status == PASS
    assert measure(result(shape=(1, 10)), ref, outside, TOL).status == FAIL


def test_nan_fails_and_shape_mismatch_is_explained():
    ref = np.ones((1, 4), np.float32)
    got = ref.copy()
    got[0, 1] = np.nan
    assert measure(result(shape=(1, 4)), ref, got, TOL).status == FAIL
    r = measure(result(), np.ones((1, 3, 4, 5), np.float32), np.ones((1, 4, 4, 3), np.float32), TOL)
    assert r.status == FAIL and "(1, 3, 4, 4)" in r.problem and r.max_abs is None


BRANCHY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
layer { name: "b" type: "ReLU" bottom: "a" top: "b" }
layer { name: "c" type: "ReLU" bottom: "data" top: "c" }
layer { name: "d" type: "ReLU" bottom: "c" top: "d" }
"""


def statuses(failing):
    net = Net.from_proto(parse_prototxt(BRANCHY))
    results = [result(name, i, (1, 2)) for i, name in enumerate(["data", "a", "b", "c", "d"])]
    for r in results:
        r.status = FAIL if r.layer in failing else PASS
    first = locate_first_divergence(results, net)
    return first, {r.layer: (r.status, r.downstream_of) for r in results}


def test_failures_downstream_of_the_first_are_not_separate_failures():
    first, s = statuses({"a", "b"})
    assert first == "a" and s["a"] == (FAIL, None) and s["b"] == (DOWNSTREAM, "a")


def test_an_independent_branch_failing_is_its_own_failure():
    first, s = statuses({"b", "d"})
    assert first == "b" and s["d"] == (FAIL, None)


def test_a_failing_input_makes_everything_downstream():
    first, s = statuses({"data", "a", "d"})
    assert first == "data" and s["a"] == (DOWNSTREAM, "data") and s["d"] == (DOWNSTREAM, "data")


def test_metrics_do_not_depend_on_the_block_size(monkeypatch):
    """measure() walks large outputs in cache-sized blocks; block boundaries must not change any metric,
    the worst element (the first NaN wins, as np.argmax picks it) or the verdict."""
    import parity.check.compare as compare

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(1, 5, 7, 9)).astype(np.float32)
    got = ref.transpose(0, 2, 3, 1) + rng.normal(scale=1e-3, size=(1, 7, 9, 5)).astype(np.float32)
    got[0, 6, 8, 4] += 0.5  # the worst, in the last block
    cases = {"plain": got, "nan": got.copy(), "zeros": np.zeros_like(got)}
    cases["nan"][0, 1, 2, 3] = cases["nan"][0, 5, 1, 0] = np.nan
    fields = ("status", "max_abs", "max_rel", "rel_l2", "cosine", "outside", "worst", "worst_ref", "worst_got")
    worst = {}
    for name, array in cases.items():
        results = []
        for block in (1 << 16, 7, 1):
            monkeypatch.setattr(compare, "CHUNK", block)
            r = compare.measure(LayerResult("l", "t", "l", 0, ref.shape), ref, array, Tolerance(1e-2, 1e-4))
            results.append(tuple(getattr(r, f) for f in fields))
        for other in results[1:]:
            for f, a, b in zip(fields, results[0], other):
                assert a == b or (isinstance(a, float)
                                  and (np.isnan(a) and np.isnan(b) or np.isclose(a, b, rtol=1e-12))), (name, f)
        worst[name] = results[0][6]
    assert worst["plain"] == (0, 4, 6, 8)
    assert worst["nan"] == (0, 3, 1, 2)  # the first NaN in channels-last order, in Caffe coordinates


def test_relative_tolerance_scales_with_caffes_value_not_the_converted_one():
    """The rule is |got - ref| <= atol + rtol*|ref| with ref = Caffe's output. Scaling rtol by the converted
    value instead lets any wrong output excuse itself: with ref 0 and got 100, rtol*|got| = 1000 would
    swallow the error. Caffe's value is 0, so only atol applies and the layer must fail."""
    ref = np.zeros((1, 4), np.float32)
    got = np.full((1, 4), 100.0, np.float32)
    r = measure(result(shape=(1, 4)), ref, got, Tolerance(atol=1e-3, rtol=10.0))
    assert r.status == FAIL and r.outside == 1.0 and r.max_abs == 100.0
