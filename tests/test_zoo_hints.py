"""Every zoo fixture, one planted bug of each kind the cause hints know: the report must name the layer
where it was planted and the right cause.

Each bug is planted at the first Convolution (or the first Pooling, or the input) of the real zoo
prototxt and checked with `until` at the end of that layer's in-place chain, so 60 checks stay cheap.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import keras
import numpy as np
import pytest
from support import edited, plant

from parity.caffe.fixtures import load_fixture
from parity.check.compare import NoiseRule
from parity.check.pipeline import check_reference, prepare
from parity.convert import Blob, convert_net
from parity.data.preprocess import preprocess_image
from parity.targets import from_fixture, up_to

TOL = NoiseRule()  # parity's default rule
ZOO = ["vgg19", "caffenet", "squeezenet", "mobilenet", "resnet50", "googlenet", "fcn8s", "dilation8", "ssd",
       "open_nsfw"]
KINDS = ["padding", "layout", "channel-order", "scale", "rounding", "nonfinite"]


def chain_end(net, name: str) -> str:
    """The last layer of the in-place chain that starts at `name` (where its reference is taken)."""
    layer = net.layer(name)
    end = name
    for later in net.layers[layer.index + 1:]:
        if later.in_place and later.tops[0] == layer.tops[0]:
            end = later.name
        elif layer.tops[0] in later.bottoms or layer.tops[0] in later.tops:
            break
    return end


def first(net, kind: str, where=lambda layer: True):
    return next(layer for layer in net.layers if layer.type == kind and where(layer))


def map_output(fn):
    """A bug for `plant` on a layer's output tensor (test-only Lambda): fn is (on the tensor, on its Caffe shape)."""
    def make(original):
        def bug(layer, bottoms, ctx):
            (blob,) = original(layer, bottoms, ctx)
            tensor = keras.layers.Lambda(fn[0])(blob.tensor)
            return [Blob(tensor, fn[1](blob.caffe_shape))]
        return bug
    return make


def nan_at_origin(x):
    mask = np.zeros((1, *x.shape[1:]), np.float32)
    mask[(0,) * len(x.shape)] = np.nan
    return x + mask


def plant_kind(model: str, kind: str):
    """Plant `kind` in `model`: returns (the planted layer, until, converter or None, inputs or None, and
    the `with` block during which a planted converter is in place)."""
    target = from_fixture(model)
    net = target.net()
    conv = first(net, "Convolution")
    if kind == "padding":
        padded = [lay for lay in net.layers if lay.type == "Convolution" and lay.param.convolution_param.pad
                  and 0 < lay.param.convolution_param.pad[0] <= 3 and not lay.param.convolution_param.stride[:1] == [2]]
        layer = padded[0] if padded else conv
        pad = layer.param.convolution_param.pad[0] if padded else 0

        def make(original):
            def bug(lay, bottoms, ctx):  # padded: all of it after the data (TF 'same'); unpadded: a spurious pad
                (x,) = bottoms
                n, c, h, w = x.caffe_shape
                extra = (0, 2 * pad) if pad else (1, 1)
                shifted = keras.layers.ZeroPadding2D((extra, extra))(x.tensor)
                cleared = edited(lay, lambda q: q.convolution_param.ClearField("pad"))
                return original(cleared, [Blob(shifted, (n, c, h + sum(extra), w + sum(extra)))], ctx)
            return bug

        return layer.name, chain_end(net, layer.name), None, None, plant("Convolution", make, layer=layer.name)
    if kind == "layout":
        end = chain_end(net, conv.name)
        chain = net.layers[conv.index:net.layer(end).index + 1]
        if any(lay.type in ("BatchNorm", "Scale") for lay in chain):  # per-channel statistics: transpose H and W
            return conv.name, end, None, None, plant("Convolution", map_output((
                lambda x: keras.ops.transpose(x, (0, 2, 1, 3)), lambda s: s)), layer=conv.name)

        def reversed_channels(n, weights):
            converted = convert_net(n, weights)
            keras_layer = converted.model.get_layer(converted.keras_names[conv.name])
            kernel, *bias = keras_layer.get_weights()
            keras_layer.set_weights([kernel[..., ::-1], *[b[::-1] for b in bias]])
            return converted

        return conv.name, chain_end(net, conv.name), reversed_channels, None, nullcontext()
    if kind in ("channel-order", "scale"):
        fixture = load_fixture(model)
        ref = target.references[0]
        shape = ref.inputs()["data"].shape
        prep = fixture.preprocessing
        prep = replace(prep, channel_order="RGB") if kind == "channel-order" else replace(prep, mean=[0.0, 0.0, 0.0])
        inputs = {"data": preprocess_image(fixture.image_path(ref.name), prep, shape)}
        return "data", "data", None, inputs, nullcontext()
    if kind == "rounding":
        pool = next((lay for lay in net.layers if lay.type == "Pooling"), None)
        layer = pool or conv
        return layer.name, chain_end(net, layer.name), None, None, plant(layer.type, map_output((
            lambda x: keras.ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]),
            lambda s: (s[0], s[1], s[2] + 1, s[3] + 1))), layer=layer.name)
    if kind == "nonfinite":
        return (conv.name, chain_end(net, conv.name), None, None,
                plant("Convolution", map_output((nan_at_origin, lambda s: s)), layer=conv.name))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", ZOO)
def test_planted_bug_is_named_with_its_cause(model, kind):
    layer, until, convert, inputs, planted = plant_kind(model, kind)
    target = up_to(from_fixture(model), until)
    with planted:
        report = check_reference(prepare(target, convert=convert), target.references[0], TOL, inputs)
        assert report.status == "fail", "the planted bug went unnoticed"
        assert layer in (report.first_divergence_covers or []), (report.first_divergence,
                                                                 report.first_divergence_covers)
        causes = [h.cause for h in report.hints.get(report.first_divergence, [])]
        assert causes and causes[0] == kind, (report.first_divergence, [h.to_dict() for h in
                                                                        report.hints.get(report.first_divergence, [])])
