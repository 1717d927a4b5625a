"""The prototxt reader (parse, V1/input upgrade, phase filter, errors) and the Net built from it.

Expected behaviour is Caffe's (upgrade_proto.cpp: UpgradeV1LayerType, UpgradeNetInput; net.cpp:
FilterNet, StateMeetsRule), restated here as literal facts; expected lines are the lines of the
texts written in this file.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from parity.caffe.graph import Net
from parity.caffe.reading.prototxt import line_of_layer, parse_prototxt, read_prototxt
from parity.caffe.schema import caffe_pb2 as pb
from parity.errors import ParityError


def _text(s: str) -> str:
    return textwrap.dedent(s).lstrip("\n")


def _names(net) -> list[str]:
    return [layer.name for layer in net.layer]


def _line_containing(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line that contains `needle` (computed from the text itself)."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


CURRENT = _text('''
    name: "cur"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
    layer {
      name: "conv1"
      type: "Convolution"
      bottom: "data"
      top: "conv1"
      param { lr_mult: 1 }
      convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false }
    }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" \
pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
    layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 10 } }
    layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
''')

V1 = _text('''
    name: "old"
    input: "data"
    input_dim: 2
    input_dim: 3
    input_dim: 9
    input_dim: 7
    layers {
      name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
      blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
      convolution_param { num_output: 5 kernel_size: 3 stride: 2 }
    }
    layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
    layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 } }
    layers { name: "fc" type: INNER_PRODUCT bottom: "pool1" top: "fc" inner_product_param { num_output: 3 } }
    layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss" include { phase: TRAIN } }
    layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
''')


# -- current form -------------------------------------------------------------------------------
def test_current_form():
    net = parse_prototxt(CURRENT)
    assert isinstance(net, pb.NetParameter)
    assert net.name == "cur"
    assert _names(net) == ["data", "conv1", "relu1", "pool1", "fc", "prob"]
    assert [lay.type for lay in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert conv.convolution_param.num_output == 4
    assert list(conv.convolution_param.kernel_size) == [3]
    assert conv.convolution_param.bias_term is False
    assert net.layer[3].pooling_param.pool == pb.PoolingParameter.AVE
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert not net.layers


def test_read_prototxt_from_file(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(CURRENT)
    assert read_prototxt(path) == parse_prototxt(CURRENT)
    assert read_prototxt(str(path)) == parse_prototxt(CURRENT)


# -- V1 upgrade ---------------------------------------------------------------------------------
def test_v1_form_is_upgraded():
    net = parse_prototxt(V1)
    assert not net.layers and not net.input and not net.input_dim
    assert _names(net) == ["input", "conv1", "relu1", "pool1", "fc", "prob"]  # TRAIN-only "loss" dropped
    assert [lay.type for lay in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert list(net.layer[2].bottom) == ["conv1"] and list(net.layer[2].top) == ["conv1"]
    assert conv.convolution_param.num_output == 5
    assert list(conv.convolution_param.kernel_size) == [3]
    assert list(conv.convolution_param.stride) == [2]
    assert not conv.param  # blobs_lr / weight_decay steer training only: dropped
    assert {fd.name for fd, _ in conv.ListFields()} == {"name", "type", "bottom", "top", "convolution_param"}
    assert net.layer[3].pooling_param.pool == pb.PoolingParameter.MAX
    assert net.layer[4].inner_product_param.num_output == 3


# Caffe's UpgradeV1LayerType (src/caffe/util/upgrade_proto.cpp), enum name -> type string.
CAFFE_V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def test_every_v1_type_upgrades_to_caffes_string():
    enum_names = list(pb.V1LayerParameter.LayerType.keys())
    assert set(enum_names) == set(CAFFE_V1_TYPES)  # the schema has every V1 type Caffe knows
    text = "".join(f'layers {{ name: "l_{n}" type: {n} }}\n' for n in enum_names)
    net = parse_prototxt(text)
    assert {lay.name[2:]: lay.type for lay in net.layer} == CAFFE_V1_TYPES


def test_v1_phase_rules_are_kept_and_applied():
    text = _text('''
        layers { name: "a" type: RELU top: "a" include { phase: TEST } }
        layers { name: "b" type: RELU top: "b" include { phase: TRAIN } }
        layers { name: "c" type: RELU top: "c" exclude { phase: TEST } }
        layers { name: "d" type: RELU top: "d" exclude { phase: TRAIN } }
    ''')
    assert _names(parse_prototxt(text)) == ["a", "d"]
    assert _names(parse_prototxt(text, phase=pb.TRAIN)) == ["b", "c"]


def test_mixing_layer_and_layers_is_rejected():
    text = 'layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }\n'
    with pytest.raises(ParityError, match="layer"):
        parse_prototxt(text, "mixed.prototxt")


def test_v0_is_rejected():
    text = _text('''
        name: "v0"
        layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 } bottom: "data" top: "conv1" }
    ''')
    with pytest.raises(ParityError, match="V0") as info:
        parse_prototxt(text, "v0.prototxt")
    assert info.value.path == "v0.prototxt"


# -- inputs -------------------------------------------------------------------------------------
def test_legacy_input_dim_becomes_first_input_layer():
    net = parse_prototxt(V1)
    first = net.layer[0]
    assert first.name == "input" and first.type == "Input"
    assert list(first.top) == ["data"] and not first.bottom
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 3, 9, 7]]


def test_two_legacy_inputs():
    text = _text('''
        input: "a"
        input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5
        input: "b"
        input_dim: 1 input_dim: 2 input_dim: 1 input_dim: 1
        layer { name: "fc" type: "InnerProduct" bottom: "a" top: "fc" }
    ''')
    net = parse_prototxt(text)
    assert _names(net) == ["input", "fc"]
    assert list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3, 4, 5], [1, 2, 1, 1]]


def test_input_shape_form():
    text = _text('''
        name: "shapes"
        layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" }
        input: "x"
        input_shape { dim: 1 dim: 3 dim: 8 dim: 6 }
        input: "y"
        input_shape { dim: 4 dim: 10 }
    ''')
    net = parse_prototxt(text)
    assert _names(net) == ["input", "fc"]  # placed first although declared after the layer
    assert list(net.layer[0].top) == ["x", "y"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3, 8, 6], [4, 10]]
    assert not net.input and not net.input_shape


@pytest.mark.parametrize("header", [
    'input: "data" input_dim: 1 input_dim: 3 input_dim: 8',  # 3 of 4 dims
    'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8 input_dim: 2',  # 5 dims
    'input: "a" input: "b" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',  # 4 dims for 2 inputs
    'input: "a" input: "b" input_shape { dim: 1 }',  # one shape for two inputs
    'input: "data"',  # no shape at all
    'input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',  # dims without a name
])
def test_inconsistent_inputs_are_rejected(header):
    text = header + '\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    with pytest.raises(ParityError) as info:
        parse_prototxt(text, "in.prototxt")
    assert str(info.value).startswith("in.prototxt")


# -- syntax errors ------------------------------------------------------------------------------
def test_syntax_error_line_and_path(tmp_path):
    text = _text('''
        name: "bad"
        layer {
          name: "a"
          type "ReLU"
          top: "a"
        }
    ''')
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(ParityError) as info:
        read_prototxt(path)
    err = info.value
    assert err.line == _line_containing(text, 'type "ReLU"') == 4
    assert err.path == str(path)
    assert str(err).startswith(f"{path}:4")


def test_unknown_field_reports_its_line():
    text = _text('''
        name: "bad"
        layer { name: "a" type: "ReLU" top: "a" }
        layer {
          name: "b"
          type: "ReLU"
          kernal_size: 3
        }
    ''')
    with pytest.raises(ParityError, match="kernal_size") as info:
        parse_prototxt(text, "x.prototxt")
    assert info.value.line == _line_containing(text, "kernal_size") == 6
    assert info.value.path == "x.prototxt"


@pytest.mark.parametrize("body, needle", [
    ('layer { name: "a" type: ReLU }', "type: ReLU"),  # a string needs quotes
    ('layer { name: "a" type: "ReLU" convolution_param { num_output: -3 } }', "num_output"),  # uint32
    ('layer { name: "a" type: "Pooling" pooling_param { pool: MAXIMUM } }', "MAXIMUM"),  # no such enum value
    ('layer { name: "a" type: "ReLU" ]', "]"),
])
def test_value_errors_report_the_line(body, needle):
    text = 'name: "n"\n\n' + body + "\n"
    with pytest.raises(ParityError) as info:
        parse_prototxt(text, "v.prototxt")
    assert info.value.line == _line_containing(text, needle) == 3


def test_unclosed_brace():
    with pytest.raises(ParityError) as info:
        parse_prototxt('layer {\n  name: "a"\n  type: "ReLU"\n', "open.prototxt")
    assert info.value.path == "open.prototxt"
    assert info.value.line is not None


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.prototxt"
    path.write_bytes('name: "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ParityError) as info:
        read_prototxt(path)
    assert str(info.value).startswith(str(path))


def test_missing_prototxt(tmp_path):
    path = tmp_path / "nope.prototxt"
    with pytest.raises(ParityError) as info:
        read_prototxt(path)
    assert info.value.path == str(path)


# -- phase filtering ----------------------------------------------------------------------------
PHASES = _text('''
    name: "phases"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
    layer { name: "train_only" type: "Dropout" bottom: "data" top: "data" include { phase: TRAIN } }
    layer { name: "test_only" type: "ReLU" bottom: "data" top: "data" include { phase: TEST } }
    layer { name: "not_in_test" type: "Dropout" bottom: "data" top: "data" exclude { phase: TEST } }
    layer { name: "not_in_train" type: "Sigmoid" bottom: "data" top: "data" exclude { phase: TRAIN } }
    layer { name: "staged" type: "TanH" bottom: "data" top: "data" include { stage: "deploy" } }
    layer { name: "not_staged" type: "TanH" bottom: "data" top: "data" include { not_stage: "deploy" } }
    layer { name: "leveled" type: "TanH" bottom: "data" top: "data" include { min_level: 1 } }
    layer { name: "either" type: "AbsVal" bottom: "data" top: "data" include { phase: TRAIN } include { phase: TEST } }
    layer { name: "always" type: "Softmax" bottom: "data" top: "prob" }
''')


def test_phase_filtering_test_is_the_default():
    assert _names(parse_prototxt(PHASES)) == [
        "data", "test_only", "not_in_train", "not_staged", "either", "always"]


def test_phase_filtering_train():
    assert _names(parse_prototxt(PHASES, phase=pb.TRAIN)) == [
        "data", "train_only", "not_in_test", "not_staged", "either", "always"]


def test_stage_from_net_state():
    text = 'state { stage: "deploy" }\n' + PHASES
    names = _names(parse_prototxt(text))
    assert "staged" in names and "not_staged" not in names


def test_level_is_zero_as_in_pycaffe():
    names = _names(parse_prototxt('state { level: 2 }\n' + PHASES))
    assert "leveled" not in names


def test_empty_net_is_rejected():
    for text in ["", 'name: "nothing"\n', "# only a comment\n"]:
        with pytest.raises(ParityError, match="no layers"):
            parse_prototxt(text, "empty.prototxt")


def test_net_with_only_train_layers_is_rejected():
    text = 'layer { name: "d" type: "Data" top: "data" include { phase: TRAIN } }\n'
    with pytest.raises(ParityError):
        parse_prototxt(text)


# -- line_of_layer ------------------------------------------------------------------------------
def test_line_of_layer():
    assert line_of_layer(CURRENT, "conv1") == _line_containing(CURRENT, 'name: "conv1"') == 4
    assert line_of_layer(CURRENT, "prob") == _line_containing(CURRENT, 'name: "prob"') == 14
    assert line_of_layer(CURRENT, "conv") is None  # a prefix of a name is not the name
    assert line_of_layer(CURRENT, "nope") is None
    assert line_of_layer("layer {\n  name : 'q.x'\n}\n", "q.x") == 2


# -- Net ----------------------------------------------------------------------------------------
def _net(text: str, name: str = "g.prototxt") -> Net:
    return Net.from_proto(parse_prototxt(text, name), Path(name), text)


def test_net_from_prototxt(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(CURRENT)
    net = Net.from_prototxt(path)
    assert net.name == "cur"
    assert [lay.name for lay in net.layers] == ["data", "conv1", "relu1", "pool1", "fc", "prob"]
    assert [lay.index for lay in net.layers] == list(range(6))
    relu = net.layer("relu1")
    assert relu.bottoms == ("conv1",) and relu.tops == ("conv1",) and relu.in_place
    assert not net.layer("conv1").in_place
    assert net.layer("fc").param.inner_product_param.num_output == 10
    assert net.line_of("pool1") == _line_containing(CURRENT, 'name: "pool1"')
    with pytest.raises(KeyError):
        net.layer("nope")


def test_duplicate_layer_name_is_an_error_at_its_line():
    text = _text('''
        name: "dup"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "act" type: "ReLU" bottom: "data" top: "a1" }
        layer { name: "other" type: "TanH" bottom: "data" top: "t" }
        layer { name: "act" type: "Sigmoid" bottom: "data" top: "a2" }
    ''')
    with pytest.raises(ParityError, match="duplicate") as info:
        _net(text, "dup.prototxt")
    err = info.value
    assert "act" in str(err)
    assert err.path == "dup.prototxt"
    assert err.line in {_line_containing(text, 'name: "act"', 1), _line_containing(text, 'name: "act"', 2)}
    assert str(err).startswith(f"dup.prototxt:{err.line}")


def test_duplicate_layer_name_points_at_the_redefinition():
    text = _text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "act" type: "ReLU" bottom: "data" top: "a1" }
        layer { name: "act" type: "Sigmoid" bottom: "data" top: "a2" }
    ''')
    with pytest.raises(ParityError) as info:
        _net(text)
    assert info.value.line == _line_containing(text, 'name: "act"', 2) == 3


def test_unknown_bottom_is_an_error_at_its_line():
    text = _text('''
        name: "n"
        input: "data"
        input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" \
convolution_param { num_output: 2 kernel_size: 1 } }
        layer {
          name: "fc"
          type: "InnerProduct"
          bottom: "cnov"
          top: "fc"
        }
    ''')
    with pytest.raises(ParityError, match="cnov") as info:
        _net(text, "typo.prototxt")
    assert info.value.line == _line_containing(text, 'name: "fc"') == 6
    assert str(info.value).startswith("typo.prototxt:6")


def test_bottom_produced_only_later_is_an_error():
    text = _text('''
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "b" type: "ReLU" bottom: "a" top: "b" }
        layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
    ''')
    with pytest.raises(ParityError) as info:
        _net(text)
    assert info.value.line == 2


@pytest.mark.parametrize("decoy", [
    '# layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }',
    'name: "fc"',
    'layer { name: "shared" type: "ReLU" bottom: "data" top: "s" param { name: "fc" } }',
], ids=["commented-out layer", "net name", "param name"])
def test_error_line_ignores_other_name_fields(decoy):
    text = decoy + "\n" + _text('''
        input: "data"
        input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4
        layer { name: "fc" type: "InnerProduct" bottom: "missing" top: "fc" }
    ''')
    with pytest.raises(ParityError) as info:
        _net(text)
    assert info.value.line == _line_containing(text, 'bottom: "missing"') == 4


BRANCHES = _text('''
    name: "branches"
    input: "data"
    input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layer { name: "stem" type: "Convolution" bottom: "data" top: "stem" \
convolution_param { num_output: 4 kernel_size: 1 } }
    layer { name: "left" type: "Convolution" bottom: "stem" top: "left" \
convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "left_relu" type: "ReLU" bottom: "left" top: "left" }
    layer { name: "right" type: "Pooling" bottom: "stem" top: "right" pooling_param { kernel_size: 1 } }
    layer { name: "side" type: "Convolution" bottom: "data" top: "side" \
convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "join" type: "Concat" bottom: "left" bottom: "right" top: "join" }
    layer { name: "sum" type: "Eltwise" bottom: "join" bottom: "side" top: "sum" }
    layer { name: "fc" type: "InnerProduct" bottom: "right" top: "fc" inner_product_param { num_output: 3 } }
''')


def test_ancestors_on_a_branching_net():
    net = _net(BRANCHES)
    assert [lay.name for lay in net.layers][0] == "input"
    expected = {
        "input": set(),
        "stem": {"input"},
        "left": {"input", "stem"},
        "left_relu": {"input", "stem", "left"},
        "right": {"input", "stem"},  # a sibling branch does not see "left"
        "side": {"input"},
        "join": {"input", "stem", "left", "left_relu", "right"},  # reads "left" after the in-place ReLU
        "sum": {"input", "stem", "left", "left_relu", "right", "join", "side"},
        "fc": {"input", "stem", "right"},
    }
    for name, ancestors in expected.items():
        assert net.ancestors(name) == ancestors, name
    assert "left_relu" not in net.ancestors("left")  # a layer is not its own (or its successor's) ancestor
    with pytest.raises(KeyError):
        net.ancestors("nope")
