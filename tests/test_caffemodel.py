"""The caffemodel reader, the writer and the wire-format helpers under them.

Expected values come from arrays made here, from the protobuf library's own parse and
serialization of the same bytes (parity.caffe.schema.caffe_pb2), and from the encoding facts in
https://protobuf.dev/programming-guides/encoding/ -- never from parity's own output.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from parity.caffe.reading import wire
from parity.caffe.reading.caffemodel import CaffeWeights, read_caffemodel
from parity.caffe.reading.caffemodel_writer import write_caffemodel
from parity.caffe.schema import caffe_pb2 as pb
from parity.errors import ParityError


# -- helpers ------------------------------------------------------------------------------------
def _net() -> pb.NetParameter:
    net = pb.NetParameter(name="small")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add().dim.extend([1, 3, 5, 5])
    conv = net.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    net.layer.add(name="relu1", type="ReLU", bottom=["conv1"], top=["conv1"])
    ip = net.layer.add(name="fc", type="InnerProduct", bottom=["conv1"], top=["fc"])
    ip.inner_product_param.num_output = 6
    return net


def _blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),  # 4-D weight
                  rng.standard_normal(4).astype(np.float32)],  # 1-D bias
        "fc": [rng.standard_normal((6, 36)).astype(np.float32),
               rng.standard_normal(6).astype(np.float32)],
    }


@pytest.fixture
def small_model(tmp_path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    blobs = _blobs()
    path = write_caffemodel(tmp_path / "small.caffemodel", _net(), blobs)
    return path, blobs


def _pb_blobs(data: bytes) -> dict[str, list[np.ndarray]]:
    """The protobuf library's reading of `data`: layer name -> arrays (shape from BlobShape)."""
    msg = pb.NetParameter()
    msg.ParseFromString(data)
    out = {}
    for layer in list(msg.layer) + list(msg.layers):
        if layer.blobs:
            out[layer.name] = [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in layer.blobs]
    return out


def _expect_parity_error(path: Path) -> ParityError:
    with pytest.raises(ParityError) as info:
        read_caffemodel(path)
    assert str(info.value).startswith(str(path)), str(info.value)
    assert info.value.path == str(path)
    return info.value


def _hand_layer(name: str, *blob_payloads: bytes, number: int = 100) -> bytes:
    """A NetParameter with one `layer` (field 100) holding raw BlobProto payloads, encoded by hand."""
    name_b = name.encode()
    body = wire.len_field(1, len(name_b)) + name_b  # LayerParameter.name = 1
    for payload in blob_payloads:
        body += wire.len_field(7, len(payload)) + payload  # LayerParameter.blobs = 7
    return wire.len_field(number, len(body)) + body


def _shape_field(*dims: int) -> bytes:
    packed = b"".join(wire.encode_varint(d) for d in dims)
    inner = wire.len_field(1, len(packed)) + packed  # BlobShape.dim = 1, packed
    return wire.len_field(7, len(inner)) + inner  # BlobProto.shape = 7


# -- wire helpers -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (150, b"\x96\x01"),
    (300, b"\xac\x02"), (-1, b"\xff" * 9 + b"\x01"),
])
def test_varint_matches_protobuf_spec_examples(value, encoded):
    assert wire.encode_varint(value) == encoded
    decoded, pos = wire.read_varint(encoded, 0, len(encoded))
    assert pos == len(encoded)
    assert decoded == (value if value >= 0 else value + (1 << 64))


@pytest.mark.parametrize("value", [0, 1, 5, 127, 128, 16383, 16384, 2**31 - 1, 2**32 + 7, 2**62, 2**63 - 1])
def test_varint_agrees_with_protobuf_serialization(value):
    # BlobShape.dim is a packed int64: its bytes are 0x0a, the payload length, then the varint.
    ref = pb.BlobShape(dim=[value]).SerializeToString()
    assert ref[0] == 0x0A
    assert wire.encode_varint(value) == ref[2:]
    assert wire.read_varint(ref, 2, len(ref)) == (value, len(ref))


