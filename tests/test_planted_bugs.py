"""Break the conversion on purpose; the harness must name the layer where each bug entered.

Two fixtures, two resolutions. `tiny` has layer-granularity references (one per layer), so the
first divergence must be exactly the broken layer. `vgg19` has blob-granularity references: an
in-place chain (conv -> ReLU) shares one reference, so the first divergent reference must be the
broken layer's chain, and the report must say the chain covers that layer.
"""
from __future__ import annotations

from dataclasses import replace

import keras
import pytest
from support import edited, plant, with_param

from parity.caffe.fixtures import load_fixture
from parity.check.compare import DOWNSTREAM, FAIL, PASS, NoiseRule
from parity.check.pipeline import check_reference, prepare
from parity.convert import Blob, convert_net, inner_product
from parity.data.preprocess import preprocess_image
from parity.errors import ParityError, ShapeDivergence
from parity.targets import from_fixture

TOL = NoiseRule()  # parity's default rule


def run(model: str, convert=None, channel_order: str | None = None):
    """Check `model`'s first reference sample, optionally with a planted converter or input bug."""
    target = from_fixture(model)
    ref = target.references[0]
    prepared = prepare(target, convert=convert)
    inputs = None
    if channel_order is not None:
        fixture = load_fixture(model)
        prep = replace(fixture.preprocessing, channel_order=channel_order)
        shape = ref.inputs()["data"].shape
        inputs = {"data": preprocess_image(fixture.image_path(ref.name), prep, shape)}
    return check_reference(prepared, ref, TOL, inputs)


def assert_diverges_at(report, layer: str, exact: bool) -> None:
    assert report.status == FAIL, "the planted bug went unnoticed"
    if exact:
        assert report.first_divergence == layer
    else:
        assert layer in report.first_divergence_covers, (report.first_divergence, report.first_divergence_covers)
    first = next(r for r in report.layers if r.layer == report.first_divergence)
    for r in report.layers:
        if r.order < first.order:
            assert r.status == PASS, f"{r.layer} flagged before the bug entered"
        elif r.order > first.order and r.status != PASS:
            assert r.status == DOWNSTREAM and r.downstream_of == report.first_divergence


# Pooling that rounds its output size down, where Caffe rounds up; and the same with a 3x3 window.
FLOOR_POOLING = with_param(lambda p: setattr(p.pooling_param, "ceil_mode", False))
FLOOR_POOLING_3X3 = with_param(lambda p: (setattr(p.pooling_param, "kernel_size", 3),
                                          setattr(p.pooling_param, "ceil_mode", False)))


# -- controls: without a bug, nothing diverges (so the failures below are the bugs' doing) ----------
@pytest.mark.parametrize("model", ["tiny", "vgg19"])
def test_unmodified_conversion_passes(model):
    report = run(model)
    assert report.status == PASS and report.first_divergence is None


@pytest.mark.parametrize("model", ["tiny", "vgg19"])
def test_our_bgr_preprocessing_reproduces_caffes_input(model):
    assert run(model, channel_order="BGR").first_divergence is None


# -- the bugs -------------------------------------------------------------------------------------
def test_pooling_rounded_down_is_caught_at_that_pool():
    with plant("Pooling", FLOOR_POOLING):
        report = run("tiny")
        assert_diverges_at(report, "pool1", exact=True)
        assert "shape" in (report.layers[[r.layer for r in report.layers].index("pool1")].problem or "")


def test_pooling_rounding_cannot_matter_at_vgg_sizes():
    """Why the rounding bug is planted in `tiny`: 224 halves evenly five times, floor == ceil."""
    with plant("Pooling", FLOOR_POOLING):
        assert run("vgg19").status == PASS


@pytest.mark.parametrize("model, layer, exact", [("tiny", "fc1", True), ("vgg19", "fc6", False)])
def test_inner_product_without_chw_reorder_is_caught(monkeypatch, model, layer, exact):
    original = inner_product.dense_kernel
    monkeypatch.setattr(inner_product, "dense_kernel", lambda w, t, shape: original(w, t, shape[:2]))
    assert_diverges_at(run(model), layer, exact)


