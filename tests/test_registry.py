"""The converter registry: parity's handlers know their shapes; users can add a type of their own."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from parity.convert import Blob, convert_net, register, registry, supported_types
from parity.graph import Net
from parity.reading.prototxt import parse_prototxt

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }
layer { name: "twice" type: "MyDouble" bottom: "data" top: "twice" }
"""


def test_every_builtin_converter_knows_its_shapes():
    assert {"Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "Dropout", "Softmax"} <= set(supported_types())
    for name in supported_types():
        assert registry.shapes_for(name) is not None, name


def test_a_user_converter_for_a_custom_type(monkeypatch):
    monkeypatch.setattr(registry, "_CONVERTERS", dict(registry._CONVERTERS))

    @register("MyDouble")
    def convert_double(layer, bottoms, ctx):
        (x,) = bottoms
        return [Blob(keras.layers.Rescaling(2.0, name=ctx.name(layer))(x.tensor), x.caffe_shape)]

    converted = convert_net(Net.from_proto(parse_prototxt(NET)), None)
    x = np.arange(24, dtype=np.float32).reshape(1, 3, 4, 2)
    np.testing.assert_array_equal(converted.model.predict_on_batch(x), 2 * x)
    assert registry.shapes_for("MyDouble") is None  # a plain function has no shapes for recipes


def test_registering_a_type_twice_needs_replace(monkeypatch):
    monkeypatch.setattr(registry, "_CONVERTERS", dict(registry._CONVERTERS))
    with pytest.raises(ValueError, match="already registered"):
        register("ReLU")(lambda layer, bottoms, ctx: bottoms)
    register("ReLU", replace=True)(lambda layer, bottoms, ctx: bottoms)


def test_the_readme_worked_example(monkeypatch):
    """The README's Swish handler, verbatim in spirit: registered, sized without Keras, converted."""
    from parity.convert.handler import LayerHandler, Shapes, one_bottom

    monkeypatch.setattr(registry, "_CONVERTERS", dict(registry._CONVERTERS))

    @register("Swish")
    class SwishHandler(LayerHandler):
        param_field = None

        def shapes(self, layer, bottoms):
            return Shapes([one_bottom(bottoms)])

        def build(self, layer, bottoms, blobs, ctx):
            return [keras.layers.Activation("swish", name=ctx.name(layer))(bottoms[0].tensor)]

    net = Net.from_proto(parse_prototxt(NET.replace("MyDouble", "Swish")))
    assert registry.shapes_for("Swish").shapes(net.layer("twice"), [(1, 2, 3, 4)]).tops == [(1, 2, 3, 4)]
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(1, 3, 4, 2)
    np.testing.assert_allclose(convert_net(net, None).model.predict_on_batch(x), x / (1 + np.exp(-x)), rtol=1e-6)
