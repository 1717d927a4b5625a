"""The converter registry: parity's handlers know their shapes; users can add a type of their own."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from parity.caffe.graph import Net
from parity.caffe.reading.prototxt import parse_prototxt
from parity.convert import Blob, convert_net, override, register, registry, supported_types

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }
layer { name: "twice" type: "MyDouble" bottom: "data" top: "twice" }
"""


def test_every_builtin_converter_knows_its_shapes():
    assert {"Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "Dropout", "Softmax"} <= set(supported_types())
    for name in supported_types():
        assert registry.shapes_for(name) is not None, name


def test_a_user_converter_for_a_custom_type():
    with override("MyDouble", None):  # the registration below is undone when the block ends

        @register("MyDouble")
        def convert_double(layer, bottoms, ctx):
            (x,) = bottoms
            return [Blob(keras.layers.Rescaling(2.0, name=ctx.name(layer))(x.tensor), x.caffe_shape)]

        converted = convert_net(Net.from_proto(parse_prototxt(NET)), None)
        x = np.arange(24, dtype=np.float32).reshape(1, 3, 4, 2)
        np.testing.assert_array_equal(converted.model.predict_on_batch(x), 2 * x)
        assert registry.shapes_for("MyDouble") is None  # a plain function has no shapes for recipes


def test_registering_a_type_twice_needs_replace():
    with override("ReLU", registry.converter_for("ReLU")):  # the real one is back afterwards
        with pytest.raises(ValueError, match="already registered"):
            register("ReLU")(lambda layer, bottoms, ctx: bottoms)
        register("ReLU", replace=True)(lambda layer, bottoms, ctx: bottoms)


def test_the_readme_worked_example():
    """The README's Swish handler, verbatim in spirit: registered, sized without Keras, converted."""
    from parity.convert.handler import LayerHandler, Shapes, one_bottom

    with override("Swish", None):

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


def test_override_is_undone_when_the_block_ends_even_on_an_exception():
    """override(type, fn) puts back what was there before (a converter, or no entry at all)."""
    relu = registry.converter_for("ReLU")

    def planted(layer, bottoms, ctx):
        return bottoms

    with pytest.raises(RuntimeError), override("ReLU", planted) as installed:
        assert installed is planted and registry.converter_for("ReLU") is planted
        raise RuntimeError("a failing test body")
    assert registry.converter_for("ReLU") is relu
    with override("NoSuchType", planted), override("NoSuchType", None):  # nested: each restores its own
        assert registry.converter_for("NoSuchType") is None
    assert "NoSuchType" not in registry.supported_types()
    with override("ReLU", None):
        assert registry.converter_for("ReLU") is None
    assert registry.converter_for("ReLU") is relu


PLUGIN = '''
import keras
from parity.convert import Blob, register


@register("MyDouble")
def convert_double(layer, bottoms, ctx):
    (x,) = bottoms
    return [Blob(keras.layers.Rescaling(2.0, name=ctx.name(layer))(x.tensor), x.caffe_shape)]
'''


def test_cli_plugin_registers_a_users_converter_before_the_command(tmp_path, capsys):
    from parity.caffe.reading.caffemodel_writer import write_caffemodel
    from parity.cli import main

    with override("MyDouble", None):  # the plugin's registration is undone when the block ends
        prototxt = tmp_path / "net.prototxt"
        prototxt.write_text(NET)
        caffemodel = write_caffemodel(tmp_path / "net.caffemodel", parse_prototxt(NET), {})
        out = tmp_path / "net.keras"
        assert main(["convert", str(prototxt), str(caffemodel), "-o", str(out)]) == 2
        assert "MyDouble" in capsys.readouterr().err and not out.exists()

        plugin = tmp_path / "my_layers.py"
        plugin.write_text(PLUGIN)
        assert main(["--plugin", str(plugin), "convert", str(prototxt), str(caffemodel), "-o", str(out)]) == 0
        assert out.exists()

        assert main(["--plugin", str(tmp_path / "other.py"), "convert", str(prototxt), str(caffemodel)]) == 2
        assert "cannot import" in capsys.readouterr().err
        (tmp_path / "bad.py").write_text("x = 1\ndef broken(:\n")
        assert main(["--plugin", str(tmp_path / "bad.py"), "convert", str(prototxt), str(caffemodel)]) == 2
        assert f"{tmp_path / 'bad.py'}:2: cannot import" in capsys.readouterr().err
