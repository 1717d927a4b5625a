"""Causes verified by a rerun: each bug planted in the conversion must be named at its layer, with the
cause parity.verify confirms by rerunning that layer on Caffe's own bottoms with the one fix applied.

These are the causes that leave no readable pattern in the arrays (or one a detector could mistake):
a flipped kernel, channels reversed inside the model, a pooling window changed, C,H,W against H,W,C
flatten order, padding on the wrong side of a stride-2 convolution (as ZeroPadding2D and as 'same'),
LRN's alpha not divided by n, and a BatchNorm eps that is not Caffe's.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.check import check_reference, prepare, target_from_fixture
from parity.compare import FAIL, NoiseRule
from parity.convert import registry
from parity.report import render
from support import edited


def run(model: str):
    target = target_from_fixture(model)
    prepared = prepare(target)
    return check_reference(prepared, target.references[0], NoiseRule())


def plant(monkeypatch, type_name: str, name: str, make):
    """Replace `type_name`'s converter for the one layer `name` with make(original)."""
    original = registry.converter_for(type_name)
    bug = make(original)

    def converter(layer, bottoms, ctx):
        return (bug if layer.name == name else original)(layer, bottoms, ctx)

    converter.shapes = original.shapes  # the weight recipe still sizes blobs by the real rules
    monkeypatch.setitem(registry._CONVERTERS, type_name, converter)


def keras_layer(blob):
    return blob.tensor._keras_history.operation


def with_weights(edit):
    """A converter plant that edits the Keras layer's weights after the real conversion built it."""
    def make(original):
        def converter(layer, bottoms, ctx):
            outputs = original(layer, bottoms, ctx)
            target = keras_layer(outputs[0])
            target.set_weights(edit([np.asarray(w) for w in target.get_weights()]))
            return outputs
        return converter
    return make


def assert_verified(report, layer: str, cause: str) -> None:
    assert report.status == FAIL and report.first_divergence == layer, (report.first_divergence, layer)
    hints = report.hints.get(layer, [])
    verified = [h for h in hints if h.evidence.get("verified")]
    assert verified and verified[0].cause == cause, [h.to_dict() for h in hints]
    assert f"verified cause ({cause})" in render(report)


def test_a_flipped_kernel(monkeypatch):
    plant(monkeypatch, "Convolution", "conv3_2", with_weights(lambda w: [w[0][::-1, ::-1].copy(), *w[1:]]))
    assert_verified(run("vgg19"), "relu3_2", "kernel-flip")


def test_channels_reversed_inside_the_model(monkeypatch):
    plant(monkeypatch, "Convolution", "conv2", with_weights(lambda w: [w[0][..., ::-1].copy(), *(b[::-1].copy() for b in w[1:])]))
    assert_verified(run("tiny"), "conv2", "layout")  # a permutation of its channels, as the hint calls it


def test_a_pooling_window_changed(monkeypatch):
    plant(monkeypatch, "Pooling", "pool3", lambda original: lambda layer, bottoms, ctx: original(
        edited(layer, lambda p: setattr(p.pooling_param, "kernel_size", 3)), bottoms, ctx))
    assert_verified(run("vgg19"), "pool3", "pooling")


def test_flatten_order_chw_against_hwc(monkeypatch):
    def rows_in_caffe_order(weights):
        kernel = weights[0]  # rows in H,W,C order for the 7x7x512 flatten, as parity's conversion makes them
        hwc_to_chw = np.arange(512 * 7 * 7).reshape(512, 7, 7).transpose(1, 2, 0).reshape(-1)
        return [kernel[np.argsort(hwc_to_chw)].copy(), *weights[1:]]  # Caffe's C,H,W rows, not reordered

    plant(monkeypatch, "InnerProduct", "fc6", with_weights(rows_in_caffe_order))
    assert_verified(run("vgg19"), "drop6", "layout")