@pytest.mark.parametrize("model, layer, exact", [("tiny", "conv1", True), ("vgg19", "conv3_2", False)])
def test_padding_on_the_wrong_side_is_caught(model, layer, exact):
    """TF's 'same' habit: all padding after the data instead of Caffe's p on both sides."""

    def make(original):
        def convert(lay, bottoms, ctx):
            p = lay.param.convolution_param.pad[0]
            (x,) = bottoms
            n, c, h, w = x.caffe_shape
            shifted = keras.layers.ZeroPadding2D(((0, 2 * p), (0, 2 * p)))(x.tensor)
            unpadded = edited(lay, lambda q: q.convolution_param.ClearField("pad"))
            return original(unpadded, [Blob(shifted, (n, c, h + 2 * p, w + 2 * p))], ctx)
        return convert

    with plant("Convolution", make, layer=layer):
        assert_diverges_at(run(model), layer, exact)


@pytest.mark.parametrize("model", ["tiny", "vgg19"])
def test_rgb_fed_instead_of_bgr_is_caught_at_the_input(model):
    assert_diverges_at(run(model, channel_order="RGB"), "data", exact=True)


@pytest.mark.parametrize("model, layer, exact", [("tiny", "conv2", True), ("vgg19", "conv4_1", False)])
def test_one_layers_weights_perturbed_by_one_percent_is_caught(model, layer, exact):
    def perturbed(net, weights):
        converted = convert_net(net, weights)
        target = converted.model.get_layer(converted.keras_names[layer])
        kernel, *rest = target.get_weights()
        target.set_weights([kernel * 1.01, *rest])
        return converted

    assert_diverges_at(run(model, convert=perturbed), layer, exact)


def test_a_shape_bug_that_breaks_later_weights_is_traced_to_its_layer():
    """vgg19 with every pool rounding down AND a 3x3/2 window: pool1 gives 111x111, and the first
    error is fc6's weights no longer fitting. The harness must name pool1, not fc6."""
    with plant("Pooling", FLOOR_POOLING_3X3):
        with pytest.raises(ShapeDivergence) as info:
            run("vgg19")
        assert info.value.layer == "pool1"
        assert "fc6" in info.value.message  # the symptom is still shown


def test_weights_that_really_do_not_fit_keep_their_own_error(tmp_path):
    from parity.caffe.reading.caffemodel import read_caffemodel
    from parity.caffe.reading.caffemodel_writer import write_caffemodel
    from parity.caffe.reading.prototxt import read_prototxt
    from parity.targets import CaffeTarget

    fixture = load_fixture("tiny")
    blobs = {k: [a.copy() for a in v] for k, v in read_caffemodel(fixture.weights_path()).blobs.items()}
    blobs["fc1"][0] = blobs["fc1"][0][:, :50]
    bad = write_caffemodel(tmp_path / "bad.caffemodel", read_prototxt(fixture.prototxt), blobs)
    target = from_fixture("tiny")
    with pytest.raises(ParityError) as info:
        prepare(CaffeTarget("tiny", target.references, prototxt=target.prototxt, caffemodel=bad), allow_mismatch=True)
    assert not isinstance(info.value, ShapeDivergence) and "fc1" in str(info.value)


def test_cli_reports_a_shape_divergence_as_a_divergence(capsys, tmp_path):
    """Exit 1 (a layer diverges), not 2 (bad input): the converter, not the user's files, is wrong."""
    import json

    from parity.cli import main

    out, page = tmp_path / "r.json", tmp_path / "r.html"
    with plant("Pooling", FLOOR_POOLING_3X3):
        assert main(["check", "--model", "vgg19", "-q", "--json", str(out), "--html", str(page)]) == 1
        assert "FAIL: first divergence at pool1" in capsys.readouterr().out
        report = json.loads(out.read_text())
        assert report["status"] == "fail" and report["first_divergence"] == "pool1"
        # the same fields as any other report (README: "--json PATH writes at least ..."), and the page too
        assert report["first_divergence_covers"] == ["pool1"] and report["image"] == "chelsea"
        assert (report["tolerances"]["rule"] == "noise" and "differs from Caffe's" in report["error"]
                and report["layers"] == [])
        assert "first divergence at pool1" in page.read_text()
