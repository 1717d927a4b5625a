"""parity's own Caffe schema (parity.caffe.schema.caffe_pb2) against facts from Caffe's caffe.proto.

The literal numbers and defaults below are copied from brocolli-caffe 9.0.2's
src/caffe/proto/caffe.proto (the Caffe parity's references are built with). When that file is
present (tools/build_caffe.sh unpacks it under .cache/caffe), every field of every message a
net or caffemodel can reach is compared as well.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD

from parity.caffe.schema import caffe_pb2 as pb

CAFFE_PROTO = Path(__file__).resolve().parents[1] / ".cache/caffe/brocolli-caffe-9.0.2/src/caffe/proto/caffe.proto"


def _field(message, name: str):
    return message.DESCRIPTOR.fields_by_name[name]


# -- spot checks --------------------------------------------------------------------------------
def test_package_is_separate_from_pycaffe():
    # pycaffe registers package "caffe" in the same default descriptor pool: ours must not clash.
    assert pb.DESCRIPTOR.package == "parity.caffe"
    assert pb.NetParameter.DESCRIPTOR.full_name == "parity.caffe.NetParameter"


def test_blob_proto_fields():
    data = _field(pb.BlobProto, "data")
    assert data.number == 5 and data.type == FD.TYPE_FLOAT and data.is_repeated and data.is_packed
    shape = _field(pb.BlobProto, "shape")
    assert shape.number == 7 and shape.message_type.name == "BlobShape"
    double_data = _field(pb.BlobProto, "double_data")
    assert double_data.number == 8 and double_data.type == FD.TYPE_DOUBLE and double_data.is_packed
    for name, number in [("num", 1), ("channels", 2), ("height", 3), ("width", 4), ("diff", 6), ("double_diff", 9)]:
        assert _field(pb.BlobProto, name).number == number, name
    dim = _field(pb.BlobShape, "dim")
    assert dim.number == 1 and dim.type == FD.TYPE_INT64 and dim.is_packed


def test_blob_data_is_packed_on_the_wire():
    # packed: one length-delimited field (tag 5 << 3 | 2 = 0x2a, length 8) holding both floats
    assert pb.BlobProto(data=[1.0, 2.0]).SerializeToString() == b"\x2a\x08" + np.array([1, 2], "<f4").tobytes()
    # and a shape's dims likewise: BlobProto.shape (0x3a) { dim (0x0a) packed [2, 3] }
    blob = pb.BlobProto()
    blob.shape.dim.extend([2, 3])
    assert blob.SerializeToString() == b"\x3a\x04\x0a\x02\x02\x03"


def test_net_parameter_fields():
    assert _field(pb.NetParameter, "layer").number == 100
    assert _field(pb.NetParameter, "layer").message_type.name == "LayerParameter"
    assert _field(pb.NetParameter, "layers").number == 2
    assert _field(pb.NetParameter, "layers").message_type.name == "V1LayerParameter"
    assert _field(pb.NetParameter, "input").number == 3
    assert _field(pb.NetParameter, "input_dim").number == 4
    assert _field(pb.NetParameter, "input_shape").number == 8


def test_layer_parameter_fields():
    for name, number in [("name", 1), ("type", 2), ("bottom", 3), ("top", 4), ("blobs", 7),
                         ("include", 8), ("exclude", 9), ("convolution_param", 106),
                         ("inner_product_param", 117), ("pooling_param", 121), ("batch_norm_param", 139)]:
        assert _field(pb.LayerParameter, name).number == number, name
    assert _field(pb.LayerParameter, "blobs").message_type.name == "BlobProto"


def test_v1_layer_parameter_fields():
    for name, number in [("layer", 1), ("bottom", 2), ("top", 3), ("name", 4), ("type", 5), ("blobs", 6),
                         ("blobs_lr", 7), ("convolution_param", 10)]:
        assert _field(pb.V1LayerParameter, name).number == number, name


def test_convolution_defaults():
    bias_term = _field(pb.ConvolutionParameter, "bias_term")
    assert bias_term.type == FD.TYPE_BOOL and bias_term.has_default_value and bias_term.default_value is True
    conv = pb.ConvolutionParameter()
    assert conv.bias_term is True and not conv.HasField("bias_term")
    assert conv.group == 1 and conv.axis == 1


def test_pooling_defaults():
    pool = _field(pb.PoolingParameter, "pool")
    assert pool.number == 1
    assert pool.enum_type.values_by_number[pool.default_value].name == "MAX"
    assert pb.PoolingParameter.MAX == 0 and pb.PoolingParameter.AVE == 1 and pb.PoolingParameter.STOCHASTIC == 2
    ceil_mode = _field(pb.PoolingParameter, "ceil_mode")  # brocolli-caffe's addition
    assert ceil_mode.number == 13 and ceil_mode.default_value is True
    p = pb.PoolingParameter()
    assert p.pool == pb.PoolingParameter.MAX and p.ceil_mode is True and p.stride == 1 and p.pad == 0
    assert p.global_pooling is False


def test_batch_norm_eps():
    eps = _field(pb.BatchNormParameter, "eps")
    assert eps.number == 3 and eps.type == FD.TYPE_FLOAT
    assert np.float32(pb.BatchNormParameter().eps) == np.float32(1e-5)
    assert np.float32(pb.BatchNormParameter().moving_average_fraction) == np.float32(0.999)


def test_lrn_defaults():
    lrn = pb.LRNParameter()
    assert lrn.local_size == 5
    assert lrn.alpha == 1.0
    assert lrn.beta == 0.75
    assert lrn.k == 1.0
    assert lrn.norm_region == pb.LRNParameter.ACROSS_CHANNELS
    assert [_field(pb.LRNParameter, n).number for n in ("local_size", "alpha", "beta", "norm_region", "k")] == \
        [1, 2, 3, 4, 5]


def test_axis_defaults():
    assert _field(pb.InnerProductParameter, "axis").number == 5
    assert pb.InnerProductParameter().axis == 1
    assert pb.InnerProductParameter().bias_term is True
    assert _field(pb.SoftmaxParameter, "axis").number == 2
    assert pb.SoftmaxParameter().axis == 1


def test_v1_layer_type_numbers():
    t = pb.V1LayerParameter
    assert t.CONVOLUTION == 4
    assert t.RELU == 18
    assert t.POOLING == 17
    assert t.INNER_PRODUCT == 14
    assert t.NONE == 0 and t.SOFTMAX == 20 and t.LRN == 15 and t.DECONVOLUTION == 39


def test_phase_enum():
    assert pb.TRAIN == 0 and pb.TEST == 1
    assert pb.NetState().phase == pb.TEST  # NetState.phase defaults to TEST


def test_text_format_of_real_caffe_names_parses():
    # the text form uses field names only, so a prototxt written for package "caffe" parses here
    from google.protobuf import text_format

    net = text_format.Parse('layer { name: "c" type: "Convolution" convolution_param { num_output: 3 } }',
                            pb.NetParameter())
    assert net.layer[0].convolution_param.num_output == 3


# -- full comparison with Caffe's caffe.proto, when it is on disk --------------------------------
def _parse_proto(text: str):
    """A small reader for proto2 files like caffe.proto: fields and enum values by scoped name."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[A-Za-z_][\w.]*|-?\d[\w.+-]*|-?\.\d[\w.+-]*|[{}\[\]=;,]', text)
    messages: dict[str, dict[str, tuple]] = {}
    enums: dict[str, dict[str, int]] = {}
    scope: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("message", "enum", "oneof") and tokens[i + 2] == "{":
            scope.append((tok, tokens[i + 1]))
            if tok == "message":
                messages.setdefault(".".join(n for k, n in scope if k != "oneof"), {})
            i += 3
            continue
        if tok == "}":
            scope.pop()
            i += 1
            continue
        if tok in ("syntax", "package", "option", "import"):
            while tokens[i] != ";":
                i += 1
            i += 1
            continue
        owner = ".".join(n for k, n in scope if k != "oneof")
        if scope[-1][0] == "enum":
            assert tokens[i + 1] == "=", tokens[i:i + 4]
            enums.setdefault(owner, {})[tok] = int(tokens[i + 2])
            i += 3
        else:
            label = tok if tok in ("optional", "repeated", "required") else "optional"
            k = i + (tok in ("optional", "repeated", "required"))
            ftype, fname, number = tokens[k], tokens[k + 1], int(tokens[k + 3])
            assert tokens[k + 2] == "=", tokens[i:k + 4]
            options = {}
            i = k + 4
            if tokens[i] == "[":
                i += 1
                while tokens[i] != "]":
                    options[tokens[i]] = tokens[i + 2]
                    i += 3 + (tokens[i + 3] == ",")
                i += 1
            messages[owner][fname] = (label, ftype, number, options)
        while tokens[i] == ";":
            i += 1
    return messages, enums