def test_iter_fields_walks_a_protobuf_message():
    blob = pb.BlobProto(num=2, channels=3, data=[1.5, -2.0])
    data = blob.SerializeToString()
    fields = list(wire.iter_fields(data, 0, len(data)))
    by_number = {f.number: f for f in fields}
    assert by_number[1].wire_type == wire.VARINT and by_number[1].value == 2
    assert by_number[2].wire_type == wire.VARINT and by_number[2].value == 3
    f5 = by_number[5]
    assert f5.wire_type == wire.LEN and f5.value == 8 and f5.end - f5.start == 8
    assert np.frombuffer(data[f5.start:f5.end], "<f4").tolist() == [1.5, -2.0]
    assert fields[-1].end == len(data)


@pytest.mark.parametrize("data, what", [
    (b"\x08", "varint value missing"),
    (b"\x08\x80", "varint runs past the end"),
    (b"\x80" * 11 + b"\x01", "over-long varint tag"),
    (b"\x00\x01", "field number 0"),
    (b"\x0a\x05abc", "LEN past the end"),
    (b"\x0d\x00\x00", "I32 past the end"),
    (b"\x09" + b"\x00" * 7, "I64 past the end"),
    (b"\x0b", "wire type 3 (group start)"),
    (b"\x0e", "wire type 6"),
])
def test_iter_fields_rejects_malformed_bytes(data, what):
    with pytest.raises(wire.WireError):
        list(wire.iter_fields(data, 0, len(data)))


def test_wire_error_is_a_value_error():
    assert issubclass(wire.WireError, ValueError)


# -- round trip ---------------------------------------------------------------------------------
def test_round_trip_values_shapes_and_types(small_model):
    path, blobs = small_model
    weights = read_caffemodel(path)
    assert isinstance(weights, CaffeWeights)
    assert Path(weights.path) == path
    assert set(weights.blobs) == set(blobs)
    for name, arrays in blobs.items():
        got = weights.blobs[name]
        assert len(got) == len(arrays)
        for g, a in zip(got, arrays):
            assert g.shape == a.shape
            assert g.dtype == np.float32
            np.testing.assert_array_equal(g, a)
    # layers without blobs are listed with their type, but have no arrays
    assert weights.types == {"data": "Input", "conv1": "Convolution", "relu1": "ReLU", "fc": "InnerProduct"}
    assert "relu1" not in weights and weights.get("relu1") == []
    assert "conv1" in weights


@pytest.mark.parametrize("shape", [(7,), (1,), (3, 5), (2, 3, 4), (8, 3, 3, 3), (1, 1, 1, 1), (2, 1, 3, 1, 2), (0,)])
def test_round_trip_shapes(tmp_path, shape):
    rng = np.random.default_rng(len(shape))
    array = rng.standard_normal(shape).astype(np.float32)
    net = pb.NetParameter()
    net.layer.add(name="l", type="Scale")
    path = write_caffemodel(tmp_path / "m.caffemodel", net, {"l": [array]})
    got = read_caffemodel(path).blobs["l"][0]
    assert got.shape == shape
    np.testing.assert_array_equal(got, array)


