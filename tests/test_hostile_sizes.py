"""Files that claim sizes they do not hold (issue 12): each is one clear line before anything is allocated.

A tiny file may claim gigabytes: a .npy header, a TensorFlow Const with one value and a huge shape, an
HDF5 dataset that is only a shape and a fill value, a PNG header, an Input shape. parity checks the claim
first. Where an unfixed reader would try the allocation, these claims are so large (terabytes) that
it fails at once instead of eating the machine. Also: unpacked caffemodel floats read without a Python
object per value, and a caffemodel truncated under parity's memory map.
"""
from __future__ import annotations

import io
import os
import struct
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from parity.caffe.reading import wire
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.errors import ParityError

HUGE = (1_000_000, 1_000_000)  # 3.6 TiB of float32: no machine allocates it, so an unfixed reader fails fast


def one_line(exc: ParityError, path: Path, *expected: str) -> str:
    """The error's single line, naming `path` and holding every `expected` text."""
    text = str(exc)
    assert "\n" not in text and str(path) in text, text
    for part in expected:
        assert part in text, text
    return text


# -- 6. .npy headers ------------------------------------------------------------------------------------
def _npy_claiming(path: Path, shape: tuple[int, ...], data: bytes = b"\0" * 16) -> Path:
    """A .npy whose header says float32 `shape`, followed by `data` only."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(data)
    return path


def test_a_npy_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    from parity.data.reference import load_npy

    path = _npy_claiming(tmp_path / "x.npy", HUGE)
    with pytest.raises(ParityError) as caught:
        load_npy(path)
    one_line(caught.value, path, "claims shape (1000000, 1000000)", "holds 16 bytes")
    with pytest.raises(ParityError, match="holds 16 bytes"):
        load_npy(path, HUGE)  # the manifest agreeing with the header changes nothing
    exact = _npy_claiming(tmp_path / "ok.npy", (2, 2))
    np.testing.assert_array_equal(load_npy(exact, (2, 2)), np.zeros((2, 2), np.float32))


def test_dump_input_with_a_lying_npy_header_is_one_line(tmp_path, capsys):
    from support import fails_with

    from parity.caffe.fixtures import load_fixture

    tiny = load_fixture("tiny")
    path = _npy_claiming(tmp_path / "x.npy", (1, 3, 1_000_000, 1_000_000))
    fails_with(capsys, ["dump", tiny.prototxt, tiny.weights_path(), "--input", path, "--out", tmp_path / "out"],
               path, "claims shape")
    assert not (tmp_path / "out").exists()


# -- 6. TensorFlow Consts that claim a shape they do not store ---------------------------------------------
def _graph_with_filled_const(path: Path, shape: tuple[int, ...]) -> Path:
    from tensorflow.core.framework import graph_pb2, types_pb2

    graph = graph_pb2.GraphDef()
    node = graph.node.add(name="big", op="Const")
    node.attr["dtype"].type = types_pb2.DT_FLOAT
    tensor = node.attr["value"].tensor
    tensor.dtype = types_pb2.DT_FLOAT
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.append(1.0)
    graph.node.add(name="input", op="Placeholder").attr["dtype"].type = types_pb2.DT_FLOAT
    path.write_bytes(graph.SerializeToString())
    return path


def test_a_const_with_one_value_and_a_huge_shape_is_refused_before_it_is_filled(tmp_path, capsys):
    from support import fails_with

    from parity.caffe.fixtures import load_fixture
    from parity.tfgraph.graph import constants, read_graph_def

    path = _graph_with_filled_const(tmp_path / "graph.pb", HUGE)
    assert path.stat().st_size < 100
    with pytest.raises(ParityError) as caught:
        constants(read_graph_def(path), path)
    one_line(caught.value, path, "Const 'big'", "(1000000, 1000000)", "1 stored value")
    fails_with(capsys, ["tf-import", path, "--keras-model", load_fixture("tf_saliency").keras_model,
                        "-o", tmp_path / "m.keras"], path, "Const 'big'")
    assert not (tmp_path / "m.keras").exists()
    small = _graph_with_filled_const(tmp_path / "small.pb", (3, 4))  # a modest fill is still a constant
    np.testing.assert_array_equal(constants(read_graph_def(small), small)["big"], np.ones((3, 4), np.float32))


# -- 6. the shape-only conversion and absurd activations ------------------------------------------------------
def _net_files(tmp_path: Path, input_dims: tuple[int, ...], layers: str, blobs: dict) -> tuple[Path, Path]:
    """A prototxt (an Input `data` of `input_dims`, then `layers`) and a caffemodel holding `blobs`."""
    from parity.caffe.reading.caffemodel_writer import write_caffemodel
    from parity.caffe.schema import caffe_pb2

    dims = " ".join(f"dim: {d}" for d in input_dims)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(f'name: "hostile"\nlayer {{ name: "data" type: "Input" top: "data" '
                        f'input_param {{ shape {{ {dims} }} }} }}\n{layers}\n')
    net = caffe_pb2.NetParameter()
    for name in blobs:
        net.layer.add(name=name, type="InnerProduct")
    return prototxt, write_caffemodel(tmp_path / "w.caffemodel", net, blobs)


HUGE_IP = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
           'inner_product_param { num_output: 10000000 } }')


def test_the_shape_diagnosis_is_skipped_when_its_zero_weights_would_be_huge(tmp_path):
    """Weights that do not fit start the shape-only conversion; a 10M x 1M InnerProduct would make 36 TiB of
    zeros there. The original error stays, as one line."""
    from parity.check.pipeline import prepare
    from parity.targets import CaffeTarget

    prototxt, caffemodel = _net_files(tmp_path, (1, 1, 1000, 1000), HUGE_IP,
                                      {"ip": [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]})
    with pytest.raises(ParityError) as caught:
        prepare(CaffeTarget("hostile", [], prototxt=prototxt, caffemodel=caffemodel))
    one_line(caught.value, caffemodel, "weight blob 0 has shape (2, 2)", "(10000000, 1000000)")


def test_zero_weights_past_the_limit_are_refused_by_the_context_itself(tmp_path):
    """Converters whose shapes parity cannot compute beforehand meet the same limit as they ask."""
    from parity.caffe.graph import Net
    from parity.convert.context import Context

    prototxt, _ = _net_files(tmp_path, (1, 1, 1000, 1000), HUGE_IP, {})
    net = Net.from_prototxt(prototxt)
    with pytest.raises(ParityError, match="shape-only conversion would allocate"):
        Context(net, None).blobs(net.layer("ip"), [(10_000_000, 1_000_000), (10_000_000,)])


def test_a_net_with_absurd_activations_is_refused_naming_its_input(tmp_path):
    from parity.caffe.graph import Net
    from parity.convert import convert_net

    conv = ('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 4 kernel_size: 3 } }')
    prototxt, _ = _net_files(tmp_path, (1, 3, 100000, 100000), conv, {})
    with pytest.raises(ParityError) as caught:
        convert_net(Net.from_prototxt(prototxt), None)
    one_line(caught.value, prototxt, f"{prototxt}:2", "layer 'data'", "input shape (1, 3, 100000, 100000)", "GiB")


# -- 5. HDF5 weights that are only a shape and a fill value -----------------------------------------------------
@pytest.fixture(scope="module")
def saliency():
    """The tf_saliency fixture's hand-written model, and its weights saved by Keras (.weights.h5, .keras)."""
    from parity.caffe.fixtures import load_fixture
    from parity.user_modules import load_builder

    fixture = load_fixture("tf_saliency")
    model = load_builder(fixture.keras_model)()
    return fixture, model