SCALARS = {"float": FD.TYPE_FLOAT, "double": FD.TYPE_DOUBLE, "int32": FD.TYPE_INT32, "int64": FD.TYPE_INT64,
           "uint32": FD.TYPE_UINT32, "uint64": FD.TYPE_UINT64, "bool": FD.TYPE_BOOL, "string": FD.TYPE_STRING,
           "bytes": FD.TYPE_BYTES}


def _reachable(messages, root: str) -> set[str]:
    def resolve(type_name, scope):
        parts = scope.split(".")
        for n in range(len(parts), -1, -1):
            candidate = ".".join(parts[:n] + [type_name])
            if candidate in messages:
                return candidate
        return None

    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for _, ftype, _, _ in messages[name].values():
            target = resolve(ftype, name)
            if target:
                todo.append(target)
    return seen


def _default_matches(fd, text: str) -> bool:
    if fd.type == FD.TYPE_ENUM:
        return fd.enum_type.values_by_number[fd.default_value].name == text
    if fd.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return math.isclose(fd.default_value, float(text), rel_tol=1e-6, abs_tol=1e-30)
    if fd.type == FD.TYPE_BOOL:
        return fd.default_value is (text == "true")
    if fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return fd.default_value == text[1:-1]
    return fd.default_value == int(text)


