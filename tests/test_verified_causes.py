"""Causes verified by a rerun: each bug planted in the conversion must be named at its layer, with the
cause parity.diagnose.verify confirms by rerunning that layer on Caffe's own bottoms with the one fix applied.

These are the causes that leave no readable pattern in the arrays (or one a detector could mistake):
a flipped kernel, channels reversed inside the model, a pooling window changed, C,H,W against H,W,C
flatten order, padding on the wrong side of a stride-2 convolution (as ZeroPadding2D and as 'same'),
LRN's alpha not divided by n, and a BatchNorm eps that is not Caffe's.
"""
from __future__ import annotations

import numpy as np
import pytest
from support import plant, with_param

from parity.check.compare import FAIL, NoiseRule
from parity.check.pipeline import check_reference, prepare
from parity.convert import registry
from parity.diagnose.report import render
from parity.targets import from_fixture


def run(model: str):
    target = from_fixture(model)
    prepared = prepare(target)
    return check_reference(prepared, target.references[0], NoiseRule())


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


def test_a_flipped_kernel():
    with plant("Convolution", with_weights(lambda w: [w[0][::-1, ::-1].copy(), *w[1:]]), layer="conv3_2"):
        assert_verified(run("vgg19"), "relu3_2", "kernel-flip")


def test_channels_reversed_inside_the_model():
    reversed_channels = with_weights(lambda w: [w[0][..., ::-1].copy(), *(b[::-1].copy() for b in w[1:])])
    with plant("Convolution", reversed_channels, layer="conv2"):
        assert_verified(run("tiny"), "conv2", "layout")  # a permutation of its channels, as the hint calls it


def test_a_pooling_window_changed():
    with plant("Pooling", with_param(lambda p: setattr(p.pooling_param, "kernel_size", 3)), layer="pool3"):
        assert_verified(run("vgg19"), "pool3", "pooling")


def test_flatten_order_chw_against_hwc():
    def rows_in_caffe_order(weights):
        kernel = weights[0]  # rows in H,W,C order for the 7x7x512 flatten, as parity's conversion makes them
        hwc_to_chw = np.arange(512 * 7 * 7).reshape(512, 7, 7).transpose(1, 2, 0).reshape(-1)
        return [kernel[np.argsort(hwc_to_chw)].copy(), *weights[1:]]  # Caffe's C,H,W rows, not reordered

    with plant("InnerProduct", with_weights(rows_in_caffe_order), layer="fc6"):
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
    from parity.caffe.shapes import conv_output_shape

    return conv_output_shape(bottoms[0].caffe_shape, layer.param.convolution_param)


@pytest.mark.parametrize("padding", [((2, 4), (2, 4)), "same"], ids=["zero-padding", "same"])
def test_padding_on_the_wrong_side_of_a_stride_2_convolution(padding):
    with plant("Convolution", _conv1_padded(padding), layer="conv1"):
        assert_verified(run("resnet50"), "conv1_relu", "padding")


def test_lrn_alpha_not_divided_by_n():
    alpha_times_n = with_param(lambda p: setattr(p.lrn_param, "alpha", p.lrn_param.alpha * p.lrn_param.local_size))
    with plant("LRN", alpha_times_n, layer="across"):
        assert_verified(run("layers/lrn"), "across", "lrn-alpha")


def test_a_batchnorm_eps_that_is_not_caffes():
    keras_eps = with_param(lambda p: setattr(p.batch_norm_param, "eps", 1e-3))  # Keras' default
    with plant("BatchNorm", keras_eps, layer="bn_fc"):
        assert_verified(run("layers/batchnorm_scale"), "bn_fc", "batchnorm-eps")


def test_no_change_is_verified_where_nothing_was_planted_in_that_layer():
    """A layer whose divergence is inherited passes on Caffe's own bottoms: nothing is verified there,
    and an unrelated change (a flip of a kernel that is right) never makes a failing layer pass."""
    with plant("Convolution", with_weights(lambda w: [w[0] * 1.5, *w[1:]]), layer="conv3_2"):  # a scale bug
        report = run("vgg19")
        assert report.first_divergence == "relu3_2"
        assert not any(h.evidence.get("verified") for hs in report.hints.values() for h in hs)


PLANTED_LRN = '''
from parity.convert import register, registry
from support import edited

original = registry.converter_for("LRN")


def planted(layer, bottoms, ctx):
    if layer.name == "across":
        layer = edited(layer, lambda p: setattr(p.lrn_param, "alpha", p.lrn_param.alpha * p.lrn_param.local_size))
    return original(layer, bottoms, ctx)


planted.shapes = original.shapes
register("LRN", replace=True)(planted)  # for the whole run: a plugin, loaded once per process
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


def test_the_cli_names_the_verified_cause(tmp_path, capsys):
    """`parity --plugin bug.py check`: the same planted LRN bug, through the command a user runs."""
    from parity.cli import main

    plugin = tmp_path / "planted_lrn_cli.py"
    plugin.write_text(PLANTED_LRN)
    with registry.override("LRN", registry.converter_for("LRN")):  # the real one is back afterwards
        code = main(["--plugin", str(plugin), "check", "--model", "layers/lrn"])
    out = capsys.readouterr().out
    assert code == 1
    verdict = out.index("FAIL: first divergence at across")
    assert out.index("  verified cause (lrn-alpha): with across's alpha over local_size 5", verdict) > verdict
