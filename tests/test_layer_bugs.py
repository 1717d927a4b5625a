"""Every supported layer: break its conversion on purpose and see the first divergence land on it.

Layer-granularity fixtures only (tiny, tiny_v1, layers/*), where each layer has its own reference,
so attribution must be exact. One generic break (an offset added to one layer's output) for every
layer, and the classic semantic bugs of the layer families from ../shared/research/pitfalls.md.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest

from parity.compare import NoiseRule
from parity.check import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance, check_reference, prepare, target_from_fixture
from parity.convert import Blob, registry
from parity.convert.normalization import BatchNormHandler
from parity.errors import ShapeDivergence
from parity.fixtures import list_fixtures, load_fixture
from parity.graph import Net

TOL = NoiseRule()  # parity's default rule
LAYERWISE = [f for f in list_fixtures() if load_fixture(f).granularity == "layer" and load_fixture(f).kind == "caffe"]
CASES = [(f, layer.name) for f in LAYERWISE for layer in Net.from_prototxt(load_fixture(f).prototxt).layers
         if layer.type != "Input" and layer.tops]  # Silence has no output to break


def first_divergence(model: str) -> str | None:
    target = target_from_fixture(model)
    return check_reference(prepare(target), target.references[0], TOL).first_divergence


def test_every_supported_type_is_in_a_layer_granularity_fixture():
    covered = {layer.type for f in LAYERWISE for layer in Net.from_prototxt(load_fixture(f).prototxt).layers}
    assert set(registry.supported_types()) <= covered


@pytest.mark.parametrize("model, layer", CASES, ids=[f"{m}-{l}" for m, l in CASES])
def test_breaking_one_layer_is_caught_at_that_layer(monkeypatch, model, layer):
    net = Net.from_prototxt(load_fixture(model).prototxt)
    layer_type = net.layer(layer).type
    original = registry.converter_for(layer_type)

    def broken(l, bottoms, ctx):
        out = original(l, bottoms, ctx)
        if l.name != layer:
            return out
        return [Blob(keras.layers.Rescaling(1.0, offset=0.5)(b.tensor), b.caffe_shape) for b in out]

    broken.shapes = original.shapes  # recipes still size the blobs
    monkeypatch.setitem(registry._CONVERTERS, layer_type, broken)
    assert first_divergence(model) == layer


def test_batchnorm_scale_factor_ignored_is_caught(monkeypatch):
    def build_ignoring_factor(self, layer, bottoms, blobs, ctx):
        mean, variance, _ = blobs
        return original(self, layer, bottoms, [mean, variance, np.ones(1, np.float32)], ctx)

    original = BatchNormHandler.build
    monkeypatch.setattr(BatchNormHandler, "build", build_ignoring_factor)
    assert first_divergence("layers/batchnorm_scale") == "bn"


def test_eltwise_coefficients_ignored_are_caught(monkeypatch):
    from parity.keras_layers import arithmetic

    original_call = arithmetic.CaffeEltwise.call
    monkeypatch.setattr(arithmetic.CaffeEltwise, "call", lambda self, inputs: keras.ops.add(inputs[0], inputs[1])
                        if self.coeffs else original_call(self, inputs))
    assert first_divergence("layers/eltwise") == "sum"


def test_concat_axis_kept_in_caffe_numbering_is_caught(monkeypatch):
    from parity.convert import merge

    monkeypatch.setattr(merge, "keras_axis", lambda axis, rank: axis)  # Caffe's axis used on channels-last data
    with pytest.raises(ShapeDivergence) as info:  # Keras cannot even join (11,17,4) and (11,17,6) on H
        first_divergence("layers/concat")
    assert info.value.layer == "channels"


def test_lrn_within_channel_treated_as_across_is_caught(monkeypatch):
    from parity.keras_layers import lrn

    original_init = lrn.CaffeLRN.__init__
    monkeypatch.setattr(lrn.CaffeLRN, "__init__", lambda self, size=5, alpha=1.0, beta=0.75, k=1.0, region="across",
                        **kw: original_init(self, size, alpha, beta, k, "across", **kw))
    assert first_divergence("layers/lrn") == "within"


def test_deconvolution_kernel_flipped_is_caught(monkeypatch):
    from parity.convert.convolution import DeconvolutionHandler

    original = DeconvolutionHandler.build
    monkeypatch.setattr(DeconvolutionHandler, "build", lambda self, layer, bottoms, blobs, ctx: original(
        self, layer, bottoms, [blobs[0][:, :, ::-1, ::-1].copy()] + blobs[1:], ctx))
    assert first_divergence("layers/conv_variants") == "up"


def test_deconvolution_group_blocks_swapped_are_caught(monkeypatch):
    """Each group's weight rows [i*C_in/g, (i+1)*C_in/g) given to the next group: shapes still fit."""
    from parity.convert.convolution import DeconvolutionHandler

    def build_with_blocks_rolled(self, layer, bottoms, blobs, ctx):
        rows = blobs[0].shape[0] // self.param(layer).group
        return original(self, layer, bottoms, [np.roll(blobs[0], rows, axis=0)] + blobs[1:], ctx)

    original = DeconvolutionHandler.build
    monkeypatch.setattr(DeconvolutionHandler, "build", build_with_blocks_rolled)
    assert first_divergence("layers/deconv_group") == "up_g2"


def test_flatten_applied_to_channels_last_data_is_caught(monkeypatch):
    from parity.convert import reshaping

    monkeypatch.setattr(reshaping, "in_caffe_order", lambda layer, tensor, rank, ctx, suffix="nchw": tensor)
    monkeypatch.setattr(reshaping, "in_parity_order", lambda layer, tensor, rank, ctx, suffix="nhwc": tensor)
    assert first_divergence("layers/reshaping") == "flat"


def first_report(model: str):
    target = target_from_fixture(model)
    return check_reference(prepare(target), target.references[0], TOL)


def test_pooling_drop_rule_applied_per_axis_is_caught(monkeypatch):
    """Caffe drops a last window starting in the padding on both axes once either axis is padded."""
    import parity.keras_layers.pooling as pooling
    import parity.shapes as shapes

    def per_axis(hw, kernel, stride, pad, ceil_mode=True):
        return tuple(shapes.pooled_size(n, k, s, p, ceil_mode, bool(p)) for n, k, s, p in zip(hw, kernel, stride, pad))

    monkeypatch.setattr(pooling, "pooled_hw", per_axis)
    monkeypatch.setattr(shapes, "pooled_hw", per_axis)
    report = first_report("layers/edge_cases")
    assert report.first_divergence == "pool_padw"
    (hint,) = report.hints["pool_padw"]
    assert hint.cause == "rounding" and "on both axes if either axis is padded" in hint.message


def test_deconvolution_kernel_shorter_than_stride_is_caught(monkeypatch):
    """Keras' 'valid' transposed convolution gives s*i there; Caffe s(i-1) + k, one row and column fewer."""
    from parity.convert import convolution

    monkeypatch.setattr(convolution, "uncovered_tail", lambda kernel, stride, dilation: [0, 0])
    report = first_report("layers/edge_cases")
    assert report.first_divergence == "deconv_gap"
    (hint,) = report.hints["deconv_gap"]
    assert hint.cause == "rounding" and "transposed convolution's output size" in hint.message