@pytest.mark.skipif(not CAFFE_PROTO.is_file(), reason="Caffe's caffe.proto not unpacked (tools/build_caffe.sh)")
def test_every_net_message_matches_caffe_proto():
    messages, enums = _parse_proto(CAFFE_PROTO.read_text())
    assert {"NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto"} <= set(messages)  # the reader works
    reachable = _reachable(messages, "NetParameter")
    assert {"V0LayerParameter", "ConvolutionParameter", "PoolingParameter", "BlobShape"} <= reachable
    problems = []
    pool = pb.DESCRIPTOR.pool
    for name in sorted(reachable):
        try:
            desc = pool.FindMessageTypeByName("parity.caffe." + name)
        except KeyError:
            problems.append(f"{name}: missing")
            continue
        fields = messages[name]
        for fname, (label, ftype, number, options) in fields.items():
            fd = desc.fields_by_name.get(fname)
            if fd is None:
                problems.append(f"{name}.{fname}: missing")
                continue
            if fd.number != number:
                problems.append(f"{name}.{fname}: number {fd.number}, Caffe {number}")
            if fd.is_repeated != (label == "repeated") or fd.is_required != (label == "required"):
                problems.append(f"{name}.{fname}: label differs from Caffe's {label}")
            if ftype in SCALARS:
                if fd.type != SCALARS[ftype]:
                    problems.append(f"{name}.{fname}: type differs from Caffe's {ftype}")
            elif ((fd.message_type or fd.enum_type) is None
                  or (fd.message_type or fd.enum_type).name != ftype.split(".")[-1]):
                problems.append(f"{name}.{fname}: type differs from Caffe's {ftype}")
            if "packed" in options and fd.is_packed != (options["packed"] == "true"):
                problems.append(f"{name}.{fname}: packed differs")
            if "default" in options:
                if not fd.has_default_value or not _default_matches(fd, options["default"]):
                    problems.append(f"{name}.{fname}: default {fd.default_value!r}, Caffe {options['default']}")
            elif fd.has_default_value and fd.type != FD.TYPE_MESSAGE:
                problems.append(f"{name}.{fname}: default {fd.default_value!r}, Caffe has none")
        for fd in desc.fields:
            if fd.name not in fields:
                problems.append(f"{name}.{fd.name}: not in Caffe")
    for name, values in enums.items():
        if name.split(".")[0] not in reachable:
            continue
        got = {v.name: v.number for v in pool.FindEnumTypeByName("parity.caffe." + name).values}
        if got != values:
            problems.append(f"enum {name}: {got} vs Caffe {values}")
    assert not problems, "\n".join(problems)
