"""Decisions (ArgMax indices, Threshold's 0/1): compared where the margin clears the noise, flips counted."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import parity.check.noise
from parity.caffe.fixtures import load_fixture
from parity.caffe.graph import Net
from parity.check.compare import K, NoiseRule
from parity.check.decisions import argmax_margins, settle, threshold_margins
from parity.check.pipeline import check_reference, prepare
from parity.data.reference import load_npy, write_npy_gz
from parity.diagnose.report import render
from parity.targets import from_fixture

NET = """name: "d"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 1 dim: 3 } } }
layer { name: "c" type: "ArgMax" bottom: "data" top: "c" argmax_param { axis: 1 top_k: 2 } }
layer { name: "all" type: "ArgMax" bottom: "data" top: "all" argmax_param { top_k: 2 out_max_val: true } }
layer { name: "t" type: "Threshold" bottom: "data" top: "t" threshold_param { threshold: 0.5 } }
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "d.prototxt"
    path.write_text(NET)
    return Net.from_prototxt(path)


# channel values at the three positions: position 0 has a near-tie between channels 1 and 2
BOTTOM = np.array([[0.1, 0.9, 0.9 + 1e-7, 0.0], [0.4, 0.3, 0.2, 0.1], [0.0, 1.0, 2.0, 3.0]],
                  np.float64).T[None, :, None, :]


def test_argmax_margin_is_the_distance_to_the_nearer_neighbour_in_rank(net):
    margins = argmax_margins(net.layer("c"), BOTTOM, (1, 2, 1, 3))
    assert margins[0, 0, 0, 0] == pytest.approx(1e-7) and margins[0, 1, 0, 0] == pytest.approx(1e-7)  # the tie
    assert margins[0, :, 0, 1].tolist() == pytest.approx([0.1, 0.1])
    assert margins[0, :, 0, 2].tolist() == pytest.approx([1.0, 1.0])


def test_argmax_without_axis_keeps_its_values_continuous(net):
    margins = argmax_margins(net.layer("all"), BOTTOM, (1, 2, 2, 1))
    assert np.isfinite(margins[0, 0]).all() and np.isinf(margins[0, 1]).all()  # indices decide, values do not


def test_threshold_margin_is_the_distance_to_the_threshold(net):
    margins = threshold_margins(net.layer("t"), BOTTOM, BOTTOM.shape)
    assert margins[0, 1, 0, 0] == pytest.approx(0.4) and margins[0, 0, 0, 2] == pytest.approx(0.5)


def test_settle_tolerates_a_flip_inside_the_noise_and_keeps_clear_decisions(net):
    ref = np.array([[[[2, 0, 3]], [[1, 1, 2]]]], np.float64)  # Caffe: at position 0, channel 2 then 1
    got = np.array([[[[1, 0, 3]], [[2, 1, 2]]]], np.float64)  # Keras flipped the near-tie
    settled, flips = settle(net.layer("c"), BOTTOM, ref, got, limit=1e-6)
    assert flips == 2 and np.array_equal(settled, ref)
    wrong = got.copy()
    wrong[0, 0, 0, 2] = 2  # a decision with a margin of 1.0: no noise explains that
    settled, flips = settle(net.layer("c"), BOTTOM, ref, wrong, limit=1e-6)
    assert flips == 2 and settled[0, 0, 0, 2] == 2  # left for the comparison to fail
    _, flips = settle(net.layer("c"), BOTTOM, ref, got, limit=1e-8)  # noise below the margin: no excuse
    assert flips == 0


def edited_argmax(tmp_path):
    """A copy of layers/ssd_argmax's references in which Caffe's argmax_c picks another channel at the
    position whose margin is smallest, and that position with its margin."""
    fixture = load_fixture("layers/ssd_argmax")
    refs = tmp_path / "refs" / "layers" / "ssd_argmax"
    shutil.copytree(fixture.references, refs)
    manifest = json.loads((refs / "chelsea" / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["layer"] == "argmax_c")
    conv = next(e for e in manifest["entries"] if e["layer"] == "conv")
    bottom = load_npy(refs / "chelsea" / conv["file"]).astype(np.float64)
    margins = argmax_margins(Net.from_prototxt(fixture.prototxt).layer("argmax_c"), bottom, tuple(entry["shape"]))
    at = np.unravel_index(int(np.argmin(margins[:, 0])), margins[:, 0].shape)
    where = (at[0], 0, *at[1:])
    values = load_npy(refs / "chelsea" / entry["file"]).copy()
    values[where] = values[(at[0], 1, *at[1:])]  # the runner-up's index in first place
    write_npy_gz(values, refs / "chelsea" / entry["file"])
    return tmp_path / "refs", float(margins[where])


def test_a_flip_at_a_clear_margin_fails_and_inside_the_noise_is_counted(tmp_path, monkeypatch):
    refs, margin = edited_argmax(tmp_path)
    monkeypatch.setenv("PARITY_REFERENCES", str(refs))
    target = from_fixture("layers/ssd_argmax")
    prepared = prepare(target)
    report = check_reference(prepared, target.references[0], NoiseRule())
    row = next(r for r in report.layers if r.layer == "argmax_c")
    assert margin > K * max(r.noise for r in report.layers if r.layer == "conv")  # a clear decision ...
    assert report.first_divergence == "argmax_c" and not row.flips  # ... so the flip is a divergence

    real = parity.check.noise.output_noise

    def noisy_conv(table, keys, peaks, parents):  # conv's noise as large as the margin: the flip is explained
        out = real(table, keys, peaks, parents)
        out[("conv", "conv")] = margin
        return out

    monkeypatch.setattr(parity.check.noise, "output_noise", noisy_conv)
    report = check_reference(prepared, target.references[0], NoiseRule())
    row = next(r for r in report.layers if r.layer == "argmax_c")
    assert row.status == "pass" and row.flips == 1
    assert "1 decision(s) flipped within noise" in render(report)