def test_round_trip_converts_dtype_byte_order_and_strides(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 7.0
    arrays = [base,  # float64 -> float32
              base.astype(">f4"),  # big-endian
              base.astype(np.float32).T]  # non-contiguous
    net = pb.NetParameter()
    net.layer.add(name="l", type="InnerProduct")
    path = write_caffemodel(tmp_path / "m.caffemodel", net, {"l": arrays})
    got = read_caffemodel(path).blobs["l"]
    for g, a in zip(got, arrays):
        assert g.shape == a.shape
        np.testing.assert_array_equal(g, np.asarray(a, np.float32))


def test_arrays_are_zero_copy_views_of_the_file(small_model):
    path, _ = small_model
    weights = read_caffemodel(path)
    for arrays in weights.blobs.values():
        for a in arrays:
            assert not a.flags.owndata
            assert a.base is not None
            owner = a
            while isinstance(owner, (np.ndarray, memoryview)):
                owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
            assert isinstance(owner, mmap.mmap)  # the memory is the file's map, not a copy
            assert not a.flags.writeable  # a read-only map: weights cannot be changed by accident


def test_written_bytes_decode_identically_with_protobuf(small_model):
    path, blobs = small_model
    data = path.read_bytes()
    msg = pb.NetParameter()
    msg.ParseFromString(data)
    source = _net()
    assert msg.name == "small"
    assert [lay.name for lay in msg.layer] == [lay.name for lay in source.layer]
    for got, want in zip(msg.layer, source.layer):
        assert list(got.bottom) == list(want.bottom) and list(got.top) == list(want.top)
        assert got.type == want.type
        arrays = blobs.get(want.name, [])
        assert len(got.blobs) == len(arrays)
        for b, a in zip(got.blobs, arrays):
            assert tuple(b.shape.dim) == a.shape
            assert not b.HasField("num") and not b.double_data
            np.testing.assert_array_equal(np.array(b.data, np.float32).reshape(a.shape), a)
        stripped = pb.LayerParameter()
        stripped.CopyFrom(got)
        del stripped.blobs[:]
        assert stripped == want  # the definition (params included) is unchanged
    assert msg.layer[1].convolution_param.num_output == 4
    # and re-serializing the protobuf library's parse gives a file parity reads the same way
    again = path.with_name("again.caffemodel")
    again.write_bytes(msg.SerializeToString())
    w = read_caffemodel(again)
    for name, arrays in blobs.items():
        for g, a in zip(w.blobs[name], arrays):
            np.testing.assert_array_equal(g, a)


def test_writer_keeps_header_fields(tmp_path):
    net = _net()
    net.input.append("data")
    net.input_dim.extend([1, 3, 5, 5])
    path = write_caffemodel(tmp_path / "m.caffemodel", net, _blobs())
    msg = pb.NetParameter()
    msg.ParseFromString(path.read_bytes())
    assert list(msg.input) == ["data"] and list(msg.input_dim) == [1, 3, 5, 5]


def test_writer_is_atomic_and_leaves_no_temporary(tmp_path):
    net = _net()
    target = tmp_path / "m.caffemodel"
    write_caffemodel(target, net, _blobs(1))
    before = target.read_bytes()
    with pytest.raises(Exception):
        write_caffemodel(target, net, {"conv1": [np.array(["not", "a", "number"])]})
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.caffemodel"]  # no *.tmp left behind
    write_caffemodel(target, net, _blobs(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.caffemodel"]
    np.testing.assert_array_equal(read_caffemodel(target).blobs["fc"][0], _blobs(2)["fc"][0])


def test_writer_creates_parent_folders(tmp_path):
    path = write_caffemodel(tmp_path / "a" / "b" / "m.caffemodel", _net(), _blobs())
    assert path.is_file()
    assert set(read_caffemodel(path).blobs) == {"conv1", "fc"}


# -- other encodings Caffe produced over the years ----------------------------------------------
def test_legacy_4d_dims(tmp_path):
    values = np.arange(2 * 3 * 4 * 5, dtype=np.float32) * 0.25 - 3
    net = pb.NetParameter()
    layer = net.layer.add(name="conv", type="Convolution")
    layer.blobs.add(num=2, channels=3, height=4, width=5, data=values.tolist())
    layer.blobs.add(num=1, channels=1, height=1, width=3, data=[1.0, 2.0, 3.0])  # old-style bias
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(net.SerializeToString())
    got = read_caffemodel(path).blobs["conv"]
    assert got[0].shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(got[0], values.reshape(2, 3, 4, 5))
    assert got[1].shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(got[1].ravel(), [1.0, 2.0, 3.0])


def test_legacy_dims_unset_fields_default_to_zero(tmp_path):
    # Caffe's Blob::FromProto uses (num, channels, height, width) when any is set; unset ones are 0.
    net = pb.NetParameter()
    net.layer.add(name="l", type="X").blobs.add(num=3)
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    assert read_caffemodel(path).blobs["l"][0].shape == (3, 0, 0, 0)


def test_v1_layers_with_blobs(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    net = pb.NetParameter(name="old")
    conv = net.layers.add(name="conv1", type=pb.V1LayerParameter.CONVOLUTION, bottom=["data"], top=["conv1"])
    conv.blobs.add(num=4, channels=3, height=2, width=2, data=w.ravel().tolist())
    conv.blobs.add(num=1, channels=1, height=1, width=4, data=b.tolist())
    net.layers.add(name="relu1", type=pb.V1LayerParameter.RELU, bottom=["conv1"], top=["conv1"])
    ip = net.layers.add(name="fc", type=pb.V1LayerParameter.INNER_PRODUCT)
    blob = ip.blobs.add()
    blob.shape.dim.extend([2, 6])
    blob.data.extend(range(12))
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    weights = read_caffemodel(path)
    assert set(weights.blobs) == {"conv1", "fc"}
    np.testing.assert_array_equal(weights.blobs["conv1"][0], w)
    np.testing.assert_array_equal(weights.blobs["conv1"][1].ravel(), b)
    np.testing.assert_array_equal(weights.blobs["fc"][0], np.arange(12, dtype=np.float32).reshape(2, 6))
    # V1 types are enum numbers; caffe.proto: CONVOLUTION = 4, RELU = 18, INNER_PRODUCT = 14
    assert weights.types == {"conv1": "4", "relu1": "18", "fc": "14"}


def test_v0_caffemodel_is_rejected(tmp_path):
    net = pb.NetParameter()
    old = net.layers.add()
    old.layer.name = "conv1"
    old.layer.type = "conv"
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(net.SerializeToString())
    err = _expect_parity_error(path)
    assert "V0" in str(err)


def test_double_data_becomes_float32(tmp_path):
    values = [0.1, 1 / 3, -2.5e-3, 1e30, 123456789.123]
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add(double_data=values)
    blob.shape.dim.extend([5])
    path = tmp_path / "d.caffemodel"
    path.write_bytes(net.SerializeToString())
    got = read_caffemodel(path).blobs["l"][0]
    assert got.dtype == np.float32
    assert got.shape == (5,)
    np.testing.assert_array_equal(got, np.array(values, np.float64).astype(np.float32))


def test_double_data_wins_over_data(tmp_path):
    # Caffe's Blob::FromProto copies double_data when it is present, else data.
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add(double_data=[1.0, 2.0], data=[7.0, 8.0])
    blob.shape.dim.extend([2])
    path = tmp_path / "d.caffemodel"
    path.write_bytes(net.SerializeToString())
    np.testing.assert_array_equal(read_caffemodel(path).blobs["l"][0], [1.0, 2.0])


def test_unpacked_floats(tmp_path):
    values = np.array([[1.5, -2.25, 3.0], [0.0, 1e-7, -4e5]], np.float32)
    payload = _shape_field(2, 3) + b"".join(
        wire.tag(5, wire.I32) + struct.pack("<f", float(v)) for v in values.ravel())  # BlobProto.data = 5
    data = _hand_layer("ip", payload)
    # the protobuf library accepts the unpacked form of a packed field, and reads these values
    np.testing.assert_array_equal(_pb_blobs(data)["ip"][0], values)
    path = tmp_path / "u.caffemodel"
    path.write_bytes(data)
    got = read_caffemodel(path).blobs["ip"][0]
    assert got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_blob_without_shape_is_zero_dimensional_as_in_caffe(tmp_path):
    """Blob::FromProto reads no shape and no legacy dims as shape (): that is how Caffe saves the
    scalar of PReLU/Normalize channel_shared and Scale/Bias num_axes 0 (their BlobShape is cleared)."""
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_hand_layer("l", wire.len_field(5, 4) + np.array([0.25], "<f4").tobytes()))
    got = read_caffemodel(path).blobs["l"][0]
    assert got.shape == () and got == np.float32(0.25)
    path.write_bytes(_hand_layer("l", wire.len_field(5, 12) + np.array([1, 2, 3], "<f4").tobytes()))
    with pytest.raises(ParityError, match=r"shape \(\) but 3 values"):
        read_caffemodel(path)


def test_unknown_fields_are_skipped(tmp_path):
    # A field this schema does not know (number 999, every wire type) must not disturb the read.
    extra = (wire.tag(999, wire.VARINT) + wire.encode_varint(5) + wire.tag(999, wire.I64) + b"\x00" * 8
             + wire.tag(999, wire.I32) + b"\x00" * 4 + wire.len_field(999, 3) + b"abc")
    payload = _shape_field(2) + extra + wire.len_field(5, 8) + np.array([4, 5], "<f4").tobytes()
    data = extra + _hand_layer("l", payload)
    np.testing.assert_array_equal(_pb_blobs(data)["l"][0], [4, 5])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_caffemodel(path).blobs["l"][0], [4, 5])


# -- bad files ----------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    _expect_parity_error(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.caffemodel"
    _expect_parity_error(path)


def test_directory_instead_of_file(tmp_path):
    path = tmp_path / "dir.caffemodel"
    path.mkdir()
    _expect_parity_error(path)


def test_random_bytes(tmp_path):
    data = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(DecodeError):  # not a NetParameter for the protobuf library either
        pb.NetParameter().ParseFromString(data)
    path = tmp_path / "random.caffemodel"
    path.write_bytes(data)
    _expect_parity_error(path)


def test_a_text_file_is_not_a_caffemodel(tmp_path):
    path = tmp_path / "deploy.caffemodel"
    path.write_text('name: "net"\nlayer { name: "a" type: "ReLU" }\n')
    _expect_parity_error(path)


def test_file_without_layers(tmp_path):
    path = tmp_path / "m.caffemodel"
    path.write_bytes(pb.NetParameter(name="only a name").SerializeToString())
    _expect_parity_error(path)


def test_layer_without_name(tmp_path):
    net = pb.NetParameter()
    net.layer.add(type="ReLU")
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    _expect_parity_error(path)


def test_truncated_at_chosen_offsets(small_model, tmp_path):
    path, blobs = small_model
    data = path.read_bytes()
    weight = blobs["conv1"][0].tobytes()
    start = data.find(weight)
    assert start > 0
    cuts = {1, 2, 5, start - 1, start + 1, start + len(weight) // 2, start + len(weight) - 2,
            len(data) // 2, len(data) - 5, len(data) - 1}
    for cut in sorted(cuts):
        prefix = data[:cut]
        with pytest.raises(DecodeError):  # the protobuf library also sees a broken message
            pb.NetParameter().ParseFromString(prefix)
        cut_path = tmp_path / f"cut{cut}.caffemodel"
        cut_path.write_bytes(prefix)
        _expect_parity_error(cut_path)


def test_every_prefix_agrees_with_protobuf(small_model, tmp_path):
    """Cut the file at every byte: parity fails (with ParityError) exactly where protobuf fails."""
    path, _ = small_model
    data = path.read_bytes()
    cut_path = tmp_path / "cut.caffemodel"
    accepted = 0
    for cut in range(len(data)):
        prefix = data[:cut]
        cut_path.write_bytes(prefix)
        try:
            expected = _pb_blobs(prefix)
            n_layers = len(pb.NetParameter.FromString(prefix).layer)
        except DecodeError:
            _expect_parity_error(cut_path)
            continue
        if n_layers == 0:  # nothing but the net's name (or nothing at all)
            _expect_parity_error(cut_path)
            continue
        accepted += 1  # a cut between two layers is a valid, shorter net
        got = read_caffemodel(cut_path).blobs
        assert set(got) == set(expected)
        for name in expected:
            for g, e in zip(got[name], expected[name], strict=True):
                np.testing.assert_array_equal(g, e)
    assert accepted == len(_net().layer) - 1  # the boundaries after layers 1..3 (not the full file)


def test_data_length_disagrees_with_shape(tmp_path):
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add(data=[1, 2, 3, 4, 5])
    blob.shape.dim.extend([2, 3])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    err = _expect_parity_error(path)
    assert "(2, 3)" in str(err) and "5" in str(err)


def test_legacy_data_length_disagrees_with_dims(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="l", type="X").blobs.add(num=1, channels=1, height=2, width=2, data=[1, 2, 3])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    _expect_parity_error(path)


def test_packed_floats_not_a_multiple_of_four(tmp_path):
    payload = _shape_field(1) + wire.len_field(5, 6) + b"\x00" * 6
    path = tmp_path / "m.caffemodel"
    path.write_bytes(_hand_layer("l", payload))
    _expect_parity_error(path)


def test_negative_blobshape_dim(tmp_path):
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add(data=[1.0])
    blob.shape.dim.extend([-1])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    _expect_parity_error(path)


def test_name_that_is_not_utf8(tmp_path):
    body = wire.len_field(1, 2) + b"\xff\xfe"
    path = tmp_path / "m.caffemodel"
    path.write_bytes(wire.len_field(100, len(body)) + body)
    _expect_parity_error(path)


def test_random_byte_flips_raise_only_parity_errors(small_model, tmp_path):
    path, _ = small_model
    data = path.read_bytes()
    rng = np.random.default_rng(20240601)
    flipped = tmp_path / "flipped.caffemodel"
    outcomes = {"error": 0, "read": 0}
    for _ in range(50):
        corrupt = bytearray(data)
        pos = int(rng.integers(len(corrupt)))
        corrupt[pos] ^= int(rng.integers(1, 256))  # always a different byte
        flipped.write_bytes(bytes(corrupt))
        try:
            weights = read_caffemodel(flipped)
        except ParityError as exc:
            assert str(exc).startswith(str(flipped))
            outcomes["error"] += 1
            continue
        outcomes["read"] += 1
        for arrays in weights.blobs.values():
            assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)
        try:
            expected = _pb_blobs(bytes(corrupt))
        except (DecodeError, ValueError):
            continue  # parity is more lenient than protobuf here; that is allowed
        assert set(weights.blobs) == set(expected)  # where both read it, they read the same
        for name in expected:
            for g, e in zip(weights.blobs[name], expected[name], strict=True):
                np.testing.assert_array_equal(g, e)
    assert outcomes["error"] > 0 and outcomes["read"] > 0  # the loop really exercised both paths


# -- known bugs ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case", ["legacy negative dim", "overflowing shape"])
def test_corrupt_dims_raise_parity_error(tmp_path, case):
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add()
    if case == "legacy negative dim":
        blob.num, blob.channels, blob.height, blob.width = -1, 1, 1, 0
    else:
        blob.shape.dim.extend([2**32, 2**32])  # product 2**64 wraps to 0 in int64
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    _expect_parity_error(path)


@pytest.mark.parametrize("layout", ["two packed runs", "unpacked then packed"])
def test_repeated_data_occurrences_concatenate_in_order(tmp_path, layout):
    values = np.arange(6, dtype="<f4") + 0.5
    if layout == "two packed runs":
        body = (wire.len_field(5, 12) + values[:3].tobytes()) + (wire.len_field(5, 12) + values[3:].tobytes())
    else:
        body = b"".join(wire.tag(5, wire.I32) + v.tobytes() for v in values[:2]) + \
            wire.len_field(5, 16) + values[2:].tobytes()
    data = _hand_layer("l", _shape_field(2, 3) + body)
    np.testing.assert_array_equal(_pb_blobs(data)["l"][0], values.reshape(2, 3))  # the protobuf library's reading
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_caffemodel(path).blobs["l"][0], values.reshape(2, 3))


def test_writer_handles_empty_multidimensional_blob(tmp_path):
    array = np.zeros((0, 4), np.float32)
    net = pb.NetParameter()
    net.layer.add(name="l", type="X")
    path = write_caffemodel(tmp_path / "m.caffemodel", net, {"l": [array]})
    msg = pb.NetParameter.FromString(path.read_bytes())
    assert tuple(msg.layer[0].blobs[0].shape.dim) == (0, 4)
    assert read_caffemodel(path).blobs["l"][0].shape == (0, 4)


def test_legacy_dims_take_precedence_like_caffe(tmp_path):
    net = pb.NetParameter()
    blob = net.layer.add(name="l", type="X").blobs.add(num=1, channels=1, height=2, width=3, data=range(6))
    blob.shape.dim.extend([6])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(net.SerializeToString())
    assert read_caffemodel(path).blobs["l"][0].shape == (1, 1, 2, 3)