def _conv1_padded(padding):
    """ResNet-50's conv1 (7x7, stride 2, pad 3) built with another padding: explicit, or 'same'."""
    def make(original):
        def converter(layer, bottoms, ctx):
            import keras

            real = keras_layer(original(layer, bottoms, ctx)[0])
            x = bottoms[0].tensor
            if padding != "same":
                x = keras.layers.ZeroPadding2D(padding, name="conv1_planted_pad")(x)
            conv = keras.layers.Conv2D(real.filters, real.kernel_size, strides=2, use_bias=real.use_bias,
                                       padding="same" if padding == "same" else "valid", name="conv1_planted")
            y = conv(x)
            conv.set_weights(real.get_weights())
            from parity.convert import Blob
            return [Blob(y, real_shape(bottoms, layer))]
        return converter
    return make


def real_shape(bottoms, layer):
    from parity.shapes import conv_output_shape

    return conv_output_shape(bottoms[0].caffe_shape, layer.param.convolution_param)


@pytest.mark.parametrize("padding", [((2, 4), (2, 4)), "same"], ids=["zero-padding", "same"])
def test_padding_on_the_wrong_side_of_a_stride_2_convolution(monkeypatch, padding):
    plant(monkeypatch, "Convolution", "conv1", _conv1_padded(padding))
    assert_verified(run("resnet50"), "conv1_relu", "padding")


def test_lrn_alpha_not_divided_by_n(monkeypatch):
    plant(monkeypatch, "LRN", "across", lambda original: lambda layer, bottoms, ctx: original(
        edited(layer, lambda p: setattr(p.lrn_param, "alpha", p.lrn_param.alpha * p.lrn_param.local_size)),
        bottoms, ctx))
    assert_verified(run("layers/lrn"), "across", "lrn-alpha")


def test_a_batchnorm_eps_that_is_not_caffes(monkeypatch):
    plant(monkeypatch, "BatchNorm", "bn_fc", lambda original: lambda layer, bottoms, ctx: original(
        edited(layer, lambda p: setattr(p.batch_norm_param, "eps", 1e-3)), bottoms, ctx))  # Keras' default
    assert_verified(run("layers/batchnorm_scale"), "bn_fc", "batchnorm-eps")


def test_no_change_is_verified_where_nothing_was_planted_in_that_layer(monkeypatch):
    """A layer whose divergence is inherited passes on Caffe's own bottoms: nothing is verified there,
    and an unrelated change (a flip of a kernel that is right) never makes a failing layer pass."""
    plant(monkeypatch, "Convolution", "conv3_2", with_weights(lambda w: [w[0] * 1.5, *w[1:]]))  # a scale bug
    report = run("vgg19")
    assert report.first_divergence == "relu3_2"
    assert not any(h.evidence.get("verified") for hs in report.hints.values() for h in hs)


PLANTED_LRN = '''
from parity.convert import registry
from support import edited

original = registry.converter_for("LRN")


def planted(layer, bottoms, ctx):
    if layer.name == "across":
        layer = edited(layer, lambda p: setattr(p.lrn_param, "alpha", p.lrn_param.alpha * p.lrn_param.local_size))
    return original(layer, bottoms, ctx)


planted.shapes = original.shapes
registry._CONVERTERS["LRN"] = planted
'''


def test_pytest_names_the_verified_cause_too(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "planted_lrn.py").write_text(PLANTED_LRN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(repo / "tests")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "planted_lrn", "--model=layers/lrn", "-rA"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED parity/test_parity.py::test_layer[layers/lrn-" in proc.stdout and "-across]" in proc.stdout
    assert "verified cause (lrn-alpha): with across's alpha over local_size 5" in proc.stdout, proc.stdout[-3000:]


def test_the_cli_names_the_verified_cause(tmp_path, capsys, monkeypatch):
    """`parity --plugin bug.py check`: the same planted LRN bug, through the command a user runs."""
    from parity.cli import main

    monkeypatch.setitem(registry._CONVERTERS, "LRN", registry.converter_for("LRN"))  # put back afterwards
    plugin = tmp_path / "planted_lrn_cli.py"
    plugin.write_text(PLANTED_LRN)
    code = main(["--plugin", str(plugin), "check", "--model", "layers/lrn"])
    out = capsys.readouterr().out
    assert code == 1
    verdict = out.index("FAIL: first divergence at across")
    assert out.index("  verified cause (lrn-alpha): with across's alpha over local_size 5", verdict) > verdict
