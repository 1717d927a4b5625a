"""--local: each layer run on Caffe's own bottoms, so a conversion bug is told from inherited drift.

Bugs are planted by replacing the converter (as in test_planted_bugs). The same planted converter
builds the layer-local model, so a bug shows up locally exactly where it was planted.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from parity.check.compare import PASS, NoiseRule
from parity.check.local import plan_units
from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance, check_reference, prepare
from parity.cli import main
from parity.convert import convert_net
from parity.diagnose.report import render
from parity.targets import from_fixture

TOL = NoiseRule()  # parity's default rule


def planted(edits: dict):
    """A converter that edits named layers' Keras weights after parity's conversion: {layer: fn(weights)}."""
    def convert(net, weights):
        converted = convert_net(net, weights)
        for layer, edit in edits.items():
            if layer in converted.keras_names:
                target = converted.model.get_layer(converted.keras_names[layer])
                target.set_weights(edit(target.get_weights()))
        return converted

    return convert


def scaled(factor):
    return lambda ws: [ws[0] * factor, *ws[1:]]


def shifted(offset):
    return lambda ws: [ws[0], ws[1] + offset]


def local_report(model: str, convert=None, tol=TOL):
    target = from_fixture(model)
    return check_reference(prepare(target, convert=convert), target.references[0], tol, local=True)


def test_unmodified_tiny_passes_locally_everywhere():
    report = local_report("tiny")
    assert report.status == PASS and report.conversion_bugs == []
    checked = [r for r in report.layers if r.local is not None]
    assert len(checked) == len(report.layers)  # layer granularity: every layer has Caffe's bottoms
    assert all(r.local.status == PASS and r.local.max_abs < 1e-3 for r in checked)


def test_two_bugs_are_both_named_where_propagation_sees_only_the_first():
    report = local_report("tiny", planted({"conv1": scaled(1.02), "fc1": scaled(1.05)}))
    assert report.first_divergence == "conv1"
    fc1 = next(r for r in report.layers if r.layer == "fc1")
    assert fc1.status == "downstream"  # the propagated view blames conv1 only
    assert report.conversion_bugs == ["conv1", "fc1"]  # the local view finds the second bug too
    relu1 = next(r for r in report.layers if r.layer == "relu1")
    assert relu1.status == "downstream" and relu1.local.status == PASS


def test_error_under_tolerance_that_grows_downstream_is_drift_not_a_bug():
    """Under the fixed rule, conv1's bias off by 0.6 atol: conv1 itself passes, later layers exceed the
    tolerance by accumulation. (The noise rule counts such inherited error as what it is, and names conv1.)"""
    report = local_report("tiny", planted({"conv1": shifted(0.6 * DEFAULT_ATOL)}),
                          Tolerance(DEFAULT_ATOL, DEFAULT_RTOL))
    assert report.conversion_bugs == []
    root = next(r for r in report.layers if r.layer == report.first_divergence)
    assert root.status == "fail" and root.drift and root.local.status == PASS
    conv1 = next(r for r in report.layers if r.layer == "conv1")
    assert conv1.status == PASS
    text = render(report)
    assert "FAIL: accumulated drift, not a conversion bug" in text and f"at {root.layer}" in text


def test_blob_granularity_checks_each_in_place_chain_as_one_unit():
    target = from_fixture("ssd")
    ref = target.references[0]
    units, skipped = plan_units(target.net(), ref)
    chains = {u.layers for u in units}
    assert ("conv1_1", "relu1_1") in chains and ("conv4_3_norm",) in chains
    assert skipped == {}
    report = local_report("ssd", planted({"conv4_3_norm": scaled(1.1), "fc7_mbox_conf": scaled(0.9)}))
    assert report.conversion_bugs == ["conv4_3_norm", "fc7_mbox_conf"]
    assert all(r.local.status == PASS for r in report.layers
               if r.local is not None and r.layer not in report.conversion_bugs)


def test_cli_local_shows_both_errors_and_names_the_bug(monkeypatch, capsys, tmp_path):
    import parity.check.pipeline as check_module

    real_prepare = check_module.prepare
    monkeypatch.setattr(check_module, "prepare", lambda target, allow_mismatch=False, convert=None, *args:
                        real_prepare(target, allow_mismatch, planted({"conv2": scaled(1.03)}), *args))
    out = tmp_path / "r.json"
    page = tmp_path / "r.html"
    code = main(["check", "--model", "tiny", "--local", "--json", str(out), "--html", str(page)])
    text = capsys.readouterr().out
    assert code == 1
    assert "local (own)" in text and "FAIL: conversion bug at conv2" in text
    report = json.loads(out.read_text())
    assert report["conversion_bugs"] == ["conv2"] and report["local"] is True
    conv2 = next(lay for lay in report["layers"] if lay["layer"] == "conv2")
    assert conv2["local"]["status"] == "fail" and conv2["status"] == "fail"
    html = page.read_text()
    assert "Conversion bug (fails on Caffe's own inputs): conv2" in html and "data:image/png;base64," in html


def test_local_runs_a_handwritten_model_layer_by_layer(capsys, tmp_path):
    """--local with --keras-model: each paired layer is cut out of the user's model and fed Caffe's
    bottoms. The planted bug (one conv's padding moved) is a conversion bug at its own layer, and the
    layers after it pass on Caffe's inputs (drift, not bugs)."""
    out = tmp_path / "r.json"
    code = main(["check", "--model", "vgg19", "--keras-model", "handwritten_vgg19:build_vgg19_shifted_pad",
                 "--local", "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    assert code == 1 and report["conversion_bugs"] == ["relu3_2"], report["conversion_bugs"]
    later = next(lay for lay in report["layers"] if lay["layer"] == "relu4_1")
    assert later["local"]["status"] == "pass" and later["status"] == "downstream"
    assert capsys.readouterr().out.startswith("vgg19/chelsea: FAIL: conversion bug at relu3_2")
    assert main(["check", "--model", "vgg19", "--keras-model", "handwritten_vgg19:build_vgg19", "--local", "-q"]) == 0


def test_local_result_is_exactly_the_propagated_one_at_the_first_layer():
    """Where the inputs are Caffe's anyway (the first conv), local and propagated errors agree: a sanity anchor."""
    report = local_report("tiny", planted({"conv1": scaled(1.02)}))
    conv1 = next(r for r in report.layers if r.layer == "conv1")
    assert conv1.local.max_abs == pytest.approx(conv1.max_abs, rel=1e-6)
    assert np.isfinite(conv1.local.rel_l2)


def test_a_passing_layer_is_never_called_drift():
    """`drift` means failing when propagated yet passing on Caffe's own inputs. A layer that passes both ways
    is simply fine: calling it drift would put "drift" in every row of a clean --local report."""
    report = local_report("tiny")
    assert report.status == PASS and all(r.local is not None for r in report.layers)
    assert [r.layer for r in report.layers if r.drift] == []
    assert all(r.to_dict()["drift"] is False for r in report.layers)
    assert "drift" not in render(report)