def _hostile_h5(model, path: Path, dataset: str = "layers/conv2d/vars/0", shape=(50_000, 50_000)) -> Path:
    """The model's own .weights.h5 with one dataset replaced by `shape` of float32 holding only a fill value."""
    import h5py

    model.save_weights(path)
    size = path.stat().st_size
    with h5py.File(path, "r+") as fh:
        del fh[dataset]
        fh.create_dataset(dataset, shape=shape, dtype="<f4", fillvalue=0.5)
    assert path.stat().st_size < size + 10_000  # 10 GB claimed, nothing stored
    return path


def _into_keras_archive(model, h5: Path, path: Path) -> Path:
    """The model saved as .keras with its model.weights.h5 replaced by `h5`."""
    original = path.with_name("original.keras")
    model.save(original)
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info, h5.read_bytes() if info.filename == "model.weights.h5" else src.read(info))
    return path


@pytest.mark.parametrize("kind", [".weights.h5", ".keras"])
def test_a_fill_value_dataset_is_refused_before_keras_reads_it(tmp_path, capsys, monkeypatch, saliency, kind):
    import keras

    from parity.cli import main

    fixture, model = saliency
    bad = _hostile_h5(model, tmp_path / "bad.weights.h5")
    if kind == ".keras":
        bad = _into_keras_archive(model, bad, tmp_path / "bad.keras")

    def no_reading(*args, **kwargs):
        raise AssertionError("Keras was given the hostile file")

    monkeypatch.setattr(keras.Model, "load_weights", no_reading)
    code = main(["check", "--keras-model", fixture.keras_model, "--weights", str(bad), "--blobs",
                 str(fixture.references / "chelsea"), "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("parity: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(bad) in lines[0] and "dataset layers/conv2d/vars/0" in lines[0] and "(50000, 50000)" in lines[0]
    assert "(3, 3, 3, 16)" in lines[0]  # the variable Keras would have loaded it into


@pytest.mark.parametrize("edit, expected", [
    (lambda fh: fh.create_dataset("optimizer/vars/9", shape=HUGE, dtype="<f4"), "no variable of the model"),
    (lambda fh: (fh.__delitem__("layers/conv2d/vars/1"),
                 fh.create_dataset("layers/conv2d/vars/1", shape=(16,), dtype="<f8")), "(16,) float64"),
    (lambda fh: (fh.__delitem__("layers/conv2d/vars/1"),
                 fh.create_dataset("layers/conv2d/vars/1", shape=(16,), maxshape=(None,), chunks=(1 << 28,),
                                   dtype="<f4")), "chunks"),
], ids=["unread dataset", "dtype", "chunk"])
def test_other_datasets_keras_could_read_are_checked_too(tmp_path, saliency, edit, expected):
    import h5py

    from parity.targets.tfgraph import check_weights_file

    _, model = saliency
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    check_weights_file(model, path)  # Keras' own file passes
    with h5py.File(path, "r+") as fh:
        edit(fh)
    with pytest.raises(ParityError) as caught:
        check_weights_file(model, path)
    one_line(caught.value, path, expected)


# -- 8. images: the header decides before any pixel is decoded ---------------------------------------------------
def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 RGB PNG whose IHDR (checksum fixed) says `width` x `height`: tiny on disk, huge decoded."""
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [20000, 10000, 9000], ids=["PIL error", "PIL warning", "parity limit"])
def test_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch, side):
    from PIL import ImageFile

    from parity.data.preprocess import Preprocessing, preprocess_image

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    path = _png_claiming(tmp_path / "bomb.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second stderr line
        with pytest.raises(ParityError) as caught:
            preprocess_image(path, Preprocessing(resize=(17, 23)), (1, 3, 17, 23))
    one_line(caught.value, path, "more pixels than parity decodes")


def test_an_image_of_the_wrong_size_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    from parity.data.preprocess import Preprocessing, preprocess_image

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the image was decoded"))
    path = _png_claiming(tmp_path / "big.png", 4000, 3000)
    with pytest.raises(ParityError) as caught:
        preprocess_image(path, Preprocessing(), (1, 3, 17, 23))
    one_line(caught.value, path, "image is 3000x4000", "pass --resize 17,23")


def test_a_broken_image_is_one_line_naming_it(tmp_path):
    from parity.data.preprocess import Preprocessing, preprocess_image

    path = _png_claiming(tmp_path / "broken.png", 17, 23)  # 391 pixels promised, one stored
    with pytest.raises(ParityError) as caught:
        preprocess_image(path, Preprocessing(resize=(17, 23)), (1, 3, 17, 23))
    one_line(caught.value, path, "cannot read image")


# -- 9. unpacked floats: no Python object per value ------------------------------------------------------------
def _blob_layer(name: str, values: np.ndarray, packed: bool) -> bytes:
    """A NetParameter with one layer whose one blob holds `values` (1-D), packed or one tag per value."""
    dims = wire.encode_varint(values.size)
    shape = wire.len_field(1, len(dims)) + dims
    blob = wire.len_field(7, len(shape)) + shape  # BlobProto.shape = 7
    if packed:
        blob += wire.len_field(5, values.nbytes) + values.astype("<f4").tobytes()
    else:
        records = np.empty(values.size, [("tag", "u1"), ("value", "<f4")])
        records["tag"], records["value"] = wire.tag(5, wire.I32)[0], values  # BlobProto.data = 5, fixed32
        blob += records.tobytes()
    body = wire.len_field(1, len(name)) + name.encode() + wire.len_field(7, len(blob)) + blob
    return wire.len_field(100, len(body)) + body


def test_unpacked_floats_read_like_packed_ones_without_an_object_per_value(tmp_path):
    values = np.random.default_rng(0).standard_normal(400_000).astype(np.float32)
    packed, unpacked = tmp_path / "packed.caffemodel", tmp_path / "unpacked.caffemodel"
    packed.write_bytes(_blob_layer("ip", values, packed=True))
    unpacked.write_bytes(_blob_layer("ip", values, packed=False))
    tracemalloc.start()
    try:
        got = read_caffemodel(unpacked).blobs["ip"][0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, read_caffemodel(packed).blobs["ip"][0])
    np.testing.assert_array_equal(got, values)
    assert peak < 2 * values.nbytes + (1 << 20), f"peak {peak:,} bytes for {values.nbytes:,} bytes of floats"


def test_runs_of_unpacked_values_stop_at_another_field(tmp_path):
    """A run ends where the tag changes: interleaved fields and several runs keep their order."""
    tag = wire.tag(5, wire.I32)
    run = lambda vals: b"".join(tag + struct.pack("<f", v) for v in vals)  # noqa: E731
    other = wire.tag(99, wire.I32) + b"\0\0\0\0"  # an unknown fixed32 field between runs
    dims = wire.encode_varint(7)
    shape = wire.len_field(7, len(dims) + 2) + wire.len_field(1, len(dims)) + dims
    blob = shape + run([1, 2, 3]) + other + run([4]) + other + run([5, 6, 7])
    body = wire.len_field(1, 1) + b"l" + wire.len_field(7, len(blob)) + blob
    path = tmp_path / "m.caffemodel"
    path.write_bytes(wire.len_field(100, len(body)) + body)
    np.testing.assert_array_equal(read_caffemodel(path).blobs["l"][0], [1, 2, 3, 4, 5, 6, 7])


# -- 16. a caffemodel truncated under the memory map ------------------------------------------------------------
@pytest.fixture
def small_net(tmp_path):
    """A prototxt and caffemodel: Input 1x4 -> InnerProduct of 3."""
    layers = 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }'
    return _net_files(tmp_path, (1, 4), layers, {"ip": [np.ones((3, 4), np.float32), np.ones(3, np.float32)]})


def test_a_caffemodel_truncated_after_reading_is_a_clear_error_not_sigbus(small_net):
    """Cut by one byte: every page the map holds stays readable, so even an unfixed parity survives to
    fail this test; the check must notice the change before the conversion takes the weights."""
    from parity.caffe.graph import Net
    from parity.convert import convert_net

    prototxt, caffemodel = small_net
    weights = read_caffemodel(caffemodel)
    os.truncate(caffemodel, caffemodel.stat().st_size - 1)
    with pytest.raises(ParityError) as caught:
        convert_net(Net.from_prototxt(prototxt), weights)
    one_line(caught.value, caffemodel, "changed on disk", "run again")


def test_a_caffemodel_rewritten_in_place_is_noticed(small_net):
    from parity.caffe.graph import Net
    from parity.convert import convert_net

    prototxt, caffemodel = small_net
    weights = read_caffemodel(caffemodel)
    stat = caffemodel.stat()
    with open(caffemodel, "r+b") as fh:  # same size, same inode, other bytes
        fh.seek(stat.st_size - 4)
        fh.write(struct.pack("<f", 2.0))
    os.utime(caffemodel, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ParityError, match="rewritten on disk"):
        convert_net(Net.from_prototxt(prototxt), weights)


def test_a_caffemodel_replaced_by_rename_leaves_the_map_usable(small_net):
    """An atomic replacement (a new file renamed over the path) cannot hurt the map: no error."""
    from parity.caffe.graph import Net
    from parity.convert import convert_net

    prototxt, caffemodel = small_net
    weights = read_caffemodel(caffemodel)
    fresh = caffemodel.with_name("fresh.caffemodel")
    fresh.write_bytes(caffemodel.read_bytes()[:-4] + struct.pack("<f", 2.0))
    os.replace(fresh, caffemodel)
    convert_net(Net.from_prototxt(prototxt), weights)
